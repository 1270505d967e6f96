"""Faults from the simulated venue with real workers: every Alpaca and Circle endpoint answers
5xx at random (a burst rate of 30%), and the first mint and withdrawal POSTs take effect but
answer 500 (outcome unknown). A mint, a redemption and an Alpaca -> Base USDC move run at the
same time; all complete, and every effect happened exactly once."""

from __future__ import annotations

from decimal import Decimal

import pytest

from inventory.models import InventoryPool
from inventory.services import snapshot_record
from operations.models import Operation, OperationKind, OperationStatus
from tests.operations.test_crash_safety import posts_since
from tests.operations.test_workers_e2e import (
    UNIT,
    fund_equity_vault,
    mint_requests,
    moment,
    register_sim_assets,
    wait_finished,
)
from tests.operations.usdc_support import A2B, EXACTLY_ONCE, WITHDRAW_POST, EffectWatch
from venues.sim.server import FAULT_5XX, FAULT_5XX_AFTER, FAULT_429, KEY_MINT, KEY_ORDER_POST

pytestmark = [pytest.mark.slow, pytest.mark.chain]

MINT_POST = KEY_MINT


def effective_posts(sim_venue, posts_before: dict, refused_before: dict) -> dict[str, int]:
    """POSTs per endpoint since the start, minus those the sim refused before they had any
    effect (`FAULT_5XX`: 503, `FAULT_429`)."""
    posts = posts_since(sim_venue, posts_before)
    served = sim_venue.server.faults_served()
    refused = (FAULT_5XX, FAULT_429)
    return {
        key: count - sum(served.get((key, f), 0) - refused_before.get((key, f), 0) for f in refused)
        for key, count in posts.items()
    }


def test_mint_redemption_and_usdc_survive_5xx_bursts_with_each_effect_once(
    settings, venue_config, sim_venue, venues, workers
):
    settings.REBALANCING = venue_config
    tokens = register_sim_assets(sim_venue)
    chains = sim_venue.chains
    wallet = venue_config.market_maker_wallet
    fund_equity_vault(sim_venue, "MSFT", 200 * UNIT)
    start_block = chains.client(chains.base).block_number()
    watch = EffectWatch.start(sim_venue, venues)
    posts_before = sim_venue.server.request_counts()
    refused_before = sim_venue.server.faults_served()
    sim_venue.server.set_knobs(error_5xx_rate=0.3)
    sim_venue.server.fail_next(MINT_POST, FAULT_5XX_AFTER)
    sim_venue.server.fail_next(WITHDRAW_POST, FAULT_5XX_AFTER)
    try:
        cluster = workers()
        # AAPL 20/80 -> mint 30; MSFT 150/50 -> redeem 50; USDC 50/350 -> Alpaca->Base 150.
        snapshot_record(
            fetched_at=moment(),
            onchain_equity={"AAPL": Decimal(20), "MSFT": Decimal(150)},
            offchain_equity={"AAPL": Decimal(80), "MSFT": Decimal(50)},
            onchain_cash=Decimal(50),
            offchain_cash=Decimal(350),
        )
        by_pool = {op.pool: op for op in Operation.objects.all()}
        assert {pool: op.kind for pool, op in by_pool.items()} == {
            "AAPL": OperationKind.MINT,
            "MSFT": OperationKind.REDEMPTION,
            "USDC": A2B,
        }
        finished = {
            pool: wait_finished(op.pk, cluster, timeout_s=600) for pool, op in by_pool.items()
        }
    finally:
        sim_venue.server.set_knobs(error_5xx_rate=0.0)

    for pool, operation in finished.items():
        assert operation.status == OperationStatus.COMPLETED, (
            pool,
            operation.failure_reason,
            cluster.logs(),
        )
    # The faults really happened: the scripted outcome-unknown POSTs and random 5xx answers.
    served = sim_venue.server.faults_served()
    assert served[(MINT_POST, FAULT_5XX_AFTER)] == 1
    assert served[(WITHDRAW_POST, FAULT_5XX_AFTER)] == 1
    assert sum(count for (_, fault), count in served.items() if fault == FAULT_5XX) >= 3, served
    # Mint: one request at Alpaca for our issuer_request_id, the tokens arrived once.
    assert len(mint_requests(sim_venue, by_pool["AAPL"].aggregate_id)) == 1
    # POSTs that reached the venue (those answered 503 before any effect may be re-sent): one
    # mint, one USDCUSD conversion order, one withdrawal. The sim deduplicates mints by
    # issuer_request_id, so only this count catches a blind re-send after the outcome-unknown 500.
    assert effective_posts(sim_venue, posts_before, refused_before) == {
        MINT_POST: 1,
        KEY_ORDER_POST: 1,
        WITHDRAW_POST: 1,
    }
    # Redemption: one token transfer to the redemption wallet.
    transfers = chains.client(chains.base).erc20_transfers(
        token=tokens["MSFT"],
        from_block=start_block,
        from_=wallet,
        to=venue_config.redemption_wallet,
    )
    assert [t.amount_units for t in transfers] == [int(by_pool["MSFT"].amount * UNIT)]
    # USDC: one withdrawal, one burn, one mint, one vault deposit.
    assert watch.effects(A2B) == EXACTLY_ONCE[A2B]
    for key in ("AAPL", "MSFT", "USDC"):
        pool = InventoryPool.objects.get(key=key)
        assert pool.onchain_inflight == pool.offchain_inflight == 0, key
    aapl = InventoryPool.objects.get(key="AAPL")
    assert (aapl.onchain_available, aapl.offchain_available) == (Decimal(50), Decimal(50))
    msft = InventoryPool.objects.get(key="MSFT")
    assert (msft.onchain_available, msft.offchain_available) == (Decimal(100), Decimal(100))

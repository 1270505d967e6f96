"""End to end with real `manage.py qcluster` workers (and the due loop) against the sim venue:
fills -> trigger -> operation -> workers -> mint / redemption completed, inventory moved,
exactly one mint request at the simulated Alpaca and one token transfer onchain."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from inventory.models import InventoryPool
from inventory.services import asset_register, fill_record_onchain, snapshot_record
from operations.models import ACTIVE_STATUSES, Operation, OperationKind, OperationStatus
from venues.sim.venue import equity_vault_id

pytestmark = [pytest.mark.slow, pytest.mark.chain]

UNIT = 10**18
_ticks = itertools.count(1)


def moment() -> datetime:
    return datetime.now(UTC) + timedelta(microseconds=next(_ticks))


def register_sim_assets(sim_venue) -> dict[str, str]:
    from inventory.models import Asset

    for asset in sim_venue.assets():
        if not Asset.objects.filter(base_symbol=asset["base_symbol"]).exists():
            asset_register(changed_by="test", **asset)
    return dict(sim_venue.equity_tokens)


def fund_equity_vault(sim_venue, symbol: str, units: int) -> None:
    """Mint `units` of the symbol's token to our wallet and deposit them into its vault (the
    onchain inventory a redemption withdraws from)."""
    chains = sim_venue.chains
    token = sim_venue.equity_tokens[symbol]
    chains.mint(chains.base, token, chains.market_maker.address, units)
    vault_id = bytes.fromhex(equity_vault_id(symbol)[2:])
    chains.vault_deposit(chains.market_maker, token, vault_id, units)


def equity_vault_units(sim_venue, symbol: str) -> int:
    chains = sim_venue.chains
    token = sim_venue.equity_tokens[symbol]
    vault_id = bytes.fromhex(equity_vault_id(symbol)[2:])
    return chains.vault_balance(chains.market_maker.address, token, vault_id)


def onchain_fill(symbol: str, amount: str, direction: str) -> None:
    fill_record_onchain(
        symbol=symbol,
        tx_hash="0x" + f"{next(_ticks):064x}",
        log_index=0,
        amount=Decimal(amount),
        direction=direction,
        price_usdc=Decimal("1"),
        block_timestamp=moment(),
    )


def wait_finished(operation_id: int, cluster, *, timeout_s: float = 240) -> Operation:
    """Poll until the operation is terminal; the limit is far above what it takes on a loaded
    2-core machine (a proof that fails for timing proves nothing)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        operation = Operation.objects.get(pk=operation_id)
        if operation.status not in ACTIVE_STATUSES:
            return operation
        time.sleep(0.2)
    raise AssertionError(
        f"operation {operation_id} still {Operation.objects.get(pk=operation_id)}\n"
        + cluster.logs()
    )


def mint_requests(sim_venue, aggregate_id: str) -> list[dict]:
    return [
        r
        for r in sim_venue.server.tokenization_requests()
        if r.get("issuer_request_id") == aggregate_id
    ]


def test_onchain_sell_fill_triggers_a_mint_that_workers_complete(
    settings, venue_config, sim_venue, workers
):
    settings.REBALANCING = venue_config
    tokens = register_sim_assets(sim_venue)
    chains = sim_venue.chains
    wallet = venue_config.market_maker_wallet
    before = chains.balance(chains.base, tokens["AAPL"], wallet)
    vault_before = equity_vault_units(sim_venue, "AAPL")
    cluster = workers()
    snapshot_record(
        fetched_at=moment(),
        onchain_equity={"AAPL": Decimal(50)},
        offchain_equity={"AAPL": Decimal(50)},
    )
    onchain_fill("AAPL", "30", "Sell")  # onchain 20 / offchain 50: too much offchain

    operation = Operation.objects.get(pool="AAPL")
    assert operation.kind == OperationKind.MINT
    finished = wait_finished(operation.pk, cluster)

    assert finished.status == OperationStatus.COMPLETED, cluster.logs()
    assert len(mint_requests(sim_venue, operation.aggregate_id)) == 1
    # Minted, then deposited into the vault: the wallet ends where it began.
    assert chains.balance(chains.base, tokens["AAPL"], wallet) == before
    deposited = equity_vault_units(sim_venue, "AAPL") - vault_before
    assert deposited == int(operation.amount * UNIT)
    pool = InventoryPool.objects.get(key="AAPL")
    assert pool.onchain_available == Decimal(20) + operation.amount
    assert pool.offchain_available == Decimal(50) - operation.amount
    assert pool.onchain_inflight == pool.offchain_inflight == 0


def test_onchain_buy_fill_triggers_a_redemption_that_workers_complete(
    settings, venue_config, sim_venue, workers
):
    settings.REBALANCING = venue_config
    tokens = register_sim_assets(sim_venue)
    chains = sim_venue.chains
    wallet = venue_config.market_maker_wallet
    fund_equity_vault(sim_venue, "MSFT", 200 * UNIT)
    start_block = chains.client(chains.base).block_number()
    cluster = workers()
    snapshot_record(
        fetched_at=moment(),
        onchain_equity={"MSFT": Decimal(50)},
        offchain_equity={"MSFT": Decimal(50)},
    )
    onchain_fill("MSFT", "100", "Buy")  # onchain 150 / offchain 50: too much onchain

    operation = Operation.objects.get(pool="MSFT")
    assert operation.kind == OperationKind.REDEMPTION
    assert operation.token_address == tokens["MSFT"]
    finished = wait_finished(operation.pk, cluster)

    assert finished.status == OperationStatus.COMPLETED, cluster.logs()
    transfers = chains.client(chains.base).erc20_transfers(
        token=tokens["MSFT"],
        from_block=start_block,
        from_=wallet,
        to=venue_config.redemption_wallet,
    )
    assert [t.amount_units for t in transfers] == [int(operation.amount * UNIT)]
    pool = InventoryPool.objects.get(key="MSFT")
    assert pool.onchain_available == Decimal(150) - operation.amount
    assert pool.offchain_available == Decimal(50) + operation.amount
    assert pool.onchain_inflight == pool.offchain_inflight == 0

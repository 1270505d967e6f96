"""Crash safety: kill -9 the worker at every step boundary of the mint and redemption
workflows (the `REBALANCER_CHAOS_KILL_AT` drill), restart the cluster, and assert the operation
completes with exactly one mint request at the simulated Alpaca / one token transfer onchain."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path

import pytest

from inventory.domain import mint, redemption
from inventory.store import aggregate_load
from operations.models import OperationKind, OperationStatus
from operations.services import operation_create
from tests.operations.test_workers_e2e import mint_requests, register_sim_assets, wait_finished

pytestmark = [pytest.mark.slow, pytest.mark.chain]

UNIT = 10**18

MINT_POINTS = [
    "after:RequestMint",
    "before:request_mint",
    "after:request_mint",
    "after:AcknowledgeAcceptance",
    "after:ReceiveTokens",
    "after:Finalize",
]
REDEMPTION_POINTS = [
    "after:SignTransfer",
    "before:broadcast:transfer",
    "after:broadcast:transfer",
    "after:SendTokens",
    "after:Detect",
    "after:Complete",
]


def wait_for_kill(chaos_dir: Path, cluster, *, timeout_s: float = 30) -> Path:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        markers = list(chaos_dir.glob("*")) if chaos_dir.exists() else []
        if markers:
            time.sleep(0.3)  # let the SIGKILL land
            return markers[0]
        time.sleep(0.1)
    raise AssertionError("the worker never reached the chaos point\n" + cluster.logs())


@pytest.mark.parametrize("point", MINT_POINTS)
def test_mint_killed_at_each_step_boundary_completes_once_after_restart(
    settings, venue_config, sim_venue, workers, tmp_path, point
):
    settings.REBALANCING = venue_config
    tokens = register_sim_assets(sim_venue)
    chains = sim_venue.chains
    wallet = venue_config.market_maker_wallet
    before = chains.balance(chains.base, tokens["AAPL"], wallet)
    cluster = workers({"REBALANCER_CHAOS_KILL_AT": f"mint:{point}"})
    operation = operation_create(kind=OperationKind.MINT, pool="AAPL", amount=Decimal("2.5"))
    assert operation is not None

    marker = wait_for_kill(tmp_path / "chaos", cluster)
    assert marker.name.startswith(operation.aggregate_id)
    cluster.restart()

    finished = wait_finished(operation.pk, cluster)
    assert finished.status == OperationStatus.COMPLETED, cluster.logs()
    assert len(mint_requests(sim_venue, operation.aggregate_id)) == 1
    assert chains.balance(chains.base, tokens["AAPL"], wallet) - before == 25 * UNIT // 10
    names = [
        type(s.event).__name__ for s in aggregate_load(mint.SPEC, operation.aggregate_id).events
    ]
    assert names == ["MintRequested", "MintAccepted", "TokensReceived", "MintCompleted"]


@pytest.mark.parametrize("point", REDEMPTION_POINTS)
def test_redemption_killed_at_each_step_boundary_completes_once_after_restart(
    settings, venue_config, sim_venue, workers, tmp_path, point
):
    settings.REBALANCING = venue_config
    tokens = register_sim_assets(sim_venue)
    chains = sim_venue.chains
    wallet = venue_config.market_maker_wallet
    chains.mint(chains.base, tokens["MSFT"], wallet, 10 * UNIT)
    base = chains.client(chains.base)
    start_block = base.block_number()
    cluster = workers({"REBALANCER_CHAOS_KILL_AT": f"redemption:{point}"})
    operation = operation_create(
        kind=OperationKind.REDEMPTION,
        pool="MSFT",
        amount=Decimal("1.5"),
        token_address=tokens["MSFT"],
    )
    assert operation is not None

    marker = wait_for_kill(tmp_path / "chaos", cluster)
    assert marker.name.startswith(operation.aggregate_id)
    cluster.restart()

    finished = wait_finished(operation.pk, cluster)
    assert finished.status == OperationStatus.COMPLETED, cluster.logs()
    transfers = base.erc20_transfers(
        token=tokens["MSFT"],
        from_block=start_block,
        from_=wallet,
        to=venue_config.redemption_wallet,
    )
    assert [t.amount_units for t in transfers] == [15 * UNIT // 10]
    names = [
        type(s.event).__name__
        for s in aggregate_load(redemption.SPEC, operation.aggregate_id).events
    ]
    assert names == ["TransferSigned", "TokensSent", "Detected", "Completed"]

"""Crash safety: kill -9 the worker at every step boundary of the mint and redemption
workflows (the `REBALANCER_CHAOS_KILL_AT` drill), restart the cluster, and assert the operation
completes with exactly one mint request at the simulated Alpaca and one vault deposit / one
token transfer onchain."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path

import pytest

from inventory.domain import mint, redemption
from operations.models import OperationKind, OperationStatus
from operations.services import operation_create
from tests.operations.conftest import step_events
from tests.operations.test_workers_e2e import mint_requests, register_sim_assets, wait_finished
from venues.sim.server import KEY_MINT
from venues.sim.venue import equity_vault_id

pytestmark = [pytest.mark.slow, pytest.mark.chain]

UNIT = 10**18

MINT_POINTS = [
    "after:RequestMint",
    "before:request_mint",
    "after:request_mint",
    "after:AcknowledgeAcceptance",
    "after:ReceiveTokens",
    "after:RecordVaultApproval",
    "before:broadcast:vault_approval",
    "after:broadcast:vault_approval",
    "after:SubmitVaultDeposit",
    "before:broadcast:vault_deposit",
    "after:broadcast:vault_deposit",
    "after:ConfirmVaultDeposit",
]
REDEMPTION_POINTS = [
    "after:SignVaultWithdraw",
    "before:broadcast:vault_withdraw",
    "after:broadcast:vault_withdraw",
    "after:ConfirmVaultWithdraw",
    "after:SignTransfer",
    "before:broadcast:transfer",
    "after:broadcast:transfer",
    "after:SendTokens",
    "after:Detect",
    "after:Complete",
]


# A short lease lets the restarted cluster take the killed worker's operation over soon (until
# it expires, deliveries skip it and the due loop's sweep queues it again). Task timeouts stay
# at the harness's generous defaults: a lease shorter than a step is safe (a step checks the
# lease is still its own before every write), a task timeout shorter than a step is not.
CRASH_ENV = {"REBALANCER_LEASE_S": "3"}
MINT_POST = KEY_MINT


def wait_for_kill(chaos_dir: Path, cluster, *, timeout_s: float = 240) -> Path:
    """Poll until a worker wrote its chaos marker (its pid, written before it kills itself);
    the caller restarts the whole cluster (kill -9 of every process) next."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        markers = list(chaos_dir.glob("*")) if chaos_dir.exists() else []
        if markers and markers[0].read_text():
            return markers[0]
        time.sleep(0.1)
    raise AssertionError("the worker never reached the chaos point\n" + cluster.logs())


def posts_since(sim_venue, before: dict[str, int]) -> dict[str, int]:
    """POST requests per endpoint at the simulated venue since `before` (request_counts)."""
    now = sim_venue.server.request_counts()
    return {
        key: count - before.get(key, 0)
        for key, count in now.items()
        if key.startswith("POST ") and count != before.get(key, 0)
    }


@pytest.mark.parametrize("point", MINT_POINTS)
def test_mint_killed_at_each_step_boundary_completes_once_after_restart(
    settings, venue_config, sim_venue, workers, tmp_path, point
):
    settings.REBALANCING = venue_config
    tokens = register_sim_assets(sim_venue)
    chains = sim_venue.chains
    wallet = venue_config.market_maker_wallet
    token = tokens["AAPL"]
    vault_id = bytes.fromhex(equity_vault_id("AAPL")[2:])
    # No standing approval yet, so every run signs one (its boundaries are in the matrix).
    chains.transact(
        chains.base,
        chains.market_maker,
        to=token,
        data=chains.encode("MintableERC20", "approve", sim_venue.vault, 0),
    )
    before = chains.balance(chains.base, token, wallet)
    vault_before = chains.vault_balance(wallet, token, vault_id)
    base = chains.client(chains.base)
    start_block = base.block_number()
    posts_before = sim_venue.server.request_count(MINT_POST)
    cluster = workers({**CRASH_ENV, "REBALANCER_CHAOS_KILL_AT": f"mint:{point}"})
    operation = operation_create(kind=OperationKind.MINT, pool="AAPL", amount=Decimal("2.5"))
    assert operation is not None

    marker = wait_for_kill(tmp_path / "chaos", cluster)
    assert marker.name.startswith(operation.aggregate_id)
    cluster.restart()

    finished = wait_finished(operation.pk, cluster, timeout_s=240)
    assert finished.status == OperationStatus.COMPLETED, cluster.logs()
    assert len(mint_requests(sim_venue, operation.aggregate_id)) == 1
    # The sim deduplicates by issuer_request_id: only counting POSTs catches a blind re-send.
    assert sim_venue.server.request_count(MINT_POST) - posts_before == 1
    # Minted into the wallet and deposited into the vault exactly once.
    assert chains.balance(chains.base, token, wallet) == before
    assert chains.vault_balance(wallet, token, vault_id) - vault_before == 25 * UNIT // 10
    deposits = base.erc20_transfers(
        token=token, from_block=start_block, from_=wallet, to=sim_venue.vault
    )
    assert [t.amount_units for t in deposits] == [25 * UNIT // 10]
    names = [type(s.event).__name__ for s in step_events(mint.SPEC, operation.aggregate_id)]
    assert names == [
        "MintRequested",
        "MintAccepted",
        "TokensReceived",
        "VaultApprovalSigned",
        "VaultDepositSubmitted",
        "DepositedIntoVault",
    ]


@pytest.mark.parametrize("point", REDEMPTION_POINTS)
def test_redemption_killed_at_each_step_boundary_completes_once_after_restart(
    settings, venue_config, sim_venue, workers, tmp_path, point
):
    settings.REBALANCING = venue_config
    tokens = register_sim_assets(sim_venue)
    chains = sim_venue.chains
    wallet = venue_config.market_maker_wallet
    msft_vault = bytes.fromhex(equity_vault_id("MSFT")[2:])
    chains.mint(chains.base, tokens["MSFT"], wallet, 10 * UNIT)
    chains.vault_deposit(chains.market_maker, tokens["MSFT"], msft_vault, 10 * UNIT)
    vault_before = chains.vault_balance(wallet, tokens["MSFT"], msft_vault)
    base = chains.client(chains.base)
    start_block = base.block_number()
    posts_before = sim_venue.server.request_counts()
    cluster = workers({**CRASH_ENV, "REBALANCER_CHAOS_KILL_AT": f"redemption:{point}"})
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

    finished = wait_finished(operation.pk, cluster, timeout_s=240)
    assert finished.status == OperationStatus.COMPLETED, cluster.logs()
    transfers = base.erc20_transfers(
        token=tokens["MSFT"],
        from_block=start_block,
        from_=wallet,
        to=venue_config.redemption_wallet,
    )
    assert [t.amount_units for t in transfers] == [15 * UNIT // 10]
    withdrawals = base.erc20_transfers(
        token=tokens["MSFT"], from_block=start_block, from_=sim_venue.vault, to=wallet
    )
    assert [t.amount_units for t in withdrawals] == [15 * UNIT // 10]
    assert vault_before - chains.vault_balance(wallet, tokens["MSFT"], msft_vault) == (
        15 * UNIT // 10
    )
    assert posts_since(sim_venue, posts_before) == {}  # a redemption posts nothing to Alpaca
    names = [type(s.event).__name__ for s in step_events(redemption.SPEC, operation.aggregate_id)]
    assert names == [
        "VaultWithdrawSigned",
        "WithdrawnFromVault",
        "TransferSigned",
        "TokensSent",
        "Detected",
        "Completed",
    ]

"""Operation events through the store: genesis from the stored aggregate (B3), terminal events
end the Operation, release the guard and re-check the symbol and USDC (B11); non-event endings
release it too (B4). Seed plan Tasks 4-6."""

from __future__ import annotations

from decimal import Decimal

import pytest

from inventory.domain import events as ev
from inventory.domain.values import TransferRef, TransferRefKind
from inventory.services import setting_change
from operations.models import Operation, OperationKind, OperationStatus
from operations.services import operation_fail
from tests.service.flows import (
    TX,
    active,
    after_cooldown,
    append,
    enable,
    mint_accepted,
    mint_requested,
    observe,
    pool,
    register,
    tick,
    tokens_received,
    tokens_sent,
    transfer_signed,
    usdc_initiated,
    usdc_requested,
    vault_deposit_submitted,
)
from tests.service.support import queued_operation_tasks

pytestmark = pytest.mark.django_db


@pytest.fixture
def enabled(settings):
    enable(settings)


def mint_started() -> Operation:
    register("AAPL")
    observe("AAPL", onchain="20", offchain="80", usdc_onchain="500", usdc_offchain="500")
    operation = active("AAPL")
    assert operation is not None and operation.kind == OperationKind.MINT
    return operation


def redemption_started() -> Operation:
    register("AAPL")
    observe("AAPL", onchain="80", offchain="20", usdc_onchain="500", usdc_offchain="500")
    operation = active("AAPL")
    assert operation is not None and operation.kind == OperationKind.REDEMPTION
    return operation


def usdc_started(onchain: str = "100", offchain: str = "900") -> Operation:
    observe(usdc_onchain=onchain, usdc_offchain=offchain)
    operation = active("USDC")
    assert operation is not None
    return operation


def refreshed(operation: Operation) -> Operation:
    operation.refresh_from_db()
    return operation


def balances(key: str) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    row = pool(key)
    return (
        row.onchain_available,
        row.onchain_inflight,
        row.offchain_available,
        row.offchain_inflight,
    )


# --- mint -------------------------------------------------------------------------------------


def test_mint_events_in_separate_batches_move_inventory_from_the_stored_genesis(enabled):
    op = mint_started()
    append(ev.MINT, op.aggregate_id, mint_requested(op))
    # Issue 8: the intent holds the shares inflight (MintAccepted used to move them).
    assert balances("AAPL") == (20, 0, 50, 30)
    append(ev.MINT, op.aggregate_id, mint_accepted(op))  # no MintRequested in this batch
    assert balances("AAPL") == (20, 0, 50, 30)
    assert refreshed(op).status == OperationStatus.PENDING
    append(ev.MINT, op.aggregate_id, tokens_received())
    # In our wallet, not yet in the vault (spec 15.1): still inflight.
    assert balances("AAPL") == (20, 0, 50, 30)
    append(ev.MINT, op.aggregate_id, vault_deposit_submitted())
    assert balances("AAPL") == (20, 0, 50, 30)
    assert active("AAPL") == op  # no second operation while this one is active


def test_mint_deposited_into_vault_completes_the_operation_and_releases_the_guard(enabled):
    op = mint_started()
    append(ev.MINT, op.aggregate_id, mint_requested(op))
    append(ev.MINT, op.aggregate_id, mint_accepted(op))
    append(ev.MINT, op.aggregate_id, tokens_received())
    append(ev.MINT, op.aggregate_id, vault_deposit_submitted())
    append(ev.MINT, op.aggregate_id, ev.DepositedIntoVault(deposited_at=tick()))
    assert balances("AAPL") == (50, 0, 50, 0)
    op = refreshed(op)
    assert (op.status, op.finished_by) == (
        OperationStatus.COMPLETED,
        "event:TokenizedEquityMintEvent::DepositedIntoVault",
    )
    assert op.finished_at is not None
    assert active("AAPL") is None  # balanced now: nothing new
    assert pool("AAPL").last_rebalancing is not None


@pytest.mark.parametrize(
    ("events", "reason", "inflight_kept"),
    [
        (
            lambda op: [ev.MintRejected(reason="insufficient position", rejected_at=tick())],
            "insufficient position",
            False,
        ),
        (
            lambda op: [
                mint_accepted(op),
                ev.MintAcceptanceFailed(reason="rejected", failed_at=tick()),
            ],
            "rejected",
            False,
        ),
        (
            lambda op: [
                mint_accepted(op),
                ev.MintTimedOut(reason="no tokens in 1h", failed_at=tick()),
            ],
            "no tokens in 1h",
            True,
        ),
    ],
    ids=["rejected", "acceptance_failed", "timed_out"],
)
def test_mint_failure_fails_the_operation_with_the_reason_and_rechecks(
    enabled, events, reason, inflight_kept
):
    op = mint_started()
    append(ev.MINT, op.aggregate_id, mint_requested(op))
    for event in events(op):
        append(ev.MINT, op.aggregate_id, event)
    op = refreshed(op)
    assert (op.status, op.failure_reason, op.needs_attention) == (
        OperationStatus.FAILED,
        reason,
        inflight_kept,
    )
    again = active("AAPL")
    if inflight_kept:
        # Shares may still be moving: inflight blocks detection until someone reconciles.
        assert balances("AAPL") == (20, 0, 50, 30)
        assert again is None
    else:
        # Nothing left the venue: still 20/80. Failures do not loop: the pool cools down
        # (shown on the operation) and the re-check once it is over starts a new mint.
        assert balances("AAPL") == (20, 0, 80, 0)
        assert again is None and op.cooldown_until is not None
        again = after_cooldown("AAPL")
        assert again is not None and again.pk != op.pk and again.kind == OperationKind.MINT
        assert queued_operation_tasks()[-1] == again.pk


def test_reconciling_a_timed_out_mint_clears_attention_and_rechecks(enabled):
    op = mint_started()
    append(ev.MINT, op.aggregate_id, mint_requested(op))
    append(ev.MINT, op.aggregate_id, mint_accepted(op))
    append(ev.MINT, op.aggregate_id, ev.MintTimedOut(reason="slow", failed_at=tick()))
    assert refreshed(op).needs_attention
    append(
        ev.MINT,
        op.aggregate_id,
        ev.MintReconciled(reason="settled by phone", operator="alice", reconciled_at=tick()),
    )
    op = refreshed(op)
    assert (op.status, op.needs_attention, op.failure_reason) == (
        OperationStatus.FAILED,
        False,
        "slow",
    )
    assert balances("AAPL") == (20, 0, 50, 0)  # inflight zeroed, not credited
    again = active("AAPL")
    assert again is not None and again.amount == Decimal("15")  # 20/50 -> target 35


def test_reconciling_an_active_operation_ends_it(enabled):
    op = mint_started()
    append(ev.MINT, op.aggregate_id, mint_requested(op))
    append(ev.MINT, op.aggregate_id, mint_accepted(op))
    append(
        ev.MINT,
        op.aggregate_id,
        ev.MintReconciled(reason="cancelled at Alpaca", operator="bob", reconciled_at=tick()),
    )
    op = refreshed(op)
    assert op.status == OperationStatus.FAILED
    assert op.failure_reason == "reconciled by bob: cancelled at Alpaca"


# --- redemption -------------------------------------------------------------------------------


def test_redemption_full_lifecycle_completes_and_releases(enabled):
    op = redemption_started()
    append(ev.REDEMPTION, op.aggregate_id, transfer_signed(op))
    append(ev.REDEMPTION, op.aggregate_id, tokens_sent(op))
    assert balances("AAPL") == (50, 30, 20, 0)
    append(
        ev.REDEMPTION,
        op.aggregate_id,
        ev.Detected(tokenization_request_id="r-1", detected_at=tick()),
    )
    append(ev.REDEMPTION, op.aggregate_id, ev.Completed(completed_at=tick()))
    assert balances("AAPL") == (50, 0, 50, 0)
    assert refreshed(op).status == OperationStatus.COMPLETED
    assert active("AAPL") is None


@pytest.mark.parametrize(
    ("events", "reason", "inflight_kept"),
    [
        (lambda op: [ev.TransferFailed(reason="reverted", failed_at=tick())], "reverted", False),
        (
            lambda op: [tokens_sent(op), ev.DetectionFailed(reason="not seen", failed_at=tick())],
            "not seen",
            True,
        ),
        (
            lambda op: [
                tokens_sent(op),
                ev.Detected(tokenization_request_id="r-1", detected_at=tick()),
                ev.RedemptionRejected(reason="bad wallet", rejected_at=tick()),
            ],
            "bad wallet",
            True,
        ),
    ],
    ids=["transfer_failed", "detection_failed", "rejected"],
)
def test_redemption_failure_fails_the_operation_and_releases_the_guard(
    enabled, events, reason, inflight_kept
):
    op = redemption_started()
    append(ev.REDEMPTION, op.aggregate_id, transfer_signed(op))
    for event in events(op):
        append(ev.REDEMPTION, op.aggregate_id, event)
    op = refreshed(op)
    assert (op.status, op.failure_reason, op.needs_attention) == (
        OperationStatus.FAILED,
        reason,
        inflight_kept,
    )
    assert active("AAPL") is None  # inflight (B13) or the cool-down after a failure
    again = after_cooldown("AAPL")
    if inflight_kept:
        assert again is None  # inflight blocks the pool until reconciled (B13)
    else:
        assert again is not None and again.kind == OperationKind.REDEMPTION


# --- USDC -------------------------------------------------------------------------------------


def usdc_through_bridge(op: Operation) -> None:
    append(ev.USDC_REBALANCE, op.aggregate_id, ev.WithdrawalConfirmed(confirmed_at=tick()))
    append(
        ev.USDC_REBALANCE,
        op.aggregate_id,
        ev.BridgingInitiated(burn_tx_hash=TX, cctp_nonce="0x" + "01" * 32, burned_at=tick()),
    )
    append(
        ev.USDC_REBALANCE,
        op.aggregate_id,
        ev.BridgeAttestationReceived(attestation=b"att", attested_at=tick()),
    )
    append(ev.USDC_REBALANCE, op.aggregate_id, ev.Bridged(mint_tx_hash=TX, minted_at=tick()))


def test_usdc_alpaca_to_base_lifecycle_completes_and_releases(enabled):
    op = usdc_started("100", "900")
    assert (op.kind, op.amount) == (OperationKind.USDC_ALPACA_TO_BASE, Decimal("400"))
    append(ev.USDC_REBALANCE, op.aggregate_id, usdc_requested(op))
    append(ev.USDC_REBALANCE, op.aggregate_id, usdc_initiated(op))
    assert balances("USDC") == (100, 0, 500, 400)
    usdc_through_bridge(op)
    # Issue 8: inflight until the deposit is confirmed (Bridged used to settle it).
    assert balances("USDC") == (100, 0, 500, 400)
    append(
        ev.USDC_REBALANCE,
        op.aggregate_id,
        ev.DepositInitiated(
            deposit_ref=TransferRef(TransferRefKind.ONCHAIN_TX, TX), deposit_initiated_at=tick()
        ),
    )
    assert refreshed(op).status == OperationStatus.PENDING
    append(ev.USDC_REBALANCE, op.aggregate_id, ev.DepositConfirmed(deposit_confirmed_at=tick()))
    assert refreshed(op).status == OperationStatus.COMPLETED
    assert balances("USDC") == (500, 0, 500, 0)
    assert active("USDC") is None


@pytest.mark.parametrize(
    ("steps", "failure", "needs_attention", "retriggered"),
    [
        # Nothing left Base: still 900/100, a new operation starts after the cool-down.
        (0, ev.RequestFailed(reason="below minimum", failed_at=tick()), False, True),
        # Inflight kept: the pool is blocked until an operator reconciles.
        (1, ev.WithdrawalFailed(reason="not whitelisted", failed_at=tick()), True, False),
        (
            2,
            ev.BridgingFailed(burn_tx_hash=TX, cctp_nonce=None, reason="burn", failed_at=tick()),
            True,
            False,
        ),
        # Issue 8: bridged but never deposited: the USDC is not usable at the destination, so
        # it stays inflight for an operator (Bridged used to settle it, hiding the failure).
        (3, ev.DepositFailed(deposit_ref=None, reason="vault", failed_at=tick()), True, False),
    ],
    ids=["request_failed", "withdrawal_failed", "bridging_failed", "deposit_failed"],
)
def test_usdc_failure_fails_the_operation_and_releases_the_guard(
    enabled, steps, failure, needs_attention, retriggered
):
    op = usdc_started("900", "100")
    assert op.kind == OperationKind.USDC_BASE_TO_ALPACA
    append(ev.USDC_REBALANCE, op.aggregate_id, usdc_requested(op))
    if steps >= 1:
        append(ev.USDC_REBALANCE, op.aggregate_id, usdc_initiated(op))
    if steps >= 2:
        append(ev.USDC_REBALANCE, op.aggregate_id, ev.WithdrawalConfirmed(confirmed_at=tick()))
    if steps >= 3:
        append(
            ev.USDC_REBALANCE,
            op.aggregate_id,
            ev.BridgingInitiated(burn_tx_hash=TX, cctp_nonce="0x01", burned_at=tick()),
        )
        append(
            ev.USDC_REBALANCE,
            op.aggregate_id,
            ev.BridgeAttestationReceived(attestation=b"a", attested_at=tick()),
        )
        append(ev.USDC_REBALANCE, op.aggregate_id, ev.Bridged(mint_tx_hash=TX, minted_at=tick()))
    append(ev.USDC_REBALANCE, op.aggregate_id, failure)
    op = refreshed(op)
    assert (op.status, op.failure_reason, op.needs_attention) == (
        OperationStatus.FAILED,
        failure.reason,
        needs_attention,
    )
    assert active("USDC") is None  # inflight, balanced, or the cool-down after a failure
    again = after_cooldown("USDC")
    assert (again is not None) == retriggered
    if again is not None:
        assert again.pk != op.pk and again.pk in queued_operation_tasks()


# --- re-checks after an ending (B11, B4) -------------------------------------------------------


def test_equity_terminal_event_rechecks_usdc_too(enabled):
    op = mint_started()
    setting_change(scope="global", setting="paused", new_value=True, changed_by="ops")
    observe(usdc_onchain="900", usdc_offchain="100")  # paused: no USDC operation
    setting_change(scope="global", setting="paused", new_value=False, changed_by="ops")
    assert active("USDC") is None
    append(ev.MINT, op.aggregate_id, mint_requested(op))
    append(ev.MINT, op.aggregate_id, mint_accepted(op))
    append(ev.MINT, op.aggregate_id, tokens_received())
    append(ev.MINT, op.aggregate_id, ev.MintCompleted(completed_at=tick()))
    usdc = active("USDC")
    assert usdc is not None and usdc.kind == OperationKind.USDC_BASE_TO_ALPACA
    assert usdc.pk in queued_operation_tasks()


def test_failing_an_operation_before_its_first_event_cools_the_pool_down_then_rechecks(enabled):
    op = mint_started()
    operation_fail(operation_id=op.pk, reason="Alpaca returned 500", actor="system")
    assert active("AAPL") is None  # not in the same transaction: failures do not loop
    assert refreshed(op).cooldown_until is not None
    again = after_cooldown("AAPL")
    assert again is not None and again.pk != op.pk
    assert queued_operation_tasks() == [op.pk, again.pk]


def test_terminal_event_of_an_aggregate_without_operation_row_still_rechecks(enabled):
    register("AAPL")
    setting_change(scope="global", setting="paused", new_value=True, changed_by="ops")
    observe("AAPL", onchain="20", offchain="80")
    setting_change(scope="global", setting="paused", new_value=False, changed_by="ops")
    stray = "7f1c1d2e-0000-4000-8000-000000000001"
    append(
        ev.MINT,
        stray,
        ev.MintRequested(symbol="AAPL", quantity=Decimal("5"), wallet=TX[:42], requested_at=tick()),
    )
    append(ev.MINT, stray, ev.MintRejected(reason="manual test", rejected_at=tick()))
    assert active("AAPL") is not None


def test_cap_splits_a_large_imbalance_over_several_cycles(settings):
    enable(settings, equity_cap_shares=Decimal("10"))
    register("AAPL")
    observe("AAPL", onchain="10", offchain="90", usdc_onchain="500", usdc_offchain="500")
    amounts = []
    for _ in range(5):
        op = active("AAPL")
        if op is None:
            break
        amounts.append(op.amount)
        append(ev.MINT, op.aggregate_id, mint_requested(op))
        append(ev.MINT, op.aggregate_id, mint_accepted(op))
        append(ev.MINT, op.aggregate_id, tokens_received())
        append(ev.MINT, op.aggregate_id, ev.MintCompleted(completed_at=tick()))
    assert amounts == [Decimal("10"), Decimal("10")]  # 10/90 -> 20/80 -> 30/70 (balanced)
    assert balances("AAPL") == (30, 0, 70, 0)
    assert Operation.objects.filter(status=OperationStatus.COMPLETED).count() == 2


def test_usdc_cap_limits_each_cycle_until_balanced(settings):
    enable(settings, usdc_cap=Decimal("150"))
    observe(usdc_onchain="0", usdc_offchain="1000")  # excess 500, capped at 150 per cycle
    amounts = []
    for _ in range(5):
        op = active("USDC")
        if op is None:
            break
        amounts.append(op.amount)
        append(ev.USDC_REBALANCE, op.aggregate_id, usdc_requested(op))
        append(ev.USDC_REBALANCE, op.aggregate_id, usdc_initiated(op))
        usdc_through_bridge(op)
        append(ev.USDC_REBALANCE, op.aggregate_id, ev.DepositConfirmed(deposit_confirmed_at=tick()))
    # 0/1000 -> 150/850 (0.15 < 0.2, again) -> 300/700 (0.3: inside 0.5 +/- 0.3)
    assert amounts == [Decimal("150"), Decimal("150")]
    assert balances("USDC") == (300, 0, 700, 0)

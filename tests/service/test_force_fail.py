"""Operator force-fail: before the first event the row is failed directly; afterwards the
aggregate's own failure command records it in the log and its terminal event ends the
operation (guard released, pools re-checked)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from inventory.domain import events as ev
from inventory.domain import mint, redemption, usdc
from inventory.domain.values import InvalidValue, RebalanceDirection, TransferRef, TransferRefKind
from inventory.models import Event
from inventory.store import aggregate_execute
from operations.models import Operation, OperationKind, OperationStatus
from operations.services import (
    OperationAlreadyFinished,
    operation_force_fail,
)
from tests.service.flows import (
    REDEMPTION_WALLET,
    TX,
    WALLET,
    active,
    after_cooldown,
    enable,
    observe,
    register,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def enabled(settings):
    enable(settings)


def started(onchain: str, offchain: str) -> Operation:
    register("AAPL")
    observe("AAPL", onchain=onchain, offchain=offchain, usdc_onchain="500", usdc_offchain="500")
    operation = active("AAPL")
    assert operation is not None
    return operation


def run(spec, operation: Operation, *commands) -> None:
    for command in commands:
        aggregate_execute(spec=spec, aggregate_id=operation.aggregate_id, command=command)


def last_event(operation: Operation) -> Event:
    return Event.objects.filter(aggregate_id=operation.aggregate_id).order_by("-sequence").first()


def test_force_fail_before_any_event_fails_the_row_and_rechecks_after_the_cooldown(enabled):
    op = started("20", "80")
    failed = operation_force_fail(operation_id=op.pk, reason="wrong size", actor="alice")
    assert (failed.status, failed.failure_reason, failed.finished_by) == (
        OperationStatus.FAILED,
        "wrong size",
        "alice",
    )
    assert not Event.objects.filter(aggregate_id=op.aggregate_id).exists()
    assert active("AAPL") is None  # the pool cools down first
    again = after_cooldown("AAPL")
    assert again is not None and again.pk != op.pk


def test_force_fail_of_a_requested_mint_rejects_it_through_the_aggregate(enabled):
    op = started("20", "80")
    run(mint.SPEC, op, mint.RequestMint(symbol="AAPL", quantity=op.amount, wallet=WALLET))
    failed = operation_force_fail(operation_id=op.pk, reason="stuck at Alpaca", actor="alice")
    event = last_event(op)
    assert event.event_type == ev.MintRejected.event_type_name()
    assert event.metadata == {"actor": "alice", "action": "force_fail"}
    assert (failed.status, failed.failure_reason, failed.finished_by) == (
        OperationStatus.FAILED,
        "stuck at Alpaca",
        "alice",
    )
    assert active("AAPL") is None  # the pool cools down after a failure
    assert after_cooldown("AAPL") is not None  # nothing moved: still 20/80, a new mint


def test_force_fail_of_an_accepted_mint_times_it_out_keeping_inflight(enabled):
    op = started("20", "80")
    run(
        mint.SPEC,
        op,
        mint.RequestMint(symbol="AAPL", quantity=op.amount, wallet=WALLET),
        mint.AcknowledgeAcceptance(issuer_request_id=op.aggregate_id, tokenization_request_id="t"),
    )
    failed = operation_force_fail(operation_id=op.pk, reason="no tokens", actor="alice")
    assert last_event(op).event_type == ev.MintTimedOut.event_type_name()
    assert failed.status == OperationStatus.FAILED
    assert failed.needs_attention
    assert active("AAPL") is None  # inflight blocks the pool until reconciled


def test_force_fail_after_tokens_arrived_fails_the_vault_deposit_keeping_inflight(enabled):
    """Since a mint ends in the vault (spec 15.1), received tokens not yet deposited can be
    failed: they sit in the wallet, so the amount stays inflight for an operator."""
    op = started("20", "80")
    run(
        mint.SPEC,
        op,
        mint.RequestMint(symbol="AAPL", quantity=op.amount, wallet=WALLET),
        mint.AcknowledgeAcceptance(issuer_request_id=op.aggregate_id, tokenization_request_id="t"),
        mint.ReceiveTokens(tx_hash=TX, receipt_id=1, shares_minted=30 * 10**18),
    )
    failed = operation_force_fail(operation_id=op.pk, reason="x", actor="alice")
    assert last_event(op).event_type == ev.VaultDepositFailed.event_type_name()
    assert failed.status == OperationStatus.FAILED
    assert active("AAPL") is None  # inflight blocks the pool until reconciled


def test_force_fail_of_sent_redemption_fails_detection(enabled):
    op = started("80", "20")
    assert op.kind == OperationKind.REDEMPTION
    run(
        redemption.SPEC,
        op,
        redemption.SendTokens(
            symbol="AAPL", quantity=op.amount, redemption_wallet=REDEMPTION_WALLET, tx_hash=TX
        ),
    )
    failed = operation_force_fail(operation_id=op.pk, reason="never detected", actor="bob")
    assert last_event(op).event_type == ev.DetectionFailed.event_type_name()
    assert (failed.status, failed.needs_attention) == (OperationStatus.FAILED, True)


def test_force_fail_of_a_bridged_usdc_rebalance_fails_the_deposit(enabled):
    observe(usdc_onchain="100", usdc_offchain="900")
    op = active("USDC")
    assert op is not None
    direction = RebalanceDirection.ALPACA_TO_BASE
    run(
        usdc.SPEC,
        op,
        usdc.Request(direction=direction, amount=op.amount),
        usdc.Initiate(
            direction=direction,
            amount=op.amount,
            withdrawal=TransferRef(
                TransferRefKind.ALPACA_ID, "0b1c5e9e-2f4a-4c1d-9a55-3f0e8d7c6b5a"
            ),
        ),
        usdc.ConfirmWithdrawal(),
        usdc.InitiateBridging(burn_tx=TX, cctp_nonce="0x" + "02" * 32),
        usdc.ReceiveAttestation(attestation=b"att"),
        usdc.ConfirmBridging(mint_tx=TX),
    )
    failed = operation_force_fail(operation_id=op.pk, reason="vault paused", actor="carol")
    assert last_event(op).event_type == ev.DepositFailed.event_type_name()
    assert (failed.status, failed.failure_reason) == (OperationStatus.FAILED, "vault paused")


def test_force_fail_of_a_finished_operation_is_refused(enabled):
    op = started("20", "80")
    operation_force_fail(operation_id=op.pk, reason="x", actor="alice")
    with pytest.raises(OperationAlreadyFinished):
        operation_force_fail(operation_id=op.pk, reason="again", actor="alice")


def test_force_fail_needs_a_reason_and_an_actor(enabled):
    op = started("20", "80")
    with pytest.raises(InvalidValue, match="reason"):
        operation_force_fail(operation_id=op.pk, reason=" ", actor="alice")
    with pytest.raises(InvalidValue, match="actor"):
        operation_force_fail(operation_id=op.pk, reason="x", actor="")
    assert Operation.objects.get(pk=op.pk).amount == Decimal("30")

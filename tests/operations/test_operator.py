"""Operator services and the `operation` management command (real DB and sim venue)."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from inventory.domain import mint
from inventory.models import Event
from inventory.store import aggregate_execute, aggregate_load
from operations.models import Operation, OperationKind, OperationStatus
from operations.operator import (
    OperatorError,
    operator_force_fail,
    operator_reconcile,
    operator_retry_now,
)
from operations.services import operation_create
from operations.venues import Venues
from operations.workflows import operation_advance
from tests.operations.conftest import advance_until_finished
from tests.rebalancer.support import queued_operation_tasks

pytestmark = [pytest.mark.django_db, pytest.mark.chain]


def new_mint(amount: str = "1") -> Operation:
    operation = operation_create(kind=OperationKind.MINT, pool="AAPL", amount=Decimal(amount))
    assert operation is not None
    return operation


def events(operation: Operation) -> list[str]:
    return [
        type(s.event).__name__ for s in aggregate_load(mint.SPEC, operation.aggregate_id).events
    ]


def accepted_mint(sim_venue, venues) -> Operation:
    """A mint Alpaca accepted and is still processing."""
    sim_venue.server.set_knobs(mint_delay_s=60.0)
    operation = new_mint()
    assert operation_advance(operation_id=operation.pk, venues=venues).outcome == "waiting"
    assert events(operation) == ["MintRequested", "MintAccepted"]
    return operation


@pytest.fixture(autouse=True)
def _restore_knobs(sim_venue):
    yield
    sim_venue.server.set_knobs(mint_delay_s=0.3)


def test_force_fail_before_any_event_fails_the_row_and_releases_the_guard(venues, sim_assets):
    operation = new_mint()
    failed = operator_force_fail(
        operation_id=operation.pk, reason="venue down", actor="alice", venues=venues
    )
    assert failed.status == OperationStatus.FAILED
    assert failed.finished_by == "alice"
    assert failed.failure_reason == "venue down"
    assert events(operation) == []
    assert new_mint() is not None


def test_force_fail_after_acceptance_times_out_keeping_inflight_then_reconcile_clears_it(
    sim_venue, venues, sim_assets
):
    operation = accepted_mint(sim_venue, venues)
    failed = operator_force_fail(
        operation_id=operation.pk, reason="ticket 7", actor="alice", venues=venues
    )
    assert failed.status == OperationStatus.FAILED
    assert failed.needs_attention
    assert events(operation)[-1] == "MintTimedOut"
    last = aggregate_load(mint.SPEC, operation.aggregate_id).events[-1]
    assert last.metadata["actor"] == "alice"

    reconciled = operator_reconcile(
        operation_id=operation.pk, reason="settled by hand", actor="bob", venues=venues
    )
    assert events(operation)[-1] == "MintReconciled"
    assert not reconciled.needs_attention
    assert reconciled.status == OperationStatus.FAILED


def test_reconcile_without_kept_inflight_is_refused_and_writes_nothing(venues, sim_assets):
    operation = new_mint()
    advance_until_finished(operation, venues)
    count = Event.objects.count()
    with pytest.raises(OperatorError, match="cannot be reconciled"):
        operator_reconcile(operation_id=operation.pk, reason="x", actor="bob", venues=venues)
    assert Event.objects.count() == count


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"operation_id": 999999, "reason": "x", "actor": "a"}, "no such operation"),
        ({"reason": " ", "actor": "a"}, "reason"),
        ({"reason": "x", "actor": ""}, "actor"),
    ],
)
def test_force_fail_with_bad_input_raises_a_clear_error_and_changes_nothing(
    venues, sim_assets, kwargs, message
):
    operation = new_mint()
    with pytest.raises(OperatorError, match=message):
        operator_force_fail(**{"operation_id": operation.pk, **kwargs}, venues=venues)
    operation.refresh_from_db()
    assert operation.status == OperationStatus.PENDING


def test_force_fail_of_a_finished_operation_is_refused(venues, sim_assets):
    operation = new_mint()
    advance_until_finished(operation, venues)
    with pytest.raises(OperatorError, match="already completed"):
        operator_force_fail(operation_id=operation.pk, reason="x", actor="a", venues=venues)


def test_force_fail_once_tokens_arrived_is_refused(venues, sim_assets):
    operation = new_mint()
    spec = mint.SPEC
    wallet = venues.market_maker_wallet
    for command in (
        mint.RequestMint(symbol="AAPL", quantity=Decimal(1), wallet=wallet),
        mint.AcknowledgeAcceptance(
            issuer_request_id=operation.aggregate_id, tokenization_request_id="t"
        ),
        mint.ReceiveTokens(tx_hash="0x" + "ab" * 32, receipt_id=0, shares_minted=10**18),
    ):
        aggregate_execute(spec=spec, aggregate_id=operation.aggregate_id, command=command)
    with pytest.raises(OperatorError, match="no failure"):
        operator_force_fail(operation_id=operation.pk, reason="x", actor="a", venues=venues)


def test_retry_now_makes_a_waiting_operation_due_and_queues_it(sim_venue, venues, sim_assets):
    operation = accepted_mint(sim_venue, venues)
    from django_q.models import OrmQ

    OrmQ.objects.all().delete()
    retried = operator_retry_now(operation_id=operation.pk, actor="alice")
    assert retried.attempts == 0
    assert queued_operation_tasks() == [operation.pk]


def test_operation_command_fails_and_reports_errors_clearly(settings, venue_config, sim_assets):
    settings.REBALANCING = venue_config
    operation = new_mint()
    call_command("operation", "fail", str(operation.pk), "--reason", "drill", "--actor", "ops")
    operation.refresh_from_db()
    assert operation.status == OperationStatus.FAILED
    with pytest.raises(CommandError, match="already failed"):
        call_command("operation", "fail", str(operation.pk), "--reason", "x", "--actor", "ops")
    with pytest.raises(CommandError, match="cannot be reconciled"):
        call_command("operation", "reconcile", str(operation.pk), "--reason", "x", "--actor", "ops")
    with pytest.raises(CommandError, match="already failed"):
        call_command("operation", "retry", str(operation.pk), "--actor", "ops")


def test_operator_services_work_with_venues_from_settings(settings, venue_config, sim_assets):
    settings.REBALANCING = dataclasses.replace(venue_config)
    operation = new_mint()
    assert operator_force_fail(operation_id=operation.pk, reason="r", actor="a").status == (
        OperationStatus.FAILED
    )
    assert isinstance(Venues.from_config(settings.REBALANCING), Venues)


def signed_redemption(sim_venue, venues, sim_assets) -> tuple[Operation, object]:
    from inventory.domain import redemption
    from operations.workflows.context import StepContext

    chains = sim_venue.chains
    token = sim_assets["MSFT"]
    chains.mint(chains.base, token, venues.market_maker_wallet, 10**18)
    operation = operation_create(
        kind=OperationKind.REDEMPTION, pool="MSFT", amount=Decimal(1), token_address=token
    )
    assert operation is not None
    ctx = StepContext(
        operation=operation, venues=venues, spec=redemption.SPEC, lease_token="", lease_s=5
    )
    base = venues.base
    signed = ctx.sign_and_record(
        chain=base,
        build=lambda nonce: base.build_erc20_transfer(
            token=token, to=venues.redemption_wallet, amount_units=10**18, nonce=nonce
        ),
        command=lambda s: redemption.SignTransfer(
            symbol="MSFT",
            quantity=Decimal(1),
            token=token,
            redemption_wallet=venues.redemption_wallet,
            raw_tx=s.raw,
            tx_hash=s.tx_hash,
        ),
        label="transfer",
    )
    return operation, signed


def redemption_events(operation: Operation) -> list[str]:
    from inventory.domain import redemption

    loaded = aggregate_load(redemption.SPEC, operation.aggregate_id)
    return [type(s.event).__name__ for s in loaded.events]


def test_force_fail_of_a_never_broadcast_transfer_fails_it_and_gives_the_nonce_back(
    sim_venue, venues, sim_assets
):
    from operations.models import ChainNonce

    operation, signed = signed_redemption(sim_venue, venues, sim_assets)
    failed = operator_force_fail(
        operation_id=operation.pk, reason="abandon", actor="alice", venues=venues
    )
    assert failed.status == OperationStatus.FAILED
    assert redemption_events(operation) == ["TransferSigned", "TransferFailed"]
    row = ChainNonce.objects.get(chain_id=venues.base.chain_id)
    assert row.next_nonce == signed.nonce  # no gap left for the next transaction


def test_force_fail_of_a_mined_transfer_records_it_sent_and_keeps_inflight(
    sim_venue, venues, sim_assets
):
    operation, signed = signed_redemption(sim_venue, venues, sim_assets)
    venues.base.send(signed)  # it went out before the operator acted
    failed = operator_force_fail(
        operation_id=operation.pk, reason="ticket 9", actor="alice", venues=venues
    )
    assert failed.status == OperationStatus.FAILED
    assert failed.needs_attention
    assert redemption_events(operation) == ["TransferSigned", "TokensSent", "DetectionFailed"]

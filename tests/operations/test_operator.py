"""Operator services and the `operation` management command (real DB and sim venue)."""

from __future__ import annotations

import dataclasses
import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from inventory.domain import mint
from inventory.models import Event
from inventory.store import aggregate_execute, aggregate_load
from operations.models import Operation, OperationKind, OperationStatus
from operations.operator import (
    OperatorError,
    operator_force_fail,
    operator_lease,
    operator_reconcile,
    operator_retry_now,
)
from operations.services import operation_create
from operations.venues import Venues
from operations.workflows import operation_advance
from tests.operations.conftest import FAST_KNOBS, advance_until_finished, step_events
from tests.service.support import queued_operation_tasks
from venues.sim.server import KEY_MINT, KEY_TOKENIZATION_LIST

pytestmark = [pytest.mark.django_db, pytest.mark.chain]

MINT_POST = KEY_MINT
LIST = KEY_TOKENIZATION_LIST


def new_mint(amount: str = "1") -> Operation:
    operation = operation_create(kind=OperationKind.MINT, pool="AAPL", amount=Decimal(amount))
    assert operation is not None
    return operation


def events(operation: Operation) -> list[str]:
    return [type(s.event).__name__ for s in step_events(mint.SPEC, operation.aggregate_id)]


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
    sim_venue.server.set_knobs(mint_delay_s=FAST_KNOBS.mint_delay_s)


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
    last = step_events(mint.SPEC, operation.aggregate_id)[-1]
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


def test_force_fail_once_tokens_arrived_fails_the_vault_deposit_keeping_inflight(
    venues, sim_assets
):
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
    failed = operator_force_fail(operation_id=operation.pk, reason="x", actor="a", venues=venues)
    assert failed.status == OperationStatus.FAILED
    assert failed.needs_attention  # the tokens sit in the wallet, not in the vault
    state = aggregate_load(mint.SPEC, operation.aggregate_id).state
    assert mint.can_reconcile(state)


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

    return [type(s.event).__name__ for s in step_events(redemption.SPEC, operation.aggregate_id)]


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
    # Alpaca has not seen the transfer yet when the operator acts: without this the sim's
    # fast detection (0.1 s) could complete the redemption first on a slow machine
    knobs = sim_venue.server.knobs
    sim_venue.server.set_knobs(redemption_detect_delay_s=3600.0)
    try:
        venues.base.send(signed)  # it went out before the operator acted
        failed = operator_force_fail(
            operation_id=operation.pk, reason="ticket 9", actor="alice", venues=venues
        )
    finally:
        sim_venue.server.set_knobs(redemption_detect_delay_s=knobs.redemption_detect_delay_s)
    assert failed.status == OperationStatus.FAILED
    assert failed.needs_attention
    assert redemption_events(operation) == ["TransferSigned", "TokensSent", "DetectionFailed"]


# --- operators and workers do not race ----------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_force_fail_is_refused_while_a_worker_is_between_its_check_and_its_mint_post(
    sim_venue, venues, sim_assets
):
    """The sim holds the worker's POST before it has any effect (Alpaca knows nothing yet):
    a force-fail landing there would record a rejection while the POST goes on to mint."""
    operation = new_mint()
    # Alpaca keeps the mint pending once the POST goes on (the fixture restores the knob): the
    # sim's fast 0.3 s could complete it within the worker's advance on a slow machine.
    sim_venue.server.set_knobs(mint_delay_s=3600.0)
    posts_before = sim_venue.server.request_count(MINT_POST)
    hold = sim_venue.server.hold_next(MINT_POST)
    outcomes: list[str] = []

    def worker() -> None:
        try:
            outcomes.append(operation_advance(operation_id=operation.pk, venues=venues).outcome)
        finally:
            connection.close()

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        assert hold.arrived.wait(60), "the worker never posted the mint"
        with pytest.raises(OperatorError, match="holds its lease"):
            operator_force_fail(
                operation_id=operation.pk, reason="looks stuck", actor="alice", venues=venues
            )
        with pytest.raises(OperatorError, match="holds its lease"):
            operator_retry_now(operation_id=operation.pk, actor="alice")
        assert events(operation) == ["MintRequested"]
    finally:
        hold.release()
        thread.join(60)
    assert outcomes == ["waiting"]
    assert events(operation) == ["MintRequested", "MintAccepted"]
    assert sim_venue.server.request_count(MINT_POST) - posts_before == 1

    # Released: the operator's force-fail now goes through (accepted -> inflight kept).
    failed = operator_force_fail(
        operation_id=operation.pk, reason="looks stuck", actor="alice", venues=venues
    )
    assert failed.status == OperationStatus.FAILED
    assert events(operation)[-1] == "MintTimedOut"


def test_a_worker_delivery_skips_while_an_operator_holds_the_lease(venues, sim_assets):
    operation = new_mint()
    with operator_lease(operation_id=operation.pk, actor="alice", lease_s=60) as token:
        assert token.startswith("operator:alice:")
        assert operation_advance(operation_id=operation.pk, venues=venues).outcome == "skipped"
        operation.refresh_from_db()
        assert operation.claimed_by == token
    operation.refresh_from_db()
    assert operation.claimed_by == ""
    assert events(operation) == []


def test_an_expired_worker_lease_does_not_block_the_operator(venues, sim_assets):
    operation = new_mint()
    Operation.objects.filter(pk=operation.pk).update(
        claimed_by="dead-host:1:abc", claimed_until=timezone.now() - timedelta(seconds=1)
    )
    failed = operator_force_fail(
        operation_id=operation.pk, reason="worker died", actor="alice", venues=venues
    )
    assert failed.status == OperationStatus.FAILED


# --- never declare a venue request dead without asking the venue ----------------------------


def requested_mint(venues) -> Operation:
    operation = new_mint()
    aggregate_execute(
        spec=mint.SPEC,
        aggregate_id=operation.aggregate_id,
        command=mint.RequestMint(
            symbol="AAPL", quantity=Decimal(1), wallet=venues.market_maker_wallet
        ),
    )
    return operation


def test_force_fail_of_a_requested_mint_alpaca_holds_records_it_accepted_and_keeps_inflight(
    sim_venue, venues, sim_assets
):
    sim_venue.server.set_knobs(mint_delay_s=60.0)
    operation = new_mint()
    sim_venue.server.fail_next(MINT_POST, "5xx_after")  # it reached Alpaca; the answer did not
    assert operation_advance(operation_id=operation.pk, venues=venues).outcome == "retry"
    assert events(operation) == ["MintRequested"]

    failed = operator_force_fail(
        operation_id=operation.pk, reason="stuck", actor="alice", venues=venues
    )

    assert failed.status == OperationStatus.FAILED
    assert failed.needs_attention
    assert events(operation) == ["MintRequested", "MintAccepted", "MintTimedOut"]


def test_force_fail_of_a_requested_mint_alpaca_cannot_confirm_stays_active_until_reconciled(
    sim_venue, venues, sim_assets
):
    operation = requested_mint(venues)
    sim_venue.server.fail_next(LIST, "5xx", times=3)  # every read retry of the lookup

    with pytest.raises(OperatorError, match="stays active"):
        operator_force_fail(operation_id=operation.pk, reason="stuck", actor="alice", venues=venues)

    operation.refresh_from_db()
    assert operation.is_active
    assert operation.needs_attention
    assert operation.claimed_by == ""
    assert events(operation) == ["MintRequested"]

    reconciled = operator_reconcile(
        operation_id=operation.pk,
        reason="no such request in Alpaca's dashboard",
        actor="bob",
        venues=venues,
    )
    assert reconciled.status == OperationStatus.FAILED
    assert not reconciled.needs_attention
    assert events(operation) == ["MintRequested", "MintRejected"]
    last = step_events(mint.SPEC, operation.aggregate_id)[-1]
    assert last.event.reason == "reconciled by bob: no such request in Alpaca's dashboard"
    assert last.metadata["action"] == "reconcile"

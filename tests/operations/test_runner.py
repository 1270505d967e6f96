"""The runner's claim, lease, attempts, parking and give-up paths (real DB and sim venue)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from inventory.domain import mint
from inventory.store import aggregate_execute, aggregate_load
from operations.due import due_loop, operations_due_enqueue
from operations.models import Operation, OperationKind, OperationStatus
from operations.services import operation_create
from operations.workflows import operation_advance
from operations.workflows.runner import backoff_seconds
from tests.operations.conftest import FAST_KNOBS, step_events
from tests.service.support import queued_operation_tasks
from venues.sim.server import FAULT_5XX, FAULT_5XX_AFTER, FAULT_429, KEY_MINT, KEY_TOKENIZATION_LIST

pytestmark = [pytest.mark.django_db, pytest.mark.chain]

LIST = KEY_TOKENIZATION_LIST
MINT_POST = KEY_MINT


def new_mint(amount: str = "1", symbol: str = "AAPL") -> Operation:
    operation = operation_create(kind=OperationKind.MINT, pool=symbol, amount=Decimal(amount))
    assert operation is not None
    return operation


def events(operation: Operation) -> list[str]:
    return [type(s.event).__name__ for s in step_events(mint.SPEC, operation.aggregate_id)]


def test_duplicate_delivery_skips_while_another_workers_lease_is_valid(venues, sim_assets):
    operation = new_mint()
    Operation.objects.filter(pk=operation.pk).update(
        claimed_by="other-host:1:abc",
        claimed_until=timezone.now() + timedelta(seconds=60),
        status=OperationStatus.RUNNING,
    )
    result = operation_advance(operation_id=operation.pk, venues=venues)
    operation.refresh_from_db()
    assert result.outcome == "skipped"
    assert operation.attempts == 0
    assert operation.claimed_by == "other-host:1:abc"
    assert events(operation) == []


def test_an_expired_lease_of_a_dead_worker_is_taken_over(sim_venue, venues, sim_assets):
    operation = new_mint()
    Operation.objects.filter(pk=operation.pk).update(
        claimed_by="dead-host:1:abc",
        claimed_until=timezone.now() - timedelta(seconds=1),
        status=OperationStatus.RUNNING,
        attempts=1,
    )
    # Alpaca holds the mint: with the sim's fast 0.3 s a slow machine could see it completed
    # within the same advance and go on past the acceptance.
    sim_venue.server.set_knobs(mint_delay_s=3600.0)
    try:
        result = operation_advance(operation_id=operation.pk, venues=venues)
    finally:
        sim_venue.server.set_knobs(mint_delay_s=FAST_KNOBS.mint_delay_s)
    operation.refresh_from_db()
    assert result.outcome == "waiting"
    assert events(operation) == ["MintRequested", "MintAccepted"]
    assert operation.claimed_by == ""


def test_task_for_a_finished_operation_is_dropped_without_counting(venues, sim_assets):
    operation = new_mint()
    Operation.objects.filter(pk=operation.pk).update(status=OperationStatus.CANCELLED)
    assert operation_advance(operation_id=operation.pk, venues=venues).outcome == "skipped"
    operation.refresh_from_db()
    assert operation.attempts == 0


def test_transient_errors_record_last_error_and_back_off_keeping_the_attempt(
    sim_venue, venues, sim_assets
):
    operation = new_mint()
    sim_venue.server.fail_next(LIST, FAULT_5XX, times=3)  # every read retry of one step
    result = operation_advance(operation_id=operation.pk, venues=venues)
    operation.refresh_from_db()
    assert result.outcome == "retry"
    assert operation.status == OperationStatus.WAITING
    assert operation.attempts == 1
    assert "503" in operation.last_error
    assert operation.next_run_at > timezone.now()
    assert operation.claimed_by == ""
    assert events(operation) == ["MintRequested"]


def test_rate_limited_step_waits_at_least_what_alpacas_retry_after_asks(
    sim_venue, venues, sim_assets
):
    operation = new_mint()
    sim_venue.server.set_knobs(retry_after_s=45)
    sim_venue.server.fail_next(LIST, FAULT_429)
    try:
        result = operation_advance(operation_id=operation.pk, venues=venues)
    finally:
        sim_venue.server.set_knobs(retry_after_s=2)
    operation.refresh_from_db()
    assert result.outcome == "retry"
    assert result.wait_s == 45.0
    assert backoff_seconds(venues.workers, 1) < 45.0
    assert "429" in operation.last_error
    assert operation.next_run_at > timezone.now() + timedelta(seconds=40)
    assert events(operation) == ["MintRequested"]


def test_exhausted_attempts_before_any_event_fail_the_operation_and_release_the_guard(
    venues, sim_assets
):
    operation = new_mint()
    limit = venues.workers.max_attempts
    Operation.objects.filter(pk=operation.pk).update(attempts=limit, last_error="boom")
    result = operation_advance(operation_id=operation.pk, venues=venues)
    operation.refresh_from_db()
    assert result.outcome == "gave_up"
    assert operation.status == OperationStatus.FAILED
    assert f"exhausted {limit} attempts; last error: boom" == operation.failure_reason
    assert new_mint() is not None  # guard released


def test_exhausted_attempts_after_a_request_alpaca_never_received_record_the_rejection(
    sim_venue, venues, sim_assets
):
    """Alpaca is asked first (by our issuer_request_id) and confirms it holds nothing."""
    lookups_before = sim_venue.server.request_count(LIST)
    operation = new_mint()
    aggregate_execute(
        spec=mint.SPEC,
        aggregate_id=operation.aggregate_id,
        command=mint.RequestMint(
            symbol="AAPL", quantity=Decimal(1), wallet=venues.market_maker_wallet
        ),
    )
    Operation.objects.filter(pk=operation.pk).update(attempts=venues.workers.max_attempts)
    assert operation_advance(operation_id=operation.pk, venues=venues).outcome == "gave_up"
    operation.refresh_from_db()
    assert operation.status == OperationStatus.FAILED
    assert events(operation) == ["MintRequested", "MintRejected"]
    assert sim_venue.server.request_count(LIST) > lookups_before


def test_exhausted_attempts_after_a_post_alpaca_took_keep_the_mint_inflight_not_rejected(
    sim_venue, venues, sim_assets
):
    """The POST took effect but its answer was lost; the attempts then ran out. Recording a
    rejection would free the pool for a second mint while Alpaca mints the first."""
    posts_before = sim_venue.server.request_count(MINT_POST)
    sim_venue.server.set_knobs(mint_delay_s=60.0)
    try:
        operation = new_mint()
        sim_venue.server.fail_next(MINT_POST, FAULT_5XX_AFTER)
        assert operation_advance(operation_id=operation.pk, venues=venues).outcome == "retry"
        assert events(operation) == ["MintRequested"]
        Operation.objects.filter(pk=operation.pk).update(attempts=venues.workers.max_attempts)

        assert operation_advance(operation_id=operation.pk, venues=venues).outcome == "gave_up"
    finally:
        sim_venue.server.set_knobs(mint_delay_s=FAST_KNOBS.mint_delay_s)
    operation.refresh_from_db()
    assert events(operation) == ["MintRequested", "MintAccepted", "MintTimedOut"]
    assert operation.status == OperationStatus.FAILED
    assert operation.needs_attention
    assert mint.can_reconcile(aggregate_load(mint.SPEC, operation.aggregate_id).state)
    assert sim_venue.server.request_count(MINT_POST) - posts_before == 1


def test_exhausted_attempts_while_alpaca_cannot_be_asked_keep_the_mint_active_and_flagged(
    sim_venue, venues, sim_assets
):
    operation = new_mint()
    aggregate_execute(
        spec=mint.SPEC,
        aggregate_id=operation.aggregate_id,
        command=mint.RequestMint(
            symbol="AAPL", quantity=Decimal(1), wallet=venues.market_maker_wallet
        ),
    )
    Operation.objects.filter(pk=operation.pk).update(attempts=venues.workers.max_attempts)
    sim_venue.server.fail_next(LIST, FAULT_5XX, times=3)  # every read retry of the lookup

    result = operation_advance(operation_id=operation.pk, venues=venues)

    operation.refresh_from_db()
    assert result.outcome == "attention"
    assert operation.is_active
    assert operation.needs_attention
    assert "cannot tell whether Alpaca holds" in operation.last_error
    assert events(operation) == ["MintRequested"]
    assert new_mint_blocked("AAPL")

    # Alpaca still cannot answer at the next try: still active, and the error does not nest.
    sim_venue.server.fail_next(LIST, FAULT_5XX, times=3)
    assert operation_advance(operation_id=operation.pk, venues=venues).outcome == "attention"
    operation.refresh_from_db()
    assert operation.is_active
    assert operation.last_error.count("exhausted") == 1, operation.last_error


def new_mint_blocked(symbol: str) -> bool:
    return operation_create(kind=OperationKind.MINT, pool=symbol, amount=Decimal(1)) is None


def test_backoff_doubles_per_attempt_up_to_the_maximum(venues):
    config = venues.workers
    assert backoff_seconds(config, 1) == config.backoff_base_s
    assert backoff_seconds(config, 2) == 2 * config.backoff_base_s
    assert backoff_seconds(config, 50) == config.backoff_max_s


def test_due_loop_enqueues_only_waiting_operations_that_are_due(venues, sim_assets):
    due = new_mint(symbol="AAPL")
    later = new_mint(symbol="MSFT")
    from django_q.models import OrmQ

    OrmQ.objects.all().delete()
    now = timezone.now()
    # As the runner leaves them after a Wait: their tasks consumed (no queued mark).
    Operation.objects.filter(pk=due.pk).update(
        status=OperationStatus.WAITING, next_run_at=now - timedelta(seconds=1), queued_until=None
    )
    Operation.objects.filter(pk=later.pk).update(
        status=OperationStatus.WAITING, next_run_at=now + timedelta(minutes=5), queued_until=None
    )
    assert operations_due_enqueue() == [due.pk]
    assert queued_operation_tasks() == [due.pk]
    assert due_loop(interval_s=0.01, max_iterations=2) == 0  # already queued: not again

"""The Operation row says what is due and what is queued; the due loop's dispatch enqueues one
task per due row, never reads the broker, and enqueues again only what the row shows lost."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.utils import timezone
from django_q.models import OrmQ, Schedule

from operations.due import operations_dispatch, queued_marks_release
from operations.models import Operation, OperationKind, OperationStatus
from operations.services import operation_create, operation_fail
from operations.sweep import (
    SWEEP_FUNC,
    SWEEP_SCHEDULE_NAME,
    sweep_operations,
    sweep_schedule_ensure,
)
from operations.tasks import execute_operation
from operations.workflows import operation_advance
from tests.service.support import queued_operation_tasks, queued_tasks

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)

pytestmark = pytest.mark.django_db


def create(pool: str = "AAPL") -> Operation:
    kind = OperationKind.USDC_BASE_TO_ALPACA if pool == "USDC" else OperationKind.MINT
    operation = operation_create(kind=kind, pool=pool, amount=Decimal("60"), now=NOW)
    assert operation is not None
    return operation


def lose_all_tasks() -> None:
    OrmQ.objects.all().delete()


def after_queued(*operations: Operation) -> datetime:
    """A moment after the queued marks of `operations` passed (no worker took their task)."""
    marks = Operation.objects.filter(pk__in=[o.pk for o in operations]).values_list(
        "queued_until", flat=True
    )
    return max(marks) + timedelta(seconds=1)


def waiting(operation: Operation, next_run_at: datetime | None) -> None:
    """As the runner leaves it after a Wait: waiting, its task consumed (no queued mark)."""
    Operation.objects.filter(pk=operation.pk).update(
        status=OperationStatus.WAITING, next_run_at=next_run_at, queued_until=None
    )


def test_a_created_operation_is_marked_queued_with_its_one_task():
    operation = create()
    operation.refresh_from_db()
    assert operation.queued_until is not None and operation.queued_until > timezone.now()
    assert queued_operation_tasks() == [operation.pk]


def test_dispatch_never_duplicates_a_task_the_row_says_is_queued():
    operation = create()
    lose_all_tasks()  # the broker lost it, but nothing reads the broker: the row rules
    assert sweep_operations(now=NOW) == []
    assert operations_dispatch() == []
    assert queued_tasks() == []
    assert sweep_operations(now=after_queued(operation)) == [operation.pk]
    assert queued_tasks() == [("operations.tasks.execute_operation", (operation.pk,))]


def test_dispatch_twice_queues_one_task_per_operation():
    mint = create("AAPL")
    cash = create("USDC")
    lose_all_tasks()
    later = after_queued(mint, cash)
    assert operations_dispatch(now=later) == [mint.pk, cash.pk]
    assert operations_dispatch(now=later) == []
    assert sorted(queued_operation_tasks()) == [mint.pk, cash.pk]


def test_dispatch_leaves_an_operation_whose_lease_is_valid():
    operation = create()
    later = after_queued(operation)
    Operation.objects.filter(pk=operation.pk).update(
        status=OperationStatus.RUNNING,
        claimed_by=f"{socket.gethostname()}:{os.getpid()}:x",
        claimed_until=later + timedelta(minutes=2),
    )
    assert operations_dispatch(now=later) == []


def test_dispatch_ignores_finished_operations():
    operation = create()
    lose_all_tasks()
    operation_fail(operation_id=operation.pk, reason="refused", actor="system")
    assert operations_dispatch(now=after_queued(operation)) == []
    assert queued_tasks() == []


@pytest.mark.parametrize(
    ("next_run_at", "expected_enqueued"),
    [
        (NOW + timedelta(seconds=30), False),
        (NOW, True),
        (NOW - timedelta(minutes=5), True),
        (None, True),
    ],
)
def test_a_waiting_operation_is_enqueued_only_when_it_is_due(next_run_at, expected_enqueued):
    operation = create()
    lose_all_tasks()
    waiting(operation, next_run_at)
    assert operations_dispatch(now=NOW) == ([operation.pk] if expected_enqueued else [])
    assert queued_operation_tasks() == ([operation.pk] if expected_enqueued else [])


def test_a_due_wait_is_silent_and_a_lost_task_or_lease_is_a_warning(caplog):
    """A waiting operation whose time came is the due loop's routine (no line: hundreds a
    day); a queued task nobody took in time and a lease that expired are worth a WARNING."""
    come_due, lost_task, lost_worker = create("AAPL"), create("USDC"), create("TSLA")
    later = after_queued(come_due, lost_task, lost_worker)
    lose_all_tasks()
    waiting(come_due, later - timedelta(seconds=1))
    Operation.objects.filter(pk=lost_worker.pk).update(
        status=OperationStatus.RUNNING,
        queued_until=None,
        claimed_by="another-host:1:x",
        claimed_until=later - timedelta(seconds=1),
    )
    with caplog.at_level("DEBUG", logger="operations"):
        assert operations_dispatch(now=later) == [come_due.pk, lost_task.pk, lost_worker.pk]
    said = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "operations.due"]
    assert said == [
        (
            "WARNING",
            f"operation {lost_task.pk}: its queued task was not taken in time, enqueued again",
        ),
        ("WARNING", f"operation {lost_worker.pk}: its worker's lease expired, enqueued again"),
    ]


def test_a_lease_of_a_dead_worker_of_this_host_is_void_and_the_operation_due_at_once():
    """A worker of this host killed mid-step: its lease is void and the operation gets a new
    task now (not when its lease expires), without touching the broker's rows. Leases of a
    live process, or of another host, stay."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    host = socket.gethostname()
    lost, alive, elsewhere = create("AAPL"), create("TSLA"), create("NVDA")
    leases = {
        lost.pk: f"{host}:{gone.pid}:a",
        alive.pk: f"{host}:{os.getpid()}:b",
        elsewhere.pk: f"another-host:{gone.pid}:c",
    }
    for pk, token in leases.items():
        Operation.objects.filter(pk=pk).update(
            status=OperationStatus.RUNNING,
            queued_until=None,
            claimed_by=token,
            claimed_until=NOW + timedelta(minutes=2),
        )
    locked = NOW + timedelta(minutes=3)
    OrmQ.objects.update(lock=locked)  # each task held by its worker
    rows_before = list(OrmQ.objects.values_list("pk", "lock"))

    assert operations_dispatch(now=NOW) == [lost.pk]

    claims = dict(Operation.objects.values_list("pk", "claimed_by"))
    assert claims == {lost.pk: "", alive.pk: leases[alive.pk], elsewhere.pk: leases[elsewhere.pk]}
    # The broker's rows are as they were (nothing unlocked by hand), plus the one new task.
    assert set(rows_before) <= set(OrmQ.objects.values_list("pk", "lock"))
    assert sorted(queued_operation_tasks()) == sorted([*leases, lost.pk])


def test_a_task_delivered_late_neither_runs_a_waiting_operation_early_nor_counts_an_attempt():
    operation = create()
    waiting(operation, timezone.now() + timedelta(minutes=5))
    execute_operation(operation.pk)  # the django-q2 task
    operation.refresh_from_db()
    assert (operation.status, operation.attempts, operation.claimed_by) == (
        OperationStatus.WAITING,
        0,
        "",
    )
    # In process (`--once`, the tests' harness) it runs now: here it finds no venues.
    assert operation_advance(operation_id=operation.pk).outcome == "attention"
    operation.refresh_from_db()
    assert operation.attempts == 1


def test_replacing_the_cluster_forgets_the_queued_marks_so_they_are_enqueued_at_once():
    first, second = create("AAPL"), create("USDC")
    lose_all_tasks()  # the cluster held them in its buffer and died with them
    assert operations_dispatch() == []
    assert queued_marks_release() == 2
    assert operations_dispatch() == [first.pk, second.pk]
    assert sorted(queued_operation_tasks()) == [first.pk, second.pk]


def test_sweep_schedule_ensure_is_idempotent_and_runs_every_minute():
    sweep_schedule_ensure()
    sweep_schedule_ensure()
    schedules = Schedule.objects.filter(name=SWEEP_SCHEDULE_NAME)
    assert schedules.count() == 1
    schedule = schedules.get()
    assert (schedule.func, schedule.schedule_type, schedule.minutes, schedule.repeats) == (
        SWEEP_FUNC,
        Schedule.MINUTES,
        1,
        -1,
    )


def test_migrate_creates_the_sweep_schedule():
    Schedule.objects.filter(name=SWEEP_SCHEDULE_NAME).delete()
    call_command("migrate", verbosity=0)
    assert Schedule.objects.filter(name=SWEEP_SCHEDULE_NAME, func=SWEEP_FUNC).count() == 1

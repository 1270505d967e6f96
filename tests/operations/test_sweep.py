"""The sweep re-enqueues active operations that lost their task, and never duplicates one."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django_q.models import OrmQ, Schedule

from operations.models import Operation, OperationKind, OperationStatus
from operations.services import operation_create, operation_fail
from operations.sweep import (
    SWEEP_FUNC,
    SWEEP_SCHEDULE_NAME,
    _operation_of,
    sweep_operations,
    sweep_schedule_ensure,
)
from tests.rebalancer.support import queued_operation_tasks, queued_tasks

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)

pytestmark = pytest.mark.django_db


def create(pool: str = "AAPL") -> Operation:
    kind = OperationKind.USDC_BASE_TO_ALPACA if pool == "USDC" else OperationKind.MINT
    operation = operation_create(kind=kind, pool=pool, amount=Decimal("60"), now=NOW)
    assert operation is not None
    return operation


def lose_all_tasks() -> None:
    OrmQ.objects.all().delete()


def test_sweep_reenqueues_an_operation_whose_task_was_lost():
    operation = create()
    lose_all_tasks()
    assert sweep_operations(now=NOW) == [operation.pk]
    assert queued_tasks() == [("operations.tasks.execute_operation", (operation.pk,))]


def test_sweep_does_not_duplicate_a_queued_task():
    operation = create()
    assert sweep_operations(now=NOW) == []
    assert queued_operation_tasks() == [operation.pk]


def test_sweep_twice_queues_one_task_per_operation():
    mint = create("AAPL")
    cash = create("USDC")
    lose_all_tasks()
    assert sweep_operations(now=NOW) == [mint.pk, cash.pk]
    assert sweep_operations(now=NOW) == []
    assert sorted(queued_operation_tasks()) == [mint.pk, cash.pk]


def test_sweep_keeps_a_task_that_a_worker_holds_locked():
    operation = create()
    OrmQ.objects.update(lock=NOW + timedelta(minutes=3))  # claimed by a worker
    assert sweep_operations(now=NOW) == []
    assert queued_operation_tasks() == [operation.pk]


def test_sweep_ignores_finished_operations():
    operation = create()
    lose_all_tasks()
    operation_fail(operation_id=operation.pk, reason="refused", actor="system")
    assert sweep_operations(now=NOW) == []
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
def test_sweep_reenqueues_a_waiting_operation_only_when_it_is_due(next_run_at, expected_enqueued):
    operation = create()
    lose_all_tasks()
    Operation.objects.filter(pk=operation.pk).update(
        status=OperationStatus.WAITING, next_run_at=next_run_at
    )
    assert sweep_operations(now=NOW) == ([operation.pk] if expected_enqueued else [])


def test_a_waiting_operation_come_due_is_routine_and_a_lost_task_is_a_warning(caplog):
    """Issue 22: a waiting operation whose time came is enqueued by the due loop many times a
    day (INFO); an active operation whose task is gone is worth a WARNING."""
    waiting = create("AAPL")
    lost = create("USDC")
    lose_all_tasks()
    Operation.objects.filter(pk=waiting.pk).update(
        status=OperationStatus.WAITING, next_run_at=NOW - timedelta(seconds=1)
    )
    with caplog.at_level("INFO", logger="operations.sweep"):
        assert sweep_operations(now=NOW) == [waiting.pk, lost.pk]
    said = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "operations.sweep"]
    assert said == [
        ("INFO", f"sweep: operation {waiting.pk} is due, re-enqueued"),
        ("WARNING", f"sweep: operation {lost.pk} had no queued task, re-enqueued"),
    ]


def test_sweep_reenqueues_a_running_operation_whose_worker_died_with_its_task():
    operation = create()
    lose_all_tasks()
    Operation.objects.filter(pk=operation.pk).update(status=OperationStatus.RUNNING)
    assert sweep_operations(now=NOW) == [operation.pk]


def test_a_task_whose_worker_died_is_delivered_again_at_once_and_live_leases_stay():
    """A worker of this host killed mid-step: its lease is void and its locked row is made
    deliverable now (not after the broker's retry period), without a second task. Leases of a
    live process, or of another host, are left alone."""
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
            claimed_by=token,
            claimed_until=NOW + timedelta(minutes=2),
        )
    OrmQ.objects.update(lock=NOW + timedelta(minutes=3))  # each task held by its worker

    assert sweep_operations(now=NOW) == []  # nothing queued twice

    claims = dict(Operation.objects.values_list("pk", "claimed_by"))
    assert claims == {lost.pk: "", alive.pk: leases[alive.pk], elsewhere.pk: leases[elsewhere.pk]}
    deliverable = {_operation_of(row.payload) for row in OrmQ.objects.filter(lock__lte=NOW)}
    assert deliverable == {lost.pk}
    assert sorted(queued_operation_tasks()) == sorted(leases)


def test_sweep_ignores_other_tasks_in_the_queue():
    from django_q.tasks import async_task

    operation = create()
    lose_all_tasks()
    async_task("math.floor", operation.pk)
    assert sweep_operations(now=NOW) == [operation.pk]


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


def test_a_sweep_tick_unpickles_only_the_payloads_it_has_not_seen():
    from operations.sweep import DECODED, queued_operation_ids

    first, second = create("AAPL"), create("USDC")
    assert queued_operation_ids() == {first.pk, second.pk}
    before = DECODED.decoded

    assert sweep_operations(now=NOW) == []
    assert sweep_operations(now=NOW) == []
    assert queued_operation_ids() == {first.pk, second.pk}
    assert DECODED.decoded == before  # nothing new in the queue: nothing unpickled

    lose_all_tasks()
    assert sweep_operations(now=NOW) == [first.pk, second.pk]  # forgotten once gone
    assert queued_operation_ids() == {first.pk, second.pk}
    assert queued_operation_ids() == {first.pk, second.pk}
    assert DECODED.decoded == before + 2  # the two re-enqueued payloads, once each

"""The due loop: the one place that turns due Operation rows into django-q2 tasks.

The Operation row owns "when does this run next and who holds it": `next_run_at` (a waiting
operation's resume time), the lease (`claimed_by`, `claimed_until`, taken by the runner) and
`queued_until` (a task was enqueued and no worker has taken it yet). django-q2 is only the
transport that wakes a worker. Each tick `operations_dispatch`, in one transaction, selects the
due rows that have no task queued (row locks, skipping rows another host is dispatching), marks
them queued and enqueues one task each. Nothing reads the broker back:

- a waiting operation whose time came is due, and gets its task;
- a task lost anywhere (a push that never reached Redis, a cluster killed with tasks in its
  buffer) is a `queued_until` that passed: the operation is enqueued again;
- a worker killed mid-step is a lease that expired (or, on this host, whose process is gone:
  `dead_leases_release`, which reads the process table, never the broker): the operation is
  due again like any other.
- runrebalancer's supervisor, when it replaces its cluster, forgets every `queued_until`
  (`queued_marks_release`: the tasks in the dead cluster's buffer are gone), so those operations
  are enqueued again at once.

A duplicate delivery is harmless: the runner takes the lease only when the row is due and
unleased, and a task that finds it otherwise returns.

    python manage.py operation due-loop [--interval 2]

runrebalancer runs it as a thread; several (hosts) are harmless. Between ticks it sleeps until
the next interval or the earliest `next_run_at`, whichever comes first.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from datetime import datetime

from django.db import close_old_connections, connection, transaction
from django.db.models import Min, Q
from django.utils import timezone

from operations.models import ACTIVE_STATUSES, Operation, OperationStatus
from operations.services import (
    operation_due,
    pools_cooled_down_recheck,
    queued_until_from,
    task_push,
)

logger = logging.getLogger(__name__)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _lease_pid(claimed_by: str, host: str) -> int | None:
    """The pid in a lease token `host:pid:nonce` taken on `host`, else None."""
    owner, _, rest = claimed_by.partition(":")
    pid, _, _ = rest.partition(":")
    if owner != host or not pid.isdigit():
        return None
    return int(pid)


def dead_leases_release(*, now: datetime | None = None) -> list[int]:
    """Void the leases of active operations held by a process of this host that is gone (a
    worker killed mid-step); returns the operation ids. Leases of other hosts are theirs."""
    moment = now or timezone.now()
    host = socket.gethostname()
    released = []
    leased = Operation.objects.filter(
        status__in=ACTIVE_STATUSES, claimed_until__gt=moment, claimed_by__startswith=f"{host}:"
    ).values_list("pk", "claimed_by")
    for operation_id, claimed_by in leased:
        pid = _lease_pid(claimed_by, host)
        if pid is None or _process_alive(pid):
            continue
        # Only if the lease is still that dead process's (compare-and-set).
        if Operation.objects.filter(pk=operation_id, claimed_by=claimed_by).update(
            claimed_by="", claimed_until=None
        ):
            logger.warning(
                "operation %s: its worker (pid %s) is gone; lease voided", operation_id, pid
            )
            released.append(operation_id)
    return released


def queued_marks_release() -> int:
    """Forget which active operations have a task queued (their tasks died with a cluster);
    returns how many rows changed."""
    return Operation.objects.filter(status__in=ACTIVE_STATUSES, queued_until__isnull=False).update(
        queued_until=None
    )


def operations_dispatch(*, now: datetime | None = None) -> list[int]:
    """Enqueue one task per due operation that has none queued; returns their ids."""
    moment = now or timezone.now()
    voided = set(dead_leases_release(now=moment))  # each logged there
    not_queued = Q(queued_until__isnull=True) | Q(queued_until__lte=moment)
    rows = Operation.objects.filter(operation_due(moment) & not_queued).order_by("pk")
    if connection.features.has_select_for_update_skip_locked:
        rows = rows.select_for_update(skip_locked=True)
    with transaction.atomic():
        due = list(rows.only("pk", "status", "queued_until"))
        if due:
            Operation.objects.filter(pk__in=[o.pk for o in due]).update(
                queued_until=queued_until_from(moment)
            )
        for operation in due:
            lost = operation.queued_until is not None or operation.status == OperationStatus.RUNNING
            task_push(operation.pk)
            if lost and operation.pk not in voided:
                # Routine dispatches are silent; a task that never ran, or a worker that
                # vanished mid-step, is worth a line.
                logger.warning(
                    "operation %s: %s, enqueued again",
                    operation.pk,
                    "its queued task was not taken in time"
                    if operation.status != OperationStatus.RUNNING
                    else "its worker's lease expired",
                )
    return [operation.pk for operation in due]


def operations_due_enqueue(*, now: datetime | None = None) -> list[int]:
    """One tick of the due loop: re-check the pools whose cool-down after a failure just
    ended, then dispatch the due operations."""
    pools_cooled_down_recheck(now=now)
    return operations_dispatch(now=now)


def _next_wake_s(interval_s: float) -> float:
    """Seconds until the earliest waiting operation is due, at most `interval_s`."""
    now = timezone.now()
    earliest = Operation.objects.filter(
        status=OperationStatus.WAITING, next_run_at__gt=now
    ).aggregate(at=Min("next_run_at"))["at"]
    if earliest is None:
        return interval_s
    return min(interval_s, max(0.0, (earliest - now).total_seconds()))


def due_loop(
    *,
    interval_s: float,
    stop: threading.Event | None = None,
    max_iterations: int | None = None,
) -> int:
    """Dispatch every `interval_s` (sooner when a wait ends) until `stop` is set; returns how
    many tasks it enqueued."""
    if interval_s <= 0:
        raise ValueError(f"interval_s={interval_s}: must be > 0")
    stop = stop or threading.Event()
    total = 0
    iterations = 0
    logger.info("due loop started (every %.2fs, or when a wait ends)", interval_s)
    while not stop.is_set():
        started = time.monotonic()
        close_old_connections()
        wake_s = interval_s
        try:
            total += len(operations_due_enqueue())
            wake_s = _next_wake_s(interval_s)
        except Exception:
            logger.exception("due loop: dispatch failed, trying again")
        iterations += 1
        if max_iterations is not None and iterations >= max_iterations:
            break
        elapsed = time.monotonic() - started
        # `wake_s` was measured after this tick's dispatch; a few milliseconds at least.
        stop.wait(max(0.005, min(wake_s, interval_s - elapsed)))
    logger.info("due loop stopped after %d ticks, %d enqueued", iterations, total)
    return total

"""The sweep: re-enqueue every active operation that has no queued task.

Safe to run at any time and from several places at once (the every-minute schedule, start-up):
it locks the active operation rows in primary-key order before it reads the queue, so two
sweeps serialise and the second sees the tasks the first queued.

- ORM broker: the queue is the `django_q.models.OrmQ` table in our database. A task stays there
  (locked) while a worker runs it and is deleted when acknowledged, so "no row whose task is
  `execute_operation(<id>)`" means nothing will ever run that operation again.
- Redis broker: running tasks are not visible in the list, so an operation is re-enqueued only
  when it is also not queued in the list and has not been touched for Q_CLUSTER["retry"] seconds.

`pending` and `running` operations without a task are re-enqueued; `waiting` ones only once
their `next_run_at` is due (or unset).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from operations.models import ACTIVE_STATUSES, Operation, OperationStatus
from operations.services import EXECUTE_TASK, operation_enqueue, orm_broker_in_use

logger = logging.getLogger(__name__)

SWEEP_SCHEDULE_NAME = "operations.sweep"
SWEEP_FUNC = "operations.sweep.sweep_operations"


def _task_operation_id(task: dict) -> int | None:
    func = task.get("func")
    name = func if isinstance(func, str) else f"{func.__module__}.{func.__name__}"
    args = task.get("args") or ()
    if name != EXECUTE_TASK or not args:
        return None
    try:
        return int(args[0])
    except (TypeError, ValueError):
        return None


def queued_operation_ids() -> set[int]:
    """Operation ids that have an `execute_operation` task in the broker's queue."""
    from django_q.brokers import get_broker
    from django_q.conf import Conf
    from django_q.models import OrmQ
    from django_q.signing import SignedPackage

    ids: set[int] = set()
    if orm_broker_in_use():
        for row in OrmQ.objects.using(Conf.ORM).all():
            operation_id = _task_operation_id(row.task)
            if operation_id is not None:
                ids.add(operation_id)
        return ids
    broker = get_broker()
    for payload in broker.connection.lrange(broker.list_key, 0, -1):
        try:
            task = SignedPackage.loads(payload)
        except Exception:  # noqa: BLE001 - a foreign or corrupt payload is not ours
            continue
        operation_id = _task_operation_id(task)
        if operation_id is not None:
            ids.add(operation_id)
    return ids


def sweep_operations(*, now: datetime | None = None) -> list[int]:
    """Re-enqueue active operations with no queued task; returns their ids."""
    from django_q.conf import Conf

    moment = now or timezone.now()
    due = (
        ~Q(status=OperationStatus.WAITING)
        | Q(next_run_at__isnull=True)
        | Q(next_run_at__lte=moment)
    )
    with transaction.atomic():
        candidates = list(
            Operation.objects.select_for_update()
            .filter(Q(status__in=ACTIVE_STATUSES) & due)
            .order_by("pk")
        )
        if not candidates:
            return []
        queued = queued_operation_ids()
        stale_before = moment - timedelta(seconds=Conf.RETRY)
        enqueued = []
        for operation in candidates:
            if operation.pk in queued:
                continue
            if not orm_broker_in_use() and operation.updated_at > stale_before:
                continue
            operation_enqueue(operation=operation)
            enqueued.append(operation.pk)
    for operation_id in enqueued:
        logger.warning("sweep: operation %s had no queued task, re-enqueued", operation_id)
    return enqueued


def sweep_schedule_ensure(*, using: str = "default") -> None:
    """Create (or repair) the every-minute schedule of the sweep. Idempotent."""
    from django_q.models import Schedule

    Schedule.objects.using(using).update_or_create(
        name=SWEEP_SCHEDULE_NAME,
        defaults={
            "func": SWEEP_FUNC,
            "schedule_type": Schedule.MINUTES,
            "minutes": 1,
            "repeats": -1,
        },
    )

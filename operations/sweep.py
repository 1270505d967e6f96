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

Lost tasks. A worker SIGKILLed in the middle of a step leaves its operation leased (the runner's
`claimed_by` names the host and the worker's pid) and, with the ORM broker, its task row locked
for Q_CLUSTER["retry"] seconds: nothing would run the operation for minutes. Each sweep first
voids the leases held by a process of this host that no longer exists (`dead_leases_release`)
and makes their locked rows deliverable at once; the Redis broker gets a new task for them
without waiting for the retry period. `lost_tasks_release(unleased=True)` goes further and is
called by runrebalancer's supervisor when it has killed its cluster (no worker of this host is
running anything): every locked row of an operation nobody holds a lease on is delivered again
(a row another host's cluster holds in its buffer may be delivered twice; the runner's lease and
idempotent steps make a duplicate delivery harmless).

`sweep_nonce_fills` is the sweep of nonce fillers (`operations.nonces`): every unsettled
zero-value self-transfer that fills the nonce of an abandoned transaction is broadcast again,
and settled once its nonce is mined, whether or not a later transaction waits behind it. The
service's ticker runs it every REBALANCER_TX_POLL_INTERVAL_S (claimed: one host per period).
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from operations.models import ACTIVE_STATUSES, NonceFill, Operation, OperationStatus
from operations.nonces import nonce_fills_sweep
from operations.services import EXECUTE_TASK, operation_enqueue, orm_broker_in_use

if TYPE_CHECKING:
    from operations.venues import Venues

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


class _DecodedPayloads:
    """Operation id (or None) per queued payload already decoded, so a sweep tick unpickles
    only the payloads it has not seen (a queued payload never changes). Keyed by a digest of
    the payload itself (row ids can be reused), pruned to what is still queued."""

    def __init__(self) -> None:
        self.known: dict[bytes, int | None] = {}
        self.decoded = 0  # payloads unpickled by this process (observable by tests)

    def operation_ids(self, payloads: list[str | bytes], decode) -> set[int]:
        current: dict[bytes, str | bytes] = {}
        for payload in payloads:
            raw = payload.encode() if isinstance(payload, str) else payload
            current[hashlib.sha256(raw).digest()] = payload
        for digest, payload in current.items():
            if digest not in self.known:
                self.decoded += 1
                self.known[digest] = decode(payload)
        for digest in set(self.known) - current.keys():
            del self.known[digest]
        return {self.known[d] for d in current if self.known[d] is not None}


DECODED = _DecodedPayloads()


def _operation_of(payload: str | bytes) -> int | None:
    from django_q.signing import SignedPackage

    try:
        task = SignedPackage.loads(payload)
    except Exception:  # noqa: BLE001 - a foreign or corrupt payload is not ours
        return None
    return _task_operation_id(task)


def queued_operation_ids() -> set[int]:
    """Operation ids that have an `execute_operation` task in the broker's queue.

    Reads the raw payloads (one query, or one LRANGE) and unpickles only the new ones."""
    from django_q.brokers import get_broker
    from django_q.conf import Conf
    from django_q.models import OrmQ

    if orm_broker_in_use():
        payloads = list(OrmQ.objects.using(Conf.ORM).values_list("payload", flat=True))
    else:
        broker = get_broker()
        payloads = list(broker.connection.lrange(broker.list_key, 0, -1))
    return DECODED.operation_ids(payloads, _operation_of)


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
                "operation %s: its worker (pid %s) is gone; lease voided, task delivered again",
                operation_id,
                pid,
            )
            released.append(operation_id)
    return released


def _locked_rows_release(operation_ids: set[int] | None, *, now: datetime) -> list[int]:
    """Make the locked ORM queue rows of `operation_ids` (None: of every active operation
    without a valid lease) deliverable now; returns the operation ids whose row was released."""
    from django_q.conf import Conf
    from django_q.models import OrmQ

    if not orm_broker_in_use():
        return []
    if operation_ids is not None and not operation_ids:
        return []
    locked = OrmQ.objects.using(Conf.ORM).filter(lock__gt=now)
    rows = list(locked.values_list("pk", "lock", "payload"))
    if not rows:
        return []
    if operation_ids is None:
        unleased = Operation.objects.filter(status__in=ACTIVE_STATUSES).filter(
            Q(claimed_until__isnull=True) | Q(claimed_until__lte=now)
        )
        operation_ids = set(unleased.values_list("pk", flat=True))
    released = []
    for pk, lock, payload in rows:
        operation_id = _operation_of(payload)
        if operation_id is None or operation_id not in operation_ids:
            continue
        if OrmQ.objects.using(Conf.ORM).filter(pk=pk, lock=lock).update(lock=now):
            released.append(operation_id)
    return released


def lost_tasks_release(*, unleased: bool = False, now: datetime | None = None) -> list[int]:
    """Deliver again the tasks of operations whose worker died (dead leases of this host);
    with `unleased`, also every locked task of an operation that no one holds a lease on (the
    caller knows that no worker of its own is running anything). Returns the operation ids."""
    moment = now or timezone.now()
    dead = dead_leases_release(now=moment)
    released = _locked_rows_release(None if unleased else set(dead), now=moment)
    if unleased and released:
        logger.warning("lost tasks of operation(s) %s delivered again", sorted(released))
    return sorted(set(dead) | set(released))


def sweep_operations(*, now: datetime | None = None) -> list[int]:
    """Re-enqueue active operations with no queued task; returns their ids. Tasks lost with a
    dead worker of this host are delivered again first (`lost_tasks_release`)."""
    from django_q.conf import Conf

    moment = now or timezone.now()
    lost = set(lost_tasks_release(now=moment))
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
        due_now: set[int] = set()
        for operation in candidates:
            if operation.pk in queued:
                continue
            if (
                not orm_broker_in_use()
                and operation.updated_at > stale_before
                and operation.pk not in lost
            ):
                continue
            operation_enqueue(operation=operation)
            enqueued.append(operation.pk)
            if operation.status == OperationStatus.WAITING and operation.pk not in lost:
                due_now.add(operation.pk)
    for operation_id in enqueued:
        # A waiting operation whose time came is routine (its step freed the worker); any
        # other operation without a task lost it.
        logger.log(
            logging.INFO if operation_id in due_now else logging.WARNING,
            "sweep: operation %s %s, re-enqueued",
            operation_id,
            "is due" if operation_id in due_now else "had no queued task",
        )
    return enqueued


def sweep_nonce_fills(*, venues: Venues | None = None) -> int:
    """Broadcast again / settle the unsettled nonce fillers on every chain we sign on; returns
    how many are still unsettled (0 without a chain call when there are none)."""
    if not NonceFill.objects.filter(settled_at__isnull=True).exists():
        return 0
    if venues is None:
        from operations.venues import venues_get

        venues = venues_get()
    return nonce_fills_sweep(chains=(venues.base, venues.ethereum))


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

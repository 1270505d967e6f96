"""Periodic jobs shared by several hosts: a compare-and-set claim on a `PeriodicRun` row.

`periodic_claim(name=..., interval_s=...)` returns True for exactly one caller per period:
the UPDATE that moves `next_due_at` forward only matches while the row is due, and the
database applies it to one transaction at a time (a row lock on PostgreSQL, the single writer
on SQLite). Whoever gets True runs the job; everyone else skips it. A job that crashes loses
its period and runs again at the next one.
"""

from __future__ import annotations

import logging
import os
import socket
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from service.models import Heartbeat, PeriodicRun

logger = logging.getLogger(__name__)

HOST_ID = f"{socket.gethostname()}:{os.getpid()}"


def periodic_claim(
    *,
    name: str,
    interval_s: float,
    min_gap_s: float | None = None,
    now: datetime | None = None,
) -> bool:
    """Claim this period of job `name`; True if the caller must run it now.

    Due when `next_due_at` has passed; with `min_gap_s` also when the last run started at
    least that long ago (a start-up poll runs unless another host has just polled).
    """
    if interval_s <= 0:
        raise ValueError(f"interval_s={interval_s}: must be > 0")
    moment = now or timezone.now()
    PeriodicRun.objects.bulk_create(
        [PeriodicRun(name=name, next_due_at=moment)], ignore_conflicts=True
    )
    due = Q(next_due_at__lte=moment)
    if min_gap_s is not None:
        due |= Q(last_started_at__isnull=True) | Q(
            last_started_at__lte=moment - timedelta(seconds=min_gap_s)
        )
    with transaction.atomic():
        claimed = PeriodicRun.objects.filter(Q(name=name) & due).update(
            next_due_at=moment + timedelta(seconds=interval_s),
            last_started_at=moment,
            last_started_by=HOST_ID[:128],
        )
    return claimed == 1


def heartbeat_beat(*, name: str, detail: str = "", now: datetime | None = None) -> None:
    """Record that `name` succeeded now."""
    moment = now or timezone.now()
    Heartbeat.objects.update_or_create(name=name, defaults={"at": moment, "detail": detail})


def heartbeat_get(name: str) -> Heartbeat | None:
    return Heartbeat.objects.filter(name=name).first()


# The Heartbeat row the cluster heartbeat task writes; the health check `cluster_heartbeat`
# and the supervisor's stall watch read it.
CLUSTER_HEARTBEAT = "cluster"
CLUSTER_HEARTBEAT_TASK = "service.periodic.cluster_heartbeat_record"
# The periodic job (a PeriodicRun claim) that enqueues that task: not the health check.
HEARTBEAT_ENQUEUE_JOB = "heartbeat_enqueue"


def cluster_heartbeat_record() -> None:
    """The django-q task the service enqueues every HEARTBEAT_INTERVAL_S: proof that a
    worker picked a task from the queue and ran it."""
    heartbeat_beat(name=CLUSTER_HEARTBEAT, detail=HOST_ID)

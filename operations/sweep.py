"""The sweep: one dispatch of due operations (`operations.due`), and the nonce fillers.

`sweep_operations` is one dispatch (`operations.due.operations_dispatch`): run at start-up and
by the every-minute django-q schedule as a backstop for a host without a due loop.

`sweep_nonce_fills` is the sweep of nonce fillers (`operations.nonces`): every unsettled
zero-value self-transfer that fills the nonce of an abandoned transaction is broadcast again,
and settled once its nonce is mined, whether or not a later transaction waits behind it. The
service's ticker runs it every REBALANCER_TX_POLL_INTERVAL_S (claimed: one host per period).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING

from operations.due import operations_dispatch
from operations.models import NonceFill
from operations.nonces import nonce_fills_sweep

if TYPE_CHECKING:
    from operations.venues import Venues

logger = logging.getLogger(__name__)

SWEEP_SCHEDULE_NAME = "operations.sweep"
SWEEP_FUNC = "operations.sweep.sweep_operations"


def sweep_operations(*, now: datetime | None = None) -> list[int]:
    """Enqueue the due operations that have no task queued (one dispatch); returns their ids."""
    return operations_dispatch(now=now)


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

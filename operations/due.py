"""The due-operations loop: wakes waiting operations when their `next_run_at` arrives.

Waiting does not hold a worker: a step that waits parks the operation (status waiting,
`next_run_at`) and its task ends. Something must enqueue it again when it is due. That is
`operations.sweep.sweep_operations` (re-enqueue every active operation with no queued task,
waiting ones only once due); the django-q schedule runs it every minute, which is too coarse
for 10 s polls, so this loop runs it every `REBALANCER_DUE_INTERVAL_S` seconds:

    python manage.py operation due-loop [--interval 2]

Run one next to the `qcluster` (several are harmless: the sweep serialises on row locks and
never enqueues an operation that already has a queued task).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime

from django.db import close_old_connections

from operations.services import pools_cooled_down_recheck
from operations.sweep import sweep_operations

logger = logging.getLogger(__name__)


def operations_due_enqueue(*, now: datetime | None = None) -> list[int]:
    """Enqueue the operations that are due and have no queued task (one sweep), after
    re-checking the pools whose cool-down after a failure just ended."""
    pools_cooled_down_recheck(now=now)
    return sweep_operations(now=now)


def due_loop(
    *,
    interval_s: float,
    stop: threading.Event | None = None,
    max_iterations: int | None = None,
) -> int:
    """Sweep every `interval_s` until `stop` is set; returns how many operations it enqueued."""
    if interval_s <= 0:
        raise ValueError(f"interval_s={interval_s}: must be > 0")
    stop = stop or threading.Event()
    total = 0
    iterations = 0
    logger.info("due loop started (every %.2fs)", interval_s)
    while not stop.is_set():
        started = time.monotonic()
        close_old_connections()
        try:
            total += len(operations_due_enqueue())
        except Exception:
            logger.exception("due loop: sweep failed, trying again")
        iterations += 1
        if max_iterations is not None and iterations >= max_iterations:
            break
        stop.wait(max(0.0, interval_s - (time.monotonic() - started)))
    logger.info("due loop stopped after %d sweeps, %d enqueued", iterations, total)
    return total

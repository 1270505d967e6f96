"""Polling with an interval and a timeout (first check immediate, timeout checked before each).

Workers do not block on these: they call a client's single-shot check, record when to look
again and return. The blocking helpers exist for commands, tests and the simulated venue.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

DEFAULT_INTERVAL_S = 10.0
DEFAULT_TIMEOUT_S = 30 * 60.0


def poll_until(
    check: Callable[[], T | None],
    *,
    interval_s: float,
    timeout_s: float,
    on_timeout: Callable[[float], Exception],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call `check` until it returns something other than None.

    The first call is immediate. Before each call the elapsed time is compared with
    `timeout_s`; past it, `on_timeout(elapsed_s)` is raised. Any exception from `check` aborts
    the poll and propagates.
    """
    started = clock()
    first = True
    while True:
        elapsed = clock() - started
        if not first and elapsed >= timeout_s:
            raise on_timeout(elapsed)
        first = False
        result = check()
        if result is not None:
            return result
        remaining = timeout_s - (clock() - started)
        if remaining <= 0:
            raise on_timeout(clock() - started)
        sleep(min(interval_s, remaining))

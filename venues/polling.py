"""Polling with an interval and a timeout (first check immediate, timeout checked before each).

Workers do not block on these: they call a client's single-shot check, record when to look
again and return. The blocking helpers exist for commands, tests and the simulated venue.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

DEFAULT_INTERVAL_S = 10.0
DEFAULT_TIMEOUT_S = 30 * 60.0


@dataclass(frozen=True)
class PollingConfig:
    interval_s: float = DEFAULT_INTERVAL_S
    timeout_s: float = DEFAULT_TIMEOUT_S

    def __post_init__(self) -> None:
        if self.interval_s < 0:
            raise ValueError(f"interval_s={self.interval_s!r}: must be >= 0")
        if self.timeout_s < 0:
            raise ValueError(f"timeout_s={self.timeout_s!r}: must be >= 0")


class PollTimeout(Exception):
    """Raised by `poll_until` when `timeout_s` elapsed before the check succeeded."""

    def __init__(self, what: str, elapsed_s: float) -> None:
        self.what = what
        self.elapsed_s = elapsed_s
        super().__init__(f"{what}: not done after {elapsed_s:.3f}s")


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

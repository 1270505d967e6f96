"""MarketClock aggregate: the market's sessions as the brokerage's clock told them (aggregate
id = the venue, `alpaca`). Pure.

The service reads Alpaca's clock and pauses new equity operations while the market is closed
(`service.market`). A reading is recorded as `MarketClockRead` only when its session changes
(open or closed, or another next open or close): about twice a trading day. The replay of
`manage.py backtest` reads these events so a candidate starts equity operations only when the
service could have. `session_open_at` is the one rule both use.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from inventory.domain import events as ev
from inventory.domain.aggregate import AggregateSpec
from inventory.domain.lifecycle import Lifecycle, lifecycle_apply
from inventory.domain.values import InvalidValue

VENUE = "alpaca"


def session_open_at(
    *, is_open: bool, next_open: datetime, next_close: datetime, now: datetime
) -> bool:
    """Whether the market is open at `now` from one clock reading alone: exact at the recorded
    open and close, so a stale reading still pauses at the close and resumes at the open."""
    if is_open:
        return now < next_close
    return next_open <= now < next_close


@dataclass(frozen=True)
class ClockState:
    is_open: bool
    next_open: datetime
    next_close: datetime

    def open_at(self, now: datetime) -> bool:
        return session_open_at(
            is_open=self.is_open, next_open=self.next_open, next_close=self.next_close, now=now
        )


@dataclass(frozen=True)
class RecordClock:
    is_open: bool
    next_open: datetime
    next_close: datetime
    fetched_at: datetime


def _advance(state: ClockState | None, event: Any) -> ClockState:
    if not isinstance(event, ev.MarketClockRead):
        raise InvalidValue("event", type(event).__name__, "not a MarketClock event")
    return ClockState(is_open=event.is_open, next_open=event.next_open, next_close=event.next_close)


def apply(state: Lifecycle[ClockState], event: Any) -> Lifecycle[ClockState]:
    return lifecycle_apply(
        state, event, apply_transition=_advance, from_event=lambda e: _advance(None, e)
    )


def handle(
    state: Lifecycle[ClockState], command: RecordClock, now: datetime
) -> list[ev.MarketClockRead]:
    """One reading: recorded when its session differs from the last recorded one."""
    if not isinstance(command, RecordClock):
        raise InvalidValue("command", type(command).__name__, "not a MarketClock command")
    for name in ("next_open", "next_close", "fetched_at"):
        value = getattr(command, name)
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise InvalidValue(name, value, "must be a time with a time zone")
    session = ClockState(
        is_open=command.is_open, next_open=command.next_open, next_close=command.next_close
    )
    if state.current() == session:
        return []
    return [
        ev.MarketClockRead(
            is_open=command.is_open,
            next_open=command.next_open,
            next_close=command.next_close,
            fetched_at=command.fetched_at,
        )
    ]


SPEC = AggregateSpec(
    aggregate_type=ev.MARKET_CLOCK,
    apply=apply,
    handle=handle,
    event_classes=(ev.MarketClockRead,),
)

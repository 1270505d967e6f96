"""MarketClock aggregate: each change of the market's session is recorded once; the one rule
for "open at" serves the service's stored clock and the backtest's replay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from inventory.domain import events as ev
from inventory.domain import market_clock
from inventory.domain.values import InvalidValue
from inventory.models import Event
from inventory.services import aggregate_states_check
from inventory.store import aggregate_execute

NOW = datetime(2026, 3, 2, 13, 0, tzinfo=UTC)
OPEN = NOW + timedelta(minutes=30)
CLOSE = OPEN + timedelta(hours=6, minutes=30)


def record(is_open: bool, next_open: datetime, next_close: datetime, at: datetime):
    return aggregate_execute(
        spec=market_clock.SPEC,
        aggregate_id=market_clock.VENUE,
        command=market_clock.RecordClock(
            is_open=is_open, next_open=next_open, next_close=next_close, fetched_at=at
        ),
        now=at,
    )


@pytest.mark.django_db
def test_a_session_is_recorded_once_and_each_change_again():
    assert len(record(False, OPEN, CLOSE, NOW)) == 1
    assert record(False, OPEN, CLOSE, NOW + timedelta(minutes=1)) == []  # same session
    assert len(record(True, OPEN + timedelta(days=1), CLOSE, OPEN)) == 1  # the bell
    rows = Event.objects.filter(aggregate_type=ev.MARKET_CLOCK).order_by("sequence")
    read = [row.domain_event() for row in rows]
    assert [(e.is_open, e.next_open, e.next_close, e.fetched_at) for e in read] == [
        (False, OPEN, CLOSE, NOW),
        (True, OPEN + timedelta(days=1), CLOSE, OPEN),
    ]
    assert aggregate_states_check(write=False) == []


@pytest.mark.django_db
def test_a_reading_without_a_time_zone_is_refused_and_nothing_is_written():
    with pytest.raises(InvalidValue, match="next_close"):
        record(False, OPEN, CLOSE.replace(tzinfo=None), NOW)
    assert not Event.objects.filter(aggregate_type=ev.MARKET_CLOCK).exists()


@pytest.mark.parametrize(
    ("is_open", "moment", "expected"),
    [
        (False, NOW, False),
        (False, OPEN - timedelta(microseconds=1), False),
        (False, OPEN, True),
        (False, CLOSE, False),  # a stale closed reading still closes at the recorded close
        (True, NOW, True),
        (True, CLOSE - timedelta(microseconds=1), True),
        (True, CLOSE, False),
    ],
)
def test_open_at_is_exact_at_the_recorded_bells(is_open, moment, expected):
    state = market_clock.ClockState(is_open=is_open, next_open=OPEN, next_close=CLOSE)
    assert state.open_at(moment) is expected

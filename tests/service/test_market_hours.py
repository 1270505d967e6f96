"""Market hours: no new equity operation starts while the market is closed; USDC goes on;
the stored clock is exact at the bell; the health check says so."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from operations.models import Operation, OperationKind
from service.health import health_report
from service.market import equity_market_open
from service.models import MarketClock
from tests.service.flows import enable, observe, register

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 2, 22, 0, tzinfo=UTC)


def store_clock(*, is_open: bool, now: datetime) -> MarketClock:
    hour = timedelta(hours=1)
    return MarketClock.objects.create(
        pk=1,
        is_open=is_open,
        next_open=now + (23 * hour if is_open else hour),
        next_close=now + (hour if is_open else 8 * hour),
        fetched_at=now,
    )


def test_market_closed_blocks_new_equity_operations_but_not_usdc(settings, caplog):
    enable(settings)
    store_clock(is_open=False, now=datetime.now(UTC))
    register("AAPL")
    with caplog.at_level(logging.INFO, logger="service.trigger"):
        observe("AAPL", onchain="20", offchain="80")
        observe(usdc_onchain="100", usdc_offchain="900")
    kinds = list(Operation.objects.values_list("kind", flat=True))
    assert kinds == [OperationKind.USDC_ALPACA_TO_BASE]
    assert "AAPL imbalanced but the market is closed" in caplog.text


def test_market_open_lets_equity_operations_start(settings):
    enable(settings)
    store_clock(is_open=True, now=datetime.now(UTC))
    register("AAPL")
    observe("AAPL", onchain="20", offchain="80")
    assert list(Operation.objects.values_list("kind", flat=True)) == [OperationKind.MINT]


def test_clock_never_read_does_not_pause_anything():
    assert equity_market_open(now=NOW) is True


def test_stored_clock_is_exact_at_the_close_and_the_open():
    clock = store_clock(is_open=True, now=NOW)
    assert equity_market_open(now=clock.next_close - timedelta(microseconds=1)) is True
    assert equity_market_open(now=clock.next_close) is False
    clock.delete()
    clock = store_clock(is_open=False, now=NOW)
    assert equity_market_open(now=clock.next_open - timedelta(microseconds=1)) is False
    assert equity_market_open(now=clock.next_open) is True
    assert equity_market_open(now=clock.next_close) is False


def test_health_reports_the_pause_without_failing():
    store_clock(is_open=False, now=datetime.now(UTC))
    market = next(c for c in health_report().checks if c.name == "market")
    assert market.ok
    assert market.data == {"open": False, "equity_paused": True}
    assert "new equity operations paused" in market.detail

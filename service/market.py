"""Market hours: no new equity operation starts while the market is closed.

Alpaca's clock (`GET /v1/clock`) is read by the service (at start and then at most every
`MARKET_CLOCK_CACHE_S`) and stored in the `MarketClock` row; each change of session is also
recorded in the event log (`MarketClockRead`, read by the backtest's replay). The trigger asks
`equity_market_open()`, which answers from that row without a network call; the recorded
next open and close make it exact at the bell even between reads. Steps already running go
on (every step is durable and resumable; the reference's B7 killed them), and USDC runs at
any time. A clock that was never read does not pause anything.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from inventory.domain import market_clock
from inventory.store import aggregate_execute
from operations.venues import Venues, venues_get
from service.models import MarketClock

logger = logging.getLogger(__name__)

CLOCK_PK = 1


def market_clock_get() -> MarketClock | None:
    return MarketClock.objects.filter(pk=CLOCK_PK).first()


def equity_market_open(*, now: datetime | None = None) -> bool:
    """False only when the stored clock says the market is closed at `now`."""
    clock = market_clock_get()
    if clock is None:
        return True
    return clock.open_at(now or timezone.now())


def market_clock_refresh(
    *, venues: Venues | None = None, force: bool = False, now: datetime | None = None
) -> MarketClock | None:
    """Read Alpaca's clock when the stored one is older than MARKET_CLOCK_CACHE_S (or with
    `force`); logs when the market opens or closes. A failed read keeps the stored clock
    (logged as a WARNING) and returns it."""
    moment = now or timezone.now()
    stored = market_clock_get()
    max_age = timedelta(seconds=settings.SERVICE.market_clock_cache_s)
    if not force and stored is not None and moment - stored.fetched_at < max_age:
        return stored
    was_open = stored.open_at(moment) if stored is not None else None
    try:
        reading = (venues or venues_get()).alpaca.clock()
    except Exception as error:  # noqa: BLE001 - the venue's failure is reported, not raised
        logger.warning(
            "market clock: alpaca clock read failed: %s: %s", type(error).__name__, error
        )
        return stored
    with transaction.atomic():
        clock, _ = MarketClock.objects.update_or_create(
            pk=CLOCK_PK,
            defaults={
                "is_open": reading.is_open,
                "next_open": reading.next_open,
                "next_close": reading.next_close,
                "fetched_at": moment,
            },
        )
        # The log keeps each change of session (a replay knows when equity could start).
        aggregate_execute(
            spec=market_clock.SPEC,
            aggregate_id=market_clock.VENUE,
            command=market_clock.RecordClock(
                is_open=reading.is_open,
                next_open=reading.next_open,
                next_close=reading.next_close,
                fetched_at=moment,
            ),
            now=moment,
        )
    is_open = clock.open_at(moment)
    if was_open is None or was_open != is_open:
        if is_open:
            logger.info("market open (closes %s): equity operations may start", reading.next_close)
        else:
            logger.info(
                "market closed (opens %s): new equity operations paused; running steps "
                "continue; USDC rebalancing continues",
                reading.next_open,
            )
    return clock

"""Idempotency keys carried by events, stored unique in `EventKey` with the event.

- `trade`: an order-book fill's trade id (`tx_hash:log_index`, hash lower-case), whatever
  the symbol: one chain log is one fill. Filed under the UTC day of its block timestamp.
- `execution`, `execution_filled`, `execution_failed`: a hedge's execution id, per symbol
  (`AAPL:42`), from `OffChainOrderPlaced`, `OffChainOrderFilled` and `OffChainOrderFailed`
  (an execution is placed once and ends once). Day 0.

Why trade keys carry a day: a transaction hash is uniformly random, so in an index ordered by
the hash alone every new fill lands on its own page once the index outgrows a batch, and a
batch's cost grows with the history (measured: after 1,000,000 fills the unique index took
a batch 5x longer than at an empty log; `bench/key_index.py`). Ordered by (day, hash), new
fills land in today's part of the index only, which is as big on day 1,000 as on day 1.

The database holds one record per (scope, day, key). A key is looked up in its own day and
the day on each side (`NEIGHBOUR_DAYS`), so the same trade id reported with block timestamps
less than a day apart is still the same fill (a duplicate, or a conflict when its content
differs), as after a reorganisation re-mines it a few blocks later. One further apart is a new
fill: a chain log's block timestamp cannot move by a day.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, NamedTuple

from inventory.domain import events as ev
from inventory.domain.events import TradeId

TRADE = "trade"
EXECUTION = "execution"
EXECUTION_FILLED = "execution_filled"
EXECUTION_FAILED = "execution_failed"

# The scope of each event class that carries a hedge's execution id.
EXECUTION_SCOPES: dict[type, str] = {
    ev.OffChainOrderPlaced: EXECUTION,
    ev.OffChainOrderFilled: EXECUTION_FILLED,
    ev.OffChainOrderFailed: EXECUTION_FAILED,
}

NO_DAY = 0  # the day of keys not tied to a date (execution ids)
NEIGHBOUR_DAYS = 1  # a key is the same key this many days on either side
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DAY_S = 86_400


class Claim(NamedTuple):
    """One idempotency key an event claims: unique per (scope, day, key) in `EventKey`."""

    scope: str
    day: int
    key: str

    def days(self) -> range:
        """The days in which a recorded key is this same key."""
        if self.scope != TRADE:
            return range(self.day, self.day + 1)
        return range(self.day - NEIGHBOUR_DAYS, self.day + NEIGHBOUR_DAYS + 1)

    def matches(self, day: int) -> bool:
        """Whether a record of this scope and key filed under `day` is this claim's key."""
        return day in self.days()


def trade_day(block_timestamp: datetime) -> int:
    """Days since 1970-01-01 (UTC) of a block timestamp: the day a trade key is filed under."""
    return int((block_timestamp - _EPOCH).total_seconds() // _DAY_S)


def trade_key(trade_id: TradeId) -> str:
    return f"{trade_id.tx_hash.lower()}:{trade_id.log_index}"


def trade_claim(trade_id: TradeId, block_timestamp: datetime) -> Claim:
    return Claim(TRADE, trade_day(block_timestamp), trade_key(trade_id))


def execution_key(symbol: str, execution_id: int) -> str:
    return f"{symbol}:{execution_id}"


def event_keys(aggregate_type: str, aggregate_id: str, event: Any) -> list[Claim]:
    """The keys `event` claims; most events claim none."""
    if isinstance(event, ev.OnChainOrderFilled):
        return [trade_claim(event.trade_id, event.block_timestamp)]
    scope = EXECUTION_SCOPES.get(type(event))
    if scope is not None:
        return [Claim(scope, NO_DAY, execution_key(aggregate_id, event.execution_id))]
    return []

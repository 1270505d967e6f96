"""Idempotency keys carried by events, stored unique in `EventKey` with the event.

- `trade`: an order-book fill's trade id (`tx_hash:log_index`, hash lower-case), whatever
  the symbol: one chain log is one fill. Filed under the UTC day of its block timestamp.
- `execution`, `execution_filled`, `execution_failed`: a hedge's execution id, per symbol
  (`AAPL:42`), from `OffChainOrderPlaced`, `OffChainOrderFilled` and `OffChainOrderFailed`
  (an execution is placed once and ends once). Day 0.

A key's identity is (scope, key), whatever day it is filed under: the database holds one
record per (scope, key) (unique), so the same trade id posted again is the same fill (a
duplicate, or a conflict when its content differs) whenever it arrives and whatever block
timestamp it carries. A timestamp is what a reporter sends, not part of the trade's identity
(issue 19: filed by day and looked up only in the neighbouring days, a replay with a block
timestamp two days earlier was recorded as a second fill).

`day` (the UTC day of a trade's block timestamp, 0 for other keys) is still recorded, for
reading the keys by day; it takes no part in the uniqueness or the lookups. The cost of a
unique index on a random hash (every new key lands on its own page once the index outgrows
memory) is measured by `bench/ingest.py` and `bench/key_index.py`.
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
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DAY_S = 86_400


class Claim(NamedTuple):
    """One idempotency key an event claims: unique per (scope, key) in `EventKey`; `day` is
    where it is filed, never part of its identity."""

    scope: str
    day: int
    key: str

    @property
    def identity(self) -> tuple[str, str]:
        return (self.scope, self.key)

    def matches(self, day: int) -> bool:
        """Whether a record of this scope and key filed under `day` is this claim's key:
        always (a key is the same key whatever day it is filed under)."""
        return True


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

"""Idempotency keys carried by events, stored unique in `EventKey` with the event.

- `trade`: an order-book fill's trade id (`tx_hash:log_index`, hash lower-case), whatever
  the symbol: one chain log is one fill.
- `execution`, `execution_filled`, `execution_failed`: a hedge's execution id, per symbol
  (`AAPL:42`), from `OffChainOrderPlaced`, `OffChainOrderFilled` and `OffChainOrderFailed`
  (an execution is placed once and ends once).
"""

from __future__ import annotations

from typing import Any

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


def trade_key(trade_id: TradeId) -> str:
    return f"{trade_id.tx_hash.lower()}:{trade_id.log_index}"


def execution_key(symbol: str, execution_id: int) -> str:
    return f"{symbol}:{execution_id}"


def event_keys(aggregate_type: str, aggregate_id: str, event: Any) -> list[tuple[str, str]]:
    """The (scope, key) pairs `event` claims; most events claim none."""
    if isinstance(event, ev.OnChainOrderFilled):
        return [(TRADE, trade_key(event.trade_id))]
    scope = EXECUTION_SCOPES.get(type(event))
    if scope is not None:
        return [(scope, execution_key(aggregate_id, event.execution_id))]
    return []

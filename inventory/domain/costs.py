"""OperationCost aggregate: the legacy cost ledger of one operation (aggregate id = the
operation's aggregate id). Pure.

Logs written before the ledger became part of each operation's own log (issue 24: "the ledger
is part of the log") hold an operation's receipts and venue charges here. New ones are the
operation aggregate's own `TransactionCostRecorded` / `VenueCostRecorded`, recorded by the
shared transaction lifecycle (`inventory.domain.onchain_tx`). This aggregate keeps the old
events readable and decides them by the same rules (once per tx hash or venue reference).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from inventory.domain import events as ev
from inventory.domain.aggregate import AggregateSpec
from inventory.domain.lifecycle import Lifecycle, lifecycle_apply
from inventory.domain.onchain_tx import (
    USD_PLACES,
    WEI_PER_ETH,
    RecordReceipt,
    RecordVenueCost,
    decide_ledger,
    fee_usd,
    recorded_keys,
)
from inventory.domain.values import InvalidValue

__all__ = ["USD_PLACES", "WEI_PER_ETH", "RecordTransactionCost", "RecordVenueCost", "fee_usd"]

# The legacy command name of a receipt: the same command as the lifecycle's.
RecordTransactionCost = RecordReceipt


@dataclass(frozen=True)
class CostState:
    keys: frozenset[str] = field(default_factory=frozenset)


def _advance(state: CostState | None, event: Any) -> CostState:
    current = CostState() if state is None else state
    if isinstance(event, ev.TransactionCostRecorded | ev.VenueCostRecorded):
        return CostState(keys=current.keys | recorded_keys([event]))
    raise InvalidValue("event", type(event).__name__, "not an OperationCost event")


def apply(state: Lifecycle[CostState], event: Any) -> Lifecycle[CostState]:
    return lifecycle_apply(
        state, event, apply_transition=_advance, from_event=lambda e: _advance(None, e)
    )


def handle(state: Lifecycle[CostState], command: Any, now: datetime) -> list[ev.CostEvent]:
    current = state.current() or CostState()
    if not isinstance(command, RecordReceipt | RecordVenueCost):
        raise InvalidValue("command", type(command).__name__, "not an OperationCost command")
    return decide_ledger(
        command,
        recorded=current.keys,
        transaction_cost=ev.TransactionCostRecorded,
        venue_cost=ev.VenueCostRecorded,
        now=now,
    )


SPEC = AggregateSpec(
    aggregate_type=ev.COSTS,
    apply=apply,
    handle=handle,
    event_classes=(ev.TransactionCostRecorded, ev.VenueCostRecorded),
)

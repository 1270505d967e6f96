"""OperationCost aggregate: the realized cost ledger of one operation (aggregate id = the
operation's aggregate id). Pure.

Each mined transaction's receipt is recorded once (`RecordTransactionCost`, keyed by tx hash:
a workflow that sees the same receipt again records nothing), each other venue charge once per
venue reference (`RecordVenueCost`). The events touch no pool.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from inventory.domain import events as ev
from inventory.domain.aggregate import AggregateSpec
from inventory.domain.lifecycle import Lifecycle, lifecycle_apply
from inventory.domain.values import InvalidValue, TxHash

WEI_PER_ETH = Decimal(10) ** 18
USD_PLACES = Decimal("1e-8")


@dataclass(frozen=True)
class CostState:
    tx_hashes: frozenset[str] = field(default_factory=frozenset)
    references: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class RecordTransactionCost:
    operation_kind: str
    pool: str
    chain: str
    chain_id: int
    tx_hash: str
    gas_used: int
    effective_gas_price_wei: int
    # ETH/USD as read from the feed (None: not read), with the feed and round it came from.
    eth_usd: Decimal | None = None
    eth_usd_feed: str | None = None
    eth_usd_round: int | None = None


@dataclass(frozen=True)
class RecordVenueCost:
    operation_kind: str
    pool: str
    venue: str
    cost_kind: str
    reference: str
    notional: Decimal
    filled_price: Decimal | None
    spread_usd: Decimal
    fee_usd: Decimal


def fee_usd(native_fee_wei: int, eth_usd: Decimal | None) -> Decimal | None:
    """The native fee in USD at `eth_usd` (8 decimals, half-even); None without a price."""
    if eth_usd is None:
        return None
    return (Decimal(native_fee_wei) / WEI_PER_ETH * eth_usd).quantize(USD_PLACES)


def _advance(state: CostState | None, event: Any) -> CostState:
    current = CostState() if state is None else state
    if isinstance(event, ev.TransactionCostRecorded):
        return CostState(
            tx_hashes=current.tx_hashes | {event.tx_hash.lower()}, references=current.references
        )
    if isinstance(event, ev.VenueCostRecorded):
        return CostState(
            tx_hashes=current.tx_hashes,
            references=current.references | {f"{event.venue}:{event.reference}"},
        )
    raise InvalidValue("event", type(event).__name__, "not an OperationCost event")


def apply(state: Lifecycle[CostState], event: Any) -> Lifecycle[CostState]:
    return lifecycle_apply(
        state, event, apply_transition=_advance, from_event=lambda e: _advance(None, e)
    )


def _non_negative(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | Decimal) or value < 0:
        raise InvalidValue(name, value, "must be a non-negative integer or Decimal")


def handle(state: Lifecycle[CostState], command: Any, now: datetime) -> list[ev.CostEvent]:
    current = state.current() or CostState()
    if isinstance(command, RecordTransactionCost):
        for name in ("gas_used", "effective_gas_price_wei", "chain_id"):
            _non_negative(name, getattr(command, name))
        if command.eth_usd is not None and command.eth_usd <= 0:
            raise InvalidValue("eth_usd", command.eth_usd, "a price must be positive")
        if command.tx_hash.lower() in current.tx_hashes:
            return []
        native_fee = command.gas_used * command.effective_gas_price_wei
        return [
            ev.TransactionCostRecorded(
                operation_kind=command.operation_kind,
                pool=command.pool,
                chain=command.chain,
                chain_id=command.chain_id,
                tx_hash=TxHash(command.tx_hash.lower()),
                gas_used=command.gas_used,
                effective_gas_price_wei=command.effective_gas_price_wei,
                native_fee_wei=native_fee,
                eth_usd=command.eth_usd,
                eth_usd_feed=command.eth_usd_feed,
                eth_usd_round=command.eth_usd_round,
                fee_usd=fee_usd(native_fee, command.eth_usd),
                recorded_at=now,
            )
        ]
    if isinstance(command, RecordVenueCost):
        for name in ("notional", "spread_usd", "fee_usd"):
            _non_negative(name, getattr(command, name))
        if not command.reference.strip():
            raise InvalidValue(
                "reference", command.reference, "names the venue's order or transfer"
            )
        if f"{command.venue}:{command.reference}" in current.references:
            return []
        return [
            ev.VenueCostRecorded(
                operation_kind=command.operation_kind,
                pool=command.pool,
                venue=command.venue,
                cost_kind=command.cost_kind,
                reference=command.reference,
                notional=command.notional,
                filled_price=command.filled_price,
                spread_usd=command.spread_usd,
                fee_usd=command.fee_usd,
                recorded_at=now,
            )
        ]
    raise InvalidValue("command", type(command).__name__, "not an OperationCost command")


SPEC = AggregateSpec(
    aggregate_type=ev.COSTS,
    apply=apply,
    handle=handle,
    event_classes=(ev.TransactionCostRecorded, ev.VenueCostRecorded),
)

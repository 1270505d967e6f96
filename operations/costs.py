"""The cost ledger, read (issue 24): what each operation cost, from the log.

Per operation: every transaction it sent (`TransactionCostRecorded`, an event of the
operation's own aggregate; older logs: of the legacy `OperationCost` aggregate): chain, gas
used, effective gas price, native fee, its USD value at the price read when it was recorded),
Circle's fee as charged (`Bridged.fee`, else what was burned minus what was minted), Alpaca's
withdrawal fee as Alpaca reported it (`WithdrawalConfirmed.fee`), venue charges (each USDCUSD
conversion's `ConversionConfirmed.cost`, the USD lost to its spread, and `VenueCostRecorded`)
and the time in flight per step.
Nothing is re-priced: USD values are the ones recorded. Summed per UTC day and kind, with the
cost per 10,000 USD moved (a USDC amount is USD; an equity amount is valued at the last
onchain fill price before the operation started).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db.models import Q, QuerySet

from inventory.domain import events as ev
from inventory.domain import onchain_tx
from inventory.domain.values import USDC_POOL
from inventory.models import Event
from operations.models import Operation

PER = Decimal(10_000)
# The ledger's events in the operations' own logs (the legacy ones: aggregate `OperationCost`).
LEDGER_TX_EVENT_TYPES = tuple(
    cls.event_type_name()
    for cls in (
        ev.MintTransactionCostRecorded,
        ev.RedemptionTransactionCostRecorded,
        ev.UsdcTransactionCostRecorded,
    )
)
LEDGER_EVENT_TYPES = (
    *LEDGER_TX_EVENT_TYPES,
    *(
        cls.event_type_name()
        for cls in (
            ev.MintVenueCostRecorded,
            ev.RedemptionVenueCostRecorded,
            ev.UsdcVenueCostRecorded,
        )
    ),
)
USD_PLACES = Decimal("1e-8")


@dataclass
class TransactionCost:
    chain: str
    tx_hash: str
    gas_used: int
    effective_gas_price_wei: int
    native_fee_wei: int
    eth_usd: Decimal | None
    eth_usd_round: int | None
    fee_usd: Decimal | None
    recorded_at: datetime


@dataclass
class StepTime:
    step: str
    seconds: float


@dataclass
class OperationCosts:
    operation_id: int
    kind: str
    pool: str
    amount: Decimal
    status: str
    day: str
    moved_usd: Decimal | None
    transactions: list[TransactionCost] = field(default_factory=list)
    circle_fee_usdc: Decimal = Decimal(0)
    alpaca_fee_usdc: Decimal = Decimal(0)
    venue_costs_usd: Decimal = Decimal(0)
    steps: list[StepTime] = field(default_factory=list)
    in_flight_s: float = 0.0

    @property
    def gas_usd(self) -> Decimal:
        return sum((t.fee_usd for t in self.transactions if t.fee_usd is not None), Decimal(0))

    @property
    def gas_unvalued(self) -> int:
        """Transactions recorded without a USD value (no price could be read)."""
        return sum(1 for t in self.transactions if t.fee_usd is None)

    @property
    def native_fee_wei(self) -> dict[str, int]:
        fees: dict[str, int] = defaultdict(int)
        for t in self.transactions:
            fees[t.chain] += t.native_fee_wei
        return dict(fees)

    @property
    def total_usd(self) -> Decimal:
        # USDC fees count at par with USD.
        return self.gas_usd + self.circle_fee_usdc + self.alpaca_fee_usdc + self.venue_costs_usd


def _last_fill_price(symbol: str, before: datetime) -> Decimal | None:
    row = (
        Event.objects.filter(
            aggregate_type=ev.POSITION,
            aggregate_id=symbol,
            event_type=ev.OnChainOrderFilled.event_type_name(),
            recorded_at__lte=before,
        )
        .order_by("-id")
        .first()
    )
    if row is None:
        return None
    event = row.domain_event()
    return event.price_usdc


def moved_usd(operation: Operation) -> Decimal | None:
    if operation.pool == USDC_POOL:
        return operation.amount
    price = _last_fill_price(operation.pool, operation.created_at)
    return None if price is None else (operation.amount * price).quantize(USD_PLACES)


def operation_costs(operation: Operation) -> OperationCosts:
    result = OperationCosts(
        operation_id=int(operation.pk),
        kind=str(operation.kind),
        pool=operation.pool,
        amount=operation.amount,
        status=str(operation.status),
        day=operation.created_at.date().isoformat(),
        moved_usd=moved_usd(operation),
    )
    legacy = Event.objects.filter(
        aggregate_type=ev.COSTS, aggregate_id=operation.aggregate_id
    ).order_by("sequence")
    rows: list[Event] = []
    ledger: list[Any] = [row.domain_event() for row in legacy]
    for row in Event.objects.filter(
        aggregate_type=operation.aggregate_type, aggregate_id=operation.aggregate_id
    ).order_by("sequence"):
        event = row.domain_event()
        if onchain_tx.is_ledger(event):
            ledger.append(event)
        else:
            rows.append(row)
    for event in ledger:
        if isinstance(event, ev.TxCostFields):
            result.transactions.append(
                TransactionCost(
                    chain=event.chain,
                    tx_hash=event.tx_hash,
                    gas_used=event.gas_used,
                    effective_gas_price_wei=event.effective_gas_price_wei,
                    native_fee_wei=event.native_fee_wei,
                    eth_usd=event.eth_usd,
                    eth_usd_round=event.eth_usd_round,
                    fee_usd=event.fee_usd,
                    recorded_at=event.recorded_at,
                )
            )
        elif isinstance(event, ev.VenueCostFields):
            result.venue_costs_usd += event.spread_usd + event.fee_usd
    burned: Decimal | None = None
    for row in rows:
        event = row.domain_event()
        if isinstance(event, ev.WithdrawalConfirmed) and event.fee:
            result.alpaca_fee_usdc += event.fee
        elif isinstance(event, ev.ConversionConfirmed):
            result.venue_costs_usd += event.cost
        elif isinstance(event, ev.BridgingInitiated):
            burned = event.burn_amount
        elif isinstance(event, ev.Bridged):
            if event.fee is not None:
                result.circle_fee_usdc += event.fee
            elif burned is not None and event.amount_received is not None:
                result.circle_fee_usdc += burned - event.amount_received
    for before, after in zip(rows, rows[1:], strict=False):
        result.steps.append(
            StepTime(
                step=after.event_type.rsplit("::", 1)[-1],
                seconds=(after.recorded_at - before.recorded_at).total_seconds(),
            )
        )
    if rows:
        result.in_flight_s = (rows[-1].recorded_at - rows[0].recorded_at).total_seconds()
    return result


def _per_10k(cost: Decimal, moved: Decimal) -> Decimal | None:
    if moved <= 0:
        return None
    return (cost / moved * PER).quantize(USD_PLACES)


def costs_report(*, since: datetime | None = None, until: datetime | None = None) -> dict[str, Any]:
    """Operations created in [since, until), their costs summed per UTC day and kind."""
    rows = Operation.objects.order_by("created_at", "id")
    if since is not None:
        rows = rows.filter(created_at__gte=since)
    if until is not None:
        rows = rows.filter(created_at__lt=until)
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    totals = _empty_group()
    for operation in rows.iterator():
        costs = operation_costs(operation)
        for group in (groups.setdefault((costs.day, costs.kind), _empty_group()), totals):
            _add(group, costs)
    return {
        "from": since,
        "to": until,
        "groups": [
            {"day": day, "kind": kind, **_finish(group)}
            for (day, kind), group in sorted(groups.items())
        ],
        "total": _finish(totals),
    }


def _empty_group() -> dict[str, Any]:
    return {
        "operations": 0,
        "moved_usd": Decimal(0),
        "unvalued_moves": 0,
        "transactions": 0,
        "native_fee_wei": defaultdict(int),
        "gas_usd": Decimal(0),
        "gas_unvalued": 0,
        "circle_fee_usdc": Decimal(0),
        "alpaca_fee_usdc": Decimal(0),
        "venue_costs_usd": Decimal(0),
        "total_usd": Decimal(0),
        "in_flight_s": 0.0,
    }


def _add(group: dict[str, Any], costs: OperationCosts) -> None:
    group["operations"] += 1
    if costs.moved_usd is None:
        group["unvalued_moves"] += 1
    else:
        group["moved_usd"] += costs.moved_usd
    group["transactions"] += len(costs.transactions)
    for chain, wei in costs.native_fee_wei.items():
        group["native_fee_wei"][chain] += wei
    group["gas_usd"] += costs.gas_usd
    group["gas_unvalued"] += costs.gas_unvalued
    group["circle_fee_usdc"] += costs.circle_fee_usdc
    group["alpaca_fee_usdc"] += costs.alpaca_fee_usdc
    group["venue_costs_usd"] += costs.venue_costs_usd
    group["total_usd"] += costs.total_usd
    group["in_flight_s"] += costs.in_flight_s


def _finish(group: dict[str, Any]) -> dict[str, Any]:
    done = dict(group)
    done["native_fee_wei"] = dict(sorted(group["native_fee_wei"].items()))
    done["cost_per_10k_usd"] = _per_10k(group["total_usd"], group["moved_usd"])
    count = group["operations"]
    done["mean_in_flight_s"] = round(group["in_flight_s"] / count, 3) if count else None
    del done["in_flight_s"]
    return done


def jsonable(value: Any) -> Any:
    """Decimals as plain strings, datetimes ISO-8601, wei as strings (uint256-safe)."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {
            k: (
                {chain: str(wei) for chain, wei in v.items()}
                if k == "native_fee_wei" and isinstance(v, dict)
                else str(v)
                if k == "native_fee_wei"
                else jsonable(v)
            )
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return value


def operation_costs_body(costs: OperationCosts) -> dict[str, Any]:
    return jsonable(
        {
            "moved_usd": costs.moved_usd,
            "transactions": [
                {
                    "chain": t.chain,
                    "tx_hash": t.tx_hash,
                    "gas_used": t.gas_used,
                    "effective_gas_price_wei": str(t.effective_gas_price_wei),
                    "native_fee_wei": str(t.native_fee_wei),
                    "eth_usd": t.eth_usd,
                    "eth_usd_round": t.eth_usd_round,
                    "fee_usd": t.fee_usd,
                    "recorded_at": t.recorded_at,
                }
                for t in costs.transactions
            ],
            "gas_usd": costs.gas_usd,
            "circle_fee_usdc": costs.circle_fee_usdc,
            "alpaca_fee_usdc": costs.alpaca_fee_usdc,
            "venue_costs_usd": costs.venue_costs_usd,
            "total_usd": costs.total_usd,
            "steps": [{"step": s.step, "seconds": s.seconds} for s in costs.steps],
            "in_flight_s": costs.in_flight_s,
        }
    )


def ledger_rows(*, transactions_only: bool = False) -> QuerySet[Event]:
    """Every cost ledger event in the log: the operations' own and the legacy `OperationCost`
    aggregate's (`transactions_only`: the receipts, `TransactionCostRecorded`)."""
    if transactions_only:
        return Event.objects.filter(
            event_type__in=(*LEDGER_TX_EVENT_TYPES, ev.TransactionCostRecorded.event_type_name())
        )
    return Event.objects.filter(Q(aggregate_type=ev.COSTS) | Q(event_type__in=LEDGER_EVENT_TYPES))


def cost_totals(
    *, since: datetime
) -> tuple[dict[tuple[str, str], Decimal], dict[tuple[str, str], int]]:
    """Costs recorded since `since`, for /metrics, straight from the ledger's events (no
    per-operation reads): USD by (operation kind, component: gas, circle_fee, alpaca_fee,
    venue) and native fees in wei by (operation kind, chain)."""
    usd: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    wei: dict[tuple[str, str], int] = defaultdict(int)
    for row in ledger_rows().filter(recorded_at__gte=since):
        event = row.domain_event()
        if isinstance(event, ev.TxCostFields):
            wei[(event.operation_kind, event.chain)] += event.native_fee_wei
            if event.fee_usd is not None:
                usd[(event.operation_kind, "gas")] += event.fee_usd
        elif isinstance(event, ev.VenueCostFields):
            usd[(event.operation_kind, "venue")] += event.spread_usd + event.fee_usd
    fee_types = (
        ev.WithdrawalConfirmed.event_type_name(),
        ev.Bridged.event_type_name(),
        ev.ConversionConfirmed.event_type_name(),
    )
    rows = list(
        Event.objects.filter(
            aggregate_type=ev.USDC_REBALANCE, event_type__in=fee_types, recorded_at__gte=since
        )
    )
    kinds = dict(
        Operation.objects.filter(aggregate_id__in={r.aggregate_id for r in rows}).values_list(
            "aggregate_id", "kind"
        )
    )
    for row in rows:
        event = row.domain_event()
        kind = kinds.get(row.aggregate_id, "unknown")
        if isinstance(event, ev.WithdrawalConfirmed) and event.fee:
            usd[(kind, "alpaca_fee")] += event.fee
        elif isinstance(event, ev.Bridged) and event.fee:
            usd[(kind, "circle_fee")] += event.fee
        elif isinstance(event, ev.ConversionConfirmed):
            usd[(kind, "venue")] += event.cost
    return dict(usd), dict(wei)

"""The cost gate, wired (issue 24): estimate an operation's cost before it starts and decide
with `inventory.domain.costgate`.

The estimate, in USD: gas (each chain the kind sends transactions on: the recent median of the
ledger's gas used for that kind and chain, else a default, times the chain's current gas price
from `GasQuote`, at the ETH/USD price read with it) + Circle's fee (USDC kinds: the ledger's
recent median fee rate, else 1 bp) + Alpaca's withdrawal fee (Alpaca to Base: the recent
median). An equity amount is valued at its last onchain fill price, USDC at par.

The trigger runs inside the event transaction: it reads only the database. The gas quotes are
refreshed by the ticker (`gas_quotes_refresh`, every venue poll); a quote older than
QUOTE_MAX_AGE_S is not used (the estimate is then unknown, and does not hold anything back).
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.utils import timezone

from inventory.domain import costgate
from inventory.domain import events as ev
from inventory.domain.inventory import GENESIS_TYPES
from inventory.domain.values import USDC_POOL
from inventory.models import Event
from operations.costs import ledger_rows
from operations.models import Operation

logger = logging.getLogger(__name__)

QUOTE_MAX_AGE_S = 600.0
LEDGER_SAMPLE = 20
DEFAULT_CIRCLE_FEE_RATE = Decimal("0.0001")  # CCTP fast transfer: 1 bp
# Gas used per chain by one operation of each kind, until the ledger has its own figures.
DEFAULT_GAS_UNITS: dict[str, dict[str, int]] = {
    "mint": {"base": 250_000},
    "redemption": {"base": 250_000},
    "usdc_alpaca_to_base": {"ethereum": 150_000, "base": 350_000},
    "usdc_base_to_alpaca": {"base": 300_000, "ethereum": 250_000},
}


@dataclass
class Estimate:
    usd: Decimal | None
    value_usd: Decimal | None
    parts: dict[str, Decimal] = field(default_factory=dict)


def _gas_units(kind: str) -> dict[str, int]:
    units = dict(DEFAULT_GAS_UNITS.get(kind, {}))
    per_operation: dict[tuple[str, str], int] = {}
    rows = ledger_rows(transactions_only=True).order_by("-id")[: LEDGER_SAMPLE * 6]
    for row in rows:
        event = row.domain_event()
        if event.operation_kind != kind:
            continue
        key = (row.aggregate_id, event.chain)
        per_operation[key] = per_operation.get(key, 0) + event.gas_used
    by_chain: dict[str, list[int]] = {}
    for (_operation, chain), used in per_operation.items():
        by_chain.setdefault(chain, []).append(used)
    for chain, values in by_chain.items():
        units[chain] = int(statistics.median(values[:LEDGER_SAMPLE]))
    return units


def _recent_median(event_class: type, value_of, kinds: set[str]) -> Decimal | None:  # type: ignore[no-untyped-def]
    rows = Event.objects.filter(
        aggregate_type=ev.USDC_REBALANCE, event_type=event_class.event_type_name()
    ).order_by("-id")[: LEDGER_SAMPLE * 2]
    rows = list(rows)
    wanted = set(
        Operation.objects.filter(
            aggregate_id__in={r.aggregate_id for r in rows}, kind__in=kinds
        ).values_list("aggregate_id", flat=True)
    )
    values = [
        v
        for r in rows
        if r.aggregate_id in wanted and (v := value_of(r.domain_event())) is not None
    ][:LEDGER_SAMPLE]
    return statistics.median(values) if values else None


def _circle_rate(kind: str) -> Decimal:
    def rate(event: ev.Bridged) -> Decimal | None:
        if event.fee is None or event.amount_received is None:
            return None
        gross = event.amount_received + event.fee
        return event.fee / gross if gross > 0 else None

    found = _recent_median(ev.Bridged, rate, {kind})
    return DEFAULT_CIRCLE_FEE_RATE if found is None else found


def _alpaca_fee(kind: str) -> Decimal:
    found = _recent_median(ev.WithdrawalConfirmed, lambda e: e.fee, {kind})
    return Decimal(0) if found is None else found


def value_usd(pool: str, amount: Decimal, *, before: datetime | None = None) -> Decimal | None:
    if pool == USDC_POOL:
        return amount
    rows = Event.objects.filter(
        aggregate_type=ev.POSITION,
        aggregate_id=pool,
        event_type=ev.OnChainOrderFilled.event_type_name(),
    )
    if before is not None:
        rows = rows.filter(recorded_at__lte=before)
    row = rows.order_by("-id").first()
    if row is None:
        return None
    return (amount * row.domain_event().price_usdc).quantize(costgate.USD_PLACES)


def estimate_cost(
    kind: str, pool: str, amount: Decimal, *, now: datetime | None = None
) -> Estimate:
    """The estimated cost in USD of moving `amount` of `pool` with an operation of `kind`
    (None when the gas cannot be priced: no fresh quote or no ETH/USD price)."""
    from operations.models import GasQuote

    moment = now or timezone.now()
    estimate = Estimate(usd=None, value_usd=value_usd(pool, amount))
    units = _gas_units(str(kind))
    fresh = moment - timedelta(seconds=QUOTE_MAX_AGE_S)
    quotes = {q.chain: q for q in GasQuote.objects.filter(chain__in=units, read_at__gte=fresh)}
    prices = [q.eth_usd for q in quotes.values() if q.eth_usd is not None]
    if set(units) <= quotes.keys() and prices:
        estimate.parts["gas"] = costgate.gas_usd(
            units, {chain: int(q.gas_price_wei) for chain, q in quotes.items()}, prices[0]
        )
    if pool == USDC_POOL:
        estimate.parts["circle_fee"] = (amount * _circle_rate(str(kind))).quantize(
            costgate.USD_PLACES
        )
    if kind == "usdc_alpaca_to_base":
        estimate.parts["alpaca_fee"] = _alpaca_fee(str(kind))
    if "gas" in estimate.parts:
        estimate.usd = sum(estimate.parts.values(), Decimal(0))
    return estimate


def moved_today(pool: str, *, now: datetime | None = None) -> Decimal:
    """What the pool's operations started today (UTC) move, counted from the log: each
    operation's first event (recorded before its first venue request or transaction), by its
    `recorded_at` (indexed with the event type). An operation that never recorded one
    (cancelled, failed before its first step) moved nothing; the amount is the event's,
    whatever the operation's row says."""
    start, end = costgate.day_bounds(now or timezone.now())
    rows = Event.objects.filter(
        event_type__in=[event_class.event_type_name() for event_class in GENESIS_TYPES],
        recorded_at__gte=start,
        recorded_at__lt=end,
        sequence=1,
        aggregate_type__in=ev.OPERATION_EVENT_TYPES,
    )
    if pool == USDC_POOL:
        rows = rows.filter(aggregate_type=ev.USDC_REBALANCE)
    else:
        rows = rows.exclude(aggregate_type=ev.USDC_REBALANCE)
    return costgate.volume_started(
        ((row.aggregate_type, row.domain_event()) for row in rows.iterator()), pool
    )


def gate_check(
    *, kind: str, pool: str, amount: Decimal, minimum: Decimal, now: datetime | None = None
) -> tuple[costgate.GateDecision, Estimate]:
    config = settings.REBALANCING
    moment = now or timezone.now()
    daily_cap = config.usdc_daily_cap if pool == USDC_POOL else config.equity_daily_cap_shares
    estimate = estimate_cost(kind, pool, amount, now=moment)
    decision = costgate.gate(
        costgate.GateInput(
            amount=amount,
            value_usd=estimate.value_usd,
            estimate_usd=estimate.usd,
            moved_today=moved_today(pool, now=moment) if daily_cap is not None else Decimal(0),
        ),
        costgate.GateLimits(minimum=minimum, max_cost_bps=config.max_cost_bps, daily_cap=daily_cap),
    )
    return decision, estimate


def gas_quote_record(
    *, chain: str, gas_price_wei: int, eth_usd: Decimal | None, now: datetime | None = None
) -> None:
    from operations.models import GasQuote

    GasQuote.objects.update_or_create(
        chain=chain,
        defaults={
            "gas_price_wei": Decimal(gas_price_wei),
            "eth_usd": eth_usd,
            "read_at": now or timezone.now(),
        },
    )


def gas_quotes_refresh() -> int:
    """Read each chain's gas price and the ETH/USD feed; store them (`GasQuote`)."""
    from operations.venues import venues_get

    venues = venues_get()
    feed = venues.workers.eth_usd_aggregator
    eth_usd = venues.base.price_feed_latest(feed=feed).price if feed else None
    count = 0
    for chain in (venues.base, venues.ethereum):
        gas_quote_record(chain=chain.name, gas_price_wei=chain.gas_price_now(), eth_usd=eth_usd)
        count += 1
    return count

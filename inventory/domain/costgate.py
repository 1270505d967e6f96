"""The cost gate (issue 24): whether an operation the trigger planned may start. Pure.

An operation starts when its amount is at least the pool's minimum, the pool's volume today
plus the amount stays within its daily cap, and its estimated cost is at most `max_cost_bps`
of the amount's value. A rule that cannot be judged (no cap, no limit, no estimate or no value)
does not hold the operation back. `gas_usd` prices an estimate's gas.

The pool's volume today is counted from the log: the amount of each operation's first event
(its genesis, `inventory.domain.inventory.genesis_from_event`, recorded before its first venue
request or transaction) recorded that UTC day (`day_bounds`, `volume_started`), whatever the
operation's row says and whether or not it finished; an operation that never recorded its
first event moved nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from inventory.domain import events as ev
from inventory.domain.checks import validate_aware
from inventory.domain.inventory import NotAGenesisEvent, genesis_from_event

BPS = Decimal(10_000)
WEI_PER_ETH = Decimal(10) ** 18
USD_PLACES = Decimal("1e-8")

RULE_MINIMUM = "below_minimum"
RULE_DAILY_CAP = "daily_cap"
RULE_MAX_COST = "cost_above_max_bps"


@dataclass(frozen=True)
class GateLimits:
    minimum: Decimal
    max_cost_bps: Decimal | None = None
    daily_cap: Decimal | None = None


@dataclass(frozen=True)
class GateInput:
    amount: Decimal
    value_usd: Decimal | None
    estimate_usd: Decimal | None
    moved_today: Decimal = Decimal(0)


@dataclass(frozen=True)
class GateDecision:
    start: bool
    rule: str = ""
    detail: str = ""


def cost_bps(estimate_usd: Decimal, value_usd: Decimal) -> Decimal:
    return (estimate_usd / value_usd * BPS).quantize(Decimal("0.01"))


def gate(given: GateInput, limits: GateLimits) -> GateDecision:
    if given.amount < limits.minimum:
        return GateDecision(
            False, RULE_MINIMUM, f"amount {given.amount} below the minimum {limits.minimum}"
        )
    if limits.daily_cap is not None and given.moved_today + given.amount > limits.daily_cap:
        return GateDecision(
            False,
            RULE_DAILY_CAP,
            f"{given.moved_today} moved today + {given.amount} exceeds the daily cap "
            f"{limits.daily_cap}",
        )
    if (
        limits.max_cost_bps is not None
        and given.estimate_usd is not None
        and given.value_usd is not None
        and given.value_usd > 0
    ):
        bps = cost_bps(given.estimate_usd, given.value_usd)
        if bps > limits.max_cost_bps:
            return GateDecision(
                False,
                RULE_MAX_COST,
                f"estimated cost {given.estimate_usd} USD is {bps} bps of {given.value_usd} USD, "
                f"above {limits.max_cost_bps} bps",
            )
    return GateDecision(True)


def gas_usd(
    gas_units: Mapping[str, int], gas_price_wei: Mapping[str, int], eth_usd: Decimal
) -> Decimal:
    """The gas of `gas_units` per chain at each chain's price, in USD at `eth_usd`."""
    wei = sum(units * gas_price_wei[chain] for chain, units in gas_units.items())
    return (Decimal(wei) / WEI_PER_ETH * eth_usd).quantize(USD_PLACES)


def day_bounds(now: datetime) -> tuple[datetime, datetime]:
    """The UTC day of `now` (an aware datetime): [midnight, next midnight)."""
    moment = validate_aware("now", now).astimezone(UTC)
    start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return start, start + timedelta(days=1)


def volume_started(first_events: Iterable[tuple[str, ev.DomainEvent]], pool: str) -> Decimal:
    """What the operations opened by `first_events` (each operation aggregate's sequence-1
    event with its aggregate type) move for `pool`: shares for an equity, USDC for USDC. An
    event that opens no operation (not a genesis) counts nothing."""
    total = Decimal(0)
    for aggregate_type, event in first_events:
        try:
            genesis = genesis_from_event(aggregate_type, event)
        except NotAGenesisEvent:
            continue
        if genesis.pool_key == pool:
            total += genesis.amount
    return total

"""The rebalancing decision for one pool: which operation it needs now, or why none. Pure.

The trigger (`service.trigger.pool_plan`) reads the facts from the database and calls
`plan_pool`; the backtest (`operations.backtest`) and the live challenger call the same
function with the facts of their model, so a replay decides exactly as the service does.

The checks run in the trigger's order, and a fact is only looked at when the decision reaches
it: the asset's switch, reconciliation, the pool's hold (cool-down, circuit breaker),
imbalance against the pool's band, market hours (equities), an active operation, the amount
(the excess, capped, floored to one onchain unit, at least the minimum) and, for USDC
Alpaca-to-Base, what can leave Alpaca. The facts that cost a read (the hold, market hours, the
active operation, what can leave Alpaca) may be given as zero-argument callables, called only when
needed; every other input is a plain value.

A redemption also needs the token's address from the asset table: the caller attaches it
(`Planned.kind == REDEMPTION`), it does not change the decision's amount.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import TypeAlias, TypeVar

from inventory.domain.inventory import (
    PoolInventory,
    TooMuchOffchain,
    TooMuchOnchain,
    detect_imbalance,
)
from inventory.domain.offchain import OffchainLeavable
from inventory.domain.settings import RebalancingSettings
from inventory.domain.units import UnitConversionError, from_units, to_units
from inventory.domain.values import USDC_POOL

# Operation kinds (the values of `operations.models.OperationKind`).
MINT = "mint"
REDEMPTION = "redemption"
USDC_ALPACA_TO_BASE = "usdc_alpaca_to_base"
USDC_BASE_TO_ALPACA = "usdc_base_to_alpaca"
KINDS = (MINT, REDEMPTION, USDC_ALPACA_TO_BASE, USDC_BASE_TO_ALPACA)

# Why no operation is planned (`Skipped.code`).
INACTIVE = "inactive"  # deployment switch off or an operator paused rebalancing
DISABLED = "disabled"  # the asset's switch is off, or the asset is not registered
RECONCILIATION = "reconciliation"  # the pool waits for an operator's reconciliation
HELD = "held"  # cooling down after a failure, or stopped by its circuit breaker
BALANCED = "balanced"  # within the band, or inflight, unobserved or empty
MARKET_CLOSED = "market_closed"
ACTIVE_OPERATION = "active_operation"
BELOW_UNIT = "below_unit"  # the excess is less than one onchain unit
BELOW_MINIMUM = "below_minimum"
LEAVABLE_UNKNOWN = "leavable_unknown"  # what can leave Alpaca is not known yet
LEAVABLE_BELOW_MINIMUM = "leavable_below_minimum"

T = TypeVar("T")
Lazy: TypeAlias = T | Callable[[], T]


def _value(fact: Lazy[T]) -> T:
    return fact() if callable(fact) else fact


@dataclass(frozen=True)
class Planned:
    kind: str
    pool: str
    amount: Decimal
    # The imbalance that asked for it: "TooMuchOnchain" or "TooMuchOffchain", and its excess.
    imbalance: str
    excess: Decimal
    # For a USDC Alpaca-to-Base move capped to what can leave Alpaca: the inputs.
    leavable: OffchainLeavable | None = None

    @property
    def describe(self) -> str:
        return (
            f"{self.pool} imbalanced ({self.imbalance}, excess {self.excess}): "
            f"planning {self.kind} of {self.amount}"
        )


@dataclass(frozen=True)
class Skipped:
    pool: str
    code: str
    reason: str
    # The level the trigger logs it at (logging.DEBUG for routine, INFO for notable).
    level: int = logging.DEBUG

    @property
    def message(self) -> str:
        """The log line."""
        if self.code == MARKET_CLOSED:
            return f"{self.pool} {self.reason}"
        return f"skipped {self.pool}: {self.reason}"


Plan = Planned | Skipped


@dataclass(frozen=True)
class PlanFacts:
    """What the decision needs besides the pool and the settings.

    `hold_reason`: why the pool is held (cool-down, breaker), None when it is not.
    `market_open`: whether equity operations may start now (ignored for USDC).
    `active_operation`: a description of the pool's active operation, None when there is none.
    `leavable`: what can leave Alpaca now (`inventory.domain.offchain`), None when it cannot
    be bounded; only read for a USDC Alpaca-to-Base move.
    """

    hold_reason: Lazy[str | None] = None
    market_open: Lazy[bool] = True
    active_operation: Lazy[str | None] = None
    leavable: Lazy[OffchainLeavable | None] = None


def plan_pool(
    *, key: str, pool: PoolInventory, settings: RebalancingSettings, facts: PlanFacts
) -> Plan:
    """The operation pool `key` needs now (`Planned`), or why none (`Skipped`)."""
    is_usdc = key == USDC_POOL
    if not settings.active:
        return Skipped(key, INACTIVE, "rebalancing is off or paused")
    if not is_usdc and not settings.asset_enabled(key):
        reason = "disabled" if key in settings.assets else "not a configured asset"
        return Skipped(key, DISABLED, f"rebalancing {reason}")
    if pool.needs_reconciliation:
        return Skipped(key, RECONCILIATION, f"needs reconciliation ({pool.reconciliation_reason})")
    held = _value(facts.hold_reason)
    if held is not None:
        return Skipped(key, HELD, held, logging.INFO)
    imbalance = detect_imbalance(pool, settings.threshold_for(key))
    if imbalance is None:
        return Skipped(key, BALANCED, "within its band (or inflight, unobserved, empty)")
    if not is_usdc and not _value(facts.market_open):
        return Skipped(
            key,
            MARKET_CLOSED,
            "imbalanced but the market is closed: no new equity operation",
            logging.INFO,
        )
    active = _value(facts.active_operation)
    if active is not None:
        return Skipped(key, ACTIVE_OPERATION, f"operation {active} already in progress")
    decimals = settings.decimals_for(key)  # the asset's token decimals, USDC's for USDC
    cap = settings.usdc_cap if is_usdc else settings.equity_cap_shares
    minimum = settings.usdc_minimum if is_usdc else settings.equity_minimum_shares
    amount = imbalance.excess if cap is None else min(imbalance.excess, cap)
    try:
        amount = from_units(to_units(amount, decimals), decimals)
    except UnitConversionError:
        return Skipped(key, BELOW_UNIT, f"excess {imbalance.excess} below one unit")
    if amount < minimum:
        return Skipped(key, BELOW_MINIMUM, f"{amount} below the minimum {minimum}")
    name = type(imbalance).__name__
    if is_usdc and isinstance(imbalance, TooMuchOffchain):
        return _alpaca_to_base(key, amount, minimum, imbalance.excess, facts)
    if is_usdc:
        kind = USDC_BASE_TO_ALPACA
    elif isinstance(imbalance, TooMuchOffchain):
        kind = MINT
    else:
        assert isinstance(imbalance, TooMuchOnchain)
        kind = REDEMPTION
    return Planned(kind=kind, pool=key, amount=amount, imbalance=name, excess=imbalance.excess)


def _alpaca_to_base(
    key: str, amount: Decimal, minimum: Decimal, excess: Decimal, facts: PlanFacts
) -> Plan:
    """Alpaca-to-Base plans against what can actually leave Alpaca (spec 15.5: withdrawable
    cash plus USDC held, less the cash reserve and what pending hedges may spend), never
    against `cash`."""
    leavable = _value(facts.leavable)
    if leavable is None:
        return Skipped(
            key,
            LEAVABLE_UNKNOWN,
            "USDC Alpaca-to-Base: what can leave Alpaca is not known yet",
            logging.INFO,
        )
    capped = min(amount, leavable.amount)
    if capped < minimum or capped <= 0:
        return Skipped(
            key,
            LEAVABLE_BELOW_MINIMUM,
            f"USDC Alpaca-to-Base of {amount}: {leavable.amount} can leave Alpaca "
            f"({leavable.describe()}), below the minimum {minimum}",
            logging.INFO,
        )
    return Planned(
        kind=USDC_ALPACA_TO_BASE,
        pool=key,
        amount=capped,
        imbalance=TooMuchOffchain.__name__,
        excess=excess,
        leavable=leavable if capped < amount else None,
    )

"""The one place that converts between Decimal amounts and onchain integer units.

Truncating, never rounding. A context with enough precision that no wei is dropped
(the default 28 digits would lose digits of an 18-decimal amount above 10 units).
"""

from __future__ import annotations

from decimal import ROUND_DOWN, Context, Decimal, DecimalException
from functools import cache

from inventory.domain.values import SHARE_DECIMALS, USDC_DECIMALS, DomainError

__all__ = ["SHARE_DECIMALS", "USDC_DECIMALS"]  # re-exported: defined beside the bounds
U256_MAX = 2**256 - 1

_CONTEXT = Context(prec=200, rounding=ROUND_DOWN, Emin=-999999, Emax=999999)


class UnitConversionError(DomainError):
    def __init__(self, kind: str, amount: Decimal, decimals: int, rule: str) -> None:
        self.kind = kind
        self.amount = amount
        self.decimals = decimals
        super().__init__(f"cannot convert {amount} to {decimals}-decimal units: {rule}")


class NegativeValue(UnitConversionError):
    pass


class Underflow(UnitConversionError):
    pass


class Overflow(UnitConversionError):
    pass


@cache
def _scale(decimals: int) -> Decimal:
    """`10 ** decimals`, computed once per number of decimals (the trigger and the replay
    convert every decision's amount)."""
    return _CONTEXT.power(Decimal(10), decimals)


def to_units(amount: Decimal, decimals: int) -> int:
    """`trunc(amount * 10**decimals)` as an integer that fits a uint256."""
    if not isinstance(amount, Decimal) or not amount.is_finite():
        raise UnitConversionError("invalid", amount, decimals, "amount must be a finite Decimal")
    if amount < 0:
        raise NegativeValue("negative", amount, decimals, "amount is negative")
    if amount.adjusted() > 100:
        # Far beyond uint256 (~1.2e77) whatever the decimals; also keeps the scaling below
        # the context's exponent limit, which would raise decimal.Overflow (not ours).
        raise Overflow("overflow", amount, decimals, "amount does not fit in uint256")
    try:
        scaled = _CONTEXT.multiply(amount, _scale(decimals))
        units = int(scaled.to_integral_value(rounding=ROUND_DOWN, context=_CONTEXT))
    except DecimalException:
        raise Overflow("overflow", amount, decimals, "amount does not fit in uint256") from None
    if units == 0 and amount != 0:
        raise Underflow("underflow", amount, decimals, "amount is below one unit")
    if units > U256_MAX:
        raise Overflow("overflow", amount, decimals, "amount does not fit in uint256")
    return units


def from_units(units: int, decimals: int) -> Decimal:
    if units < 0:
        raise NegativeValue("negative", Decimal(units), decimals, "units are negative")
    return _CONTEXT.divide(Decimal(units), _scale(decimals))


def shares_to_units(quantity: Decimal) -> int:
    return to_units(quantity, SHARE_DECIMALS)


def usdc_to_units(amount: Decimal) -> int:
    return to_units(amount, USDC_DECIMALS)


def units_to_shares(units: int) -> Decimal:
    return from_units(units, SHARE_DECIMALS)


def units_to_usdc(units: int) -> Decimal:
    return from_units(units, USDC_DECIMALS)

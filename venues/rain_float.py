"""Rain `Float` (rain.math.float), the amount type of Rain's order book (`IOrderBookV5`).

A `Float` is one 32-byte word: the low 224 bits are a signed (two's complement) coefficient, the
high 32 bits a signed exponent; its value is `coefficient x 10^exponent`. This is exactly what
`LibDecimalFloat.packLossless` / `unpack` do onchain:

    float := or(and(coefficient, type(uint224).max), shl(224, exponent))
    coefficient := signextend(27, and(float, type(uint224).max)); exponent := sar(224, float)

The same value has many encodings (`1.5` is `15e-1` or `1500000e-6`); the order book compares
values, so a reader must convert, never read the coefficient as units. A fixed-point amount of
`n` units with `d` decimals is exactly coefficient `n`, exponent `-d`.

Conversions here are exact or refused (`FloatConversionError` names the field, the value and
the rule): a coefficient that does not fit 224 signed bits, an exponent outside 32 signed bits,
an amount with more decimals than the token has, a negative amount. The one deliberate
exception is `float_to_units_floor`, for reading a vault balance that trades may have left with
more precision than the token has: it truncates to whole units, as the order book does when it
pays a withdrawal.

Pure standard library; imports no Django app.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

COEFFICIENT_BITS = 224
EXPONENT_BITS = 32
COEFFICIENT_MIN = -(2 ** (COEFFICIENT_BITS - 1))
COEFFICIENT_MAX = 2 ** (COEFFICIENT_BITS - 1) - 1
EXPONENT_MIN = -(2 ** (EXPONENT_BITS - 1))
EXPONENT_MAX = 2 ** (EXPONENT_BITS - 1) - 1
MAX_DECIMALS = 255  # ERC-20 decimals is a uint8
UINT256_MAX = 2**256 - 1

_COEFFICIENT_MASK = (1 << COEFFICIENT_BITS) - 1
_EXPONENT_MASK = (1 << EXPONENT_BITS) - 1
# A nonzero coefficient below 2^223 has at most 68 digits, so beyond these exponents a
# conversion to integer units is certainly lossy (down) or certainly beyond uint256 (up).
_MAX_COEFFICIENT_DIGITS = len(str(COEFFICIENT_MAX))
_MAX_UINT256_DIGITS = len(str(UINT256_MAX))


class FloatConversionError(ValueError):
    """A value that has no exact Rain `Float` (or fixed-point) counterpart."""

    def __init__(self, field: str, value: object, rule: str) -> None:
        super().__init__(f"{field}={value!r}: {rule}")
        self.field = field
        self.value = value
        self.rule = rule


def _int(field: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FloatConversionError(field, value, "must be an int")
    return value


def _decimals(decimals: object) -> int:
    decimals = _int("decimals", decimals)
    if not 0 <= decimals <= MAX_DECIMALS:
        raise FloatConversionError("decimals", decimals, f"must be between 0 and {MAX_DECIMALS}")
    return decimals


@dataclass(frozen=True)
class RainFloat:
    """One encoding of a Rain `Float`: `coefficient x 10^exponent`, both range-checked."""

    coefficient: int
    exponent: int

    def __post_init__(self) -> None:
        coefficient = _int("coefficient", self.coefficient)
        exponent = _int("exponent", self.exponent)
        if not COEFFICIENT_MIN <= coefficient <= COEFFICIENT_MAX:
            raise FloatConversionError(
                "coefficient", coefficient, f"must fit {COEFFICIENT_BITS} signed bits"
            )
        if not EXPONENT_MIN <= exponent <= EXPONENT_MAX:
            raise FloatConversionError(
                "exponent", exponent, f"must fit {EXPONENT_BITS} signed bits"
            )

    def __str__(self) -> str:
        return f"{self.coefficient}e{self.exponent}"

    def pack(self) -> bytes:
        """The 32-byte word the order book's ABI carries (`Float` is `bytes32`)."""
        word = (self.coefficient & _COEFFICIENT_MASK) | (
            (self.exponent & _EXPONENT_MASK) << COEFFICIENT_BITS
        )
        return word.to_bytes(32, "big")

    @classmethod
    def unpack(cls, raw: bytes) -> RainFloat:
        if not isinstance(raw, bytes | bytearray) or len(raw) != 32:
            raise FloatConversionError("float", raw, "must be exactly 32 bytes")
        word = int.from_bytes(raw, "big")
        coefficient = word & _COEFFICIENT_MASK
        if coefficient > COEFFICIENT_MAX:
            coefficient -= 1 << COEFFICIENT_BITS
        exponent = word >> COEFFICIENT_BITS
        if exponent > EXPONENT_MAX:
            exponent -= 1 << EXPONENT_BITS
        return cls(coefficient=coefficient, exponent=exponent)

    def to_decimal(self) -> Decimal:
        """The exact value (built from digits, so no context precision can round it)."""
        digits = tuple(int(ch) for ch in str(abs(self.coefficient)))
        return Decimal((1 if self.coefficient < 0 else 0, digits, self.exponent))


FLOAT_ZERO = RainFloat(coefficient=0, exponent=0)


def float_from_units(units: int, decimals: int) -> RainFloat:
    """`units` of a token with `decimals` decimals: coefficient `units`, exponent `-decimals`."""
    units = _int("units", units)
    decimals = _decimals(decimals)
    if units < 0:
        raise FloatConversionError("units", units, "must be >= 0")
    if units > COEFFICIENT_MAX:
        raise FloatConversionError(
            "units", units, f"must fit the {COEFFICIENT_BITS}-bit signed coefficient of a Float"
        )
    return _canonical(units, decimals)


def _canonical(units: int, decimals: int) -> RainFloat:
    """Zero is the all-zero word (`FLOAT_ZERO`) whatever the decimals, as Rain packs it."""
    return FLOAT_ZERO if units == 0 else RainFloat(coefficient=units, exponent=-decimals)


def _scaled_units(value: RainFloat, decimals: int, field: str) -> tuple[int, int]:
    """(whole units, remainder) of `value` in units of `decimals` decimals; >= 0 required."""
    decimals = _decimals(decimals)
    if value.coefficient < 0:
        raise FloatConversionError(field, str(value), "must not be negative")
    if value.coefficient == 0:
        return 0, 0
    shift = value.exponent + decimals
    if shift >= 0:
        if shift > _MAX_UINT256_DIGITS:
            raise FloatConversionError(
                field, str(value), f"does not fit uint256 with {decimals} decimals"
            )
        units = value.coefficient * 10**shift
        if units > UINT256_MAX:
            raise FloatConversionError(
                field, str(value), f"does not fit uint256 with {decimals} decimals"
            )
        return units, 0
    if -shift > _MAX_COEFFICIENT_DIGITS:
        return 0, value.coefficient
    return divmod(value.coefficient, 10**-shift)


def float_to_units(value: RainFloat, decimals: int, *, field: str = "float") -> int:
    """Exact units of `value` for a token with `decimals` decimals; refuses what is not whole."""
    units, remainder = _scaled_units(value, decimals, field)
    if remainder:
        raise FloatConversionError(
            field, str(value), f"has more than {decimals} decimals (not a whole number of units)"
        )
    return units


def float_to_units_floor(value: RainFloat, decimals: int, *, field: str = "float") -> int:
    """Whole units of `value`, truncating finer precision (what a withdrawal can pay)."""
    units, _ = _scaled_units(value, decimals, field)
    return units


def _decimal_units(amount: Decimal, decimals: int, field: str) -> int:
    if not isinstance(amount, Decimal):
        raise FloatConversionError(field, amount, "must be a Decimal")
    if not amount.is_finite():
        raise FloatConversionError(field, amount, "must be finite")
    sign, digits, exponent = amount.as_tuple()
    assert isinstance(exponent, int)  # finite
    if sign and any(digits):
        raise FloatConversionError(field, amount, "must be >= 0")
    number = int("".join(map(str, digits)) or "0")
    shift = exponent + decimals
    if number == 0:
        return 0
    if shift >= 0:
        if shift > _MAX_UINT256_DIGITS:
            raise FloatConversionError(field, amount, "does not fit a Float")
        return number * 10**shift
    units, remainder = divmod(number, 10**-shift)
    if remainder:
        raise FloatConversionError(field, amount, f"has more than {decimals} decimals")
    return units


def float_from_decimal(amount: Decimal, decimals: int, *, field: str = "amount") -> RainFloat:
    """An amount of a token with `decimals` decimals as a Float (coefficient = its units)."""
    decimals = _decimals(decimals)
    units = _decimal_units(amount, decimals, field)
    if units > COEFFICIENT_MAX:
        raise FloatConversionError(
            field, amount, f"must fit the {COEFFICIENT_BITS}-bit signed coefficient of a Float"
        )
    return _canonical(units, decimals)


def float_to_decimal(value: RainFloat, decimals: int, *, field: str = "float") -> Decimal:
    """The amount `value` holds of a token with `decimals` decimals, exactly, at that scale."""
    units = float_to_units(value, decimals, field=field)
    digits = tuple(int(ch) for ch in str(units))
    return Decimal((0, digits, -decimals))

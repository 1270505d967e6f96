"""Value types shared by every aggregate (spec section 1)."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import NewType

# A 0x-prefixed, EIP-55 checksummed 20-byte address. Checked at the JSON boundary.
Address = NewType("Address", str)
# A 0x-prefixed 32-byte hex hash (transaction hash, message hash).
TxHash = NewType("TxHash", str)

USDC_POOL = "USDC"

# The decimals the domain supports: onchain token units (spec 1).
SHARE_DECIMALS = 18
USDC_DECIMALS = 6
# A sane maximum for any amount (shares, USDC, prices): every accepted amount then has at most
# 15 integer digits and its unit's decimals, so sums and products of any accepted sequence stay
# exact within the aggregates' arithmetic contexts (80 and 120 digits).
MAX_AMOUNT = Decimal(10) ** 15

# A base ticker: ASCII upper-case letters and digits, optionally joined by one "." or "-"
# (BRK.B, BRK-B); bounded length; nothing else (no lower case, space, control or zero-width
# characters). Matched in full (re.fullmatch: "$" alone would accept a trailing newline).
SYMBOL_MAX_LENGTH = 16
_SYMBOL = re.compile(r"[A-Z0-9]+(?:[.\-][A-Z0-9]+)*")


class DomainError(Exception):
    """Root of every domain rule violation; carries structured data in attributes."""


class InvalidValue(DomainError):
    def __init__(self, field: str, value: object, rule: str) -> None:
        self.field = field
        self.value = value
        self.rule = rule
        super().__init__(f"{field}={value!r}: {rule}")


class Direction(enum.StrEnum):
    """Always from the bot's point of view."""

    BUY = "Buy"
    SELL = "Sell"


class RebalanceDirection(enum.StrEnum):
    ALPACA_TO_BASE = "AlpacaToBase"  # offchain -> onchain
    BASE_TO_ALPACA = "BaseToAlpaca"  # onchain -> offchain


class TransferRefKind(enum.StrEnum):
    ALPACA_ID = "AlpacaId"
    ONCHAIN_TX = "OnchainTx"


@dataclass(frozen=True)
class TransferRef:
    kind: TransferRefKind
    value: str


def validate_symbol(symbol: str, field: str = "symbol") -> str:
    """A base equity ticker: upper-case ASCII letters and digits with "." or "-" between
    them, at most 16 characters, and never the USDC pool key."""
    if not isinstance(symbol, str) or symbol == "":
        raise InvalidValue(field, symbol, "must be a non-empty string")
    if symbol != symbol.strip() or any(ch.isspace() for ch in symbol):
        raise InvalidValue(field, symbol, "must not contain whitespace")
    if len(symbol) > SYMBOL_MAX_LENGTH:
        raise InvalidValue(field, symbol, f"must be at most {SYMBOL_MAX_LENGTH} characters")
    if not _SYMBOL.fullmatch(symbol):
        raise InvalidValue(
            field,
            symbol,
            "must be ASCII upper-case letters and digits, optionally joined by '.' or '-'",
        )
    if symbol == USDC_POOL:
        raise InvalidValue(field, symbol, "USDC is the cash pool, not an equity")
    return symbol


def _places(value: Decimal) -> int:
    """Decimal places the value needs (trailing zeros do not count), without rounding."""
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    if exponent >= 0 or not any(digits):
        return 0
    trailing = 0
    for digit in reversed(digits):
        if digit != 0 or exponent + trailing >= 0:
            break
        trailing += 1
    return -(exponent + trailing)


def validate_quantity(
    field: str,
    value: Decimal,
    *,
    allow_zero: bool = False,
    allow_negative: bool = False,
    decimals: int = SHARE_DECIMALS,
) -> Decimal:
    """A finite Decimal within the domain's bounds: positive (or >= 0, or any sign), at most
    `MAX_AMOUNT` in size and at most `decimals` decimal places (18 shares, 6 USDC). Trailing
    zeros beyond the decimals are dropped, so the value returned is exactly the one given."""
    if isinstance(value, bool) or not isinstance(value, Decimal):
        raise InvalidValue(field, value, "must be a Decimal (built from str or int, never float)")
    if not value.is_finite():
        raise InvalidValue(field, value, "must be finite")
    if not allow_negative and (value < 0 or (value == 0 and not allow_zero)):
        raise InvalidValue(field, value, "must be positive" if not allow_zero else ">= 0")
    if abs(value) > MAX_AMOUNT:
        raise InvalidValue(field, value, f"must be at most {MAX_AMOUNT:,} in size")
    places = _places(value)
    if places > decimals:
        raise InvalidValue(field, value, f"must have at most {decimals} decimal places")
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    if exponent < -decimals:  # only zeros beyond the decimals: drop them
        drop = -decimals - exponent
        kept = digits[: len(digits) - drop] or (0,)
        value = Decimal((value.is_signed(), kept, -decimals)) if any(digits) else Decimal(0)
    return value


_TOKEN_BASE = re.compile(r"[A-Za-z0-9]+(?:[.\-][A-Za-z0-9]+)*")


def _token_base(text: str, base: str) -> str:
    """The base of a token symbol: ASCII letters and digits (a marker may follow: tAAPL0x),
    "." or "-" between them, bounded; it must equal a registered base symbol to be used."""
    if len(base) > SYMBOL_MAX_LENGTH or not _TOKEN_BASE.fullmatch(base):
        raise InvalidValue(
            "token_symbol",
            text,
            f"its base must be at most {SYMBOL_MAX_LENGTH} ASCII letters and digits, "
            "optionally joined by '.' or '-'",
        )
    return base


_PREFIX_MARKERS = ("t",)
_SUFFIX_MARKERS = ("0x", "s1")


@dataclass(frozen=True)
class TokenizedEquitySymbol:
    """Onchain token symbol: base plus a marker (`tAAPL`, `AAPL0x`, `NVDAs1`)."""

    base: str
    marker: str
    marker_is_prefix: bool

    @classmethod
    def parse(cls, text: str) -> TokenizedEquitySymbol:
        if not isinstance(text, str):
            raise InvalidValue("token_symbol", text, "must be a string")
        for marker in _PREFIX_MARKERS:
            if text.startswith(marker) and len(text) > len(marker):
                base = text[len(marker) :]
                if base[0].isupper():
                    return cls(base=_token_base(text, base), marker=marker, marker_is_prefix=True)
        for marker in _SUFFIX_MARKERS:
            if text.endswith(marker) and len(text) > len(marker):
                base = _token_base(text, text[: -len(marker)])
                return cls(base=base, marker=marker, marker_is_prefix=False)
        raise InvalidValue(
            "token_symbol", text, "expected a base with a marker: tXXX, XXX0x or XXXs1"
        )

    def __str__(self) -> str:
        if self.marker_is_prefix:
            return f"{self.marker}{self.base}"
        return f"{self.base}{self.marker}"

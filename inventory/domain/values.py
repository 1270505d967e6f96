"""Value types shared by every aggregate (spec section 1)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from decimal import Decimal
from typing import NewType

# A 0x-prefixed, EIP-55 checksummed 20-byte address. Checked at the JSON boundary.
Address = NewType("Address", str)
# A 0x-prefixed 32-byte hex hash (transaction hash, message hash).
TxHash = NewType("TxHash", str)

USDC_POOL = "USDC"


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


def validate_symbol(symbol: str) -> str:
    """A base equity ticker: non-empty, no surrounding space, and never the USDC pool key."""
    if not isinstance(symbol, str) or symbol == "":
        raise InvalidValue("symbol", symbol, "must be a non-empty string")
    if symbol != symbol.strip() or any(ch.isspace() for ch in symbol):
        raise InvalidValue("symbol", symbol, "must not contain whitespace")
    if symbol == USDC_POOL:
        raise InvalidValue("symbol", symbol, "USDC is the cash pool, not an equity")
    return symbol


def validate_quantity(field: str, value: Decimal, *, allow_zero: bool = False) -> Decimal:
    if not isinstance(value, Decimal):
        raise InvalidValue(field, value, "must be a Decimal")
    if not value.is_finite():
        raise InvalidValue(field, value, "must be finite")
    if value < 0 or (value == 0 and not allow_zero):
        raise InvalidValue(field, value, "must be positive" if not allow_zero else ">= 0")
    return value


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
                    return cls(base=base, marker=marker, marker_is_prefix=True)
        for marker in _SUFFIX_MARKERS:
            if text.endswith(marker) and len(text) > len(marker):
                return cls(base=text[: -len(marker)], marker=marker, marker_is_prefix=False)
        raise InvalidValue(
            "token_symbol", text, "expected a base with a marker: tXXX, XXX0x or XXXs1"
        )

    def __str__(self) -> str:
        if self.marker_is_prefix:
            return f"{self.marker}{self.base}"
        return f"{self.base}{self.marker}"

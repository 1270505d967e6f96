"""Validation shared by the aggregates' command handlers (pure stdlib).

Every failure is an `InvalidValue(field, value, rule)`; refusals that depend on the current
state are `CommandRefused` subclasses defined per aggregate.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar

from inventory.domain.keccak import keccak_256
from inventory.domain.units import U256_MAX
from inventory.domain.values import (
    SHARE_DECIMALS,
    Address,
    DomainError,
    InvalidValue,
    RebalanceDirection,
    TransferRef,
    TransferRefKind,
    TxHash,
    validate_quantity,
    validate_symbol,
)

# Matched with re.fullmatch ("$" alone accepts a trailing newline).
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_HASH = re.compile(r"0x[0-9a-fA-F]{64}")
# The canonical spelling only: uuid.UUID also takes braces, "urn:uuid:" and no hyphens, which
# would be several spellings of one transfer.
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

__all__ = [
    "CommandRefused",
    "validate_address",
    "validate_amount",
    "validate_bytes",
    "validate_direction",
    "validate_fee",
    "validate_optional_amount",
    "validate_symbol",
    "validate_text",
    "validate_transfer_ref",
    "validate_tx_hash",
    "validate_u256",
    "validate_aware",
]


class CommandRefused(DomainError):
    """A command that is not valid in the aggregate's current state.

    Attributes: `command` (command class name), `state` (state class name or
    "Uninitialized"), `rule` (why), plus any keyword details given.
    """

    RULE: ClassVar[str] = "not valid in this state"

    def __init__(self, command: object, state: object, **details: Any) -> None:
        self.command = command if isinstance(command, str) else type(command).__name__
        self.state = state_name(state)
        self.rule = self.RULE
        self.details = details
        for key, value in details.items():
            setattr(self, key, value)
        extra = "".join(f" {key}={value!r}" for key, value in details.items())
        super().__init__(
            f"{type(self).__name__}: {self.command} refused in state {self.state}: "
            f"{self.rule}{extra}"
        )


def state_name(state: object) -> str:
    if state is None:
        return "Uninitialized"
    if isinstance(state, str):
        return state
    return type(state).__name__


def validate_amount(field: str, value: Decimal, *, decimals: int = SHARE_DECIMALS) -> Decimal:
    """A strictly positive, finite Decimal within the domain's bounds (see validate_quantity)."""
    return validate_quantity(field, value, decimals=decimals)


def validate_optional_amount(
    field: str, value: Decimal | None, *, decimals: int = SHARE_DECIMALS
) -> Decimal | None:
    return None if value is None else validate_quantity(field, value, decimals=decimals)


def validate_fee(
    field: str, value: Decimal | None, *, decimals: int = SHARE_DECIMALS
) -> Decimal | None:
    """An optional fee: a finite Decimal >= 0 within the domain's bounds."""
    if value is None:
        return None
    return validate_quantity(field, value, allow_zero=True, decimals=decimals)


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def validate_text(field: str, value: str) -> str:
    """Non-blank text that any database stores: no NUL character (PostgreSQL refuses it) and
    no lone UTF-16 surrogate (not encodable as UTF-8)."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidValue(field, value, "must be a non-empty string")
    found = _UNSTORABLE.search(value)
    if found:
        what = "a NUL character" if found.group() == "\x00" else "a lone UTF-16 surrogate"
        raise InvalidValue(field, printable(value), f"must not contain {what}")
    return value


def printable(value: str) -> str:
    """`value` with NUL and lone surrogates written as escapes (safe in any error message)."""
    return _UNSTORABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), value)


def is_checksum_valid(address: str) -> bool:
    """EIP-55: all-lower or all-upper hex carries no checksum; mixed case must match it."""
    body = address[2:]
    if body == body.lower() or body == body.upper():
        return True
    digest = keccak_256(body.lower().encode("ascii"))
    return all(
        ch == (ch.upper() if int(digest[i], 16) >= 8 else ch.lower()) for i, ch in enumerate(body)
    )


def validate_address(field: str, value: str) -> Address:
    """A 0x 20-byte hex address matched in full; a mixed-case one must carry a valid EIP-55
    checksum (a wrong checksum is a typo, refused everywhere)."""
    if not isinstance(value, str) or not _ADDRESS.fullmatch(value):
        raise InvalidValue(field, value, "must be a 0x-prefixed 20-byte hex address")
    if not is_checksum_valid(value):
        raise InvalidValue(field, value, "mixed-case address with an invalid EIP-55 checksum")
    return Address(value)


def validate_tx_hash(field: str, value: str) -> TxHash:
    if not isinstance(value, str) or not _HASH.fullmatch(value):
        raise InvalidValue(field, value, "must be a 0x-prefixed 32-byte hex hash")
    return TxHash(value)


def validate_bytes32_hex(field: str, value: str) -> str:
    if not isinstance(value, str) or not _HASH.match(value):
        raise InvalidValue(field, value, "must be 0x-prefixed 32-byte hex")
    return value


def validate_bytes(field: str, value: bytes) -> bytes:
    if not isinstance(value, bytes) or len(value) == 0:
        raise InvalidValue(field, value, "must be non-empty bytes")
    return value


def validate_u256(field: str, value: int, *, allow_zero: bool = True) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidValue(field, value, "must be an integer")
    if value < 0 or value > U256_MAX or (value == 0 and not allow_zero):
        rule = "must fit a uint256" if allow_zero else "must be a positive uint256"
        raise InvalidValue(field, value, rule)
    return value


def validate_direction(field: str, value: RebalanceDirection) -> RebalanceDirection:
    if not isinstance(value, RebalanceDirection):
        raise InvalidValue(field, value, "must be a RebalanceDirection")
    return value


def validate_transfer_ref(field: str, value: TransferRef) -> TransferRef:
    """An Alpaca transfer id (a UUID) or an onchain transaction hash."""
    if not isinstance(value, TransferRef):
        raise InvalidValue(field, value, "must be a TransferRef")
    if value.kind is TransferRefKind.ALPACA_ID:
        if not isinstance(value.value, str) or not _UUID.fullmatch(value.value):
            raise InvalidValue(
                field, value.value, "AlpacaId must be a UUID (8-4-4-4-12 hex digits)"
            )
    elif value.kind is TransferRefKind.ONCHAIN_TX:
        validate_tx_hash(field, value.value)
    else:
        raise InvalidValue(field, value.kind, "unknown TransferRef kind")
    return value


def validate_aware(field: str, value: datetime) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InvalidValue(field, value, "must be a timezone-aware datetime")
    return value


def refuse_by_table(
    *,
    validity: Mapping[type, Mapping[Any, type[CommandRefused] | None]],
    command: Any,
    current: Any,
    step: Any,
    aggregate: str,
    already_reconciled: type[CommandRefused],
    not_reconcilable: type[CommandRefused],
    reconcile_command: type,
) -> None:
    """Refuse `command` per a table of error-per-step (None = valid), for an equity
    operation aggregate (its states carry `symbol` and `quantity`). Steps missing from a
    command's row are past reconciliation; reconciling needs a failure that kept inflight."""
    table = validity.get(type(command))
    if table is None:
        raise InvalidValue("command", command, f"not {aggregate} command")
    details: dict[str, Any] = {}
    if current is not None:
        details = {"symbol": current.symbol, "quantity": current.quantity}
    if step not in table:
        raise already_reconciled(command, current, **details)
    error = table[step]
    if error is not None:
        raise error(command, current, **details)
    if isinstance(command, reconcile_command) and not getattr(current, "inflight_kept", False):
        raise not_reconcilable(command, current, inflight_kept=False, **details)


def names_one_of(tx_hash: str, known_hashes: tuple[str, ...]) -> bool:
    return any(tx_hash.lower() == known.lower() for known in known_hashes)

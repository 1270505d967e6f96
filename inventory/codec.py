"""Exact JSON round trip for domain events.

Decimals travel as strings, datetimes as ISO 8601 with their offset (naive ones are refused),
addresses checksummed, hashes and bytes as 0x hex. The payload is externally tagged like the
reference: `{"MintRequested": {"symbol": "AAPL", "quantity": "30", ...}}`. Anything that does
not parse raises `PayloadError` naming the event type, the field and the value.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import types
import typing
from datetime import datetime
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Any

from eth_utils import is_address, to_checksum_address

from inventory.domain.events import EVENT_CLASSES, DomainEvent
from inventory.domain.values import Address, DomainError, TxHash

_HASH_RE = re.compile(r"^0x[0-9a-fA-F]{64}$")
_HEX_RE = re.compile(r"^0x([0-9a-fA-F]{2})*$")


class PayloadError(DomainError):
    def __init__(self, event_type: str, field: str, value: object, rule: str) -> None:
        self.event_type = event_type
        self.field = field
        self.value = value
        self.rule = rule
        super().__init__(f"{event_type}: field {field!r} = {value!r}: {rule}")


class _FieldError(Exception):
    def __init__(self, path: str, value: object, rule: str) -> None:
        self.path = path
        self.value = value
        self.rule = rule


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _fields(cls: type) -> list[tuple[str, Any, bool]]:
    hints = _hints(cls)
    result = []
    for f in dataclasses.fields(cls):
        has_default = (
            f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        )
        result.append((f.name, hints[f.name], has_default))
    return result


def _optional_inner(tp: Any) -> Any | None:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0]
    return None


def encode_value(tp: Any, value: Any, path: str) -> Any:
    inner = _optional_inner(tp)
    if inner is not None:
        return None if value is None else encode_value(inner, value, path)
    if value is None:
        raise _FieldError(path, value, "is required")
    if tp is Address:
        if not isinstance(value, str) or not is_address(value):
            raise _FieldError(path, value, "not a 20-byte hex address")
        return to_checksum_address(value)
    if tp is TxHash:
        if not isinstance(value, str) or not _HASH_RE.match(value):
            raise _FieldError(path, value, "not a 0x-prefixed 32-byte hex hash")
        return value.lower()
    if tp is Decimal:
        if not isinstance(value, Decimal) or not value.is_finite():
            raise _FieldError(path, value, "must be a finite Decimal")
        return str(value)
    if tp is datetime:
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise _FieldError(path, value, "must be a timezone-aware datetime")
        return value.isoformat()
    if tp is bytes:
        if not isinstance(value, bytes | bytearray):
            raise _FieldError(path, value, "must be bytes")
        return "0x" + bytes(value).hex()
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(value).value
    if tp is bool:
        if not isinstance(value, bool):
            raise _FieldError(path, value, "must be a boolean")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _FieldError(path, value, "must be an integer")
        # Big integers (uint256) as strings: JSON numbers lose digits in many readers.
        return str(value)
    if tp is str:
        if not isinstance(value, str):
            raise _FieldError(path, value, "must be a string")
        return value
    if dataclasses.is_dataclass(tp):
        return {
            name: encode_value(ftp, getattr(value, name), f"{path}.{name}")
            for name, ftp, _ in _fields(tp)
        }
    origin = typing.get_origin(tp)
    if origin is dict:
        key_tp, value_tp = typing.get_args(tp)
        return {
            encode_value(key_tp, k, path): encode_value(value_tp, v, f"{path}[{k}]")
            for k, v in value.items()
        }
    if origin in (list, tuple):
        (item_tp, *_) = typing.get_args(tp)
        return [encode_value(item_tp, v, f"{path}[{i}]") for i, v in enumerate(value)]
    raise _FieldError(path, value, f"unsupported type {tp!r}")


def decode_value(tp: Any, raw: Any, path: str) -> Any:
    inner = _optional_inner(tp)
    if inner is not None:
        return None if raw is None else decode_value(inner, raw, path)
    if raw is None:
        raise _FieldError(path, raw, "is required")
    if tp is Address:
        if not isinstance(raw, str) or not is_address(raw):
            raise _FieldError(path, raw, "not a 20-byte hex address")
        return Address(to_checksum_address(raw))
    if tp is TxHash:
        if not isinstance(raw, str) or not _HASH_RE.match(raw):
            raise _FieldError(path, raw, "not a 0x-prefixed 32-byte hex hash")
        return TxHash(raw.lower())
    if tp is Decimal:
        if not isinstance(raw, str):
            raise _FieldError(path, raw, "decimals must be JSON strings")
        try:
            number = Decimal(raw)
        except InvalidOperation:
            raise _FieldError(path, raw, "not a decimal number") from None
        if not number.is_finite():
            raise _FieldError(path, raw, "must be finite")
        return number
    if tp is datetime:
        try:
            moment = datetime.fromisoformat(raw)
        except (TypeError, ValueError):
            raise _FieldError(path, raw, "not an ISO 8601 datetime") from None
        if moment.tzinfo is None:
            raise _FieldError(path, raw, "datetime has no timezone")
        return moment
    if tp is bytes:
        if not isinstance(raw, str) or not _HEX_RE.match(raw):
            raise _FieldError(path, raw, "not 0x-prefixed hex bytes")
        return bytes.fromhex(raw[2:])
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(raw)
        except ValueError:
            allowed = ", ".join(str(m.value) for m in tp)
            raise _FieldError(path, raw, f"expected one of {allowed}") from None
    if tp is bool:
        if not isinstance(raw, bool):
            raise _FieldError(path, raw, "must be a boolean")
        return raw
    if tp is int:
        if isinstance(raw, bool):
            raise _FieldError(path, raw, "must be an integer")
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise _FieldError(path, raw, "must be an integer") from None
    if tp is str:
        if not isinstance(raw, str):
            raise _FieldError(path, raw, "must be a string")
        return raw
    if dataclasses.is_dataclass(tp):
        return _decode_dataclass(tp, raw, path)
    origin = typing.get_origin(tp)
    if origin is dict:
        if not isinstance(raw, dict):
            raise _FieldError(path, raw, "must be an object")
        key_tp, value_tp = typing.get_args(tp)
        return {
            decode_value(key_tp, k, path): decode_value(value_tp, v, f"{path}[{k}]")
            for k, v in raw.items()
        }
    if origin in (list, tuple):
        if not isinstance(raw, list):
            raise _FieldError(path, raw, "must be an array")
        (item_tp, *_) = typing.get_args(tp)
        items = [decode_value(item_tp, v, f"{path}[{i}]") for i, v in enumerate(raw)]
        return tuple(items) if origin is tuple else items
    raise _FieldError(path, raw, f"unsupported type {tp!r}")


def _decode_dataclass(cls: type, raw: Any, path: str) -> Any:
    if not isinstance(raw, dict):
        raise _FieldError(path or cls.__name__, raw, "must be an object")
    known = {name for name, _, _ in _fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise _FieldError(
            f"{path}.{unknown[0]}" if path else unknown[0], raw[unknown[0]], "unknown field"
        )
    kwargs = {}
    for name, ftp, has_default in _fields(cls):
        field_path = f"{path}.{name}" if path else name
        if name not in raw:
            if has_default:
                continue
            raise _FieldError(field_path, None, "is missing")
        kwargs[name] = decode_value(ftp, raw[name], field_path)
    return cls(**kwargs)


def encode_event(event: DomainEvent) -> tuple[str, dict[str, Any]]:
    """-> (event_type, externally tagged payload)."""
    cls = type(event)
    try:
        body = {
            name: encode_value(ftp, getattr(event, name), name) for name, ftp, _ in _fields(cls)
        }
    except _FieldError as error:
        raise PayloadError(event.event_type, error.path, error.value, error.rule) from None
    return event.event_type, {cls.variant(): body}


def decode_event(event_type: str, payload: Any) -> DomainEvent:
    cls = EVENT_CLASSES.get(event_type)
    if cls is None:
        raise PayloadError(event_type, "event_type", event_type, "unknown event type")
    variant = cls.variant()
    if not isinstance(payload, dict) or list(payload) != [variant]:
        raise PayloadError(event_type, "payload", payload, f"expected {{{variant!r}: {{...}}}}")
    try:
        return _decode_dataclass(cls, payload[variant], "")
    except _FieldError as error:
        raise PayloadError(event_type, error.path, error.value, error.rule) from None

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
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Any

from eth_utils import to_checksum_address

from inventory.domain.checks import is_checksum_valid
from inventory.domain.events import EVENT_CLASSES, DomainEvent
from inventory.domain.values import Address, DomainError, TxHash

# Matched with re.fullmatch ("$" alone accepts a trailing newline).
_HASH_RE = re.compile(r"0x[0-9a-fA-F]{64}")
_HEX_RE = re.compile(r"0x([0-9a-fA-F]{2})*")
_ADDRESS_RE = re.compile(r"0x[0-9a-fA-F]{40}")


def _is_address(value: object) -> bool:
    """A 0x 20-byte hex address; mixed case must carry a valid EIP-55 checksum."""
    return (
        isinstance(value, str)
        and _ADDRESS_RE.fullmatch(value) is not None
        and is_checksum_valid(value)
    )


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


@cache
def _fields(cls: type) -> tuple[tuple[str, Any, bool], ...]:
    hints = _hints(cls)
    result = []
    for f in dataclasses.fields(cls):
        has_default = (
            f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        )
        result.append((f.name, hints[f.name], has_default))
    return tuple(result)


@cache
def _optional_inner(tp: Any) -> Any | None:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0]
    return None


def encode_value(tp: Any, value: Any, path: str) -> Any:
    return _encoder(tp)(value, path)


# Encoding is compiled once per type into a closure (`_encoder`), like decoding below: every
# appended event is encoded, and re-inspecting the type hints of each field costs more than
# the checks themselves.
Encoder = Callable[[Any, str], Any]


def _refused(path: str, value: Any, rule: str) -> _FieldError:
    """The error for a value an encoder refuses: "is required" when it is missing."""
    return _FieldError(path, value, "is required" if value is None else rule)


def _encode_address(value: Any, path: str) -> Any:
    if value is None or not _is_address(value):
        raise _refused(path, value, "not a 20-byte hex address with a valid checksum")
    return to_checksum_address(value)


def _encode_hash(value: Any, path: str) -> Any:
    if not isinstance(value, str) or not _HASH_RE.fullmatch(value):
        raise _refused(path, value, "not a 0x-prefixed 32-byte hex hash")
    return value.lower()


def _encode_decimal(value: Any, path: str) -> Any:
    if not isinstance(value, Decimal) or not value.is_finite():
        raise _refused(path, value, "must be a finite Decimal")
    return str(value)


def _encode_datetime(value: Any, path: str) -> Any:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise _refused(path, value, "must be a timezone-aware datetime")
    return value.isoformat()


def _encode_bytes(value: Any, path: str) -> Any:
    if not isinstance(value, bytes | bytearray):
        raise _refused(path, value, "must be bytes")
    return "0x" + bytes(value).hex()


def _encode_bool(value: Any, path: str) -> Any:
    if not isinstance(value, bool):
        raise _refused(path, value, "must be a boolean")
    return value


def _encode_int(value: Any, path: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _refused(path, value, "must be an integer")
    # Big integers (uint256) as strings: JSON numbers lose digits in many readers.
    return str(value)


def _encode_str(value: Any, path: str) -> Any:
    if not isinstance(value, str):
        raise _refused(path, value, "must be a string")
    return value


_SIMPLE_ENCODERS: dict[Any, Encoder] = {
    Address: _encode_address,
    TxHash: _encode_hash,
    Decimal: _encode_decimal,
    datetime: _encode_datetime,
    bytes: _encode_bytes,
    bool: _encode_bool,
    int: _encode_int,
    str: _encode_str,
}


@cache
def _encoder(tp: Any) -> Encoder:
    """The encoding function of a type, built once per type."""
    inner = _optional_inner(tp)
    if inner is not None:
        inner_encoder = _encoder(inner)

        def optional(value: Any, path: str) -> Any:
            return None if value is None else inner_encoder(value, path)

        return optional
    simple = _SIMPLE_ENCODERS.get(tp)
    if simple is not None:
        return simple

    def required(value: Any, path: str) -> None:
        if value is None:
            raise _FieldError(path, value, "is required")

    if isinstance(tp, type) and issubclass(tp, enum.Enum):

        def member(value: Any, path: str) -> Any:
            required(value, path)
            return tp(value).value

        return member
    if dataclasses.is_dataclass(tp):
        body = _dataclass_encoder(tp)

        def nested(value: Any, path: str) -> Any:
            required(value, path)
            return body(value, path)

        return nested
    origin = typing.get_origin(tp)
    if origin is dict:
        key_tp, value_tp = typing.get_args(tp)

        def mapping(value: Any, path: str) -> Any:
            required(value, path)
            key_encoder, value_encoder = _encoder(key_tp), _encoder(value_tp)
            return {
                key_encoder(k, path): value_encoder(v, f"{path}[{k}]") for k, v in value.items()
            }

        return mapping
    if origin in (list, tuple):
        (item_tp, *_) = typing.get_args(tp)

        def sequence(value: Any, path: str) -> Any:
            required(value, path)
            item_encoder = _encoder(item_tp)
            return [item_encoder(v, f"{path}[{i}]") for i, v in enumerate(value)]

        return sequence

    def unsupported(value: Any, path: str) -> Any:
        required(value, path)
        raise _FieldError(path, value, f"unsupported type {tp!r}")

    return unsupported


@cache
def _dataclass_encoder(cls: type) -> Encoder:
    """Encoder of a dataclass body (field encoders resolved on first use: a type may refer to
    itself)."""
    fields = _fields(cls)
    compiled: list[tuple[str, Encoder]] = []

    def encode(value: Any, path: str) -> Any:
        if not compiled:
            compiled.extend((name, _encoder(ftp)) for name, ftp, _ in fields)
        prefix = f"{path}." if path else ""
        return {
            name: field_encoder(getattr(value, name), prefix + name)
            for name, field_encoder in compiled
        }

    return encode


def decode_value(tp: Any, raw: Any, path: str) -> Any:
    return _decoder(tp)(raw, path)


# Decoding is compiled once per type into a closure (`_decoder`): the checks are those of the
# rules above, without re-inspecting the type hints of every field of every event (a replay
# decodes millions of payloads).
Decoder = Callable[[Any, str], Any]


def _required(raw: Any, path: str) -> None:
    raise _FieldError(path, raw, "is required")


def _decode_address(raw: Any, path: str) -> Any:
    if raw is None:
        _required(raw, path)
    if not _is_address(raw):
        raise _FieldError(path, raw, "not a 20-byte hex address with a valid checksum")
    return Address(to_checksum_address(raw))


def _decode_hash(raw: Any, path: str) -> Any:
    if raw is None:
        _required(raw, path)
    if not isinstance(raw, str) or not _HASH_RE.fullmatch(raw):
        raise _FieldError(path, raw, "not a 0x-prefixed 32-byte hex hash")
    return TxHash(raw.lower())


def _decode_decimal(raw: Any, path: str) -> Any:
    if raw is None:
        _required(raw, path)
    if not isinstance(raw, str):
        raise _FieldError(path, raw, "decimals must be JSON strings")
    try:
        number = Decimal(raw)
    except InvalidOperation:
        raise _FieldError(path, raw, "not a decimal number") from None
    if not number.is_finite():
        raise _FieldError(path, raw, "must be finite")
    return number


def _decode_datetime(raw: Any, path: str) -> Any:
    if raw is None:
        _required(raw, path)
    try:
        moment = datetime.fromisoformat(raw)
    except (TypeError, ValueError):
        raise _FieldError(path, raw, "not an ISO 8601 datetime") from None
    if moment.tzinfo is None:
        raise _FieldError(path, raw, "datetime has no timezone")
    return moment


def _decode_bytes(raw: Any, path: str) -> Any:
    if raw is None:
        _required(raw, path)
    if not isinstance(raw, str) or not _HEX_RE.fullmatch(raw):
        raise _FieldError(path, raw, "not 0x-prefixed hex bytes")
    return bytes.fromhex(raw[2:])


def _decode_bool(raw: Any, path: str) -> Any:
    if raw is None:
        _required(raw, path)
    if not isinstance(raw, bool):
        raise _FieldError(path, raw, "must be a boolean")
    return raw


def _decode_int(raw: Any, path: str) -> Any:
    if raw is None:
        _required(raw, path)
    if isinstance(raw, bool):
        raise _FieldError(path, raw, "must be an integer")
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise _FieldError(path, raw, "must be an integer") from None


def _decode_str(raw: Any, path: str) -> Any:
    if raw is None:
        _required(raw, path)
    if not isinstance(raw, str):
        raise _FieldError(path, raw, "must be a string")
    return raw


_SIMPLE_DECODERS: dict[Any, Decoder] = {
    Address: _decode_address,
    TxHash: _decode_hash,
    Decimal: _decode_decimal,
    datetime: _decode_datetime,
    bytes: _decode_bytes,
    bool: _decode_bool,
    int: _decode_int,
    str: _decode_str,
}


@cache
def _decoder(tp: Any) -> Decoder:
    """The decoding function of a type (`decode_value`'s rules), built once per type."""
    inner = _optional_inner(tp)
    if inner is not None:
        inner_decoder = _decoder(inner)

        def optional(raw: Any, path: str) -> Any:
            return None if raw is None else inner_decoder(raw, path)

        return optional
    simple = _SIMPLE_DECODERS.get(tp)
    if simple is not None:
        return simple
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        allowed = ", ".join(str(m.value) for m in tp)

        def member(raw: Any, path: str) -> Any:
            if raw is None:
                _required(raw, path)
            try:
                return tp(raw)
            except ValueError:
                raise _FieldError(path, raw, f"expected one of {allowed}") from None

        return member
    if dataclasses.is_dataclass(tp):
        body = _dataclass_decoder(tp)

        def nested(raw: Any, path: str) -> Any:
            if raw is None:
                _required(raw, path)
            return body(raw, path)

        return nested
    origin = typing.get_origin(tp)
    if origin is dict:
        key_tp, value_tp = typing.get_args(tp)

        def mapping(raw: Any, path: str) -> Any:
            if raw is None:
                _required(raw, path)
            if not isinstance(raw, dict):
                raise _FieldError(path, raw, "must be an object")
            key_decoder, value_decoder = _decoder(key_tp), _decoder(value_tp)
            return {key_decoder(k, path): value_decoder(v, f"{path}[{k}]") for k, v in raw.items()}

        return mapping
    if origin in (list, tuple):
        (item_tp, *_) = typing.get_args(tp)

        def sequence(raw: Any, path: str) -> Any:
            if raw is None:
                _required(raw, path)
            if not isinstance(raw, list):
                raise _FieldError(path, raw, "must be an array")
            item_decoder = _decoder(item_tp)
            items = [item_decoder(v, f"{path}[{i}]") for i, v in enumerate(raw)]
            return tuple(items) if origin is tuple else items

        return sequence

    def unsupported(raw: Any, path: str) -> Any:
        if raw is None:
            _required(raw, path)
        raise _FieldError(path, raw, f"unsupported type {tp!r}")

    return unsupported


_ABSENT = object()  # a field the payload does not carry (None is a value)


@cache
def _dataclass_decoder(cls: type) -> Decoder:
    """Decoder of a dataclass body: unknown fields refused, missing ones defaulted or refused.
    The field decoders are resolved on first use (a type may refer to itself)."""
    fields = _fields(cls)
    known = frozenset(name for name, _, _ in fields)
    # (name, its decoder, whether it has a default, ".name" for a nested path)
    compiled: list[tuple[str, Decoder, bool, str]] = []

    def decode(raw: Any, path: str) -> Any:
        if not isinstance(raw, dict):
            raise _FieldError(path or cls.__name__, raw, "must be an object")
        if not known.issuperset(raw):
            unknown = sorted(set(raw) - known)
            raise _FieldError(
                f"{path}.{unknown[0]}" if path else unknown[0], raw[unknown[0]], "unknown field"
            )
        if not compiled:
            compiled.extend(
                (name, _decoder(ftp), has_default, f".{name}") for name, ftp, has_default in fields
            )
        kwargs = {}
        for name, field_decoder, has_default, dotted in compiled:
            value = raw.get(name, _ABSENT)
            if value is _ABSENT:
                if has_default:
                    continue
                raise _FieldError(path + dotted if path else name, None, "is missing")
            kwargs[name] = field_decoder(value, path + dotted if path else name)
        return cls(**kwargs)

    return decode


def _decode_dataclass(cls: type, raw: Any, path: str) -> Any:
    return _dataclass_decoder(cls)(raw, path)


def encode_event(event: DomainEvent) -> tuple[str, dict[str, Any]]:
    """-> (event_type, externally tagged payload)."""
    cls = type(event)
    try:
        body = _dataclass_encoder(cls)(event, "")
    except _FieldError as error:
        raise PayloadError(event.event_type, error.path, error.value, error.rule) from None
    return event.event_type, {cls.variant(): body}


def decode_event(event_type: str, payload: Any) -> DomainEvent:
    cls = EVENT_CLASSES.get(event_type)
    if cls is None:
        raise PayloadError(event_type, "event_type", event_type, "unknown event type")
    variant = cls.variant()
    if not isinstance(payload, dict) or len(payload) != 1 or variant not in payload:
        raise PayloadError(event_type, "payload", payload, f"expected {{{variant!r}: {{...}}}}")
    try:
        return _dataclass_decoder(cls)(payload[variant], "")
    except _FieldError as error:
        raise PayloadError(event_type, error.path, error.value, error.rule) from None

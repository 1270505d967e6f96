"""Exact JSON for aggregate states (the cached `AggregateState` rows).

A state is a `Lifecycle` around frozen dataclasses, enums, Decimals, datetimes and containers
of them. Each value is tagged with its kind; dataclasses and enums name their class, and only
classes of `inventory.domain` are ever built back (nothing is imported or called from a name
the database holds otherwise). A failed lifecycle is not cached (`Unencodable`).

`STATE_VERSION` fingerprints the domain's source: a state cached by another version of the
domain code (a deploy that changes how events fold) is ignored and folded again from the log.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import importlib
from datetime import datetime
from decimal import Decimal
from functools import cache
from importlib import resources
from typing import Any

from inventory.domain.lifecycle import Lifecycle, LifecycleStatus

DOMAIN_PACKAGE = "inventory.domain"


class Unencodable(Exception):
    """The state holds something this codec does not cache (the caller folds the log)."""


@cache
def state_version() -> str:
    digest = hashlib.sha256()
    package = resources.files(DOMAIN_PACKAGE)
    for entry in sorted(package.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".py"):
            digest.update(entry.name.encode())
            digest.update(entry.read_bytes())
    return digest.hexdigest()[:32]


def _class_name(cls: type) -> str:
    if not cls.__module__.startswith(DOMAIN_PACKAGE) or "<" in cls.__qualname__:
        raise Unencodable(f"{cls.__module__}.{cls.__qualname__} is not a domain class")
    return f"{cls.__module__}:{cls.__qualname__}"


@cache
def _class_of(name: str) -> type:
    module_name, _, qualname = name.partition(":")
    if module_name != DOMAIN_PACKAGE and not module_name.startswith(DOMAIN_PACKAGE + "."):
        raise Unencodable(f"{name} is not a domain class")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        raise Unencodable(f"{name} does not exist") from None
    if (
        not isinstance(obj, type)
        or not (dataclasses.is_dataclass(obj) or issubclass(obj, enum.Enum))
        or not obj.__module__.startswith(DOMAIN_PACKAGE)
    ):
        raise Unencodable(f"{name} is not a dataclass or an enum of the domain")
    return obj


@cache
def _dataclass_shape(cls: type) -> tuple[str, tuple[str, ...]]:
    """A dataclass's encoded name and its (init) field names, once per class."""
    names = []
    for f in dataclasses.fields(cls):
        if not f.init:
            raise Unencodable(f"{cls.__name__}.{f.name} is not an init field")
        names.append(f.name)
    return _class_name(cls), tuple(names)


def encode_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | str) and not isinstance(value, enum.Enum):
        return value
    if isinstance(value, enum.Enum):
        return {"e": _class_name(type(value)), "v": encode_value(value.value)}
    if isinstance(value, int):
        return {"i": str(value)}
    if isinstance(value, Decimal):
        return {"d": str(value)}
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise Unencodable(f"naive datetime {value!r}")
        return {"t": value.isoformat()}
    if isinstance(value, bytes):
        return {"b": value.hex()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        name, field_names = _dataclass_shape(type(value))
        return {"c": name, "f": {f: encode_value(getattr(value, f)) for f in field_names}}
    if isinstance(value, tuple):
        return {"u": [encode_value(v) for v in value]}
    if isinstance(value, list):
        return {"l": [encode_value(v) for v in value]}
    if isinstance(value, frozenset):
        return {"s": sorted((encode_value(v) for v in value), key=repr)}
    if isinstance(value, dict):
        return {"m": [[encode_value(k), encode_value(v)] for k, v in value.items()]}
    raise Unencodable(f"cannot cache a {type(value).__name__}")


def decode_value(data: Any) -> Any:
    if data is None or isinstance(data, bool | str):
        return data
    if not isinstance(data, dict) or len(data) not in (1, 2):
        raise Unencodable(f"not an encoded value: {data!r}")
    if "e" in data:
        return _class_of(data["e"])(decode_value(data["v"]))
    if "c" in data:
        cls = _class_of(data["c"])
        return cls(**{name: decode_value(v) for name, v in data["f"].items()})
    ((tag, body),) = data.items()
    if tag == "i":
        return int(body)
    if tag == "d":
        return Decimal(body)
    if tag == "t":
        return datetime.fromisoformat(body)
    if tag == "b":
        return bytes.fromhex(body)
    if tag == "u":
        return tuple(decode_value(v) for v in body)
    if tag == "l":
        return [decode_value(v) for v in body]
    if tag == "s":
        return frozenset(decode_value(v) for v in body)
    if tag == "m":
        return {decode_value(k): decode_value(v) for k, v in body}
    raise Unencodable(f"unknown tag {tag!r}")


def encode_state(state: Lifecycle[Any]) -> dict[str, Any]:
    """A live or uninitialized lifecycle as JSON; raises `Unencodable` for a failed one."""
    if state.is_failed:
        raise Unencodable("a failed lifecycle is folded from the log, not cached")
    data = {"status": state.status.value, "value": encode_value(state.value)}
    if state.ledger:
        data["ledger"] = sorted(state.ledger)
    return data


def decode_state(data: dict[str, Any]) -> Lifecycle[Any]:
    status = LifecycleStatus(data["status"])
    if status is LifecycleStatus.FAILED:
        raise Unencodable("a failed lifecycle is never cached")
    return Lifecycle(
        status, value=decode_value(data["value"]), ledger=frozenset(data.get("ledger", ()))
    )

"""JSON input parsed with bounds: the HTTP API's request bodies and the ingest command's lines.

`json.loads` recurses once per nesting level; with the recursion limit the web3 stack sets
(100,000), a body nested tens of thousands of levels deep overflows the C stack and kills the
process. So the nesting depth is measured first, without recursion, and anything deeper than
`MAX_DEPTH` (real records are two or three levels deep) is refused before `json.loads` runs.

Also refused, each with a `JsonRefused(field, rule)` naming where: text that is not UTF-8, a
key given twice in one object (which value was meant?), and a lone UTF-16 surrogate anywhere
(it cannot be stored in PostgreSQL nor written back in an error message).
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

MAX_DEPTH = 64

# A JSON string, escapes included (unrolled: no backtracking per character).
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_SURROGATE = re.compile("[\ud800-\udfff]")
# The only way a surrogate gets into parsed text (raw ones fail the UTF-8 decode): an escape.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class JsonRefused(ValueError):
    """Input refused before or while parsing: `field` says where ("body", "fills[2].symbol",
    a key path), `rule` why."""

    def __init__(self, field: str, rule: str) -> None:
        self.field = field
        self.rule = rule
        super().__init__(f"{field}: {rule}")


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(key)


def nesting_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in `text`, brackets inside strings ignored.

    Where `text` is not valid JSON the count may be off, but only after the point at which
    `json.loads` stops with an error, so it never lets a deeper document through to it.
    """
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    if not brackets:
        return 0
    return max(accumulate(1 if ch in "[{" else -1 for ch in brackets))


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise _DuplicateKey(key)
        found[key] = value
    return found


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _path(parent: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return key if parent == "body" else f"{parent}.{key}"


def _printable(key: str) -> str:
    return key.encode("utf-8", "backslashreplace").decode("utf-8")


def _surrogate_check(value: Any, where: str) -> None:
    """No lone surrogate in any key or text (the depth is already bounded)."""
    if isinstance(value, str):
        if _SURROGATE.search(value):
            raise JsonRefused(where, "must not contain a lone UTF-16 surrogate (\\ud800-\\udfff)")
    elif isinstance(value, dict):
        for key, item in value.items():
            if _SURROGATE.search(key):
                raise JsonRefused(
                    _path(where, _printable(key)),
                    "a key must not contain a lone UTF-16 surrogate (\\ud800-\\udfff)",
                )
            _surrogate_check(item, _path(where, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _surrogate_check(item, _path(where, index))


def loads(data: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse one JSON document within the bounds above; `JsonRefused` otherwise."""
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise JsonRefused("body", f"not UTF-8 (byte {error.start})") from None
    else:
        text = data
    if _SURROGATE.search(text):
        raise JsonRefused("body", "must not contain a lone UTF-16 surrogate (\\ud800-\\udfff)")
    depth = nesting_depth(text)
    if depth > max_depth:
        raise JsonRefused("body", f"nested {depth} levels deep: at most {max_depth} allowed")
    try:
        value = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except _DuplicateKey as error:
        raise JsonRefused(_printable(error.key), "is given twice in one object") from None
    except json.JSONDecodeError as error:
        raise JsonRefused(
            "body", f"not JSON: {error.msg} at line {error.lineno} column {error.colno}"
        ) from None
    except ValueError as error:  # an integer of more than 4300 digits, NaN, Infinity
        raise JsonRefused("body", f"not JSON: {error}") from None
    if _SURROGATE_ESCAPE.search(text):  # a pair is fine; find a lone one, and where
        _surrogate_check(value, "body")
    return value

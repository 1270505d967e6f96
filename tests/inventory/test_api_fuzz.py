"""Fuzzing the HTTP API with generated bodies: valid-shaped records with fields replaced by
wrong types, huge numbers and odd text (NUL, lone surrogates, any plane), missing and extra
fields, duplicate keys, deep nesting, and bytes that are not JSON at all.

Whatever arrives, the answer is never a 5xx, an error is JSON, and a refusal (4xx) leaves the
event log and the pools exactly as they were. Runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import eth_account  # noqa: F401 - as in the service: raises the recursion limit to 100,000
import pytest
from django.db import transaction
from django.test import Client
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from inventory.models import Event, InventoryPool
from inventory.services import api_token_create

pytestmark = pytest.mark.django_db

FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Characters that broke storage or error messages, weighted up; then anything, surrogates too.
SPECIAL = st.sampled_from(["\x00", "\ud800", "\udfff", "\ufeff", "\u202e", "\n", "é", "😀", '"'])
ODD_TEXT = st.text(
    alphabet=st.one_of(
        SPECIAL,
        st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()),
    ),
    max_size=40,
)
HUGE = st.sampled_from([2**63, -(2**63) - 1, 10**30, 10**40, 2**64, 10**4000, -1])
WILD: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | HUGE
    | st.floats(allow_nan=False, allow_infinity=False)
    | ODD_TEXT
    | st.sampled_from(["", " ", "0", "-1", "1e5", "NaN", "12.5", "buy", "AAPL", "USDC", "\x00"])
    | st.sampled_from(["0001-01-01T00:00:00Z", "9999-12-31T23:59:59+00:00", "2026-03-02"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ODD_TEXT, inner, max_size=3),
    max_leaves=6,
)

HEX = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)


def onchain_fill() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "tx_hash": HEX.map(lambda h: "0x" + h),
            "log_index": st.integers(0, 5),
            "block_number": st.integers(1, 10**6),
            "symbol": st.sampled_from(["AAPL", "MSFT"]),
            "direction": st.sampled_from(["buy", "sell"]),
            "quantity": st.sampled_from(["1", "12.5", "0.000001"]),
            "price_usdc": st.sampled_from(["100", "190.25"]),
            "block_timestamp": st.sampled_from(
                ["2026-03-02T15:00:00+00:00", "2025-11-30T09:30:00Z"]
            ),
        }
    )


def hedge_place() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "symbol": st.sampled_from(["AAPL", "MSFT"]),
            "execution_id": st.integers(0, 50),
            "direction": st.sampled_from(["buy", "sell"]),
            "shares": st.sampled_from(["1", "12.5"]),
        }
    )


def hedge_fill() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "symbol": st.sampled_from(["AAPL", "MSFT"]),
            "shares_filled": st.sampled_from(["1", "12.5"]),
            "direction": st.sampled_from(["buy", "sell"]),
            "broker_order_id": st.sampled_from(["order-1", "b7"]),
            "price_cents": st.integers(1, 30_000),
            "broker_timestamp": st.just("2026-03-02T15:01:00+00:00"),
        }
    )


def hedge_fail() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"symbol": st.sampled_from(["AAPL", "MSFT"]), "error": st.sampled_from(["x", "late"])}
    )


@st.composite
def edited(draw: st.DrawFn, value: Any) -> Any:
    """A near miss of a valid value: odd characters inserted into text, an integer moved to
    the edges of what a chain or a database holds."""
    if isinstance(value, str):
        at = draw(st.integers(0, len(value)))
        return value[:at] + draw(st.one_of(SPECIAL, ODD_TEXT)) + value[at:]
    if isinstance(value, int):
        return draw(st.one_of(HUGE, st.sampled_from([2**63 - 1, 2**31, -value - 1])))
    return draw(WILD)


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    """A valid-shaped record with some fields replaced, dropped, or added."""
    body = dict(draw(base))
    names = sorted(body)
    for name in draw(st.lists(st.sampled_from(names), max_size=3, unique=True)):
        action = draw(st.sampled_from(["edit", "replace", "drop"]))
        if action == "drop":
            body.pop(name)
        elif action == "edit":
            body[name] = draw(edited(body[name]))
        else:
            body[name] = draw(WILD)
    for key, value in draw(st.dictionaries(ODD_TEXT, WILD, max_size=2)).items():
        body[key] = value
    return body


def plain(value: Any) -> bytes:
    return json.dumps(value).encode("utf-8")  # lone surrogates travel as \\udXXX escapes


@st.composite
def duplicated(draw: st.DrawFn, value: Any) -> bytes:
    """`value` with one of its keys given again (or an object with a key given twice)."""
    if not isinstance(value, dict) or not value:
        value = {"symbol": value}
    key = draw(st.sampled_from(sorted(value)))
    text = plain(value)[:-1].decode() + f", {json.dumps(key)}: {json.dumps(draw(WILD))}" + "}"
    return text.encode("utf-8")


@st.composite
def nested(draw: st.DrawFn, value: Any) -> bytes:
    """`value` inside arrays: at the bound, just past it, far past it (once a crash)."""
    depth = draw(st.sampled_from([63, 65, 1000, 70_000, 100_000]))
    return b"[" * depth + plain(value) + b"]" * depth


@st.composite
def truncated(draw: st.DrawFn, value: Any) -> bytes:
    text = plain(value)
    return text[: draw(st.integers(0, max(0, len(text) - 1)))]


def encoded(value: Any) -> st.SearchStrategy[bytes]:
    """`value` as JSON, sometimes broken: a duplicated key, deep nesting, truncation."""
    return st.one_of(st.just(plain(value)), duplicated(value), nested(value), truncated(value))


RAW = st.one_of(
    st.binary(max_size=60),
    ODD_TEXT.map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.sampled_from(
        [b"", b"null", b"[]", b"{}", b"1e999", b"NaN", b'"x"', b"{" * 5000, b"\xef\xbb\xbf{}"]
    ),
)


def body_for(base: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[bytes]:
    shaped = st.one_of(mutated(base), base, mutated(base), WILD)
    return st.one_of(shaped.flatmap(encoded), RAW)


BATCH = st.lists(st.one_of(onchain_fill(), mutated(onchain_fill())), max_size=4).map(
    lambda fills: {"fills": fills}
)

EXECUTION_IDS = st.one_of(
    st.integers(0, 50).map(str), st.sampled_from(["-1", str(10**30), "x", "1.5", "%00", "2e3"])
)


@pytest.fixture
def api(db):
    token = api_token_create(name="fuzz", scopes=["ingest", "read"])[1]
    client = Client()

    def send(method: str, path: str, body: bytes | None = None):
        headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
        if method == "get":
            return client.get(f"/api/v1{path}", **headers)
        return client.post(f"/api/v1{path}", data=body, content_type="application/json", **headers)

    return send


def state() -> tuple[int, list[tuple[Any, ...]]]:
    pools = InventoryPool.objects.order_by("key").values_list(
        "key", "onchain_available", "onchain_inflight", "offchain_available", "offchain_inflight"
    )
    return Event.objects.count(), list(pools)


@contextmanager
def isolated() -> Iterator[None]:
    """One example's writes, rolled back after it: every example (and hypothesis's replays of
    it) starts from the same database."""
    with transaction.atomic():
        yield
        transaction.set_rollback(True)


def check(api, method: str, path: str, body: bytes | None = None) -> None:
    before = state()
    response = api(method, path, body)
    assert response.status_code < 500, (path, body, response.content[:500])
    if response.status_code >= 400:
        # A path no route matches is Django's own 404 page; every API error is JSON.
        if response.status_code != 404 or "json" in response["Content-Type"]:
            assert response["Content-Type"].startswith("application/json"), response.content
            assert "detail" in response.json()
        assert state() == before, (path, body, response.content[:500])


@FUZZ
@given(body=body_for(onchain_fill()))
@example(body=b"[" * 70_000 + b"]" * 70_000)  # once a segfault
@example(body=b'{"symbol": "AA\\udfffPL"}')  # once an HTML 500
def test_fuzz_onchain_fill(api, body):
    with isolated():
        check(api, "post", "/fills/onchain", body)


@FUZZ
@given(body=st.one_of(st.one_of(BATCH, mutated(BATCH)).flatmap(encoded), RAW))
def test_fuzz_onchain_fill_batch(api, body):
    with isolated():
        check(api, "post", "/fills/onchain/batch", body)


SYMBOLS = st.from_regex(r"[A-Z]{3,8}", fullmatch=True)


@FUZZ
@given(symbol=SYMBOLS, execution_id=st.integers(0, 10**6), data=st.data())
def test_fuzz_hedges(api, symbol, execution_id, data):
    """A fresh symbol with a recorded fill, so that the placement, the fill and the failure
    each get as far as the base record allows (a pending execution to fill or fail)."""
    with isolated():
        bought = {"symbol": symbol, "direction": "buy", "quantity": "12.5"}
        fill = {**data.draw(onchain_fill()), **bought}
        assert api("post", "/fills/onchain", json.dumps(fill).encode()).status_code == 201
        placement = {"symbol": symbol, "execution_id": execution_id, "direction": "sell"}
        placement["shares"] = "12.5"
        if data.draw(st.booleans()):  # placed as it should be: fill and fail get further
            assert api("post", "/hedges", plain(placement)).status_code == 201
        else:
            check(api, "post", "/hedges", data.draw(body_for(st.just(placement))))
        path_id = data.draw(st.one_of(st.just(str(execution_id)), EXECUTION_IDS))
        filled = {**data.draw(hedge_fill()), "symbol": symbol, "direction": "sell"}
        filled["shares_filled"] = "12.5"
        check(api, "post", f"/hedges/{path_id}/fill", data.draw(body_for(st.just(filled))))
        failed = {**data.draw(hedge_fail()), "symbol": symbol}
        check(api, "post", f"/hedges/{path_id}/fail", data.draw(body_for(st.just(failed))))


@FUZZ
@given(
    query=st.dictionaries(
        st.sampled_from(["status", "kind", "pool", "limit", "other"]),
        st.one_of(ODD_TEXT, HUGE.map(str)),
        max_size=3,
    ),
    operation=st.one_of(st.integers(-5, 10**30).map(str), ODD_TEXT),
)
def test_fuzz_reads(api, query, operation):
    from urllib.parse import quote, urlencode

    raw = {key: value.encode("utf-8", "surrogatepass") for key, value in query.items()}
    with isolated():
        check(api, "get", "/operations?" + urlencode(raw))
        check(
            api, "get", "/operations/" + quote(operation.encode("utf-8", "surrogatepass"), safe="")
        )
        check(api, "get", "/pools")

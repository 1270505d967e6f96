"""HTTP API of fills and hedges (/api/v1/): status codes, idempotent replays, tokens and
scopes, and nothing written on any error (events counted before and after)."""

from __future__ import annotations

import json
import sys
import time
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from inventory.auth import TOKEN_CACHE_TTL_S
from inventory.domain import events as ev
from inventory.models import ApiToken, Event, InventoryPool
from inventory.services import api_token_create, api_token_revoke

pytestmark = pytest.mark.django_db

TX = "0x" + "ab" * 32
TX2 = "0x" + "cd" * 32


def fill(**changes):
    body = {
        "tx_hash": TX,
        "log_index": 0,
        "block_number": 100,
        "symbol": "AAPL",
        "direction": "buy",
        "quantity": "12.5",
        "price_usdc": "190.25",
        "block_timestamp": "2026-03-02T15:00:00+00:00",
    }
    body.update(changes)
    return body


@pytest.fixture
def ingest_token(db):
    return api_token_create(name="desk", scopes=["ingest"])[1]


@pytest.fixture
def read_token(db):
    return api_token_create(name="reader", scopes=["read"])[1]


@pytest.fixture
def post(client, ingest_token):
    def send(path, body, token=ingest_token, **extra):
        headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
        data = body if isinstance(body, str | bytes) else json.dumps(body)
        return client.post(
            f"/api/v1{path}", data=data, content_type="application/json", **headers, **extra
        )

    return send


def events() -> int:
    return Event.objects.count()


# --- onchain fills ----------------------------------------------------------------------------


def test_onchain_fill_is_recorded_with_201(post):
    response = post("/fills/onchain", fill())
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["duplicate"] is False
    stored = Event.objects.get(id=body["event_ids"][-1]).domain_event()
    assert isinstance(stored, ev.OnChainOrderFilled)
    assert stored.amount == Decimal("12.5")
    assert stored.price_usdc == Decimal("190.25")
    assert stored.direction.value == "Buy"
    assert InventoryPool.objects.filter(key="AAPL").exists()


def test_identical_onchain_fill_replay_is_200_duplicate_and_writes_nothing(post):
    assert post("/fills/onchain", fill()).status_code == 201
    before = events()
    response = post("/fills/onchain", fill(quantity="12.50"))
    assert response.status_code == 200
    assert response.json() == {"duplicate": True, "event_ids": []}
    assert events() == before


def test_same_trade_id_with_different_quantity_is_409_and_writes_nothing(post):
    assert post("/fills/onchain", fill()).status_code == 201
    before = events()
    response = post("/fills/onchain", fill(quantity="13"))
    assert response.status_code == 409
    body = response.json()
    assert body["reason"] == "replay_conflict"
    assert body["errors"][0]["field"] == "trade_id"
    assert "different" in body["errors"][0]["rule"]
    assert events() == before


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"quantity": "0"}, "quantity"),
        ({"quantity": "-1"}, "quantity"),
        ({"quantity": 1.5}, "quantity"),
        ({"quantity": "1e3"}, "quantity"),
        ({"price_usdc": "abc"}, "price_usdc"),
        ({"tx_hash": "0x12"}, "tx_hash"),
        ({"log_index": -1}, "log_index"),
        ({"log_index": "3"}, "log_index"),
        ({"block_number": True}, "block_number"),
        ({"symbol": "USDC"}, "symbol"),
        ({"symbol": "AA PL"}, "symbol"),
        ({"direction": "Buy"}, "direction"),
        ({"block_timestamp": "2026-03-02T15:00:00"}, "block_timestamp"),
        ({"block_timestamp": "yesterday"}, "block_timestamp"),
        ({"unexpected": 1}, "unexpected"),
    ],
)
def test_a_bad_field_is_400_naming_it_and_writes_nothing(post, changes, field):
    before = events()
    response = post("/fills/onchain", fill(**changes))
    assert response.status_code == 400, response.content
    errors = response.json()["errors"]
    assert [error["field"] for error in errors] == [field]
    assert errors[0]["rule"]
    assert events() == before


def test_every_bad_field_gets_its_own_error(post):
    body = fill(quantity="0", tx_hash="nope")
    del body["price_usdc"]
    response = post("/fills/onchain", body)
    assert response.status_code == 400
    fields = sorted(error["field"] for error in response.json()["errors"])
    assert fields == ["price_usdc", "quantity", "tx_hash"]


def test_the_domain_rule_is_the_error_message(post):
    response = post("/fills/onchain", fill(symbol="USDC"))
    (error,) = response.json()["errors"]
    assert error == {
        "field": "symbol",
        "rule": "USDC is the cash pool, not an equity",
        "value": "USDC",
    }


def test_malformed_json_is_400(post):
    before = events()
    response = post("/fills/onchain", "{not json")
    assert response.status_code == 400
    assert events() == before


# --- batches ----------------------------------------------------------------------------------


def test_batch_records_each_fill_with_a_result_per_item(post):
    fills = [fill(log_index=i) for i in range(3)]
    response = post("/fills/onchain/batch", {"fills": fills})
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["recorded"] == 3
    assert body["duplicates"] == 0
    assert [item["index"] for item in body["results"]] == [0, 1, 2]
    assert Event.objects.filter(event_type=ev.OnChainOrderFilled.event_type_name()).count() == 3


def test_batch_replay_is_200_all_duplicates_and_writes_nothing(post):
    fills = [fill(log_index=i) for i in range(3)]
    assert post("/fills/onchain/batch", {"fills": fills}).status_code == 201
    before = events()
    response = post("/fills/onchain/batch", {"fills": fills})
    assert response.status_code == 200
    body = response.json()
    assert body["recorded"] == 0
    assert body["duplicates"] == 3
    assert all(item["duplicate"] for item in body["results"])
    assert events() == before


def test_batch_with_one_conflicting_fill_is_409_and_records_none_of_it(post):
    assert post("/fills/onchain", fill(log_index=1)).status_code == 201
    before = events()
    fills = [fill(log_index=0), fill(log_index=1, quantity="99"), fill(log_index=2)]
    response = post("/fills/onchain/batch", {"fills": fills})
    assert response.status_code == 409
    body = response.json()
    assert body["reason"] == "replay_conflict"
    assert [error["field"] for error in body["errors"]] == ["fills[1].trade_id"]
    assert events() == before


def test_batch_repeating_a_trade_id_with_different_content_is_409(post):
    fills = [fill(log_index=0), fill(log_index=0, price_usdc="1")]
    response = post("/fills/onchain/batch", {"fills": fills})
    assert response.status_code == 409
    assert events() == 0


def test_batch_repeating_an_identical_fill_records_it_once(post):
    response = post("/fills/onchain/batch", {"fills": [fill(), fill()]})
    assert response.status_code == 201
    body = response.json()
    assert (body["recorded"], body["duplicates"]) == (1, 1)
    assert [item["duplicate"] for item in body["results"]] == [False, True]


def test_batch_with_a_bad_field_is_400_naming_the_item(post):
    fills = [fill(log_index=0), fill(log_index=1, quantity="x")]
    response = post("/fills/onchain/batch", {"fills": fills})
    assert response.status_code == 400
    assert [e["field"] for e in response.json()["errors"]] == ["fills[1].quantity"]
    assert events() == 0


def test_empty_batch_is_400(post):
    assert post("/fills/onchain/batch", {"fills": []}).status_code == 400


# --- hedges -----------------------------------------------------------------------------------


def hedge(**changes):
    body = {"symbol": "AAPL", "execution_id": 7, "direction": "sell", "shares": "12.5"}
    body.update(changes)
    return body


def hedge_fill(**changes):
    body = {
        "symbol": "AAPL",
        "shares_filled": "12.5",
        "direction": "sell",
        "broker_order_id": "ord-1",
        "price_cents": 19010,
        "broker_timestamp": "2026-03-02T15:00:05Z",
    }
    body.update(changes)
    return body


@pytest.fixture
def position(post):
    assert post("/fills/onchain", fill()).status_code == 201


def test_hedge_place_fill_round_trip(post, position):
    placed = post("/hedges", hedge())
    assert placed.status_code == 201, placed.content
    filled = post("/hedges/7/fill", hedge_fill())
    assert filled.status_code == 201, filled.content
    event = Event.objects.get(id=filled.json()["event_ids"][-1]).domain_event()
    assert isinstance(event, ev.OffChainOrderFilled)
    assert event.execution_id == 7
    assert event.price_cents == 19010
    assert event.shares_filled == Decimal("12.5")


def test_hedge_placement_replay_is_duplicate_and_different_content_is_409(post, position):
    assert post("/hedges", hedge()).status_code == 201
    before = events()
    replay = post("/hedges", hedge())
    assert replay.status_code == 200
    assert replay.json()["duplicate"] is True
    conflict = post("/hedges", hedge(shares="3"))
    assert conflict.status_code == 409
    assert conflict.json()["reason"] == "replay_conflict"
    assert events() == before


def test_hedge_below_threshold_is_409_with_the_reason(post):
    assert post("/fills/onchain", fill(quantity="0.5")).status_code == 201
    before = events()
    response = post("/hedges", hedge(shares="0.5"))
    assert response.status_code == 409
    body = response.json()
    assert body["reason"] == "ThresholdNotMet"
    assert "threshold" in body["rule"]
    assert events() == before


def test_hedge_for_a_symbol_without_position_is_409(post):
    response = post("/hedges", hedge(symbol="MSFT"))
    assert response.status_code == 409
    assert response.json()["reason"] == "NotInitialized"
    assert events() == 0
    assert not InventoryPool.objects.exists()


def test_hedge_fill_with_wrong_execution_id_is_409_and_writes_nothing(post, position):
    assert post("/hedges", hedge()).status_code == 201
    before = events()
    response = post("/hedges/8/fill", hedge_fill())
    assert response.status_code == 409
    assert response.json()["reason"] == "ExecutionIdMismatch"
    assert events() == before


def test_hedge_fill_replay_is_duplicate_and_different_content_is_409(post, position):
    assert post("/hedges", hedge()).status_code == 201
    assert post("/hedges/7/fill", hedge_fill()).status_code == 201
    before = events()
    replay = post("/hedges/7/fill", hedge_fill())
    assert replay.status_code == 200
    assert replay.json()["duplicate"] is True
    conflict = post("/hedges/7/fill", hedge_fill(price_cents=1))
    assert conflict.status_code == 409
    assert conflict.json()["differences"] == {"price_cents": {"recorded": "19010", "given": "1"}}
    assert events() == before


def test_hedge_fail_clears_the_pending_hedge_and_replays_as_duplicate(post, position):
    assert post("/hedges", hedge()).status_code == 201
    failed = post("/hedges/7/fail", {"symbol": "AAPL", "error": "rejected by broker"})
    assert failed.status_code == 201, failed.content
    before = events()
    assert post("/hedges/7/fail", {"symbol": "AAPL", "error": "rejected by broker"}).json()[
        "duplicate"
    ]
    different = post("/hedges/7/fail", {"symbol": "AAPL", "error": "other"})
    assert different.status_code == 409
    assert events() == before
    # the pending execution is cleared: a new hedge may be placed
    assert post("/hedges", hedge(execution_id=8)).status_code == 201


def test_hedge_fail_without_pending_hedge_is_409(post, position):
    before = events()
    response = post("/hedges/7/fail", {"symbol": "AAPL", "error": "x"})
    assert response.status_code == 409
    assert response.json()["reason"] == "NoPendingExecution"
    assert events() == before


def test_hedge_bad_fields_are_400(post, position):
    before = events()
    response = post("/hedges", hedge(execution_id=-1, shares="-2", direction="short"))
    assert response.status_code == 400
    fields = sorted(e["field"] for e in response.json()["errors"])
    assert fields == ["direction", "execution_id", "shares"]
    response = post("/hedges/x/fill", hedge_fill())
    assert response.status_code == 400
    assert events() == before


def test_negative_execution_id_in_the_path_is_400(post, position):
    response = post("/hedges/-3/fail", {"symbol": "AAPL", "error": "x"})
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "execution_id"


# --- tokens and scopes ------------------------------------------------------------------------


def test_missing_token_is_401(post):
    response = post("/fills/onchain", fill(), token=None)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    assert events() == 0


def test_unknown_token_is_401(post):
    assert post("/fills/onchain", fill(), token="rbt_nope").status_code == 401


def test_revoked_token_is_401(post, ingest_token):
    api_token_revoke(name="desk")
    assert post("/fills/onchain", fill(), token=ingest_token).status_code == 401
    assert events() == 0


def _token_queries(queries) -> int:
    return sum(1 for query in queries if "inventory_apitoken" in query["sql"])


def test_a_token_in_use_is_read_from_the_database_once_a_second(client, read_token):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {read_token}"}
    with CaptureQueriesContext(connection) as first:
        assert client.get("/api/v1/pools", **headers).status_code == 200
    started = time.monotonic()
    with CaptureQueriesContext(connection) as following:
        for _ in range(5):
            assert client.get("/api/v1/pools", **headers).status_code == 200
    assert _token_queries(first.captured_queries) == 1
    if time.monotonic() - started < TOKEN_CACHE_TTL_S:  # a loaded machine may take longer
        assert _token_queries(following.captured_queries) == 0


def test_a_token_revoked_elsewhere_is_refused_within_a_second(client, read_token):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {read_token}"}
    assert client.get("/api/v1/pools", **headers).status_code == 200  # now cached
    # Revoked by another process (the console): this process's cache is not told.
    ApiToken.objects.filter(name="reader").update(revoked_at=timezone.now())
    revoked = time.monotonic()
    deadline = revoked + 10
    while client.get("/api/v1/pools", **headers).status_code == 200:
        assert time.monotonic() < deadline, "the revoked token is still accepted"
        time.sleep(0.05)
    assert time.monotonic() - revoked <= TOKEN_CACHE_TTL_S + 1.0  # plus one request


def test_token_without_the_scope_is_403(post, read_token):
    response = post("/fills/onchain", fill(), token=read_token)
    assert response.status_code == 403
    assert response.json()["scope"] == "ingest"
    assert events() == 0


def test_reads_need_the_read_scope(client, ingest_token, read_token):
    denied = client.get("/api/v1/pools", HTTP_AUTHORIZATION=f"Bearer {ingest_token}")
    assert denied.status_code == 403
    allowed = client.get("/api/v1/pools", HTTP_AUTHORIZATION=f"Bearer {read_token}")
    assert allowed.status_code == 200


def test_oversized_body_is_413_and_writes_nothing(post, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2000
    fills = [fill(log_index=i) for i in range(20)]
    response = post("/fills/onchain/batch", {"fills": fills})
    assert response.status_code == 413
    assert events() == 0


def test_openapi_describes_every_endpoint(client):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in (
        "/api/v1/fills/onchain",
        "/api/v1/fills/onchain/batch",
        "/api/v1/hedges",
        "/api/v1/hedges/{execution_id}/fill",
        "/api/v1/hedges/{execution_id}/fail",
        "/api/v1/pools",
        "/api/v1/operations",
        "/api/v1/operations/{operation_id}",
    ):
        assert path in paths, path
    schema = response.json()["components"]["schemas"]["OnchainFillIn"]["properties"]
    assert schema["quantity"]["type"] == "string"


def test_docs_page_serves_swagger_from_our_static_files(client):
    response = client.get("/api/v1/docs")
    assert response.status_code == 200
    assert b"/static/ninja/swagger-ui-bundle.js" in response.content


def test_openapi_documents_the_error_answers(client):
    paths = client.get("/api/v1/openapi.json").json()["paths"]
    responses = paths["/api/v1/fills/onchain"]["post"]["responses"]
    assert {"200", "201", "400", "401", "403", "409", "413"} <= set(responses)
    (scheme,) = paths["/api/v1/pools"]["get"]["security"][0]
    schemes = client.get("/api/v1/openapi.json").json()["components"]["securitySchemes"]
    assert schemes[scheme]["scheme"] == "bearer"


def test_same_trade_id_under_another_symbol_is_409_and_writes_nothing(post):
    assert post("/fills/onchain", fill()).status_code == 201
    before = events()
    response = post("/fills/onchain", fill(symbol="MSFT"))
    assert response.status_code == 409
    assert response.json()["reason"] == "replay_conflict"
    assert events() == before


def test_batch_above_the_limit_is_400_naming_fills(post):
    fills = [fill(log_index=i) for i in range(1001)]
    response = post("/fills/onchain/batch", {"fills": fills})
    assert response.status_code == 400
    assert [e["field"] for e in response.json()["errors"]] == ["fills"]
    assert events() == 0


def test_the_fill_carries_its_block_number_and_a_different_block_is_409(post):
    response = post("/fills/onchain", fill(block_number=1234))
    assert response.status_code == 201
    stored = Event.objects.get(id=response.json()["event_ids"][-1]).domain_event()
    assert stored.block_number == 1234
    before = events()
    assert post("/fills/onchain", fill(block_number=1235)).status_code == 409
    assert events() == before


# --- a hedge fill matches its placement; a placement matches the net position (issue 19) -----


def test_hedge_fill_in_the_other_direction_is_400_naming_the_field(post, position):
    assert post("/hedges", hedge(shares="3")).status_code == 201
    before = events()
    response = post("/hedges/7/fill", hedge_fill(direction="buy", shares_filled="9999990"))
    assert response.status_code == 400, response.content
    [error] = response.json()["errors"]
    assert (error["field"], error["value"]) == ("direction", "Buy")
    assert "Sell" in error["rule"]
    assert events() == before


def test_hedge_fill_beyond_the_placed_shares_is_400_naming_both(post, position):
    assert post("/hedges", hedge(shares="3")).status_code == 201
    before = events()
    response = post("/hedges/7/fill", hedge_fill(shares_filled="3.000000000000000001"))
    assert response.status_code == 400, response.content
    [error] = response.json()["errors"]
    assert (error["field"], error["value"]) == ("shares_filled", "3.000000000000000001")
    assert "the 3 shares placed" in error["rule"]
    assert events() == before


def test_a_partial_hedge_fill_ends_the_execution_and_leaves_the_rest_in_the_net(post, position):
    assert post("/hedges", hedge(shares="12")).status_code == 201
    assert post("/hedges/7/fill", hedge_fill(shares_filled="5")).status_code == 201
    # the execution is over: no second fill, and the rest (12.5 - 5) is hedged by a new one
    second = post("/hedges/7/fill", hedge_fill(shares_filled="7", broker_order_id="o2"))
    assert second.status_code == 409
    again = post("/hedges", hedge(execution_id=8, shares="7.5"))
    assert again.status_code == 201, again.content


def test_a_hedge_that_grows_the_net_position_is_400(post, position):
    before = events()
    response = post("/hedges", hedge(direction="buy", shares="12"))
    assert response.status_code == 400, response.content
    [error] = response.json()["errors"]
    assert (error["field"], error["value"]) == ("direction", "Buy")
    assert "12.5" in error["rule"]
    assert events() == before


def test_a_placement_far_beyond_the_net_position_is_400(post, position, settings):
    settings.HEDGE_PLACEMENT_TOLERANCE_SHARES = Decimal("0.5")
    before = events()
    response = post("/hedges", hedge(shares="13.000000000000000001"))
    assert response.status_code == 400, response.content
    [error] = response.json()["errors"]
    assert error["field"] == "shares"
    assert "12.5" in error["rule"] and "0.5" in error["rule"] and "at most 13" in error["rule"]
    assert events() == before
    # within |net| + tolerance it is placed
    assert post("/hedges", hedge(shares="13")).status_code == 201


def _calls(names: set[str], action) -> dict[str, int]:
    """How many times each function of `names` (of this repository's modules) is called while
    `action` runs in this thread (observed with a profiler hook; nothing is replaced)."""
    calls = dict.fromkeys(names, 0)

    def profile(frame, event, arg):
        if event == "call" and frame.f_code.co_name in calls:
            calls[frame.f_code.co_name] += 1

    sys.setprofile(profile)
    try:
        action()
    finally:
        sys.setprofile(None)
    return calls


def test_each_field_of_a_batch_is_validated_once(post):
    fills = [fill(log_index=i) for i in range(3)]
    checks = {"parse_amount", "validate_count", "_positive", "_tx_hash", "_non_negative_int"}
    answers = []
    calls = _calls(checks, lambda: answers.append(post("/fills/onchain/batch", {"fills": fills})))
    # quantity and price_usdc, log_index and block_number: once per fill by the schema (ninja
    # ran them four times per fill), and not again by the service (whose own checks of the
    # same fields ran once more).
    assert calls == {
        "parse_amount": 6,
        "validate_count": 6,
        "_positive": 0,
        "_tx_hash": 0,
        "_non_negative_int": 0,
    }
    assert answers[0].status_code == 201 and answers[0].json()["recorded"] == 3


def test_each_field_of_a_single_fill_is_validated_once(post):
    checks = {"parse_amount", "validate_count", "_positive", "_tx_hash", "_non_negative_int"}
    answers = []
    calls = _calls(checks, lambda: answers.append(post("/fills/onchain", fill())))
    assert answers[0].status_code == 201
    assert calls == {
        "parse_amount": 2,
        "validate_count": 2,
        "_positive": 0,
        "_tx_hash": 0,
        "_non_negative_int": 0,
    }

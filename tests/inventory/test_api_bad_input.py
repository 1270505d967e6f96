"""Input that once crashed the API or got stored: deep nesting, duplicate keys, NUL and lone
surrogates, numbers and timestamps no chain or brokerage produces. Each is a 400 (or a rejected
ingest line) naming the field, and nothing is written. Runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import sys

import pytest

from inventory.domain import events as ev
from inventory.models import Event, InventoryPool
from inventory.services import api_token_create
from tests.inventory.test_api import fill
from tests.service.support import ROOT, child_command, run_django_child

pytestmark = pytest.mark.django_db

DEEP = 70_000


def hedge_fill(**changes):
    body = {
        "symbol": "AAPL",
        "shares_filled": "12.5",
        "direction": "sell",
        "broker_order_id": "order-1",
        "price_cents": 19025,
        "broker_timestamp": "2026-03-02T15:01:00+00:00",
    }
    body.update(changes)
    return body


@pytest.fixture
def ingest_token(db):
    return api_token_create(name="desk", scopes=["ingest"])[1]


@pytest.fixture
def post(client, ingest_token):
    def send(path, body, token=ingest_token):
        data = body if isinstance(body, str | bytes) else json.dumps(body)
        return client.post(
            f"/api/v1{path}",
            data=data,
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {token}",
        )

    return send


def log_and_pools():
    pools = sorted(
        InventoryPool.objects.values_list("key", "onchain_available", "offchain_available")
    )
    return Event.objects.count(), pools


def refused(response, field):
    """A JSON 400 naming `field`."""
    assert response.status_code == 400, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    fields = [error["field"] for error in body["errors"]]
    assert field in fields, body
    return body


# --- deep nesting: the process survives ------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_body_nested_70000_deep_is_400_and_the_process_survives():
    """In a fresh process with web3's recursion limit (importing eth_account raises it to
    100,000): before the bound, json.loads overflowed the C stack and the process died (139)."""
    token = api_token_create(name="desk", scopes=["ingest"])[1]
    code = f"""
import sys, json
import eth_account  # noqa: F401 - raises the recursion limit as in the service
assert sys.getrecursionlimit() >= 100_000, sys.getrecursionlimit()
from django.test import Client
from django.test.utils import setup_test_environment
setup_test_environment()  # the test client's host is allowed
client = Client()
deep = "[" * {DEEP} + "]" * {DEEP}
response = client.post("/api/v1/fills/onchain", data=deep, content_type="application/json",
                       HTTP_AUTHORIZATION="Bearer {token}")
print(json.dumps({{"status": response.status_code, "body": response.json()}}))
after = client.post("/api/v1/fills/onchain", data=json.dumps({json.dumps(fill())}),
                    content_type="application/json", HTTP_AUTHORIZATION="Bearer {token}")
print(json.dumps({{"status": after.status_code}}))
"""
    result = run_django_child(code, timeout_s=120)
    assert result.returncode == 0, result.stderr[-2000:]
    first, second = [json.loads(line) for line in result.stdout.strip().splitlines()[-2:]]
    assert first["status"] == 400
    assert first["body"]["errors"] == [
        {"field": "body", "rule": f"nested {DEEP} levels deep: at most 64 allowed"}
    ]
    assert second["status"] == 201  # still answering, and a good record still goes in
    assert Event.objects.filter(event_type=ev.OnChainOrderFilled.event_type_name()).count() == 1


@pytest.mark.django_db(transaction=True)
def test_ingest_of_a_line_nested_70000_deep_rejects_that_line_and_records_the_rest(tmp_path):
    import subprocess

    path = tmp_path / "records.jsonl"
    good = json.dumps({"type": "onchain_fill", **fill()})
    path.write_text(good + "\n" + "[" * DEEP + "]" * DEEP + "\n")
    argv, env = child_command("")
    result = subprocess.run(
        [sys.executable, "manage.py", "ingest", str(path), "--no-progress", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stderr[-2000:]  # some line rejected; no crash (139)
    summary = json.loads(result.stdout)
    assert summary["accepted"] == 1
    assert summary["rejected"] == [
        {"line": 2, "reasons": [f"nested {DEEP} levels deep: at most 64 allowed"]}
    ]


def test_nesting_within_the_bound_is_parsed_as_before(post):
    # 64 levels: refused by the schema (a field error), not by the parser.
    body = {"fills": [fill()]}
    inner: object = "x"
    for _ in range(60):
        inner = [inner]
    body["fills"][0]["symbol"] = inner
    response = refused(post("/fills/onchain/batch", body), "fills[0].symbol")
    assert "nested" not in json.dumps(response)


# --- duplicate keys, NUL, lone surrogates -----------------------------------------------------


def test_a_key_given_twice_is_400_naming_it(post):
    before = log_and_pools()
    text = json.dumps(fill())[:-1] + ', "quantity": "99"}'
    body = refused(post("/fills/onchain", text), "quantity")
    assert body["errors"][0]["rule"] == "is given twice in one object"
    assert log_and_pools() == before


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/hedges/1/fill", hedge_fill(broker_order_id="ord\u0000er"), "broker_order_id"),
        ("/hedges/1/fail", {"symbol": "AAPL", "error": "broken\u0000"}, "error"),
    ],
)
def test_a_nul_character_in_text_is_400_naming_the_field(post, path, body, field):
    assert post("/fills/onchain", fill()).status_code == 201
    assert (
        post(
            "/hedges", {"symbol": "AAPL", "execution_id": 1, "direction": "sell", "shares": "12.5"}
        ).status_code
        == 201
    )
    before = log_and_pools()
    found = refused(post(path, body), field)
    assert "NUL" in found["errors"][0]["rule"]
    assert log_and_pools() == before


@pytest.mark.parametrize(
    ("path", "text", "field"),
    [
        # valid field, stored as is before
        ("/hedges/1/fail", '{"symbol": "AAPL", "error": "broken \\ud800"}', "error"),
        # a field that fails validation: its value was echoed and the answer was an HTML 500
        (
            "/fills/onchain",
            json.dumps(fill())[:-1].replace('"AAPL"', '"AA\\udfffPL"') + "}",
            "symbol",
        ),
        ("/fills/onchain/batch", '{"fills": [{"tx_hash": "\\ud800"}]}', "fills[0].tx_hash"),
        ("/fills/onchain", '{"\\ud800": 1}', "\\ud800"),
    ],
)
def test_a_lone_surrogate_is_a_json_400_naming_the_field(post, path, text, field):
    assert post("/fills/onchain", fill()).status_code == 201
    assert (
        post(
            "/hedges", {"symbol": "AAPL", "execution_id": 1, "direction": "sell", "shares": "12.5"}
        ).status_code
        == 201
    )
    before = log_and_pools()
    found = refused(post(path, text), field)
    assert "surrogate" in found["errors"][0]["rule"]
    assert log_and_pools() == before


def test_a_body_that_is_not_utf8_is_400(post):
    body = refused(post("/fills/onchain", b'{"symbol": "\xff"}'), "body")
    assert "UTF-8" in body["errors"][0]["rule"]


def test_text_longer_than_500_characters_is_400(post):
    assert post("/fills/onchain", fill()).status_code == 201
    assert (
        post(
            "/hedges", {"symbol": "AAPL", "execution_id": 1, "direction": "sell", "shares": "12.5"}
        ).status_code
        == 201
    )
    refused(post("/hedges/1/fail", {"symbol": "AAPL", "error": "x" * 501}), "error")


# --- numbers and timestamps at the edges ------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"log_index": 10**30}, "log_index"),
        ({"block_number": 10**40}, "block_number"),
        ({"block_number": 2**63}, "block_number"),
        ({"block_timestamp": "0001-01-01T00:00:00+00:00"}, "block_timestamp"),
        ({"block_timestamp": "2014-12-31T23:59:59+00:00"}, "block_timestamp"),
        ({"block_timestamp": "9999-12-31T00:00:00+00:00"}, "block_timestamp"),
    ],
)
def test_onchain_fill_numbers_and_timestamps_beyond_the_chain_are_400(post, changes, field):
    before = log_and_pools()
    refused(post("/fills/onchain", fill(**changes)), field)
    refused(post("/fills/onchain/batch", {"fills": [fill(**changes)]}), f"fills[0].{field}")
    assert log_and_pools() == before


def test_the_largest_int64_counts_are_accepted(post):
    response = post("/fills/onchain", fill(log_index=2**63 - 1, block_number=2**63 - 1))
    assert response.status_code == 201, response.content


def test_hedge_ids_and_prices_beyond_int64_are_400(post):
    big = 10**30
    hedge = {"symbol": "AAPL", "execution_id": big, "direction": "sell", "shares": "1"}
    refused(post("/hedges", hedge), "execution_id")
    refused(post(f"/hedges/{big}/fill", hedge_fill()), "execution_id")
    refused(post(f"/hedges/{big}/fail", {"symbol": "AAPL", "error": "x"}), "execution_id")
    refused(post("/hedges/1/fill", hedge_fill(price_cents=big)), "price_cents")
    refused(
        post("/hedges/1/fill", hedge_fill(broker_timestamp="0001-01-01T00:00:00Z")),
        "broker_timestamp",
    )
    assert Event.objects.count() == 0


def test_the_same_bounds_apply_to_ingest_lines(tmp_path):
    from django.core.management import CommandError, call_command

    lines = [
        json.dumps({"type": "onchain_fill", **fill(log_index=10**30)}),
        json.dumps({"type": "onchain_fill", **fill(block_timestamp="0001-01-01T00:00:00Z")}),
        json.dumps({"type": "onchain_fill", **fill()})[:-1] + ', "log_index": 1}',
        '{"type": "hedge_failed", "symbol": "AAPL", "execution_id": 1, "error": "a\\u0000"}',
        '{"type": "hedge_failed", "symbol": "AAPL", "execution_id": 1, "error": "\\udc00"}',
    ]
    path = tmp_path / "records.jsonl"
    path.write_text("\n".join(lines) + "\n")
    out = __import__("io").StringIO()
    with pytest.raises(CommandError):
        call_command("ingest", str(path), "--no-progress", "--json", stdout=out)
    rejected = {item["line"]: item["reasons"] for item in json.loads(out.getvalue())["rejected"]}
    assert rejected[1][0].startswith("log_index: must be at most")
    assert rejected[2][0].startswith("block_timestamp: must not be before 2015")
    assert rejected[3] == ["log_index: is given twice in one object"]
    assert rejected[4] == ["error: must not contain a NUL character"]
    assert "surrogate" in rejected[5][0] and rejected[5][0].startswith("error")
    assert Event.objects.count() == 0


# --- reads ------------------------------------------------------------------------------------


def test_read_parameters_beyond_the_bounds_are_400(client):
    token = api_token_create(name="reader", scopes=["read"])[1]
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    assert client.get(f"/api/v1/operations/{10**30}", **auth).status_code == 400
    assert client.get("/api/v1/operations", {"pool": "AA\x00PL"}, **auth).status_code == 400
    assert client.get("/api/v1/operations", {"pool": "x" * 100}, **auth).status_code == 400
    ok = client.get("/api/v1/operations", {"pool": "AAPL"}, **auth)
    assert ok.status_code == 200 and ok.json() == []


def test_the_403_message_names_the_scope_by_its_value(post):
    reader = api_token_create(name="reader", scopes=["read"])[1]
    response = post("/fills/onchain", fill(), token=reader)
    assert response.status_code == 403
    assert response.json()["detail"] == "token 'reader' lacks the 'ingest' scope"


def test_ingest_file_with_a_line_that_is_not_utf8_rejects_only_that_line(tmp_path):
    from django.core.management import CommandError, call_command

    path = tmp_path / "records.jsonl"
    good = json.dumps({"type": "onchain_fill", **fill()}).encode()
    second = json.dumps({"type": "onchain_fill", **fill(log_index=1)}).encode()
    path.write_bytes(
        good + b"\n" + b'{"type": "onchain_fill", "symbol": "\xff"}\n' + second + b"\n"
    )
    out = __import__("io").StringIO()
    with pytest.raises(CommandError):
        call_command("ingest", str(path), "--no-progress", "--json", stdout=out)
    summary = json.loads(out.getvalue())
    assert summary["accepted"] == 2
    assert summary["rejected"] == [{"line": 2, "reasons": ["not UTF-8 (byte 36)"]}]
    assert Event.objects.filter(event_type=ev.OnChainOrderFilled.event_type_name()).count() == 2


def test_an_unreachable_database_is_a_json_503_with_retry_after():
    """The only 503: the database cannot be reached (a closed port), not contention."""
    import os
    import subprocess

    code = """
import django, json
django.setup()
from django.test import Client
from django.test.utils import setup_test_environment
setup_test_environment()
response = Client().post("/api/v1/fills/onchain", data="{}", content_type="application/json",
                         HTTP_AUTHORIZATION="Bearer rbt_x")
print(json.dumps({"status": response.status_code, "retry": response.get("Retry-After"),
                  "body": response.json()}))
"""
    env = dict(os.environ)
    env["DATABASE_URL"] = "postgres://postgres@127.0.0.1:9/nothing"
    env["DJANGO_SETTINGS_MODULE"] = "rebalancer.settings"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["status"] == 503
    assert answer["retry"] == "5"
    assert answer["body"]["reason"] == "unavailable"


@pytest.mark.django_db(transaction=True)
def test_ingest_from_stdin_rejects_bad_lines_alone_like_a_file():
    import subprocess

    good = json.dumps({"type": "onchain_fill", **fill()}).encode()
    lines = [b'{"symbol": "\xff"}', b"[" * DEEP + b"]" * DEEP, good]
    argv, env = child_command("")
    result = subprocess.run(
        [sys.executable, "manage.py", "ingest", "-", "--no-progress", "--json"],
        cwd=ROOT,
        env=env,
        input=b"\n".join(lines) + b"\n",
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    assert summary["accepted"] == 1
    assert summary["rejected"] == [
        {"line": 1, "reasons": ["not UTF-8 (byte 12)"]},
        {"line": 2, "reasons": [f"nested {DEEP} levels deep: at most 64 allowed"]},
    ]


def test_brackets_and_quotes_inside_strings_do_not_count_as_nesting(post):
    # 100 brackets and escaped quotes inside a text: an ordinary field error, not "nested".
    body = refused(post("/fills/onchain", fill(symbol='\\"' + "[{" * 100)), "symbol")
    assert "nested" not in json.dumps(body)

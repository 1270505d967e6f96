"""Management commands of the inventory app: api_token, asset and ingest."""

from __future__ import annotations

import io
import json
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from inventory.domain import events as ev
from inventory.models import ApiToken, Asset, Event
from inventory.selectors import api_token_authenticate

pytestmark = pytest.mark.django_db

TX = "0x" + "ab" * 32
TOKEN = "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB"
VAULT = "0x" + "11" * 32


def run(*args, stdin=None):
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


# --- api_token --------------------------------------------------------------------------------


def test_api_token_create_prints_the_token_once_and_stores_only_its_hash(capsys):
    out = run("api_token", "create", "desk", "--scope", "ingest", "--scope", "read")
    secret = out.strip()
    assert secret.startswith("rbt_")
    token = ApiToken.objects.get(name="desk")
    assert token.scope_list == ["ingest", "read"]
    assert secret not in (token.token_hash, token.prefix)
    assert api_token_authenticate(secret=secret) == token
    assert "not shown again" in capsys.readouterr().err


def test_api_token_list_shows_names_and_scopes_never_secrets():
    secret = run("api_token", "create", "desk", "--scope", "ingest").strip()
    table = run("api_token", "list")
    assert "desk" in table and "ingest" in table
    assert secret not in table
    rows = json.loads(run("api_token", "list", "--json"))
    assert [(row["name"], row["scopes"], row["revoked_at"]) for row in rows] == [
        ("desk", ["ingest"], None)
    ]
    assert secret not in json.dumps(rows)


def test_api_token_revoke_stops_the_token():
    secret = run("api_token", "create", "desk", "--scope", "ingest").strip()
    assert "revoked" in run("api_token", "revoke", "desk")
    assert api_token_authenticate(secret=secret) is None
    assert json.loads(run("api_token", "list", "--json"))[0]["revoked_at"] is not None


def test_api_token_errors_are_command_errors():
    run("api_token", "create", "desk", "--scope", "ingest")
    with pytest.raises(CommandError, match="already exists"):
        run("api_token", "create", "desk", "--scope", "read")
    with pytest.raises(CommandError, match="no API token"):
        run("api_token", "revoke", "nobody")
    with pytest.raises(CommandError, match="name"):
        run("api_token", "create", "bad name!", "--scope", "read")
    assert ApiToken.objects.count() == 1


# --- asset ------------------------------------------------------------------------------------


def add_aapl(*extra):
    return run(
        "asset",
        "add",
        "AAPL",
        "--token-address",
        TOKEN,
        "--token-symbol",
        "tAAPL",
        "--vault-id",
        VAULT,
        *extra,
    )


def test_asset_add_and_list():
    assert "registered AAPL" in add_aapl()
    assert "AAPL" in run("asset", "list")
    (row,) = json.loads(run("asset", "list", "--json"))
    assert row["base_symbol"] == "AAPL"
    assert row["token_address"] == TOKEN
    assert row["rebalancing_enabled"] is True


def test_asset_disable_and_enable_are_audited_setting_changes():
    add_aapl()
    before = Event.objects.count()
    assert "disabled" in run("asset", "disable", "AAPL", "--by", "ops")
    assert Asset.objects.get(base_symbol="AAPL").rebalancing_enabled is False
    assert "already disabled" in run("asset", "disable", "AAPL")
    assert "enabled" in run("asset", "enable", "AAPL")
    assert Asset.objects.get(base_symbol="AAPL").rebalancing_enabled is True
    assert Event.objects.count() == before + 2


def test_asset_add_refuses_bad_input_and_writes_nothing():
    with pytest.raises(CommandError, match="token_symbol"):
        run(
            "asset", "add", "AAPL", "--token-address", TOKEN, "--token-symbol", "tMSFT",
            "--vault-id", VAULT,
        )  # fmt: skip
    with pytest.raises(CommandError, match="no asset"):
        run("asset", "enable", "MSFT")
    assert not Asset.objects.exists()
    assert Event.objects.count() == 0


def test_asset_add_disabled():
    add_aapl("--disabled")
    assert Asset.objects.get(base_symbol="AAPL").rebalancing_enabled is False


# --- ingest -----------------------------------------------------------------------------------


def fill_line(log_index, **changes):
    record = {
        "type": "onchain_fill",
        "tx_hash": TX,
        "log_index": log_index,
        "block_number": 7,
        "symbol": "AAPL",
        "direction": "buy",
        "quantity": "2",
        "price_usdc": "190",
        "block_timestamp": "2026-03-02T15:00:00Z",
    }
    record.update(changes)
    return json.dumps(record)


def hedge_lines():
    return [
        json.dumps(
            {"type": "hedge_placed", "symbol": "AAPL", "execution_id": 1, "direction": "sell",
             "shares": "4"}
        ),
        json.dumps(
            {"type": "hedge_filled", "symbol": "AAPL", "execution_id": 1, "direction": "sell",
             "shares_filled": "4", "broker_order_id": "b-1", "price_cents": 19000,
             "broker_timestamp": "2026-03-02T15:00:03+00:00"}
        ),
    ]  # fmt: skip


def write(tmp_path, lines):
    path = tmp_path / "records.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def fills_recorded():
    return Event.objects.filter(event_type=ev.OnChainOrderFilled.event_type_name()).count()


def test_ingest_records_fills_and_hedges_in_order(tmp_path):
    lines = [fill_line(0), fill_line(1), *hedge_lines()]
    out = run("ingest", write(tmp_path, lines), "--no-progress")
    assert "accepted 4, duplicates 0, rejected 0" in out
    assert fills_recorded() == 2
    filled = Event.objects.filter(event_type=ev.OffChainOrderFilled.event_type_name()).get()
    assert filled.domain_event().shares_filled == Decimal("4")
    fills = Event.objects.filter(event_type=ev.OnChainOrderFilled.event_type_name())
    assert {row.domain_event().block_number for row in fills} == {7}


def test_ingest_again_counts_duplicates_and_writes_nothing(tmp_path):
    path = write(tmp_path, [fill_line(0), fill_line(1), *hedge_lines()])
    run("ingest", path, "--no-progress")
    before = Event.objects.count()
    out = run("ingest", path, "--no-progress")
    assert "accepted 0, duplicates 4, rejected 0" in out
    assert Event.objects.count() == before


def test_ingest_rejects_bad_lines_with_numbers_and_reasons_and_exits_1(tmp_path):
    lines = [
        fill_line(0),
        fill_line(1, quantity="-3"),
        "{not json",
        "",
        json.dumps({"type": "trade"}),
        fill_line(2),
        fill_line(0, price_usdc="1"),  # same trade id, different content
        json.dumps({"type": "hedge_failed", "symbol": "AAPL", "execution_id": 9, "error": "x"}),
    ]
    out = io.StringIO()
    with pytest.raises(CommandError) as raised:
        call_command("ingest", write(tmp_path, lines), "--no-progress", "--json", stdout=out)
    assert raised.value.returncode == 1
    summary = json.loads(out.getvalue())
    assert summary["accepted"] == 2
    assert summary["duplicates"] == 0
    rejected = {item["line"]: item["reasons"] for item in summary["rejected"]}
    assert sorted(rejected) == [2, 3, 5, 7, 8]
    assert rejected[2] == ["quantity: must be positive"]
    assert rejected[3][0].startswith("not JSON")
    assert "type" in rejected[5][0]
    assert "trade_id" in rejected[7][0]
    assert rejected[8][0].startswith("NoPendingExecution")
    assert fills_recorded() == 2


def test_ingest_batches_smaller_than_the_file_record_everything(tmp_path):
    lines = [fill_line(i) for i in range(7)]
    out = run("ingest", write(tmp_path, lines), "--batch-size", "3", "--no-progress")
    assert "accepted 7" in out
    assert fills_recorded() == 7


def test_ingest_reads_standard_input(monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(fill_line(0) + "\n" + fill_line(1) + "\n"))
    out = run("ingest", "-", "--no-progress")
    assert "accepted 2" in out


def test_ingest_of_a_missing_file_is_a_command_error(tmp_path):
    with pytest.raises(CommandError, match="cannot read"):
        run("ingest", str(tmp_path / "nope.jsonl"))

"""Contract tests: recorded Broker API bodies (tests/venues/fixtures/alpaca) are parsed by the
production client, and the simulated venue serves the same shapes, so neither can drift.

A shape is the set of keys of each object and, per key, the JSON type and the kind of string
(decimal, timestamp, text); `null` stands for any type (nullable fields). Enumerated fields
must take values the recorded bodies and Alpaca's reference allow.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
from pytest_httpserver import HTTPServer

from tests.venues.http_fakes import FAST_RETRY
from venues.alpaca import (
    AlpacaClient,
    Order,
    Position,
    TokenizationRequest,
    TokenizationStatus,
    TokenizationType,
    Transfer,
    TransferDirection,
    TransferStatus,
    WhitelistStatus,
)
from venues.sim.chain import SimAccount, SimChains
from venues.sim.venue import SimKnobs, SimVenue

FIXTURES = Path(__file__).parent / "fixtures" / "alpaca"
ACCT = "5d5e3f2a-8c1b-4f7e-9a6d-1b2c3d4e5f60"
TRADING = f"/v1/trading/accounts/{ACCT}"
ACCOUNTS = f"/v1/accounts/{ACCT}"

# Values an enumerated field may take (recorded bodies and Alpaca's reference).
ENUMS: dict[str, set[str]] = {
    "direction": {"INCOMING", "OUTGOING"},
    "chain": {"ETH", "Ethereum", "SOL", "BTC"},
    "asset_class": {"us_equity", "crypto"},
    "side": {"buy", "sell", "long", "short"},
    "time_in_force": {"day", "gtc", "ioc", "fok", "opg", "cls"},
    "type": {"mint", "redeem", "market"},
}
DECIMAL = re.compile(r"^-?\d+(\.\d+)?$")
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        if DECIMAL.match(value):
            return "decimal string"
        if TIMESTAMP.match(value):
            return "timestamp"
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def shape_problems(recorded: Any, served: Any, where: str = "$") -> list[str]:
    """How `served` differs in shape from `recorded` (empty when they agree)."""
    if not isinstance(recorded, dict) or not isinstance(served, dict):
        return [f"{where}: recorded {kind(recorded)}, served {kind(served)}"]
    problems = []
    if set(recorded) != set(served):
        missing = sorted(set(recorded) - set(served))
        extra = sorted(set(served) - set(recorded))
        problems.append(f"{where}: keys differ; missing {missing}, not recorded {extra}")
    for key in sorted(set(recorded) & set(served)):
        a, b = kind(recorded[key]), kind(served[key])
        if "null" not in (a, b) and a != b:
            problems.append(f"{where}.{key}: recorded {a}, served {b} ({served[key]!r})")
        if key in ENUMS and isinstance(served[key], str) and served[key] not in ENUMS[key]:
            problems.append(f"{where}.{key}: served {served[key]!r}, not one of {ENUMS[key]}")
    return problems


def test_shape_check_notices_the_trigger_era_transfer() -> None:
    old = {**fixture("transfer"), "relationship": "OUTGOING", "network_fee_amount": "1"}
    del old["direction"], old["network_fee"]

    problems = shape_problems(fixture("transfer"), old)

    assert problems
    assert "missing ['direction', 'network_fee']" in problems[0]


def test_shape_check_notices_a_number_where_alpaca_sends_a_decimal_string() -> None:
    served = {**fixture("transfer"), "amount": 1000}

    assert shape_problems(fixture("transfer"), served) == [
        "$.amount: recorded decimal string, served number (1000)"
    ]


# ---------------------------------------------------------------------------------------------
# The recorded bodies, parsed by the production client.


def make_client(server: HTTPServer) -> AlpacaClient:
    return AlpacaClient(
        base_url=server.url_for(""),
        api_key="key",
        api_secret="secret",
        account_id=ACCT,
        retry=FAST_RETRY,
    )


def test_recorded_account_and_positions_parse(httpserver: HTTPServer) -> None:
    httpserver.expect_request(TRADING + "/account").respond_with_json(fixture("account"))
    httpserver.expect_request(TRADING + "/positions").respond_with_json(fixture("positions"))
    client = make_client(httpserver)

    account = client.account()
    equities = client.equity_positions()

    assert account.cash == Decimal("100250.75")
    # Unsettled T+1 proceeds are cash but cannot leave yet (spec 15.5).
    assert account.cash_withdrawable == Decimal("98000.25")
    assert equities == [
        Position(
            symbol="AAPL",
            asset_class="us_equity",
            qty=Decimal("120.5"),
            qty_available=Decimal("100.5"),
        )
    ]
    assert [p.symbol for p in client.positions()] == ["AAPL", "USDCUSD"]


def test_recorded_clock_and_order_parse(httpserver: HTTPServer) -> None:
    body = fixture("order")
    httpserver.expect_request("/v1/clock").respond_with_json(fixture("clock"))
    httpserver.expect_request(TRADING + "/orders/" + body["id"]).respond_with_json(body)
    client = make_client(httpserver)

    clock = client.clock()
    order: Order = client.get_order(body["id"])

    assert clock.is_open is True
    assert clock.next_close == datetime(2025, 1, 2, 21, 0, tzinfo=UTC)
    assert (order.status, order.filled_qty, order.filled_avg_price) == (
        "filled",
        Decimal("2.5"),
        Decimal("187.123456"),
    )


def test_recorded_tokenization_bodies_parse_skipping_unknown_entries(
    httpserver: HTTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    one = fixture("tokenization_request")
    httpserver.expect_request(
        ACCOUNTS + "/tokenization/requests/" + one["tokenization_request_id"]
    ).respond_with_json(one)
    httpserver.expect_request(ACCOUNTS + "/tokenization/requests").respond_with_json(
        fixture("tokenization_requests")
    )
    client = make_client(httpserver)

    request: TokenizationRequest = client.get_request(one["tokenization_request_id"])
    with caplog.at_level("WARNING", logger="venues.alpaca"):
        listed = client.list_requests()

    assert (request.type, request.status, request.qty) == (
        TokenizationType.MINT,
        TokenizationStatus.PENDING,
        Decimal("12.5"),
    )
    assert [(r.type, r.status, r.network) for r in listed] == [
        (TokenizationType.REDEEM, TokenizationStatus.COMPLETED, "base"),
        (TokenizationType.MINT, TokenizationStatus.FAILED, "base"),
    ]
    skipped = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(skipped) == 3
    assert any("45c6d7e8-9f0a-4b12-8c3d-4e5f6a7b8c9d" in message for message in skipped)


def test_recorded_wallet_bodies_parse(httpserver: HTTPServer) -> None:
    one = fixture("transfer")
    httpserver.expect_request(ACCOUNTS + "/wallets/transfers/" + one["id"]).respond_with_json(one)
    httpserver.expect_request(ACCOUNTS + "/wallets/transfers").respond_with_json(
        fixture("transfers")
    )
    httpserver.expect_request(ACCOUNTS + "/wallets/whitelists").respond_with_json(
        fixture("whitelists")
    )
    httpserver.expect_request(ACCOUNTS + "/wallets").respond_with_json(fixture("wallet"))
    client = make_client(httpserver)

    transfer: Transfer = client.get_transfer(one["id"])
    deposit = client.find_deposit_by_tx(fixture("transfers")[0]["tx_hash"])
    approved = client.whitelist_entry("0x70997970C51812dc3A010C7d01b50e0d17dc79C8")
    rejected = client.whitelist_entry("0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc")

    assert (transfer.direction, transfer.status, transfer.chain) == (
        TransferDirection.OUTGOING,
        TransferStatus.PROCESSING,
        "ethereum",
    )
    assert (transfer.amount, transfer.network_fee, transfer.usd_value) == (
        Decimal(1000),
        Decimal("1.5"),
        Decimal("1000.12"),
    )
    assert deposit is not None and deposit.amount == Decimal(250)
    assert approved is not None and approved.status is WhitelistStatus.APPROVED
    assert rejected is not None and rejected.status is WhitelistStatus.REJECTED
    assert client.deposit_address() == fixture("wallet")["address"]


# ---------------------------------------------------------------------------------------------
# The simulated venue serves the recorded shapes.

FAST = SimKnobs(
    tick_s=0.02,
    mint_delay_s=0.05,
    withdrawal_processing_delay_s=0.02,
    withdrawal_complete_delay_s=0.05,
    order_fill_delay_s=0.02,
    usdc_crypto_position=Decimal(1000),  # a USDC withdrawal spends the USDCUSD position
)


@pytest.fixture
def venue(sim_chains: SimChains) -> Iterator[SimVenue]:
    started = SimVenue(
        knobs=FAST,
        chains=sim_chains,
        equity_symbols=("AAPL",),
        positions={"AAPL": Decimal(100)},
        cash_usd=Decimal(10_000),
    ).start()
    try:
        yield started
    finally:
        errors = started.server.errors()
        started.stop()
        assert errors == []


def raw(venue: SimVenue, method: str, path: str, **kwargs: Any) -> Any:
    token = base64.b64encode(f"{venue.api_key}:{venue.api_secret}".encode()).decode()
    headers = {
        "Authorization": f"Basic {token}",
        "APCA-API-KEY-ID": venue.api_key,
        "APCA-API-SECRET-KEY": venue.api_secret,
    }
    response = requests.request(
        method, venue.alpaca_url + path, headers=headers, timeout=10, **kwargs
    )
    assert response.status_code == 200, response.text
    return response.json()


def eventually(read: Callable[[], Any], done: Callable[[Any], bool], timeout_s: float = 20) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = read()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


def parses(parse: Callable[[Any], Any], row: Any) -> bool:
    try:
        parse(row)
    except (ValueError, TypeError, AttributeError):
        return False
    return True


def assert_same_shape(name: str, served: Any, parse: Callable[[Any], Any] | None = None) -> None:
    """`served` has the recorded shape; for a list, every entry the client reads (`parse`
    succeeds; without `parse`, every entry) has the shape of the first recorded entry."""
    recorded = fixture(name)
    if isinstance(recorded, list):
        assert isinstance(served, list), f"{name}: served {kind(served)}"
        template = recorded[0]
        rows = [row for row in served if parse is None or parses(parse, row)]
        assert rows, f"{name}: nothing served that the client reads"
        problems = [p for row in rows for p in shape_problems(template, row)]
    else:
        problems = shape_problems(recorded, served)
    assert problems == [], f"{name}: " + "; ".join(problems)


@pytest.mark.chain
@pytest.mark.xdist_group("chain")
def test_sim_serves_the_recorded_trading_shapes(venue: SimVenue) -> None:
    trading = f"/v1/trading/accounts/{venue.account_id}"

    accepted = raw(
        venue,
        "POST",
        trading + "/orders",
        json={
            "symbol": "AAPL",
            "qty": "2.5",
            "side": "buy",
            "type": "market",
            "time_in_force": "day",
            "client_order_id": "contract-1",
        },
    )
    filled = eventually(
        lambda: raw(venue, "GET", f"{trading}/orders/{accepted['id']}"),
        lambda order: order["status"] == "filled",
    )

    assert_same_shape("account", raw(venue, "GET", trading + "/account"))
    positions = raw(venue, "GET", trading + "/positions")
    assert_same_shape("positions", positions)
    assert {p["asset_class"] for p in positions} == {"us_equity", "crypto"}
    assert_same_shape("clock", raw(venue, "GET", "/v1/clock"))
    by_client_id = raw(
        venue,
        "GET",
        trading + "/orders:by_client_order_id",
        params={"client_order_id": "contract-1"},
    )

    assert_same_shape("order", accepted)
    assert_same_shape("order", filled)
    assert_same_shape("order", by_client_id)
    assert filled["status"] == "filled"


@pytest.mark.chain
@pytest.mark.xdist_group("chain")
def test_sim_serves_the_recorded_tokenization_shapes(
    venue: SimVenue, scratch_account: SimAccount
) -> None:
    base = f"/v1/accounts/{venue.account_id}/tokenization"

    def ours(row: Any) -> bool:
        return isinstance(row, dict) and row.get("issuer_request_id") == "contract-mint"

    mint = raw(
        venue,
        "POST",
        base + "/mint",
        json={
            "underlying_symbol": "AAPL",
            "qty": "1.5",
            "issuer": "st0x",
            "network": "base",
            "wallet_address": scratch_account.address,
            "issuer_request_id": "contract-mint",
        },
    )
    listed = eventually(
        lambda: raw(venue, "GET", base + "/requests"),
        lambda rows: any(ours(row) for row in rows),
    )
    one = raw(venue, "GET", f"{base}/requests/{mint['tokenization_request_id']}")

    assert_same_shape("tokenization_request", mint)
    assert_same_shape("tokenization_request", one)
    assert_same_shape("tokenization_requests", listed, TokenizationRequest.from_json)
    assert_same_shape("tokenization_request", next(row for row in listed if ours(row)))
    unknown = [row for row in listed if not parses(TokenizationRequest.from_json, row)]
    assert len(unknown) >= 100, "the history of entries of unknown shape is served"


@pytest.mark.chain
@pytest.mark.xdist_group("chain")
def test_sim_serves_the_recorded_wallet_shapes(venue: SimVenue) -> None:
    wallets = f"/v1/accounts/{venue.account_id}/wallets"

    sent = raw(
        venue,
        "POST",
        wallets + "/transfers",
        json={"amount": "100", "asset": "USDC", "address": venue.market_maker.address},
    )
    done = eventually(
        lambda: raw(venue, "GET", f"{wallets}/transfers/{sent['id']}"),
        lambda transfer: transfer["status"] == "COMPLETE",
    )

    assert_same_shape("transfer", sent)
    assert_same_shape("transfer", done)
    assert_same_shape("transfers", raw(venue, "GET", wallets + "/transfers"), Transfer.from_json)
    whitelists = raw(venue, "GET", wallets + "/whitelists")
    assert_same_shape("whitelists", whitelists)
    assert {w["chain"] for w in whitelists} >= {"ETH", "Ethereum"}
    assert_same_shape("wallet", raw(venue, "GET", wallets, params={"asset": "USDC"}))


# ---------------------------------------------------------------------------------------------
# The official SDK (alpaca-py) parses what the simulator serves: every field its models
# require is there, with values its enums accept.


@pytest.mark.chain
@pytest.mark.xdist_group("chain")
def test_alpaca_py_parses_every_simulated_trading_response(venue: SimVenue) -> None:
    from alpaca.broker.models.accounts import TradeAccount as BrokerTradeAccount
    from alpaca.broker.models.trading import Order as BrokerOrder
    from alpaca.trading.models import Clock, Order, Position, TradeAccount

    trading = f"/v1/trading/accounts/{venue.account_id}"
    # `qty` as a JSON number, as alpaca-py sends it (Alpaca accepts both).
    accepted = raw(
        venue,
        "POST",
        trading + "/orders",
        json={
            "symbol": "AAPL",
            "qty": 1.25,
            "side": "buy",
            "type": "market",
            "time_in_force": "day",
            "client_order_id": "sdk-1",
        },
    )
    assert accepted["qty"] == "1.25"
    filled = eventually(
        lambda: raw(venue, "GET", f"{trading}/orders/{accepted['id']}"),
        lambda order: order["status"] == "filled",
    )

    account = raw(venue, "GET", trading + "/account")
    assert BrokerTradeAccount(**account).cash_withdrawable == account["cash"]
    assert TradeAccount(**account).cash == account["cash"]
    positions = [Position(**row) for row in raw(venue, "GET", trading + "/positions")]
    assert {p.symbol for p in positions} == {"AAPL", "USDCUSD"}
    for body in (accepted, filled):
        assert str(Order(**body).id) == body["id"]
        assert BrokerOrder(**body).client_order_id == "sdk-1"
    assert Order(**filled).filled_qty == "1.25"
    assert Clock(**raw(venue, "GET", "/v1/clock")).is_open in (True, False)


def test_alpaca_py_parses_the_recorded_bodies() -> None:
    from alpaca.broker.models.accounts import TradeAccount as BrokerTradeAccount
    from alpaca.trading.models import Clock, Order, Position

    BrokerTradeAccount(**fixture("account"))
    for row in fixture("positions"):
        Position(**row)
    Order(**fixture("order"))
    Clock(**fixture("clock"))


# ---------------------------------------------------------------------------------------------
# Issue 20: the USDCUSD crypto position and conversion orders.


def test_recorded_usdcusd_position_and_conversion_order_parse(httpserver: HTTPServer) -> None:
    httpserver.expect_request(TRADING + "/positions").respond_with_json(fixture("positions"))
    order = fixture("crypto_order")
    httpserver.expect_request(
        TRADING + "/orders:by_client_order_id",
        query_string={"client_order_id": order["client_order_id"]},
    ).respond_with_json(order)
    client = make_client(httpserver)

    (usdc,) = [p for p in client.positions() if p.symbol == "USDCUSD"]
    found = client.find_order_by_client_order_id(order["client_order_id"])

    assert (usdc.asset_class, usdc.qty, usdc.is_equity) == ("crypto", Decimal("5000.123456"), False)
    assert found is not None
    assert (found.symbol, found.notional, found.time_in_force) == ("USDCUSD", Decimal(100), "gtc")
    assert found.filled_qty == Decimal("99.900099900")
    assert found.filled_avg_price == Decimal("1.001")


def test_a_notional_order_not_filled_yet_has_no_qty(httpserver: HTTPServer) -> None:
    accepted = {**fixture("crypto_order"), "qty": None, "filled_qty": "0", "status": "accepted"}
    accepted["filled_avg_price"] = accepted["filled_at"] = None
    httpserver.expect_request(TRADING + "/orders", method="POST").respond_with_json(accepted)

    order = make_client(httpserver).submit_usdc_conversion(
        side="buy", client_order_id=accepted["client_order_id"], notional_usd=Decimal(100)
    )

    assert (order.qty, order.notional, order.is_terminal) == (None, Decimal(100), False)


@pytest.mark.chain
@pytest.mark.xdist_group("chain")
def test_sim_serves_the_recorded_conversion_order_shape(venue: SimVenue) -> None:
    from alpaca.trading.models import Order as SdkOrder

    trading = f"/v1/trading/accounts/{venue.account_id}"
    accepted = raw(
        venue,
        "POST",
        trading + "/orders",
        json={
            "symbol": "USDCUSD",
            "notional": "100",
            "side": "buy",
            "type": "market",
            "time_in_force": "gtc",
            "client_order_id": "contract-usdc-1",
        },
    )
    filled = eventually(
        lambda: raw(venue, "GET", f"{trading}/orders/{accepted['id']}"),
        lambda order: order["status"] == "filled",
    )

    assert_same_shape("crypto_order", filled)
    assert filled["asset_class"] == "crypto" and filled["notional"] == "100"
    SdkOrder(**accepted)
    SdkOrder(**filled)
    positions = raw(venue, "GET", trading + "/positions")
    assert_same_shape("positions", positions)

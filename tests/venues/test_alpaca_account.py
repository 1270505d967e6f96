"""Alpaca trading account, positions, market clock and orders (Broker API, account in the path)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from pytest_httpserver import HTTPServer

from tests.venues.http_fakes import FAST_RETRY, Script
from venues.alpaca import (
    Account,
    AlpacaClient,
    AlpacaMalformedResponse,
    AlpacaNotFound,
    AlpacaOutcomeUnknown,
    AlpacaRateLimited,
    InsufficientPosition,
    InvalidAmount,
    MarketClock,
    OrderNotFound,
    OrderSide,
    Position,
)

TRADING = "/v1/trading/accounts/acct-1"
ORDER_JSON = {
    "id": "ord-1",
    "client_order_id": "ours-1",
    "created_at": "2025-01-02T15:04:05.123456789Z",
    "filled_at": None,
    "symbol": "AAPL",
    "qty": "2.5",
    "filled_qty": "0",
    "filled_avg_price": None,
    "type": "market",
    "side": "buy",
    "time_in_force": "day",
    "status": "accepted",
}


def make_client(server: HTTPServer) -> AlpacaClient:
    return AlpacaClient(
        base_url=server.url_for(""),
        api_key="key-id",
        api_secret="very-secret",
        account_id="acct-1",
        retry=FAST_RETRY,
    )


def test_account_parses_cash_exactly(httpserver: HTTPServer) -> None:
    httpserver.expect_request(
        TRADING + "/account", headers={"APCA-API-KEY-ID": "key-id"}
    ).respond_with_json({"id": "acct-1", "cash": "12345678901234.123456789", "status": "ACTIVE"})

    assert make_client(httpserver).account() == Account(
        id="acct-1", cash=Decimal("12345678901234.123456789")
    )


def test_account_accepts_json_number_without_float_rounding(httpserver: HTTPServer) -> None:
    httpserver.expect_request(TRADING + "/account").respond_with_data(
        '{"id": "acct-1", "cash": 0.1000000000000000055511151231257827}'
    )

    assert make_client(httpserver).account().cash == Decimal("0.1000000000000000055511151231257827")


def test_positions_use_qty_available_and_usdc_is_not_an_equity(httpserver: HTTPServer) -> None:
    httpserver.expect_request(TRADING + "/positions").respond_with_json(
        [
            {"symbol": "AAPL", "asset_class": "us_equity", "qty": "10.5", "qty_available": "7"},
            {"symbol": "USDCUSD", "asset_class": "crypto", "qty": "1200", "qty_available": "1200"},
            {"symbol": "TSLA", "asset_class": "us_equity", "qty": "0", "qty_available": "0"},
        ]
    )
    client = make_client(httpserver)

    everything = client.positions()
    equities = client.equity_positions()

    assert everything[0] == Position(
        symbol="AAPL", asset_class="us_equity", qty=Decimal("10.5"), qty_available=Decimal(7)
    )
    assert [p.symbol for p in everything] == ["AAPL", "USDCUSD", "TSLA"]
    assert [p.symbol for p in equities] == ["AAPL", "TSLA"]


def test_position_without_qty_available_is_malformed(httpserver: HTTPServer) -> None:
    httpserver.expect_request(TRADING + "/positions").respond_with_json(
        [{"symbol": "AAPL", "asset_class": "us_equity", "qty": "10"}]
    )

    with pytest.raises(AlpacaMalformedResponse, match="qty_available"):
        make_client(httpserver).positions()


@pytest.mark.parametrize(
    "body",
    ['{"id": "a"}', '{"id": "a", "cash": "lots"}', '{"id": "a", "cash": "NaN"}', "[]", "oops"],
)
def test_account_malformed(httpserver: HTTPServer, body: str) -> None:
    httpserver.expect_request(TRADING + "/account").respond_with_data(body)

    with pytest.raises(AlpacaMalformedResponse):
        make_client(httpserver).account()


def test_account_id_is_required() -> None:
    with pytest.raises(ValueError, match="ALPACA_ACCOUNT_ID"):
        AlpacaClient(api_key="k", api_secret="s", account_id="")


def test_wrong_account_is_not_found(httpserver: HTTPServer) -> None:
    httpserver.expect_request(TRADING + "/account").respond_with_data(
        '{"code": 40410000, "message": "account not found"}', status=404
    )

    with pytest.raises(AlpacaNotFound) as caught:
        make_client(httpserver).account()

    assert caught.value.status == 404


@pytest.mark.parametrize(("header", "seconds"), [("3", 3.0), ("0.5", 0.5), (None, None)])
def test_rate_limit_carries_retry_after(
    httpserver: HTTPServer, header: str | None, seconds: float | None
) -> None:
    headers = {} if header is None else {"Retry-After": header}
    httpserver.expect_request(TRADING + "/account").respond_with_data(
        '{"message": "too many requests"}', status=429, headers=headers
    )

    with pytest.raises(AlpacaRateLimited) as caught:
        make_client(httpserver).account()

    assert caught.value.status == 429
    assert caught.value.retry_after_s == seconds


def test_clock(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/v1/clock").respond_with_json(
        {
            "timestamp": "2025-01-02T10:00:00.123-05:00",
            "is_open": True,
            "next_open": "2025-01-03T09:30:00-05:00",
            "next_close": "2025-01-02T16:00:00-05:00",
        }
    )

    clock = make_client(httpserver).clock()

    assert clock == MarketClock(
        timestamp=datetime(2025, 1, 2, 15, 0, 0, 123000, tzinfo=UTC),
        is_open=True,
        next_open=datetime(2025, 1, 3, 14, 30, tzinfo=UTC),
        next_close=datetime(2025, 1, 2, 21, 0, tzinfo=UTC),
    )


def test_clock_with_is_open_as_a_string_is_malformed(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/v1/clock").respond_with_json(
        {"timestamp": "2025-01-02T10:00:00Z", "is_open": "true", "next_open": "x"}
    )

    with pytest.raises(AlpacaMalformedResponse, match="is_open"):
        make_client(httpserver).clock()


def test_market_order_posts_the_broker_api_body(httpserver: HTTPServer) -> None:
    httpserver.expect_request(
        TRADING + "/orders",
        method="POST",
        headers={"Idempotency-Key": "ours-1"},  # issue 20: our client_order_id
        json={
            "symbol": "AAPL",
            "qty": "2.5",
            "side": "buy",
            "type": "market",
            "time_in_force": "day",
            "client_order_id": "ours-1",
        },
    ).respond_with_json(ORDER_JSON)

    order = make_client(httpserver).submit_market_order(
        symbol="AAPL", qty=Decimal("2.5"), side=OrderSide.BUY, client_order_id="ours-1"
    )

    assert order.id == "ord-1"
    assert order.qty == Decimal("2.5")
    assert order.filled_avg_price is None
    assert not order.is_terminal


def test_order_by_id_filled(httpserver: HTTPServer) -> None:
    httpserver.expect_request(TRADING + "/orders/ord-1").respond_with_json(
        {
            **ORDER_JSON,
            "status": "filled",
            "filled_qty": "2.5",
            "filled_avg_price": "187.123456",
            "filled_at": "2025-01-02T15:04:06Z",
        }
    )

    order = make_client(httpserver).get_order("ord-1")

    assert order.status == "filled"
    assert order.is_terminal
    assert order.filled_avg_price == Decimal("187.123456")


def test_order_not_found(httpserver: HTTPServer) -> None:
    httpserver.expect_request(TRADING + "/orders/nope").respond_with_data("{}", status=404)

    with pytest.raises(OrderNotFound):
        make_client(httpserver).get_order("nope")


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (403, '{"message": "insufficient qty available for order"}', InsufficientPosition),
        (500, "boom", AlpacaOutcomeUnknown),
        (200, '{"id": "ord-1"}', AlpacaOutcomeUnknown),
    ],
)
def test_market_order_errors_are_mapped_and_never_retried(
    httpserver: HTTPServer, status: int, body: str, error: type[Exception]
) -> None:
    post = Script((status, body))
    httpserver.expect_request(TRADING + "/orders", method="POST").respond_with_handler(post)

    with pytest.raises(error):
        make_client(httpserver).submit_market_order(
            symbol="AAPL", qty=Decimal(1), side="sell", client_order_id="ours-2"
        )

    assert post.count == 1


def test_market_order_of_zero_shares_sends_nothing(httpserver: HTTPServer) -> None:
    with pytest.raises(InvalidAmount):
        make_client(httpserver).submit_market_order(
            symbol="AAPL", qty=Decimal(0), side="buy", client_order_id="ours-3"
        )

    assert len(httpserver.log) == 0


def test_order_found_by_our_client_order_id(httpserver: HTTPServer) -> None:
    httpserver.expect_request(
        TRADING + "/orders:by_client_order_id", query_string={"client_order_id": "ours-1"}
    ).respond_with_json(ORDER_JSON)
    httpserver.expect_request(
        TRADING + "/orders:by_client_order_id", query_string={"client_order_id": "never-sent"}
    ).respond_with_data('{"code": 40410000, "message": "order not found"}', status=404)
    client = make_client(httpserver)

    found = client.find_order_by_client_order_id("ours-1")

    assert found is not None and found.id == "ord-1"
    assert client.find_order_by_client_order_id("never-sent") is None

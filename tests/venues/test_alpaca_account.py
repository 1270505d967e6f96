"""Alpaca account, positions and the lazily fetched account id."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pytest_httpserver import HTTPServer

from tests.venues.http_fakes import FAST_RETRY, Script
from venues.alpaca import Account, AlpacaClient, AlpacaMalformedResponse, Position


def make_client(server: HTTPServer, account_id: str | None = None) -> AlpacaClient:
    return AlpacaClient(
        base_url=server.url_for(""),
        api_key="key-id",
        api_secret="very-secret",
        account_id=account_id,
        retry=FAST_RETRY,
    )


def test_account_parses_cash_exactly(httpserver: HTTPServer) -> None:
    httpserver.expect_request(
        "/v2/account", headers={"APCA-API-KEY-ID": "key-id"}
    ).respond_with_json({"id": "acct-9", "cash": "12345678901234.123456789", "status": "ACTIVE"})

    assert make_client(httpserver).account() == Account(
        id="acct-9", cash=Decimal("12345678901234.123456789")
    )


def test_account_accepts_json_number_without_float_rounding(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/v2/account").respond_with_data(
        '{"id": "acct-9", "cash": 0.1000000000000000055511151231257827}'
    )

    assert make_client(httpserver).account().cash == Decimal("0.1000000000000000055511151231257827")


def test_positions(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/v2/positions").respond_with_json(
        [{"symbol": "AAPL", "qty": "10.5", "side": "long"}, {"symbol": "TSLA", "qty": "0"}]
    )

    assert make_client(httpserver).positions() == [
        Position(symbol="AAPL", qty=Decimal("10.5")),
        Position(symbol="TSLA", qty=Decimal(0)),
    ]


@pytest.mark.parametrize(
    "body",
    ['{"id": "a"}', '{"id": "a", "cash": "lots"}', '{"id": "a", "cash": "NaN"}', "[]", "oops"],
)
def test_account_malformed(httpserver: HTTPServer, body: str) -> None:
    httpserver.expect_request("/v2/account").respond_with_data(body)

    with pytest.raises(AlpacaMalformedResponse):
        make_client(httpserver).account()


def test_account_id_is_fetched_once_when_not_configured(httpserver: HTTPServer) -> None:
    account = Script((200, {"id": "acct-from-api", "cash": "0"}))
    httpserver.expect_request("/v2/account").respond_with_handler(account)
    httpserver.expect_request("/v1/accounts/acct-from-api/wallets/whitelists").respond_with_json([])
    client = make_client(httpserver)

    client.whitelists()
    client.whitelists()

    assert client.account_id() == "acct-from-api"
    assert account.count == 1


def test_configured_account_id_needs_no_account_call(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/v1/accounts/given/wallets/whitelists").respond_with_json([])

    make_client(httpserver, account_id="given").whitelists()

    assert [entry[0].path for entry in httpserver.log] == ["/v1/accounts/given/wallets/whitelists"]

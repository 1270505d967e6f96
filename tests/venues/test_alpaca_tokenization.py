"""Alpaca tokenization client against scripted HTTP responses (edge cases the sim never makes)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from pytest_httpserver import HTTPServer

from tests.venues.http_fakes import FAST_RETRY, Script, threaded_server, tokenization_json
from venues.alpaca import (
    AlpacaApiError,
    AlpacaClient,
    AlpacaMalformedResponse,
    AlpacaNetworkError,
    AlpacaNotFound,
    AlpacaOutcomeUnknown,
    AlpacaPollTimeout,
    AlpacaRateLimited,
    InsufficientPosition,
    InvalidAmount,
    InvalidParameters,
    RequestNotFound,
    TokenizationRequest,
    TokenizationStatus,
    TokenizationType,
    TradingMode,
    UnsupportedAccount,
)

__all__ = ["threaded_server"]

WALLET = "0x" + "11" * 20
MINT = "/v1/accounts/acct-1/tokenization/mint"
REQUESTS = "/v1/accounts/acct-1/tokenization/requests"


def make_client(server: HTTPServer, *, timeout_s: float = 2.0) -> AlpacaClient:
    return AlpacaClient(
        base_url=server.url_for(""),
        api_key="key-id",
        api_secret="very-secret",
        account_id="acct-1",
        timeout_s=timeout_s,
        retry=FAST_RETRY,
    )


def request_mint(client: AlpacaClient) -> TokenizationRequest:
    return client.request_mint(
        underlying_symbol="AAPL",
        quantity_shares=Decimal("100.5"),
        wallet_address=WALLET,
        issuer_request_id="our-1",
    )


def test_request_mint_success(httpserver: HTTPServer) -> None:
    httpserver.expect_request(
        MINT,
        method="POST",
        # Issue 20: the mint keeps `issuer_request_id` in the body and adds the header.
        headers={
            "APCA-API-KEY-ID": "key-id",
            "APCA-API-SECRET-KEY": "very-secret",
            "Idempotency-Key": "our-1",
        },
        json={
            "underlying_symbol": "AAPL",
            "qty": "100.5",
            "issuer": "st0x",
            "network": "base",
            "wallet_address": WALLET,
            "issuer_request_id": "our-1",
        },
    ).respond_with_json(tokenization_json())

    result = request_mint(make_client(httpserver))

    assert result == TokenizationRequest(
        tokenization_request_id="tok-1",
        type=TokenizationType.MINT,
        status=TokenizationStatus.PENDING,
        underlying_symbol="AAPL",
        token_symbol="tAAPL",
        qty=Decimal("100.5"),
        issuer="st0x",
        network="base",
        wallet_address=WALLET,
        issuer_request_id="our-1",
        tx_hash=None,
        fees=None,
        created_at=datetime(2025, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
        updated_at=None,
    )


def test_request_mint_sends_quantity_as_plain_decimal_string(httpserver: HTTPServer) -> None:
    script = Script((200, tokenization_json(qty="0.000000000000000001")))
    httpserver.expect_request(MINT, method="POST").respond_with_handler(script)

    result = make_client(httpserver).request_mint(
        underlying_symbol="AAPL",
        quantity_shares=Decimal("1E-18"),
        wallet_address=WALLET,
        issuer_request_id="our-1",
    )

    assert script.requests[0].get_json()["qty"] == "0.000000000000000001"
    assert result.qty == Decimal("1E-18")


@pytest.mark.parametrize(
    ("status", "body", "error", "attribute", "value"),
    [
        (403, "insufficient qty available", InsufficientPosition, "symbol", "AAPL"),
        (403, '{"message": "no Position to mint from"}', InsufficientPosition, "symbol", "AAPL"),
        (403, "account not enabled for tokenization", UnsupportedAccount, "status", 403),
        (422, '{"message": "qty must be > 0"}', InvalidParameters, "details", None),
        (400, "bad request", InvalidParameters, "details", None),
        (404, "no such account", AlpacaNotFound, "status", 404),
        (429, "slow down", AlpacaRateLimited, "status", 429),
        (409, "conflict", AlpacaApiError, "status", 409),
    ],
)
def test_request_mint_maps_error_status(
    httpserver: HTTPServer,
    status: int,
    body: str,
    error: type[Exception],
    attribute: str,
    value: object,
) -> None:
    httpserver.expect_request(MINT, method="POST").respond_with_data(body, status=status)

    with pytest.raises(error) as caught:
        request_mint(make_client(httpserver))

    assert type(caught.value) is error
    expected = body if value is None else value
    assert getattr(caught.value, attribute) == expected


def test_request_mint_invalid_parameters_carries_body(httpserver: HTTPServer) -> None:
    httpserver.expect_request(MINT, method="POST").respond_with_data(
        '{"message": "wallet_address is invalid"}', status=422
    )

    with pytest.raises(InvalidParameters) as caught:
        request_mint(make_client(httpserver))

    assert "wallet_address is invalid" in caught.value.details


def test_request_mint_5xx_is_outcome_unknown_and_never_retried(httpserver: HTTPServer) -> None:
    script = Script((503, "unavailable"), (200, tokenization_json()))
    httpserver.expect_request(MINT, method="POST").respond_with_handler(script)

    with pytest.raises(AlpacaOutcomeUnknown) as caught:
        request_mint(make_client(httpserver))

    assert caught.value.status == 503
    assert script.count == 1


def test_request_mint_timeout_is_outcome_unknown_and_never_retried(
    threaded_server: HTTPServer,
) -> None:
    script = Script(("sleep", 1.0))
    threaded_server.expect_request(MINT, method="POST").respond_with_handler(script)

    with pytest.raises(AlpacaOutcomeUnknown, match="timeout"):
        request_mint(make_client(threaded_server, timeout_s=0.2))

    assert script.count == 1


def test_request_mint_malformed_json_success_is_outcome_unknown(httpserver: HTTPServer) -> None:
    httpserver.expect_request(MINT, method="POST").respond_with_data("{not json", status=200)

    with pytest.raises(AlpacaOutcomeUnknown):
        request_mint(make_client(httpserver))


def test_request_mint_response_missing_issuer_request_id_is_accepted(
    httpserver: HTTPServer,
) -> None:
    body = tokenization_json()
    del body["issuer_request_id"]
    httpserver.expect_request(MINT, method="POST").respond_with_json(body)

    assert request_mint(make_client(httpserver)).issuer_request_id is None


@pytest.mark.parametrize("quantity", [Decimal(0), Decimal(-1), Decimal("NaN")])
def test_request_mint_non_positive_quantity_sends_nothing(
    httpserver: HTTPServer, quantity: Decimal
) -> None:
    with pytest.raises(InvalidAmount):
        make_client(httpserver).request_mint(
            underlying_symbol="AAPL",
            quantity_shares=quantity,
            wallet_address=WALLET,
            issuer_request_id="our-1",
        )

    assert len(httpserver.log) == 0


def test_request_mint_unreachable_server_is_outcome_unknown() -> None:
    client = AlpacaClient(
        base_url="http://127.0.0.1:9",
        api_key="k",
        api_secret="s",
        account_id="acct-1",
        retry=FAST_RETRY,
    )

    with pytest.raises((AlpacaOutcomeUnknown, AlpacaNetworkError)):
        request_mint(client)


def test_list_requests_passes_filters_and_parses_each(httpserver: HTTPServer) -> None:
    httpserver.expect_request(
        REQUESTS,
        method="GET",
        query_string={"type": "redeem", "status": "completed", "underlying_symbol": "AAPL"},
    ).respond_with_json(
        [
            tokenization_json(type="redeem", status="completed", tx_hash="0xaa", fees="0.01"),
            tokenization_json(tokenization_request_id="tok-2", type="redeem", status="completed"),
        ]
    )

    result = make_client(httpserver).list_requests(
        type=TokenizationType.REDEEM,
        status=TokenizationStatus.COMPLETED,
        underlying_symbol="AAPL",
    )

    assert [r.tokenization_request_id for r in result] == ["tok-1", "tok-2"]
    assert result[0].fees == Decimal("0.01")
    assert result[0].tx_hash == "0xaa"


def test_list_requests_without_filters_sends_no_query(httpserver: HTTPServer) -> None:
    httpserver.expect_request(REQUESTS, query_string="").respond_with_json([])

    assert make_client(httpserver).list_requests() == []


@pytest.mark.parametrize("body", ["not json", '{"requests": []}', "null"])
def test_list_requests_malformed_body_is_malformed_response(
    httpserver: HTTPServer, body: str
) -> None:
    httpserver.expect_request(REQUESTS).respond_with_data(body, status=200)

    with pytest.raises(AlpacaMalformedResponse):
        make_client(httpserver).list_requests()


def test_list_requests_retries_5xx_then_succeeds(httpserver: HTTPServer) -> None:
    script = Script((502, "bad gateway"), (500, "oops"), (200, [tokenization_json()]))
    httpserver.expect_request(REQUESTS).respond_with_handler(script)

    result = make_client(httpserver).list_requests()

    assert [r.tokenization_request_id for r in result] == ["tok-1"]
    assert script.count == 3


def test_list_requests_gives_up_after_configured_attempts(httpserver: HTTPServer) -> None:
    script = Script((503, "down"))
    httpserver.expect_request(REQUESTS).respond_with_handler(script)

    with pytest.raises(AlpacaApiError) as caught:
        make_client(httpserver).list_requests()

    assert caught.value.status == 503
    assert script.count == FAST_RETRY.attempts


def test_list_requests_retries_timeout_then_succeeds(threaded_server: HTTPServer) -> None:
    script = Script(("sleep", 0.6), (200, [tokenization_json()]))
    threaded_server.expect_request(REQUESTS).respond_with_handler(script)

    result = make_client(threaded_server, timeout_s=0.2).list_requests()

    assert len(result) == 1
    assert script.count == 2


def test_list_requests_timeouts_exhausted_is_network_error(threaded_server: HTTPServer) -> None:
    script = Script(("sleep", 0.5))
    threaded_server.expect_request(REQUESTS).respond_with_handler(script)

    with pytest.raises(AlpacaNetworkError, match="timeout"):
        make_client(threaded_server, timeout_s=0.1).list_requests()

    assert script.count == FAST_RETRY.attempts


def test_list_requests_4xx_is_not_retried(httpserver: HTTPServer) -> None:
    script = Script((400, "bad"))
    httpserver.expect_request(REQUESTS).respond_with_handler(script)

    with pytest.raises(AlpacaApiError):
        make_client(httpserver).list_requests()

    assert script.count == 1


def test_list_requests_skips_entries_it_does_not_understand_with_a_warning(
    httpserver: HTTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    httpserver.expect_request(REQUESTS).respond_with_json(
        [
            {"tokenization_request_id": "half-a-row", "type": "mint"},
            tokenization_json(tokenization_request_id="odd-status", status="exploded"),
            tokenization_json(tokenization_request_id="odd-type", type="split"),
            "not an object",
            tokenization_json(tokenization_request_id="failed-one", status="failed"),
            tokenization_json(tokenization_request_id="eth-one", network="Ethereum"),
            tokenization_json(),
        ]
    )
    client = make_client(httpserver)

    with caplog.at_level("WARNING", logger="venues.alpaca"):
        result = client.list_requests()
        client.list_requests()

    assert [r.tokenization_request_id for r in result] == ["failed-one", "eth-one", "tok-1"]
    assert result[0].status is TokenizationStatus.FAILED
    assert result[0].status.is_refusal
    assert result[1].network == "ethereum"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 4  # each unknown entry named once, not on every read
    assert any("half-a-row" in w for w in warnings)
    assert any("odd-status" in w and "exploded" in w for w in warnings)
    assert any("not an object" in w for w in warnings)


def test_list_requests_checks_filters_the_list_may_ignore(httpserver: HTTPServer) -> None:
    httpserver.expect_request(REQUESTS).respond_with_json(
        [tokenization_json(), tokenization_json(tokenization_request_id="r", type="redeem")]
    )

    result = make_client(httpserver).list_requests(type=TokenizationType.REDEEM)

    assert [r.tokenization_request_id for r in result] == ["r"]


def test_get_request_reads_one_request_by_id(httpserver: HTTPServer) -> None:
    httpserver.expect_request(REQUESTS + "/tok-2").respond_with_json(
        tokenization_json(tokenization_request_id="tok-2", status="completed")
    )

    result = make_client(httpserver).get_request("tok-2")

    assert result.tokenization_request_id == "tok-2"
    assert result.status is TokenizationStatus.COMPLETED
    assert [entry[0].path for entry in httpserver.log] == [REQUESTS + "/tok-2"]


def test_get_request_not_found(httpserver: HTTPServer) -> None:
    httpserver.expect_request(REQUESTS + "/tok-missing").respond_with_data(
        '{"code": 40410000, "message": "not found"}', status=404
    )

    with pytest.raises(RequestNotFound) as caught:
        make_client(httpserver).get_request("tok-missing")

    assert caught.value.value == "tok-missing"


def test_find_request_by_issuer_request_id(httpserver: HTTPServer) -> None:
    httpserver.expect_request(REQUESTS, query_string={"type": "mint"}).respond_with_json(
        [
            tokenization_json(issuer_request_id="someone-else"),
            tokenization_json(tokenization_request_id="tok-9", issuer_request_id="our-9"),
        ]
    )
    client = make_client(httpserver)

    assert client.find_request_by_issuer_request_id("our-9").tokenization_request_id == "tok-9"
    assert client.find_request_by_issuer_request_id("our-unknown") is None


def test_an_entry_without_type_or_wallet_address_is_matched_not_refused(
    httpserver: HTTPServer,
) -> None:
    """Issue 20: `type` and `wallet_address` are optional in Alpaca's answers (and in the
    reference's parser); such an entry is still ours when it carries our issuer_request_id."""
    ours = tokenization_json(tokenization_request_id="tok-7", issuer_request_id="our-7")
    del ours["type"], ours["wallet_address"]
    httpserver.expect_request(REQUESTS, query_string={"type": "mint"}).respond_with_json(
        [tokenization_json(issuer_request_id="someone-else"), ours]
    )
    httpserver.expect_request(REQUESTS + "/tok-7").respond_with_json(ours)
    client = make_client(httpserver)

    found = client.find_request_by_issuer_request_id("our-7")
    assert found is not None and found.tokenization_request_id == "tok-7"
    assert (found.type, found.wallet_address) == (None, None)
    assert client.get_request("tok-7").tokenization_request_id == "tok-7"


def test_find_redemption_by_tx_matches_the_transaction_not_the_wallet(
    httpserver: HTTPServer,
) -> None:
    ours = "0x" + "ab" * 32
    httpserver.expect_request(REQUESTS, query_string={"type": "redeem"}).respond_with_json(
        [
            tokenization_json(
                tokenization_request_id="other", type="redeem", tx_hash="0x" + "cd" * 32
            ),
            tokenization_json(tokenization_request_id="no-tx", type="redeem", tx_hash=None),
            tokenization_json(tokenization_request_id="ours", type="redeem", tx_hash=ours.upper()),
        ]
    )

    found = make_client(httpserver).find_redemption_by_tx(ours)

    assert found is not None
    assert found.tokenization_request_id == "ours"


def test_find_redemption_by_tx_not_detected_yet(httpserver: HTTPServer) -> None:
    httpserver.expect_request(REQUESTS).respond_with_json([])

    assert make_client(httpserver).find_redemption_by_tx("0x" + "ab" * 32) is None


@pytest.mark.parametrize(
    ("final", "expected"),
    [
        ("completed", TokenizationStatus.COMPLETED),
        ("rejected", TokenizationStatus.REJECTED),
        ("failed", TokenizationStatus.FAILED),
    ],
)
def test_poll_until_terminal_returns_terminal_status(
    httpserver: HTTPServer, final: str, expected: TokenizationStatus
) -> None:
    script = Script(
        (200, tokenization_json()),
        (200, tokenization_json()),
        (200, tokenization_json(status=final, tx_hash="0xfeed")),
    )
    httpserver.expect_request(REQUESTS + "/tok-1").respond_with_handler(script)

    result = make_client(httpserver).poll_until_terminal("tok-1", interval_s=0.001, timeout_s=5)

    assert result.status is expected
    assert script.count == 3


def test_poll_timeout(httpserver: HTTPServer) -> None:
    httpserver.expect_request(REQUESTS + "/tok-1").respond_with_json(tokenization_json())

    with pytest.raises(AlpacaPollTimeout) as caught:
        make_client(httpserver).poll_until_terminal("tok-1", interval_s=0.01, timeout_s=0.05)

    assert caught.value.elapsed_s >= 0.05


def test_poll_aborts_on_api_error(httpserver: HTTPServer) -> None:
    script = Script((200, tokenization_json()), (401, "unauthorized"))
    httpserver.expect_request(REQUESTS + "/tok-1").respond_with_handler(script)

    with pytest.raises(AlpacaApiError):
        make_client(httpserver).poll_until_terminal("tok-1", interval_s=0.001, timeout_s=5)

    assert script.count == 2


def test_poll_for_redemption_detection_success(httpserver: HTTPServer) -> None:
    tx = "0x" + "ab" * 32
    script = Script(
        (200, []),
        (200, [tokenization_json(tokenization_request_id="red-1", type="redeem", tx_hash=tx)]),
    )
    httpserver.expect_request(REQUESTS, query_string={"type": "redeem"}).respond_with_handler(
        script
    )

    found = make_client(httpserver).poll_for_redemption_detection(tx, interval_s=0.001, timeout_s=5)

    assert found.tokenization_request_id == "red-1"
    assert script.count == 2


def test_poll_for_redemption_detection_timeout(httpserver: HTTPServer) -> None:
    httpserver.expect_request(REQUESTS).respond_with_json([])

    with pytest.raises(AlpacaPollTimeout):
        make_client(httpserver).poll_for_redemption_detection(
            "0x" + "ab" * 32, interval_s=0.01, timeout_s=0.03
        )


def test_secret_never_appears_in_repr_or_errors(httpserver: HTTPServer) -> None:
    httpserver.expect_request(MINT, method="POST").respond_with_data("nope", status=400)
    client = make_client(httpserver)

    with pytest.raises(AlpacaApiError) as caught:
        request_mint(client)

    assert "very-secret" not in repr(client)
    assert "very-secret" not in str(caught.value)
    assert "very-secret" not in repr(vars(client))


@pytest.mark.parametrize(
    ("mode", "url"),
    [
        (TradingMode.PAPER, "https://broker-api.sandbox.alpaca.markets"),
        ("live", "https://broker-api.alpaca.markets"),
    ],
)
def test_trading_mode_selects_the_broker_api_host(mode: TradingMode | str, url: str) -> None:
    client = AlpacaClient(api_key="k", api_secret="s", account_id="a", trading_mode=mode)

    assert client.base_url == url

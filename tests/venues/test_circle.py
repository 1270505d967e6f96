"""Circle Iris client: fast-transfer fee tiers and attested messages."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pytest_httpserver import HTTPServer

from tests.venues.http_fakes import FAST_RETRY, Script
from venues.circle import (
    AttestationTimeout,
    FastTransferFeeNotAvailable,
    IrisApiError,
    IrisClient,
    IrisMalformedResponse,
    IrisMessage,
    fast_transfer_max_fee,
)

TX = "0x" + "ab" * 32
MESSAGES = "/v2/messages/0"


def make_client(server: HTTPServer) -> IrisClient:
    return IrisClient(server.url_for(""), timeout_s=2.0, retry=FAST_RETRY)


@pytest.mark.parametrize(
    ("tiers", "expected"),
    [
        (
            [
                {"finalityThreshold": 1000, "minimumFee": 1},
                {"finalityThreshold": 2000, "minimumFee": 0},
            ],
            Decimal(1),
        ),
        (
            [
                {"finalityThreshold": 2000, "minimumFee": 0},
                {"finalityThreshold": 1000, "minimumFee": 1.3},
            ],
            Decimal("1.3"),
        ),
        ([{"finalityThreshold": 1000, "minimumFee": "0.25"}], Decimal("0.25")),
    ],
)
def test_fast_transfer_fee_picks_threshold_1000(
    httpserver: HTTPServer, tiers: list, expected: Decimal
) -> None:
    httpserver.expect_request("/v2/burn/USDC/fees/0/6").respond_with_json(tiers)

    assert make_client(httpserver).fast_transfer_fee_bps(0, 6) == expected


def test_fast_transfer_fee_missing_tier(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/v2/burn/USDC/fees/6/0").respond_with_json(
        [{"finalityThreshold": 2000, "minimumFee": 0}]
    )

    with pytest.raises(FastTransferFeeNotAvailable) as caught:
        make_client(httpserver).fast_transfer_fee_bps(6, 0)

    assert (caught.value.src_domain, caught.value.dst_domain) == (6, 0)


@pytest.mark.parametrize(
    "body", ['{"minFee": "1"}', '[{"finalityThreshold": 1000, "minimumFee": -1}]', "nope"]
)
def test_fast_transfer_fee_malformed(httpserver: HTTPServer, body: str) -> None:
    httpserver.expect_request("/v2/burn/USDC/fees/0/6").respond_with_data(body)

    with pytest.raises(IrisMalformedResponse):
        make_client(httpserver).fast_transfer_fee_bps(0, 6)


def test_fast_transfer_fee_retries_5xx(httpserver: HTTPServer) -> None:
    script = Script((503, "busy"), (200, [{"finalityThreshold": 1000, "minimumFee": 1}]))
    httpserver.expect_request("/v2/burn/USDC/fees/0/6").respond_with_handler(script)

    assert make_client(httpserver).fast_transfer_fee_bps(0, 6) == Decimal(1)
    assert script.count == 2


@pytest.mark.parametrize(
    ("amount_units", "fee_bps", "expected"),
    [
        (1_000_000, Decimal(1), 100),
        (1_000_001, Decimal(1), 101),
        (100_000_000, Decimal("1.3"), 13_000),
        (1, Decimal("0.01"), 1),
        (0, Decimal(1), 0),
        (5_000_000, Decimal(0), 0),
    ],
)
def test_fast_transfer_max_fee_rounds_up(
    amount_units: int, fee_bps: Decimal, expected: int
) -> None:
    assert fast_transfer_max_fee(amount_units, fee_bps) == expected


def complete(**overrides: object) -> dict:
    body = {
        "status": "complete",
        "message": "0x" + "00" * 4 + "0000000000000006" + "aa" * 140,
        "attestation": "0x" + "bb" * 65,
        "eventNonce": "0x" + "cc" * 32,
        "cctpVersion": 2,
    }
    body.update(overrides)
    return body


def pending() -> dict:
    return {"status": "pending_confirmations", "message": "0x", "attestation": "PENDING"}


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (404, {"error": "Message not found"}),
        (200, {"messages": []}),
        (200, {"messages": [pending()]}),
    ],
    ids=["404", "empty", "pending"],
)
def test_get_message_not_ready(httpserver: HTTPServer, status: int, body: dict) -> None:
    httpserver.expect_request(MESSAGES, query_string={"transactionHash": TX}).respond_with_json(
        body, status=status
    )

    assert make_client(httpserver).get_message(0, TX) is None


def test_get_message_ready_returns_message_and_attestation_bytes(httpserver: HTTPServer) -> None:
    body = complete()
    httpserver.expect_request(MESSAGES, query_string={"transactionHash": TX}).respond_with_json(
        {"messages": [body]}
    )

    message = make_client(httpserver).get_message(0, TX)

    assert message == IrisMessage(
        status="complete",
        message=bytes.fromhex(body["message"][2:]),
        attestation=bytes.fromhex("bb" * 65),
        event_nonce="0x" + "cc" * 32,
    )


def test_get_message_retries_5xx_then_ready(httpserver: HTTPServer) -> None:
    script = Script((500, "x"), (502, "y"), (200, {"messages": [complete()]}))
    httpserver.expect_request(MESSAGES).respond_with_handler(script)

    assert make_client(httpserver).get_message(0, TX) is not None
    assert script.count == 3


def test_get_message_persistent_5xx_is_api_error(httpserver: HTTPServer) -> None:
    httpserver.expect_request(MESSAGES).respond_with_data("down", status=503)

    with pytest.raises(IrisApiError) as caught:
        make_client(httpserver).get_message(0, TX)

    assert caught.value.status == 503


@pytest.mark.parametrize(
    "body",
    [
        '{"messages": "nope"}',
        '{"messages": [{"status": "complete", "message": "0xzz", "attestation": "0x01"}]}',
        '{"messages": [{"status": "complete", "message": "0x01", "attestation": "0x"}]}',
    ],
)
def test_get_message_malformed(httpserver: HTTPServer, body: str) -> None:
    httpserver.expect_request(MESSAGES).respond_with_data(body)

    with pytest.raises(IrisMalformedResponse):
        make_client(httpserver).get_message(0, TX)


def test_poll_attestation_waits_until_complete(httpserver: HTTPServer) -> None:
    script = Script(
        (404, {"error": "Message not found"}),
        (200, {"messages": [pending()]}),
        (200, {"messages": [complete()]}),
    )
    httpserver.expect_request(MESSAGES).respond_with_handler(script)

    message = make_client(httpserver).poll_attestation(0, TX, interval_s=0.001, timeout_s=5)

    assert message.status == "complete"
    assert script.count == 3


def test_poll_attestation_timeout(httpserver: HTTPServer) -> None:
    httpserver.expect_request(MESSAGES).respond_with_json({"messages": [pending()]})

    with pytest.raises(AttestationTimeout) as caught:
        make_client(httpserver).poll_attestation(0, TX, interval_s=0.01, timeout_s=0.05)

    assert caught.value.tx_hash == TX

"""Alpaca crypto wallet client: whitelist, withdrawals, transfer polling, deposits by tx."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from pytest_httpserver import HTTPServer

from tests.venues.http_fakes import CREATED_AT, FAST_RETRY, Script, transfer_json
from venues.alpaca import (
    AddressNotWhitelisted,
    AlpacaApiError,
    AlpacaClient,
    AlpacaMalformedResponse,
    AlpacaOutcomeUnknown,
    AlpacaPollTimeout,
    DepositTimeout,
    InsufficientPosition,
    InvalidAmount,
    InvalidStatusTransition,
    Transfer,
    TransferDirection,
    TransferNotFound,
    TransferStatus,
    WhitelistStatus,
    transfer_status_check_transition,
)

ADDRESS = "0x" + "22" * 20
TX = "0x" + "ef" * 32
WALLETS = "/v1/accounts/acct-1/wallets"
WHITELISTS = WALLETS + "/whitelists"
TRANSFERS = WALLETS + "/transfers"


def make_client(server: HTTPServer) -> AlpacaClient:
    return AlpacaClient(
        base_url=server.url_for(""),
        api_key="key-id",
        api_secret="very-secret",
        account_id="acct-1",
        timeout_s=2.0,
        retry=FAST_RETRY,
    )


def whitelist_json(status: str, *, address: str = ADDRESS, chain: str = "ETH") -> dict:
    return {
        "id": f"wl-{status}",
        "address": address,
        "asset": "USDC",
        "chain": chain,
        "status": status,
        "created_at": CREATED_AT,
    }


@pytest.mark.parametrize("spelling", ["ETH", "Ethereum", "ETHEREUM", "eth", " ethereum "])
def test_whitelist_entry_matches_every_spelling_of_the_chain(
    httpserver: HTTPServer, spelling: str
) -> None:
    httpserver.expect_request(WHITELISTS).respond_with_json(
        [whitelist_json("APPROVED", chain=spelling)]
    )

    entry = make_client(httpserver).whitelist_entry(ADDRESS.upper().replace("0X", "0x"))

    assert entry is not None
    assert entry.chain == "ethereum"
    assert entry.status is WhitelistStatus.APPROVED


def test_wallet_requests_carry_basic_auth_and_the_apca_headers(httpserver: HTTPServer) -> None:
    basic = "Basic " + base64.b64encode(b"key-id:very-secret").decode()
    httpserver.expect_request(
        WHITELISTS,
        headers={
            "Authorization": basic,
            "APCA-API-KEY-ID": "key-id",
            "APCA-API-SECRET-KEY": "very-secret",
        },
    ).respond_with_json([])

    assert make_client(httpserver).whitelists() == []


def test_whitelist_entry_of_unknown_shape_is_skipped(httpserver: HTTPServer) -> None:
    httpserver.expect_request(WHITELISTS).respond_with_json(
        [{"id": "wl-odd", "status": "MAYBE"}, whitelist_json("APPROVED", chain="Ethereum")]
    )

    entry = make_client(httpserver).whitelist_entry(ADDRESS)

    assert entry is not None
    assert entry.id == "wl-APPROVED"


def test_withdrawal_to_approved_address_posts_transfer(httpserver: HTTPServer) -> None:
    httpserver.expect_request(WHITELISTS).respond_with_json(
        [whitelist_json("PENDING"), whitelist_json("APPROVED")]
    )
    httpserver.expect_request(
        TRANSFERS,
        method="POST",
        headers={"Idempotency-Key": "usdc-withdrawal-op-1"},
        json={"amount": "100.25", "asset": "USDC", "address": ADDRESS},
    ).respond_with_json(transfer_json(amount="100.25"))

    transfer = make_client(httpserver).initiate_withdrawal(
        amount_usdc=Decimal("100.25"), address=ADDRESS, idempotency_key="usdc-withdrawal-op-1"
    )

    assert transfer == Transfer(
        id="tr-1",
        direction=TransferDirection.OUTGOING,
        amount=Decimal("100.25"),
        usd_value=Decimal("100.02"),
        chain="ethereum",
        asset="USDC",
        from_address=None,
        to_address=ADDRESS,
        status=TransferStatus.PENDING,
        tx_hash=None,
        created_at=datetime(2025, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
        network_fee=Decimal("0.5"),
        fees=Decimal(0),
    )


@pytest.mark.parametrize(
    ("entries", "status"),
    [
        ([whitelist_json("PENDING")], WhitelistStatus.PENDING),
        ([whitelist_json("REJECTED")], WhitelistStatus.REJECTED),
        ([], None),
        ([whitelist_json("APPROVED", address="0x" + "33" * 20)], None),
        ([whitelist_json("APPROVED", chain="base")], None),
        ([whitelist_json("APPROVED", chain="SOL")], None),
    ],
    ids=["pending", "rejected", "absent", "other-address", "other-chain", "solana"],
)
def test_withdrawal_to_address_not_approved_is_refused_before_posting(
    httpserver: HTTPServer, entries: list, status: WhitelistStatus | None
) -> None:
    httpserver.expect_request(WHITELISTS).respond_with_json(entries)
    post = Script((200, transfer_json()))
    httpserver.expect_request(TRANSFERS, method="POST").respond_with_handler(post)

    with pytest.raises(AddressNotWhitelisted) as caught:
        make_client(httpserver).initiate_withdrawal(amount_usdc=Decimal(100), address=ADDRESS)

    assert caught.value.status == status
    assert caught.value.network == "ethereum"
    assert post.count == 0


@pytest.mark.parametrize("amount", [Decimal(0), Decimal("-1"), Decimal("-0.000001")])
def test_withdrawal_zero_or_negative_amount_is_invalid_without_any_request(
    httpserver: HTTPServer, amount: Decimal
) -> None:
    with pytest.raises(InvalidAmount) as caught:
        make_client(httpserver).initiate_withdrawal(amount_usdc=amount, address=ADDRESS)

    assert caught.value.field == "amount_usdc"
    assert len(httpserver.log) == 0


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (400, "bad amount", AlpacaApiError),
        (403, "insufficient balance", InsufficientPosition),
        (500, "boom", AlpacaOutcomeUnknown),
        (200, "{not json", AlpacaOutcomeUnknown),
        (200, '{"id": "tr-1"}', AlpacaOutcomeUnknown),
    ],
)
def test_withdrawal_api_errors_and_malformed_json_are_mapped_and_never_retried(
    httpserver: HTTPServer, status: int, body: str, error: type[Exception]
) -> None:
    httpserver.expect_request(WHITELISTS).respond_with_json([whitelist_json("APPROVED")])
    post = Script((status, body))
    httpserver.expect_request(TRANSFERS, method="POST").respond_with_handler(post)

    with pytest.raises(error):
        make_client(httpserver).initiate_withdrawal(amount_usdc=Decimal(100), address=ADDRESS)

    assert post.count == 1


def test_get_transfer_reads_the_transfer_by_id_never_the_list(httpserver: HTTPServer) -> None:
    # The list ignores a `transfer_id` filter: reading it would return someone else's first.
    httpserver.expect_request(TRANSFERS).respond_with_json(
        [transfer_json(id="someone-else", direction="INCOMING")]
    )
    httpserver.expect_request(TRANSFERS + "/tr-7").respond_with_json(
        transfer_json(id="tr-7", status="PROCESSING", network_fee="1.25")
    )

    transfer = make_client(httpserver).get_transfer("tr-7")

    assert transfer.id == "tr-7"
    assert transfer.status is TransferStatus.PROCESSING
    assert transfer.network_fee == Decimal("1.25")
    assert [entry[0].path for entry in httpserver.log] == [TRANSFERS + "/tr-7"]


def test_get_transfer_not_found(httpserver: HTTPServer) -> None:
    httpserver.expect_request(TRANSFERS + "/tr-missing").respond_with_data(
        '{"code": 40410000, "message": "transfer not found"}', status=404
    )

    with pytest.raises(TransferNotFound) as caught:
        make_client(httpserver).get_transfer("tr-missing")

    assert caught.value.transfer_id == "tr-missing"


@pytest.mark.parametrize(
    "body",
    [
        "<html>gateway</html>",
        "{}",
        "[]",
        '{"id": "tr-1", "status": "PENDING"}',
        '{"id": "tr-1", "relationship": "OUTGOING", "amount": "1", "asset": "USDC", '
        '"to_address": "0x", "status": "PENDING", "created_at": "2025-01-01T00:00:00Z", '
        '"network_fee_amount": "0"}',
    ],
    ids=["html", "empty", "list", "partial", "trigger-era-shape"],
)
def test_get_transfer_malformed_json(httpserver: HTTPServer, body: str) -> None:
    httpserver.expect_request(TRANSFERS + "/tr-1").respond_with_data(body, status=200)

    with pytest.raises(AlpacaMalformedResponse):
        make_client(httpserver).get_transfer("tr-1")


def test_get_transfer_api_error(httpserver: HTTPServer) -> None:
    httpserver.expect_request(TRANSFERS + "/tr-1").respond_with_data("forbidden", status=401)

    with pytest.raises(AlpacaApiError) as caught:
        make_client(httpserver).get_transfer("tr-1")

    assert caught.value.status == 401


def transfer_script(*statuses: str | int) -> Script:
    return Script(
        *[
            (status, "unavailable")
            if isinstance(status, int)
            else (200, transfer_json(status=status))
            for status in statuses
        ]
    )


def test_poll_transfer_processing_then_complete(httpserver: HTTPServer) -> None:
    script = transfer_script("PENDING", "PROCESSING", "PROCESSING", "COMPLETE")
    httpserver.expect_request(TRANSFERS + "/tr-1").respond_with_handler(script)

    transfer = make_client(httpserver).poll_transfer_until_complete(
        "tr-1", interval_s=0.001, timeout_s=5
    )

    assert transfer.status is TransferStatus.COMPLETE
    assert script.count == 4


def test_poll_transfer_failed_is_returned_as_value(httpserver: HTTPServer) -> None:
    httpserver.expect_request(TRANSFERS + "/tr-1").respond_with_handler(
        transfer_script("PENDING", "FAILED")
    )

    transfer = make_client(httpserver).poll_transfer_until_complete(
        "tr-1", interval_s=0.001, timeout_s=5
    )

    assert transfer.status is TransferStatus.FAILED


def test_poll_transfer_timeout(httpserver: HTTPServer) -> None:
    httpserver.expect_request(TRANSFERS + "/tr-1").respond_with_handler(
        transfer_script("PROCESSING")
    )

    with pytest.raises(AlpacaPollTimeout):
        make_client(httpserver).poll_transfer_until_complete(
            "tr-1", interval_s=0.01, timeout_s=0.05
        )


def test_poll_transfer_retries_5xx_within_one_fetch(httpserver: HTTPServer) -> None:
    script = transfer_script("PENDING", 503, 502, "COMPLETE")
    httpserver.expect_request(TRANSFERS + "/tr-1").respond_with_handler(script)

    transfer = make_client(httpserver).poll_transfer_until_complete(
        "tr-1", interval_s=0.001, timeout_s=5
    )

    assert transfer.status is TransferStatus.COMPLETE
    assert script.count == 4


def test_poll_transfer_status_regression_is_an_error(httpserver: HTTPServer) -> None:
    httpserver.expect_request(TRANSFERS + "/tr-1").respond_with_handler(
        transfer_script("PROCESSING", "PENDING")
    )

    with pytest.raises(InvalidStatusTransition) as caught:
        make_client(httpserver).poll_transfer_until_complete("tr-1", interval_s=0.001, timeout_s=5)

    assert caught.value.previous is TransferStatus.PROCESSING
    assert caught.value.current is TransferStatus.PENDING


S = TransferStatus


@pytest.mark.parametrize(
    ("previous", "current", "allowed"),
    [
        (None, S.PENDING, True),
        (None, S.COMPLETE, True),
        (S.PENDING, S.PENDING, True),
        (S.PENDING, S.PROCESSING, True),
        (S.PENDING, S.COMPLETE, True),
        (S.PENDING, S.FAILED, True),
        (S.PROCESSING, S.COMPLETE, True),
        (S.PROCESSING, S.FAILED, True),
        (S.PROCESSING, S.PENDING, False),
        (S.COMPLETE, S.COMPLETE, True),
        (S.COMPLETE, S.PROCESSING, False),
        (S.COMPLETE, S.FAILED, False),
        (S.FAILED, S.PENDING, False),
        (S.FAILED, S.COMPLETE, False),
    ],
)
def test_transfer_status_transitions(
    previous: TransferStatus | None, current: TransferStatus, allowed: bool
) -> None:
    if allowed:
        transfer_status_check_transition("tr-1", previous, current)
    else:
        with pytest.raises(InvalidStatusTransition):
            transfer_status_check_transition("tr-1", previous, current)


def deposit(status: str, *, tx_hash: str = TX, **overrides: object) -> dict:
    return transfer_json(
        id="dep-1", direction="INCOMING", status=status, tx_hash=tx_hash, **overrides
    )


def test_deposit_by_tx_found_immediately(httpserver: HTTPServer) -> None:
    httpserver.expect_request(TRANSFERS, query_string="").respond_with_json(
        [transfer_json(), deposit("COMPLETE", tx_hash=TX.upper().replace("0X", "0x"))]
    )

    transfer = make_client(httpserver).poll_deposit_by_tx(TX, interval_s=0.001, timeout_s=5)

    assert transfer.id == "dep-1"
    assert transfer.status is TransferStatus.COMPLETE


def test_deposit_by_tx_detected_later(httpserver: HTTPServer) -> None:
    script = Script(
        (200, []),
        (200, [deposit("PENDING")]),
        (200, [deposit("COMPLETE")]),
    )
    httpserver.expect_request(TRANSFERS).respond_with_handler(script)

    transfer = make_client(httpserver).poll_deposit_by_tx(TX, interval_s=0.001, timeout_s=5)

    assert transfer.status is TransferStatus.COMPLETE
    assert script.count == 3


def test_deposit_by_tx_ignores_outgoing_transfer_with_same_hash(httpserver: HTTPServer) -> None:
    httpserver.expect_request(TRANSFERS).respond_with_json([transfer_json(tx_hash=TX)])

    assert make_client(httpserver).find_deposit_by_tx(TX) is None


def test_deposit_by_tx_timeout(httpserver: HTTPServer) -> None:
    httpserver.expect_request(TRANSFERS).respond_with_json([])

    with pytest.raises(DepositTimeout) as caught:
        make_client(httpserver).poll_deposit_by_tx(TX, interval_s=0.01, timeout_s=0.05)

    assert caught.value.tx_hash == TX


def test_deposit_by_tx_failed_is_returned_as_value(httpserver: HTTPServer) -> None:
    httpserver.expect_request(TRANSFERS).respond_with_json([deposit("FAILED")])

    transfer = make_client(httpserver).poll_deposit_by_tx(TX, interval_s=0.001, timeout_s=5)

    assert transfer.status is TransferStatus.FAILED


def test_find_outgoing_transfers_matches_address_amount_and_time(httpserver: HTTPServer) -> None:
    httpserver.expect_request(TRANSFERS).respond_with_json(
        [
            transfer_json(id="old", created_at="2025-01-01T00:00:00Z"),
            transfer_json(id="match", amount="100.000"),
            transfer_json(id="other-amount", amount="99"),
            transfer_json(id="incoming", direction="INCOMING"),
            {"id": "odd", "direction": "SIDEWAYS"},
        ]
    )

    found = make_client(httpserver).find_outgoing_transfers(
        to_address=ADDRESS.upper().replace("0X", "0x"),
        amount_usdc=Decimal(100),
        created_at_or_after=datetime(2025, 1, 2, tzinfo=UTC),
    )

    assert [t.id for t in found] == ["match"]


@pytest.mark.parametrize(
    "body",
    [
        {"chain": "ETH", "address": ADDRESS, "created_at": CREATED_AT},
        [
            {"chain": "SOL", "address": "7xKXtg2CW87d97TXJSDpbD5jBkheTqA83TZRuJosgAsU"},
            {"chain": "Ethereum", "address": ADDRESS, "created_at": CREATED_AT},
        ],
    ],
    ids=["one-wallet", "wallets-by-chain"],
)
def test_deposit_address(httpserver: HTTPServer, body: object) -> None:
    # Issue 20: the network is asked for too (`network=ethereum`).
    httpserver.expect_request(
        WALLETS, query_string={"asset": "USDC", "network": "ethereum"}
    ).respond_with_json(body)

    assert make_client(httpserver).deposit_address() == ADDRESS


def test_deposit_address_missing_is_malformed(httpserver: HTTPServer) -> None:
    httpserver.expect_request(WALLETS).respond_with_json([])

    with pytest.raises(AlpacaMalformedResponse):
        make_client(httpserver).deposit_address()

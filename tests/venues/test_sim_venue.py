"""The real Alpaca and Iris clients against the running simulated venue on the local chains."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal

import pytest
import requests
from django.core.management import call_command
from eth_utils import to_checksum_address

from venues import cctp
from venues.alpaca import (
    CLOCK_SKEW,
    AddressNotWhitelisted,
    AlpacaApiError,
    AlpacaClient,
    AlpacaOutcomeUnknown,
    AlpacaRateLimited,
    InsufficientPosition,
    InvalidParameters,
    Order,
    OrderNotFound,
    OrderSide,
    TokenizationStatus,
    TokenizationType,
    TransferDirection,
    TransferStatus,
)
from venues.chain import erc20_transfers_in
from venues.circle import AttestationTimeout, IrisClient
from venues.http import RetryPolicy
from venues.sim.chain import SimAccount, SimChains
from venues.sim.server import (
    FAULT_5XX,
    FAULT_5XX_AFTER,
    FAULT_429,
    FAULT_HANG,
    KEY_ACCOUNT,
    KEY_MINT,
    KEY_ORDER_POST,
    KEY_POSITIONS,
    KEY_TOKENIZATION_LIST,
    KEY_TRANSFER_LIST,
    KEY_WITHDRAW,
    long_tokenization_history,
)
from venues.sim.venue import SimKnobs, SimVenue

pytestmark = [pytest.mark.chain, pytest.mark.xdist_group("chain")]

FAST = SimKnobs(
    tick_s=0.02,
    mint_delay_s=0.05,
    redemption_detect_delay_s=0.02,
    redemption_complete_delay_s=0.05,
    withdrawal_processing_delay_s=0.02,
    withdrawal_complete_delay_s=0.05,
    deposit_credit_delay_s=0.02,
    attestation_delay_s=0.05,
    fast_fee_bps=Decimal("1.5"),
)
RETRY = RetryPolicy(attempts=3, min_delay_s=0.01, max_delay_s=0.02)
POLL = {"interval_s": 0.02, "timeout_s": 15.0}
MINT = KEY_MINT
SHARE = 10**18
USDC = 10**6


@pytest.fixture
def make_venue(sim_chains: SimChains) -> Iterator[Callable[..., SimVenue]]:
    started: list[SimVenue] = []

    def make(**knobs: object) -> SimVenue:
        venue = SimVenue(
            knobs=SimKnobs(**{**FAST.__dict__, **knobs}),
            chains=sim_chains,
            equity_symbols=("AAPL",),
            positions={"AAPL": Decimal(100)},
            cash_usd=Decimal(1000),
        ).start()
        started.append(venue)
        return venue

    yield make
    for venue in started:
        errors = venue.server.errors()
        venue.stop()
        assert errors == []


def alpaca(venue: SimVenue, **overrides: object) -> AlpacaClient:
    options: dict = {
        "base_url": venue.alpaca_url,
        "api_key": venue.api_key,
        "api_secret": venue.api_secret,
        "account_id": venue.account_id,
        "retry": RETRY,
        "timeout_s": 5.0,
    }
    options.update(overrides)
    return AlpacaClient(**options)


def iris(venue: SimVenue) -> IrisClient:
    return IrisClient(venue.iris_url, retry=RETRY, timeout_s=5.0)


def test_mint_completes_and_tokens_arrive_onchain(
    make_venue: Callable[..., SimVenue], sim_chains: SimChains, scratch_account: SimAccount
) -> None:
    venue = make_venue()
    client = alpaca(venue)

    accepted = client.request_mint(
        underlying_symbol="AAPL",
        quantity_shares=Decimal("2.5"),
        wallet_address=scratch_account.address,
        issuer_request_id="mint-onchain-1",
    )
    done = client.poll_until_terminal(accepted.tokenization_request_id, **POLL)

    assert accepted.status is TokenizationStatus.PENDING
    assert done.status is TokenizationStatus.COMPLETED
    assert done.issuer_request_id == "mint-onchain-1"
    token = venue.equity_tokens["AAPL"]
    assert sim_chains.balance(sim_chains.base, token, scratch_account.address) == 25 * SHARE // 10
    receipt = sim_chains.client("base").receipt(done.tx_hash)
    arrived = erc20_transfers_in(receipt, token=token, to=scratch_account.address)
    assert sum(t.amount_units for t in arrived) == 25 * SHARE // 10
    assert venue.server.position("AAPL") == Decimal("97.5")
    assert venue.server.request_count(MINT) == 1


def test_mint_beyond_position_is_insufficient_position(
    make_venue: Callable[..., SimVenue], scratch_account: SimAccount
) -> None:
    venue = make_venue()

    with pytest.raises(InsufficientPosition) as caught:
        alpaca(venue).request_mint(
            underlying_symbol="AAPL",
            quantity_shares=Decimal("100.000000001"),
            wallet_address=scratch_account.address,
            issuer_request_id="too-big",
        )

    assert caught.value.symbol == "AAPL"
    assert venue.server.position("AAPL") == Decimal(100)


def test_mint_with_same_issuer_request_id_is_accepted_once(
    make_venue: Callable[..., SimVenue], scratch_account: SimAccount
) -> None:
    venue = make_venue()
    client = alpaca(venue)

    first, second = (
        client.request_mint(
            underlying_symbol="AAPL",
            quantity_shares=Decimal(3),
            wallet_address=scratch_account.address,
            issuer_request_id="same-key",
        )
        for _ in range(2)
    )

    assert first.tokenization_request_id == second.tokenization_request_id
    assert venue.server.position("AAPL") == Decimal(97)


def test_mint_failing_after_commit_is_outcome_unknown_and_found_by_our_id(
    make_venue: Callable[..., SimVenue], scratch_account: SimAccount
) -> None:
    venue = make_venue()
    venue.server.fail_next(MINT, FAULT_5XX_AFTER)
    client = alpaca(venue)

    with pytest.raises(AlpacaOutcomeUnknown):
        client.request_mint(
            underlying_symbol="AAPL",
            quantity_shares=Decimal(1),
            wallet_address=scratch_account.address,
            issuer_request_id="lost-answer",
        )
    found = client.find_request_by_issuer_request_id("lost-answer")

    assert found is not None
    assert found.qty == Decimal(1)
    assert venue.server.request_count(MINT) == 1


def test_mint_rejected_restores_the_position(
    make_venue: Callable[..., SimVenue], scratch_account: SimAccount
) -> None:
    venue = make_venue(mint_reject_rate=1.0)
    client = alpaca(venue)

    accepted = client.request_mint(
        underlying_symbol="AAPL",
        quantity_shares=Decimal(4),
        wallet_address=scratch_account.address,
        issuer_request_id="to-reject",
    )
    debited = venue.server.position("AAPL")
    done = client.poll_until_terminal(accepted.tokenization_request_id, **POLL)

    assert debited == Decimal(96)
    assert done.status is TokenizationStatus.REJECTED
    assert done.tx_hash is None
    assert venue.server.position("AAPL") == Decimal(100)


def send_for_redemption(
    venue: SimVenue, sim_chains: SimChains, holder: SimAccount, units: int
) -> str:
    token = venue.equity_tokens["AAPL"]
    sim_chains.mint(sim_chains.base, token, holder.address, units)
    receipt = sim_chains.transfer(sim_chains.base, token, holder, venue.redemption_wallet, units)
    return receipt.tx_hash


@pytest.mark.parametrize(
    ("reject_rate", "status", "position"),
    [
        (0.0, TokenizationStatus.COMPLETED, Decimal("101.25")),
        (1.0, TokenizationStatus.REJECTED, Decimal(100)),
    ],
)
def test_redemption_transfer_is_detected_by_tx_and_settled(
    make_venue: Callable[..., SimVenue],
    sim_chains: SimChains,
    scratch_account: SimAccount,
    reject_rate: float,
    status: TokenizationStatus,
    position: Decimal,
) -> None:
    venue = make_venue(redemption_reject_rate=reject_rate)
    client = alpaca(venue)

    tx_hash = send_for_redemption(venue, sim_chains, scratch_account, 125 * SHARE // 100)
    detected = client.poll_for_redemption_detection(tx_hash, **POLL)
    done = client.poll_until_terminal(detected.tokenization_request_id, **POLL)

    assert detected.type is TokenizationType.REDEEM
    assert detected.qty == Decimal("1.25")
    assert detected.wallet_address == scratch_account.address
    assert done.status is status
    assert venue.server.position("AAPL") == position


def test_settle_now_ends_the_delays_already_scheduled(
    make_venue: Callable[..., SimVenue], sim_chains: SimChains, scratch_account: SimAccount
) -> None:
    """A long delay holds a venue-side step for as long as a test needs; `settle_now` lets it
    go (the mint completes, the redemption is detected and settles)."""
    venue = make_venue(mint_delay_s=3600.0, redemption_detect_delay_s=3600.0)
    client = alpaca(venue)
    accepted = client.request_mint(
        underlying_symbol="AAPL",
        quantity_shares=Decimal(1),
        wallet_address=scratch_account.address,
        issuer_request_id="mint-held-1",
    )
    tx_hash = send_for_redemption(venue, sim_chains, scratch_account, SHARE // 2)
    wait_until_seen = time.monotonic() + 30
    while not any(r["tx_hash"] == tx_hash for r in venue.server.tokenization_requests()):
        assert time.monotonic() < wait_until_seen, "the sim never saw the transfer"
        time.sleep(0.02)
    assert client.get_request(accepted.tokenization_request_id).status is (
        TokenizationStatus.PENDING
    )
    assert client.find_redemption_by_tx(tx_hash) is None  # not visible yet

    venue.server.set_knobs(mint_delay_s=0.05, redemption_detect_delay_s=0.02)
    venue.server.settle_now()

    done = client.poll_until_terminal(accepted.tokenization_request_id, **POLL)
    assert done.status is TokenizationStatus.COMPLETED
    detected = client.poll_for_redemption_detection(tx_hash, **POLL)
    redeemed = client.poll_until_terminal(detected.tokenization_request_id, **POLL)
    assert redeemed.status is TokenizationStatus.COMPLETED


def test_withdrawal_moves_usdc_onchain_minus_network_fee(
    make_venue: Callable[..., SimVenue], sim_chains: SimChains, scratch_account: SimAccount
) -> None:
    venue = make_venue(
        withdrawal_network_fee_usdc=Decimal("0.5"), usdc_crypto_position=Decimal(150)
    )
    venue.server.whitelist_set(scratch_account.address, "APPROVED")
    client = alpaca(venue)

    started = client.initiate_withdrawal(amount_usdc=Decimal(100), address=scratch_account.address)
    done = client.poll_transfer_until_complete(started.id, **POLL)

    assert started.status is TransferStatus.PENDING
    assert done.status is TransferStatus.COMPLETE
    assert done.network_fee == Decimal("0.5")
    usdc = sim_chains.ethereum.usdc
    assert (
        sim_chains.balance(sim_chains.ethereum, usdc, scratch_account.address) == 995 * USDC // 10
    )
    receipt = sim_chains.client("ethereum").receipt(done.tx_hash)
    assert erc20_transfers_in(receipt, token=usdc, to=scratch_account.address)
    # Issue 20: a USDC withdrawal spends the USDCUSD position, never USD cash.
    assert venue.server.usdc_position() == Decimal(50)
    assert venue.server.cash() == Decimal(1000)


def test_withdrawal_failure_unlocks_the_usdc_and_sends_nothing(
    make_venue: Callable[..., SimVenue], sim_chains: SimChains, scratch_account: SimAccount
) -> None:
    venue = make_venue(withdrawal_fail_rate=1.0, usdc_crypto_position=Decimal(100))
    venue.server.whitelist_set(scratch_account.address, "APPROVED")
    client = alpaca(venue)

    started = client.initiate_withdrawal(amount_usdc=Decimal(60), address=scratch_account.address)
    done = client.poll_transfer_until_complete(started.id, **POLL)

    assert done.status is TransferStatus.FAILED
    usdc = sim_chains.ethereum.usdc
    assert sim_chains.balance(sim_chains.ethereum, usdc, scratch_account.address) == 0
    (row,) = [p for p in client.positions() if p.symbol == "USDCUSD"]
    assert (row.qty, row.qty_available) == (Decimal(100), Decimal(100))
    assert venue.server.cash() == Decimal(1000)


@pytest.mark.parametrize("status", ["PENDING", "REJECTED", None])
def test_withdrawal_to_unapproved_address_is_refused_before_posting(
    make_venue: Callable[..., SimVenue], scratch_account: SimAccount, status: str | None
) -> None:
    venue = make_venue()
    venue.server.whitelist_set(scratch_account.address, status)

    with pytest.raises(AddressNotWhitelisted):
        alpaca(venue).initiate_withdrawal(amount_usdc=Decimal(60), address=scratch_account.address)

    assert venue.server.request_count(KEY_WITHDRAW) == 0


def test_market_maker_wallet_is_whitelisted_by_default(
    make_venue: Callable[..., SimVenue],
) -> None:
    venue = make_venue()

    entry = alpaca(venue).whitelist_entry(venue.market_maker.address)

    assert entry is not None
    assert entry.status.value == "APPROVED"


def test_usdc_sent_to_deposit_address_is_credited_as_incoming_transfer(
    make_venue: Callable[..., SimVenue], sim_chains: SimChains, scratch_account: SimAccount
) -> None:
    venue = make_venue()
    client = alpaca(venue)
    usdc_before = venue.server.usdc_position()
    deposit_address = client.deposit_address()
    sim_chains.mint_usdc(sim_chains.ethereum, scratch_account.address, 250 * USDC)

    receipt = sim_chains.transfer(
        sim_chains.ethereum, sim_chains.ethereum.usdc, scratch_account, deposit_address, 250 * USDC
    )
    deposit = client.poll_deposit_by_tx(receipt.tx_hash, **POLL)

    assert deposit_address == to_checksum_address(venue.deposit_address)
    assert deposit.direction is TransferDirection.INCOMING
    assert deposit.status is TransferStatus.COMPLETE
    assert deposit.amount == Decimal(250)
    assert deposit.from_address == scratch_account.address
    # Issue 20: a USDC deposit credits the USDCUSD position, not cash.
    assert venue.server.usdc_position() == usdc_before + 250
    assert venue.server.cash() == Decimal(1000)


def burn(
    sim_chains: SimChains, sender: SimAccount, *, amount_units: int, fee_bps: Decimal
) -> tuple[str, int]:
    """depositForBurn on Ethereum-sim to Base-sim for `sender`; returns (tx hash, maxFee)."""
    chain = sim_chains.client("ethereum", sender)
    ethereum = sim_chains.ethereum
    sim_chains.mint_usdc(ethereum, sender.address, amount_units)
    chain.send(
        chain.build_erc20_approve(
            token=ethereum.usdc, spender=ethereum.token_messenger, amount_units=amount_units
        )
    )
    max_fee_units = cctp.max_fee(amount_units, fee_bps)
    receipt = chain.send(
        chain.build_deposit_for_burn(
            token_messenger=ethereum.token_messenger,
            burn_token=ethereum.usdc,
            amount_units=amount_units,
            destination_domain=cctp.DOMAIN_BASE,
            mint_recipient=sender.address,
            max_fee_units=max_fee_units,
        )
    )
    return receipt.tx_hash, max_fee_units


def test_attestation_is_served_and_receive_message_accepts_it(
    make_venue: Callable[..., SimVenue], sim_chains: SimChains, scratch_account: SimAccount
) -> None:
    venue = make_venue()
    fee_bps = iris(venue).fast_transfer_fee_bps(cctp.DOMAIN_ETHEREUM, cctp.DOMAIN_BASE)
    amount = 1_000 * USDC

    tx_hash, max_fee_units = burn(sim_chains, scratch_account, amount_units=amount, fee_bps=fee_bps)
    attested = iris(venue).poll_attestation(cctp.DOMAIN_ETHEREUM, tx_hash, **POLL)
    base = sim_chains.client("base", scratch_account)
    base.send(
        base.build_receive_message(
            message_transmitter=sim_chains.base.message_transmitter,
            message=attested.message,
            attestation=attested.attestation,
        )
    )

    assert fee_bps == Decimal("1.5")
    fee_executed = cctp.parse_message(attested.message).body.fee_executed_units
    assert fee_executed == max_fee_units == 150_000
    received = sim_chains.balance(sim_chains.base, sim_chains.base.usdc, scratch_account.address)
    assert received == amount - fee_executed
    assert sim_chains.nonce_used(sim_chains.base, attested.event_nonce)


def test_attestation_that_never_arrives_times_out(
    make_venue: Callable[..., SimVenue], sim_chains: SimChains, scratch_account: SimAccount
) -> None:
    venue = make_venue(attestation_never=True)

    tx_hash, _ = burn(sim_chains, scratch_account, amount_units=100 * USDC, fee_bps=Decimal(1))
    time.sleep(0.2)

    with pytest.raises(AttestationTimeout):
        iris(venue).poll_attestation(cctp.DOMAIN_ETHEREUM, tx_hash, interval_s=0.02, timeout_s=0.3)
    seen = requests.get(
        f"{venue.iris_url}/v2/messages/{cctp.DOMAIN_ETHEREUM}",
        params={"transactionHash": tx_hash},
        timeout=5,
    ).json()
    assert [m["status"] for m in seen["messages"]] == ["pending_confirmations"]


def test_unknown_burn_is_not_ready(make_venue: Callable[..., SimVenue]) -> None:
    venue = make_venue()

    assert iris(venue).get_message(cctp.DOMAIN_BASE, "0x" + "00" * 32) is None


def test_injected_5xx_on_reads_is_retried_by_the_client(
    make_venue: Callable[..., SimVenue],
) -> None:
    venue = make_venue()
    venue.server.fail_next(KEY_ACCOUNT, FAULT_5XX, times=2)

    account = alpaca(venue).account()

    assert account.cash == Decimal(1000)
    assert venue.server.request_count(KEY_ACCOUNT) == 3


def test_injected_hang_times_out_and_the_read_is_retried(
    make_venue: Callable[..., SimVenue],
) -> None:
    # The hang outlasts the client timeout by far, and the timeout leaves a loaded machine
    # ample time to answer the retried read.
    venue = make_venue(hang_s=4)
    venue.server.fail_next(KEY_POSITIONS, FAULT_HANG)

    positions = alpaca(venue, timeout_s=1.5).equity_positions()

    assert [(p.symbol, p.qty) for p in positions] == [("AAPL", Decimal(100))]
    assert venue.server.request_count(KEY_POSITIONS) == 2


def test_injected_5xx_on_mint_is_not_retried_and_has_no_effect(
    make_venue: Callable[..., SimVenue], scratch_account: SimAccount
) -> None:
    venue = make_venue()
    venue.server.fail_next(MINT, FAULT_5XX)
    client = alpaca(venue)

    with pytest.raises(AlpacaOutcomeUnknown):
        client.request_mint(
            underlying_symbol="AAPL",
            quantity_shares=Decimal(1),
            wallet_address=scratch_account.address,
            issuer_request_id="never-arrived",
        )

    assert client.find_request_by_issuer_request_id("never-arrived") is None
    assert venue.server.request_count(MINT) == 1
    assert venue.server.position("AAPL") == Decimal(100)


def test_random_faults_repeat_for_the_same_seed(make_venue: Callable[..., SimVenue]) -> None:
    def outcomes(venue: SimVenue) -> list[str]:
        client = alpaca(venue, retry=RetryPolicy(attempts=1, min_delay_s=0, max_delay_s=0))
        seen = []
        for _ in range(20):
            try:
                client.account()
                seen.append("ok")
            except AlpacaApiError as exc:
                seen.append(str(exc.status))
        return seen

    first = outcomes(make_venue(seed=7, error_5xx_rate=0.5))
    second = outcomes(make_venue(seed=7, error_5xx_rate=0.5))

    assert first == second
    assert "ok" in first
    assert "503" in first


def test_wrong_secret_is_refused(make_venue: Callable[..., SimVenue]) -> None:
    venue = make_venue()

    with pytest.raises(AlpacaApiError) as caught:
        alpaca(venue, api_secret="wrong").account()

    assert caught.value.status == 401


def test_simvenue_command_prints_exportable_environment() -> None:
    out = io.StringIO()

    call_command(
        "simvenue",
        "--run-for-s",
        "0.05",
        "--position",
        "AAPL=5",
        "--price",
        "AAPL=187.25",
        "--knob",
        "whitelist_chain=Ethereum",
        "--knob",
        "market_open=false",
        stdout=out,
    )

    lines = out.getvalue().splitlines()
    exported = dict(
        line.removeprefix("export ").split("=", 1) for line in lines if line.startswith("export ")
    )
    for name in (
        "ALPACA_BASE_URL",
        "ALPACA_API_KEY",
        "ALPACA_API_SECRET",
        "ALPACA_ACCOUNT_ID",
        "CIRCLE_IRIS_URL",
        "ETHEREUM_RPC_URL",
        "BASE_RPC_URL",
        "EVM_PRIVATE_KEY",
        "MARKET_MAKER_WALLET",
        "REDEMPTION_WALLET",
        "BASE_ORDERBOOK",
        "USDC_VAULT_ID",
        "SIM_EQUITY_TOKEN_AAPL",
    ):
        assert exported.get(name), name


def broker_headers(venue: SimVenue, *, basic: bool = True, apca: bool = True) -> dict[str, str]:
    headers = {}
    if basic:
        token = base64.b64encode(f"{venue.api_key}:{venue.api_secret}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    if apca:
        headers["APCA-API-KEY-ID"] = venue.api_key
        headers["APCA-API-SECRET-KEY"] = venue.api_secret
    return headers


@pytest.mark.parametrize(
    ("basic", "apca"), [(False, True), (True, False), (False, False)], ids=["apca", "basic", "none"]
)
def test_wallet_routes_refuse_requests_without_basic_auth_and_apca_headers(
    make_venue: Callable[..., SimVenue], basic: bool, apca: bool
) -> None:
    venue = make_venue()
    url = f"{venue.alpaca_url}/v1/accounts/{venue.account_id}/wallets/whitelists"

    refused = requests.get(url, headers=broker_headers(venue, basic=basic, apca=apca), timeout=5)
    accepted = requests.get(url, headers=broker_headers(venue), timeout=5)

    assert refused.status_code == 401
    assert accepted.status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/v2/account",
        "/v2/positions",
        "/v2/tokenization/requests",
        "/v2/wallets/transfers",
        "/v1/accounts/{acct}/wallets/transfers/x/y",
    ],
)
def test_routes_real_alpaca_does_not_serve_here_are_404(
    make_venue: Callable[..., SimVenue], path: str
) -> None:
    venue = make_venue()

    answer = requests.get(
        venue.alpaca_url + path.format(acct=venue.account_id),
        headers=broker_headers(venue),
        timeout=5,
    )

    assert answer.status_code == 404


def test_transfer_list_ignores_a_transfer_id_filter_and_the_client_reads_by_id(
    make_venue: Callable[..., SimVenue], scratch_account: SimAccount
) -> None:
    venue = make_venue(usdc_crypto_position=Decimal(1000))  # withdrawals spend USDC
    venue.server.whitelist_set(scratch_account.address, "APPROVED", chain="Ethereum")
    client = alpaca(venue)
    ours = client.initiate_withdrawal(amount_usdc=Decimal(60), address=scratch_account.address)

    listed = requests.get(
        f"{venue.alpaca_url}/v1/accounts/{venue.account_id}/wallets/transfers",
        params={"transfer_id": ours.id},
        headers=broker_headers(venue),
        timeout=5,
    ).json()
    read = client.get_transfer(ours.id)

    assert len(listed) > 1
    assert any(row.get("direction") == "INCOMING" for row in listed if isinstance(row, dict))
    assert read.id == ours.id
    assert read.direction is TransferDirection.OUTGOING
    assert read.chain == "ethereum"


def test_tokenization_history_of_unknown_shape_never_fails_a_lookup(
    make_venue: Callable[..., SimVenue],
    scratch_account: SimAccount,
    caplog: pytest.LogCaptureFixture,
) -> None:
    venue = make_venue()
    client = alpaca(venue)
    accepted = client.request_mint(
        underlying_symbol="AAPL",
        quantity_shares=Decimal(1),
        wallet_address=scratch_account.address,
        issuer_request_id="among-the-history",
    )

    with caplog.at_level("WARNING", logger="venues.alpaca"):
        found = client.find_request_by_issuer_request_id("among-the-history")
        listed = client.list_requests()

    assert found is not None
    assert found.tokenization_request_id == accepted.tokenization_request_id
    assert TokenizationStatus.FAILED in {r.status for r in listed}
    skipped = [r for r in caplog.records if "skipping entry" in r.getMessage()]
    assert len(skipped) >= 100


@pytest.mark.parametrize("spelling", ["ETH", "Ethereum"])
def test_withdrawal_works_whichever_way_the_whitelist_spells_ethereum(
    make_venue: Callable[..., SimVenue], spelling: str
) -> None:
    venue = make_venue(whitelist_chain=spelling, usdc_crypto_position=Decimal(100))

    started = alpaca(venue).initiate_withdrawal(
        amount_usdc=Decimal(60), address=venue.market_maker.address
    )

    assert started.status is TransferStatus.PENDING
    # Locked by the pending withdrawal: still in qty (spec 15.5), not in qty_available.
    (row,) = [p for p in alpaca(venue).positions() if p.symbol == "USDCUSD"]
    assert (row.qty, row.qty_available) == (Decimal(100), Decimal(40))
    assert venue.server.cash() == Decimal(1000)


def test_a_usdc_withdrawal_larger_than_the_position_is_refused_422(
    make_venue: Callable[..., SimVenue],
) -> None:
    venue = make_venue(usdc_crypto_position=Decimal(50))  # 1000 USD cash is no USDC

    with pytest.raises(InvalidParameters) as caught:
        alpaca(venue).initiate_withdrawal(
            amount_usdc=Decimal(60), address=venue.market_maker.address
        )

    assert caught.value.status == 422
    assert "insufficient balance" in str(caught.value)
    assert [t for t in venue.server.transfers() if t["direction"] == "OUTGOING"] == []


def test_usdcusd_conversions_fill_near_one_with_the_spread(
    make_venue: Callable[..., SimVenue],
) -> None:
    venue = make_venue(
        usdc_crypto_position=Decimal(0),
        usdc_spread_bps=Decimal(20),
        usdc_price_jitter_bps=Decimal(5),
        seed=7,
    )
    client = alpaca(venue)
    buy_price, sell_price = venue.server.usdc_prices()
    assert Decimal("0.998") < sell_price < buy_price < Decimal("1.002")
    assert buy_price - sell_price >= Decimal("0.0019")  # about the 20 bp spread

    bought = client.submit_usdc_conversion(
        side="buy", client_order_id="conv-buy", notional_usd=Decimal(500)
    )
    assert bought.notional == Decimal(500) and bought.qty is None
    filled = wait_for_order(client, bought.id, "filled")
    assert filled.filled_avg_price == buy_price
    assert filled.filled_qty == (Decimal(500) / buy_price).quantize(Decimal("1E-9"), ROUND_DOWN)
    assert venue.server.cash() == Decimal(500)
    assert venue.server.usdc_position() == filled.filled_qty

    sold = client.submit_usdc_conversion(
        side="sell", client_order_id="conv-sell", qty_usdc=Decimal(100)
    )
    done = wait_for_order(client, sold.id, "filled")
    assert done.filled_avg_price == sell_price
    assert venue.server.cash() == Decimal(500) + (100 * sell_price).quantize(
        Decimal("1E-6"), ROUND_DOWN
    )
    assert venue.server.usdc_position() == filled.filled_qty - 100
    with pytest.raises(InsufficientPosition):  # more USDC than held
        client.submit_usdc_conversion(
            side="sell", client_order_id="conv-too-much", qty_usdc=Decimal(1000)
        )


def test_usdc_crypto_position_is_served_but_is_not_an_equity(
    make_venue: Callable[..., SimVenue],
) -> None:
    venue = make_venue(usdc_crypto_position=Decimal("12.5"))
    client = alpaca(venue)

    everything = {p.symbol: p for p in client.positions()}
    equities = client.equity_positions()

    assert everything["USDCUSD"].qty == Decimal("12.5")
    assert not everything["USDCUSD"].is_equity
    assert [(p.symbol, p.qty_available) for p in equities] == [("AAPL", Decimal(100))]


def wait_for_order(client: AlpacaClient, order_id: str, status: str) -> Order:
    deadline = time.monotonic() + 15
    while True:
        order = client.get_order(order_id)
        if order.status == status or time.monotonic() > deadline:
            return order
        time.sleep(0.02)


def test_market_orders_fill_at_the_simulated_price_moving_position_and_cash(
    make_venue: Callable[..., SimVenue],
) -> None:
    venue = make_venue()
    venue.server.set_price("AAPL", Decimal("187.25"))
    client = alpaca(venue)

    bought = client.submit_market_order(
        symbol="AAPL", qty=Decimal("2"), side=OrderSide.BUY, client_order_id="buy-1"
    )
    filled_buy = wait_for_order(client, bought.id, "filled")
    sold = client.submit_market_order(
        symbol="AAPL", qty=Decimal("0.5"), side="sell", client_order_id="sell-1"
    )
    filled_sell = wait_for_order(client, sold.id, "filled")

    assert bought.status == "accepted"
    assert (filled_buy.filled_qty, filled_buy.filled_avg_price) == (Decimal(2), Decimal("187.25"))
    assert filled_sell.is_terminal
    assert venue.server.position("AAPL") == Decimal("101.5")
    assert venue.server.cash() == Decimal(1000) - Decimal("374.5") + Decimal("93.625")


def test_orders_wait_for_the_open_and_a_pending_sell_holds_its_shares(
    make_venue: Callable[..., SimVenue],
) -> None:
    venue = make_venue(market_open=False)
    client = alpaca(venue)

    closed = client.clock()
    sold = client.submit_market_order(
        symbol="AAPL", qty=Decimal(30), side="sell", client_order_id="sell-closed"
    )
    (held,) = client.equity_positions()
    with pytest.raises(InsufficientPosition):
        client.submit_market_order(
            symbol="AAPL", qty=Decimal(71), side="sell", client_order_id="too-many"
        )
    venue.server.set_knobs(market_open=True)
    filled = wait_for_order(client, sold.id, "filled")

    assert not closed.is_open
    assert closed.next_open < closed.next_close
    assert (held.qty, held.qty_available) == (Decimal(100), Decimal(70))
    assert filled.status == "filled"
    assert client.clock().is_open
    (after,) = client.equity_positions()
    assert (after.qty, after.qty_available) == (Decimal(70), Decimal(70))


def test_buying_beyond_cash_and_reusing_a_client_order_id_are_refused(
    make_venue: Callable[..., SimVenue],
) -> None:
    venue = make_venue()
    client = alpaca(venue)
    first = client.submit_market_order(
        symbol="AAPL", qty=Decimal(1), side="buy", client_order_id="once"
    )

    with pytest.raises(InsufficientPosition):
        client.submit_market_order(
            symbol="AAPL", qty=Decimal(100), side="buy", client_order_id="too-dear"
        )
    # The identical request re-sent (same Idempotency-Key, issue 20) is answered with the first
    # order, placed once; the same client_order_id for another order is refused.
    again = client.submit_market_order(
        symbol="AAPL", qty=Decimal(1), side="buy", client_order_id="once"
    )
    assert again.id == first.id
    assert sum(1 for o in venue.server.orders() if o["client_order_id"] == "once") == 1
    with pytest.raises(InvalidParameters):
        client.submit_market_order(
            symbol="AAPL", qty=Decimal(2), side="buy", client_order_id="once"
        )
    with pytest.raises(OrderNotFound):
        client.get_order("no-such-order")


def test_injected_429_is_rate_limited_with_retry_after(make_venue: Callable[..., SimVenue]) -> None:
    venue = make_venue()
    venue.server.fail_next(KEY_ACCOUNT, FAULT_429)

    with pytest.raises(AlpacaRateLimited) as caught:
        alpaca(venue).account()

    assert caught.value.retry_after_s == 2.0


def test_fail_next_refuses_an_endpoint_the_sim_does_not_serve(
    make_venue: Callable[..., SimVenue],
) -> None:
    venue = make_venue()

    with pytest.raises(ValueError, match="not an endpoint"):
        venue.server.fail_next("POST /v2/tokenization/mint")


def test_order_whose_answer_was_lost_is_found_by_client_order_id_and_not_sent_twice(
    make_venue: Callable[..., SimVenue],
) -> None:
    venue = make_venue()
    venue.server.fail_next(KEY_ORDER_POST, FAULT_5XX_AFTER)
    client = alpaca(venue)

    with pytest.raises(AlpacaOutcomeUnknown):
        client.submit_market_order(
            symbol="AAPL", qty=Decimal(3), side="buy", client_order_id="lost-answer"
        )
    found = client.find_order_by_client_order_id("lost-answer")

    assert found is not None
    assert found.qty == Decimal(3)
    assert client.find_order_by_client_order_id("never-sent") is None
    assert venue.server.request_count(KEY_ORDER_POST) == 1
    assert len(venue.server.orders()) == 1


# --- a long account history: lookups bounded by the operation's start ------------------------
# The tokenization list takes Alpaca's documented filters (`type`, `status`, `underlying_symbol`,
# `issuer`, `network`, and `after` / `before`: created strictly after / before a time) and has
# no pagination; the wallet transfer list takes no parameter at all. A lookup bounded by the
# time its operation started downloads only the recent tokenization requests, and parses only
# the recent transfers.

HISTORY = 3000
# The long history ends here, one entry an hour before it (`long_tokenization_history`).
HISTORY_END = datetime(2025, 6, 1, tzinfo=UTC)


def test_mint_lookup_downloads_only_requests_since_the_operation_started(
    make_venue: Callable[..., SimVenue], scratch_account: SimAccount
) -> None:
    venue = make_venue(history_rows=HISTORY, usdc_crypto_position=Decimal(1000))
    client = alpaca(venue)
    started = datetime.now(UTC)
    accepted = client.request_mint(
        underlying_symbol="AAPL",
        quantity_shares=Decimal(1),
        wallet_address=scratch_account.address,
        issuer_request_id="op-key-1",
    )

    found = client.find_request_by_issuer_request_id("op-key-1", since=started)
    recent_rows = venue.server.rows_served(KEY_TOKENIZATION_LIST)
    everything = client.find_request_by_issuer_request_id("op-key-1")
    all_rows = venue.server.rows_served(KEY_TOKENIZATION_LIST) - recent_rows

    assert found is not None and everything is not None
    assert found.tokenization_request_id == accepted.tokenization_request_id
    assert everything == found
    assert recent_rows == 1  # ours; none of the history
    assert all_rows > HISTORY // 2  # every mint Alpaca ever held for the account
    assert client.find_request_by_issuer_request_id("never-sent", since=started) is None


def test_redemption_lookup_is_bounded_by_the_operation_start(
    make_venue: Callable[..., SimVenue],
) -> None:
    venue = make_venue(history_rows=HISTORY, history_malformed_rows=0)
    client = alpaca(venue)
    # A redemption of the history (the fifth entry, 5 hours before its end) is found from a
    # bound at its time, and not from one after it (beyond the clock skew allowance).
    row = long_tokenization_history(HISTORY, wallet="0x" + "00" * 20)[4]
    tx, sent = row["tx_hash"], HISTORY_END - timedelta(hours=5)
    assert row["type"] == "redeem" and row["created_at"] == "2025-05-31T19:00:00Z"

    assert client.find_redemption_by_tx(tx, since=sent) is not None
    assert client.find_redemption_by_tx(tx, since=sent + CLOCK_SKEW + timedelta(hours=1)) is None
    assert venue.server.rows_served(KEY_TOKENIZATION_LIST) < 10


def test_tokenization_list_filters_as_documented(make_venue: Callable[..., SimVenue]) -> None:
    venue = make_venue(history_rows=HISTORY, history_malformed_rows=0)
    client = alpaca(venue)
    after = HISTORY_END - timedelta(hours=10, minutes=30)

    listed = client.list_requests(after=after)
    redeems = client.list_requests(type=TokenizationType.REDEEM, after=after)
    base = f"{venue.alpaca_url}/v1/accounts/{venue.account_id}/tokenization/requests"
    auth = (venue.api_key, venue.api_secret)
    window = requests.get(
        base,
        params={"after": "2025-05-31T13:00:00Z", "before": "2025-05-31T16:00:00Z"},
        auth=auth,
        timeout=10,
    ).json()
    other_issuer = requests.get(base, params={"issuer": "xstocks"}, auth=auth, timeout=10).json()
    bad_time = requests.get(base, params={"after": "yesterday"}, auth=auth, timeout=10)

    # The ten history entries of the last 10.5 hours (2025-05-31T14:00 .. 2025-06-01T00:00
    # less one hour each), plus the short history's two of 2025-06-02.
    assert len(listed) == 12
    assert all(r.created_at > after for r in listed)
    assert {r.type for r in redeems} == {TokenizationType.REDEEM}
    assert len(redeems) == 5
    assert [row["created_at"] for row in window] == ["2025-05-31T15:00:00Z", "2025-05-31T14:00:00Z"]
    assert {row["issuer"] for row in other_issuer} == {"xstocks"}
    assert bad_time.status_code == 422


def test_transfer_lookups_parse_only_transfers_since_the_operation_started(
    make_venue: Callable[..., SimVenue], sim_chains: SimChains, scratch_account: SimAccount
) -> None:
    venue = make_venue(history_rows=HISTORY, usdc_crypto_position=Decimal(1000))
    client = alpaca(venue)
    started = datetime.now(UTC)
    withdrawal = client.initiate_withdrawal(
        amount_usdc=Decimal(60), address=venue.market_maker.address
    )
    deposit_address = client.deposit_address()
    sim_chains.mint_usdc(sim_chains.ethereum, scratch_account.address, 25 * USDC)
    receipt = sim_chains.transfer(
        sim_chains.ethereum, sim_chains.ethereum.usdc, scratch_account, deposit_address, 25 * USDC
    )

    deposit = client.poll_deposit_by_tx(receipt.tx_hash, since=started, **POLL)
    candidates = client.find_outgoing_transfers(
        to_address=venue.market_maker.address,
        amount_usdc=Decimal(60),
        created_at_or_after=started - CLOCK_SKEW,
    )
    recent = client.list_transfers(since=started - CLOCK_SKEW)
    served_before = venue.server.rows_served(KEY_TRANSFER_LIST)
    client.list_transfers(since=started - CLOCK_SKEW)

    assert deposit.direction is TransferDirection.INCOMING
    assert deposit.amount == Decimal(25)
    assert [t.id for t in candidates] == [withdrawal.id]
    # Only ours are parsed (and one history entry without a readable time, skipped with a
    # warning as before); Alpaca still sends the whole history: the list takes no filter.
    assert {t.id for t in recent} == {withdrawal.id, deposit.id}
    assert venue.server.rows_served(KEY_TRANSFER_LIST) - served_before > HISTORY

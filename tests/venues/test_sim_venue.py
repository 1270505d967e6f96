"""The real Alpaca and Iris clients against the running simulated venue on the local chains."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from decimal import Decimal

import pytest
import requests
from django.core.management import call_command
from eth_utils import to_checksum_address

from venues import cctp
from venues.alpaca import (
    AddressNotWhitelisted,
    AlpacaApiError,
    AlpacaClient,
    AlpacaOutcomeUnknown,
    InsufficientPosition,
    TokenizationStatus,
    TokenizationType,
    TransferRelationship,
    TransferStatus,
)
from venues.chain import erc20_transfers_in
from venues.circle import AttestationTimeout, IrisClient
from venues.http import RetryPolicy
from venues.sim.chain import SimAccount, SimChains
from venues.sim.server import FAULT_5XX, FAULT_5XX_AFTER, FAULT_HANG
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
MINT = "POST /v2/tokenization/mint"
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


def test_withdrawal_moves_usdc_onchain_minus_network_fee(
    make_venue: Callable[..., SimVenue], sim_chains: SimChains, scratch_account: SimAccount
) -> None:
    venue = make_venue(withdrawal_network_fee_usdc=Decimal("0.5"))
    venue.server.whitelist_set(scratch_account.address, "APPROVED")
    client = alpaca(venue)

    started = client.initiate_withdrawal(amount_usdc=Decimal(100), address=scratch_account.address)
    done = client.poll_transfer_until_complete(started.id, **POLL)

    assert started.status is TransferStatus.PENDING
    assert done.status is TransferStatus.COMPLETE
    assert done.network_fee_amount == Decimal("0.5")
    usdc = sim_chains.ethereum.usdc
    assert (
        sim_chains.balance(sim_chains.ethereum, usdc, scratch_account.address) == 995 * USDC // 10
    )
    receipt = sim_chains.client("ethereum").receipt(done.tx_hash)
    assert erc20_transfers_in(receipt, token=usdc, to=scratch_account.address)
    assert venue.server.cash() == Decimal(900)


def test_withdrawal_failure_refunds_cash_and_sends_nothing(
    make_venue: Callable[..., SimVenue], sim_chains: SimChains, scratch_account: SimAccount
) -> None:
    venue = make_venue(withdrawal_fail_rate=1.0)
    venue.server.whitelist_set(scratch_account.address, "APPROVED")
    client = alpaca(venue)

    started = client.initiate_withdrawal(amount_usdc=Decimal(60), address=scratch_account.address)
    done = client.poll_transfer_until_complete(started.id, **POLL)

    assert done.status is TransferStatus.FAILED
    usdc = sim_chains.ethereum.usdc
    assert sim_chains.balance(sim_chains.ethereum, usdc, scratch_account.address) == 0
    assert venue.server.cash() == Decimal(1000)


@pytest.mark.parametrize("status", ["PENDING", "REJECTED", None])
def test_withdrawal_to_unapproved_address_is_refused_before_posting(
    make_venue: Callable[..., SimVenue], scratch_account: SimAccount, status: str | None
) -> None:
    venue = make_venue()
    venue.server.whitelist_set(scratch_account.address, status)

    with pytest.raises(AddressNotWhitelisted):
        alpaca(venue).initiate_withdrawal(amount_usdc=Decimal(60), address=scratch_account.address)

    assert venue.server.request_count("POST /v1/accounts/{acct}/wallets/transfers") == 0


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
    deposit_address = client.deposit_address()
    sim_chains.mint_usdc(sim_chains.ethereum, scratch_account.address, 250 * USDC)

    receipt = sim_chains.transfer(
        sim_chains.ethereum, sim_chains.ethereum.usdc, scratch_account, deposit_address, 250 * USDC
    )
    deposit = client.poll_deposit_by_tx(receipt.tx_hash, **POLL)

    assert deposit_address == to_checksum_address(venue.deposit_address)
    assert deposit.relationship is TransferRelationship.INCOMING
    assert deposit.status is TransferStatus.COMPLETE
    assert deposit.amount == Decimal(250)
    assert deposit.from_address == scratch_account.address
    assert venue.server.cash() == Decimal(1250)


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
    venue.server.fail_next("GET /v2/account", FAULT_5XX, times=2)

    account = alpaca(venue).account()

    assert account.cash == Decimal(1000)
    assert venue.server.request_count("GET /v2/account") == 3


def test_injected_hang_times_out_and_the_read_is_retried(
    make_venue: Callable[..., SimVenue],
) -> None:
    # The hang outlasts the client timeout by far, and the timeout leaves a loaded machine
    # ample time to answer the retried read.
    venue = make_venue(hang_s=4)
    venue.server.fail_next("GET /v2/positions", FAULT_HANG)

    positions = alpaca(venue, timeout_s=1.5).positions()

    assert [(p.symbol, p.qty) for p in positions] == [("AAPL", Decimal(100))]
    assert venue.server.request_count("GET /v2/positions") == 2


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

    call_command("simvenue", "--run-for-s", "0.05", "--position", "AAPL=5", stdout=out)

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

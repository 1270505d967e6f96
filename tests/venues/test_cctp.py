"""CCTP V2: message helpers (pure) and the bridge on two anvil chains with the sim attester."""

from __future__ import annotations

from decimal import Decimal

import pytest
from eth_account import Account
from eth_utils import keccak

from venues import cctp
from venues.chain import (
    CctpBurn,
    EvmChain,
    InvalidArgument,
    MessageSentEventNotFound,
    PreflightReverted,
    TransactionReverted,
    is_already_received,
)
from venues.sim.chain import SimAccount, SimChain, SimChains

# -- pure helpers ----------------------------------------------------------------------------

BURN_TOKEN = "0x" + "aa" * 20
RECIPIENT = "0x" + "bb" * 20
SENDER = "0x" + "cc" * 20


def _message(
    *,
    source: int = 0,
    destination: int = 6,
    nonce: bytes = b"\x00" * 31 + b"\x07",
    amount: int = 1_000_000,
    max_fee: int = 100,
    fee_executed: int = 0,
    hook_data: bytes = b"",
) -> bytes:
    header = (
        (1).to_bytes(4, "big")
        + source.to_bytes(4, "big")
        + destination.to_bytes(4, "big")
        + nonce
        + b"\x01" * 32  # sender (TokenMessenger)
        + b"\x02" * 32  # recipient (TokenMessenger)
        + b"\x00" * 32  # destination caller
        + (1000).to_bytes(4, "big")
        + (0).to_bytes(4, "big")
    )
    body = (
        (1).to_bytes(4, "big")
        + cctp.bytes32(BURN_TOKEN)
        + cctp.bytes32(RECIPIENT)
        + amount.to_bytes(32, "big")
        + cctp.bytes32(SENDER)
        + max_fee.to_bytes(32, "big")
        + fee_executed.to_bytes(32, "big")
        + (0).to_bytes(32, "big")
        + hook_data
    )
    return header + body


def test_parse_message_reads_v2_header_and_burn_body() -> None:
    nonce = bytes(range(32))
    parsed = cctp.parse_message(_message(nonce=nonce, hook_data=b"hook"))
    assert (parsed.version, parsed.source_domain, parsed.destination_domain) == (1, 0, 6)
    assert parsed.nonce == "0x" + nonce.hex()
    assert parsed.min_finality_threshold == 1000
    assert parsed.finality_threshold_executed == 0
    assert parsed.body.burn_token.lower() == BURN_TOKEN
    assert parsed.body.mint_recipient.lower() == RECIPIENT
    assert parsed.body.message_sender.lower() == SENDER
    assert (parsed.body.amount_units, parsed.body.max_fee_units) == (1_000_000, 100)
    assert parsed.body.fee_executed_units == 0
    assert parsed.body.hook_data == b"hook"


def test_parse_message_accepts_hex_and_hash_is_keccak_of_bytes() -> None:
    raw = _message()
    assert cctp.parse_message("0x" + raw.hex()) == cctp.parse_message(raw)
    assert cctp.message_hash(raw) == "0x" + keccak(raw).hex()
    assert cctp.message_hash("0x" + raw.hex()) == cctp.message_hash(raw)


@pytest.mark.parametrize("length", [0, 147, 148, 375])
def test_parse_message_rejects_a_message_without_a_full_burn_body(length: int) -> None:
    with pytest.raises(cctp.CctpMessageError, match="at least 376 bytes"):
        cctp.parse_message(_message()[:length])


@pytest.mark.parametrize(
    ("amount_units", "fee_bps", "expected"),
    [
        (1_000_000, Decimal("1"), 100),
        (1_000_001, Decimal("1"), 101),  # ceil, never under-pay the fast fee
        (1_000_000, Decimal("0"), 0),
        (1_000_000, Decimal("1.3"), 130),
        (999, Decimal("0.5"), 1),
        (123_456_789_000_000, Decimal("0.01"), 123_456_789),
        (123_456_789_000_001, Decimal("0.01"), 123_456_790),
        (0, Decimal("1"), 0),
    ],
)
def test_max_fee_is_the_ceiling_of_amount_times_bps(
    amount_units: int, fee_bps: Decimal, expected: int
) -> None:
    assert cctp.max_fee(amount_units, fee_bps) == expected


@pytest.mark.parametrize(
    ("amount_units", "fee_bps"),
    [(-1, Decimal("1")), (1, Decimal("-0.1")), (1, Decimal("NaN")), (1.5, Decimal("1"))],
)
def test_max_fee_rejects_negative_or_non_exact_inputs(amount_units: int, fee_bps: Decimal) -> None:
    with pytest.raises(cctp.CctpMessageError):
        cctp.max_fee(amount_units, fee_bps)


def test_bytes32_left_pads_an_address_and_rejects_other_lengths() -> None:
    assert cctp.bytes32(RECIPIENT) == b"\x00" * 12 + bytes.fromhex("bb" * 20)
    with pytest.raises(cctp.CctpMessageError):
        cctp.bytes32("0x1234")


def test_nonce_u64_is_the_last_eight_bytes_big_endian() -> None:
    assert cctp.nonce_u64("0x" + "00" * 24 + "0000000000000102") == 258
    with pytest.raises(cctp.CctpMessageError):
        cctp.nonce_u64("0x01")


def test_attested_fields_set_fee_and_finality_and_keep_everything_else() -> None:
    raw = _message(max_fee=100)
    attested = cctp.parse_message(cctp.with_attested_fields(raw, fee_executed_units=60))
    original = cctp.parse_message(raw)
    assert attested.body.fee_executed_units == 60
    assert attested.finality_threshold_executed == 1000
    assert attested.body.amount_units == original.body.amount_units
    assert attested.nonce == original.nonce


@pytest.mark.parametrize("fee", [101, -1])
def test_attested_fee_outside_zero_to_max_fee_is_refused(fee: int) -> None:
    with pytest.raises(cctp.CctpMessageError, match="maxFee 100"):
        cctp.with_attested_fields(_message(max_fee=100), fee_executed_units=fee)


# -- on the local chains ---------------------------------------------------------------------

chain = pytest.mark.chain
group = pytest.mark.xdist_group("chain")
BOTH_CHAINS = pytest.mark.parametrize("source_name", ["ethereum", "base"])


def _other(chains: SimChains, source: SimChain) -> SimChain:
    return chains.base if source is chains.ethereum else chains.ethereum


def _burn(
    chains: SimChains,
    source: SimChain,
    signer: SimAccount,
    *,
    amount_units: int,
    fee_bps: Decimal = Decimal("1"),
    recipient: str | None = None,
) -> tuple[EvmChain, cctp.CctpMessage, CctpBurn]:
    client = chains.client(source, signer)
    if (
        client.erc20_allowance(
            token=source.usdc, owner=signer.address, spender=source.token_messenger
        )
        < amount_units
    ):
        client.send(
            client.build_erc20_approve(
                token=source.usdc, spender=source.token_messenger, amount_units=amount_units
            )
        )
    receipt = client.send(
        client.build_deposit_for_burn(
            token_messenger=source.token_messenger,
            burn_token=source.usdc,
            amount_units=amount_units,
            destination_domain=_other(chains, source).domain,
            mint_recipient=recipient or signer.address,
            max_fee_units=cctp.max_fee(amount_units, fee_bps),
        )
    )
    burn = client.decode_message_sent(receipt)
    return client, cctp.parse_message(burn.message), burn


@chain
@group
@BOTH_CHAINS
def test_approval_needed_with_zero_then_insufficient_then_sufficient_allowance(
    sim_chains: SimChains, scratch_account: SimAccount, source_name: str
) -> None:
    source = sim_chains.chain(source_name)
    client = sim_chains.client(source, scratch_account)
    sim_chains.mint_usdc(source, scratch_account.address, 500_000_000)
    allowance = {
        "token": source.usdc,
        "owner": scratch_account.address,
        "spender": source.token_messenger,
    }
    burn_args = {
        "token_messenger": source.token_messenger,
        "burn_token": source.usdc,
        "amount_units": 100_000_000,
        "destination_domain": _other(sim_chains, source).domain,
        "mint_recipient": scratch_account.address,
        "max_fee_units": 10_000,
    }

    assert client.erc20_allowance(**allowance) == 0
    with pytest.raises(PreflightReverted, match="insufficient allowance"):
        client.build_deposit_for_burn(**burn_args)

    client.send(
        client.build_erc20_approve(
            token=source.usdc, spender=source.token_messenger, amount_units=99_999_999
        )
    )
    assert client.erc20_allowance(**allowance) == 99_999_999
    with pytest.raises(PreflightReverted, match="insufficient allowance"):
        client.build_deposit_for_burn(**burn_args)

    client.send(
        client.build_erc20_approve(
            token=source.usdc, spender=source.token_messenger, amount_units=100_000_000
        )
    )
    client.send(client.build_deposit_for_burn(**burn_args))
    assert client.erc20_allowance(**allowance) == 0
    assert client.erc20_balance(token=source.usdc, owner=scratch_account.address) == 400_000_000


@chain
@group
@BOTH_CHAINS
def test_burn_emits_v2_message_with_unique_nonzero_nonce(
    sim_chains: SimChains, scratch_account: SimAccount, source_name: str
) -> None:
    source = sim_chains.chain(source_name)
    destination = _other(sim_chains, source)
    sim_chains.mint_usdc(source, scratch_account.address, 300_000_000)
    recipient = Account.create().address

    client, first, burn = _burn(
        sim_chains, source, scratch_account, amount_units=200_000_000, recipient=recipient
    )
    _, second, _ = _burn(sim_chains, source, scratch_account, amount_units=50_000_000)

    assert (first.source_domain, first.destination_domain) == (source.domain, destination.domain)
    assert first.nonce != "0x" + "00" * 32
    assert first.nonce != second.nonce
    assert first.min_finality_threshold == cctp.FINALITY_THRESHOLD_FAST
    assert first.body.amount_units == 200_000_000
    assert first.body.max_fee_units == 20_000
    assert first.body.fee_executed_units == 0
    assert first.body.mint_recipient == recipient
    assert first.body.burn_token == source.usdc
    assert first.body.message_sender == scratch_account.address
    assert first.recipient == "0x" + cctp.bytes32(destination.token_messenger).hex()
    assert burn.message_hash == "0x" + keccak(burn.message).hex()
    assert burn.amount == 200_000_000
    assert client.erc20_balance(token=source.usdc, owner=scratch_account.address) == 50_000_000


@chain
@group
@BOTH_CHAINS
def test_full_bridge_mints_amount_minus_fee_executed_on_the_other_chain(
    sim_chains: SimChains, scratch_account: SimAccount, source_name: str
) -> None:
    source = sim_chains.chain(source_name)
    destination = _other(sim_chains, source)
    sim_chains.mint_usdc(source, scratch_account.address, 1_000_000_000)
    supply_before = sim_chains.call(destination, "MintableERC20", destination.usdc, "totalSupply")
    fees_before = sim_chains.balance(
        destination, destination.usdc, sim_chains.fee_recipient.address
    )

    _, _, burn = _burn(
        sim_chains, source, scratch_account, amount_units=1_000_000_000, fee_bps=Decimal("1.3")
    )
    message, attestation = sim_chains.attest(burn.message, fee_executed_units=90_000)
    relayer = sim_chains.client(destination, scratch_account)
    receipt = relayer.send(
        relayer.build_receive_message(
            message_transmitter=destination.message_transmitter,
            message=message,
            attestation=attestation,
        )
    )

    assert receipt.succeeded
    assert (
        relayer.erc20_balance(token=destination.usdc, owner=scratch_account.address)
        == 1_000_000_000 - 90_000
    )
    fees_after = sim_chains.balance(destination, destination.usdc, sim_chains.fee_recipient.address)
    assert fees_after - fees_before == 90_000
    supply_after = sim_chains.call(destination, "MintableERC20", destination.usdc, "totalSupply")
    assert supply_after - supply_before == 1_000_000_000
    assert relayer.cctp_nonce_used(
        message_transmitter=destination.message_transmitter,
        nonce=burn.nonce,
    )


@chain
@group
def test_second_receive_of_the_same_message_is_refused_as_already_received(
    sim_chains: SimChains, scratch_account: SimAccount
) -> None:
    sim_chains.mint_usdc(sim_chains.ethereum, scratch_account.address, 10_000_000)
    _, _, burn = _burn(sim_chains, sim_chains.ethereum, scratch_account, amount_units=10_000_000)
    message, attestation = sim_chains.attest(burn.message)
    base = sim_chains.client(sim_chains.base, scratch_account)
    receive = {
        "message_transmitter": sim_chains.base.message_transmitter,
        "message": message,
        "attestation": attestation,
    }
    base.send(base.build_receive_message(**receive))

    with pytest.raises(PreflightReverted) as preflight:
        base.build_receive_message(**receive)
    assert is_already_received(preflight.value)

    late = base.build_receive_message(**receive, gas=500_000)
    base.broadcast(late)
    with pytest.raises(TransactionReverted) as mined:
        base.wait_for_receipt(late.tx_hash, timeout_s=10, poll_s=0.05)
    assert is_already_received(mined.value)
    assert base.erc20_balance(token=sim_chains.base.usdc, owner=scratch_account.address) == (
        10_000_000
    )


@chain
@group
@pytest.mark.parametrize("defect", ["wrong_signer", "tampered_amount", "short_signature"])
def test_invalid_attestation_reverts_and_mints_nothing(
    sim_chains: SimChains, scratch_account: SimAccount, defect: str
) -> None:
    sim_chains.mint_usdc(sim_chains.base, scratch_account.address, 5_000_000)
    _, _, burn = _burn(sim_chains, sim_chains.base, scratch_account, amount_units=5_000_000)
    message, attestation = sim_chains.attest(burn.message)
    if defect == "wrong_signer":
        signed = Account.unsafe_sign_hash(keccak(message), Account.create().key)
        attestation = (
            signed.r.to_bytes(32, "big") + signed.s.to_bytes(32, "big") + bytes([signed.v])
        )
        expected = "not attester"
    elif defect == "tampered_amount":
        at = cctp.HEADER_LENGTH + 68
        message = message[:at] + (50_000_000).to_bytes(32, "big") + message[at + 32 :]
        expected = "not attester"
    else:
        attestation = attestation[:64]
        expected = "Invalid attestation length"
    ethereum = sim_chains.client(sim_chains.ethereum, scratch_account)

    with pytest.raises(PreflightReverted, match=expected):
        ethereum.build_receive_message(
            message_transmitter=sim_chains.ethereum.message_transmitter,
            message=message,
            attestation=attestation,
        )
    mined = ethereum.build_receive_message(
        message_transmitter=sim_chains.ethereum.message_transmitter,
        message=message,
        attestation=attestation,
        gas=500_000,
    )
    ethereum.broadcast(mined)
    with pytest.raises(TransactionReverted, match=expected):
        ethereum.wait_for_receipt(mined.tx_hash, timeout_s=10, poll_s=0.05)
    assert (
        ethereum.erc20_balance(token=sim_chains.ethereum.usdc, owner=scratch_account.address) == 0
    )


@chain
@group
def test_message_received_on_the_wrong_domain_reverts(
    sim_chains: SimChains, scratch_account: SimAccount
) -> None:
    sim_chains.mint_usdc(sim_chains.ethereum, scratch_account.address, 1_000_000)
    _, _, burn = _burn(sim_chains, sim_chains.ethereum, scratch_account, amount_units=1_000_000)
    message, attestation = sim_chains.attest(burn.message)
    ethereum = sim_chains.client(sim_chains.ethereum, scratch_account)
    with pytest.raises(PreflightReverted, match="Invalid destination domain"):
        ethereum.build_receive_message(
            message_transmitter=sim_chains.ethereum.message_transmitter,
            message=message,
            attestation=attestation,
        )


@chain
@group
def test_receipt_without_message_sent_is_an_error(
    sim_chains: SimChains, ethereum_client: EvmChain
) -> None:
    receipt = sim_chains.mint_usdc(sim_chains.ethereum, Account.create().address, 1)
    with pytest.raises(MessageSentEventNotFound) as caught:
        ethereum_client.decode_message_sent(receipt)
    assert caught.value.tx_hash == receipt.tx_hash


@chain
@group
def test_max_fee_not_below_amount_is_refused_before_signing(
    sim_chains: SimChains, base_client: EvmChain
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        base_client.build_deposit_for_burn(
            token_messenger=sim_chains.base.token_messenger,
            burn_token=sim_chains.base.usdc,
            amount_units=100,
            destination_domain=cctp.DOMAIN_ETHEREUM,
            mint_recipient=sim_chains.market_maker.address,
            max_fee_units=100,
        )
    assert caught.value.field == "max_fee_units"

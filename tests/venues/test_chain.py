"""EvmChain against real anvil chains: reads, two-phase writes, idempotent broadcast, scans."""

from __future__ import annotations

import hashlib
import json

import pytest
from eth_account import Account
from eth_utils.abi import abi_to_signature

from venues.chain import (
    ERC20_ABI,
    MESSAGE_TRANSMITTER_V2_ABI,
    ORDERBOOK_VAULT_ABI,
    TOKEN_MESSENGER_V2_ABI,
    ChainError,
    ChainRpcError,
    EvmChain,
    InvalidArgument,
    NonceAlreadyUsed,
    PreflightReverted,
    TransactionReverted,
    erc20_transfers_in,
    redact_url,
)
from venues.sim.chain import BUILD_DIR, SimAccount, SimChains

CONTRACTS_DIR = BUILD_DIR.parent


# -- build artifacts (no chain) -------------------------------------------------------------


@pytest.mark.parametrize("sol", sorted(p.name for p in CONTRACTS_DIR.glob("*.sol")))
def test_committed_build_matches_its_solidity_source(sol: str) -> None:
    digest = hashlib.sha256((CONTRACTS_DIR / sol).read_bytes()).hexdigest()
    builds = [json.loads(p.read_text()) for p in BUILD_DIR.glob("*.json")]
    from_source = [b for b in builds if b["sourceFile"] == sol]
    assert from_source, f"no build JSON from {sol}: run `npm run compile`"
    for build in from_source:
        assert build["sourceSha256"] == digest, f"{build['contractName']}: run `npm run compile`"
        assert build["bytecode"].startswith("0x") and len(build["bytecode"]) > 100


def _signatures(abi: list[dict]) -> set[str]:
    return {
        f"{e['type']} {e['name']}({','.join(i['type'] for i in e.get('inputs', []))})"
        for e in abi
        if e["type"] in ("function", "event")
    }


@pytest.mark.parametrize(
    ("client_abi", "contract"),
    [
        (ERC20_ABI, "MintableERC20"),
        (TOKEN_MESSENGER_V2_ABI, "TokenMessengerV2"),
        (MESSAGE_TRANSMITTER_V2_ABI, "MessageTransmitterV2"),
        (ORDERBOOK_VAULT_ABI, "OrderBookVault"),
    ],
)
def test_client_abi_is_implemented_by_the_simulated_contract(
    client_abi: list[dict], contract: str
) -> None:
    sim_abi = json.loads((BUILD_DIR / f"{contract}.json").read_text())["abi"]
    assert _signatures(client_abi) <= _signatures(sim_abi)


# Rain IRaindexV6's vault functions and events, as the real order book declares them
# (`Float` is bytes32; `TaskV2` is ((interpreter, store, bytecode), (signer, context, sig)[])).
_TASKS = "((address,address,bytes),(address,bytes32[],bytes)[])[]"
REAL_ORDERBOOK_VAULT_FUNCTIONS = {
    f"deposit4(address,bytes32,bytes32,{_TASKS})",
    f"withdraw4(address,bytes32,bytes32,{_TASKS})",
    "vaultBalance2(address,address,bytes32)",
}
REAL_ORDERBOOK_VAULT_EVENTS = {
    "DepositV2(address,address,bytes32,uint256)",
    "WithdrawV2(address,address,bytes32,bytes32,bytes32,uint256)",
}


def test_vault_client_and_simulated_order_book_use_the_real_order_book_signatures() -> None:
    client = {abi_to_signature(e) for e in ORDERBOOK_VAULT_ABI if e["type"] == "function"}
    assert client == REAL_ORDERBOOK_VAULT_FUNCTIONS
    sim_abi = json.loads((BUILD_DIR / "OrderBookVault.json").read_text())["abi"]
    sim_functions = {abi_to_signature(e) for e in sim_abi if e["type"] == "function"}
    sim_events = {abi_to_signature(e) for e in sim_abi if e["type"] == "event"}
    assert sim_functions >= REAL_ORDERBOOK_VAULT_FUNCTIONS
    assert sim_events >= REAL_ORDERBOOK_VAULT_EVENTS
    # The old invented uint256 subset is gone.
    assert not {s for s in sim_functions if s.startswith("vaultBalance(")}


# -- redaction (no chain needed: nothing listens on port 9) --------------------------------

SECRET_KEY = "0x" + "5a" * 32


def test_repr_and_rpc_errors_never_show_key_or_url_secrets() -> None:
    client = EvmChain(
        rpc_url="http://user:pw@127.0.0.1:9/v2/api-key-123?token=abc",
        private_key=SECRET_KEY,
        name="base",
        request_timeout_s=2,
    )
    with pytest.raises(ChainRpcError) as caught:
        client.block_number()
    for text in (repr(client), str(caught.value)):
        assert "5a5a5a" not in text
        assert "api-key-123" not in text
        assert "token=abc" not in text
        assert "pw@" not in text
    assert "127.0.0.1:9" in repr(client)


def test_invalid_private_key_error_does_not_echo_it() -> None:
    with pytest.raises(InvalidArgument) as caught:
        EvmChain(rpc_url="http://127.0.0.1:9", private_key="0xnot-a-key-secret", name="base")
    assert "not-a-key-secret" not in str(caught.value)


def test_websocket_rpc_url_is_refused_without_echoing_it() -> None:
    with pytest.raises(InvalidArgument, match="http") as caught:
        EvmChain(rpc_url="wss://node.example/ws/KEY42", private_key=SECRET_KEY, name="base")
    assert "KEY42" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://base-mainnet.g.alchemy.com/v2/KEY", "https://base-mainnet.g.alchemy.com/…"),
        ("http://127.0.0.1:8545", "http://127.0.0.1:8545"),
        ("wss://user:pass@node.example:8546/", "wss://node.example:8546/…"),
    ],
)
def test_redact_url_keeps_only_scheme_host_and_port(url: str, shown: str) -> None:
    assert redact_url(url) == shown


# -- against anvil ---------------------------------------------------------------------------


@pytest.mark.parametrize("chain_name", ["ethereum", "base"])
@pytest.mark.chain
@pytest.mark.xdist_group("chain")
def test_erc20_reads_balance_decimals_symbol(sim_chains: SimChains, chain_name: str) -> None:
    chain = sim_chains.chain(chain_name)
    client = sim_chains.client(chain)
    holder = Account.create().address
    sim_chains.mint_usdc(chain, holder, 1_234_567)
    assert client.erc20_balance(token=chain.usdc, owner=holder) == 1_234_567
    assert client.erc20_decimals(token=chain.usdc) == 6
    assert client.erc20_symbol(token=chain.usdc) == "USDC"
    assert client.chain_id == chain.chain_id


@pytest.mark.chain
@pytest.mark.xdist_group("chain")
def test_expected_chain_id_mismatch_is_refused(sim_chains: SimChains) -> None:
    client = EvmChain(
        rpc_url=sim_chains.base.rpc_url,
        private_key=sim_chains.market_maker.private_key,
        name="base",
        expected_chain_id=8453,
    )
    with pytest.raises(ChainError, match="expected 8453"):
        client.chain_id  # noqa: B018


@pytest.mark.chain
@pytest.mark.xdist_group("chain")
def test_stored_transfer_bytes_rebroadcast_twice_moves_tokens_once(
    sim_chains: SimChains, scratch_account: SimAccount
) -> None:
    chain = sim_chains.base
    token = sim_chains.equity_token("tAAPL")
    sim_chains.mint(chain, token, scratch_account.address, 10 * 10**18)
    client = sim_chains.client(chain, scratch_account)
    recipient = Account.create().address

    signed = client.build_erc20_transfer(token=token, to=recipient, amount_units=3 * 10**18)
    # The stored bytes are what a resumed worker would send again.
    stored = signed.raw
    assert client.broadcast(signed) == signed.tx_hash
    receipt = client.wait_for_receipt(signed.tx_hash, timeout_s=10, poll_s=0.05)
    assert client.broadcast(type(signed)(stored, signed.tx_hash, signed.nonce, signed.chain_id))
    assert client.broadcast(signed) == signed.tx_hash

    assert client.erc20_balance(token=token, owner=recipient) == 3 * 10**18
    transfers = client.erc20_transfers(token=token, from_block=receipt.block_number, to=recipient)
    assert [(t.from_, t.amount_units, t.tx_hash) for t in transfers] == [
        (scratch_account.address, 3 * 10**18, signed.tx_hash)
    ]
    assert erc20_transfers_in(receipt, token=token, to=recipient)[0].amount_units == 3 * 10**18


@pytest.mark.chain
@pytest.mark.xdist_group("chain")
def test_receipt_lookup_for_unknown_hash_is_none(base_client: EvmChain) -> None:
    unknown = "0x" + "ab" * 32
    assert base_client.receipt(unknown) is None
    assert base_client.transaction_known(unknown) is False


@pytest.mark.chain
@pytest.mark.xdist_group("chain")
def test_transfer_log_scan_finds_an_earlier_send_and_only_that_one(
    sim_chains: SimChains, scratch_account: SimAccount
) -> None:
    chain = sim_chains.ethereum
    sim_chains.mint_usdc(chain, scratch_account.address, 100_000_000)
    client = sim_chains.client(chain, scratch_account)
    deposit_address = Account.create().address
    elsewhere = Account.create().address
    start_block = client.block_number()

    sent = client.send(
        client.build_erc20_transfer(token=chain.usdc, to=deposit_address, amount_units=40_000_000)
    )
    client.send(client.build_erc20_transfer(token=chain.usdc, to=elsewhere, amount_units=1))

    found = client.erc20_transfers(
        token=chain.usdc, from_block=start_block, from_=scratch_account.address, to=deposit_address
    )
    assert [(t.tx_hash, t.amount_units, t.block_number) for t in found] == [
        (sent.tx_hash, 40_000_000, sent.block_number)
    ]
    assert (
        client.erc20_transfers(
            token=chain.usdc, from_block=sent.block_number + 1, to=deposit_address
        )
        == []
    )
    assert len(client.erc20_transfers(token=chain.usdc, from_block=start_block, to=elsewhere)) == 1


@pytest.mark.chain
@pytest.mark.xdist_group("chain")
def test_reverted_transaction_raises_transaction_reverted_with_reason(
    sim_chains: SimChains, scratch_account: SimAccount
) -> None:
    client = sim_chains.client(sim_chains.base, scratch_account)
    # An explicit gas limit skips estimation, so the revert happens onchain.
    signed = client.build_erc20_transfer(
        token=sim_chains.base.usdc, to=Account.create().address, amount_units=5, gas=100_000
    )
    client.broadcast(signed)
    with pytest.raises(TransactionReverted) as caught:
        client.wait_for_receipt(signed.tx_hash, timeout_s=10, poll_s=0.05)
    assert caught.value.tx_hash == signed.tx_hash
    assert "transfer amount exceeds balance" in caught.value.reason
    receipt = client.receipt(signed.tx_hash)
    assert receipt is not None and receipt.status == 0


@pytest.mark.chain
@pytest.mark.xdist_group("chain")
def test_build_that_would_revert_signs_nothing(
    sim_chains: SimChains, scratch_account: SimAccount
) -> None:
    client = sim_chains.client(sim_chains.base, scratch_account)
    nonce_before = client.pending_nonce()
    with pytest.raises(PreflightReverted, match="transfer amount exceeds balance"):
        client.build_erc20_transfer(
            token=sim_chains.base.usdc, to=Account.create().address, amount_units=5
        )
    assert client.pending_nonce() == nonce_before


@pytest.mark.chain
@pytest.mark.xdist_group("chain")
def test_caller_allocated_nonces_can_be_broadcast_out_of_order(
    sim_chains: SimChains, scratch_account: SimAccount
) -> None:
    chain = sim_chains.ethereum
    sim_chains.mint_usdc(chain, scratch_account.address, 10)
    client = sim_chains.client(chain, scratch_account)
    nonce = client.pending_nonce()
    to = Account.create().address
    first = client.build_erc20_transfer(token=chain.usdc, to=to, amount_units=4, nonce=nonce)
    # Gas given: at build time the first transfer is not mined yet.
    second = client.build_erc20_transfer(
        token=chain.usdc, to=to, amount_units=6, nonce=nonce + 1, gas=100_000
    )
    client.broadcast(second)
    client.broadcast(first)
    client.wait_for_receipt(first.tx_hash, timeout_s=10, poll_s=0.05)
    client.wait_for_receipt(second.tx_hash, timeout_s=10, poll_s=0.05)
    assert client.erc20_balance(token=chain.usdc, owner=to) == 10


@pytest.mark.chain
@pytest.mark.xdist_group("chain")
def test_signed_tx_whose_nonce_another_tx_used_is_refused(
    sim_chains: SimChains, scratch_account: SimAccount
) -> None:
    chain = sim_chains.ethereum
    sim_chains.mint_usdc(chain, scratch_account.address, 10)
    client = sim_chains.client(chain, scratch_account)
    nonce = client.pending_nonce()
    loser = client.build_erc20_transfer(
        token=chain.usdc, to=Account.create().address, amount_units=1, nonce=nonce
    )
    winner = client.build_erc20_transfer(
        token=chain.usdc, to=Account.create().address, amount_units=2, nonce=nonce
    )
    client.send(winner)
    with pytest.raises(NonceAlreadyUsed):
        client.broadcast(loser)


@pytest.mark.chain
@pytest.mark.xdist_group("chain")
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"to": "0x1234", "amount_units": 1}, "to"),
        ({"to": "0x" + "11" * 20, "amount_units": 0}, "amount_units"),
        ({"to": "0x" + "11" * 20, "amount_units": -1}, "amount_units"),
        ({"to": "0x" + "11" * 20, "amount_units": 2**256}, "amount_units"),
    ],
)
def test_transfer_arguments_are_checked_before_signing(
    sim_chains: SimChains, base_client: EvmChain, kwargs: dict, field: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        base_client.build_erc20_transfer(token=sim_chains.base.usdc, **kwargs)
    assert caught.value.field == field


@pytest.mark.chain
@pytest.mark.xdist_group("chain")
def test_rebroadcast_while_pending_is_accepted_and_mines_once(
    sim_chains: SimChains, scratch_account: SimAccount
) -> None:
    chain = sim_chains.ethereum
    sim_chains.mint_usdc(chain, scratch_account.address, 7)
    client = sim_chains.client(chain, scratch_account)
    recipient = Account.create().address
    signed = client.build_erc20_transfer(token=chain.usdc, to=recipient, amount_units=7)
    provider = sim_chains.web3(chain).provider
    provider.make_request("evm_setAutomine", [False])
    try:
        client.broadcast(signed)
        assert client.broadcast(signed) == signed.tx_hash  # "already imported": still success
        assert client.receipt(signed.tx_hash) is None
        assert client.transaction_known(signed.tx_hash)
        provider.make_request("evm_mine", [])
    finally:
        provider.make_request("evm_setAutomine", [True])
    client.wait_for_receipt(signed.tx_hash, timeout_s=10, poll_s=0.05)
    assert client.erc20_balance(token=chain.usdc, owner=recipient) == 7


@pytest.mark.chain
def test_sim_chains_attach_shares_state_and_stop_ends_the_nodes() -> None:
    with SimChains.start(market_maker_usdc_base_units=5, equity_symbols=("tNVDA",)) as chains:
        attached = SimChains.attach(json.loads(json.dumps(chains.describe())))
        assert attached.base.equity_tokens == {"tNVDA": chains.equity_token("tNVDA")}
        assert attached.balance(attached.base, attached.base.usdc, chains.market_maker.address) == 5
        client = chains.client("base")
    with pytest.raises(ChainRpcError):
        client.block_number()

"""Rain order book vault (IRaindexV6 deposit4 / withdraw4 / vaultBalance2, `Float` amounts)
against the simulated order book on the Base sim chain."""

from __future__ import annotations

import os
from decimal import Decimal

import pytest
from eth_abi import decode as abi_decode
from eth_utils import keccak

from venues.chain import (
    EvmChain,
    InvalidArgument,
    PreflightReverted,
    TransactionReverted,
    erc20_transfers_in,
)
from venues.rain_float import RainFloat
from venues.sim.chain import SimAccount, SimChains

pytestmark = [pytest.mark.chain, pytest.mark.xdist_group("chain")]


def _vault_id() -> bytes:
    return os.urandom(32)


def _funded_depositor(
    chains: SimChains, account: SimAccount, *, amount_units: int, approve_units: int
) -> EvmChain:
    base = chains.base
    assert base.vault is not None
    client = chains.client(base, account)
    chains.mint_usdc(base, account.address, amount_units)
    if approve_units:
        client.send(
            client.build_erc20_approve(
                token=base.usdc, spender=base.vault, amount_units=approve_units
            )
        )
    return client


@pytest.mark.parametrize("operation", ["deposit", "withdraw"])
def test_zero_amount_is_rejected_by_the_client(
    sim_chains: SimChains, base_client: EvmChain, operation: str
) -> None:
    vault = sim_chains.base.vault
    assert vault is not None
    with pytest.raises(InvalidArgument, match="must be positive"):
        if operation == "deposit":
            base_client.build_vault_deposit(
                vault=vault, token=sim_chains.base.usdc, vault_id=_vault_id(), amount_units=0
            )
        else:
            base_client.build_vault_withdraw(
                vault=vault, token=sim_chains.base.usdc, vault_id=_vault_id(), target_amount_units=0
            )


@pytest.mark.parametrize(
    ("function", "reason"),
    [("deposit4", "ZeroDepositAmount"), ("withdraw4", "ZeroWithdrawTargetAmount")],
)
def test_zero_amount_is_rejected_by_the_contract(
    sim_chains: SimChains, scratch_account: SimAccount, function: str, reason: str
) -> None:
    vault = sim_chains.base.vault
    assert vault is not None
    zero = RainFloat(coefficient=0, exponent=-6).pack()
    data = sim_chains.encode(
        "OrderBookVault", function, sim_chains.base.usdc, _vault_id(), zero, []
    )
    with pytest.raises(TransactionReverted, match=reason):
        sim_chains.transact(sim_chains.base, scratch_account, to=vault, data=data)


@pytest.mark.parametrize(
    ("amount", "reason"),
    [
        (RainFloat(coefficient=15, exponent=-7), "LossyConversionFromFloat"),  # 1.5 micro-USDC
        (RainFloat(coefficient=-1, exponent=0), "NegativeFixedDecimalConversion"),
    ],
)
def test_a_deposit_float_that_is_no_whole_token_amount_reverts(
    sim_chains: SimChains, scratch_account: SimAccount, amount: RainFloat, reason: str
) -> None:
    base = sim_chains.base
    assert base.vault is not None
    _funded_depositor(sim_chains, scratch_account, amount_units=10, approve_units=10)
    data = sim_chains.encode(
        "OrderBookVault", "deposit4", base.usdc, _vault_id(), amount.pack(), []
    )
    with pytest.raises(TransactionReverted, match=reason):
        sim_chains.transact(base, scratch_account, to=base.vault, data=data)


def test_any_encoding_of_an_amount_deposits_the_same_units(
    sim_chains: SimChains, scratch_account: SimAccount
) -> None:
    """The order book reads a Float's value, not its coefficient: 2.5 USDC sent as `25e-1`
    moves 2_500_000 units, exactly like `2500000e-6`."""
    base = sim_chains.base
    assert base.vault is not None
    client = _funded_depositor(
        sim_chains, scratch_account, amount_units=2_500_000, approve_units=2_500_000
    )
    vault_id = _vault_id()
    data = sim_chains.encode(
        "OrderBookVault", "deposit4", base.usdc, vault_id, RainFloat(25, -1).pack(), []
    )
    receipt = sim_chains.transact(base, scratch_account, to=base.vault, data=data)
    assert [t.amount_units for t in erc20_transfers_in(receipt, token=base.usdc)] == [2_500_000]
    assert (
        client.vault_balance(
            vault=base.vault, owner=scratch_account.address, token=base.usdc, vault_id=vault_id
        )
        == 2_500_000
    )


def test_deposit_moves_tokens_into_the_vault_balance(
    sim_chains: SimChains, scratch_account: SimAccount
) -> None:
    base = sim_chains.base
    assert base.vault is not None
    client = _funded_depositor(
        sim_chains, scratch_account, amount_units=70_000_000, approve_units=70_000_000
    )
    vault_id = _vault_id()

    receipt = client.send(
        client.build_vault_deposit(
            vault=base.vault, token=base.usdc, vault_id=vault_id, amount_units=70_000_000
        )
    )

    assert (
        client.vault_balance(
            vault=base.vault, owner=scratch_account.address, token=base.usdc, vault_id=vault_id
        )
        == 70_000_000
    )
    # The order book returns its own encoding of 70 USDC (`7e1`); the client converts it.
    assert client.vault_balance_float(
        vault=base.vault, owner=scratch_account.address, token=base.usdc, vault_id=vault_id
    ) == RainFloat(coefficient=7, exponent=1)
    assert client.erc20_balance(token=base.usdc, owner=scratch_account.address) == 0
    moved = erc20_transfers_in(receipt, token=base.usdc, to=base.vault)
    assert [t.amount_units for t in moved] == [70_000_000]
    other_id = _vault_id()
    assert (
        client.vault_balance(
            vault=base.vault, owner=scratch_account.address, token=base.usdc, vault_id=other_id
        )
        == 0
    )


def test_deposit_without_approval_would_revert_and_signs_nothing(
    sim_chains: SimChains, scratch_account: SimAccount
) -> None:
    base = sim_chains.base
    assert base.vault is not None
    client = _funded_depositor(sim_chains, scratch_account, amount_units=5_000_000, approve_units=0)
    with pytest.raises(PreflightReverted, match="insufficient allowance"):
        client.build_vault_deposit(
            vault=base.vault, token=base.usdc, vault_id=_vault_id(), amount_units=5_000_000
        )


def test_withdraw_returns_the_target_or_the_whole_balance_if_smaller(
    sim_chains: SimChains, scratch_account: SimAccount
) -> None:
    base = sim_chains.base
    assert base.vault is not None
    client = _funded_depositor(
        sim_chains, scratch_account, amount_units=10_000_000, approve_units=10_000_000
    )
    vault_id = _vault_id()
    client.send(
        client.build_vault_deposit(
            vault=base.vault, token=base.usdc, vault_id=vault_id, amount_units=10_000_000
        )
    )
    balance = {"vault": base.vault, "owner": scratch_account.address, "token": base.usdc}

    partial = client.send(
        client.build_vault_withdraw(
            vault=base.vault, token=base.usdc, vault_id=vault_id, target_amount_units=4_000_000
        )
    )
    assert client.vault_balance(**balance, vault_id=vault_id) == 6_000_000
    assert [t.amount_units for t in erc20_transfers_in(partial, token=base.usdc)] == [4_000_000]

    # More than the balance: the vault pays what it has; the Transfer log says how much.
    rest = client.send(
        client.build_vault_withdraw(
            vault=base.vault, token=base.usdc, vault_id=vault_id, target_amount_units=9_000_000
        )
    )
    received = erc20_transfers_in(rest, token=base.usdc, to=scratch_account.address)
    assert [t.amount_units for t in received] == [6_000_000]
    assert client.vault_balance(**balance, vault_id=vault_id) == 0
    assert client.erc20_balance(token=base.usdc, owner=scratch_account.address) == 10_000_000


def test_simulated_take_moves_vault_balances_like_a_fill(
    sim_chains: SimChains, scratch_account: SimAccount
) -> None:
    base = sim_chains.base
    assert base.vault is not None
    token = sim_chains.equity_token("tMSFT")
    client = sim_chains.client(base, scratch_account)
    sim_chains.mint(base, token, scratch_account.address, 5 * 10**18)
    client.send(
        client.build_erc20_approve(token=token, spender=base.vault, amount_units=5 * 10**18)
    )
    vault_id = _vault_id()
    client.send(
        client.build_vault_deposit(
            vault=base.vault, token=token, vault_id=vault_id, amount_units=5 * 10**18
        )
    )

    # The owner sells 2 shares for 800 USDC.
    sim_chains.simulate_take(
        owner=scratch_account.address,
        vault_id=vault_id,
        input_token=base.usdc,
        input_units=800_000_000,
        output_token=token,
        output_units=2 * 10**18,
    )

    owner = scratch_account.address
    assert sim_chains.vault_balance(owner, token, vault_id) == 3 * 10**18
    assert sim_chains.vault_balance(owner, base.usdc, vault_id) == 800_000_000


WITHDRAW_V2_TOPIC = (
    "0x" + keccak(text="WithdrawV2(address,address,bytes32,bytes32,bytes32,uint256)").hex()
)


def test_withdraw_reports_target_and_moved_amounts_as_floats_in_withdraw_v2(
    sim_chains: SimChains, scratch_account: SimAccount
) -> None:
    base = sim_chains.base
    assert base.vault is not None
    client = _funded_depositor(
        sim_chains, scratch_account, amount_units=3_000_000, approve_units=3_000_000
    )
    vault_id = _vault_id()
    client.send(
        client.build_vault_deposit(
            vault=base.vault, token=base.usdc, vault_id=vault_id, amount_units=3_000_000
        )
    )

    receipt = client.send(
        client.build_vault_withdraw(
            vault=base.vault, token=base.usdc, vault_id=vault_id, target_amount_units=4_250_000
        )
    )

    (log,) = [entry for entry in receipt.logs if entry.topics[0] == WITHDRAW_V2_TOPIC]
    sender, token, logged_vault_id, target, moved, moved_units = abi_decode(
        ["address", "address", "bytes32", "bytes32", "bytes32", "uint256"], log.data
    )
    assert (sender.lower(), token.lower()) == (scratch_account.address.lower(), base.usdc.lower())
    assert logged_vault_id == vault_id
    assert RainFloat.unpack(target) == RainFloat(coefficient=4_250_000, exponent=-6)
    assert RainFloat.unpack(moved).to_decimal() == Decimal("3")
    assert moved_units == 3_000_000
    # What moved is what the Transfer log says, not the target.
    received = erc20_transfers_in(receipt, token=base.usdc, to=scratch_account.address)
    assert [t.amount_units for t in received] == [3_000_000]


def test_an_amount_beyond_a_float_coefficient_is_refused_by_the_client(
    sim_chains: SimChains, base_client: EvmChain
) -> None:
    vault = sim_chains.base.vault
    assert vault is not None
    with pytest.raises(InvalidArgument, match="amount_units=.*224-bit signed coefficient"):
        base_client.build_vault_deposit(
            vault=vault, token=sim_chains.base.usdc, vault_id=_vault_id(), amount_units=2**223
        )


def test_eighteen_decimal_tokens_deposit_and_read_back_exactly(
    sim_chains: SimChains, scratch_account: SimAccount
) -> None:
    base = sim_chains.base
    assert base.vault is not None
    token = sim_chains.equity_token("tNVDA")
    client = sim_chains.client(base, scratch_account)
    units = 1_234_567_890_123_456_789  # 1.234567890123456789 shares
    sim_chains.mint(base, token, scratch_account.address, units)
    client.send(client.build_erc20_approve(token=token, spender=base.vault, amount_units=units))
    vault_id = _vault_id()
    client.send(
        client.build_vault_deposit(
            vault=base.vault, token=token, vault_id=vault_id, amount_units=units
        )
    )
    balance = {"vault": base.vault, "owner": scratch_account.address, "token": token}
    assert client.vault_balance(**balance, vault_id=vault_id) == units
    assert client.vault_balance_float(**balance, vault_id=vault_id) == RainFloat(units, -18)


# --- managed vaults: a RaindexInventory owns them (spec 15.6, issue 20) -------------------------


def test_an_operator_deposits_and_withdraws_through_the_inventory_that_owns_the_vault(
    sim_chains: SimChains, scratch_account: SimAccount
) -> None:
    base = sim_chains.base
    assert base.vault is not None
    inventory = sim_chains.deploy_inventory(operators=(scratch_account.address,))
    client = sim_chains.client(base, scratch_account)
    sim_chains.mint_usdc(base, scratch_account.address, 40_000_000)
    client.send(
        client.build_erc20_approve(token=base.usdc, spender=inventory, amount_units=40_000_000)
    )
    vault_id = _vault_id()
    assert client.has_operator_role(inventory=inventory, account=scratch_account.address)

    deposited = client.send(
        client.build_vault_deposit(
            vault=inventory, token=base.usdc, vault_id=vault_id, amount_units=40_000_000
        )
    )

    def balance(owner: str) -> int:
        return client.vault_balance(
            vault=base.vault, owner=owner, token=base.usdc, vault_id=vault_id
        )

    # The vault is the inventory's, read on the order book under its address.
    assert (balance(inventory), balance(scratch_account.address)) == (40_000_000, 0)
    assert [
        t.amount_units for t in erc20_transfers_in(deposited, token=base.usdc, to=inventory)
    ] == [40_000_000]
    withdrawn = client.send(
        client.build_vault_withdraw(
            vault=inventory, token=base.usdc, vault_id=vault_id, target_amount_units=15_000_000
        )
    )
    moved = erc20_transfers_in(
        withdrawn, token=base.usdc, to=scratch_account.address, from_=inventory
    )
    assert [t.amount_units for t in moved] == [15_000_000]
    assert balance(inventory) == 25_000_000


def test_a_wallet_without_the_operator_role_is_refused_before_signing(
    sim_chains: SimChains, scratch_account: SimAccount
) -> None:
    base = sim_chains.base
    inventory = sim_chains.deploy_inventory()
    client = sim_chains.client(base, scratch_account)
    assert not client.has_operator_role(inventory=inventory, account=scratch_account.address)
    with pytest.raises(PreflightReverted, match="AccessControlUnauthorizedAccount"):
        client.build_vault_withdraw(
            vault=inventory, token=base.usdc, vault_id=_vault_id(), target_amount_units=1
        )

"""Orderbook vault subset (deposit3 / withdraw3) on the Base sim chain."""

from __future__ import annotations

import os

import pytest

from venues.chain import (
    EvmChain,
    InvalidArgument,
    PreflightReverted,
    TransactionReverted,
    erc20_transfers_in,
)
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
    [("deposit3", "ZeroDepositAmount"), ("withdraw3", "ZeroWithdrawTargetAmount")],
)
def test_zero_amount_is_rejected_by_the_contract(
    sim_chains: SimChains, scratch_account: SimAccount, function: str, reason: str
) -> None:
    vault = sim_chains.base.vault
    assert vault is not None
    data = sim_chains.encode("OrderBookVault", function, sim_chains.base.usdc, _vault_id(), 0)
    with pytest.raises(TransactionReverted, match=reason):
        sim_chains.transact(sim_chains.base, scratch_account, to=vault, data=data)


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

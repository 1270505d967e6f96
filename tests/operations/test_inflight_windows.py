"""Inflight is recorded before money moves (issue 8): a balance snapshot taken in the window
after a side effect and before its outcome event neither double-counts nor flags the pool.

Each test runs the real workflow against the simulated venue up to the window (the mint POST
answered 500 after Alpaca took the shares; the redemption transfer and the vault withdraw
mined while the worker waits), records a snapshot of what the venue shows right then (stamped
before it is read, as a poller would), and finishes the operation. The pool must end where the
venue is, with nothing inflight and nothing flagged. The Alpaca withdrawal of a USDC move to
Base has the same window (POST answered 500 after Alpaca took the cash).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal

import pytest
from django.utils import timezone

from inventory.domain import usdc
from inventory.domain.values import USDC_POOL
from inventory.selectors import pool_inventory
from inventory.services import snapshot_record
from operations.models import Operation, OperationKind, OperationStatus
from operations.services import operation_create
from operations.workflows import operation_advance
from tests.operations.conftest import advance_until_finished
from tests.operations.usdc_support import (
    A2B,
    B2A,
    WITHDRAW_POST,
    cctp_received,
    drive_to,
    fund_vault,
    new_usdc,
    next_amount,
    usdc_state,
)
from venues.sim.server import FAULT_5XX_AFTER, KEY_MINT
from venues.sim.venue import SimVenue, equity_vault_id

pytestmark = [pytest.mark.django_db, pytest.mark.chain]

MINT_POST = KEY_MINT
UNIT = 10**18


def shares(units: int) -> Decimal:
    return Decimal(units).scaleb(-18)


def wallet_shares(sim_venue: SimVenue, token: str, wallet: str) -> Decimal:
    chains = sim_venue.chains
    return shares(chains.balance(chains.base, token, wallet))


def vault_shares(sim_venue: SimVenue, symbol: str) -> Decimal:
    """Onchain inventory: our vault's balance in the order book (spec 15.1)."""
    chains = sim_venue.chains
    token = sim_venue.equity_tokens[symbol]
    vault_id = bytes.fromhex(equity_vault_id(symbol)[2:])
    return shares(chains.vault_balance(chains.market_maker.address, token, vault_id))


def amounts(key: str) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    pool = pool_inventory(key=key)
    assert pool is not None and pool.onchain is not None and pool.offchain is not None
    assert not pool.needs_reconciliation, pool.reconciliation_reason
    return (
        pool.onchain.available,
        pool.onchain.inflight,
        pool.offchain.available,
        pool.offchain.inflight,
    )


@contextmanager
def base_mines_on_demand(sim_venue: SimVenue) -> Iterator[None]:
    """Base keeps transactions in its mempool until `evm_mine` (automine off)."""
    web3 = sim_venue.chains.web3(sim_venue.chains.base)
    web3.provider.make_request("evm_setAutomine", [False])  # type: ignore[arg-type]
    try:
        yield
    finally:
        web3.provider.make_request("evm_setAutomine", [True])  # type: ignore[arg-type]


def mine_base(sim_venue: SimVenue) -> None:
    web3 = sim_venue.chains.web3(sim_venue.chains.base)
    response = web3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    assert "error" not in response, response


def advance_once(operation: Operation, venues) -> str:
    result = operation_advance(operation_id=operation.pk, venues=venues)
    operation.refresh_from_db()
    return result.outcome


def test_offchain_snapshot_after_the_mint_post_before_acceptance_counts_the_shares_once(
    sim_venue, venues, sim_assets
):
    wallet = venues.market_maker_wallet
    token = sim_assets["AAPL"]
    fetched_at = timezone.now()
    wallet_before = wallet_shares(sim_venue, token, wallet)
    onchain, offchain = vault_shares(sim_venue, "AAPL"), sim_venue.server.position("AAPL")
    snapshot_record(
        fetched_at=fetched_at, onchain_equity={"AAPL": onchain}, offchain_equity={"AAPL": offchain}
    )
    operation = operation_create(kind=OperationKind.MINT, pool="AAPL", amount=Decimal(2))
    assert operation is not None
    sim_venue.server.fail_next(MINT_POST, FAULT_5XX_AFTER)

    # Alpaca took the shares, the worker heard a 500: MintRequested only, no acceptance yet.
    assert advance_once(operation, venues) == "retry"
    assert amounts("AAPL") == (onchain, 0, offchain - 2, 2)
    polled_at = timezone.now()
    assert sim_venue.server.position("AAPL") == offchain - 2
    snapshot_record(fetched_at=polled_at, offchain_equity={"AAPL": offchain - 2})
    assert amounts("AAPL") == (onchain, 0, offchain - 2, 2)

    advance_until_finished(operation, venues)

    assert operation.status == OperationStatus.COMPLETED, operation.failure_reason
    assert amounts("AAPL") == (onchain + 2, 0, offchain - 2, 0)
    assert vault_shares(sim_venue, "AAPL") == onchain + 2  # minted, then into the vault
    assert wallet_shares(sim_venue, token, wallet) == wallet_before
    assert sim_venue.server.position("AAPL") == offchain - 2


def test_onchain_snapshot_after_the_vault_withdraw_before_it_is_confirmed_counts_them_once(
    sim_venue, venues, sim_assets
):
    chains = sim_venue.chains
    wallet = venues.market_maker_wallet
    token = sim_assets["MSFT"]
    chains.mint(chains.base, token, wallet, 100 * UNIT)
    chains.vault_deposit(
        chains.market_maker, token, bytes.fromhex(equity_vault_id("MSFT")[2:]), 100 * UNIT
    )
    fetched_at = timezone.now()
    onchain, offchain = vault_shares(sim_venue, "MSFT"), sim_venue.server.position("MSFT")
    snapshot_record(
        fetched_at=fetched_at, onchain_equity={"MSFT": onchain}, offchain_equity={"MSFT": offchain}
    )
    operation = operation_create(
        kind=OperationKind.REDEMPTION, pool="MSFT", amount=Decimal(3), token_address=token
    )
    assert operation is not None

    with base_mines_on_demand(sim_venue):
        # Vault withdraw signed, stored, broadcast; not mined: the worker waits with
        # VaultWithdrawSigned only.
        assert advance_once(operation, venues) == "waiting"
        assert amounts("MSFT") == (onchain - 3, 3, offchain, 0)
        mine_base(sim_venue)
        polled_at = timezone.now()
        assert vault_shares(sim_venue, "MSFT") == onchain - 3
        snapshot_record(fetched_at=polled_at, onchain_equity={"MSFT": onchain - 3})
        assert amounts("MSFT") == (onchain - 3, 3, offchain, 0)

    advance_until_finished(operation, venues)

    assert operation.status == OperationStatus.COMPLETED, operation.failure_reason
    assert amounts("MSFT") == (onchain - 3, 0, offchain + 3, 0)
    assert sim_venue.server.position("MSFT") == offchain + 3


def test_onchain_cash_snapshot_after_the_vault_withdraw_before_initiate_counts_it_once(
    sim_venue, venues
):
    fund_vault(sim_venue, venues, "150")
    snapshot_record(
        fetched_at=timezone.now(), onchain_cash=Decimal(1000), offchain_cash=Decimal(1000)
    )
    operation = new_usdc(B2A, "150")

    with base_mines_on_demand(sim_venue):
        # Requested, the vault withdraw signed, stored and broadcast; not mined yet.
        assert advance_once(operation, venues) == "waiting"
        assert amounts(USDC_POOL) == (850, 150, 1000, 0)
        mine_base(sim_venue)
        # The poll sees the vault 150 lighter before the worker records Initiate.
        snapshot_record(fetched_at=timezone.now(), onchain_cash=Decimal(850))
        assert amounts(USDC_POOL) == (850, 150, 1000, 0)

    advance_until_finished(operation, venues)

    assert operation.status == OperationStatus.COMPLETED, operation.failure_reason
    assert amounts(USDC_POOL) == (850, 0, 1000 + cctp_received(Decimal(150)), 0)


def test_offchain_cash_snapshot_after_the_withdrawal_post_before_initiate_counts_it_once(
    sim_venue, venues
):
    snapshot_record(
        fetched_at=timezone.now(), onchain_cash=Decimal(1000), offchain_cash=Decimal(1000)
    )
    amount = next_amount()
    operation = new_usdc(A2B, str(amount))
    sim_venue.server.fail_next(WITHDRAW_POST, FAULT_5XX_AFTER)

    # Alpaca took the cash, the worker heard a 500: Requested only, no Initiate yet.
    assert advance_once(operation, venues) == "retry"
    assert amounts(USDC_POOL) == (1000, 0, 1000 - amount, amount)
    snapshot_record(fetched_at=timezone.now(), offchain_cash=Decimal(1000) - amount)
    assert amounts(USDC_POOL) == (1000, 0, 1000 - amount, amount)

    advance_until_finished(operation, venues)

    assert operation.status == OperationStatus.COMPLETED, operation.failure_reason
    received = usdc_state(operation).value.amounts.bridged_received
    assert amounts(USDC_POOL) == (1000 + received, 0, 1000 - amount, 0)


def test_cash_snapshot_after_the_bridge_mint_before_alpaca_credits_the_deposit_is_not_lost(
    sim_venue, venues
):
    fund_vault(sim_venue, venues, "150")
    snapshot_record(
        fetched_at=timezone.now(), onchain_cash=Decimal(1000), offchain_cash=Decimal(1000)
    )
    operation = new_usdc(B2A, "150")

    # Minted on Ethereum into our wallet: Alpaca's cash does not show it yet.
    drive_to(operation, venues, usdc.UsdcStep.BRIDGED)
    assert amounts(USDC_POOL) == (850, 150, 1000, 0)
    snapshot_record(fetched_at=timezone.now(), offchain_cash=Decimal(1000))
    assert amounts(USDC_POOL) == (850, 150, 1000, 0)

    advance_until_finished(operation, venues)

    assert operation.status == OperationStatus.COMPLETED, operation.failure_reason
    assert amounts(USDC_POOL) == (850, 0, 1000 + cctp_received(Decimal(150)), 0)

"""Mint workflow against the simulated venue (real DB, real clients, runner in-process)."""

from __future__ import annotations

import dataclasses
import time
from decimal import Decimal

import pytest
from django.utils import timezone

from inventory.domain import events as ev
from inventory.domain import mint
from inventory.models import Asset
from inventory.selectors import pool_inventory
from inventory.services import snapshot_record
from inventory.store import aggregate_execute, aggregate_load
from operations.models import Operation, OperationKind, OperationStatus
from operations.services import operation_create
from operations.venues import Venues
from operations.workflows import operation_advance
from tests.operations.conftest import (
    FAST_KNOBS,
    advance_until_finished,
    step_events,
    unvalidated_operation,
)
from venues.sim.server import FAULT_5XX, FAULT_5XX_AFTER, KEY_MINT
from venues.sim.venue import equity_vault_id

pytestmark = [pytest.mark.django_db, pytest.mark.chain]

MINT_POST = KEY_MINT


def new_mint(symbol: str = "AAPL", amount: str = "5") -> Operation:
    operation = operation_create(kind=OperationKind.MINT, pool=symbol, amount=Decimal(amount))
    assert operation is not None
    return operation


def sim_requests_for(sim_venue, operation: Operation) -> list[dict]:
    return [
        r
        for r in sim_venue.server.tokenization_requests()
        if r.get("issuer_request_id") == operation.aggregate_id
    ]


def event_types(operation: Operation) -> list[str]:
    return [type(s.event).__name__ for s in step_events(mint.SPEC, operation.aggregate_id)]


def observe_aapl(*, onchain: str, offchain: str) -> None:
    snapshot_record(
        fetched_at=timezone.now(),
        onchain_equity={"AAPL": Decimal(onchain)},
        offchain_equity={"AAPL": Decimal(offchain)},
    )


def vault_balance(sim_venue, venues, symbol: str) -> int:
    chains = sim_venue.chains
    vault_id = bytes.fromhex(equity_vault_id(symbol)[2:])
    token = sim_venue.equity_tokens[symbol]
    return chains.vault_balance(venues.market_maker_wallet, token, vault_id)


def test_mint_completes_with_one_request_and_the_tokens_deposited_into_the_assets_vault(
    sim_venue, venues, sim_assets
):
    chains = sim_venue.chains
    token = sim_assets["AAPL"]
    wallet_before = chains.balance(chains.base, token, venues.market_maker_wallet)
    vault_before = vault_balance(sim_venue, venues, "AAPL")
    observe_aapl(onchain="10", offchain="20")
    operation = new_mint(amount="5.5")

    advance_until_finished(operation, venues)

    assert operation.status == OperationStatus.COMPLETED
    # The first mint of a token also records the standing approval of the order book.
    assert [t for t in event_types(operation) if t != "VaultApprovalSigned"] == [
        "MintRequested",
        "MintAccepted",
        "TokensReceived",
        "VaultDepositSubmitted",
        "DepositedIntoVault",
    ]
    requests = sim_requests_for(sim_venue, operation)
    assert len(requests) == 1
    assert requests[0]["wallet_address"] == venues.market_maker_wallet  # B9
    # Minted to our wallet, then into the vault: onchain inventory is what the book can trade.
    assert chains.balance(chains.base, token, venues.market_maker_wallet) == wallet_before
    assert vault_balance(sim_venue, venues, "AAPL") - vault_before == 5_500_000_000_000_000_000
    events = [s.event for s in step_events(mint.SPEC, operation.aggregate_id)]
    received = events[2]
    assert isinstance(received, ev.TokensReceived)
    assert received.shares_minted == 5_500_000_000_000_000_000
    (deposit,) = [e for e in events if isinstance(e, ev.VaultDepositSubmitted)]
    assert deposit.amount_units == 5_500_000_000_000_000_000
    assert deposit.vault_id == equity_vault_id("AAPL")
    assert step_events(mint.SPEC, operation.aggregate_id)[0].metadata == {
        "operation_id": operation.pk,
        "actor": "worker",
    }
    pool = pool_inventory(key="AAPL")
    assert (pool.onchain.available, pool.onchain.inflight) == (Decimal("15.5"), 0)
    assert (pool.offchain.available, pool.offchain.inflight) == (Decimal("14.5"), 0)


def test_mint_with_tokens_received_but_no_vault_id_waits_for_an_operator_keeping_inflight(
    sim_venue, venues, sim_assets
):
    Asset.objects.filter(base_symbol="AAPL").update(vault_id="")
    observe_aapl(onchain="10", offchain="20")
    operation = new_mint(amount="1")
    deadline = time.monotonic() + 180  # polls until Alpaca's mint arrived and the worker stopped
    while True:
        operation_advance(operation_id=operation.pk, venues=venues)
        operation.refresh_from_db()
        if operation.needs_attention or not operation.is_active:
            break
        assert time.monotonic() < deadline, event_types(operation)
        time.sleep(0.1)
    assert operation.is_active and operation.needs_attention
    assert "vault_id" in operation.last_error
    assert event_types(operation)[-1] == "TokensReceived"
    pool = pool_inventory(key="AAPL")
    assert pool.offchain.inflight == Decimal("1")


def test_mint_waits_without_holding_the_worker_while_alpaca_processes(
    sim_venue, venues, sim_assets
):
    sim_venue.server.set_knobs(mint_delay_s=3600.0)  # Alpaca holds it until settle_now
    try:
        operation = new_mint()
        result = operation_advance(operation_id=operation.pk, venues=venues)
        operation.refresh_from_db()
        assert result.outcome == "waiting"
        assert operation.status == OperationStatus.WAITING
        assert operation.next_run_at is not None
        assert operation.claimed_by == ""
        assert operation.attempts == 0
        assert event_types(operation) == ["MintRequested", "MintAccepted"]
    finally:
        sim_venue.server.set_knobs(mint_delay_s=FAST_KNOBS.mint_delay_s)
        sim_venue.server.settle_now()
    advance_until_finished(operation, venues)
    assert operation.status == OperationStatus.COMPLETED


def test_mint_refused_by_alpaca_for_insufficient_position_is_rejected_and_guard_released(
    sim_venue, venues, sim_assets
):
    operation = new_mint(amount="5000000")  # more than the brokerage position
    advance_until_finished(operation, venues)
    assert operation.status == OperationStatus.FAILED
    assert event_types(operation) == ["MintRequested", "MintRejected"]
    assert "Alpaca API error" in operation.failure_reason
    assert new_mint(amount="1") is not None  # the guard is free


@pytest.mark.parametrize("fault", [FAULT_5XX, FAULT_5XX_AFTER])
def test_mint_post_with_unknown_outcome_is_looked_up_by_issuer_request_id_not_reposted(
    sim_venue, venues, sim_assets, fault
):
    operation = new_mint(amount="2")
    sim_venue.server.fail_next(MINT_POST, fault)
    posts_before = sim_venue.server.request_count(MINT_POST)

    first = operation_advance(operation_id=operation.pk, venues=venues)
    assert first.outcome == "retry"
    operation.refresh_from_db()
    assert operation.last_error
    assert operation.attempts == 1

    advance_until_finished(operation, venues)
    assert operation.status == OperationStatus.COMPLETED
    assert len(sim_requests_for(sim_venue, operation)) == 1
    # 5xx before doing anything: posted again once; 5xx after the work: never posted again.
    expected_posts = 2 if fault == FAULT_5XX else 1
    assert sim_venue.server.request_count(MINT_POST) - posts_before == expected_posts


def test_mint_resumes_after_a_crash_between_the_post_and_recording_acceptance(
    sim_venue, venues, sim_assets
):
    operation = new_mint(amount="3")
    aggregate_execute(
        spec=mint.SPEC,
        aggregate_id=operation.aggregate_id,
        command=mint.RequestMint(
            symbol="AAPL", quantity=Decimal(3), wallet=venues.market_maker_wallet
        ),
    )
    # The worker posted, then died before recording the acceptance.
    venues.alpaca.request_mint(
        underlying_symbol="AAPL",
        quantity_shares=Decimal(3),
        wallet_address=venues.market_maker_wallet,
        issuer_request_id=operation.aggregate_id,
    )
    advance_until_finished(operation, venues)
    assert operation.status == OperationStatus.COMPLETED
    assert len(sim_requests_for(sim_venue, operation)) == 1


@pytest.mark.parametrize("refusal", ["rejected", "failed"])
def test_mint_rejected_by_alpaca_after_acceptance_fails_acceptance(
    sim_venue, venues, sim_assets, refusal
):
    sim_venue.server.set_knobs(mint_reject_rate=1.0, refusal_status=refusal)
    try:
        operation = new_mint(amount="1")
        advance_until_finished(operation, venues)
    finally:
        sim_venue.server.set_knobs(mint_reject_rate=0.0, refusal_status="rejected")
    assert operation.status == OperationStatus.FAILED
    assert event_types(operation)[-1] == "MintAcceptanceFailed"
    assert operation.failure_reason == "Mint request rejected by Alpaca"


def test_mint_past_its_timeout_times_out_keeping_inflight_and_asks_for_attention(
    sim_venue, venues, sim_assets
):
    quick = Venues.from_config(
        dataclasses.replace(
            venues.config,
            workers=dataclasses.replace(venues.config.workers, mint_timeout_s=0.5),
        )
    )
    sim_venue.server.set_knobs(mint_delay_s=30.0)
    try:
        operation = new_mint(amount="1")
        advance_until_finished(operation, quick)
    finally:
        sim_venue.server.set_knobs(mint_delay_s=FAST_KNOBS.mint_delay_s)
    assert operation.status == OperationStatus.FAILED
    assert event_types(operation)[-1] == "MintTimedOut"
    state = aggregate_load(mint.SPEC, operation.aggregate_id).state
    assert mint.can_reconcile(state)  # inflight kept until an operator reconciles


def test_mint_with_an_invalid_quantity_fails_before_any_event_and_releases_the_guard(
    venues, sim_assets
):
    operation = unvalidated_operation("mint", "AAPL", "-1")  # operation_create refuses it
    result = operation_advance(operation_id=operation.pk, venues=venues)
    operation.refresh_from_db()
    assert result.outcome == "done"
    assert operation.status == OperationStatus.FAILED
    assert "quantity" in operation.failure_reason
    assert event_types(operation) == []


def test_force_fail_with_the_vault_deposit_in_the_mempool_is_refused_then_mined_completes(
    sim_venue, venues, sim_assets
):
    """The deposit may still move the tokens while it is in the mempool: no failure; once it
    is mined the mint is complete, not failed."""
    from operations.operator import OperatorError, operator_force_fail

    web3 = sim_venue.chains.web3(sim_venue.chains.base)
    observe_aapl(onchain="10", offchain="20")
    vault_before = vault_balance(sim_venue, venues, "AAPL")
    operation = new_mint(amount="1.25")
    # Alpaca holds the mint while the first advance runs: with the sim's fast 0.3 s a slow
    # machine could see it completed in the same advance and go on past the acceptance.
    sim_venue.server.set_knobs(mint_delay_s=3600.0)
    try:
        operation_advance(operation_id=operation.pk, venues=venues)  # requested, accepted
    finally:
        sim_venue.server.set_knobs(mint_delay_s=FAST_KNOBS.mint_delay_s)
    assert event_types(operation)[-1] == "MintAccepted"
    web3.provider.make_request("evm_setAutomine", [False])
    sim_venue.server.settle_now()
    try:
        # Mine between steps (the sim's mint, our approval) until the deposit is broadcast.
        deadline = time.monotonic() + 180
        while event_types(operation)[-1] != "VaultDepositSubmitted":
            assert time.monotonic() < deadline, event_types(operation)
            web3.provider.make_request("evm_mine", [])
            operation_advance(operation_id=operation.pk, venues=venues)
            time.sleep(0.1)
        assert event_types(operation)[-1] == "VaultDepositSubmitted"
        with pytest.raises(OperatorError, match="mempool"):
            operator_force_fail(operation_id=operation.pk, reason="x", actor="alice", venues=venues)
        web3.provider.make_request("evm_mine", [])
    finally:
        web3.provider.make_request("evm_setAutomine", [True])

    done = operator_force_fail(operation_id=operation.pk, reason="x", actor="alice", venues=venues)

    assert done.status == OperationStatus.COMPLETED
    assert event_types(operation)[-1] == "DepositedIntoVault"
    assert vault_balance(sim_venue, venues, "AAPL") - vault_before == 1_250_000_000_000_000_000

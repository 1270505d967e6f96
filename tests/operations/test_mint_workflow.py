"""Mint workflow against the simulated venue (real DB, real clients, runner in-process)."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest

from inventory.domain import events as ev
from inventory.domain import mint
from inventory.store import aggregate_execute, aggregate_load
from operations.models import Operation, OperationKind, OperationStatus
from operations.services import operation_create
from operations.venues import Venues
from operations.workflows import operation_advance
from tests.operations.conftest import advance_until_finished
from venues.sim.server import FAULT_5XX, FAULT_5XX_AFTER

pytestmark = [pytest.mark.django_db, pytest.mark.chain]

MINT_POST = "POST /v2/tokenization/mint"


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
    loaded = aggregate_load(mint.SPEC, operation.aggregate_id)
    return [type(s.event).__name__ for s in loaded.events]


def test_mint_completes_with_one_request_and_tokens_verified_in_our_wallet(
    sim_venue, venues, sim_assets
):
    chains = sim_venue.chains
    token = sim_assets["AAPL"]
    before = chains.balance(chains.base, token, venues.market_maker_wallet)
    operation = new_mint(amount="5.5")

    advance_until_finished(operation, venues)

    assert operation.status == OperationStatus.COMPLETED
    assert event_types(operation) == [
        "MintRequested",
        "MintAccepted",
        "TokensReceived",
        "MintCompleted",
    ]
    requests = sim_requests_for(sim_venue, operation)
    assert len(requests) == 1
    assert requests[0]["wallet_address"] == venues.market_maker_wallet  # B9
    after = chains.balance(chains.base, token, venues.market_maker_wallet)
    assert after - before == 5_500_000_000_000_000_000
    received = aggregate_load(mint.SPEC, operation.aggregate_id).events[2].event
    assert isinstance(received, ev.TokensReceived)
    assert received.shares_minted == 5_500_000_000_000_000_000
    assert aggregate_load(mint.SPEC, operation.aggregate_id).events[0].metadata == {
        "operation_id": operation.pk,
        "actor": "worker",
    }


def test_mint_waits_without_holding_the_worker_while_alpaca_processes(
    sim_venue, venues, sim_assets
):
    sim_venue.server.set_knobs(mint_delay_s=5.0)
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
        sim_venue.server.set_knobs(mint_delay_s=0.3)
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


def test_mint_rejected_by_alpaca_after_acceptance_fails_acceptance(sim_venue, venues, sim_assets):
    sim_venue.server.set_knobs(mint_reject_rate=1.0)
    try:
        operation = new_mint(amount="1")
        advance_until_finished(operation, venues)
    finally:
        sim_venue.server.set_knobs(mint_reject_rate=0.0)
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
        sim_venue.server.set_knobs(mint_delay_s=0.3)
    assert operation.status == OperationStatus.FAILED
    assert event_types(operation)[-1] == "MintTimedOut"
    state = aggregate_load(mint.SPEC, operation.aggregate_id).state
    assert mint.can_reconcile(state)  # inflight kept until an operator reconciles


def test_mint_with_an_invalid_quantity_fails_before_any_event_and_releases_the_guard(
    venues, sim_assets
):
    operation = new_mint(amount="-1")
    result = operation_advance(operation_id=operation.pk, venues=venues)
    operation.refresh_from_db()
    assert result.outcome == "done"
    assert operation.status == OperationStatus.FAILED
    assert "quantity" in operation.failure_reason
    assert event_types(operation) == []

"""REBALANCING_MODE=monitor (issue 24): the trigger runs and records what it would start
(`RebalanceProposed`), no operation is created, no task queued, no worker step runs."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.urls import reverse

from inventory.domain import decisions
from inventory.domain import events as ev
from inventory.domain.lifecycle import Lifecycle
from inventory.domain.values import InvalidValue
from inventory.models import Event
from inventory.services import aggregate_states_check, api_token_create
from operations.models import Operation, OperationKind, OperationStatus
from operations.tasks import execute_operation
from service.decisions import proposals_latest
from tests.service.flows import enable, observe, register
from tests.service.support import queued_tasks

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


def proposals() -> list[ev.RebalanceProposed]:
    rows = Event.objects.filter(aggregate_type=ev.DECISIONS).order_by("id")
    return [row.domain_event() for row in rows]


# --- the pure domain ----------------------------------------------------------------------


def propose(kind: str = "usdc_base_to_alpaca", amount: str = "400") -> decisions.Propose:
    return decisions.Propose(
        pool="USDC",
        kind=kind,
        amount=Decimal(amount),
        estimated_cost_usd=None,
        significant_change=Decimal("51"),
    )


def after(*commands: decisions.Propose) -> Lifecycle:
    state: Lifecycle = Lifecycle.uninitialized()
    for command in commands:
        for event in decisions.handle(state, command, NOW):
            state = decisions.apply(state, event)
    return state


def test_first_proposal_is_recorded_with_its_kind_amount_and_time():
    [event] = decisions.handle(Lifecycle.uninitialized(), propose(), NOW)
    assert isinstance(event, ev.RebalanceProposed)
    assert (event.pool, event.kind, event.amount, event.proposed_at) == (
        "USDC",
        "usdc_base_to_alpaca",
        Decimal("400"),
        NOW,
    )


@pytest.mark.parametrize(
    ("kind", "amount", "recorded"),
    [
        ("usdc_base_to_alpaca", "400", False),  # the same proposal
        ("usdc_base_to_alpaca", "450.999999", False),  # moved less than the minimum
        ("usdc_base_to_alpaca", "451", True),  # moved by the minimum
        ("usdc_base_to_alpaca", "349", True),
        ("usdc_alpaca_to_base", "400", True),  # another kind
    ],
)
def test_a_proposal_is_recorded_once_per_change_of_state(kind, amount, recorded):
    state = after(propose())
    assert bool(decisions.handle(state, propose(kind, amount), NOW)) is recorded


def test_a_proposal_of_nothing_is_refused_naming_the_amount():
    with pytest.raises(InvalidValue, match="amount"):
        decisions.handle(Lifecycle.uninitialized(), propose(amount="0"), NOW)


# --- through the store, projection and trigger --------------------------------------------


@pytest.fixture
def monitor(settings):
    enable(settings, monitor_only=True)
    assert settings.REBALANCING.mode == "monitor"


@pytest.mark.django_db
def test_monitor_mode_records_proposals_and_creates_no_operation(monitor):
    observe(usdc_onchain="900", usdc_offchain="100")
    assert Operation.objects.count() == 0
    assert queued_tasks() == []
    [first] = proposals()
    assert (first.pool, first.kind, first.amount, first.estimated_cost_usd) == (
        "USDC",
        OperationKind.USDC_BASE_TO_ALPACA,
        Decimal("400"),
        None,
    )
    # Every snapshot runs the trigger again: a small change records nothing new.
    observe(usdc_onchain="920", usdc_offchain="80")
    assert len(proposals()) == 1
    observe(usdc_onchain="990", usdc_offchain="10")  # excess 490: moved by 90 >= 51
    observe(usdc_onchain="100", usdc_offchain="900")  # the other direction
    assert [(p.kind, p.amount) for p in proposals()] == [
        (OperationKind.USDC_BASE_TO_ALPACA, Decimal("400")),
        (OperationKind.USDC_BASE_TO_ALPACA, Decimal("490")),
        (OperationKind.USDC_ALPACA_TO_BASE, Decimal("400")),
    ]
    assert Operation.objects.count() == 0
    latest = proposals_latest()
    assert set(latest) == {"USDC"}
    assert (latest["USDC"].kind, latest["USDC"].amount) == ("usdc_alpaca_to_base", Decimal("400"))
    # The decisions are part of the log: their cached state matches a fold of it.
    assert aggregate_states_check(write=False) == []


@pytest.mark.django_db
def test_the_newest_proposal_of_every_pool_is_read_in_one_query(monitor, django_assert_num_queries):
    register("AAPL")
    register("MSFT")
    observe(usdc_onchain="900", usdc_offchain="100")
    observe("AAPL", onchain="10", offchain="90")
    observe("MSFT", onchain="90", offchain="10")
    observe("MSFT", onchain="99", offchain="1")  # a second, newer MSFT proposal
    with django_assert_num_queries(1):
        latest = proposals_latest()
    assert {pool: (p.kind, p.amount) for pool, p in latest.items()} == {
        "AAPL": ("mint", Decimal("40")),
        "MSFT": ("redemption", Decimal("49")),
        "USDC": ("usdc_base_to_alpaca", Decimal("400")),
    }


@pytest.mark.django_db
def test_on_mode_records_no_proposal(settings):
    enable(settings)
    observe(usdc_onchain="900", usdc_offchain="100")
    assert Operation.objects.count() == 1
    assert proposals() == []


@pytest.mark.django_db
def test_a_worker_runs_no_step_in_monitor_mode(settings):
    # An operation started while the mode was on stays as it is once the mode is monitor.
    enable(settings)
    observe(usdc_onchain="900", usdc_offchain="100")
    operation = Operation.objects.get()
    events_before = Event.objects.count()
    enable(settings, monitor_only=True)
    execute_operation(operation.pk)
    operation.refresh_from_db()
    assert operation.status == OperationStatus.PENDING
    assert operation.attempts == 0
    assert Event.objects.count() == events_before


# --- shown beside the pools ---------------------------------------------------------------


@pytest.mark.django_db
def test_api_pools_show_the_proposal_of_an_out_of_band_pool(client, monitor):
    token = api_token_create(name="reader", scopes=["read"])[1]
    observe(usdc_onchain="900", usdc_offchain="100")
    [event_row] = Event.objects.filter(aggregate_type=ev.DECISIONS)
    response = client.get("/api/v1/pools", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200
    [usdc] = [pool for pool in response.json() if pool["key"] == "USDC"]
    assert usdc["active_operation"] is None
    proposal = usdc["proposal"]
    assert proposal["kind"] == "usdc_base_to_alpaca"
    assert proposal["amount"] == "400"
    assert proposal["estimated_cost_usd"] is None
    assert proposal["event_id"] == event_row.id
    # Back in band: the proposal is no longer shown (it stays in the log).
    observe(usdc_onchain="500", usdc_offchain="500")
    [usdc] = [
        p
        for p in client.get("/api/v1/pools", HTTP_AUTHORIZATION=f"Bearer {token}").json()
        if p["key"] == "USDC"
    ]
    assert usdc["proposal"] is None
    assert Event.objects.filter(aggregate_type=ev.DECISIONS).count() == 1


@pytest.mark.django_db
def test_console_dashboard_shows_monitor_mode_and_the_proposal(client, monitor):
    from django.contrib.auth.models import User

    user = User.objects.create_superuser("op", "op@example.invalid", "pw-unused-123")
    client.force_login(user)
    observe(usdc_onchain="900", usdc_offchain="100")
    body = client.get(reverse("admin:index")).content.decode()
    assert "monitor only (REBALANCING_MODE=monitor)" in body
    assert 'class="proposal" data-proposal-kind="usdc_base_to_alpaca"' in body
    assert "Proposed (monitor mode): usdc_base_to_alpaca of 400" in body

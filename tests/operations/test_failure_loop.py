"""Failures do not loop: a venue that refuses (the sim answers 403 to every mint) ends each
operation, the pool cools down (growing with consecutive failures, shown on the operation),
and after the configured count its circuit breaker stops rebalancing of that pool until an
operator resumes it (audited like the pause switch). Real DB, sim venue, runner in-process."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from inventory.domain import events as ev
from inventory.models import Event
from inventory.services import snapshot_record
from operations.models import Operation, OperationStatus, PoolBreaker
from operations.operator import OperatorError, operator_resume_pool
from tests.operations.conftest import advance_until_finished
from tests.operations.test_workers_e2e import moment, register_sim_assets
from tests.service.flows import active, after_cooldown
from venues.sim.server import KEY_MINT

pytestmark = [pytest.mark.django_db, pytest.mark.chain]

MINT_POST = KEY_MINT


@pytest.fixture
def refusing_alpaca(sim_venue):
    """Alpaca holds no AAPL shares: every mint POST is answered 403 (insufficient position)."""
    held = sim_venue.server.position("AAPL")
    sim_venue.server.set_position("AAPL", Decimal(0))
    yield sim_venue
    sim_venue.server.set_position("AAPL", held)


def configure(settings, venue_config, **workers) -> None:
    settings.REBALANCING = dataclasses.replace(
        venue_config, workers=dataclasses.replace(venue_config.workers, **workers)
    )


def imbalance_aapl() -> None:
    """AAPL 20 onchain / 80 offchain: the trigger plans a mint of 30."""
    snapshot_record(
        fetched_at=moment(),
        onchain_equity={"AAPL": Decimal(20)},
        offchain_equity={"AAPL": Decimal(80)},
        onchain_cash=Decimal(1000),
        offchain_cash=Decimal(1000),
    )


def breaker_audit() -> list[tuple[str | None, str | None, str]]:
    rows = Event.objects.filter(event_type=ev.SettingChanged.event_type_name()).order_by("id")
    return [
        (e.old_value, e.new_value, e.changed_by)
        for e in (row.domain_event() for row in rows)
        if e.setting == "circuit_breaker:AAPL"
    ]


def test_a_refusing_venue_stops_after_the_breaker_count_not_an_endless_stream(
    settings, venue_config, refusing_alpaca, venues
):
    configure(settings, venue_config, cooldown_base_s=0.0, breaker_failures=3)
    register_sim_assets(refusing_alpaca)
    posts_before = refusing_alpaca.server.request_count(MINT_POST)

    imbalance_aapl()
    # Drive whatever the trigger creates, as workers would (bounded: main looped for ever).
    for _ in range(12):
        operation = active("AAPL")
        if operation is None:
            break
        advance_until_finished(operation, venues)
        after_cooldown("AAPL")

    operations = list(Operation.objects.filter(pool="AAPL").order_by("pk"))
    assert len(operations) == 3
    assert all(op.status == OperationStatus.FAILED for op in operations)
    assert all("Alpaca API error" in op.failure_reason for op in operations)
    assert refusing_alpaca.server.request_count(MINT_POST) - posts_before == 3
    breaker = PoolBreaker.objects.get(pool="AAPL")
    assert breaker.is_open and breaker.consecutive_failures == 3
    assert breaker_audit() == [("closed", "open", "system")]

    imbalance_aapl()  # new balances: still imbalanced, still held by the breaker
    assert active("AAPL") is None

    with pytest.raises(OperatorError, match="reason"):
        operator_resume_pool(pool="AAPL", reason=" ", actor="alice")
    resumed = operator_resume_pool(pool="AAPL", reason="position restored", actor="alice")
    assert not resumed.is_open and resumed.consecutive_failures == 0
    assert breaker_audit() == [("closed", "open", "system"), ("open", "closed", "alice")]
    again = active("AAPL")  # the trigger re-checked the pool at once
    assert again is not None and again.pk not in {op.pk for op in operations}


def test_the_cooldown_grows_with_consecutive_failures_and_shows_on_the_operation(
    settings, venue_config, refusing_alpaca, venues
):
    configure(settings, venue_config, cooldown_base_s=60.0, cooldown_max_s=150.0)
    register_sim_assets(refusing_alpaca)

    imbalance_aapl()
    cooldowns = []
    for _ in range(3):
        operation = active("AAPL")
        assert operation is not None
        advance_until_finished(operation, venues)
        operation.refresh_from_db()
        assert operation.status == OperationStatus.FAILED
        assert active("AAPL") is None  # not re-created in the failure's transaction
        imbalance_aapl()
        assert active("AAPL") is None  # nor by the next event while it cools down
        cooldowns.append(operation.cooldown_until - operation.finished_at)
        after_cooldown("AAPL")
    assert cooldowns == [timedelta(seconds=60), timedelta(seconds=120), timedelta(seconds=150)]


def test_resume_pool_command_reports_a_pool_that_is_not_held(settings, venue_config):
    configure(settings, venue_config)
    with pytest.raises(CommandError, match="neither cooling down nor stopped"):
        call_command("operation", "resume-pool", "AAPL", "--reason", "x", "--actor", "ops")

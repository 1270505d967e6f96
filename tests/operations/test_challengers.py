"""The live challenger (issue 25): REBALANCING_CHALLENGERS decide in shadow on every pool the
trigger checks; their decisions are `ChallengerDecided` events, once per change of state,
with the cost gate's estimate, and never start an operation."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from django.urls import reverse

from conf.env import ConfigError, load_settings_env
from inventory.domain import challengers
from inventory.domain import events as ev
from inventory.domain.candidates import parse_candidate
from inventory.domain.lifecycle import Lifecycle
from inventory.domain.values import InvalidValue
from inventory.models import Event
from inventory.services import aggregate_states_check
from operations.challengers import challenger_comparison
from operations.costgate import gas_quote_record
from operations.models import Operation
from tests.console.conftest import viewer  # noqa: F401 - fixture
from tests.console.conftest import viewer_client as viewer_client  # noqa: F401 - fixture
from tests.service.flows import enable, observe, onchain_fill, register
from tests.service.support import queued_tasks

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
TIGHT = "tight:equity_deviation=0.05,usdc_deviation=0.05"
WIDE = "wide:equity_deviation=0.45,usdc_deviation=0.45"


def decided(challenger: str | None = None) -> list[ev.ChallengerDecided]:
    rows = Event.objects.filter(aggregate_type=ev.CHALLENGERS).order_by("id")
    found = [row.domain_event() for row in rows]
    return [e for e in found if challenger is None or e.challenger == challenger]


def with_challengers(settings, *specs: str, **changes) -> None:
    enable(settings, challengers=tuple(parse_candidate(spec) for spec in specs), **changes)


# --- the pure aggregate -------------------------------------------------------------------


def decide(kind: str = "mint", amount: str = "5", reason: str = "") -> challengers.Decide:
    return challengers.Decide(
        challenger="tight",
        spec=TIGHT,
        pool="AAPL",
        kind=kind,
        amount=Decimal(amount),
        reason=reason,
        estimated_cost_usd=None,
        significant_change=Decimal(1),
    )


def after(*commands: challengers.Decide) -> Lifecycle:
    state: Lifecycle = Lifecycle.uninitialized()
    for command in commands:
        for event in challengers.handle(state, command, NOW):
            state = challengers.apply(state, event)
    return state


@pytest.mark.parametrize(
    ("command", "recorded"),
    [
        (decide("mint", "5.5"), False),  # moved by 0.5 < the minimum 1
        (decide("mint", "6"), True),  # moved by the minimum
        (decide("redemption", "5"), True),  # another kind
        (decide("", "0", "balanced"), True),  # no operation after one
    ],
)
def test_a_decision_is_recorded_once_per_change_of_state(command, recorded):
    state = after(decide("mint", "5"))
    assert bool(challengers.handle(state, command, NOW)) is recorded


def test_no_operation_is_not_recorded_before_any_decision_nor_twice():
    assert challengers.handle(Lifecycle.uninitialized(), decide("", "0", "balanced"), NOW) == []
    state = after(decide("mint", "5"), decide("", "0", "balanced"))
    assert challengers.handle(state, decide("", "0", "active_operation"), NOW) == []


def test_a_start_of_nothing_is_refused_naming_the_amount():
    with pytest.raises(InvalidValue) as info:
        challengers.handle(Lifecycle.uninitialized(), decide("mint", "0"), NOW)
    assert info.value.field == "amount"


# --- through the store, projection and trigger --------------------------------------------


@pytest.mark.django_db
def test_challenger_decisions_are_recorded_on_fills_and_start_no_operation(settings):
    with_challengers(settings, TIGHT, WIDE)
    register("AAPL")
    # 56/44: inside the live band (0.5 +- 0.2), outside the tight one (0.5 +- 0.05).
    observe("AAPL", onchain="56", offchain="44")
    assert Operation.objects.count() == 0
    [tight] = decided("tight")
    assert (tight.pool, tight.kind, tight.amount, tight.reason) == (
        "AAPL",
        "redemption",
        Decimal("6"),
        "",
    )
    assert tight.spec == parse_candidate(TIGHT).spec
    assert decided("wide") == [] and decided("as-run") == []
    # Each fill runs the trigger: a fill that moves the excess by less than the minimum (one
    # share) records nothing; one that moves it by more records the new decision.
    onchain_fill("AAPL", "1", "Buy", price="190")  # 57/44: excess 6.5
    assert len(decided("tight")) == 1
    onchain_fill("AAPL", "2", "Buy", price="190")  # 59/44: excess 7.5
    assert [(e.kind, e.amount) for e in decided("tight")] == [
        ("redemption", Decimal("6")),
        ("redemption", Decimal("7.5")),
    ]
    # Back inside the tight band: "no operation" is the new state, recorded once.
    onchain_fill("AAPL", "7", "Sell", price="190")  # 52/44
    onchain_fill("AAPL", "0.5", "Sell", price="190")
    latest = decided("tight")[-1]
    assert (latest.kind, latest.amount, latest.reason) == ("", Decimal("0"), "balanced")
    assert len(decided("tight")) == 3
    # Never acted on: no operation, no task, in any pool.
    assert Operation.objects.count() == 0
    assert queued_tasks() == []
    assert aggregate_states_check(write=False) == []


@pytest.mark.django_db
def test_the_live_decision_is_unchanged_and_as_run_records_it_with_its_modelled_cost(settings):
    with_challengers(settings, TIGHT, WIDE)
    gas_quote_record(chain="base", gas_price_wei=10**9, eth_usd=Decimal(3000))
    gas_quote_record(chain="ethereum", gas_price_wei=10**9, eth_usd=Decimal(3000))
    observe(usdc_onchain="900", usdc_offchain="100")
    [operation] = Operation.objects.all()
    assert (operation.kind, operation.amount) == ("usdc_base_to_alpaca", Decimal("400"))
    [as_run] = decided("as-run")
    [tight] = decided("tight")
    assert (
        (as_run.kind, as_run.amount)
        == (tight.kind, tight.amount)
        == (
            "usdc_base_to_alpaca",
            Decimal("400"),
        )
    )
    assert decided("wide") == []  # 0.9 is inside 0.5 +- 0.45
    # The cost gate's estimate: gas on both chains at 1 gwei and 3000 USD/ETH, plus Circle's
    # 1 bp of 400.
    assert as_run.estimated_cost_usd is not None and as_run.estimated_cost_usd > Decimal("0.04")
    assert tight.estimated_cost_usd == as_run.estimated_cost_usd
    # The next event sees the live operation active: every challenger's decision is now none.
    observe(usdc_onchain="910", usdc_offchain="90")
    assert decided("tight")[-1].reason == "active_operation"
    assert Operation.objects.count() == 1


@pytest.mark.django_db
def test_no_challenger_configured_records_nothing(settings):
    enable(settings)
    observe(usdc_onchain="900", usdc_offchain="100")
    assert decided() == []
    assert Operation.objects.count() == 1


# --- REBALANCING_CHALLENGERS at start ------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("wide:equity_deviation=abc", "equity_deviation"),
        ("wide", "expected NAME:key=value"),
        ("wide:equity_deviation=0.3;wide:usdc_deviation=0.4", "given twice"),
        ("as-run:equity_deviation=0.3", "as-run"),
        ("w:nonsense=1", "nonsense"),
        (";".join(f"c{i}:equity_deviation=0.3" for i in range(9)), "at most 8"),
    ],
)
def test_bad_challengers_are_refused_at_start_naming_the_variable(tmp_path, value, said):
    from inventory.domain.candidates import parse_candidate as parse

    with pytest.raises(ConfigError) as info:
        load_settings_env(
            base_dir=tmp_path, env={"REBALANCING_CHALLENGERS": value}, parse_candidate=parse
        )
    [(name, reason)] = info.value.problems
    assert name == "REBALANCING_CHALLENGERS"
    assert said in reason


def test_challengers_are_parsed_at_start(tmp_path):
    loaded = load_settings_env(
        base_dir=tmp_path,
        env={"REBALANCING_CHALLENGERS": f" {TIGHT} ; {WIDE};"},
        parse_candidate=parse_candidate,
    )
    assert [c.name for c in loaded.rebalancing.challengers] == ["tight", "wide"]
    assert loaded.rebalancing.challengers[0].overrides["equity_deviation"] == Decimal("0.05")


def test_the_service_does_not_start_with_a_bad_challenger(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env |= {
        "DJANGO_SETTINGS_MODULE": "rebalancer.settings",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "REBALANCING_CHALLENGERS": "wide:AAPL.deviation=abc",
    }
    done = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    assert "REBALANCING_CHALLENGERS" in done.stderr
    assert "AAPL.deviation" in done.stderr


# --- the console ---------------------------------------------------------------------------


@pytest.fixture
def compared(settings):
    with_challengers(settings, TIGHT, WIDE, monitor_only=True)
    register("AAPL")
    observe("AAPL", onchain="56", offchain="44")  # tight: redemption 6
    observe("AAPL", onchain="76", offchain="24")  # as-run and tight: redemption 26


@pytest.mark.django_db
def test_comparison_counts_each_challengers_starts_against_the_live_settings(compared):
    [aapl] = [c for c in challenger_comparison() if c.pool == "AAPL"]
    rows = {row.name: row for row in aapl.rows}
    assert [row.name for row in aapl.rows] == ["as-run", "tight", "wide"]
    assert rows["as-run"].windows["day"].starts == 1
    assert rows["tight"].windows["day"].starts == 2
    assert rows["tight"].windows["week"].by_kind == {"redemption": 2}
    assert rows["tight"].windows["week"].amount == Decimal("32")
    assert rows["tight"].starts_delta == {"day": 1, "week": 1}
    assert rows["wide"].windows["week"].starts == 0
    assert rows["wide"].starts_delta["day"] == -1


@pytest.mark.django_db
def test_console_challengers_page_compares_each_pool(viewer_client, compared):
    response = viewer_client.get(reverse("admin:console_challengers"))
    assert response.status_code == 200
    body = response.content.decode()
    table = body[body.index('data-pool="AAPL"') :]
    tight = table[table.index('data-challenger="tight"') :]
    assert tight.index('data-window="day">2') < tight.index("(+1 vs as-run)")
    assert 'data-challenger="as-run"' in table and 'data-challenger="wide"' in table
    assert parse_candidate(WIDE).spec in body
    dashboard = viewer_client.get(reverse("admin:index")).content.decode()
    assert 'id="challengers-link"' in dashboard


@pytest.mark.django_db
def test_console_challengers_page_needs_the_console_permission(client, django_user_model):
    user = django_user_model.objects.create_user("nobody", password="pw", is_staff=True)
    client.force_login(user)
    assert client.get(reverse("admin:console_challengers")).status_code == 403

"""The cost gate (issue 24): the pure rules, and the trigger deferring through the real
store, projection and trigger (RebalanceDeferred once per change of state, shown beside the
pools), with gas prices recorded as the ticker records them."""

from __future__ import annotations

from decimal import Decimal

import pytest

from inventory.domain import costgate
from inventory.domain import events as ev
from inventory.models import Event
from operations.costgate import estimate_cost, gas_quote_record
from operations.models import Operation, OperationKind, OperationStatus
from operations.services import operation_finish
from tests.service.flows import enable, observe

GWEI = 10**9


# --- the pure rules --------------------------------------------------------------------------


def decide(amount="400", value="400", estimate="1", moved="0", **limits):
    values = {"minimum": Decimal("51"), **limits}
    return costgate.gate(
        costgate.GateInput(
            amount=Decimal(amount),
            value_usd=None if value is None else Decimal(value),
            estimate_usd=None if estimate is None else Decimal(estimate),
            moved_today=Decimal(moved),
        ),
        costgate.GateLimits(**values),
    )


def test_within_every_limit_the_operation_starts():
    assert decide(max_cost_bps=Decimal(25), daily_cap=Decimal(1000)).start


def test_an_estimate_above_the_limit_defers_naming_the_rule_and_the_figures():
    # 1 USD on 400 USD is 25 bps.
    assert decide(max_cost_bps=Decimal(25)).start
    decision = decide(estimate="1.01", max_cost_bps=Decimal(25))
    assert (decision.start, decision.rule) == (False, costgate.RULE_MAX_COST)
    assert "25.25 bps of 400 USD, above 25 bps" in decision.detail


def test_below_the_minimum_is_deferred():
    decision = decide(amount="50.999999")
    assert (decision.start, decision.rule) == (False, costgate.RULE_MINIMUM)


def test_the_daily_cap_counts_what_moved_today():
    assert decide(moved="600", daily_cap=Decimal(1000)).start  # exactly the cap
    decision = decide(moved="600.000001", daily_cap=Decimal(1000))
    assert (decision.start, decision.rule) == (False, costgate.RULE_DAILY_CAP)


@pytest.mark.parametrize(("value", "estimate"), [(None, "1000"), ("400", None), ("0", "1")])
def test_a_cost_that_cannot_be_judged_holds_nothing_back(value, estimate):
    assert decide(value=value, estimate=estimate, max_cost_bps=Decimal(1)).start


def test_gas_is_priced_per_chain_at_the_eth_price():
    usd = costgate.gas_usd(
        {"base": 300_000, "ethereum": 100_000}, {"base": GWEI, "ethereum": 20 * GWEI}, Decimal(3000)
    )
    # (0.0003 + 0.002) ETH x 3,000
    assert usd == Decimal("6.90000000")


# --- through the trigger -----------------------------------------------------------------------


def deferrals() -> list[ev.RebalanceDeferred]:
    rows = Event.objects.filter(
        aggregate_type=ev.DECISIONS, event_type=ev.RebalanceDeferred.event_type_name()
    ).order_by("id")
    return [row.domain_event() for row in rows]


def gas(gwei: int) -> None:
    for chain in ("base", "ethereum"):
        gas_quote_record(chain=chain, gas_price_wei=gwei * GWEI, eth_usd=Decimal(3000))


@pytest.mark.django_db
def test_the_estimate_uses_current_gas_circles_rate_and_values_usdc_at_par():
    gas(1)
    estimate = estimate_cost(OperationKind.USDC_BASE_TO_ALPACA, "USDC", Decimal(400))
    # Defaults: 300,000 gas on Base + 250,000 on Ethereum at 1 gwei = 0.00055 ETH = 1.65 USD;
    # Circle 1 bp of 400 = 0.04.
    assert estimate.parts == {"gas": Decimal("1.65000000"), "circle_fee": Decimal("0.04000000")}
    assert estimate.usd == Decimal("1.69")
    assert estimate.value_usd == Decimal(400)


@pytest.mark.django_db
def test_without_a_gas_quote_the_estimate_is_unknown():
    estimate = estimate_cost(OperationKind.USDC_BASE_TO_ALPACA, "USDC", Decimal(400))
    assert estimate.usd is None


@pytest.mark.django_db
def test_a_high_gas_price_defers_the_usdc_move_once_then_it_starts_when_gas_falls(settings):
    enable(settings, max_cost_bps=Decimal(100))
    gas(1000)  # 0.55 ETH x 3,000 = 1,650 USD on a 400 USD move
    observe(usdc_onchain="900", usdc_offchain="100")
    assert Operation.objects.count() == 0
    [deferred] = deferrals()
    assert (deferred.pool, deferred.kind, deferred.amount, deferred.rule) == (
        "USDC",
        OperationKind.USDC_BASE_TO_ALPACA,
        Decimal(400),
        costgate.RULE_MAX_COST,
    )
    assert deferred.estimated_cost_usd == Decimal("1650.04")
    assert "above 100 bps" in deferred.detail
    # The same state on the next events: nothing new is recorded.
    observe(usdc_onchain="910", usdc_offchain="90")
    observe(usdc_onchain="920", usdc_offchain="80")
    assert len(deferrals()) == 1
    # Gas falls: about 1.7 USD on 430 USD is about 40 bps, within 100: the move starts.
    gas(1)
    observe(usdc_onchain="930", usdc_offchain="70")
    operation = Operation.objects.get()
    assert (operation.kind, operation.amount) == (OperationKind.USDC_BASE_TO_ALPACA, Decimal(430))
    assert len(deferrals()) == 1


@pytest.mark.django_db
def test_the_daily_cap_defers_once_it_is_reached_and_is_shown_beside_the_pool(settings, client):
    from inventory.services import api_token_create

    enable(settings, usdc_daily_cap=Decimal(600))
    observe(usdc_onchain="900", usdc_offchain="100")
    first = Operation.objects.get()
    operation_finish(
        aggregate_id=first.aggregate_id,
        status=OperationStatus.COMPLETED,
        reason="",
        finished_by="test",
    )
    observe(usdc_onchain="910", usdc_offchain="90")  # 410 more: 810 > 600
    assert Operation.objects.count() == 1
    [deferred] = deferrals()
    assert deferred.rule == costgate.RULE_DAILY_CAP
    assert "400 moved today + 410 exceeds the daily cap 600" in deferred.detail
    token = api_token_create(name="reader", scopes=["read"])[1]
    pools = client.get("/api/v1/pools", HTTP_AUTHORIZATION=f"Bearer {token}").json()
    [usdc] = [p for p in pools if p["key"] == "USDC"]
    assert usdc["deferral"]["rule"] == "daily_cap"
    assert usdc["deferral"]["amount"] == "410"

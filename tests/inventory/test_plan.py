"""The pure rebalancing decision (`inventory.domain.plan`): the trigger's checks in its order,
with the facts that cost a read looked at only when the decision reaches them."""

from __future__ import annotations

from decimal import Decimal

import pytest

from inventory.domain import plan as p
from inventory.domain.inventory import ImbalanceThreshold, PoolInventory, VenueBalance
from inventory.domain.offchain import OffchainLeavable
from inventory.domain.settings import AssetOverride, RebalancingSettings
from inventory.domain.values import USDC_POOL

D = Decimal


def settings(**changes) -> RebalancingSettings:
    base = RebalancingSettings(
        enabled=True,
        paused=False,
        equity_threshold=ImbalanceThreshold(D("0.5"), D("0.2")),
        usdc_threshold=ImbalanceThreshold(D("0.5"), D("0.3")),
        equity_minimum_shares=D(1),
        usdc_minimum=D(10),
        equity_cap_shares=None,
        usdc_cap=None,
        assets={"AAPL": AssetOverride(True, None, None)},
    )
    return RebalancingSettings(**{**base.__dict__, **changes})


def pool(on: str, off: str, *, on_inflight: str = "0", reason: str | None = None):
    return PoolInventory(
        onchain=VenueBalance(D(on), D(on_inflight)),
        offchain=VenueBalance(D(off)),
        reconciliation_reason=reason,
    )


def never():
    raise AssertionError("this fact must not be read")


def plan(key="AAPL", inventory=None, config=None, **facts):
    return p.plan_pool(
        key=key,
        pool=inventory if inventory is not None else pool("10", "90"),
        settings=config or settings(),
        facts=p.PlanFacts(**facts),
    )


def test_too_much_offchain_plans_a_mint_of_the_excess_to_the_target():
    planned = plan()
    assert isinstance(planned, p.Planned)
    assert (planned.kind, planned.pool, planned.amount) == (p.MINT, "AAPL", D(40))
    assert planned.imbalance == "TooMuchOffchain"


def test_too_much_onchain_plans_a_redemption():
    planned = plan(inventory=pool("95", "5"))
    assert (planned.kind, planned.amount) == (p.REDEMPTION, D(45))


def test_within_the_band_nothing_is_planned_and_no_costly_fact_is_read():
    skipped = plan(
        inventory=pool("40", "60"), market_open=never, active_operation=never, leavable=never
    )
    assert isinstance(skipped, p.Skipped) and skipped.code == p.BALANCED


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"paused": True}, p.INACTIVE),
        ({"enabled": False}, p.INACTIVE),
        ({"assets": {"AAPL": AssetOverride(False, None, None)}}, p.DISABLED),
        ({"assets": {}}, p.DISABLED),
    ],
)
def test_switches_come_first(changes, code):
    skipped = plan(config=settings(**changes), hold_reason=never, market_open=never)
    assert isinstance(skipped, p.Skipped) and skipped.code == code


def test_reconciliation_and_hold_skip_before_the_band_is_read():
    assert plan(inventory=pool("10", "90", reason="bad fill")).code == p.RECONCILIATION
    held = plan(hold_reason="circuit breaker open", market_open=never)
    assert (held.code, held.reason) == (p.HELD, "circuit breaker open")


def test_market_closed_holds_equities_but_not_usdc():
    assert plan(market_open=False).code == p.MARKET_CLOSED
    assert plan(market_open=False).message.startswith("AAPL imbalanced but the market is closed")
    usdc = plan(key=USDC_POOL, inventory=pool("900", "100"), market_open=False)
    assert (usdc.kind, usdc.amount) == (p.USDC_BASE_TO_ALPACA, D(400))


def test_an_active_operation_holds_the_pool_and_is_named():
    skipped = plan(active_operation=lambda: "17")
    assert skipped.code == p.ACTIVE_OPERATION and "17" in skipped.reason


def test_inflight_means_no_new_operation():
    assert plan(inventory=pool("10", "90", on_inflight="1")).code == p.BALANCED


def test_cap_minimum_and_unit_floor():
    assert plan(config=settings(equity_cap_shares=D(7))).amount == D(7)
    assert plan(config=settings(equity_minimum_shares=D(41))).code == p.BELOW_MINIMUM
    # USDC has 6 decimals: the excess is floored to one micro-USDC.
    tiny = pool("0.0000001", "0.0000009")
    assert plan(key=USDC_POOL, inventory=tiny, config=settings(usdc_minimum=D(0))).code == (
        p.BELOW_UNIT
    )


def leavable(pool_available: str, cash: str, reserve: str = "0") -> OffchainLeavable:
    return OffchainLeavable(
        pool_available=D(pool_available),
        cash=D(cash),
        cash_withdrawable=None,
        usdc=D(0),
        reserve=D(reserve),
        hedge_spend=D(0),
    )


def test_alpaca_to_base_is_capped_to_what_can_leave():
    usdc = pool("100", "900")
    full = plan(key=USDC_POOL, inventory=usdc, leavable=leavable("900", "900"))
    assert (full.kind, full.amount, full.leavable) == (p.USDC_ALPACA_TO_BASE, D(400), None)
    capped = plan(key=USDC_POOL, inventory=usdc, leavable=leavable("900", "150"))
    assert capped.amount == D(150) and capped.leavable is not None
    low = plan(key=USDC_POOL, inventory=usdc, leavable=leavable("900", "305", reserve="300"))
    assert low.code == p.LEAVABLE_BELOW_MINIMUM and "5.000000 can leave Alpaca" in low.reason
    assert plan(key=USDC_POOL, inventory=usdc, leavable=None).code == p.LEAVABLE_UNKNOWN


def test_per_asset_band_is_used():
    wide = settings(assets={"AAPL": AssetOverride(True, None, D("0.45"))})
    assert plan(config=wide).code == p.BALANCED

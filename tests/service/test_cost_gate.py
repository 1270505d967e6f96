"""The cost gate (issue 24): the pure rules, and the trigger deferring through the real
store, projection and trigger (RebalanceDeferred once per change of state, shown beside the
pools), with gas prices recorded as the ticker records them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from inventory.domain import costgate
from inventory.domain import events as ev
from inventory.domain.values import InvalidValue, RebalanceDirection
from inventory.models import Event
from inventory.services import snapshot_record
from operations.costgate import estimate_cost, gas_quote_record, moved_today
from operations.models import Operation, OperationKind, OperationStatus
from tests.service.flows import (
    REDEMPTION_WALLET,
    TX,
    WALLET,
    append,
    enable,
    observe,
)

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


def mint_started(symbol: str, quantity: str) -> ev.MintRequested:
    return ev.MintRequested(
        symbol=symbol, quantity=Decimal(quantity), wallet=WALLET, requested_at=NOON
    )


def redemption_started(symbol: str, quantity: str) -> ev.VaultWithdrawSigned:
    return ev.VaultWithdrawSigned(
        symbol=symbol,
        quantity=Decimal(quantity),
        token=REDEMPTION_WALLET,
        vault=WALLET,
        vault_id="0x" + "11" * 32,
        amount_units=int(Decimal(quantity) * 10**18),
        raw_tx=b"\x02signed",
        tx_hash=TX,
        signed_at=NOON,
    )


def usdc_started(amount: str) -> ev.Requested:
    return ev.Requested(
        direction=RebalanceDirection.BASE_TO_ALPACA, amount=Decimal(amount), requested_at=NOON
    )


NOON = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def test_the_volume_counts_what_each_operation_s_first_event_moves_for_the_pool():
    first_events = [
        (ev.MINT, mint_started("AAPL", "3")),
        (ev.MINT, mint_started("MSFT", "5")),
        (ev.REDEMPTION, redemption_started("AAPL", "2.5")),
        (ev.USDC_REBALANCE, usdc_started("400")),
        (ev.USDC_REBALANCE, usdc_started("0.000001")),
        # A redemption whose log began at our wallet (before vault withdrawals were recorded).
        (
            ev.REDEMPTION,
            ev.TransferSigned(
                symbol="AAPL",
                quantity=Decimal(7),
                token=REDEMPTION_WALLET,
                redemption_wallet=REDEMPTION_WALLET,
                raw_tx=b"\x02signed",
                tx_hash=TX,
                signed_at=NOON,
            ),
        ),
        # Events that open no operation move nothing.
        (
            ev.MINT,
            ev.MintAccepted(issuer_request_id="m", tokenization_request_id="t", accepted_at=NOON),
        ),
        (ev.MINT, usdc_started("1000")),
    ]
    assert costgate.volume_started(first_events, "AAPL") == Decimal("12.5")
    assert costgate.volume_started(first_events, "MSFT") == Decimal(5)
    assert costgate.volume_started(first_events, "USDC") == Decimal("400.000001")
    assert costgate.volume_started(first_events, "NVDA") == 0
    assert costgate.volume_started([], "USDC") == 0


@pytest.mark.parametrize(
    ("now", "start"),
    [
        (datetime(2026, 3, 2, 0, 0, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC)),
        (datetime(2026, 3, 2, 23, 59, 59, 999999, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC)),
        # 01:30 in UTC+2 is still the previous UTC day.
        (
            datetime(2026, 3, 3, 1, 30, tzinfo=timezone.get_fixed_timezone(120)),
            datetime(2026, 3, 2, tzinfo=UTC),
        ),
    ],
)
def test_the_day_is_the_utc_day(now, start):
    assert costgate.day_bounds(now) == (start, start + timedelta(days=1))


def test_a_naive_time_has_no_day():
    with pytest.raises(InvalidValue, match="timezone-aware"):
        costgate.day_bounds(datetime(2026, 3, 2, 12, 0))  # noqa: DTZ001


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


def usdc_pool_shown(client) -> dict:
    from inventory.services import api_token_create

    token = api_token_create(name=f"reader-{Event.objects.count()}", scopes=["read"])[1]
    pools = client.get("/api/v1/pools", HTTP_AUTHORIZATION=f"Bearer {token}").json()
    [usdc] = [p for p in pools if p["key"] == "USDC"]
    return usdc


@pytest.mark.django_db
def test_a_high_gas_price_defers_the_usdc_move_once_then_it_starts_when_gas_falls(settings, client):
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
    assert usdc_pool_shown(client)["deferral"]["rule"] == costgate.RULE_MAX_COST
    # Gas falls: about 1.7 USD on 430 USD is about 40 bps, within 100: the move starts.
    gas(1)
    observe(usdc_onchain="930", usdc_offchain="70")
    operation = Operation.objects.get()
    assert (operation.kind, operation.amount) == (OperationKind.USDC_BASE_TO_ALPACA, Decimal(430))
    assert len(deferrals()) == 1
    # Still out of band, but no longer deferred: the pool shows its operation instead.
    shown = usdc_pool_shown(client)
    assert shown["state"] == "too_much_onchain"
    assert shown["deferral"] is None
    assert shown["active_operation"]["id"] == operation.pk


@pytest.mark.django_db
def test_the_daily_cap_defers_once_it_is_reached_and_is_shown_beside_the_pool(settings, client):
    from inventory.services import api_token_create

    enable(settings, usdc_daily_cap=Decimal(600))
    observe_now(usdc_onchain="900", usdc_offchain="100")
    first = Operation.objects.get()
    moved(first, "400")
    observe_now(usdc_onchain="910", usdc_offchain="90")  # 410 more: 810 > 600
    assert Operation.objects.count() == 1
    [deferred] = deferrals()
    assert deferred.rule == costgate.RULE_DAILY_CAP
    assert "400 moved today + 410 exceeds the daily cap 600" in deferred.detail
    token = api_token_create(name="reader", scopes=["read"])[1]
    pools = client.get("/api/v1/pools", HTTP_AUTHORIZATION=f"Bearer {token}").json()
    [usdc] = [p for p in pools if p["key"] == "USDC"]
    assert usdc["deferral"]["rule"] == "daily_cap"
    assert usdc["deferral"]["amount"] == "410"


def observe_now(*, usdc_onchain: str, usdc_offchain: str) -> None:
    """A USDC snapshot read now (the cap's day is the clock's; `observe` runs on a test clock
    in March 2026, and snapshots older than the pool's newest change are ignored)."""
    snapshot_record(
        fetched_at=timezone.now(),
        onchain_cash=Decimal(usdc_onchain),
        offchain_cash=Decimal(usdc_offchain),
    )


def moved(operation: Operation, amount: str) -> None:
    """The USDC move's log, recorded now: started with `amount` (whatever its row says), then
    its deposit confirmed (the trigger completes the operation)."""
    append(
        ev.USDC_REBALANCE,
        operation.aggregate_id,
        usdc_started(amount),
        ev.DepositConfirmed(deposit_confirmed_at=timezone.now()),
        now=timezone.now(),
    )
    operation.refresh_from_db()
    assert operation.status == OperationStatus.COMPLETED


@pytest.mark.django_db
def test_the_daily_cap_counts_the_start_events_in_the_log_not_the_operation_rows(settings):
    """The log and the rows disagree: the first operation's row says 400, its start event
    150; another was started yesterday (its event recorded then). The cap counts the day's
    start events: 150 + 410 fits 600 (the rows would say 810 and defer), 560 + 400 does not."""
    enable(settings, usdc_daily_cap=Decimal(600))
    now = timezone.now()
    append(ev.USDC_REBALANCE, "yesterday", usdc_started("590"), now=now - timedelta(days=1))
    observe_now(usdc_onchain="900", usdc_offchain="100")
    first = Operation.objects.get()
    assert first.amount == Decimal(400)
    moved(first, "150")
    assert moved_today("USDC") == Decimal(150)

    observe_now(usdc_onchain="910", usdc_offchain="90")  # 410 more: 560 <= 600, it starts
    second = Operation.objects.order_by("-id").first()
    assert (second.pk != first.pk, second.amount) == (True, Decimal(410))
    moved(second, "410")
    assert moved_today("USDC") == Decimal(560)
    assert moved_today("AAPL") == 0
    assert deferrals() == []

    observe_now(usdc_onchain="900", usdc_offchain="100")  # 400 more: 960 > 600
    assert Operation.objects.count() == 2
    [deferred] = deferrals()
    assert (deferred.rule, deferred.amount) == (costgate.RULE_DAILY_CAP, Decimal(400))
    assert deferred.detail == "560 moved today + 400 exceeds the daily cap 600"
    assert deferred.last_operation_id == second.pk
    # Audited once per change of state, not once per event.
    observe_now(usdc_onchain="920", usdc_offchain="80")
    observe_now(usdc_onchain="905", usdc_offchain="95")
    assert len(deferrals()) == 1
    # Tomorrow the day's count starts again from the log: 0 + 400 fits, the move starts.
    from operations.costgate import gate_check

    decision, _ = gate_check(
        kind=OperationKind.USDC_BASE_TO_ALPACA,
        pool="USDC",
        amount=Decimal(400),
        minimum=Decimal(51),
        now=now + timedelta(days=1),
    )
    assert decision.start


@pytest.mark.django_db
def test_an_equity_pool_counts_its_own_mints_and_redemptions_in_shares():
    now = timezone.now()
    append(ev.MINT, "m1", mint_started("AAPL", "3"), now=now)
    append(ev.MINT, "m2", mint_started("MSFT", "4"), now=now)
    # Only an operation's first event opens it: the transfer after the withdrawal adds nothing.
    transfer = ev.TransferSigned(
        symbol="AAPL",
        quantity=Decimal("1.5"),
        token=REDEMPTION_WALLET,
        redemption_wallet=REDEMPTION_WALLET,
        raw_tx=b"\x02signed",
        tx_hash=TX,
        signed_at=NOON,
    )
    append(ev.REDEMPTION, "r1", redemption_started("AAPL", "1.5"), transfer, now=now)
    append(ev.USDC_REBALANCE, "u1", usdc_started("400"), now=now)
    assert moved_today("AAPL", now=now) == Decimal("4.5")
    assert moved_today("MSFT", now=now) == Decimal(4)
    assert moved_today("USDC", now=now) == Decimal(400)


@pytest.mark.parametrize("given", ["abc", "0", "-5", "NaN", "100001"])
def test_a_simulated_day_refuses_a_gas_spike_that_is_no_gas_price(given):
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match=f"--gas-spike: '{given}': must be a number of gwei"):
        call_command("runrebalancer", "--simulate", "--gas-spike", given)

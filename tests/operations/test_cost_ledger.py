"""The cost ledger (issue 24) against the simulated venue: each transaction an operation sent,
from its receipt (exact), valued at the ETH/USD feed the simulated Base deploys; Circle's fee
as charged; checked against the chains (our wallet's native balance, the CCTP fee recipient's
USDC) and the pure domain. Real DB, real anvil chains, the runner in-process."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime
from decimal import ROUND_DOWN, Decimal

import pytest
from django.test import Client

from inventory.domain import costs as costs_domain
from inventory.domain import events as ev
from inventory.domain import usdc
from inventory.domain.lifecycle import Lifecycle
from inventory.domain.values import InvalidValue, RebalanceDirection
from inventory.models import Event
from inventory.store import aggregate_execute
from operations.costs import costs_report, operation_costs
from operations.models import OperationStatus
from operations.services import operation_create
from tests.operations.conftest import advance_until_finished
from tests.operations.usdc_support import A2B, next_amount, usdc_events
from venues.sim.chain import SIM_ETH_USD_ANSWER

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
TX = "0x" + "ab" * 32


# --- the pure domain ------------------------------------------------------------------------


def record(**changes) -> costs_domain.RecordTransactionCost:
    values = {
        "operation_kind": "mint",
        "pool": "AAPL",
        "chain": "base",
        "chain_id": 8453,
        "tx_hash": TX,
        "gas_used": 21_000,
        "effective_gas_price_wei": 1_500_000_000,
        "eth_usd": Decimal("3000"),
        "eth_usd_feed": "0x" + "11" * 20,
        "eth_usd_round": 7,
    }
    return costs_domain.RecordTransactionCost(**{**values, **changes})


def test_a_receipt_becomes_its_exact_native_fee_valued_at_the_price_read():
    [event] = costs_domain.handle(Lifecycle.uninitialized(), record(), NOW)
    assert event.native_fee_wei == 21_000 * 1_500_000_000
    # 0.0000315 ETH x 3,000 USD
    assert event.fee_usd == Decimal("0.09450000")
    assert (event.eth_usd, event.eth_usd_round) == (Decimal("3000"), 7)


def test_without_a_price_the_fee_is_recorded_unvalued():
    [event] = costs_domain.handle(
        Lifecycle.uninitialized(), record(eth_usd=None, eth_usd_feed=None, eth_usd_round=None), NOW
    )
    assert event.native_fee_wei == 31_500_000_000_000
    assert event.fee_usd is None


def test_a_transaction_is_recorded_once_whatever_the_case_of_its_hash():
    state = Lifecycle.uninitialized()
    for event in costs_domain.handle(state, record(), NOW):
        state = costs_domain.apply(state, event)
    assert costs_domain.handle(state, record(tx_hash=TX.upper().replace("0X", "0x")), NOW) == []
    assert len(costs_domain.handle(state, record(tx_hash="0x" + "cd" * 32), NOW)) == 1


@pytest.mark.parametrize(
    ("changes", "field"),
    [({"gas_used": -1}, "gas_used"), ({"eth_usd": Decimal(0)}, "eth_usd")],
)
def test_impossible_figures_are_refused_naming_the_field(changes, field):
    with pytest.raises(InvalidValue) as info:
        costs_domain.handle(Lifecycle.uninitialized(), record(**changes), NOW)
    assert info.value.field == field


def test_a_conversion_cost_is_recorded_once_per_venue_reference():
    # The shape the USD<->USDC conversion step records (not implemented here).
    command = costs_domain.RecordVenueCost(
        operation_kind="usdc_alpaca_to_base",
        pool="USDC",
        venue="alpaca",
        cost_kind="conversion",
        reference="order-1",
        notional=Decimal("10000"),
        filled_price=Decimal("0.9998"),
        spread_usd=Decimal("2"),
        fee_usd=Decimal("0.5"),
    )
    state = Lifecycle.uninitialized()
    [event] = costs_domain.handle(state, command, NOW)
    assert (event.spread_usd, event.fee_usd, event.filled_price) == (
        Decimal("2"),
        Decimal("0.5"),
        Decimal("0.9998"),
    )
    state = costs_domain.apply(state, event)
    assert costs_domain.handle(state, command, NOW) == []


# --- the simulated venue -------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.chain
def test_the_eth_usd_feed_is_read_from_the_simulated_base(venue_config, venues):
    feed = venue_config.workers.eth_usd_aggregator
    assert feed is not None
    latest = venues.base.price_feed_latest(feed=feed)
    assert latest.decimals == 8
    assert latest.answer == SIM_ETH_USD_ANSWER
    assert latest.price == Decimal("3000")
    assert latest.round_id >= 1


@pytest.mark.django_db
@pytest.mark.chain
def test_a_usdc_move_records_every_transaction_exactly_as_the_chains_charged_it(
    settings, venue_config, sim_venue, venues
):
    settings.REBALANCING = venue_config
    usdc_base = venue_config.workers.usdc_base
    fee_recipient = sim_venue.chains.fee_recipient.address
    eth_before = venues.ethereum.native_balance()
    base_before = venues.base.native_balance()
    fees_before = venues.base.erc20_balance(token=usdc_base, owner=fee_recipient)

    operation = operation_create(kind=A2B, pool="USDC", amount=Decimal(150))
    assert operation is not None
    advance_until_finished(operation, venues)
    operation.refresh_from_db()
    assert operation.status == OperationStatus.COMPLETED, operation.failure_reason

    costs = operation_costs(operation)
    chains = {venues.ethereum.name: venues.ethereum, venues.base.name: venues.base}
    assert {t.chain for t in costs.transactions} == set(chains)  # a burn and Base's mint/deposit
    assert len({t.tx_hash for t in costs.transactions}) == len(costs.transactions)
    for cost in costs.transactions:
        receipt = chains[cost.chain].receipt(cost.tx_hash)
        assert receipt is not None
        assert cost.gas_used == receipt.gas_used > 0
        assert cost.effective_gas_price_wei == receipt.effective_gas_price > 0
        assert cost.native_fee_wei == receipt.gas_used * receipt.effective_gas_price
        assert cost.eth_usd == Decimal("3000")
        expected_usd = (Decimal(cost.native_fee_wei) / Decimal(10**18) * 3000).quantize(
            Decimal("1e-8")
        )
        assert cost.fee_usd == expected_usd
    # Exactly what our wallet paid on each chain (nothing else sent from it meanwhile).
    paid = costs.native_fee_wei
    assert eth_before - venues.ethereum.native_balance() == paid[venues.ethereum.name]
    assert base_before - venues.base.native_balance() == paid[venues.base.name]
    # Circle's fee as charged: what its fee recipient was minted on Base.
    fees_after = venues.base.erc20_balance(token=usdc_base, owner=fee_recipient)
    assert costs.circle_fee_usdc == Decimal(fees_after - fees_before).scaleb(-6)
    assert costs.circle_fee_usdc == Decimal("0.015")  # 1 bp of 150
    assert costs.alpaca_fee_usdc == 0  # the simulated Alpaca charges no network fee here
    assert costs.total_usd == costs.gas_usd + Decimal("0.015")
    assert [s.step for s in costs.steps][-1] == "DepositConfirmed"
    assert costs.in_flight_s == pytest.approx(sum(s.seconds for s in costs.steps))

    # The day's report sums it per kind, with the cost per 10,000 USD moved.
    report = costs_report()
    [group] = [g for g in report["groups"] if g["kind"] == A2B]
    assert group["moved_usd"] == Decimal(150)
    assert group["total_usd"] == costs.total_usd
    assert group["cost_per_10k_usd"] == (costs.total_usd / 150 * 10_000).quantize(Decimal("1e-8"))

    # The ledger is part of the operation's own log (nothing in the legacy aggregate), and
    # recording a receipt again (a worker resuming) adds nothing.
    assert not Event.objects.filter(aggregate_type=ev.COSTS).exists()
    own = Event.objects.filter(
        aggregate_type=ev.USDC_REBALANCE,
        event_type=ev.UsdcTransactionCostRecorded.event_type_name(),
        aggregate_id=operation.aggregate_id,
    )
    count = own.count()
    assert count == len(costs.transactions)
    first = costs.transactions[0]
    receipt = chains[first.chain].receipt(first.tx_hash)
    assert (
        aggregate_execute(
            spec=usdc.SPEC,
            aggregate_id=operation.aggregate_id,
            command=record(
                operation_kind=A2B,
                pool="USDC",
                chain=first.chain,
                tx_hash=first.tx_hash,
                gas_used=receipt.gas_used,
                effective_gas_price_wei=receipt.effective_gas_price,
            ),
        )
        == []
    )
    assert own.count() == count


@pytest.mark.django_db
@pytest.mark.chain
def test_a_conversions_spread_is_a_venue_cost_of_its_operation_everywhere(
    settings, venue_config, sim_venue, venues, client
):
    """Issue 20/24: the USD a USDCUSD conversion lost to the spread (`ConversionConfirmed.cost`)
    is a venue cost of its operation: in its costs, the day's report, /api/v1/costs, the
    operation's page and /metrics, exactly as recorded."""
    from django.contrib.auth.models import User
    from django.urls import reverse

    from inventory.services import api_token_create
    from operations.costs import cost_totals

    settings.REBALANCING = venue_config
    before = sim_venue.server.knobs
    sim_venue.server.set_knobs(usdc_spread_bps=Decimal(20))  # buys at 1.001
    try:
        operation = operation_create(kind=A2B, pool="USDC", amount=next_amount())
        assert operation is not None
        advance_until_finished(operation, venues)
    finally:
        sim_venue.server.set_knobs(**dataclasses.asdict(before))
    operation.refresh_from_db()
    assert operation.status == OperationStatus.COMPLETED, operation.failure_reason
    [converted] = [e for e in usdc_events(operation) if isinstance(e, ev.ConversionConfirmed)]
    spread = converted.cost
    assert spread == operation.amount - (operation.amount / Decimal("1.001")).quantize(
        Decimal("0.000001"), rounding=ROUND_DOWN
    )
    assert spread > 0

    costs = operation_costs(operation)
    assert costs.venue_costs_usd == spread
    assert costs.total_usd == costs.gas_usd + costs.circle_fee_usdc + spread
    [group] = [g for g in costs_report()["groups"] if g["kind"] == A2B]
    assert group["venue_costs_usd"] == spread
    usd, _ = cost_totals(since=operation.created_at)
    assert usd[(A2B, "venue")] == spread

    token = api_token_create(name="reader", scopes=["read"])[1]
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    body = client.get("/api/v1/costs").json()
    [api_group] = [g for g in body["groups"] if g["kind"] == A2B]
    assert Decimal(api_group["venue_costs_usd"]) == spread
    detail = client.get(f"/api/v1/operations/{operation.pk}").json()
    assert Decimal(detail["costs"]["venue_costs_usd"]) == spread
    metrics = client.get("/metrics").content.decode()
    assert f'rebalancer_cost_usd{{component="venue",kind="{A2B}"}} {float(spread)}' in metrics
    console = Client()
    console.force_login(User.objects.create_superuser("root", "root@example.invalid", "pw-1"))
    page = console.get(reverse("admin:operations_operation_change", args=[operation.pk]))
    venue_row = re.search(r'<tr class="cost-venue">.*?</tr>', page.content.decode(), re.S)
    assert venue_row is not None
    assert f"<td>{spread}</td>" in venue_row.group(0)


# --- the ledger's surfaces: manage.py costs, /api/v1/costs, the operation, console, /metrics ---


@pytest.fixture(params=["own log", "legacy OperationCost"])
def ledger(db, request):
    """A USDC move with two recorded transactions (Ethereum unvalued, Base at 2,500): in the
    operation's own log, or in the legacy `OperationCost` aggregate that older logs hold (the
    ledger reads both alike)."""
    operation = operation_create(kind=A2B, pool="USDC", amount=Decimal(2000))
    assert operation is not None
    spec = costs_domain.SPEC
    if request.param == "own log":
        spec = usdc.SPEC
        aggregate_execute(
            spec=spec,
            aggregate_id=operation.aggregate_id,
            command=usdc.Request(RebalanceDirection.ALPACA_TO_BASE, Decimal(2000)),
        )
    for chain, tx_hash, gas, price, eth_usd in (
        ("ethereum", "0x" + "01" * 32, 100_000, 20_000_000_000, None),
        ("base", "0x" + "02" * 32, 200_000, 1_000_000_000, Decimal("2500")),
    ):
        aggregate_execute(
            spec=spec,
            aggregate_id=operation.aggregate_id,
            command=record(
                operation_kind=A2B,
                pool="USDC",
                chain=chain,
                tx_hash=tx_hash,
                gas_used=gas,
                effective_gas_price_wei=price,
                eth_usd=eth_usd,
                eth_usd_feed=None if eth_usd is None else "0x" + "11" * 20,
                eth_usd_round=None if eth_usd is None else 3,
            ),
        )
    return operation


# Base: 200,000 x 1 gwei = 0.0002 ETH x 2,500 = 0.5 USD; Ethereum 0.002 ETH, not valued.
BASE_USD = Decimal("0.50000000")


def test_manage_costs_sums_per_day_and_kind(ledger, capsys):
    import json

    from django.core.management import call_command

    call_command("costs", "--json")
    report = json.loads(capsys.readouterr().out)
    [group] = report["groups"]
    assert group["kind"] == A2B
    assert group["day"] == ledger.created_at.date().isoformat()
    assert group["native_fee_wei"] == {"base": "200000000000000", "ethereum": "2000000000000000"}
    assert Decimal(group["gas_usd"]) == BASE_USD
    assert group["gas_unvalued"] == 1
    assert Decimal(group["moved_usd"]) == Decimal(2000)
    assert Decimal(group["cost_per_10k_usd"]) == Decimal("2.5")  # 0.5 / 2,000 x 10,000
    call_command("costs")
    table = capsys.readouterr().out
    assert A2B in table
    assert "1 transaction(s) without an ETH/USD price" in table
    tomorrow = ledger.created_at.date().toordinal() + 1
    from datetime import date

    call_command("costs", "--from", date.fromordinal(tomorrow).isoformat())
    assert "no operation in that period" in capsys.readouterr().out


def test_manage_costs_refuses_a_bad_period():
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="--from='yesterday'"):
        call_command("costs", "--from", "yesterday")
    with pytest.raises(CommandError, match="must be after"):
        call_command("costs", "--from", "2026-03-02", "--to", "2026-03-01")


@pytest.fixture
def reader(client):
    from inventory.services import api_token_create

    token = api_token_create(name="reader", scopes=["read"])[1]
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


def test_api_costs_and_the_operation_show_the_ledger(ledger, reader):
    day = ledger.created_at.date().isoformat()
    response = reader.get("/api/v1/costs", {"from": day})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["since"].startswith(day)
    assert Decimal(body["total"]["gas_usd"]) == BASE_USD
    assert body["groups"][0]["kind"] == A2B
    bad = reader.get("/api/v1/costs", {"from": "soon"})
    assert bad.status_code == 400
    assert bad.json()["errors"][0]["field"] == "from"
    detail = reader.get(f"/api/v1/operations/{ledger.pk}").json()
    transactions = detail["costs"]["transactions"]
    assert [(t["chain"], t["native_fee_wei"], t["fee_usd"]) for t in transactions] == [
        ("ethereum", "2000000000000000", None),
        ("base", "200000000000000", "0.50000000"),
    ]
    assert Decimal(detail["costs"]["total_usd"]) == BASE_USD


def test_console_operation_page_and_metrics_show_the_ledger(ledger, reader):
    from django.contrib.auth.models import User
    from django.test import Client
    from django.urls import reverse

    user = User.objects.create_superuser("root", "root@example.invalid", "pw-root-123")
    console = Client()
    console.force_login(user)
    page = console.get(
        reverse("admin:operations_operation_change", args=[ledger.pk])
    ).content.decode()
    assert 'id="operation-costs"' in page
    assert page.count('class="cost-transaction"') == 2
    assert "200000 gas &times; 1000000000 wei = 200000000000000 wei at ETH/USD 2500" in page
    assert "not valued" in page
    metrics = reader.get("/metrics").content.decode()
    assert f'rebalancer_cost_usd{{component="gas",kind="{A2B}"}} 0.5' in metrics
    assert f'rebalancer_native_fee_eth{{chain="ethereum",kind="{A2B}"}} 0.002' in metrics

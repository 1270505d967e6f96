"""The cost gate against a real high gas price (issue 24): the simulated Ethereum's base fee
is raised the way a busy network raises it (`SimChains.base_fee_set`), the service reads it
as it does every venue poll (`gas_quotes_refresh`: the latest block's base fee plus the
priority fee, and ETH/USD from the simulated Base's feed), and the trigger, fed snapshots
through the real store and projection, defers the USDC move for its cost at an ordinary
REBALANCING_MAX_COST_BPS, once per change of state; when gas falls the move starts and runs
to completion on the chains, paying the fallen price. Real DB, real anvil chains."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest

from inventory.domain import costgate
from inventory.domain import events as ev
from inventory.models import Event
from operations.costgate import DEFAULT_GAS_UNITS, gas_quotes_refresh
from operations.costs import operation_costs
from operations.models import GasQuote, Operation, OperationKind, OperationStatus
from tests.operations.conftest import advance_until_finished
from tests.service.flows import observe

pytestmark = [pytest.mark.django_db, pytest.mark.chain]

GWEI = 10**9
# A quarter of a percent: what a desk would allow for moving cash between its venues.
MAX_COST_BPS = Decimal(25)
SPIKE_WEI = 150 * GWEI  # a busy day on Ethereum
CALM_WEI = 1 * GWEI
USDC_UNITS = 10**6


def cost_deferrals() -> list[ev.RebalanceDeferred]:
    rows = Event.objects.filter(
        aggregate_type=ev.DECISIONS, event_type=ev.RebalanceDeferred.event_type_name()
    ).order_by("id")
    return [row.domain_event() for row in rows]


@pytest.fixture
def funded_vault(sim_venue):
    """The USDC a Base-to-Alpaca move withdraws, in our vault on the simulated Base."""
    chains = sim_venue.chains
    units = 10_000 * USDC_UNITS
    chains.mint_usdc(chains.base, chains.market_maker.address, units)
    vault_id = bytes.fromhex(sim_venue.usdc_vault_id.removeprefix("0x"))
    chains.vault_deposit(chains.market_maker, chains.base.usdc, vault_id, units)


@pytest.fixture
def calm_afterwards(sim_venue):
    yield
    sim_venue.chains.base_fee_set(sim_venue.chains.ethereum, CALM_WEI)


def test_a_high_ethereum_gas_price_defers_the_usdc_move_until_gas_falls(
    settings, venue_config, venues, sim_venue, funded_vault, calm_afterwards
):
    settings.REBALANCING = dataclasses.replace(venue_config, max_cost_bps=MAX_COST_BPS)
    chains = sim_venue.chains
    assert chains.base_fee_set(chains.ethereum, SPIKE_WEI) == SPIKE_WEI
    assert gas_quotes_refresh() == 2
    quotes = {q.chain: q for q in GasQuote.objects.all()}
    # What a transaction pays per gas now: the latest block's base fee plus the priority fee.
    assert quotes["ethereum"].gas_price_wei >= SPIKE_WEI
    assert quotes["base"].gas_price_wei < 2 * GWEI
    assert quotes["ethereum"].eth_usd == Decimal(3000)  # the simulated Base's feed

    # USDC piles up onchain: a Base-to-Alpaca move of 4,000 is due.
    observe(usdc_onchain="9000", usdc_offchain="1000")
    assert Operation.objects.count() == 0
    [deferred] = cost_deferrals()
    assert (deferred.pool, deferred.kind, deferred.amount, deferred.rule) == (
        "USDC",
        OperationKind.USDC_BASE_TO_ALPACA,
        Decimal(4000),
        costgate.RULE_MAX_COST,
    )
    gas_usd = costgate.gas_usd(
        DEFAULT_GAS_UNITS[OperationKind.USDC_BASE_TO_ALPACA],
        {chain: int(q.gas_price_wei) for chain, q in quotes.items()},
        Decimal(3000),
    )
    assert deferred.estimated_cost_usd == gas_usd + Decimal("0.4")  # Circle: 1 bp of 4,000
    assert deferred.value_usd == Decimal(4000)
    assert costgate.cost_bps(deferred.estimated_cost_usd, Decimal(4000)) > 4 * MAX_COST_BPS
    assert f"above {MAX_COST_BPS} bps" in deferred.detail

    # Every snapshot runs the trigger again; while gas stays high nothing new is recorded.
    for onchain, offchain in (("9100", "900"), ("8900", "1100"), ("9200", "800")):
        gas_quotes_refresh()
        observe(usdc_onchain=onchain, usdc_offchain=offchain)
    assert len(cost_deferrals()) == 1
    assert Operation.objects.count() == 0

    # Gas falls: the next read sees it, the next snapshot starts the move.
    assert chains.base_fee_set(chains.ethereum, CALM_WEI) == CALM_WEI
    gas_quotes_refresh()
    observe(usdc_onchain="9000", usdc_offchain="1000")
    operation = Operation.objects.get()
    assert (operation.kind, operation.amount) == (OperationKind.USDC_BASE_TO_ALPACA, Decimal(4000))
    assert len(cost_deferrals()) == 1

    advance_until_finished(operation, venues)
    operation.refresh_from_db()
    assert operation.status == OperationStatus.COMPLETED, operation.failure_reason
    # It paid the fallen price on Ethereum (EIP-1559 only lowers it below a block's target).
    on_ethereum = [t for t in operation_costs(operation).transactions if t.chain == "ethereum"]
    assert on_ethereum
    assert all(t.effective_gas_price_wei <= 2 * GWEI for t in on_ethereum)

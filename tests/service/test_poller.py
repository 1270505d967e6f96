"""The venue poller against the simulated venue: balances recorded match what the venues
hold, every onchain read pinned to one block (recorded), one venue down records the other
and names the failing one, and a fill already inside a snapshot is not counted again."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from inventory.domain import events as ev
from inventory.domain.units import from_units
from inventory.domain.values import USDC_POOL
from inventory.models import Event, InventoryPool
from inventory.services import fill_record_onchain
from operations.venues import Venues
from service.models import Heartbeat, MarketClock
from service.poller import venue_balances_poll
from service.supervisor import inventory_role_problems
from tests.operations.conftest import config_from_env
from venues.sim.venue import SimVenue, equity_vault_id

pytestmark = [pytest.mark.chain, pytest.mark.django_db]

UNIT = 10**18
USDC_UNIT = 10**6


def vault_id(text: str) -> bytes:
    return bytes.fromhex(text.removeprefix("0x"))


def take_into_vault(sim_venue: SimVenue, *, symbol: str | None, units: int):
    """A taker fill that moves `units` of the symbol's token (or USDC) into our vault."""
    chains = sim_venue.chains
    if symbol is None:
        token, vid = chains.base.usdc, vault_id(sim_venue.usdc_vault_id)
    else:
        token, vid = sim_venue.equity_tokens[symbol], vault_id(equity_vault_id(symbol))
    return chains.simulate_take(
        owner=sim_venue.market_maker.address,
        vault_id=vid,
        input_token=token,
        input_units=units,
        output_token=token,
        output_units=0,
    )


def vault_amount(sim_venue: SimVenue, symbol: str | None) -> Decimal:
    chains = sim_venue.chains
    if symbol is None:
        units = chains.vault_balance(
            sim_venue.market_maker.address, chains.base.usdc, vault_id(sim_venue.usdc_vault_id)
        )
        return from_units(units, 6)
    units = chains.vault_balance(
        sim_venue.market_maker.address,
        sim_venue.equity_tokens[symbol],
        vault_id(equity_vault_id(symbol)),
    )
    return from_units(units, 18)


def pool(key: str) -> InventoryPool:
    return InventoryPool.objects.get(key=key)


def test_poll_records_what_the_venues_hold_pinned_to_one_block(sim_venue, venues, sim_assets):
    take_into_vault(sim_venue, symbol="AAPL", units=7 * UNIT)
    take_into_vault(sim_venue, symbol=None, units=1234_560000)
    sim_venue.server.set_position("MSFT", Decimal("12.5"))

    result = venue_balances_poll(venues=venues)

    assert result.failures == {}
    block = result.readings.onchain.block_number
    for symbol in ("AAPL", "MSFT"):
        assert pool(symbol).onchain_available == vault_amount(sim_venue, symbol)
        assert pool(symbol).offchain_available == sim_venue.server.position(symbol)
        assert pool(symbol).onchain_block == block
    assert pool("AAPL").onchain_available >= Decimal(7)
    assert pool(USDC_POOL).onchain_available == vault_amount(sim_venue, None)
    # Spec 15.5: USD cash plus the `USDCUSD` position (USDC at Alpaca is not cash).
    assert sim_venue.server.usdc_position() > 0
    assert pool(USDC_POOL).offchain_available == (
        sim_venue.server.cash() + sim_venue.server.usdc_position()
    )
    cash_event = (
        Event.objects.filter(event_type=ev.OffchainCash.event_type_name())
        .latest("id")
        .domain_event()
    )
    assert cash_event.cash_balance == sim_venue.server.cash()
    assert cash_event.usdc_balance == sim_venue.server.usdc_position()
    assert cash_event.cash_withdrawable == sim_venue.server.cash()
    onchain_event = (
        Event.objects.filter(event_type=ev.OnchainEquity.event_type_name())
        .latest("id")
        .domain_event()
    )
    assert onchain_event.block_number == block
    assert set(onchain_event.balances) == {"AAPL", "MSFT"}
    assert {h.name for h in Heartbeat.objects.all()} == {"venue:base", "venue:alpaca"}


def test_no_usdcusd_row_is_zero_usdc_and_finer_than_usdc_units_is_floored(
    sim_venue, venues, sim_assets
):
    sim_venue.server.set_usdc_position(Decimal(0))  # the simulator then serves no row
    assert venue_balances_poll(venues=venues).readings.offchain.usdc == 0
    sim_venue.server.set_usdc_position(Decimal("12.3456789"))
    reading = venue_balances_poll(venues=venues).readings.offchain
    assert reading.usdc == Decimal("12.345678")
    assert pool(USDC_POOL).offchain_available == sim_venue.server.cash() + Decimal("12.345678")


def test_alpaca_down_records_the_vaults_and_warns_naming_alpaca(
    sim_venue, worker_env, sim_assets, caplog
):
    broken = Venues.from_config(
        config_from_env({**worker_env, "ALPACA_BASE_URL": "http://127.0.0.1:9"})
    )
    with caplog.at_level(logging.WARNING, logger="service.poller"):
        result = venue_balances_poll(venues=broken)
    assert set(result.failures) == {"alpaca"}
    assert "venue poll: alpaca (Alpaca positions and cash) failed" in caplog.text
    kinds = set(
        Event.objects.filter(aggregate_type=ev.SNAPSHOT).values_list("event_type", flat=True)
    )
    assert kinds == {ev.OnchainEquity.event_type_name(), ev.OnchainCash.event_type_name()}
    assert pool("AAPL").onchain_observed and not pool("AAPL").offchain_observed
    assert not Heartbeat.objects.filter(name="venue:alpaca").exists()


def test_base_down_records_alpaca_and_warns_naming_base_without_the_url(
    sim_venue, worker_env, sim_assets, caplog
):
    secret_url = "http://127.0.0.1:9/secret-api-key-123"
    broken = Venues.from_config(config_from_env({**worker_env, "BASE_RPC_URL": secret_url}))
    with caplog.at_level(logging.WARNING, logger="service.poller"):
        result = venue_balances_poll(venues=broken)
    assert set(result.failures) == {"base"}
    assert "venue poll: base (Base order book vaults) failed" in caplog.text
    assert "secret-api-key-123" not in caplog.text
    kinds = set(
        Event.objects.filter(aggregate_type=ev.SNAPSHOT).values_list("event_type", flat=True)
    )
    assert kinds == {ev.OffchainEquity.event_type_name(), ev.OffchainCash.event_type_name()}
    assert pool("AAPL").offchain_available == sim_venue.server.position("AAPL")
    assert not pool("AAPL").onchain_observed


def test_fill_inside_a_poll_is_not_counted_again_when_reported(sim_venue, venues, sim_assets):
    receipt = take_into_vault(sim_venue, symbol="AAPL", units=3 * UNIT)
    fill_block = int(receipt.block_number)
    result = venue_balances_poll(venues=venues)
    assert result.readings.onchain.block_number >= fill_block
    observed = vault_amount(sim_venue, "AAPL")
    usdc = pool(USDC_POOL).onchain_available
    assert pool("AAPL").onchain_available == observed
    # The fill's report arrives after the poll that already contains it.
    fill_record_onchain(
        symbol="AAPL",
        tx_hash=receipt.tx_hash,
        log_index=0,
        amount=Decimal(3),
        direction="Buy",
        price_usdc=Decimal(150),
        block_timestamp=datetime.now(UTC),
        block_number=fill_block,
    )
    assert pool("AAPL").onchain_available == observed
    assert pool(USDC_POOL).onchain_available == usdc


def test_market_clock_from_the_venue_pauses_equity_and_says_so(sim_venue, venues, caplog):
    from service.market import equity_market_open, market_clock_refresh

    sim_venue.server.set_knobs(market_open=False)
    try:
        with caplog.at_level(logging.INFO, logger="service.market"):
            clock = market_clock_refresh(venues=venues, force=True)
        assert clock is not None and clock.is_open is False
        assert equity_market_open() is False
        assert "market closed" in caplog.text and "USDC rebalancing continues" in caplog.text
        # The same session read again is not recorded again (Alpaca's times are fixed until
        # the bell).
        assert market_clock_refresh(venues=venues, force=True) == clock
        assert [e.is_open for e in clock_events()] == [False]
        # Cached: no new read within MARKET_CLOCK_CACHE_S, even if the venue changes its mind.
        sim_venue.server.set_knobs(market_open=True)
        assert market_clock_refresh(venues=venues) == clock
        assert equity_market_open() is False
        market_clock_refresh(venues=venues, force=True)
        assert equity_market_open() is True
        # A new session is recorded, once.
        market_clock_refresh(venues=venues, force=True)
        read = clock_events()
        assert [e.is_open for e in read] == [False, True]
        stored = MarketClock.objects.get()
        assert (read[1].next_open, read[1].next_close) == (stored.next_open, stored.next_close)
    finally:
        sim_venue.server.set_knobs(market_open=True)


def clock_events() -> list:
    rows = Event.objects.filter(aggregate_type=ev.MARKET_CLOCK).order_by("sequence")
    return [row.domain_event() for row in rows]


def test_market_clock_read_failure_keeps_the_stored_clock(sim_venue, venues, worker_env, caplog):
    from service.market import market_clock_refresh

    stored = market_clock_refresh(venues=venues, force=True)
    broken = Venues.from_config(
        config_from_env({**worker_env, "ALPACA_BASE_URL": "http://127.0.0.1:9"})
    )
    with caplog.at_level(logging.WARNING, logger="service.market"):
        assert market_clock_refresh(venues=broken, force=True) == stored
    assert "market clock: alpaca clock read failed" in caplog.text


def test_managed_vaults_are_read_under_the_inventory_and_the_operator_role_is_checked(
    sim_venue, worker_env, sim_assets
):
    """Issue 20 (spec 15.6): with RAINDEX_INVENTORY set, the vaults are the inventory's (read
    on the order book under its address) and our wallet writes through it; the start-up
    check refuses a wallet without its OPERATOR_ROLE with a clear message."""
    chains = sim_venue.chains
    wallet = sim_venue.market_maker.address
    inventory = chains.deploy_inventory(operators=(wallet,))
    managed = Venues.from_config(config_from_env({**worker_env, "RAINDEX_INVENTORY": inventory}))
    assert (managed.vault_writer, managed.vault_owner) == (inventory, inventory)
    base = managed.base
    chains.mint_usdc(chains.base, wallet, 77_000_000)
    base.send(
        base.build_erc20_approve(token=chains.base.usdc, spender=inventory, amount_units=77_000_000)
    )
    base.send(
        base.build_vault_deposit(
            vault=inventory,
            token=chains.base.usdc,
            vault_id=vault_id(sim_venue.usdc_vault_id),
            amount_units=77_000_000,
        )
    )

    venue_balances_poll(venues=managed)

    assert pool(USDC_POOL).onchain_available == Decimal(77)
    assert inventory_role_problems(managed) == []
    other = chains.deploy_inventory()  # our wallet holds no role there
    refused = Venues.from_config(config_from_env({**worker_env, "RAINDEX_INVENTORY": other}))
    (problem,) = inventory_role_problems(refused)
    assert f"RAINDEX_INVENTORY {other}" in problem
    assert "does not hold its OPERATOR_ROLE" in problem and wallet in problem

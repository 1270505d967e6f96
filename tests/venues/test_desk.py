"""The simulated desk's hedger against the simulated Alpaca and the service's real HTTP API:
a hedge is reported failed only when Alpaca refused the order or ended it unfilled, never
because an answer was slow (a market order whose POST timed out, or that waits for the open,
still fills; reporting it failed leaves Alpaca's cash and the books apart)."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from decimal import Decimal

import pytest

from inventory.domain import events as ev
from inventory.models import Event
from inventory.services import api_token_create
from venues.sim.chain import SimChains
from venues.sim.desk import Desk, Market, ServiceClient
from venues.sim.server import KEY_ORDER_POST
from venues.sim.venue import SimKnobs, SimVenue

pytestmark = [pytest.mark.chain, pytest.mark.xdist_group("chain")]


@pytest.fixture
def venue(sim_chains: SimChains) -> Iterator[SimVenue]:
    started = SimVenue(
        knobs=SimKnobs(order_fill_delay_s=0.05),
        chains=sim_chains,
        equity_symbols=("AAPL",),
        positions={"AAPL": Decimal(100)},
        cash_usd=Decimal(10_000),
    ).start()
    yield started
    errors = started.server.errors()
    started.stop()
    assert errors == []


@pytest.fixture
def service(live_server) -> ServiceClient:
    _, secret = api_token_create(name="desk", scopes=["ingest"])
    return ServiceClient(live_server.url, secret)


@pytest.fixture
def desk(venue: SimVenue, service: ServiceClient) -> Desk:
    rng = random.Random(7)
    # A taker's trade starts the position (hedges of an unknown position are refused).
    service.post(
        "/fills/onchain",
        {
            "tx_hash": "0x" + "ab" * 32,
            "log_index": 0,
            "block_number": 100,
            "symbol": "AAPL",
            "direction": "buy",
            "quantity": "1",
            "price_usdc": "190",
            "block_timestamp": "2026-03-02T15:00:00+00:00",
        },
    )
    return Desk(
        venue=venue,
        market=Market(venue, ("AAPL",), rng),
        service=service,
        rng=rng,
        drift={"AAPL": 0.0},
    )


def service_net(desk: Desk, service: ServiceClient, net: Decimal) -> None:
    """Give the desk and the service the same net position: the service refuses a hedge that
    does not reduce the net position it knows (the fixture's taker trade left it at 1)."""
    change = net - 1
    service.post(
        "/fills/onchain",
        {
            "tx_hash": "0x" + "cd" * 32,
            "log_index": 0,
            "block_number": 101,
            "symbol": "AAPL",
            "direction": "buy" if change > 0 else "sell",
            "quantity": str(abs(change)),
            "price_usdc": "190",
            "block_timestamp": "2026-03-02T15:00:01+00:00",
        },
    )
    desk.net["AAPL"] = net


def hedge_events() -> list[object]:
    kinds = (ev.OffChainOrderPlaced, ev.OffChainOrderFilled, ev.OffChainOrderFailed)
    stored = [row.domain_event() for row in Event.objects.order_by("id")]
    return [type(event).__name__ for event in stored if isinstance(event, kinds)]


def test_a_hedge_whose_post_timed_out_and_whose_retry_is_a_duplicate_is_found_filled(
    desk, venue, service
):
    """The first POST times out before Alpaca acts on it, the lookup finds nothing, the
    retry is held while the first one lands: Alpaca refuses the retry as a duplicate
    client_order_id, and the desk looks the order up instead of reporting a failure."""
    service_net(desk, service, Decimal("3.4"))
    first = venue.server.hold_next(KEY_ORDER_POST)
    retry = venue.server.hold_next(KEY_ORDER_POST)
    hedging = threading.Thread(target=desk.hedge_once, args=("AAPL",))
    hedging.start()
    assert retry.arrived.wait(60)
    first.release()
    wait_until(lambda: len(venue.server.orders()) == 1)
    retry.release()
    hedging.join(60)

    orders = venue.server.orders()
    assert [(o["client_order_id"], o["status"]) for o in orders] == [("sim-desk-1", "filled")]
    assert venue.server.request_count(KEY_ORDER_POST) == 2
    assert venue.server.position("AAPL") == Decimal(97)
    assert (desk.stats.hedges_filled, desk.stats.hedges_failed, desk.open_hedges) == (1, 0, 0)
    assert desk.net["AAPL"] == Decimal("0.4")
    assert hedge_events() == ["OffChainOrderPlaced", "OffChainOrderFilled"]


def wait_until(condition, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.01)


def test_an_order_waiting_for_the_open_stays_open_until_it_fills(desk, venue, service):
    venue.server.set_knobs(market_open=False)
    service_net(desk, service, Decimal(-2))
    cash = venue.server.cash()

    desk.hedge_once("AAPL", wait_s=0.5)
    waiting = (desk.open_hedges, desk.stats.hedges_failed, hedge_events())
    desk.hedge_once("AAPL", wait_s=0.2)  # asks again; places nothing new
    venue.server.set_knobs(market_open=True)
    desk.settle_hedges(timeout_s=30)

    assert waiting == (1, 0, ["OffChainOrderPlaced"])
    (order,) = venue.server.orders()
    assert order["status"] == "filled"
    price = Decimal(order["filled_avg_price"])
    assert venue.server.cash() == cash - 2 * price
    assert (desk.stats.hedges_placed, desk.stats.hedges_filled) == (1, 1)
    assert (desk.stats.hedges_unresolved, desk.net["AAPL"]) == (0, 0)
    assert hedge_events() == ["OffChainOrderPlaced", "OffChainOrderFilled"]


def test_an_order_alpaca_refuses_is_reported_failed(desk, venue, service):
    service_net(desk, service, Decimal(-1000))  # buying 1000 shares costs more than the cash

    desk.hedge_once("AAPL")

    assert venue.server.orders() == []
    assert (desk.stats.hedges_failed, desk.open_hedges) == (1, 0)
    assert hedge_events() == ["OffChainOrderPlaced", "OffChainOrderFailed"]

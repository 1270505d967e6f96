"""Waiting does not hold a worker: twenty operations waiting on Alpaca at once are carried by a
two-worker cluster, and all complete (real `qcluster` processes, simulated venue)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal

import pytest

from inventory.services import asset_register
from operations.models import ACTIVE_STATUSES, Operation, OperationKind, OperationStatus
from operations.services import operation_create
from tests.operations.conftest import FAST_KNOBS
from venues.sim.server import KEY_MINT
from venues.sim.venue import SimVenue

pytestmark = [pytest.mark.slow, pytest.mark.chain]

SYMBOLS = tuple(f"S{index:02d}" for index in range(20))
# Alpaca holds every mint until the test has seen them all waiting (then `settle_now`): a
# fixed delay is a race, as the first mints would complete before a slow machine has posted
# the last ones.
MINT_DELAY_S = 3600.0


@pytest.fixture(scope="module")
def sim_venue() -> Iterator[SimVenue]:
    venue = SimVenue(
        knobs=FAST_KNOBS,
        equity_symbols=SYMBOLS,
        positions={symbol: Decimal(1000) for symbol in SYMBOLS},
        cash_usd=Decimal(0),
    )
    with venue:
        venue.server.set_knobs(mint_delay_s=MINT_DELAY_S)
        yield venue
        assert venue.server.errors() == []


def test_twenty_waiting_mints_need_no_more_than_the_two_configured_workers(sim_venue, workers):
    for asset in sim_venue.assets():
        asset_register(changed_by="test", **asset)
    operations = [
        operation_create(kind=OperationKind.MINT, pool=symbol, amount=Decimal("3"))
        for symbol in SYMBOLS
    ]
    ids = [operation.pk for operation in operations if operation is not None]
    assert len(ids) == len(SYMBOLS)

    cluster = workers({"Q_WORKERS": "2"})
    most_waiting = 0
    # Generous deadlines for a loaded machine: each loop ends as soon as its condition holds.
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and most_waiting < len(ids) - 2:
        statuses = list(Operation.objects.filter(pk__in=ids).values_list("status", flat=True))
        most_waiting = max(most_waiting, statuses.count(OperationStatus.WAITING))
        time.sleep(0.1)
    sim_venue.server.set_knobs(mint_delay_s=FAST_KNOBS.mint_delay_s)
    sim_venue.server.settle_now()  # Alpaca completes every mint it holds
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        statuses = list(Operation.objects.filter(pk__in=ids).values_list("status", flat=True))
        if not any(status in ACTIVE_STATUSES for status in statuses):
            break
        time.sleep(0.1)

    finished = list(Operation.objects.filter(pk__in=ids))
    assert [op.status for op in finished] == [OperationStatus.COMPLETED] * len(ids), cluster.logs()
    # All twenty were parked at Alpaca at the same time, with only two worker processes:
    # serialised behind two blocked workers, no more than two could ever be waiting at once.
    # (No wall-clock bound: how long the overlapping delays take is a figure for bench/.)
    assert most_waiting >= len(ids) - 2, f"at most {most_waiting} waiting at once"
    assert sim_venue.server.request_count(KEY_MINT) == len(ids)

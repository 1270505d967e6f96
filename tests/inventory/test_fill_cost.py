"""A fill costs the same on day 1,000 as on day 1: queries and rows read do not grow.

The hot path (fill -> event -> projection -> trigger -> operation check) is measured with
rebalancing enabled and the asset registered, so the trigger does its whole check. Rows read
are counted by running each captured read of the event log again as `SELECT count(*)`.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from inventory.models import Event
from inventory.services import OnchainFill, fill_record_onchain, fills_record_batch
from tests.service.flows import T0, enable, observe, register

D = Decimal
HISTORY = 400
# The whole hot path of one fill, savepoint included: key lookup, cached state (with the
# log's latest sequence: no tail read when the state is current), pool lock, the USDC pool's
# pending fill deltas (`inventory.usdc_deltas`), event and key inserts, state update, the
# symbol's pool update, the fill's USDC delta, the trigger's configuration stamp.
MAX_QUERIES_PER_FILL = 12


def tx(n: int) -> str:
    return "0x" + f"{n:064x}"


def one_fill(n: int) -> None:
    fill_record_onchain(
        symbol="AAPL",
        tx_hash=tx(n),
        log_index=0,
        amount=D("0.001"),
        direction="Buy",
        price_usdc=D("1"),
        block_timestamp=T0,
    )


def event_rows_read(queries: CaptureQueriesContext, *, cached_state: bool = True) -> int:
    """Rows of the event log the captured reads return, counted again; `cached_state=False`
    leaves out the cached-state read (one row by a unique index: on PostgreSQL a single fill
    reads it in the same round trip as its key lookup, duplicate or not)."""
    total = 0
    with connection.cursor() as cursor:
        for query in queries.captured_queries:
            # On PostgreSQL one round trip may carry several statements (`inventory.rawsql`).
            for sql in query["sql"].split(";\n"):
                if not cached_state and sql.startswith('SELECT s."sequence"'):
                    continue
                if sql.startswith("SELECT") and 'FROM "inventory_event"' in sql:
                    cursor.execute(f"SELECT count(*) FROM ({sql}) AS q")
                    total += cursor.fetchone()[0]
    return total


def history(size: int, start: int) -> None:
    fills = [
        OnchainFill("AAPL", tx(n), 0, D("0.001"), "Sell" if n % 2 else "Buy", D(1), T0)
        for n in range(start, start + size)
    ]
    for begin in range(0, size, 200):
        fills_record_batch(fills=fills[begin : begin + 200])


@pytest.mark.django_db
def test_one_fill_costs_the_same_queries_and_log_reads_after_a_long_history(
    settings, django_assert_max_num_queries
):
    enable(settings)
    register("AAPL")
    observe("AAPL", onchain="1000", offchain="1000", usdc_onchain="100000", usdc_offchain="100000")
    one_fill(1)  # the Position exists from here on
    with CaptureQueriesContext(connection) as early:
        one_fill(2)
    early_rows = event_rows_read(early)
    assert len(early) <= MAX_QUERIES_PER_FILL, [q["sql"][:80] for q in early]

    history(HISTORY, start=10)
    assert Event.objects.filter(aggregate_id="AAPL").count() > HISTORY

    with django_assert_max_num_queries(len(early)):
        one_fill(3)
    with CaptureQueriesContext(connection) as late:
        one_fill(4)
    assert len(late) == len(early)
    assert event_rows_read(late) == early_rows <= 1


@pytest.mark.django_db
def test_a_duplicate_fill_costs_one_key_lookup_whatever_the_history(settings):
    enable(settings)
    register("AAPL")
    observe("AAPL", onchain="1000", offchain="1000", usdc_onchain="100000", usdc_offchain="100000")
    history(HISTORY, start=10)
    with CaptureQueriesContext(connection) as queries:
        one_fill(10)  # already recorded by the history, same content
    # The recorded event, read back to compare.
    assert event_rows_read(queries, cached_state=False) <= 1
    key_lookups = [q["sql"] for q in queries if 'FROM "inventory_eventkey"' in q["sql"]]
    assert len(key_lookups) == 1


@pytest.mark.django_db
def test_a_replayed_hedge_is_found_by_its_key_never_by_scanning_payloads():
    from inventory.services import hedge_place

    observe("AAPL", onchain="1000", offchain="1000", usdc_onchain="100000", usdc_offchain="100000")
    history(40, start=10)  # net +/- within a share; one more buy crosses the threshold
    fill_record_onchain(
        symbol="AAPL",
        tx_hash=tx(1),
        log_index=0,
        amount=D(5),
        direction="Buy",
        price_usdc=D(1),
        block_timestamp=T0,
    )
    hedge_place(symbol="AAPL", execution_id=9, direction="Sell", shares=D(5))
    with CaptureQueriesContext(connection) as queries:
        assert hedge_place(symbol="AAPL", execution_id=9, direction="Sell", shares=D(5)) == []
    reads = " ".join(q["sql"] for q in queries if q["sql"].startswith("SELECT"))
    assert "JSON_EXTRACT" not in reads.upper() and '"payload" ->' not in reads
    assert 'FROM "inventory_eventkey"' in reads

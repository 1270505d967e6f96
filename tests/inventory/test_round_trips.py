"""A single fill on PostgreSQL costs four round trips: BEGIN, its reads, its writes, COMMIT.

Its USDC side is a pending delta (`inventory.usdc_deltas`): the USDC gate and the pending
deltas ride in the reads' round trip, the delta's insert in the writes', so there is no fifth.

Counted as Django captures them (`CaptureQueriesContext` logs BEGIN and COMMIT too); one
round trip may carry several statements (`inventory.rawsql.prefetch` / `defer`), sent to the
server in one message. Outside any test transaction, as the API records a fill.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from inventory.models import Event, EventKey, OnchainFillLeg, UsdcFillDelta
from inventory.selectors import pools_list
from inventory.services import fill_record_onchain
from tests.inventory.projection_helpers import pool_read, usdc_folded
from tests.service.flows import T0, enable, observe, register

D = Decimal

pytestmark = pytest.mark.django_db(transaction=True)


def fill(n: int, *, block: int | None = None, amount: str = "0.5") -> list:
    return fill_record_onchain(
        symbol="AAPL",
        tx_hash="0x" + f"{n:064x}",
        log_index=0,
        amount=D(amount),
        direction="Buy",
        price_usdc=D("2"),
        block_timestamp=T0,
        block_number=block,
    )


def statements(sql: str) -> list[str]:
    return sql.split(";\n")


def test_a_single_fill_is_four_round_trips_on_postgresql(settings):
    if connection.vendor != "postgresql":
        pytest.skip("SQLite is embedded: a statement is not a round trip")
    enable(settings)
    register("AAPL")
    observe("AAPL", onchain="1000", offchain="1000", usdc_onchain="100000", usdc_offchain="100000")
    fill(1)  # the Position exists from here on (its first fill also initializes it)
    with CaptureQueriesContext(connection) as captured:
        [stored] = fill(2, block=None)
    trips = [q["sql"] for q in captured.captured_queries]
    assert len(trips) == 4, trips
    begin, reads, writes, commit = trips
    assert (begin, commit) == ("BEGIN", "COMMIT")
    reads_ = statements(reads)
    # The append turn first (before any row lock), then the key lookup, the cached state,
    # the USDC gate (shared, before any row lock), the symbol's pool row locked, the USDC
    # row and its pending fill deltas read without a lock (`inventory.usdc_deltas`), the
    # chain head and the configuration stamp.
    assert reads_[0].startswith("SELECT pg_advisory_xact_lock_shared(")
    assert 'FROM "inventory_eventkey"' in reads_[1]
    assert 'FROM "inventory_aggregatestate"' in reads_[2]
    assert reads_[3].startswith("SELECT pg_advisory_xact_lock_shared(")
    assert reads_[3] != reads_[0]  # the USDC gate, not the append turn
    assert reads_[4].endswith("FOR UPDATE") and "('AAPL')" in reads_[4]
    assert "FOR UPDATE" not in reads_[5] and "('USDC')" in reads_[5]
    assert 'FROM "inventory_usdcfilldelta"' in reads_[6]
    assert 'FROM "inventory_chainhead"' in reads_[7]
    assert 'FROM "inventory_configstamp"' in reads_[8]
    writes_ = statements(writes)
    assert writes_[0].startswith('INSERT INTO "inventory_event"')
    # The event, its key, the position's state, the fill's USDC delta, the symbol's pool:
    # the USDC row itself is not written (so not locked) by a fill.
    assert [w.split()[0] for w in writes_] == ["INSERT", "INSERT", "INSERT", "INSERT", "UPDATE"]
    assert writes_[3].startswith('INSERT INTO "inventory_usdcfilldelta"')
    assert writes_[4].startswith('UPDATE "inventory_inventorypool"')
    # What the round trips wrote: the event with its id, its key, both pools.
    row = Event.objects.get(id=stored.id)
    assert (row.aggregate_id, row.sequence) == ("AAPL", stored.sequence)
    assert EventKey.objects.get(event_id=stored.id).key.startswith("0x" + f"{2:064x}")
    pools = {p.key: p for p in pools_list()}
    assert pools["AAPL"].onchain_available == D("1001.0")
    assert pools["USDC"].onchain_available == D("99998.0")
    assert pools["AAPL"].last_event_id == pools["USDC"].last_event_id == stored.id
    assert UsdcFillDelta.objects.filter(event_id=stored.id).exists()


def test_a_fill_with_a_block_writes_its_legs_with_its_event_id_in_the_same_round_trip(settings):
    if connection.vendor != "postgresql":
        pytest.skip("SQLite is embedded: a statement is not a round trip")
    enable(settings)
    register("AAPL")
    observe("AAPL", onchain="1000", offchain="1000", usdc_onchain="100000", usdc_offchain="100000")
    fill(1)
    with CaptureQueriesContext(connection) as captured:
        [stored] = fill(2, block=10)
    assert len(captured.captured_queries) == 4
    legs = set(OnchainFillLeg.objects.values_list("pool_key", "event_id", "block_number", "delta"))
    assert legs == {("AAPL", stored.id, 10, D("0.5"))}
    # USDC's leg is its pending delta, a leg row once folded (`inventory.usdc_deltas`).
    delta = UsdcFillDelta.objects.get(event_id=stored.id)
    assert (delta.event_id, delta.block_number, delta.delta) == (stored.id, 10, D("-1.0"))
    usdc_folded()
    legs = set(OnchainFillLeg.objects.values_list("pool_key", "event_id", "block_number", "delta"))
    assert legs == {("AAPL", stored.id, 10, D("0.5")), ("USDC", stored.id, 10, D("-1.0"))}


def test_a_duplicate_single_fill_writes_nothing_and_a_conflict_is_refused(settings):
    enable(settings)
    register("AAPL")
    observe("AAPL", onchain="1000", offchain="1000", usdc_onchain="100000", usdc_offchain="100000")
    [first] = fill(1)
    events = Event.objects.count()
    assert fill(1) == []
    from inventory.services import FillConflict

    with pytest.raises(FillConflict):
        fill(1, amount="0.7")
    assert Event.objects.count() == events
    assert pool_read("USDC").onchain_available == D("99999.0")
    assert not getattr(connection, "_rawsql_deferred", None)
    assert first.id == Event.objects.order_by("-id").values_list("id", flat=True).first()


def test_a_deferred_write_that_breaks_a_unique_key_fails_as_itself_and_is_retried(settings):
    """The writes of a pipelined fill fail with the database's own error, constraint named,
    so a writer that lost a race is decided again (`inventory.store._retryable`)."""
    from django.db import IntegrityError, transaction

    from inventory import rawsql
    from inventory.db_errors import unique_violated
    from inventory.store import APPEND_RACE_CONSTRAINTS

    observe("AAPL", onchain="1000", offchain="1000", usdc_onchain="100000", usdc_offchain="100000")
    [stored] = fill(1)
    key = EventKey.objects.get(event_id=stored.id)
    columns = ("scope", "day", "key", "event_id", "aggregate_type", "aggregate_id", "recorded_at")
    row = [getattr(key, c) for c in columns]
    with pytest.raises(IntegrityError) as raised, transaction.atomic():
        rawsql.insert_rows(EventKey, columns, [row], deferred=True)
        rawsql.flush()
    assert unique_violated(raised.value) in APPEND_RACE_CONSTRAINTS
    rawsql.pipeline_reset()
    assert EventKey.objects.count() == 1

"""Trade keys are filed under the UTC day of their block (issue "Scale"), but a key's
identity is (scope, key) alone (issue 19): the same trade id is the same fill whatever block
timestamp it is reported with and whenever it arrives; the database refuses two records of
one key, whatever their days.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.test.utils import CaptureQueriesContext

from inventory.event_keys import TRADE, trade_day
from inventory.models import Event, EventKey
from inventory.services import (
    FillConflict,
    FillStatus,
    OnchainFill,
    fill_record_onchain,
    fills_record_batch,
    hedge_place,
    snapshot_record,
)
from tests.inventory.test_fill_batch import _kwargs, tx
from tests.inventory.test_fill_batch import fill as batch_fill

D = Decimal
# 23:30 UTC: half an hour before midnight, so a block an hour later is on the next day.
LATE = datetime(2026, 3, 2, 23, 30, tzinfo=UTC)
NOW = LATE + timedelta(days=4)


def fill(n: int, block_timestamp: datetime, **overrides) -> OnchainFill:
    return batch_fill(n, block_timestamp=block_timestamp, **overrides)


def record(f: OnchainFill) -> list:
    return fill_record_onchain(**_kwargs(f), now=NOW)


def seed() -> None:
    snapshot_record(
        fetched_at=LATE - timedelta(days=5),
        onchain_equity={"AAPL": D(100)},
        offchain_equity={"AAPL": D(100)},
        onchain_cash=D(100000),
        offchain_cash=D(100000),
        now=LATE - timedelta(days=5),
    )


def fills_recorded() -> int:
    return Event.objects.filter(event_type__endswith="::OnChainOrderFilled").count()


@pytest.mark.django_db
def test_a_fill_is_filed_under_the_utc_day_of_its_block():
    seed()
    record(fill(1, LATE))
    record(fill(2, LATE + timedelta(hours=1)))

    days = dict(EventKey.objects.filter(scope=TRADE).values_list("key", "day"))
    assert days == {f"{tx(1)}:0": 20514, f"{tx(2)}:0": 20515}  # 2026-03-02 and 2026-03-03
    assert trade_day(LATE) == (LATE.date() - date(1970, 1, 1)).days == 20514


@pytest.mark.django_db
def test_a_trade_re_reported_on_the_next_day_is_still_the_same_fill():
    """A reorganisation re-mines a trade a few blocks later, possibly after midnight: the same
    trade id with another block timestamp is a conflict, one by one and in a batch, and the
    same content again is a duplicate, whichever day it is looked up from."""
    seed()
    record(fill(1, LATE))
    later = fill(1, LATE + timedelta(hours=1))  # the next UTC day

    with pytest.raises(FillConflict, match="trade_id"):
        record(later)
    with pytest.raises(FillConflict, match=r"fills\[1\]\.trade_id"):
        fills_record_batch(fills=[fill(2, LATE), later], now=NOW)
    assert record(fill(1, LATE)) == []
    assert fills_recorded() == 1

    # Within one batch too: a trade and its re-mined copy on the next day.
    with pytest.raises(FillConflict, match=r"fills\[1\]\.trade_id"):
        fills_record_batch(fills=[fill(3, LATE), fill(3, LATE + timedelta(hours=2))], now=NOW)
    assert fills_recorded() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("days", [2, 3, -2, -40])
def test_a_trade_id_reported_days_apart_is_still_the_same_fill(days):
    """Issue 19 (this test pinned the opposite before: "two days apart is another fill"): a
    trade's identity does not depend on the timestamp a reporter sends. The same trade id
    with a block timestamp days away is a conflict, one by one and in a batch; nothing is
    recorded twice."""
    seed()
    record(fill(1, LATE))
    replay = fill(1, LATE + timedelta(days=days))

    with pytest.raises(FillConflict, match=r"fills\[0\]\.trade_id"):
        fills_record_batch(fills=[replay], now=NOW)
    with pytest.raises(FillConflict, match="trade_id"):
        record(replay)
    # Within one batch too.
    with pytest.raises(FillConflict, match=r"fills\[1\]\.trade_id"):
        fills_record_batch(fills=[fill(3, LATE), fill(3, LATE + timedelta(days=days))], now=NOW)
    assert fills_recorded() == 1
    assert EventKey.objects.filter(scope=TRADE).count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("other_day", [0, 3])
def test_the_database_refuses_a_second_record_of_one_key_whatever_its_day(other_day):
    seed()
    record(fill(1, LATE))
    row = EventKey.objects.get(scope=TRADE)

    with pytest.raises(IntegrityError), transaction.atomic():
        EventKey.objects.create(
            scope=TRADE,
            day=row.day + other_day,
            key=row.key,
            event_id=row.event_id + 1,
            aggregate_type=row.aggregate_type,
            aggregate_id=row.aggregate_id,
            recorded_at=row.recorded_at,
        )


def _plan(sql: str) -> str:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL enable_seqscan = off")  # tiny table: is the index usable
            cursor.execute(f"EXPLAIN {sql}")
        else:
            cursor.execute(f"EXPLAIN QUERY PLAN {sql}")
        return "\n".join(" ".join(str(c) for c in row) for row in cursor.fetchall())


@pytest.mark.django_db
def test_the_trade_and_execution_key_lookups_search_the_unique_scope_key_index():
    seed()
    record(fill(1, LATE))
    hedge_place(symbol="AAPL", execution_id=7, direction="Sell", shares=D("1.5"), now=NOW)

    with CaptureQueriesContext(connection) as queries:
        assert record(fill(1, LATE)) == []
        assert (
            hedge_place(symbol="AAPL", execution_id=7, direction="Sell", shares=D("1.5"), now=NOW)
            == []
        )

    lookups = [q["sql"] for q in queries if 'FROM "inventory_eventkey"' in q["sql"]]
    assert len(lookups) == 2, lookups
    # A table of a few rows is cheaper to read through any index (PostgreSQL then picks the
    # (scope, recorded_at) one); give the planner the shape of a real one: many keys, days.
    row = EventKey.objects.get(scope=TRADE)
    EventKey.objects.bulk_create(
        EventKey(
            scope=TRADE,
            day=row.day - n % 30,
            key=f"0x{n:064x}:1",
            event_id=row.event_id,
            aggregate_type=row.aggregate_type,
            aggregate_id=row.aggregate_id,
            recorded_at=row.recorded_at,
        )
        for n in range(3000)
    )
    with connection.cursor() as cursor:
        cursor.execute('ANALYZE "inventory_eventkey"')
    for sql in lookups:
        plan = _plan(sql)
        # SQLite names the index of a unique constraint it creates with the table after the
        # table; the searched columns show it is the (scope, key) one.
        assert re.search(
            r"USING INDEX \S+ \(scope=\? AND key=\?\)"
            r"|Index (Only )?Scan using eventkey_unique_scope_key",
            plan,
        ), plan
        assert "Seq Scan" not in plan and "SCAN inventory_eventkey" not in plan, plan


@pytest.mark.django_db(transaction=True)
def test_the_migration_files_keys_recorded_before_it_under_their_day():
    """Keys recorded before the day existed (migration 0011) are filed under their block's
    day: afterwards a re-delivered fill is still found, on its day and the next."""
    seed()
    record(fill(1, LATE))
    record(fill(2, LATE + timedelta(days=2)))
    hedge_place(symbol="AAPL", execution_id=7, direction="Sell", shares=D("3"), now=NOW)
    executor = MigrationExecutor(connection)
    latest = executor.loader.graph.leaf_nodes("inventory")
    try:
        executor.migrate([("inventory", "0010_config_stamp")])
        with connection.cursor() as cursor:
            columns = [
                c.name
                for c in connection.introspection.get_table_description(
                    cursor, "inventory_eventkey"
                )
            ]
        assert "day" not in columns
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(latest)

    rows = sorted(EventKey.objects.values_list("scope", "day", "key"))
    assert rows == [
        ("execution", 0, "AAPL:7"),
        (TRADE, 20514, f"{tx(1)}:0"),
        (TRADE, 20516, f"{tx(2)}:0"),
    ]
    assert record(fill(1, LATE)) == []
    with pytest.raises(FillConflict):
        record(fill(2, LATE + timedelta(days=2, hours=-23)))


@pytest.mark.django_db
def test_a_batch_spanning_many_days_finds_each_trade_in_one_lookup():
    """A backfill batch (one fill a day for forty days): replayed, every fill is a duplicate
    and one re-mined half a day later a conflict; one lookup of the (scope, key) index for
    the whole batch, whatever days it spans."""
    seed()
    days = [LATE - timedelta(days=40 - n) for n in range(40)]
    first = fills_record_batch(fills=[fill(n, day) for n, day in enumerate(days)], now=NOW)
    assert {r.status for r in first} == {FillStatus.RECORDED}

    with CaptureQueriesContext(connection) as queries:
        again = fills_record_batch(fills=[fill(n, day) for n, day in enumerate(days)], now=NOW)
    assert {r.status for r in again} == {FillStatus.DUPLICATE}
    lookups = [q["sql"] for q in queries if 'FROM "inventory_eventkey"' in q["sql"]]
    assert len(lookups) == 1
    assert '"day"' not in lookups[0]

    with pytest.raises(FillConflict, match=r"fills\[0\]\.trade_id"):
        fills_record_batch(fills=[fill(7, days[7] + timedelta(hours=12))], now=NOW)
    assert fills_recorded() == 40

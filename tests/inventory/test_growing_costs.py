"""Costs that used to grow with time stay flat (issue "Scale"): an append reads only the asset
rows of the pools it touches, and the USDC withdrawal lookup is an index range over one event
type, never a `LIKE` scan of payloads. (The sweep's decoded-payload cache is pinned in
tests/operations/test_sweep.py.)"""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from eth_utils import to_checksum_address

from inventory.domain.values import RebalanceDirection
from inventory.models import Event
from inventory.services import asset_register, fill_record_onchain
from operations.workflows.usdc import _claimed_withdrawals
from tests.inventory.projection_helpers import T0, append, usdc_initiated
from tests.service.flows import enable, observe, register

pytestmark = pytest.mark.django_db


def rows_read(queries: CaptureQueriesContext, table: str) -> int:
    """Rows the captured reads of `table` returned (each read run again as a count)."""
    total = 0
    with connection.cursor() as cursor:
        for query in queries.captured_queries:
            sql = query["sql"]
            if sql.startswith("SELECT") and f'FROM "{table}"' in sql:
                cursor.execute(f"SELECT count(*) FROM ({sql}) AS q")
                total += cursor.fetchone()[0]
    return total


def test_a_fill_reads_only_the_asset_row_of_its_symbol(settings):
    enable(settings)
    register("AAPL")
    for n in range(40):
        asset_register(
            base_symbol=f"S{n:02d}",
            token_address=to_checksum_address("0x" + f"{n + 1:040x}"),
            token_symbol=f"tS{n:02d}",
            vault_id="0x" + "11" * 32,
            changed_by="test",
        )
    observe("AAPL", onchain="1000", offchain="1000", usdc_onchain="100000", usdc_offchain="100000")

    with CaptureQueriesContext(connection) as queries:
        fill_record_onchain(
            symbol="AAPL",
            tx_hash="0x" + "42" * 32,
            log_index=0,
            amount=Decimal("0.5"),
            direction="Buy",
            price_usdc=Decimal(1),
            block_timestamp=T0,
        )

    assert Event.objects.filter(aggregate_id="AAPL").exists()
    assert rows_read(queries, "inventory_asset") <= 1  # AAPL's, of 41 registered


def test_the_usdc_withdrawal_lookup_is_an_index_range_never_a_like_scan():
    old = usdc_initiated(RebalanceDirection.ALPACA_TO_BASE, "10")
    append("u-old", old, now=T0 - timedelta(days=3))
    append("u-other", usdc_initiated(RebalanceDirection.ALPACA_TO_BASE, "20"), now=T0)
    append("u-self", usdc_initiated(RebalanceDirection.ALPACA_TO_BASE, "30"), now=T0)

    with CaptureQueriesContext(connection) as queries:
        claimed = _claimed_withdrawals(exclude_aggregate_id="u-self", since=T0 - timedelta(days=1))

    assert claimed == {"w-1"}  # u-other's; u-old is before the window, u-self excluded
    event_reads = [q["sql"] for q in queries if 'FROM "inventory_event"' in q["sql"]]
    assert len(event_reads) == 1
    assert " LIKE " not in event_reads[0].upper()
    assert rows_read(queries, "inventory_event") == 1
    # Served by an index on the event type (SQLite picks (event_type, recorded_at); PostgreSQL
    # may pick either on a tiny table, as an index scan or a bitmap index scan), never a scan
    # of the table; the range index exists.
    plan = _plan(event_reads[0])
    assert re.search(
        r"USING INDEX event_type|Index Scan using event_type|Bitmap Index Scan on event_type", plan
    ), plan
    assert "Seq Scan" not in plan and "SCAN inventory_event" not in plan, plan
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, "inventory_event")
    assert any(
        c["index"] and c["columns"] == ["event_type", "recorded_at"] for c in constraints.values()
    )


def _plan(sql: str) -> str:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # A small table is cheaper to scan; the question is whether the index serves it.
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute(f"EXPLAIN {sql}")
        else:
            cursor.execute(f"EXPLAIN QUERY PLAN {sql}")
        return "\n".join(" ".join(str(c) for c in row) for row in cursor.fetchall())

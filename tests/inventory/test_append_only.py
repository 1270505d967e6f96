"""Issue 9: the event log is append-only against everything the application can do: REPLACE
INTO (SQLite), INSERT ... ON CONFLICT DO UPDATE and TRUNCATE (PostgreSQL), `manage.py flush`,
and an application role that does not own the tables."""

from __future__ import annotations

import io
import os
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.utils import timezone

from inventory.codec import encode_event
from inventory.domain import events as ev
from inventory.domain.values import Direction
from inventory.models import Event, EventKey, InventoryPool
from inventory.services import fill_record_onchain, snapshot_record

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
sqlite_only = pytest.mark.skipif("connection.vendor != 'sqlite'")
postgres_only = pytest.mark.skipif("connection.vendor != 'postgresql'")


def _row() -> Event:
    event_type, payload = encode_event(ev.MintCompleted(completed_at=NOW))
    return Event.objects.create(
        aggregate_type=ev.MINT,
        aggregate_id="m-1",
        sequence=1,
        event_type=event_type,
        payload=payload,
    )


def _refused(sql: str, params: list | None = None) -> DatabaseError:
    with pytest.raises(DatabaseError) as caught, transaction.atomic(), connection.cursor() as c:
        c.execute(sql, params or [])
    return caught.value


@sqlite_only
@pytest.mark.parametrize("verb", ["REPLACE", "INSERT OR REPLACE"])
def test_sqlite_replace_of_an_event_by_id_is_refused(verb):
    row = _row()
    error = _refused(
        f"{verb} INTO inventory_event (id, aggregate_type, aggregate_id, sequence, event_type,"
        " event_version, payload, metadata, recorded_at)"
        " VALUES (%s, 'TokenizedEquityMint', 'm-1', 1, 'forged', '1.0', '{}', '{}', %s)",
        [row.id, NOW.isoformat()],
    )
    assert "append-only" in str(error)
    row.refresh_from_db()
    assert row.event_type == "TokenizedEquityMintEvent::MintCompleted"
    assert Event.objects.count() == 1


@sqlite_only
def test_sqlite_replace_of_an_event_by_its_sequence_is_refused():
    row = _row()
    error = _refused(
        "REPLACE INTO inventory_event (aggregate_type, aggregate_id, sequence, event_type,"
        " event_version, payload, metadata, recorded_at)"
        " VALUES ('TokenizedEquityMint', 'm-1', 1, 'forged', '1.0', '{}', '{}', %s)",
        [NOW.isoformat()],
    )
    assert "append-only" in str(error)
    assert list(Event.objects.values_list("id", "event_type")) == [(row.id, row.event_type)]


def test_a_duplicate_sequence_is_still_an_integrity_error():
    """The store retries sequence conflicts: they must stay IntegrityErrors naming the table."""
    _row()
    with pytest.raises(IntegrityError) as caught, transaction.atomic():
        _row()
    assert "inventory_event" in str(caught.value) or "unique" in str(caught.value).lower()


@postgres_only
def test_postgres_upsert_of_an_event_is_refused():
    row = _row()
    error = _refused(
        "INSERT INTO inventory_event (id, aggregate_type, aggregate_id, sequence, event_type,"
        " event_version, payload, metadata, recorded_at)"
        " VALUES (%s, 'TokenizedEquityMint', 'm-1', 1, 'forged', '1.0', '{}', '{}', now())"
        " ON CONFLICT (id) DO UPDATE SET event_type = EXCLUDED.event_type",
        [row.id],
    )
    assert "append-only" in str(error)
    row.refresh_from_db()
    assert row.event_type == "TokenizedEquityMintEvent::MintCompleted"


@postgres_only
def test_postgres_truncate_of_the_event_log_is_refused():
    _row()
    error = _refused("TRUNCATE inventory_event CASCADE")
    assert "append-only" in str(error)
    assert Event.objects.count() == 1


def test_flush_refuses_and_says_the_log_is_left_intact():
    _row()
    snapshot_record(fetched_at=timezone.now(), onchain_cash=Decimal(5))
    with pytest.raises(CommandError) as caught:
        call_command("flush", interactive=False, verbosity=0)
    message = str(caught.value)
    assert "append-only event log" in message and "Nothing was changed" in message
    assert Event.objects.count() == 2
    assert InventoryPool.objects.get(key="USDC").onchain_available == Decimal(5)


@postgres_only
def test_an_application_role_that_does_not_own_the_tables_can_append_but_never_rewrite():
    role = f"reb_app_test_{os.getpid()}"
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE ROLE "{role}" NOLOGIN')
    out = io.StringIO()
    call_command("event_log_grants", role=role, stdout=out)
    assert 'GRANT SELECT, INSERT ON "inventory_event"' in out.getvalue()
    call_command("event_log_grants", role=role, apply=True, stdout=io.StringIO())
    with connection.cursor() as cursor:
        cursor.execute(f'SET LOCAL ROLE "{role}"')
        cursor.execute("SELECT current_user")
        assert cursor.fetchone()[0] == role
    # The application works as that role: fills, snapshots, projection, trigger.
    now = timezone.now()
    snapshot_record(fetched_at=now, onchain_cash=Decimal(100), onchain_equity={"AAPL": 1})
    fill_record_onchain(
        symbol="AAPL",
        tx_hash="0x" + "ab" * 32,
        log_index=0,
        amount=Decimal(2),
        direction=Direction.BUY,
        price_usdc=Decimal(10),
        block_timestamp=now - timedelta(seconds=1),
    )
    assert InventoryPool.objects.get(key="AAPL").onchain_available == Decimal(3)
    count = Event.objects.count()
    for sql in (
        "UPDATE inventory_event SET event_type = 'x'",
        "DELETE FROM inventory_event",
        "TRUNCATE inventory_event",
        "DROP TRIGGER inventory_event_append_only ON inventory_event",
        "ALTER TABLE inventory_event DISABLE TRIGGER ALL",
        "DROP TABLE inventory_event CASCADE",
    ):
        error = _refused(sql)
        assert "permission denied" in str(error) or "must be owner" in str(error), sql
    assert Event.objects.count() == count
    with connection.cursor() as cursor:
        cursor.execute("RESET ROLE")


def test_the_grants_command_needs_postgres_or_names_a_valid_role():
    with pytest.raises(CommandError, match="role="):
        call_command("event_log_grants", role="x; DROP TABLE y", stdout=io.StringIO())
    if connection.vendor == "sqlite":
        with pytest.raises(CommandError, match="PostgreSQL"):
            call_command("event_log_grants", role="app", stdout=io.StringIO())


# --- issue 19 item 7: the trade-key table is part of the log's integrity -----------------------


_BLOCK_TS = timezone.now() - timedelta(minutes=1)


def _record_fill(now):
    snapshot_record(fetched_at=now, onchain_cash=Decimal(100), onchain_equity={"AAPL": 1})
    return fill_record_onchain(
        symbol="AAPL",
        tx_hash="0x" + "cd" * 32,
        log_index=3,
        amount=Decimal(2),
        direction=Direction.BUY,
        price_usdc=Decimal(10),
        block_timestamp=_BLOCK_TS,
        now=now,
    )


def _fills() -> int:
    return Event.objects.filter(event_type__endswith="::OnChainOrderFilled").count()


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM inventory_eventkey",
        "UPDATE inventory_eventkey SET key = 'forged'",
        pytest.param("TRUNCATE inventory_eventkey", marks=postgres_only),
    ],
)
def test_the_trade_keys_cannot_be_removed_so_a_replayed_fill_stays_a_duplicate(sql):
    now = timezone.now()
    _record_fill(now)
    error = _refused(sql)
    assert "inventory_eventkey is append-only" in str(error)
    assert EventKey.objects.filter(scope="trade").count() == 1
    assert _record_fill(now + timedelta(seconds=1)) == []  # the replay: a duplicate
    assert _fills() == 1


@sqlite_only
def test_sqlite_replace_of_a_trade_key_is_refused():
    now = timezone.now()
    _record_fill(now)
    row = EventKey.objects.get(scope="trade")
    error = _refused(
        "REPLACE INTO inventory_eventkey (scope, day, key, event_id, aggregate_type, "
        "aggregate_id, recorded_at) VALUES ('trade', 0, %s, 999, 'x', 'y', %s)",
        [row.key, now.isoformat()],
    )
    assert "append-only" in str(error)
    assert EventKey.objects.get(scope="trade").event_id == row.event_id


@postgres_only
def test_the_application_role_gets_no_delete_on_the_trade_keys():
    role = f"reb_app_keys_{os.getpid()}"
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE ROLE "{role}" NOLOGIN')
    out = io.StringIO()
    call_command("event_log_grants", role=role, stdout=out)
    assert 'GRANT SELECT, INSERT ON "inventory_eventkey"' in out.getvalue()
    call_command("event_log_grants", role=role, apply=True, stdout=io.StringIO())
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(f'SET LOCAL ROLE "{role}"')
    _record_fill(now)
    for sql in ("DELETE FROM inventory_eventkey", "TRUNCATE inventory_eventkey"):
        error = _refused(sql)
        assert "permission denied" in str(error), sql
    assert _record_fill(now + timedelta(seconds=1)) == []
    assert _fills() == 1
    with connection.cursor() as cursor:
        cursor.execute("RESET ROLE")

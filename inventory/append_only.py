"""Database triggers that make the event table and its key table (`EventKey`: the trade and
execution ids recorded with the events, whose loss lets a trade be recorded twice)
append-only.

Refused: UPDATE and DELETE (row triggers), an insert that would replace an event (SQLite's
`REPLACE INTO` / `INSERT OR REPLACE` deletes the old row without firing delete triggers, so a
BEFORE INSERT trigger refuses any insert whose id or (type, id, sequence) already exists, with
the same "UNIQUE constraint failed" text SQLite gives a plain duplicate), and TRUNCATE
(PostgreSQL statement trigger). `manage.py flush` refuses while the triggers are installed
(inventory/management/commands/flush.py). Only test teardown uninstalls them.

Where the application's database role is not the table owner it cannot drop these triggers at
all; `manage.py event_log_grants` prints or applies the grants for such a role.
"""

from __future__ import annotations

from typing import Any

TABLE = "inventory_event"
# The trade and execution keys recorded with the events (`EventKey`): part of the log's
# integrity (a key removed lets its trade be recorded again), protected the same way.
KEY_TABLE = "inventory_eventkey"
TABLES = (TABLE, KEY_TABLE)
MESSAGE = "inventory_event is append-only: UPDATE, DELETE and TRUNCATE are refused"


def _message(table: str) -> str:
    return f"{table} is append-only: UPDATE, DELETE and TRUNCATE are refused"


# The columns of each table's unique key other than the id (an insert on either replaces a
# row under SQLite's REPLACE).
_UNIQUE = {
    TABLE: ("aggregate_type", "aggregate_id", "sequence"),
    KEY_TABLE: ("scope", "key"),
}


def _replace_guard(table: str) -> str:
    """SQLite BEFORE INSERT trigger refusing an insert that would replace a row (same id or
    same unique key), with the text SQLite gives a plain duplicate."""
    columns = _UNIQUE[table]
    row = "a key" if table == KEY_TABLE else "an event"
    why = f"({table} is append-only: an insert never replaces {row})"
    by_id = f"UNIQUE constraint failed: {table}.id {why}"
    by_key = "UNIQUE constraint failed: " + ", ".join(f"{table}.{c}" for c in columns) + f" {why}"
    same = " AND ".join(f"{c} = NEW.{c}" for c in columns)
    return f"""CREATE TRIGGER IF NOT EXISTS {table}_no_replace BEFORE INSERT ON {table}
        BEGIN
            SELECT RAISE(ABORT, '{by_id}')
            WHERE NEW.id IS NOT NULL AND EXISTS (SELECT 1 FROM {table} WHERE id = NEW.id);
            SELECT RAISE(ABORT, '{by_key}')
            WHERE EXISTS (SELECT 1 FROM {table} WHERE {same});
        END"""


def _sqlite_install(table: str) -> list[str]:
    message = _message(table)
    return [
        f"""CREATE TRIGGER IF NOT EXISTS {table}_no_update BEFORE UPDATE ON {table}
        BEGIN SELECT RAISE(ABORT, '{message}'); END""",
        f"""CREATE TRIGGER IF NOT EXISTS {table}_no_delete BEFORE DELETE ON {table}
        BEGIN SELECT RAISE(ABORT, '{message}'); END""",
        _replace_guard(table),
    ]


def _sqlite_uninstall(table: str) -> list[str]:
    return [
        f"DROP TRIGGER IF EXISTS {table}_no_update",
        f"DROP TRIGGER IF EXISTS {table}_no_delete",
        f"DROP TRIGGER IF EXISTS {table}_no_replace",
    ]


def _pg_install(table: str) -> list[str]:
    return [
        f"""CREATE OR REPLACE FUNCTION {table}_append_only() RETURNS trigger AS $$
        BEGIN RAISE EXCEPTION '{_message(table)}'; END; $$ LANGUAGE plpgsql""",
        f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}",
        f"""CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}
        FOR EACH ROW EXECUTE FUNCTION {table}_append_only()""",
        f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}",
        f"""CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
        FOR EACH STATEMENT EXECUTE FUNCTION {table}_append_only()""",
    ]


def _pg_uninstall(table: str) -> list[str]:
    return [
        f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}",
        f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}",
    ]


# The trigger whose presence means "installed" (every install creates it).
_SENTINEL = {"sqlite": f"{TABLE}_no_delete", "postgresql": f"{TABLE}_append_only"}


def _statements(vendor: str, install: bool, tables: tuple[str, ...] = TABLES) -> list[str]:
    if vendor == "sqlite":
        make = _sqlite_install if install else _sqlite_uninstall
    elif vendor == "postgresql":
        make = _pg_install if install else _pg_uninstall
    else:
        raise NotImplementedError(f"append-only triggers are not written for {vendor}")
    return [sql for table in tables for sql in make(table)]


def install(connection: Any, tables: tuple[str, ...] = TABLES) -> None:
    """Install the triggers on the event log and its key table (or only `tables`)."""
    with connection.cursor() as cursor:
        for sql in _statements(connection.vendor, True, tables):
            cursor.execute(sql)


def uninstall(connection: Any, tables: tuple[str, ...] = TABLES) -> None:
    """Only for test teardown, which must empty the tables between transactional tests (and
    for reversing the migration that protects the key table)."""
    with connection.cursor() as cursor:
        for sql in _statements(connection.vendor, False, tables):
            cursor.execute(sql)


def installed(connection: Any) -> bool:
    """Whether the append-only triggers are on the event table (False if it does not exist)."""
    name = _SENTINEL.get(connection.vendor)
    if name is None:
        return False
    if connection.vendor == "sqlite":
        sql = "SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND name = %s"
    else:
        sql = "SELECT 1 FROM pg_trigger WHERE tgname = %s AND NOT tgisinternal"
    with connection.cursor() as cursor:
        cursor.execute(sql, [name])
        return cursor.fetchone() is not None


def app_role_grants(connection: Any, role: str) -> list[str]:
    """PostgreSQL grants for an application role that does not own the tables.

    The owner (who runs `migrate`) applies them. The role may read and write every table,
    but on the event log and its key table only SELECT and INSERT; no table's TRUNCATE,
    and, not being the owner, it cannot ALTER or DROP a table or drop or disable a trigger.
    """
    if connection.vendor != "postgresql":
        raise NotImplementedError("database roles are a PostgreSQL deployment")
    quote = connection.ops.quote_name
    who = quote(role)
    statements = [f"GRANT USAGE ON SCHEMA {quote(_schema(connection))} TO {who}"]
    for table in sorted(connection.introspection.table_names()):
        statements.append(f"REVOKE ALL ON {quote(table)} FROM {who}")
        privileges = "SELECT, INSERT" if table in TABLES else "SELECT, INSERT, UPDATE, DELETE"
        statements.append(f"GRANT {privileges} ON {quote(table)} TO {who}")
    statements.append(
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {quote(_schema(connection))} TO {who}"
    )
    return statements


def _schema(connection: Any) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_schema()")
        return str(cursor.fetchone()[0])

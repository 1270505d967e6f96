"""Database triggers that make the event table append-only.

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
MESSAGE = "inventory_event is append-only: UPDATE, DELETE and TRUNCATE are refused"
_REPLACE_ID = (
    f"UNIQUE constraint failed: {TABLE}.id "
    f"({TABLE} is append-only: an insert never replaces an event)"
)
_REPLACE_KEY = (
    f"UNIQUE constraint failed: {TABLE}.aggregate_type, {TABLE}.aggregate_id, "
    f"{TABLE}.sequence ({TABLE} is append-only: an insert never replaces an event)"
)

_SQLITE_INSTALL = [
    f"""CREATE TRIGGER IF NOT EXISTS {TABLE}_no_update BEFORE UPDATE ON {TABLE}
        BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END""",
    f"""CREATE TRIGGER IF NOT EXISTS {TABLE}_no_delete BEFORE DELETE ON {TABLE}
        BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END""",
    f"""CREATE TRIGGER IF NOT EXISTS {TABLE}_no_replace BEFORE INSERT ON {TABLE}
        BEGIN
            SELECT RAISE(ABORT, '{_REPLACE_ID}')
            WHERE NEW.id IS NOT NULL AND EXISTS (SELECT 1 FROM {TABLE} WHERE id = NEW.id);
            SELECT RAISE(ABORT, '{_REPLACE_KEY}')
            WHERE EXISTS (
                SELECT 1 FROM {TABLE} WHERE aggregate_type = NEW.aggregate_type
                AND aggregate_id = NEW.aggregate_id AND sequence = NEW.sequence
            );
        END""",
]
_SQLITE_UNINSTALL = [
    f"DROP TRIGGER IF EXISTS {TABLE}_no_update",
    f"DROP TRIGGER IF EXISTS {TABLE}_no_delete",
    f"DROP TRIGGER IF EXISTS {TABLE}_no_replace",
]
_PG_INSTALL = [
    f"""CREATE OR REPLACE FUNCTION {TABLE}_append_only() RETURNS trigger AS $$
        BEGIN RAISE EXCEPTION '{MESSAGE}'; END; $$ LANGUAGE plpgsql""",
    f"DROP TRIGGER IF EXISTS {TABLE}_append_only ON {TABLE}",
    f"""CREATE TRIGGER {TABLE}_append_only BEFORE UPDATE OR DELETE ON {TABLE}
        FOR EACH ROW EXECUTE FUNCTION {TABLE}_append_only()""",
    f"DROP TRIGGER IF EXISTS {TABLE}_no_truncate ON {TABLE}",
    f"""CREATE TRIGGER {TABLE}_no_truncate BEFORE TRUNCATE ON {TABLE}
        FOR EACH STATEMENT EXECUTE FUNCTION {TABLE}_append_only()""",
]
_PG_UNINSTALL = [
    f"DROP TRIGGER IF EXISTS {TABLE}_append_only ON {TABLE}",
    f"DROP TRIGGER IF EXISTS {TABLE}_no_truncate ON {TABLE}",
]
# The trigger whose presence means "installed" (every install creates it).
_SENTINEL = {"sqlite": f"{TABLE}_no_delete", "postgresql": f"{TABLE}_append_only"}


def _statements(vendor: str, install: bool) -> list[str]:
    if vendor == "sqlite":
        return _SQLITE_INSTALL if install else _SQLITE_UNINSTALL
    if vendor == "postgresql":
        return _PG_INSTALL if install else _PG_UNINSTALL
    raise NotImplementedError(f"append-only triggers are not written for {vendor}")


def install(connection: Any) -> None:
    with connection.cursor() as cursor:
        for sql in _statements(connection.vendor, True):
            cursor.execute(sql)


def uninstall(connection: Any) -> None:
    """Only for test teardown, which must empty the table between transactional tests."""
    with connection.cursor() as cursor:
        for sql in _statements(connection.vendor, False):
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
    but on the event log only SELECT and INSERT; no table's TRUNCATE, and, not being the
    owner, it cannot ALTER or DROP a table or drop or disable a trigger.
    """
    if connection.vendor != "postgresql":
        raise NotImplementedError("database roles are a PostgreSQL deployment")
    quote = connection.ops.quote_name
    who = quote(role)
    statements = [f"GRANT USAGE ON SCHEMA {quote(_schema(connection))} TO {who}"]
    for table in sorted(connection.introspection.table_names()):
        statements.append(f"REVOKE ALL ON {quote(table)} FROM {who}")
        privileges = "SELECT, INSERT" if table == TABLE else "SELECT, INSERT, UPDATE, DELETE"
        statements.append(f"GRANT {privileges} ON {quote(table)} TO {who}")
    statements.append(
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {quote(_schema(connection))} TO {who}"
    )
    return statements


def _schema(connection: Any) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_schema()")
        return str(cursor.fetchone()[0])

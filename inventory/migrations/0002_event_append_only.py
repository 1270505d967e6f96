"""The event log is append-only: database triggers refuse UPDATE, DELETE, an insert that would
replace an event, and TRUNCATE (frozen here: `inventory.append_only` may change, this
migration must not; 0008 installs the same statements)."""

from django.db import migrations

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


def _statements(vendor, install):
    if vendor == "sqlite":
        return _SQLITE_INSTALL if install else _SQLITE_UNINSTALL
    if vendor == "postgresql":
        return _PG_INSTALL if install else _PG_UNINSTALL
    raise NotImplementedError(f"append-only triggers are not written for {vendor}")


def _run(connection, install):
    with connection.cursor() as cursor:
        for sql in _statements(connection.vendor, install):
            cursor.execute(sql)


def install(apps, schema_editor):
    _run(schema_editor.connection, True)


def uninstall(apps, schema_editor):
    _run(schema_editor.connection, False)


class Migration(migrations.Migration):
    dependencies = [("inventory", "0001_initial")]

    operations = [migrations.RunPython(install, uninstall)]

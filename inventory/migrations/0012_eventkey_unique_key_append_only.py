"""Issue 19: a trade key is unique by (scope, key) whatever day it is filed under, and the key
table is append-only like the event log.

Keys recorded twice under different days before this migration (a replay with a block
timestamp two or more days away was recorded as a second fill) are kept but refiled: the
earliest record of a key stays; every later one moves to scope `trade_duplicate` with the key
`<key>@<event id>`, so the unique index holds and `rebuild_inventory --check` names each as a
trade recorded twice (its fill events are in the log; nothing is deleted).
"""

from django.db import migrations, models

DUPLICATE_SCOPE = "trade_duplicate"

# The key table's append-only triggers as of this migration (frozen: a later change to
# inventory/append_only.py cannot change what this migration installs).
INSTALL = {'postgresql': ['CREATE OR REPLACE FUNCTION inventory_eventkey_append_only() RETURNS trigger '
                'AS $$\n'
                "        BEGIN RAISE EXCEPTION 'inventory_eventkey is append-only: UPDATE, "
                "DELETE and TRUNCATE are refused'; END; $$ LANGUAGE plpgsql",
                'DROP TRIGGER IF EXISTS inventory_eventkey_append_only ON inventory_eventkey',
                'CREATE TRIGGER inventory_eventkey_append_only BEFORE UPDATE OR DELETE ON '
                'inventory_eventkey\n'
                '        FOR EACH ROW EXECUTE FUNCTION inventory_eventkey_append_only()',
                'DROP TRIGGER IF EXISTS inventory_eventkey_no_truncate ON inventory_eventkey',
                'CREATE TRIGGER inventory_eventkey_no_truncate BEFORE TRUNCATE ON '
                'inventory_eventkey\n'
                '        FOR EACH STATEMENT EXECUTE FUNCTION inventory_eventkey_append_only()'],
 'sqlite': ['CREATE TRIGGER IF NOT EXISTS inventory_eventkey_no_update BEFORE UPDATE ON '
            'inventory_eventkey\n'
            "        BEGIN SELECT RAISE(ABORT, 'inventory_eventkey is append-only: UPDATE, "
            "DELETE and TRUNCATE are refused'); END",
            'CREATE TRIGGER IF NOT EXISTS inventory_eventkey_no_delete BEFORE DELETE ON '
            'inventory_eventkey\n'
            "        BEGIN SELECT RAISE(ABORT, 'inventory_eventkey is append-only: UPDATE, "
            "DELETE and TRUNCATE are refused'); END",
            'CREATE TRIGGER IF NOT EXISTS inventory_eventkey_no_replace BEFORE INSERT ON '
            'inventory_eventkey\n'
            '        BEGIN\n'
            "            SELECT RAISE(ABORT, 'UNIQUE constraint failed: inventory_eventkey.id "
            "(inventory_eventkey is append-only: an insert never replaces a key)')\n"
            '            WHERE NEW.id IS NOT NULL AND EXISTS (SELECT 1 FROM inventory_eventkey '
            'WHERE id = NEW.id);\n'
            "            SELECT RAISE(ABORT, 'UNIQUE constraint failed: "
            'inventory_eventkey.scope, inventory_eventkey.key (inventory_eventkey is '
            "append-only: an insert never replaces a key)')\n"
            '            WHERE EXISTS (SELECT 1 FROM inventory_eventkey WHERE scope = '
            'NEW.scope AND key = NEW.key);\n'
            '        END']}
UNINSTALL = {'postgresql': ['DROP TRIGGER IF EXISTS inventory_eventkey_append_only ON inventory_eventkey',
                'DROP TRIGGER IF EXISTS inventory_eventkey_no_truncate ON inventory_eventkey'],
 'sqlite': ['DROP TRIGGER IF EXISTS inventory_eventkey_no_update',
            'DROP TRIGGER IF EXISTS inventory_eventkey_no_delete',
            'DROP TRIGGER IF EXISTS inventory_eventkey_no_replace']}


def refile_duplicate_keys(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            'SELECT k."id", k."scope", k."key", k."event_id" FROM "inventory_eventkey" k '
            'JOIN (SELECT "scope", "key", MIN("id") AS "first" FROM "inventory_eventkey" '
            'GROUP BY "scope", "key" HAVING COUNT(*) > 1) d ON d."scope" = k."scope" '
            'AND d."key" = k."key" AND k."id" > d."first" ORDER BY k."id"'
        )
        later = cursor.fetchall()
        cursor.executemany(
            'UPDATE "inventory_eventkey" SET "scope" = %s, "key" = %s WHERE "id" = %s',
            [
                (
                    DUPLICATE_SCOPE if scope == "trade" else f"{scope}_duplicate",
                    f"{key}@{event}",
                    id_,
                )
                for id_, scope, key, event in later
            ],
        )


def _run(connection, statements):
    with connection.cursor() as cursor:
        for sql in statements[connection.vendor]:
            cursor.execute(sql)


def protect(apps, schema_editor):
    _run(schema_editor.connection, INSTALL)


def unprotect(apps, schema_editor):
    _run(schema_editor.connection, UNINSTALL)


class Migration(migrations.Migration):
    dependencies = [
        ("inventory", "0011_eventkey_day"),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name="eventkey",
            name="eventkey_unique_scope_day_key",
        ),
        migrations.RunPython(refile_duplicate_keys, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="eventkey",
            constraint=models.UniqueConstraint(
                fields=("scope", "key"), name="eventkey_unique_scope_key"
            ),
        ),
        migrations.RunPython(protect, unprotect),
    ]

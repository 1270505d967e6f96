"""Issue 19: a trade key is unique by (scope, key) whatever day it is filed under, and the key
table is append-only like the event log.

Keys recorded twice under different days before this migration (a replay with a block
timestamp two or more days away was recorded as a second fill) are kept but refiled: the
earliest record of a key stays; every later one moves to scope `trade_duplicate` with the key
`<key>@<event id>`, so the unique index holds and `rebuild_inventory --check` names each as a
trade recorded twice (its fill events are in the log; nothing is deleted).
"""

from django.db import migrations, models

from inventory import append_only

DUPLICATE_SCOPE = "trade_duplicate"


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


def protect(apps, schema_editor):
    append_only.install(schema_editor.connection, (append_only.KEY_TABLE,))


def unprotect(apps, schema_editor):
    append_only.uninstall(schema_editor.connection, (append_only.KEY_TABLE,))


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

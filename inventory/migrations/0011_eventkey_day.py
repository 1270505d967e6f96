import json
from datetime import UTC, datetime

from django.db import migrations, models

_CHUNK = 5000
# Frozen from inventory.event_keys (the live module may change, this migration must not).
TRADE = "trade"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def trade_day(block_timestamp):
    """Days since 1970-01-01 (UTC) of a fill's block timestamp (ISO 8601 with its offset)."""
    moment = datetime.fromisoformat(block_timestamp)
    return int((moment - _EPOCH).total_seconds() // 86_400)


def file_trade_keys_under_their_day(apps, schema_editor):
    """Each recorded trade key gets the UTC day of its fill's block timestamp (read from the
    fill event; chunks of keys in id order, one UPDATE by primary key each)."""
    last = 0
    with schema_editor.connection.cursor() as cursor:
        while True:
            cursor.execute(
                'SELECT k."id", e."event_type", e."payload" FROM "inventory_eventkey" k '
                'JOIN "inventory_event" e ON e."id" = k."event_id" '
                'WHERE k."scope" = %s AND k."id" > %s ORDER BY k."id" LIMIT %s',
                [TRADE, last, _CHUNK],
            )
            rows = cursor.fetchall()
            if not rows:
                return
            days = []
            for key_id, event_type, payload in rows:
                if isinstance(payload, str):  # SQLite hands JSON back as text
                    payload = json.loads(payload)
                fill = payload[event_type.rpartition("::")[2]]
                days.append((trade_day(fill["block_timestamp"]), key_id))
            cursor.executemany('UPDATE "inventory_eventkey" SET "day" = %s WHERE "id" = %s', days)
            last = rows[-1][0]


class Migration(migrations.Migration):
    dependencies = [
        ("inventory", "0010_config_stamp"),
    ]

    operations = [
        migrations.AddField(
            model_name="eventkey",
            name="day",
            field=models.IntegerField(default=0),
        ),
        migrations.RemoveConstraint(
            model_name="eventkey",
            name="eventkey_unique_scope_key",
        ),
        migrations.RunPython(file_trade_keys_under_their_day, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="eventkey",
            constraint=models.UniqueConstraint(
                fields=("scope", "day", "key"), name="eventkey_unique_scope_day_key"
            ),
        ),
    ]

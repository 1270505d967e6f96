"""Issue 19: remembered onchain fill legs become rows (`OnchainFillLeg`, no count limit) and
the chain head the service has seen is recorded (`ChainHead`).

Each pool's `onchain_fills_after` list moves into the table (event id unknown: NULL; a list
already cut to its last 256 legs stays cut: `rebuild_inventory --check` names the difference
and `--write` rebuilds the legs from the log). The head is the highest block of the onchain
snapshots in the log.
"""

import json
from decimal import Decimal

from django.db import migrations, models

import inventory.fields


SNAPSHOT_TYPES = [
    "InventorySnapshotEvent::OnchainCash",
    "InventorySnapshotEvent::OnchainEquity",
]


def _json(value):
    return json.loads(value) if isinstance(value, str | bytes) else value


def move_legs_and_find_head(apps, schema_editor):
    # Frozen: the onchain snapshot event types and where their payload keeps the block (as
    # encoded when this migration was written: {"<Variant>": {..., "block_number": N}}).
    snapshot_types = SNAPSHOT_TYPES
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            'SELECT "key", "onchain_fills_after" FROM "inventory_inventorypool" ORDER BY "key"'
        )
        legs = [
            (key, int(block), Decimal(str(delta)))
            for key, listed in cursor.fetchall()
            for block, delta in (_json(listed) or [])
        ]
        cursor.executemany(
            'INSERT INTO "inventory_onchainfillleg" ("pool_key", "event_id", "block_number", '
            '"delta") VALUES (%s, NULL, %s, %s)',
            legs,
        )
        cursor.execute(
            'SELECT "id", "event_type", "payload" FROM "inventory_event" '
            f'WHERE "event_type" IN ({", ".join(["%s"] * len(snapshot_types))}) ORDER BY "id"',
            snapshot_types,
        )
        head, head_event = None, None
        for event_id, event_type, payload in cursor.fetchall():
            body = _json(payload)
            (fields,) = body.values()
            block = fields.get("block_number")
            if block is not None and (head is None or int(block) > head):
                head, head_event = int(block), event_id
        cursor.execute(
            'INSERT INTO "inventory_chainhead" ("id", "block", "event_id") VALUES (1, %s, %s)',
            [head, head_event],
        )


def legs_back_to_lists(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            'SELECT "pool_key", "block_number", "delta" FROM "inventory_onchainfillleg" '
            'ORDER BY "id"'
        )
        lists: dict[str, list] = {}
        for key, block, delta in cursor.fetchall():
            lists.setdefault(key, []).append([int(block), str(Decimal(str(delta)))])
        for key, listed in lists.items():
            cursor.execute(
                'UPDATE "inventory_inventorypool" SET "onchain_fills_after" = %s WHERE "key" = %s',
                [json.dumps(listed[-256:]), key],
            )


class Migration(migrations.Migration):
    dependencies = [
        ("inventory", "0012_eventkey_unique_key_append_only"),
    ]

    operations = [
        migrations.CreateModel(
            name="ChainHead",
            fields=[
                (
                    "id",
                    models.PositiveSmallIntegerField(default=1, primary_key=True, serialize=False),
                ),
                ("block", models.BigIntegerField(blank=True, null=True)),
                ("event_id", models.BigIntegerField(blank=True, null=True)),
            ],
        ),
        migrations.CreateModel(
            name="OnchainFillLeg",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("pool_key", models.CharField(max_length=64)),
                ("event_id", models.BigIntegerField(blank=True, null=True)),
                ("block_number", models.BigIntegerField()),
                ("delta", inventory.fields.ExactDecimalField()),
            ],
            options={
                "ordering": ["id"],
                "indexes": [
                    models.Index(fields=["pool_key", "block_number"], name="fillleg_pool_block_idx")
                ],
            },
        ),
        migrations.RunPython(move_legs_and_find_head, legs_back_to_lists),
        migrations.RemoveField(
            model_name="inventorypool",
            name="onchain_fills_after",
        ),
    ]

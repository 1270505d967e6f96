"""The console's models move here from the project package (issue 21), with their data.

Their tables keep their names (`rebalancer_*`, created by rebalancer 0001), so only Django's
state moves (rebalancer 0004 drops it there); nothing is copied. The content types are
relabelled in place, so every permission keeps its id and every group and user keeps what it
was granted (`rebalancer.operate` is now `console.operate`)."""

import django.utils.timezone
import inventory.fields
from django.db import migrations, models

MODELS = ("consolerole", "alertstate", "poolratiosample")


def relabel(old, new, models=MODELS):
    """Move the content types of `models` from app label `old` to `new` (kept where `new`
    already has one). Service 0001 uses it for its models."""

    def run(apps, schema_editor):
        from django.contrib.contenttypes.models import ContentType as LiveContentType

        ContentType = apps.get_model("contenttypes", "ContentType")
        rows = ContentType.objects.using(schema_editor.connection.alias)
        for model in models:
            if not rows.filter(app_label=new, model=model).exists():
                rows.filter(app_label=old, model=model).update(app_label=new)
        LiveContentType.objects.clear_cache()

    return run


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("rebalancer", "0003_service_state"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.CreateModel(
                    name="ConsoleRole",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                    ],
                    options={
                        "permissions": [("view_console", "Can view the operator console"), ("operate", "Can act: retry, force-fail, reconcile, pause, thresholds, assets, tokens")],
                        "managed": False,
                        "default_permissions": (),
                    },
                ),
                migrations.CreateModel(
                    name="AlertState",
                    fields=[
                        ("id", models.BigAutoField(primary_key=True, serialize=False)),
                        ("key", models.CharField(max_length=200, unique=True)),
                        ("kind", models.CharField(max_length=64)),
                        ("message", models.TextField()),
                        ("first_seen_at", models.DateTimeField(default=django.utils.timezone.now)),
                        ("last_seen_at", models.DateTimeField(default=django.utils.timezone.now)),
                        ("last_sent_at", models.DateTimeField(blank=True, null=True)),
                        ("sent_count", models.PositiveIntegerField(default=0)),
                        ("resolved_at", models.DateTimeField(blank=True, null=True)),
                    ],
                    options={
                        "db_table": "rebalancer_alertstate",
                        "ordering": ["-first_seen_at"],
                        "indexes": [models.Index(fields=["resolved_at", "kind"], name="alert_open_kind_idx")],
                    },
                ),
                migrations.CreateModel(
                    name="PoolRatioSample",
                    fields=[
                        ("id", models.BigAutoField(primary_key=True, serialize=False)),
                        ("pool", models.CharField(max_length=64)),
                        ("recorded_at", models.DateTimeField(default=django.utils.timezone.now)),
                        ("onchain_total", inventory.fields.ExactDecimalField(blank=True, null=True)),
                        ("offchain_total", inventory.fields.ExactDecimalField(blank=True, null=True)),
                        ("ratio", inventory.fields.ExactDecimalField(blank=True, null=True)),
                    ],
                    options={
                        "db_table": "rebalancer_poolratiosample",
                        "ordering": ["-recorded_at"],
                        "indexes": [models.Index(fields=["pool", "-recorded_at"], name="ratio_sample_pool_time_idx")],
                    },
                ),
            ],
        ),
        migrations.RunPython(relabel("rebalancer", "console"), relabel("console", "rebalancer")),
    ]

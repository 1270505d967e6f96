"""The service's models move here from the project package (issue 21), with their data.

Their tables keep their names (`rebalancer_*`, created by rebalancer 0003), so only Django's
state moves (rebalancer 0004 drops it there); nothing is copied. The content types are
relabelled in place, so their permissions keep their ids and grants."""

from importlib import import_module

import django.utils.timezone
from django.db import migrations, models

MODELS = ("heartbeat", "marketclock", "periodicrun")


# The frozen helper of console 0001 (a migration, not live code).
relabel = import_module("console.migrations.0001_initial").relabel


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("rebalancer", "0003_service_state"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("console", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.CreateModel(
                    name="Heartbeat",
                    fields=[
                        ("name", models.CharField(max_length=64, primary_key=True, serialize=False)),
                        ("at", models.DateTimeField(default=django.utils.timezone.now)),
                        ("detail", models.TextField(blank=True, default="")),
                    ],
                    options={"db_table": "rebalancer_heartbeat", "ordering": ["name"]},
                ),
                migrations.CreateModel(
                    name="MarketClock",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("is_open", models.BooleanField()),
                        ("next_open", models.DateTimeField()),
                        ("next_close", models.DateTimeField()),
                        ("fetched_at", models.DateTimeField()),
                    ],
                    options={"db_table": "rebalancer_marketclock"},
                ),
                migrations.CreateModel(
                    name="PeriodicRun",
                    fields=[
                        ("name", models.CharField(max_length=64, primary_key=True, serialize=False)),
                        ("next_due_at", models.DateTimeField(default=django.utils.timezone.now)),
                        ("last_started_at", models.DateTimeField(blank=True, null=True)),
                        ("last_started_by", models.CharField(blank=True, default="", max_length=128)),
                    ],
                    options={"db_table": "rebalancer_periodicrun", "ordering": ["name"]},
                ),
            ],
        ),
        migrations.RunPython(
            relabel("rebalancer", "service", MODELS), relabel("service", "rebalancer", MODELS)
        ),
    ]

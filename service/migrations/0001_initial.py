"""The service's models move here from the project package (issue 21), with their data.

Their tables keep their names (`rebalancer_*`, created by rebalancer 0003), so only Django's
state moves (rebalancer 0004 drops it there); nothing is copied. The content types are
relabelled in place, so their permissions keep their ids and grants."""

import django.utils.timezone
from django.db import migrations, models

MODELS = ("heartbeat", "marketclock", "periodicrun")


def relabel(old, new):
    def run(apps, schema_editor):
        from django.contrib.contenttypes.models import ContentType as LiveContentType

        ContentType = apps.get_model("contenttypes", "ContentType")
        rows = ContentType.objects.using(schema_editor.connection.alias)
        for model in MODELS:
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
        migrations.RunPython(relabel("rebalancer", "service"), relabel("service", "rebalancer")),
    ]

"""The project package's models moved to the apps that own them (issue 21): ConsoleRole,
AlertState and PoolRatioSample to `console`, Heartbeat, MarketClock and PeriodicRun to
`service`. Their tables stay (those apps' 0001 take them over under the same names): only
Django's state is dropped here."""

from django.db import migrations

MOVED = ("ConsoleRole", "AlertState", "PoolRatioSample", "Heartbeat", "MarketClock", "PeriodicRun")


class Migration(migrations.Migration):
    dependencies = [
        ("rebalancer", "0003_service_state"),
        ("console", "0001_initial"),
        ("service", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[migrations.DeleteModel(name=name) for name in MOVED],
        )
    ]

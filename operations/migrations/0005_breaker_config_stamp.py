"""Writes to the pool breakers change the configuration stamp (inventory.config_stamp)."""

from django.db import migrations

from inventory import config_stamp


def install(apps, schema_editor):
    config_stamp.install(schema_editor.connection, [config_stamp.BREAKER_TABLE])


def uninstall(apps, schema_editor):
    config_stamp.uninstall(schema_editor.connection, [config_stamp.BREAKER_TABLE])


class Migration(migrations.Migration):
    dependencies = [
        ("operations", "0004_pool_breaker"),
        ("inventory", "0010_config_stamp"),
    ]

    operations = [migrations.RunPython(install, uninstall)]

"""Writes to the pool breakers change the configuration stamp (the triggers frozen in
inventory's migration 0010)."""

from importlib import import_module

from django.db import migrations

_FROZEN = import_module("inventory.migrations.0010_config_stamp")


def install(apps, schema_editor):
    _FROZEN.install_tables(schema_editor.connection, [_FROZEN.BREAKER_TABLE])


def uninstall(apps, schema_editor):
    _FROZEN.uninstall_tables(schema_editor.connection, [_FROZEN.BREAKER_TABLE])


class Migration(migrations.Migration):
    dependencies = [
        ("operations", "0004_pool_breaker"),
        ("inventory", "0010_config_stamp"),
    ]

    operations = [migrations.RunPython(install, uninstall)]

"""Issue 9: the event log also refuses SQLite REPLACE INTO and PostgreSQL TRUNCATE (the
statements frozen in 0002, which installs them all; idempotent)."""

from importlib import import_module

from django.db import migrations

_FROZEN = import_module("inventory.migrations.0002_event_append_only")


def install(apps, schema_editor):
    _FROZEN.install(apps, schema_editor)


class Migration(migrations.Migration):
    dependencies = [("inventory", "0007_event_type_recorded_index")]

    operations = [migrations.RunPython(install, migrations.RunPython.noop)]

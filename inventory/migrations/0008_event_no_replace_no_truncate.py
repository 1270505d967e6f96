"""Issue 9: the event log also refuses SQLite REPLACE INTO and PostgreSQL TRUNCATE."""

from django.db import migrations

from inventory import append_only


def install(apps, schema_editor):
    append_only.install(schema_editor.connection, (append_only.TABLE,))


class Migration(migrations.Migration):
    dependencies = [("inventory", "0007_event_type_recorded_index")]

    operations = [migrations.RunPython(install, migrations.RunPython.noop)]

from django.db import migrations

from inventory import append_only


def install(apps, schema_editor):
    append_only.install(schema_editor.connection, (append_only.TABLE,))


def uninstall(apps, schema_editor):
    append_only.uninstall(schema_editor.connection, (append_only.TABLE,))


class Migration(migrations.Migration):
    dependencies = [("inventory", "0001_initial")]

    operations = [migrations.RunPython(install, uninstall)]

"""The console's roles (`rebalancer.console.roles`): `operators` and `viewers`. Permissions are
created here first (post_migrate would be too late for a data migration)."""

from django.contrib.auth.management import create_permissions
from django.db import migrations


def create_roles(apps, schema_editor):
    from rebalancer.console.roles import roles_ensure

    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    roles_ensure(apps, using=schema_editor.connection.alias)


def drop_roles(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=["viewers", "operators"]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("rebalancer", "0001_console"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("inventory", "0003_pools_assets_settings"),
        ("operations", "0002_chain_nonce"),
    ]

    operations = [migrations.RunPython(create_roles, drop_roles)]

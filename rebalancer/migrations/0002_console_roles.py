"""The console's roles (`rebalancer.console.roles`): `operators` and `viewers`. Permissions are
created here first (post_migrate would be too late for a data migration). The roles are frozen
here (the live module may change, this migration must not; post_migrate makes them whole with
the live lists after every migrate)."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

VIEWER_PERMISSIONS = [
    ("rebalancer", "view_console"),
    ("rebalancer", "view_poolratiosample"),
    ("rebalancer", "view_alertstate"),
    ("inventory", "view_apitoken"),
    ("inventory", "view_event"),
    ("inventory", "view_inventorypool"),
    ("inventory", "view_asset"),
    ("inventory", "view_rebalancingsettingsrow"),
    ("operations", "view_operation"),
]
OPERATOR_PERMISSIONS = VIEWER_PERMISSIONS + [
    ("rebalancer", "operate"),
    ("inventory", "add_apitoken"),
    ("inventory", "change_apitoken"),
    ("inventory", "add_asset"),
    ("inventory", "change_asset"),
    ("inventory", "change_rebalancingsettingsrow"),
]
ROLES = {"viewers": VIEWER_PERMISSIONS, "operators": OPERATOR_PERMISSIONS}


def roles_ensure(apps, using):
    """Create both groups (if missing) and grant exactly their permissions that exist."""
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, pairs in ROLES.items():
        group, _ = Group.objects.using(using).get_or_create(name=name)
        wanted = []
        for app_label, codename in pairs:
            permission = (
                Permission.objects.using(using)
                .filter(content_type__app_label=app_label, codename=codename)
                .first()
            )
            if permission is not None:
                wanted.append(permission)
        group.permissions.set(wanted)


def create_roles(apps, schema_editor):
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

"""The console's roles: `operators` act (operator actions, thresholds, assets, API tokens);
`viewers` only read. Created by a migration and made whole again after every migrate or
flush (post_migrate), so a role never loses a permission a newer model brought."""

from __future__ import annotations

from typing import Any

VIEWER_PERMISSIONS = [
    ("console", "view_console"),
    ("console", "view_poolratiosample"),
    ("console", "view_alertstate"),
    ("inventory", "view_apitoken"),
    ("inventory", "view_event"),
    ("inventory", "view_inventorypool"),
    ("inventory", "view_asset"),
    ("inventory", "view_rebalancingsettingsrow"),
    ("operations", "view_operation"),
    ("operations", "view_poolbreaker"),
    ("django_q", "view_failure"),
]
OPERATOR_PERMISSIONS = VIEWER_PERMISSIONS + [
    ("console", "operate"),
    ("inventory", "add_apitoken"),
    ("inventory", "change_apitoken"),
    ("inventory", "add_asset"),
    ("inventory", "change_asset"),
    ("inventory", "change_rebalancingsettingsrow"),
]
ROLES = {"viewers": VIEWER_PERMISSIONS, "operators": OPERATOR_PERMISSIONS}


def roles_ensure(apps: Any = None, using: str = "default") -> None:
    """Create both groups (if missing) and grant exactly their permissions that exist."""
    if apps is None:
        from django.apps import apps as global_apps

        apps = global_apps
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

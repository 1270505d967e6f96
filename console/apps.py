from django.apps import AppConfig, apps
from django.contrib.admin import apps as admin_apps
from django.db.models.signals import post_migrate


def _ensure_alerts_schedule(sender, using="default", **kwargs):
    from console.alerts import alerts_schedule_ensure

    alerts_schedule_ensure(using=using)


def _ensure_roles(sender, using="default", **kwargs):
    from console.roles import roles_ensure

    roles_ensure(using=using)


class ConsoleConfig(AppConfig):
    """The operator console: dashboard, alerts, metrics, charts, templates and the admin site
    every app's `admin.py` registers on."""

    default = True
    name = "console"
    verbose_name = "Console"

    def ready(self) -> None:
        # The alerts check runs every minute (see service.apps for why `operations`).
        post_migrate.connect(
            _ensure_alerts_schedule,
            sender=apps.get_app_config("operations"),
            dispatch_uid="console.alerts_schedule",
        )
        # Permissions are created on post_migrate by auth (connected before us), then roles.
        post_migrate.connect(_ensure_roles, sender=self, dispatch_uid="console.roles")
        from console import history
        from inventory.store import events_appended
        from service.reconcile import reconciled

        # Each venue poll leaves one ratio sample per pool it touched (the console's charts).
        events_appended.connect(history.on_events_appended, dispatch_uid="console.history")
        # A reconcile's drift opens and resolves the console's drift alerts (and holds a pool
        # whose drift persists across two reconciles).
        reconciled.connect(_on_reconciled, dispatch_uid="console.drift")


def _on_reconciled(sender, drifts, readings, **kwargs):
    from console.drift import drift_alerts_record

    drift_alerts_record(drifts, readings)


class ConsoleAdminConfig(admin_apps.AdminConfig):
    """The admin, with the operator console's site (dashboard index, operator actions)."""

    default = False
    default_site = "console.site.ConsoleSite"

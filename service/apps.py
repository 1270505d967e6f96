from django.apps import AppConfig, apps
from django.db.models.signals import post_migrate


def _ensure_sweep_schedule(sender, using="default", **kwargs):
    from operations.sweep import sweep_schedule_ensure

    sweep_schedule_ensure(using=using)


class ServiceAppConfig(AppConfig):
    """The service (`runrebalancer`): supervisor, poller, market clock, health, periodic jobs,
    reconcile, and the trigger that starts operations inside the event transaction."""

    default = True
    name = "service"
    verbose_name = "Service"

    def ready(self) -> None:
        # After every migrate (and the test flushes, which re-send post_migrate), make sure the
        # sweep runs every minute. post_migrate is sent only for apps with models, so listen
        # for `operations` (sent after every migration ran, so django_q's tables exist).
        post_migrate.connect(
            _ensure_sweep_schedule,
            sender=apps.get_app_config("operations"),
            dispatch_uid="service.sweep_schedule",
        )
        from inventory.store import events_appended
        from operations.services import operation_released, pools_recheck
        from service import oplog, trigger

        # Inside the appending transaction: terminal events end operations, pools are checked.
        events_appended.connect(
            trigger.on_events_appended, dispatch_uid="service.trigger.events_appended"
        )
        # One INFO line per operation state change, when it commits.
        events_appended.connect(
            oplog.on_events_appended, dispatch_uid="service.oplog.events_appended"
        )
        # An operation ended without a terminal event: re-check its pool and USDC.
        operation_released.connect(
            trigger.on_operation_released, dispatch_uid="service.trigger.operation_released"
        )
        # A cool-down ended or an operator resumed a pool: re-check it.
        pools_recheck.connect(
            trigger.on_pools_recheck, dispatch_uid="service.trigger.pools_recheck"
        )

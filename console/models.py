"""The console's own rows (never facts of the domain: those are events).

Pool ratio history (one sample per pool per venue poll) and the state of each alert condition
(so a webhook is posted once per condition, then at its repeat interval). Permissions for the
operator roles live on `ConsoleRole`, which has no table.

The tables keep the names they had under the project package (`rebalancer_*`): the models moved
here with their data (console migration 0001, issue 21).
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from inventory.fields import ExactDecimalField


class ConsoleRole(models.Model):
    """No rows: carries the console's permissions, granted to the `operators` and `viewers`
    groups by a migration."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [
            ("view_console", "Can view the operator console"),
            ("operate", "Can act: retry, force-fail, reconcile, pause, thresholds, assets, tokens"),
        ]

    def __str__(self) -> str:
        return "console role"


class PoolRatioSample(models.Model):
    """The pool as a venue poll left it: totals per venue and the onchain ratio."""

    id = models.BigAutoField(primary_key=True)
    pool = models.CharField(max_length=64)
    recorded_at = models.DateTimeField(default=timezone.now)
    onchain_total = ExactDecimalField(null=True, blank=True)
    offchain_total = ExactDecimalField(null=True, blank=True)
    ratio = ExactDecimalField(null=True, blank=True)

    class Meta:
        db_table = "rebalancer_poolratiosample"
        indexes = [models.Index(fields=["pool", "-recorded_at"], name="ratio_sample_pool_time_idx")]
        ordering = ["-recorded_at"]

    def __str__(self) -> str:
        return f"{self.pool} ratio {self.ratio} at {self.recorded_at:%Y-%m-%d %H:%M:%S}"


class AlertState(models.Model):
    """One alert condition (`key`), open while it holds; `last_sent_at` paces the webhook."""

    id = models.BigAutoField(primary_key=True)
    key = models.CharField(max_length=200, unique=True)
    kind = models.CharField(max_length=64)
    message = models.TextField()
    first_seen_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    last_sent_at = models.DateTimeField(null=True, blank=True)
    sent_count = models.PositiveIntegerField(default=0)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "rebalancer_alertstate"
        indexes = [models.Index(fields=["resolved_at", "kind"], name="alert_open_kind_idx")]
        ordering = ["-first_seen_at"]

    def __str__(self) -> str:
        state = "resolved" if self.resolved_at else "open"
        return f"[{state}] {self.kind}: {self.message}"

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None

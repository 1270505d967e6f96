"""The rebalancer app's own rows (never facts of the domain: those are events).

Console: pool ratio history (one sample per pool per venue poll) and the state of each alert
condition (so a webhook is posted once per condition, then at its repeat interval).
Permissions for the operator roles live on `ConsoleRole`, which has no table.

Service (`runrebalancer`):
- `PeriodicRun`: one row per periodic job (venue poll, cluster heartbeat). Whoever moves
  `next_due_at` forward with a compare-and-set UPDATE runs the job, so several hosts on one
  database never double a poll.
- `Heartbeat`: when something last succeeded (the cluster ran a task, a venue was read).
- `MarketClock`: Alpaca's market clock as last read (the trigger consults it without a network
  call: no new equity operation starts while the market is closed).
"""

from __future__ import annotations

from datetime import datetime

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
        indexes = [models.Index(fields=["resolved_at", "kind"], name="alert_open_kind_idx")]
        ordering = ["-first_seen_at"]

    def __str__(self) -> str:
        state = "resolved" if self.resolved_at else "open"
        return f"[{state}] {self.kind}: {self.message}"

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None


class PeriodicRun(models.Model):
    name = models.CharField(max_length=64, primary_key=True)
    next_due_at = models.DateTimeField(default=timezone.now)
    last_started_at = models.DateTimeField(null=True, blank=True)
    last_started_by = models.CharField(max_length=128, blank=True, default="")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} (next due {self.next_due_at.isoformat()})"


class Heartbeat(models.Model):
    # "cluster", "venue:base", "venue:alpaca", ...
    name = models.CharField(max_length=64, primary_key=True)
    at = models.DateTimeField(default=timezone.now)
    detail = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} at {self.at.isoformat()}"

    def age_s(self, now: datetime | None = None) -> float:
        return ((now or timezone.now()) - self.at).total_seconds()


class MarketClock(models.Model):
    """Singleton (pk 1): the brokerage's clock as last fetched."""

    is_open = models.BooleanField()
    next_open = models.DateTimeField()
    next_close = models.DateTimeField()
    fetched_at = models.DateTimeField()

    def __str__(self) -> str:
        state = "open" if self.is_open else "closed"
        return f"market {state} (fetched {self.fetched_at.isoformat()})"

    def open_at(self, now: datetime) -> bool:
        """Whether the market is open at `now`, from this reading alone (exact at the
        recorded open and close times, so a stale reading still pauses at the close)."""
        if self.is_open:
            return now < self.next_close
        return self.next_open <= now < self.next_close

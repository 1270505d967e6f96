"""The service's own rows (`runrebalancer`; never facts of the domain: those are events).

- `PeriodicRun`: one row per periodic job (venue poll, cluster heartbeat enqueue). Whoever moves
  `next_due_at` forward with a compare-and-set UPDATE runs the job, so several hosts on one
  database never double a poll.
- `Heartbeat`: when something last succeeded (the cluster ran a task, a venue was read).
- `MarketClock`: Alpaca's market clock as last read (the trigger consults it without a network
  call: no new equity operation starts while the market is closed).

The tables keep the names they had under the project package (`rebalancer_*`): the models moved
here with their data (service migration 0001, issue 21).
"""

from __future__ import annotations

from datetime import datetime

from django.db import models
from django.utils import timezone

from inventory.domain.market_clock import session_open_at


class PeriodicRun(models.Model):
    name = models.CharField(max_length=64, primary_key=True)
    next_due_at = models.DateTimeField(default=timezone.now)
    last_started_at = models.DateTimeField(null=True, blank=True)
    last_started_by = models.CharField(max_length=128, blank=True, default="")

    class Meta:
        db_table = "rebalancer_periodicrun"
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} (next due {self.next_due_at.isoformat()})"


class Heartbeat(models.Model):
    # "cluster", "venue:base", "venue:alpaca", ...
    name = models.CharField(max_length=64, primary_key=True)
    at = models.DateTimeField(default=timezone.now)
    detail = models.TextField(blank=True, default="")

    class Meta:
        db_table = "rebalancer_heartbeat"
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

    class Meta:
        db_table = "rebalancer_marketclock"

    def __str__(self) -> str:
        state = "open" if self.is_open else "closed"
        return f"market {state} (fetched {self.fetched_at.isoformat()})"

    def open_at(self, now: datetime) -> bool:
        """Whether the market is open at `now`, from this reading alone (exact at the
        recorded open and close times, so a stale reading still pauses at the close)."""
        return session_open_at(
            is_open=self.is_open, next_open=self.next_open, next_close=self.next_close, now=now
        )

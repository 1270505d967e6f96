"""Health of a running rebalancer: what `manage.py health` and `GET /api/v1/health` report.

Unhealthy (exit 1 / HTTP 503) when the database cannot be queried, the cluster's heartbeat
task has not run recently, a venue has not been read successfully recently (rebalancing
enabled only), or an operation or a pool needs a human. The market clock is reported, never
a failure: a closed market only pauses new equity operations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone

from inventory.selectors import pools_needing_reconciliation
from operations.selectors import operations_needing_attention
from service.market import market_clock_get
from service.models import Heartbeat
from service.periodic import CLUSTER_HEARTBEAT
from service.poller import VENUES, venue_heartbeat_name


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class HealthReport:
    checked_at: datetime
    checks: list[Check]

    @property
    def healthy(self) -> bool:
        return all(check.ok for check in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "checked_at": self.checked_at.isoformat(),
            "checks": {
                check.name: {"ok": check.ok, "detail": check.detail, **check.data}
                for check in self.checks
            },
        }


def _age_check(name: str, beat: Heartbeat | None, max_age_s: float, now: datetime) -> Check:
    if beat is None:
        return Check(name, False, "never", {"age_s": None})
    age = round(beat.age_s(now), 1)
    ok = age <= max_age_s
    detail = f"{age}s ago" + ("" if ok else f" (older than {max_age_s:g}s)")
    return Check(name, ok, detail, {"age_s": age, "at": beat.at.isoformat()})


def health_report(*, now: datetime | None = None) -> HealthReport:
    moment = now or timezone.now()
    service = settings.SERVICE
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as error:  # noqa: BLE001 - any database failure is the answer
        return HealthReport(moment, [Check("database", False, f"{type(error).__name__}: {error}")])
    checks = [Check("database", True, connection.vendor)]
    beats = {row.name: row for row in Heartbeat.objects.all()}
    checks.append(
        _age_check(
            "cluster_heartbeat",
            beats.get(CLUSTER_HEARTBEAT),
            service.health_heartbeat_max_age_s,
            moment,
        )
    )
    if settings.REBALANCING.enabled:
        for venue in VENUES:
            checks.append(
                _age_check(
                    f"snapshot_{venue}",
                    beats.get(venue_heartbeat_name(venue)),
                    service.health_snapshot_max_age_s,
                    moment,
                )
            )
    attention = list(operations_needing_attention().order_by("pk").values_list("pk", flat=True))
    checks.append(
        Check(
            "operations_needing_attention",
            not attention,
            f"{len(attention)} operation(s)" + (f": {attention}" if attention else ""),
            {"ids": attention},
        )
    )
    pools = [row.key for row in pools_needing_reconciliation()]
    checks.append(
        Check(
            "pools_needing_reconciliation",
            not pools,
            f"{len(pools)} pool(s)" + (f": {', '.join(pools)}" if pools else ""),
            {"pools": pools},
        )
    )
    clock = market_clock_get()
    if clock is None:
        checks.append(Check("market", True, "clock not read yet", {"open": None}))
    else:
        is_open = clock.open_at(moment)
        detail = (
            f"open until {clock.next_close.isoformat()}"
            if is_open
            else f"closed until {clock.next_open.isoformat()}: new equity operations paused"
        )
        checks.append(
            Check("market", True, detail, {"open": is_open, "equity_paused": not is_open})
        )
    return HealthReport(moment, checks)

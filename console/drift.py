"""A reconcile's drift, kept by the console (`service.reconcile.reconciled`, issue 19).

Drift above ALERT_DRIFT_TOLERANCE opens a `drift_report` alert (resolved by a later report
without it). Recording the snapshots corrects a pool, so a drift found again by the next
reconcile, on a pool with nothing inflight, is one the snapshots do not correct: it opens a
`drift_persistent` alert and holds the pool (`service.reconcile.pool_hold_for_drift`).
"""

from __future__ import annotations

from console.alerts import DRIFT_REPORT, Condition, alerts_drift_report, alerts_record
from console.models import AlertState
from service.poller import OFFCHAIN_VENUE, ONCHAIN_VENUE, VenueReadings
from service.reconcile import Drift, pool_hold_for_drift

DRIFT_PERSISTENT = "drift_persistent"


def drift_alerts_record(drifts: list[Drift], readings: VenueReadings) -> None:
    """After a reconcile recorded its snapshots: the drift alerts, then the persistent drifts."""
    # Drift the previous reconcile reported (its alert still open), before this one's report.
    reported_before = _open_drift_reports()
    # The console's drift alerts (opened above ALERT_DRIFT_TOLERANCE, resolved when gone); a
    # pool never observed before has no projection to drift from.
    alerts_drift_report(
        {(d.pool, d.venue): d.difference for d in drifts if d.projected is not None}
    )
    _persistent_drift_flag(drifts, reported_before, readings)


def _open_drift_reports() -> set[str]:
    return set(
        AlertState.objects.filter(kind=DRIFT_REPORT, resolved_at__isnull=True).values_list(
            "key", flat=True
        )
    )


def persistent_drifts(drifts: list[Drift], reported_before: set[str]) -> list[Drift]:
    """The drifts above tolerance, with nothing inflight, that the previous reconcile had
    already reported (its `drift_report` alert was still open)."""
    from django.conf import settings

    tolerance = settings.ALERTS.drift_tolerance
    return [
        d
        for d in drifts
        if d.projected is not None
        and d.inflight == 0
        and abs(d.difference) > tolerance
        and f"drift_report:{d.pool}:{d.venue}" in reported_before
    ]


def _persistent_drift_flag(
    drifts: list[Drift], reported_before: set[str], readings: VenueReadings
) -> None:
    # Only the venues read this time can confirm or clear their pairs.
    read = {venue for venue in (ONCHAIN_VENUE, OFFCHAIN_VENUE) if venue not in readings.failures}
    persistent = persistent_drifts(drifts, reported_before)
    conditions = [
        Condition(
            f"{DRIFT_PERSISTENT}:{d.pool}:{d.venue}",
            DRIFT_PERSISTENT,
            f"pool {d.pool} at {d.venue}: projected {d.projected}, observed {d.observed} "
            f"(difference {d.difference}) at two reconciles in a row: the snapshots do not "
            f"correct it; the pool is held until an operator resumes it",
        )
        for d in persistent
    ]
    if read == {ONCHAIN_VENUE, OFFCHAIN_VENUE}:
        alerts_record(conditions, kinds={DRIFT_PERSISTENT})
    elif conditions:
        alerts_record(conditions, kinds=set())
    for pool in sorted({d.pool for d in persistent}):
        reasons = "; ".join(
            f"{d.venue} projected {d.projected} observed {d.observed}"
            for d in persistent
            if d.pool == pool
        )
        pool_hold_for_drift(pool=pool, reason=f"drift persisted across reconciles: {reasons}")

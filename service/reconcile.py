"""Reconcile: read the venues now, compare with the projection, record the snapshots.

The drift of a pool at a venue is what the venue holds (observed) minus what the projection
says is available there (projected), taken before the snapshot is recorded. A pool with
something inflight is reported with its inflight amount: its snapshot is not taken (B1), so
part of the difference may be the inflight itself.

The alarm for what no check of the log can see (issue 19): recording the snapshots corrects a
pool, so a drift above ALERT_DRIFT_TOLERANCE found again by the next reconcile on a pool with
nothing inflight is a drift the snapshots do not correct (a fill re-applied above every pinned
snapshot, a hedge never closed, a projection defect). It opens a `drift_persistent` alert
(resolved by the first reconcile that no longer finds it) and flags the pool: its circuit
breaker opens (audited, like a breaker opened by failures), so nothing is rebalanced on the
wrong numbers until an operator has looked and resumes it. The alarm is kept by the console
(`console/drift.py`, on the `reconciled` signal): its alert states remember the last report.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal

from django.dispatch import Signal

from inventory.domain.values import USDC_POOL
from inventory.selectors import pools_by_key
from operations.venues import Venues
from service.poller import (
    OFFCHAIN_VENUE,
    ONCHAIN_VENUE,
    VenueReadings,
    readings_record,
    venue_balances_read,
)

logger = logging.getLogger(__name__)

# Sent inside reconcile_run once the snapshots are recorded (drifts, readings): the console
# keeps its drift alerts by it, and holds a pool whose drift persists (console.drift). A signal,
# so the service never imports the console that reads it.
reconciled = Signal()
RECONCILE_SCHEDULE_NAME = "rebalancer.reconcile"
RECONCILE_FUNC = "service.reconcile.reconcile_scheduled"


@dataclass(frozen=True)
class Drift:
    pool: str
    venue: str
    projected: Decimal | None  # None: never observed
    inflight: Decimal
    observed: Decimal

    @property
    def difference(self) -> Decimal:
        return self.observed - (self.projected or Decimal(0))

    def as_dict(self) -> dict[str, str | None]:
        return {
            "pool": self.pool,
            "venue": self.venue,
            "projected": None if self.projected is None else str(self.projected),
            "inflight": str(self.inflight),
            "observed": str(self.observed),
            "difference": str(self.difference),
        }


@dataclass(frozen=True)
class ReconcileReport:
    readings: VenueReadings
    drifts: list[Drift]
    events_recorded: int

    @property
    def failures(self) -> dict[str, str]:
        return self.readings.failures


def _observed(readings: VenueReadings) -> dict[tuple[str, str], Decimal]:
    values: dict[tuple[str, str], Decimal] = {}
    if readings.onchain is not None:
        for symbol, amount in readings.onchain.equity.items():
            values[(symbol, ONCHAIN_VENUE)] = amount
        values[(USDC_POOL, ONCHAIN_VENUE)] = readings.onchain.usdc
    if readings.offchain is not None:
        for symbol, amount in readings.offchain.equity.items():
            values[(symbol, OFFCHAIN_VENUE)] = amount
        # USD cash plus USDC held: what the USDC pool counts at Alpaca (spec 15.5).
        values[(USDC_POOL, OFFCHAIN_VENUE)] = readings.offchain.cash + readings.offchain.usdc
    return values


def drifts_compute(readings: VenueReadings) -> list[Drift]:
    observed = _observed(readings)
    pools = pools_by_key(key for key, _ in observed)
    drifts = []
    for (key, venue), amount in sorted(observed.items()):
        row = pools.get(key)
        onchain = venue == ONCHAIN_VENUE
        if row is None or not (row.onchain_observed if onchain else row.offchain_observed):
            projected = None
            inflight = Decimal(0)
        else:
            projected = row.onchain_available if onchain else row.offchain_available
            inflight = row.onchain_inflight if onchain else row.offchain_inflight
        drifts.append(Drift(key, venue, projected, inflight, amount))
    return drifts


def reconcile_run(*, venues: Venues | None = None) -> ReconcileReport:
    """Read the venues, compute the drift against the projection, record the snapshots."""
    readings = venue_balances_read(venues=venues)
    drifts = drifts_compute(readings)
    recorded = readings_record(readings)
    # The console's drift alerts, and the hold of a pool whose drift persists (console.drift).
    reconciled.send(sender=reconcile_run, drifts=drifts, readings=readings)
    for drift in drifts:
        if drift.difference != 0:
            logger.warning(
                "reconcile: %s at %s: projected %s, observed %s, difference %s (inflight %s)",
                drift.pool,
                drift.venue,
                drift.projected,
                drift.observed,
                drift.difference,
                drift.inflight,
            )
    logger.info(
        "reconcile: %d pool/venue pair(s) read, %d with drift, %d snapshot event(s) recorded",
        len(drifts),
        sum(1 for d in drifts if d.difference != 0),
        recorded,
    )
    return ReconcileReport(readings=readings, drifts=drifts, events_recorded=recorded)


def pool_hold_for_drift(*, pool: str, reason: str) -> bool:
    """Open the pool's circuit breaker (audited) for a drift the snapshots do not correct;
    False when it is already open."""
    from django.db import transaction
    from django.utils import timezone

    from inventory.domain import settings as settings_domain
    from operations.models import PoolBreaker
    from operations.services import _breaker_audit

    moment = timezone.now()
    with transaction.atomic():
        PoolBreaker.objects.get_or_create(pool=pool)
        breaker = PoolBreaker.objects.select_for_update().get(pool=pool)
        if breaker.open_since is not None:
            return False
        breaker.open_since = moment
        breaker.last_failure_reason = reason[:4000]
        breaker.updated_at = moment
        breaker.save()
        _breaker_audit(
            pool=pool,
            old=settings_domain.BREAKER_CLOSED,
            new=settings_domain.BREAKER_OPEN,
            changed_by="reconcile",
            now=moment,
        )
    logger.error("pool %s held: %s; an operator must resume it", pool, reason)
    return True


def reconcile_scheduled() -> None:
    """The hourly django-q task runrebalancer schedules."""
    from django.conf import settings

    if settings.REBALANCING.enabled:
        reconcile_run()


__all__ = ["OFFCHAIN_VENUE", "ONCHAIN_VENUE", "Drift", "ReconcileReport", "reconcile_run"]

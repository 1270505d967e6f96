"""Reconcile: read the venues now, compare with the projection, record the snapshots.

The drift of a pool at a venue is what the venue holds (observed) minus what the projection
says is available there (projected), taken before the snapshot is recorded. A pool with
something inflight is reported with its inflight amount: its snapshot is not taken (B1), so
part of the difference may be the inflight itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal

from inventory.domain.values import USDC_POOL
from inventory.models import InventoryPool
from operations.venues import Venues
from rebalancer.poller import (
    OFFCHAIN_VENUE,
    ONCHAIN_VENUE,
    VenueReadings,
    readings_record,
    venue_balances_read,
)

logger = logging.getLogger(__name__)

RECONCILE_SCHEDULE_NAME = "rebalancer.reconcile"
RECONCILE_FUNC = "rebalancer.reconcile.reconcile_scheduled"


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
    pools = {row.key: row for row in InventoryPool.objects.filter(key__in={k for k, _ in observed})}
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
    from rebalancer.console.alerts import alerts_drift_report

    readings = venue_balances_read(venues=venues)
    drifts = drifts_compute(readings)
    recorded = readings_record(readings)
    # The console's drift alerts (opened above ALERT_DRIFT_TOLERANCE, resolved when gone); a
    # pool never observed before has no projection to drift from.
    alerts_drift_report(
        {(d.pool, d.venue): d.difference for d in drifts if d.projected is not None}
    )
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


def reconcile_scheduled() -> None:
    """The hourly django-q task runrebalancer schedules."""
    from django.conf import settings

    if settings.REBALANCING.enabled:
        reconcile_run()


__all__ = ["OFFCHAIN_VENUE", "ONCHAIN_VENUE", "Drift", "ReconcileReport", "reconcile_run"]

"""Reads that join the apps: each pool with its band, state and active operation."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.db.models import Max

from inventory.domain.inventory import TooMuchOffchain, TooMuchOnchain, detect_imbalance, ratio
from inventory.selectors import pools_list, rebalancing_settings_get
from operations.models import ACTIVE_STATUSES, Operation
from service.decisions import Deferral, Proposal, deferrals_latest, proposals_latest


@dataclass(frozen=True)
class PoolOverview:
    key: str
    kind: str
    onchain_available: Decimal
    onchain_inflight: Decimal
    offchain_available: Decimal
    offchain_inflight: Decimal
    onchain_observed: bool
    offchain_observed: bool
    ratio: Decimal | None
    band_lower: Decimal
    band_upper: Decimal
    target: Decimal
    state: str
    needs_reconciliation: bool
    reconciliation_reason: str
    active_operation: Operation | None
    # REBALANCING_MODE=monitor: the newest `RebalanceProposed` of an out-of-band pool.
    proposal: Proposal | None = None
    # The cost gate's newest decision for the pool, when it held an operation back.
    deferral: Deferral | None = None


def _state(pool_domain, imbalance, row) -> str:  # type: ignore[no-untyped-def]
    if row.needs_reconciliation:
        return "needs_reconciliation"
    if not (row.onchain_observed and row.offchain_observed):
        return "unobserved"
    if pool_domain.has_inflight():
        return "inflight"
    if isinstance(imbalance, TooMuchOnchain):
        return "too_much_onchain"
    if isinstance(imbalance, TooMuchOffchain):
        return "too_much_offchain"
    if ratio(pool_domain) is None:
        return "empty"
    return "balanced"


# The state of one pool row (the console's pools list shows it).
pool_state = _state


def pools_overview() -> list[PoolOverview]:
    """Every pool in key order: amounts, onchain ratio, band, state and active operation.

    States: needs_reconciliation, unobserved (a venue never snapshotted), inflight, empty,
    too_much_onchain, too_much_offchain, balanced. An out-of-band pool carries the newest
    proposal recorded for it (REBALANCING_MODE=monitor), if any.
    """
    settings = rebalancing_settings_get()
    active = {
        operation.pool: operation
        for operation in Operation.objects.filter(status__in=ACTIVE_STATUSES)
    }
    proposals = proposals_latest()
    # A deferral stands until an operation of its pool starts after it (the gate let one
    # through, or an operator started one): then the pool shows that operation instead.
    newest = dict(
        Operation.objects.order_by()
        .values("pool")
        .annotate(newest=Max("id"))
        .values_list("pool", "newest")
    )
    deferrals = {
        pool: deferral
        for pool, deferral in deferrals_latest().items()
        if newest.get(pool, 0) <= deferral.last_operation_id
    }
    overview = []
    for row in pools_list():
        pool = row.to_domain()
        threshold = settings.threshold_for(row.key)
        imbalance = detect_imbalance(pool, threshold)
        overview.append(
            PoolOverview(
                key=row.key,
                kind=row.kind,
                onchain_available=row.onchain_available,
                onchain_inflight=row.onchain_inflight,
                offchain_available=row.offchain_available,
                offchain_inflight=row.offchain_inflight,
                onchain_observed=row.onchain_observed,
                offchain_observed=row.offchain_observed,
                ratio=ratio(pool),
                band_lower=threshold.lower,
                band_upper=threshold.upper,
                target=threshold.target,
                state=_state(pool, imbalance, row),
                needs_reconciliation=row.needs_reconciliation,
                reconciliation_reason=row.reconciliation_reason,
                active_operation=active.get(row.key),
                proposal=(
                    proposals.get(row.key)
                    if isinstance(imbalance, TooMuchOnchain | TooMuchOffchain)
                    else None
                ),
                deferral=(
                    deferrals.get(row.key)
                    if isinstance(imbalance, TooMuchOnchain | TooMuchOffchain)
                    else None
                ),
            )
        )
    return overview

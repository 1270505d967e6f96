"""Decisions the trigger records without starting an operation (issue 24).

`proposal_record`: REBALANCING_MODE=monitor, the operation the trigger would start, as a
`RebalanceProposed` event of the pool's `RebalanceDecision` aggregate (once per change of the
proposal, `inventory.domain.decisions`). `proposals_latest`: the newest proposal of each pool,
for the console and the API.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from django.db.models import OuterRef, QuerySet, Subquery

from inventory.domain import decisions as decisions_domain
from inventory.domain import events as ev
from inventory.domain.values import USDC_POOL
from inventory.models import Event
from inventory.store import StoredEvent, aggregate_execute

if TYPE_CHECKING:
    from inventory.selectors import RebalancingSettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Proposal:
    pool: str
    kind: str
    amount: Decimal
    estimated_cost_usd: Decimal | None
    proposed_at: datetime
    event_id: int


def proposal_record(
    *,
    pool: str,
    kind: str,
    amount: Decimal,
    settings: RebalancingSettings,
    estimated_cost_usd: Decimal | None = None,
) -> StoredEvent | None:
    """Record what the trigger would start; None when it is the proposal already recorded."""
    step = settings.usdc_minimum if pool == USDC_POOL else settings.equity_minimum_shares
    stored = aggregate_execute(
        spec=decisions_domain.SPEC,
        aggregate_id=pool,
        command=decisions_domain.Propose(
            pool=pool,
            kind=str(kind),
            amount=amount,
            estimated_cost_usd=estimated_cost_usd,
            significant_change=step,
        ),
    )
    if not stored:
        return None
    logger.info("monitor mode: proposed %s of %s for %s (no venue write)", kind, amount, pool)
    return stored[0]


def deferral_record(
    *,
    pool: str,
    kind: str,
    amount: Decimal,
    rule: str,
    detail: str,
    estimated_cost_usd: Decimal | None,
    value_usd: Decimal | None,
) -> StoredEvent | None:
    """Record that the cost gate held back what the trigger planned; None when it is the
    deferral already recorded (same kind and rule, no operation started since)."""
    from operations.models import Operation

    newest = Operation.objects.filter(pool=pool).order_by("-id").values_list("id", flat=True)
    stored = aggregate_execute(
        spec=decisions_domain.SPEC,
        aggregate_id=pool,
        command=decisions_domain.Defer(
            pool=pool,
            kind=str(kind),
            amount=amount,
            estimated_cost_usd=estimated_cost_usd,
            value_usd=value_usd,
            rule=rule,
            detail=detail,
            last_operation_id=int(newest.first() or 0),
        ),
    )
    if not stored:
        return None
    logger.warning("deferred %s of %s for %s: %s (%s)", kind, amount, pool, rule, detail)
    return stored[0]


@dataclass(frozen=True)
class Deferral:
    pool: str
    kind: str
    amount: Decimal
    estimated_cost_usd: Decimal | None
    rule: str
    detail: str
    deferred_at: datetime
    event_id: int
    # The pool's newest operation when it was recorded (0: none): one started since answers it.
    last_operation_id: int = 0


def _newest_per_pool(*event_classes: type) -> dict[str, Event]:
    """The newest event of each pool among `event_classes` of the decision log, by pool key
    (one query: each pool's row whose sequence is that pool's newest among those types)."""

    def decisions() -> QuerySet[Event]:
        return Event.objects.filter(
            aggregate_type=ev.DECISIONS,
            event_type__in=[cls.event_type_name() for cls in event_classes],
        )

    newest_sequence = (
        decisions().filter(aggregate_id=OuterRef("aggregate_id")).order_by("-sequence")
    ).values("sequence")[:1]
    rows = decisions().filter(sequence=Subquery(newest_sequence)).order_by("aggregate_id")
    return {row.aggregate_id: row for row in rows}


def deferrals_latest() -> dict[str, Deferral]:
    """The newest decision of each pool when it is a `RebalanceDeferred`, by pool key."""
    latest: dict[str, Deferral] = {}
    for pool, row in _newest_per_pool(ev.RebalanceProposed, ev.RebalanceDeferred).items():
        event = row.domain_event()
        if isinstance(event, ev.RebalanceDeferred):
            latest[pool] = Deferral(
                pool=event.pool,
                kind=event.kind,
                amount=event.amount,
                estimated_cost_usd=event.estimated_cost_usd,
                rule=event.rule,
                detail=event.detail,
                deferred_at=event.deferred_at,
                event_id=row.id,
                last_operation_id=event.last_operation_id,
            )
    return latest


def proposals_latest() -> dict[str, Proposal]:
    """The newest `RebalanceProposed` of each pool, by pool key."""
    latest: dict[str, Proposal] = {}
    for pool, row in _newest_per_pool(ev.RebalanceProposed).items():
        event = row.domain_event()
        assert isinstance(event, ev.RebalanceProposed)
        latest[pool] = Proposal(
            pool=event.pool,
            kind=event.kind,
            amount=event.amount,
            estimated_cost_usd=event.estimated_cost_usd,
            proposed_at=event.proposed_at,
            event_id=row.id,
        )
    return latest

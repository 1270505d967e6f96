"""Reads of Operation rows for one use case each."""

from __future__ import annotations

from django.db.models import QuerySet

from inventory.models import Event
from operations.models import ACTIVE_STATUSES, Operation


def operation_active_for_pool(*, pool: str) -> Operation | None:
    return Operation.objects.filter(pool=pool, status__in=ACTIVE_STATUSES).first()


def operations_needing_attention() -> QuerySet[Operation]:
    return Operation.objects.filter(needs_attention=True).order_by("-pk")


def operations_filtered(
    *, status: str | None = None, kind: str | None = None, pool: str | None = None, limit: int
) -> list[Operation]:
    """Newest first, at most `limit`."""
    rows = Operation.objects.order_by("-pk")
    if status:
        rows = rows.filter(status=status)
    if kind:
        rows = rows.filter(kind=kind)
    if pool:
        rows = rows.filter(pool=pool)
    return list(rows[:limit])


def operation_events(*, operation: Operation) -> QuerySet[Event]:
    """The operation's aggregate events in sequence order."""
    return Event.objects.filter(
        aggregate_type=operation.aggregate_type, aggregate_id=operation.aggregate_id
    ).order_by("sequence")

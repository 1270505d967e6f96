"""Reads of Operation rows for one use case each."""

from __future__ import annotations

from django.db.models import QuerySet

from operations.models import ACTIVE_STATUSES, Operation


def operations_active() -> QuerySet[Operation]:
    return Operation.objects.filter(status__in=ACTIVE_STATUSES).order_by("pk")


def operation_active_for_pool(*, pool: str) -> Operation | None:
    return Operation.objects.filter(pool=pool, status__in=ACTIVE_STATUSES).first()


def operation_by_aggregate_id(*, aggregate_id: str) -> Operation | None:
    return Operation.objects.filter(aggregate_id=aggregate_id).first()


def operations_needing_attention() -> QuerySet[Operation]:
    return Operation.objects.filter(needs_attention=True).order_by("-pk")

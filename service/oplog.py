"""One INFO line per operation state change: id, kind, pool, amount and the step reached.

Connected to `inventory.store.events_appended` (see `RebalancerConfig.ready`); the line is
written when the transaction commits, so a rolled-back step never appears in the log.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

from inventory.domain import events as ev
from inventory.store import StoredEvent
from operations.models import Operation

logger = logging.getLogger("rebalancer.operations")


def on_events_appended(
    sender: Any, events: list[StoredEvent], pools: set[str], **kwargs: Any
) -> None:
    steps = [
        (stored.aggregate_id, stored.event.variant())
        for stored in events
        if stored.aggregate_type in ev.OPERATION_EVENT_TYPES
    ]
    if not steps:
        return
    operations = {
        row.aggregate_id: row
        for row in Operation.objects.filter(aggregate_id__in={a for a, _ in steps})
    }
    lines = []
    for aggregate_id, step in steps:
        operation = operations.get(aggregate_id)
        if operation is None:
            lines.append(("?", "?", "?", "?", aggregate_id, step))
        else:
            lines.append(
                (
                    operation.pk,
                    operation.kind,
                    operation.pool,
                    operation.amount,
                    aggregate_id,
                    step,
                )
            )

    def write() -> None:
        for pk, kind, pool, amount, aggregate_id, step in lines:
            logger.info(
                "operation %s %s pool=%s amount=%s step=%s (%s)",
                pk,
                kind,
                pool,
                amount,
                step,
                aggregate_id,
            )

    transaction.on_commit(write)

"""Inventory projection: applies stored events to the `InventoryPool` rows.

Called by `inventory.store` inside the appending transaction, so the pools are never behind
the log. The arithmetic is the pure `inventory.domain.inventory.InventoryFold`, the same code
`rebuild_inventory` replays the whole log with. Genesis data of an operation comes from its
stored events (sequence 1 onwards), never from the current batch alone (B3).

A fact that cannot be applied (a balance would go negative, a venue never observed) is still
in the log; the pool is flagged `needs_reconciliation` with the reason and keeps its values.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from inventory.domain import events as ev
from inventory.domain.inventory import InventoryFold
from inventory.models import Event, InventoryPool

if TYPE_CHECKING:
    from inventory.store import StoredEvent

logger = logging.getLogger(__name__)


def _preload_tracks(fold: InventoryFold, events: Sequence[StoredEvent]) -> None:
    """Tracks of the batch's operations from their stored history before the batch."""
    first_in_batch: dict[tuple[str, str], int] = {}
    for stored in events:
        if stored.aggregate_type in ev.OPERATION_EVENT_TYPES:
            key = (stored.aggregate_type, stored.aggregate_id)
            first_in_batch[key] = min(first_in_batch.get(key, stored.sequence), stored.sequence)
    for (aggregate_type, aggregate_id), first_sequence in sorted(first_in_batch.items()):
        if first_sequence == 1:
            continue
        rows = Event.objects.filter(
            aggregate_type=aggregate_type, aggregate_id=aggregate_id, sequence__lt=first_sequence
        ).order_by("sequence")
        for row in rows:
            fold.follow(aggregate_type, aggregate_id, row.domain_event())
        if (aggregate_type, aggregate_id) not in fold.tracks:
            logger.error(
                "%s/%s has no genesis event before sequence %d; its events move no inventory",
                aggregate_type,
                aggregate_id,
                first_sequence,
            )


def _touched_keys(fold: InventoryFold, events: Sequence[StoredEvent]) -> set[str]:
    """Which pools the batch changes: a dry run over throwaway pools with copied tracks."""
    dry = InventoryFold(tracks=dict(fold.tracks))
    keys: set[str] = set()
    for stored in events:
        keys.update(
            dry.apply(stored.aggregate_type, stored.aggregate_id, stored.event, stored.recorded_at)
        )
    return keys


def pools_lock(keys: set[str]) -> dict[str, InventoryPool]:
    """Create missing pool rows (in key order), then lock all of them in primary-key order."""
    existing = set(
        InventoryPool.objects.filter(key__in=keys).order_by().values_list("key", flat=True)
    )
    missing = sorted(keys - existing)
    if missing:
        InventoryPool.objects.bulk_create(
            [InventoryPool(key=key, kind=InventoryPool.kind_for(key)) for key in missing],
            ignore_conflicts=True,
        )
        logger.info("created inventory pools %s", ", ".join(missing))
    rows = InventoryPool.objects.select_for_update().filter(key__in=keys).order_by("pk")
    return {row.key: row for row in rows}


def projection_apply(events: Sequence[StoredEvent]) -> set[str]:
    """Apply events to the pools they touch; returns the touched pool keys."""
    if not events:
        return set()
    fold = InventoryFold()
    _preload_tracks(fold, events)
    keys = _touched_keys(fold, events)
    if not keys:
        return set()
    rows = pools_lock(keys)
    fold.pools = {key: row.to_domain() for key, row in rows.items()}
    last_event: dict[str, int] = {}
    reasons_before = {key: pool.reconciliation_reason for key, pool in fold.pools.items()}
    for stored in events:
        for key in fold.apply(
            stored.aggregate_type, stored.aggregate_id, stored.event, stored.recorded_at
        ):
            last_event[key] = stored.id
    for key, row in rows.items():
        fields = row.set_from_domain(fold.pools[key])
        if key in last_event and row.last_event_id != last_event[key]:
            row.last_event_id = last_event[key]
            fields.append("last_event_id")
        if fields:
            row.save(update_fields=fields)
        reason = fold.pools[key].reconciliation_reason
        if reason and reason != reasons_before[key]:
            logger.warning("inventory pool %s needs reconciliation: %s", key, reason)
    return keys

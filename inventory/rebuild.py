"""`rebuild_inventory`: replay the whole log into the inventory pools, fast.

The log is read with one raw cursor in id order, in chunks (a server-side cursor on
PostgreSQL), decoded with the event codec, and folded in memory into one mutable state per
pool; the pools are compared with the stored rows and written once at the end, in the one
transaction that holds every pool row locked. Memory stays flat whatever the log's length.

The result is exactly the per-event projection's (`inventory.projection`, the pure
`inventory.domain.inventory.InventoryFold`). The position events of fills (onchain fills,
hedges placed / filled / failed), nearly all of a long log, are applied in place on the
mutable state with the domain's own pure pieces (`_onchain_fill_delta`, `VenueBalance`'s
arithmetic and its errors), and a fact that cannot be applied flags the pool with the reason
`apply_event_or_flag` gives. Every other event (operations, snapshots) goes through the pure
`apply_event_or_flag` itself on the materialised pool. `reference_fold` is the projection's
fold event by event; a property test holds the two equal on mixed logs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection, transaction

from inventory.codec import decode_event
from inventory.domain.fast import MutablePool, fold_stored
from inventory.domain.inventory import (
    InventoryFold,
    PoolInventory,
)
from inventory.models import Event, InventoryPool

logger = logging.getLogger(__name__)

# Rows fetched per round trip; a chunk of decoded payloads is all the replay holds at once.
REBUILD_CHUNK_SIZE = 5000

POOL_FIELDS = (
    "kind",
    "onchain_available",
    "onchain_inflight",
    "offchain_available",
    "offchain_inflight",
    "onchain_observed",
    "offchain_observed",
    "last_rebalancing",
    "needs_reconciliation",
    "reconciliation_reason",
    "last_event_id",
    "updated_at",
    "inflight_changed_at",
    "onchain_block",
    "onchain_fills_after",
    "offchain_hedges_pending",
    "offchain_last_fill_at",
)

# (id, aggregate_type, aggregate_id, event_type, payload, recorded_at) of one stored event.
LogRow = tuple[int, str, str, str, Any, datetime]
Progress = Callable[[Iterable[LogRow], int], Iterable[LogRow]]


@dataclass(frozen=True)
class PoolDifference:
    pool: str
    field: str
    stored: Any
    rebuilt: Any

    def __str__(self) -> str:
        return f"{self.pool}.{self.field}: stored {self.stored!r}, rebuilt {self.rebuilt!r}"


# --- reading the log ---------------------------------------------------------------------------


def log_rows(chunk_size: int = REBUILD_CHUNK_SIZE) -> Iterator[LogRow]:
    """Every stored event in id order: a raw cursor read in chunks (server-side on
    PostgreSQL), payloads parsed and `recorded_at` aware, as the ORM would give them."""
    table = connection.ops.quote_name(Event._meta.db_table)
    columns = ", ".join(
        connection.ops.quote_name(Event._meta.get_field(name).column)
        for name in ("id", "aggregate_type", "aggregate_id", "event_type", "payload", "recorded_at")
    )
    tz = connection.timezone
    loads = json.loads
    parse = datetime.fromisoformat
    with connection.chunked_cursor() as cursor:
        cursor.execute(f"SELECT {columns} FROM {table} ORDER BY {connection.ops.quote_name('id')}")
        while True:
            chunk = cursor.fetchmany(chunk_size)
            if not chunk:
                return
            for event_id, aggregate_type, aggregate_id, event_type, payload, recorded in chunk:
                if isinstance(payload, str | bytes):
                    payload = loads(payload)
                if not isinstance(recorded, datetime):
                    recorded = parse(recorded)
                if recorded.tzinfo is None:
                    recorded = recorded.replace(tzinfo=tz)
                yield event_id, aggregate_type, aggregate_id, event_type, payload, recorded


# --- the fold ----------------------------------------------------------------------------------


def fast_fold(rows: Iterable[LogRow]) -> tuple[dict[str, PoolInventory], dict[str, int]]:
    """Fold stored events (in id order) into pool states; -> (pools, last event id per pool).
    Equal to `reference_fold` on any log."""
    pools: dict[str, MutablePool] = {}
    last_event: dict[str, int] = {}
    fold = InventoryFold()  # only its operation tracks are used
    for event_id, aggregate_type, aggregate_id, event_type, payload, recorded_at in rows:
        event = decode_event(event_type, payload)
        for key in fold_stored(pools, fold, aggregate_type, aggregate_id, event, recorded_at):
            last_event[key] = event_id
    return {key: pool.domain() for key, pool in pools.items()}, last_event


def reference_fold(rows: Iterable[LogRow]) -> tuple[dict[str, PoolInventory], dict[str, int]]:
    """The projection's pure fold, one `InventoryFold.apply` per event (the definition)."""
    fold = InventoryFold()
    last_event: dict[str, int] = {}
    for event_id, aggregate_type, aggregate_id, event_type, payload, recorded_at in rows:
        event = decode_event(event_type, payload)
        for key in fold.apply(aggregate_type, aggregate_id, event, recorded_at):
            last_event[key] = event_id
    return fold.pools, last_event


def pool_rows(
    pools: dict[str, PoolInventory], last_event: dict[str, int]
) -> dict[str, InventoryPool]:
    """Unsaved `InventoryPool` rows of folded pools."""
    rebuilt = {}
    for key, pool in pools.items():
        row = InventoryPool(key=key, kind=InventoryPool.kind_for(key))
        row.set_from_domain(pool)
        row.last_event_id = last_event.get(key)
        rebuilt[key] = row
    return rebuilt


def fold_log(*, progress: Progress | None = None) -> dict[str, InventoryPool]:
    """Replay the whole log (fast path); unsaved rows by pool key."""
    rows: Iterable[LogRow] = log_rows()
    if progress is not None:
        rows = progress(rows, Event.objects.count())
    return pool_rows(*fast_fold(rows))


# --- comparing and writing ---------------------------------------------------------------------


def _differences(
    stored: InventoryPool | None, rebuilt: InventoryPool, key: str
) -> list[PoolDifference]:
    baseline = stored or InventoryPool(key=key, kind=InventoryPool.kind_for(key))
    found = []
    for name in POOL_FIELDS:
        old, new = getattr(baseline, name), getattr(rebuilt, name)
        if stored is None or old != new:
            found.append(PoolDifference(key, name, None if stored is None else old, new))
    return found


def inventory_rebuild(*, write: bool, progress: Progress | None = None) -> list[PoolDifference]:
    """Replay the log, report every difference from the stored pools, and (with `write`)
    store the rebuilt values in bulk. Runs with every pool row locked, in one transaction."""
    with transaction.atomic():
        stored = {row.key: row for row in InventoryPool.objects.select_for_update().order_by("pk")}
        rebuilt = fold_log(progress=progress)
        differences: list[PoolDifference] = []
        for key in sorted(set(stored) | set(rebuilt)):
            target = rebuilt.get(key) or InventoryPool(key=key, kind=InventoryPool.kind_for(key))
            differences.extend(_differences(stored.get(key), target, key))
        if write and differences:
            changed = sorted({d.pool for d in differences})
            created = []
            updated = []
            fields: set[str] = set()
            for key in changed:
                target = rebuilt.get(key) or InventoryPool(
                    key=key, kind=InventoryPool.kind_for(key)
                )
                row = stored.get(key)
                if row is None:
                    created.append(target)
                    continue
                for difference in differences:
                    if difference.pool == key:
                        setattr(row, difference.field, getattr(target, difference.field))
                        fields.add(difference.field)
                updated.append(row)
            if created:
                InventoryPool.objects.bulk_create(created)
            if updated:
                InventoryPool.objects.bulk_update(updated, sorted(fields))
    for difference in differences:
        logger.warning("inventory rebuild difference: %s", difference)
    logger.info(
        "inventory rebuild: %d pool(s), %d difference(s)%s",
        len(set(stored) | set(rebuilt)),
        len(differences),
        ", written" if write and differences else "",
    )
    return differences

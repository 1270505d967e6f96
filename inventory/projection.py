"""Inventory projection: applies stored events to the `InventoryPool` rows.

Called by `inventory.store` inside the appending transaction, so the pools are never behind
the log. The arithmetic is the pure `inventory.domain.inventory.InventoryFold`, the same code
`rebuild_inventory` replays the whole log with. Genesis data of an operation comes from its
stored events (sequence 1 onwards), never from the current batch alone (B3).

A fact that cannot be applied (a balance would go negative, a venue never observed) is still
in the log; the pool is flagged `needs_reconciliation` with the reason and keeps its values.

Spec 15.2's remembered onchain fill legs are `OnchainFillLeg` rows: a fill inserts one row
per pool whose onchain available it moved above the pool's snapshot block (O(1) per fill,
whatever the number remembered); an onchain snapshot loads the pool's rows first (the domain
re-applies those above its block), and once taken deletes the rows it covers (at or below
its block; all of them when it is not pinned). A pool row read for a fill carries no legs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from django.db import connection

from inventory import rawsql, usdc_deltas
from inventory.domain import events as ev
from inventory.domain.inventory import (
    InventoryFold,
    MutablePool,
    PoolInventory,
    fold_stored,
    onchain_fill_delta,
)
from inventory.domain.values import USDC_POOL
from inventory.models import Event, InventoryPool, OnchainFillLeg

logger = logging.getLogger(__name__)


class StoredEvent(Protocol):
    """What the projection reads of an appended event (`inventory.store.StoredEvent`, which
    calls this module: typed here by shape, so the two modules do not import each other)."""

    @property
    def id(self) -> int: ...
    @property
    def aggregate_type(self) -> str: ...
    @property
    def aggregate_id(self) -> str: ...
    @property
    def sequence(self) -> int: ...
    @property
    def event(self) -> Any: ...
    @property
    def recorded_at(self) -> datetime: ...


_RECONCILED = (ev.MintReconciled, ev.RedemptionReconciled, ev.UsdcReconciled)


@dataclass
class ProjectionPlan:
    """What a batch of decided events will do to the pools, known before it is inserted.

    `fold` holds the tracks of the batch's operations from their stored history; `touched` are
    the pools the events change; `lock` adds the pools the trigger re-checks after the batch
    (an operation's pool and USDC when the operation ends), so one lock acquisition covers
    the whole transaction.
    """

    fold: InventoryFold
    touched: set[str]
    lock: set[str]
    # Pools the batch changes only by onchain fills, without locking the row: USDC, whose
    # fill changes are recorded as pending deltas (`inventory.usdc_deltas`).
    shared: set[str] = field(default_factory=set)


Decided = tuple[str, str, int, Sequence[Any]]  # aggregate type, id, after sequence, events


def _preload_tracks(fold: InventoryFold, batches: Sequence[Decided]) -> None:
    """Tracks of the batch's operations from their stored history before the batch."""
    first_in_batch: dict[tuple[str, str], int] = {}
    for aggregate_type, aggregate_id, after_sequence, events in batches:
        if aggregate_type in ev.OPERATION_EVENT_TYPES and events:
            key = (aggregate_type, aggregate_id)
            first_in_batch[key] = min(
                first_in_batch.get(key, after_sequence + 1), after_sequence + 1
            )
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


def projection_plan(batches: Sequence[Decided]) -> ProjectionPlan:
    """Plan decided events: the pools each touches, from the event and its operation's track
    (tracks advanced on a copy; no pool is folded)."""
    fold = InventoryFold()
    _preload_tracks(fold, batches)
    dry = InventoryFold(tracks=dict(fold.tracks))
    touched: set[str] = set()
    lock: set[str] = set()
    usdc_exclusive = False
    for aggregate_type, aggregate_id, _, events in batches:
        for event in events:
            keys, track = dry.touches(aggregate_type, aggregate_id, event)
            touched.update(keys)
            if USDC_POOL in keys and type(event) is not ev.OnChainOrderFilled:
                usdc_exclusive = True
            if aggregate_type in ev.OPERATION_EVENT_TYPES:
                if track is not None:
                    lock.add(track.genesis.pool_key)
                if event.TERMINAL or isinstance(event, _RECONCILED):
                    lock.add(USDC_POOL)
                    usdc_exclusive = True
    shared = {USDC_POOL} if USDC_POOL in touched and not usdc_exclusive else set()
    return ProjectionPlan(fold=fold, touched=touched, lock=touched | lock, shared=shared)


_POOLS_ORDER = '"inventory_inventorypool"."key" ASC'


def _pools_where(count: int) -> str:
    return f'"key" IN ({rawsql.placeholders(count)})'


def pools_lock_statements(
    keys: Iterable[str], *, shared: Iterable[str] = ()
) -> list[tuple[str, list[Any]]]:
    """The statements `pools_lock(keys, shared=shared)` runs, in order (to prefetch them:
    `rawsql.prefetch`): the USDC gate first (before any row lock), the rows locked in key
    order, the shared rows read without a lock, and the pending USDC deltas."""
    wanted = sorted(set(keys))
    shared = frozenset(shared)
    locking, reading = _lock_modes(wanted, shared)
    statements = []
    if USDC_POOL in wanted:
        gate = usdc_deltas.gate_statement(shared=USDC_POOL in shared)
        if gate is not None:
            statements.append(gate)
    statements += [
        rawsql.select_statement(
            InventoryPool, _pools_where(len(rows)), rows, order_by=_POOLS_ORDER, for_update=lock
        )
        for rows, lock in _pool_reads(locking, reading)
    ]
    if USDC_POOL in wanted:
        statements.append(usdc_deltas.deltas_statement())
    return statements


def _lock_modes(wanted: list[str], shared: Iterable[str]) -> tuple[list[str], list[str]]:
    """(rows to lock, rows to read without a lock) of `wanted`, each in key order. Where the
    database has no row locks (SQLite: the transaction's write lock covers everything) all
    are read by one statement."""
    reading = sorted(set(shared) & set(wanted))
    if not connection.features.has_select_for_update:
        return wanted, []
    return [key for key in wanted if key not in reading], reading


def _pools_select(locking: list[str], reading: list[str]) -> dict[str, InventoryPool]:
    """`SELECT ... FOR UPDATE` of the pool rows of `locking`, in key order, and a plain
    `SELECT` of those of `reading` (plain SQL)."""
    return {
        row.key: row
        for keys, lock in _pool_reads(locking, reading)
        for row in rawsql.select_models(
            InventoryPool, _pools_where(len(keys)), keys, order_by=_POOLS_ORDER, for_update=lock
        )
    }


def _pool_reads(locking: list[str], reading: list[str]) -> list[tuple[list[str], bool]]:
    """The pool reads `pools_lock` makes, in order: (keys, lock them?), the empty left out."""
    return [(keys, lock) for keys, lock in ((locking, True), (reading, False)) if keys]


def pools_lock(
    keys: Iterable[str], *, create: bool = True, shared: Iterable[str] = ()
) -> dict[str, InventoryPool]:
    """Lock the pool rows of `keys` in key order (the one global lock order), creating the
    missing ones first when `create`. Locking rows this transaction already holds is a no-op,
    so callers lock everything they need once, up front.

    The USDC pool: locked, it is folded first (its pending fill deltas applied to the row and
    saved: `inventory.usdc_deltas`), after taking the USDC gate exclusively; in `shared`
    (a batch of onchain fills), the gate is taken shared, the row is not locked and comes back
    as an unsaved copy with the pending deltas applied (what the fills' projection starts
    from; they add theirs as deltas)."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    shared = frozenset(shared)
    locking, reading = _lock_modes(wanted, shared)
    usdc_shared = USDC_POOL in shared
    if USDC_POOL in wanted:
        usdc_deltas.gate_take(shared=usdc_shared)
    rows = _pools_select(locking, reading)
    missing = [key for key in wanted if key not in rows]
    if missing and create:
        InventoryPool.objects.bulk_create(
            [InventoryPool(key=key, kind=InventoryPool.kind_for(key)) for key in missing],
            ignore_conflicts=True,
        )
        logger.info("created inventory pools %s", ", ".join(missing))
        rows = _pools_select(locking, reading)
    if USDC_POOL in wanted:
        deltas = usdc_deltas.deltas_read()
        usdc = rows.get(USDC_POOL)
        if usdc is not None and usdc_shared:
            rows[USDC_POOL] = usdc_deltas.usdc_view(usdc, deltas)
            usdc_deltas.fold_due(len(deltas))
        elif usdc is not None:
            rows[USDC_POOL] = usdc_deltas.usdc_fold(usdc, deltas)
    return rows


_ONCHAIN_SNAPSHOTS = (ev.OnchainEquity, ev.OnchainCash)


def _snapshot_pools(event: Any) -> list[str]:
    if isinstance(event, ev.OnchainEquity):
        return sorted(event.balances)
    return [USDC_POOL]


class _Legs:
    """The `OnchainFillLeg` rows of one projection batch: new legs are buffered and inserted
    in one statement; a pool's rows are loaded into its in-memory legs before its first
    onchain snapshot of the batch, and the rows a taken snapshot covers are deleted."""

    def __init__(self, pools: dict[str, MutablePool], *, deferred: bool = False) -> None:
        self.pools = pools
        self.deferred = deferred
        self.loaded: set[str] = set()
        self.pending: list[tuple[str, int, int, Any]] = []

    def counts(self, keys: Iterable[str]) -> dict[str, int]:
        """The number of in-memory legs of the pools a fill touches, before it."""
        pools = self.pools
        return {key: len(pools[key].fills) for key in keys if key in pools}

    def added(self, keys: Iterable[str], counts: dict[str, int], event_id: int) -> None:
        for key in keys:
            fills = self.pools[key].fills
            if len(fills) > counts.get(key, 0):
                block, delta = fills[-1]
                self.pending.append((key, event_id, block, delta))

    def flush(self) -> None:
        if self.pending:
            rawsql.insert_rows(
                OnchainFillLeg,
                ("pool_key", "event_id", "block_number", "delta"),
                self.pending,
                deferred=self.deferred,
            )
            self.pending = []

    def load(self, keys: Iterable[str]) -> None:
        wanted = [key for key in keys if key in self.pools and key not in self.loaded]
        if not wanted:
            return
        self.flush()
        rows = rawsql.fetch(
            'SELECT "pool_key", "block_number", "delta" FROM "inventory_onchainfillleg" '
            f'WHERE "pool_key" IN ({rawsql.placeholders(len(wanted))}) ORDER BY "id"',
            wanted,
        )
        field = OnchainFillLeg._meta.get_field("delta")
        loaded: dict[str, list[tuple[int, Any]]] = {key: [] for key in wanted}
        for key, block, delta in rows:
            loaded[key].append((int(block), field.to_python(delta)))
        for key in wanted:
            self.pools[key].fills = loaded[key]
            self.loaded.add(key)

    def release(self, keys: Iterable[str]) -> None:
        """Delete the rows a taken snapshot covers: the in-memory legs are the domain's
        truth (those above the snapshot block); every row at or below it goes, and all
        rows when the snapshot was not pinned and cleared the legs."""
        self.flush()
        for key in keys:
            if key not in self.loaded:
                continue
            pool = self.pools[key]
            if pool.onchain_block is not None:
                rawsql.execute(
                    'DELETE FROM "inventory_onchainfillleg" WHERE "pool_key" = %s '
                    'AND "block_number" <= %s',
                    [key, pool.onchain_block],
                )
            elif not pool.fills:
                rawsql.execute(
                    'DELETE FROM "inventory_onchainfillleg" WHERE "pool_key" = %s', [key]
                )


def projection_apply(
    events: Sequence[StoredEvent],
    *,
    plan: ProjectionPlan | None = None,
    rows: dict[str, InventoryPool] | None = None,
    domains: dict[str, PoolInventory] | None = None,
    deferred: bool = False,
) -> set[str]:
    """Apply stored events to the pools they touch (one update per pool); returns the touched
    pool keys. `plan` and the locked `rows` come from `inventory.store.appends_commit`; without
    them the plan is made and the rows locked here. `domains`, when given, receives each
    touched pool as written (what `row.to_domain()` now returns, without rebuilding it).
    `deferred`: the writes wait for the next round trip (`rawsql.defer`); event ids may be
    `rawsql.EventRef`s."""
    if not events:
        return set()
    if plan is None:
        plan = projection_plan(
            [(s.aggregate_type, s.aggregate_id, s.sequence - 1, [s.event]) for s in events]
        )
    if not plan.touched:
        return set()
    if rows is None or not plan.touched <= rows.keys():
        rows = pools_lock(plan.touched | (rows.keys() if rows else set()), shared=plan.shared)
    fold = plan.fold
    touched_rows = {key: rows[key] for key in plan.touched}
    before = {key: row.to_domain() for key, row in touched_rows.items()}
    pools = {key: MutablePool(pool) for key, pool in before.items()}
    last_event: dict[str, int] = {}
    # The shared pools (USDC in a batch of fills) start from their row with the pending
    # deltas applied (`pools_lock`); each fill adds its own delta instead of changing the row,
    # and their legs are inserted when the deltas are folded.
    legs = _Legs({k: p for k, p in pools.items() if k not in plan.shared}, deferred=deferred)
    deltas: list[tuple[Any, ...]] = []
    for stored in events:
        event = stored.event
        snapshot = isinstance(event, _ONCHAIN_SNAPSHOTS)
        if snapshot:
            legs.load(_snapshot_pools(event))
        counts = (
            legs.counts((stored.aggregate_id, USDC_POOL))
            if type(event) is ev.OnChainOrderFilled
            else None
        )
        keys = fold_stored(
            pools,
            fold,
            stored.aggregate_type,
            stored.aggregate_id,
            event,
            stored.recorded_at,
        )
        for key in keys:
            last_event[key] = stored.id
        if counts is not None:
            if USDC_POOL in plan.shared and USDC_POOL in keys:
                deltas.append(
                    (
                        stored.id,
                        onchain_fill_delta(event, USDC_POOL),
                        event.block_number,
                        event.seen_at,
                        stored.recorded_at,
                    )
                )
            legs.added([key for key in keys if key not in plan.shared], counts, stored.id)
        elif snapshot:
            legs.release(keys)
    legs.flush()
    usdc_deltas.deltas_insert(deltas, deferred=deferred)
    for key, row in sorted(touched_rows.items()):
        after = pools[key].domain()
        if domains is not None:
            domains[key] = after
        fields = row.set_from_domain(after)
        if key in last_event and row.last_event_id != last_event[key]:
            row.last_event_id = last_event[key]
            fields.append("last_event_id")
        if fields and key not in plan.shared:
            rawsql.update_fields(row, fields, deferred=deferred)
        reason = after.reconciliation_reason
        if reason and reason != before[key].reconciliation_reason and key not in plan.shared:
            logger.warning("inventory pool %s needs reconciliation: %s", key, reason)
    return set(plan.touched)

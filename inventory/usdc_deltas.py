"""The USDC pool's pending fill deltas: fills in parallel without taking turns on USDC.

Every onchain fill moves its symbol's pool and the USDC pool. With the USDC row locked to the
commit, fills of different symbols took turns on it. Instead (issue 23):

- a fill takes the USDC gate shared (PostgreSQL: `pg_advisory_xact_lock_shared`, taken
  before any pool row lock), reads the USDC row and its pending deltas without locking them,
  and inserts its own change as a `UsdcFillDelta` row (append-only, no UPDATE of the row);
- a writer that changes the USDC pool itself (a cash snapshot, an operation, a hedge, the
  rebuild, an operator) takes the gate exclusively (`pools_lock` does it whenever it locks the
  USDC row), then applies the pending deltas to the row in event id order with the
  projection's rule (`onchain_fill_apply`: the same legs, flags and `updated_at` as when the
  fills updated the row one by one), inserts their legs and deletes them (`usdc_fold`);
- every reader of the USDC pool sees the row with the pending deltas applied
  (`pools_current`, `usdc_view`), so nothing reads a row that misses a committed fill.

Why it is exact: the gate's holders in the two modes never overlap, so every fill recorded
under the shared gate has an event id between two exclusive writers' events; folding in event
id order is then the order `rebuild_inventory` replays. A fill's change depends only on the
pool's snapshot block (which only exclusive writers change), never on other fills, except
for whether it would make the pool negative, which the fold decides in id order as the
replay does. Advisory locks queue fairly, so a stream of fills cannot starve an exclusive
writer (a shared row lock could: new share lockers do not wait behind a queued FOR UPDATE).

SQLite has one writer at a time and no advisory locks: the same code runs without the gate.

The pending rows are bounded: a fill that saw `FOLD_AT` or more of them folds after its
commit if the gate is free at that moment, and waits for it once it saw four times as many
(`inventory.services.usdc_deltas_fold`); every exclusive writer folds. A reader's view holds
the committed deltas only: a fill still in progress elsewhere is not in it until it commits.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from django.db import connection

from inventory import rawsql
from inventory.domain.inventory import MutablePool, onchain_fill_apply
from inventory.domain.values import USDC_POOL
from inventory.models import InventoryPool, OnchainFillLeg, UsdcFillDelta

logger = logging.getLogger(__name__)

# pg_advisory_xact_lock key of the USDC gate ("rbaU" as an integer).
USDC_GATE_LOCK = 0x72626155
# A fill that saw at least this many pending deltas folds them after its commit.
FOLD_AT = 32

_GATE_SHARED_SQL = "SELECT pg_advisory_xact_lock_shared(%s)"
_GATE_SQL = "SELECT pg_advisory_xact_lock(%s)"
_FOLD_DUE = "_usdc_fold_due"


def gate_statement(*, shared: bool) -> tuple[str, list[Any]] | None:
    """The statement that takes the USDC gate (None where there is none: SQLite)."""
    if connection.vendor != "postgresql":
        return None
    return (_GATE_SHARED_SQL if shared else _GATE_SQL), [USDC_GATE_LOCK]


def gate_take(*, shared: bool) -> None:
    statement = gate_statement(shared=shared)
    if statement is not None:
        rawsql.fetch(*statement)


_DELTAS_WHERE = '"event_id" IS NOT NULL'
_DELTAS_ORDER = '"inventory_usdcfilldelta"."event_id" ASC'


def deltas_statement() -> tuple[str, list[Any]]:
    """The statement `deltas_read` runs (to prefetch it: `rawsql.prefetch`)."""
    return rawsql.select_statement(UsdcFillDelta, _DELTAS_WHERE, [], order_by=_DELTAS_ORDER)


def deltas_read() -> list[UsdcFillDelta]:
    """The pending deltas in event id order."""
    return rawsql.select_models(UsdcFillDelta, _DELTAS_WHERE, [], order_by=_DELTAS_ORDER)


def _applied(
    row: InventoryPool, deltas: Sequence[UsdcFillDelta]
) -> tuple[MutablePool, list[tuple[str, int, int, Any]]]:
    """The row's pool with `deltas` applied in order, and the legs they leave
    (`OnchainFillLeg` values: pool, event id, block, delta)."""
    pool = MutablePool(row.to_domain())
    legs = []
    for delta in deltas:
        count = len(pool.fills)
        onchain_fill_apply(
            pool, delta.delta, delta.block_number, delta.seen_at, delta.recorded_at, flag=True
        )
        if len(pool.fills) > count:
            block, amount = pool.fills[-1]
            legs.append((USDC_POOL, delta.event_id, block, amount))
    return pool, legs


def usdc_view(row: InventoryPool, deltas: Sequence[UsdcFillDelta]) -> InventoryPool:
    """An unsaved copy of the USDC row with `deltas` applied: what readers see."""
    if not deltas:
        return row
    pool, _ = _applied(row, deltas)
    view = copy.copy(row)
    view._state = copy.copy(row._state)
    view.set_from_domain(pool.domain())
    view.last_event_id = deltas[-1].event_id
    return view


def pools_current(rows: Iterable[InventoryPool]) -> list[InventoryPool]:
    """The pools as they are: the USDC row among `rows` with its pending deltas applied (an
    unsaved copy); the other rows as given. Every reader of the USDC pool goes through it."""
    rows = list(rows)
    if not any(row.key == USDC_POOL for row in rows):
        return rows
    deltas = deltas_read()
    if not deltas:
        return rows
    return [usdc_view(row, deltas) if row.key == USDC_POOL else row for row in rows]


def usdc_fold(row: InventoryPool, deltas: Sequence[UsdcFillDelta] | None = None) -> InventoryPool:
    """Fold the pending deltas into the USDC row (saved), insert the legs they leave and
    delete them. The caller holds the gate exclusively and the row locked (`pools_lock`)."""
    deltas = deltas_read() if deltas is None else deltas
    if not deltas:
        return row
    reason_before = row.reconciliation_reason if row.needs_reconciliation else None
    pool, legs = _applied(row, deltas)
    after = pool.domain()
    fields = row.set_from_domain(after)
    last = deltas[-1].event_id
    if row.last_event_id != last:
        row.last_event_id = last
        fields.append("last_event_id")
    if fields:
        rawsql.update_fields(row, fields)
    rawsql.insert_rows(OnchainFillLeg, ("pool_key", "event_id", "block_number", "delta"), legs)
    rawsql.execute('DELETE FROM "inventory_usdcfilldelta" WHERE "event_id" <= %s', [last])
    if after.reconciliation_reason and after.reconciliation_reason != reason_before:
        logger.warning(
            "inventory pool %s needs reconciliation: %s", USDC_POOL, after.reconciliation_reason
        )
    logger.debug("folded %d pending USDC fill delta(s) up to event #%s", len(deltas), last)
    return row


def deltas_insert(rows: Sequence[tuple[Any, ...]], *, deferred: bool = False) -> None:
    """Insert fills' USDC deltas: (event id or `rawsql.EventRef`, delta, block, seen at,
    recorded at)."""
    rawsql.insert_rows(
        UsdcFillDelta,
        ("event_id", "delta", "block_number", "seen_at", "recorded_at"),
        rows,
        deferred=deferred,
    )


def fold_due(count: int) -> None:
    """A fill saw `count` pending deltas: fold after its commit once there are many."""
    if count >= FOLD_AT:
        connection.__dict__[_FOLD_DUE] = count


def gate_try() -> bool:
    """Take the USDC gate exclusively if no one holds it now (True where there is no gate)."""
    if connection.vendor != "postgresql":
        return True
    rows = rawsql.fetch("SELECT pg_try_advisory_xact_lock(%s)", [USDC_GATE_LOCK])
    return bool(rows and rows[0][0])


def fold_due_take() -> int:
    """How many pending deltas a fill of this connection saw when they were `FOLD_AT` or more
    (0 otherwise; forgotten once asked): outside any transaction the caller then folds them
    (`inventory.services.usdc_deltas_fold`)."""
    count = int(connection.__dict__.pop(_FOLD_DUE, 0))
    return 0 if connection.in_atomic_block else count

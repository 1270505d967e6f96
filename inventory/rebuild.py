"""`rebuild_inventory`: replay the whole log into the inventory pools, fast.

The log is read with one raw cursor in id order, in chunks (a server-side cursor on
PostgreSQL), decoded with the event codec, and folded in memory into one mutable state per
pool; the pools are compared with the stored rows and written once at the end, in the one
transaction that holds every pool row locked. Memory stays flat whatever the log's length.

The fold is the projection's (`inventory.domain.inventory.fold_stored`): each rule is written
once in the domain, and the position events of fills (onchain fills, hedges placed / filled /
failed), nearly all of a long log, change the mutable pool in place through the same
`position_apply` that `InventoryFold.apply` uses on a copy. `reference_fold` drives
`InventoryFold.apply` event by event on immutable pools (the same rules, another holder); a
property test holds the two equal on mixed logs.

Besides the pools it rebuilds the derived state of spec 15.2 and issue 19: each pool's
remembered onchain fill legs (`OnchainFillLeg`: the fills above its last snapshot block, with
their event ids) and the chain head (`ChainHead`: the highest onchain snapshot block).

`--check` (`write=False`) is meant to be independent of the live path: it folds with
`reference_fold` (the same rules, not the projection's in-place driver), and it checks the
log itself from the raw events, without the live path's key lookups: every fill's trade id
(`tx_hash:log_index`) appears in one fill event only and its key is recorded, and no fill's
block is above the highest head seen plus `FILL_BLOCK_MARGIN`. Those are problems of the log
(`LogProblem`): a rebuild cannot fix them, it names them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection, transaction

from inventory.chain_head import fill_block_margin
from inventory.codec import decode_event
from inventory.domain import events as ev
from inventory.domain.inventory import InventoryFold, MutablePool, PoolInventory, fold_stored
from inventory.event_keys import TRADE, trade_key
from inventory.models import ChainHead, Event, EventKey, InventoryPool, OnchainFillLeg
from inventory.projection import pools_lock

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


@dataclass(frozen=True)
class LogProblem:
    """Something wrong in the log itself (a rebuild cannot fix it): `pool` is "(log)"."""

    field: str
    stored: Any
    rebuilt: Any
    pool: str = "(log)"

    def __str__(self) -> str:
        return f"log: {self.field}: {self.stored} ({self.rebuilt})"


# A remembered leg with its fill event: (block, signed amount, event id or None).
Leg = tuple[int, Any, int | None]
_ONCHAIN_SNAPSHOTS = (ev.OnchainEquity, ev.OnchainCash)


class LogFacts:
    """What a fold learns beside the pools: each pool's remembered legs with their event
    ids, the chain head, and (checking) the log's integrity problems."""

    def __init__(self, *, audit: bool = False) -> None:
        self.legs: dict[str, list[Leg]] = {}
        self.head: int | None = None
        self.head_event: int | None = None
        self.audit = audit
        self._trades: dict[str, int] = {}
        self.twice: dict[str, list[int]] = {}
        # Fills whose block was above the head (plus margin) when they were recorded.
        self._above: list[tuple[int, int, str]] = []
        self._margin = fill_block_margin()

    def before(self, event: Any, event_id: int) -> None:
        block = event.block_number if isinstance(event, _ONCHAIN_SNAPSHOTS) else None
        if block is not None and (self.head is None or block > self.head):
            self.head, self.head_event = block, event_id
        if not self.audit or type(event) is not ev.OnChainOrderFilled:
            return
        key = trade_key(event.trade_id)
        first = self._trades.setdefault(key, event_id)
        if first != event_id:
            self.twice.setdefault(key, [first]).append(event_id)
        block = event.block_number
        if block is not None and (self.head is None or block > self.head + self._margin):
            self._above.append((event_id, block, key))

    def after(
        self, key: str, event: Any, event_id: int, count: int, fills: Any, block: int | None
    ) -> None:
        """Follow one pool's legs (`fills`: the domain's, `count` of them before the event)."""
        if type(event) is ev.OnChainOrderFilled:
            if len(fills) > count:
                leg_block, delta = fills[-1]
                self.legs.setdefault(key, []).append((leg_block, delta, event_id))
        elif isinstance(event, _ONCHAIN_SNAPSHOTS):
            legs = self.legs.get(key, [])
            if block is not None:
                legs = [leg for leg in legs if leg[0] > block]
            elif not fills:
                legs = []
            self.legs[key] = legs

    def problems(self) -> list[LogProblem]:
        found = self._unkeyed()
        found += [
            LogProblem(
                "trade recorded twice",
                f"trade {key} in fill events " + ", ".join(f"#{i}" for i in ids),
                "one trade id is one fill: every event after the first counts it again",
            )
            for key, ids in sorted(self.twice.items())
        ]
        if self.head is not None:
            limit = self.head + self._margin
            found.extend(
                LogProblem(
                    "fill above the chain head",
                    f"fill event #{event_id} (trade {key}) at block {block}",
                    f"the highest block seen is {self.head}, plus a margin of "
                    f"{self._margin} (FILL_BLOCK_MARGIN): the chain has not reached it",
                )
                for event_id, block, key in self._above
                if block > limit
            )
        return found

    def _unkeyed(self) -> list[LogProblem]:
        """Fill events whose trade key is not recorded (`EventKey`): a replay of them would
        be recorded as a new fill."""
        if not self.audit or not self._trades:
            return []
        keyed = set(
            EventKey.objects.filter(scope=TRADE).values_list("event_id", flat=True).iterator()
        )
        missing = sorted(
            (event_id, key) for key, event_id in self._trades.items() if event_id not in keyed
        )
        if not missing:
            return []
        shown = ", ".join(f"#{event_id} ({key})" for event_id, key in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        return [
            LogProblem(
                "trade key missing",
                f"fill events {shown}{more}",
                "their trade keys are not recorded: a replay would be counted again",
            )
        ]


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


def _follows_legs(event: Any) -> bool:
    return type(event) is ev.OnChainOrderFilled or isinstance(event, _ONCHAIN_SNAPSHOTS)


def fast_fold(
    rows: Iterable[LogRow], facts: LogFacts | None = None
) -> tuple[dict[str, PoolInventory], dict[str, int]]:
    """Fold stored events (in id order) into pool states; -> (pools, last event id per pool).
    Equal to `reference_fold` on any log. `facts` receives the legs and the head."""
    pools: dict[str, MutablePool] = {}
    last_event: dict[str, int] = {}
    fold = InventoryFold()  # only its operation tracks are used
    for event_id, aggregate_type, aggregate_id, event_type, payload, recorded_at in rows:
        event = decode_event(event_type, payload)
        follow = facts is not None and _follows_legs(event)
        if facts is not None:
            facts.before(event, event_id)
        counts = {key: len(pool.fills) for key, pool in pools.items()} if follow else {}
        for key in fold_stored(pools, fold, aggregate_type, aggregate_id, event, recorded_at):
            last_event[key] = event_id
            if follow:
                pool = pools[key]
                facts.after(  # type: ignore[union-attr]
                    key, event, event_id, counts.get(key, 0), pool.fills, pool.onchain_block
                )
    return {key: pool.domain() for key, pool in pools.items()}, last_event


def reference_fold(
    rows: Iterable[LogRow], facts: LogFacts | None = None
) -> tuple[dict[str, PoolInventory], dict[str, int]]:
    """The projection's pure fold, one `InventoryFold.apply` per event (the definition)."""
    fold = InventoryFold()
    last_event: dict[str, int] = {}
    for event_id, aggregate_type, aggregate_id, event_type, payload, recorded_at in rows:
        event = decode_event(event_type, payload)
        follow = facts is not None and _follows_legs(event)
        if facts is not None:
            facts.before(event, event_id)
        counts = (
            {key: len(pool.onchain_fills_after) for key, pool in fold.pools.items()}
            if follow
            else {}
        )
        for key in fold.apply(aggregate_type, aggregate_id, event, recorded_at):
            last_event[key] = event_id
            if follow:
                pool = fold.pools[key]
                facts.after(  # type: ignore[union-attr]
                    key,
                    event,
                    event_id,
                    counts.get(key, 0),
                    pool.onchain_fills_after,
                    pool.onchain_block,
                )
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


def fold_log(
    *, progress: Progress | None = None, facts: LogFacts | None = None, reference: bool = False
) -> dict[str, InventoryPool]:
    """Replay the whole log (the fast fold, or the pure `reference_fold`); unsaved rows by
    pool key. `facts` receives the legs, the head and (auditing) the log's problems."""
    rows: Iterable[LogRow] = log_rows()
    if progress is not None:
        rows = progress(rows, Event.objects.count())
    return pool_rows(*(reference_fold if reference else fast_fold)(rows, facts))


def _stored_legs() -> dict[str, list[Leg]]:
    legs: dict[str, list[Leg]] = {}
    for key, block, delta, event_id in OnchainFillLeg.objects.order_by("id").values_list(
        "pool_key", "block_number", "delta", "event_id"
    ):
        legs.setdefault(key, []).append((block, delta, event_id))
    return legs


def _legs_text(legs: list[Leg]) -> str:
    shown = ", ".join(
        f"{delta}@{block}" + ("" if event_id is None else f"#{event_id}")
        for block, delta, event_id in legs[:5]
    )
    more = f", ... ({len(legs)} legs)" if len(legs) > 5 else ""
    return f"[{shown}{more}]"


def _derived_differences(facts: LogFacts) -> tuple[list[PoolDifference], dict[str, list[Leg]]]:
    """Legs per pool and the chain head: stored vs rebuilt (legs compared as multisets)."""
    stored = _stored_legs()
    found: list[PoolDifference] = []
    for key in sorted(set(stored) | set(facts.legs)):
        old = sorted(stored.get(key, []), key=lambda leg: (leg[0], leg[2] or 0, str(leg[1])))
        new = sorted(facts.legs.get(key, []), key=lambda leg: (leg[0], leg[2] or 0, str(leg[1])))
        if old != new:
            found.append(PoolDifference(key, "onchain_fill_legs", _legs_text(old), _legs_text(new)))
    head = ChainHead.objects.filter(id=1).values_list("block", flat=True).first()
    if head != facts.head:
        found.append(PoolDifference("(chain)", "head", head, facts.head))
    return found, stored


# --- comparing and writing ---------------------------------------------------------------------


def _derived_write(facts: LogFacts, pools: set[str]) -> None:
    """Store the rebuilt legs of `pools` and the rebuilt chain head (derived state)."""
    legs_pools = sorted(pools - {"(chain)"})
    if legs_pools:
        OnchainFillLeg.objects.filter(pool_key__in=legs_pools).delete()
        OnchainFillLeg.objects.bulk_create(
            OnchainFillLeg(pool_key=key, event_id=event_id, block_number=block, delta=delta)
            for key in legs_pools
            for block, delta, event_id in facts.legs.get(key, [])
        )
    if "(chain)" in pools:
        ChainHead.objects.update_or_create(
            id=1, defaults={"block": facts.head, "event_id": facts.head_event}
        )


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


def inventory_rebuild(*, write: bool, progress: Progress | None = None) -> list[Any]:
    """Replay the log, report every difference from the stored pools, the remembered legs
    and the chain head, and (with `write`) store the rebuilt values in bulk; checking
    (`write=False`), fold with the pure reference fold and also report the log's own
    problems (`LogProblem`). Runs with every pool row locked, in one transaction."""
    with transaction.atomic():
        # Every row locked in key order, the USDC pool's pending fill deltas folded into it
        # first (`inventory.usdc_deltas`): the stored state is then all in the rows.
        stored = pools_lock(InventoryPool.objects.values_list("key", flat=True), create=False)
        facts = LogFacts(audit=not write)
        rebuilt = fold_log(progress=progress, facts=facts, reference=not write)
        differences: list[Any] = []
        for key in sorted(set(stored) | set(rebuilt)):
            target = rebuilt.get(key) or InventoryPool(key=key, kind=InventoryPool.kind_for(key))
            differences.extend(_differences(stored.get(key), target, key))
        derived, _ = _derived_differences(facts)
        if write and derived:
            _derived_write(facts, {d.pool for d in derived})
        differences_to_write = list(differences) if write else []
        differences.extend(derived)
        differences.extend(facts.problems())
        if differences_to_write:
            changed = sorted({d.pool for d in differences_to_write})
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
                for difference in differences_to_write:
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

"""The chain's head as the service last saw it, and the bound it puts on a fill's block.

The service learns the head from the venue poller: a poll reads the Base head
(`eth_blockNumber`), pins every vault read to it and records the onchain snapshots with that
block (`service.poller.onchain_read`). `ChainHead` holds the highest such block, raised in
the transaction that appends the snapshot (derived from the log: `rebuild_inventory` checks
it).

A fill whose block is above the head plus `FILL_BLOCK_MARGIN` (Django setting, default
`DEFAULT_FILL_BLOCK_MARGIN` blocks: fills arrive between polls, so the margin must cover a
poll interval at Base's 2 s blocks) is refused with an `InvalidValue` naming `block_number`:
a block the chain has not reached would be re-applied on top of every later pinned snapshot
(spec 15.2) for ever. A fill without a block is not bounded (it is never remembered above a
snapshot).

While the service has never seen the head (no onchain snapshot pinned to a block was ever
recorded: a new installation before its first poll, which the service runs at start) there
is nothing to bound a fill by, and it is accepted: refusing would lose the fills a trading
side reports in the seconds before the first poll. Such a fill cannot hide: `rebuild_inventory
--check` names every fill above the highest head seen plus the margin, and a drift it causes
against the vault persists across reconciles, which raises an alert and flags the pool
(`service.reconcile`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.conf import settings

from inventory import rawsql
from inventory.domain import events as ev
from inventory.domain.values import InvalidValue

# 10 minutes of Base blocks (2 s): five polls at the default SNAPSHOT_INTERVAL_S of 60 s.
DEFAULT_FILL_BLOCK_MARGIN = 300

_ONCHAIN_SNAPSHOTS = (ev.OnchainEquity, ev.OnchainCash)


def fill_block_margin() -> int:
    margin = int(getattr(settings, "FILL_BLOCK_MARGIN", DEFAULT_FILL_BLOCK_MARGIN))
    if margin < 0:
        raise ValueError(f"FILL_BLOCK_MARGIN={margin}: must be a non-negative number of blocks")
    return margin


class FillBeyondChainHead(InvalidValue):
    """A fill's block is above the chain head the service has seen (plus the margin)."""

    def __init__(self, block: int, head: int, margin: int, trade: str) -> None:
        rule = (
            f"is beyond the chain head: the highest block the service has seen is {head} "
            f"(plus a margin of {margin} blocks, FILL_BLOCK_MARGIN), so the chain has not "
            f"reached block {block} ({trade})"
        )
        self.head = head
        self.margin = margin
        super().__init__("block_number", block, rule)


HEAD_SQL = 'SELECT "block" FROM "inventory_chainhead" WHERE "id" = 1'


def head_read() -> int | None:
    rows = rawsql.fetch(HEAD_SQL, [])
    return None if not rows or rows[0][0] is None else int(rows[0][0])


def _snapshot_block(event: Any) -> int | None:
    if isinstance(event, _ONCHAIN_SNAPSHOTS):
        return event.block_number
    return None


def fills_bound_check(events: Iterable[Any]) -> None:
    """Refuse a batch whose onchain fills carry a block above the head (one read of the head,
    only when a fill carries a block). Snapshots earlier in the same batch count."""
    head: int | None = None
    read = False
    margin = 0
    for event in events:
        block = _snapshot_block(event)
        if block is not None:
            if not read:
                head, read, margin = head_read(), True, fill_block_margin()
            head = block if head is None else max(head, block)
            continue
        if not isinstance(event, ev.OnChainOrderFilled) or event.block_number is None:
            continue
        if not read:
            head, read, margin = head_read(), True, fill_block_margin()
        if head is not None and event.block_number > head + margin:
            trade = f"trade {event.trade_id.tx_hash.lower()}:{event.trade_id.log_index}"
            raise FillBeyondChainHead(event.block_number, head, margin, trade)


def head_raise(stored: Iterable[Any]) -> None:
    """Raise the recorded head to the highest block of the onchain snapshots just stored
    (one UPDATE, only when there is one)."""
    best: tuple[int, int] | None = None
    for item in stored:
        block = _snapshot_block(item.event)
        if block is not None and (best is None or block > best[0]):
            best = (block, item.id)
    if best is None:
        return
    updated = rawsql.execute(
        'UPDATE "inventory_chainhead" SET "block" = %s, "event_id" = %s '
        'WHERE "id" = 1 AND ("block" IS NULL OR "block" < %s)',
        [best[0], best[1], best[0]],
    )
    if not updated and not rawsql.fetch('SELECT 1 FROM "inventory_chainhead" WHERE "id" = 1', []):
        rawsql.execute(
            'INSERT INTO "inventory_chainhead" ("id", "block", "event_id") VALUES (1, %s, %s)',
            list(best),
        )


def head_of_log(rows: Iterable[tuple[int, Any]]) -> tuple[int | None, int | None]:
    """(highest snapshot block, its event id) of decoded (event id, event) pairs."""
    head: int | None = None
    event_id: int | None = None
    for item_id, event in rows:
        block = _snapshot_block(event)
        if block is not None and (head is None or block > head):
            head, event_id = block, item_id
    return head, event_id

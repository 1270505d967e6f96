"""Folding stored events into pools in place: the hot path shared by the projection (every
append) and the replay (`rebuild_inventory`).

`InventoryFold.apply` is the definition: one immutable `PoolInventory` per event and pool.
Here a fill's position events (most of any log) change a `MutablePool` in place; every other
event goes through `apply_event_or_flag` on the pool's immutable form, so the result is
`InventoryFold.apply`'s on any log (property tests: `tests/inventory/test_rebuild_fast.py`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from inventory.domain import events as ev
from inventory.domain.inventory import (
    OFFCHAIN,
    ONCHAIN,
    InventoryError,
    InventoryFold,
    PoolInventory,
    VenueBalance,
    VenueNotObserved,
    _cents_to_usd,
    _mul,
    _onchain_fill_delta,
    affected_pools,
    apply_event_or_flag,
    track_apply,
)
from inventory.domain.values import USDC_POOL, Direction


class MutablePool:
    """Mutable state of one pool during the replay (the fields of `PoolInventory`)."""

    __slots__ = (
        "on",
        "off",
        "last_rebalancing",
        "last_updated",
        "reason",
        "inflight_changed_at",
        "onchain_block",
        "fills",
        "hedges",
        "last_fill_at",
    )

    def __init__(self, pool: PoolInventory) -> None:
        self.load(pool)

    def load(self, pool: PoolInventory) -> None:
        on, off = pool.onchain, pool.offchain
        # [available, inflight] of an observed venue, None when never observed.
        self.on = None if on is None else [on.available, on.inflight]
        self.off = None if off is None else [off.available, off.inflight]
        self.last_rebalancing = pool.last_rebalancing
        self.last_updated = pool.last_updated
        self.reason = pool.reconciliation_reason
        self.inflight_changed_at = pool.inflight_changed_at
        self.onchain_block = pool.onchain_block
        self.fills = list(pool.onchain_fills_after)
        self.hedges = pool.offchain_hedges_pending
        self.last_fill_at = pool.offchain_last_fill_at

    def domain(self) -> PoolInventory:
        on, off = self.on, self.off
        return PoolInventory(
            onchain=None if on is None else VenueBalance(on[0], on[1]),
            offchain=None if off is None else VenueBalance(off[0], off[1]),
            last_rebalancing=self.last_rebalancing,
            last_updated=self.last_updated,
            reconciliation_reason=self.reason,
            inflight_changed_at=self.inflight_changed_at,
            onchain_block=self.onchain_block,
            onchain_fills_after=tuple(self.fills),
            offchain_hedges_pending=self.hedges,
            offchain_last_fill_at=self.last_fill_at,
        )


def _onchain_filled(pool: MutablePool, event: ev.OnChainOrderFilled, key: str) -> None:
    """`_apply_onchain_fill` then `touched`, in place; raises what it raises."""
    block = event.block_number
    if block is not None and pool.onchain_block is not None and block <= pool.onchain_block:
        pool.last_updated = event.seen_at
        return
    delta = _onchain_fill_delta(event, key == USDC_POOL)
    on = pool.on
    if on is None:
        raise VenueNotObserved(ONCHAIN)
    venue = VenueBalance(on[0], on[1])
    venue = venue.add_available(delta) if delta >= 0 else venue.remove_available(-delta)
    on[0] = venue.available
    if block is not None:
        pool.fills.append((block, delta))  # every leg, no limit (O(1) per fill)
    pool.last_updated = event.seen_at


def _offchain_filled(
    pool: MutablePool, event: ev.OffChainOrderFilled, key: str, now: datetime | None
) -> None:
    """`_apply_position` of a hedge fill, in place; raises what it raises."""
    buy = event.direction == Direction.BUY
    if key == USDC_POOL:
        amount = _mul(event.shares_filled, _cents_to_usd(event.price_cents))
        add = not buy
    else:
        amount = event.shares_filled
        add = buy
    # The hedge is no longer pending even when its balances cannot be applied
    # (`inventory._hedge_tracked`).
    pool.hedges = max(0, pool.hedges - 1)
    pool.last_fill_at = now or event.broker_timestamp
    off = pool.off
    if off is None:
        raise VenueNotObserved(OFFCHAIN)
    venue = VenueBalance(off[0], off[1])
    venue = venue.add_available(amount) if add else venue.remove_available(amount)
    off[0] = venue.available
    pool.last_updated = event.broker_timestamp


def position_fast(pool: MutablePool, event: Any, key: str, now: datetime) -> None:
    """A fill's position event on one pool, in place, as `apply_event_or_flag` does it: a
    fact that cannot be applied leaves the values and flags the pool with the same reason."""
    kind = type(event)
    try:
        if kind is ev.OnChainOrderFilled:
            _onchain_filled(pool, event, key)
        elif kind is ev.OffChainOrderFilled:
            _offchain_filled(pool, event, key, now)
        elif kind is ev.OffChainOrderPlaced:
            pool.hedges += 1
            pool.last_updated = event.placed_at
        else:  # OffChainOrderFailed
            pool.hedges = max(0, pool.hedges - 1)
            pool.last_updated = event.failed_at
    except InventoryError as error:
        # `apply_event_or_flag`: pool.flagged(reason).touched(now)
        pool.reason = f"{kind.__name__}: {error}"
        pool.last_updated = now


_EMPTY = PoolInventory()
_TWO_POOL = (
    ev.OnChainOrderFilled,
    ev.OffChainOrderFilled,
    ev.OffChainOrderPlaced,
    ev.OffChainOrderFailed,
)


def fold_stored(
    pools: dict[str, MutablePool],
    fold: InventoryFold,
    aggregate_type: str,
    aggregate_id: str,
    event: Any,
    recorded_at: datetime,
) -> tuple[str, ...]:
    """Apply one stored event to `pools` (missing ones start empty), advancing `fold`'s
    operation tracks; returns the pool keys it touched (`InventoryFold.apply`, in place)."""
    if aggregate_type == ev.POSITION and type(event) in _TWO_POOL:
        # A fill's position events touch the symbol, then USDC (`affected_pools`).
        keys: tuple[str, ...] = (aggregate_id, USDC_POOL)
        for key in keys:
            pool = pools.get(key)
            if pool is None:
                pool = pools[key] = MutablePool(_EMPTY)
            position_fast(pool, event, key, recorded_at)
        return keys
    track = None
    if aggregate_type in ev.OPERATION_EVENT_TYPES:
        track = fold.track_for(aggregate_type, aggregate_id, event)
    keys = affected_pools(aggregate_type, aggregate_id, event, track)
    for key in keys:
        pool = pools.get(key)
        if pool is None:
            pool = pools[key] = MutablePool(_EMPTY)
        pool.load(apply_event_or_flag(pool.domain(), event, track, recorded_at, pool_key=key))
    if track is not None:
        fold.tracks[(aggregate_type, aggregate_id)] = track_apply(track, event)
    return keys

"""The fast replay (`inventory.rebuild.fast_fold`) equals the projection's per-event fold.

Mixed logs hold every event kind that touches a pool: balance snapshots of all four kinds
(pinned to a block or not), onchain fills (with and without a block, some too large for the
balance, some on a symbol never observed), hedges placed / filled / failed, and interleaved
mint, redemption and USDC operations (failures and operator reconciliations included).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inventory.codec import encode_event
from inventory.domain import events as ev
from inventory.domain.values import USDC_POOL, Direction
from inventory.models import InventoryPool
from inventory.rebuild import (
    POOL_FIELDS,
    fast_fold,
    inventory_rebuild,
    log_rows,
    reference_fold,
)
from tests.inventory.projection_helpers import append
from tests.inventory.test_properties import amounts, balances, operations

T0 = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
HASH = "0x" + "12" * 32
SYMBOLS = ("AAPL", "MSFT")

seconds = st.integers(min_value=0, max_value=600)
blocks = st.none() | st.integers(min_value=100, max_value=103)


@st.composite
def snapshot_events(draw):
    key = draw(st.sampled_from([*SYMBOLS, USDC_POOL]))
    value = draw(balances)
    fetched_at = T0 + timedelta(seconds=draw(seconds))
    venue = draw(st.sampled_from(["on", "off"]))
    if key == USDC_POOL:
        if venue == "on":
            return ev.OnchainCash(
                usdc_balance=value, fetched_at=fetched_at, block_number=draw(blocks)
            )
        return ev.OffchainCash(cash_balance=value, fetched_at=fetched_at)
    if venue == "on":
        return ev.OnchainEquity(
            balances={key: value}, fetched_at=fetched_at, block_number=draw(blocks)
        )
    return ev.OffchainEquity(positions={key: value}, fetched_at=fetched_at)


@st.composite
def position_events(draw, index: int):
    at = T0 + timedelta(seconds=draw(seconds))
    direction = draw(st.sampled_from(list(Direction)))
    kind = draw(st.sampled_from(["onchain", "placed", "filled", "failed", "threshold"]))
    if kind == "onchain":
        return ev.OnChainOrderFilled(
            trade_id=ev.TradeId(HASH, index),
            amount=draw(amounts),
            direction=direction,
            price_usdc=draw(amounts),
            block_timestamp=at,
            seen_at=at,
            block_number=draw(blocks),
        )
    if kind == "placed":
        return ev.OffChainOrderPlaced(
            execution_id=index,
            shares=draw(amounts),
            direction=direction,
            broker="alpaca",
            trigger_reason=None,
            placed_at=at,
        )
    if kind == "filled":
        return ev.OffChainOrderFilled(
            execution_id=index,
            shares_filled=draw(amounts),
            direction=direction,
            broker_order_id=f"o-{index}",
            price_cents=draw(st.integers(min_value=1, max_value=40000)),
            broker_timestamp=at,
        )
    if kind == "failed":
        return ev.OffChainOrderFailed(execution_id=index, error="rejected", failed_at=at)
    threshold = ev.ExecutionThreshold(kind=ev.ThresholdKind.SHARES, value=Decimal(1))
    return ev.ThresholdUpdated(old_threshold=threshold, new_threshold=threshold, updated_at=at)


@st.composite
def mixed_logs(draw):
    """[(aggregate_type, aggregate_id, event, recorded_at)] in log order."""
    entries = []
    for index in range(draw(st.integers(min_value=0, max_value=25))):
        if draw(st.integers(min_value=0, max_value=3)) == 0:
            entries.append((ev.SNAPSHOT, "venues", draw(snapshot_events())))
        else:
            symbol = draw(st.sampled_from([*SYMBOLS, "NVDA"]))
            entries.append((ev.POSITION, symbol, draw(position_events(index))))
    operation_entries = draw(operations(with_reconcile=True))
    # Operations interleaved with the rest, each operation's events kept in order.
    slots = draw(
        st.lists(
            st.integers(min_value=0, max_value=len(entries)),
            min_size=len(operation_entries),
            max_size=len(operation_entries),
        )
    )
    slots = sorted(slots)
    merged = []
    for position in range(len(entries) + 1):
        while slots and slots[0] == position:
            slots.pop(0)
            merged.append(operation_entries[len(merged) - position])
        if position < len(entries):
            merged.append(entries[position])
    entries = merged
    log = []
    for position, (aggregate_type, aggregate_id, event) in enumerate(entries):
        recorded_at = T0 + timedelta(seconds=draw(seconds) + position)
        log.append((aggregate_type, aggregate_id, event, recorded_at))
    return log


def pools() -> list[dict]:
    """The stored pools, leaving out a pool still in its initial state: the trigger locks
    (and so creates) the USDC pool for an equity operation's terminal event although the log
    never moves it, and the rebuild, like `--check`, treats such a row as absent."""
    from inventory.selectors import pools_list

    rows = []
    for pool in pools_list():  # as readers see them (USDC with its pending fill deltas)
        pristine = InventoryPool(key=pool.key, kind=InventoryPool.kind_for(pool.key))
        if all(getattr(pool, name) == getattr(pristine, name) for name in POOL_FIELDS):
            continue
        rows.append({name: getattr(pool, name) for name in ("key", "kind", *POOL_FIELDS)})
    return rows


def rows_of(log):
    rows = []
    for event_id, (aggregate_type, aggregate_id, event, recorded_at) in enumerate(log, 1):
        event_type, payload = encode_event(event)
        rows.append((event_id, aggregate_type, aggregate_id, event_type, payload, recorded_at))
    return rows


def same(fast, reference) -> None:
    """Equal to the last digit: `repr` also tells 1.0 from 1.00."""
    fast_pools, fast_last = fast
    reference_pools, reference_last = reference
    assert fast_last == reference_last
    assert sorted(fast_pools) == sorted(reference_pools)
    for key, pool in reference_pools.items():
        assert repr(fast_pools[key]) == repr(pool), key


@given(log=mixed_logs())
@settings(max_examples=100, deadline=None)
def test_fast_fold_equals_the_per_event_fold_on_mixed_logs(log):
    rows = rows_of(log)
    same(fast_fold(rows), reference_fold(rows))


def test_fast_fold_keeps_the_same_fill_legs_past_the_limit_and_the_same_flags():
    fills = [
        (
            ev.POSITION,
            "AAPL",
            ev.OnChainOrderFilled(
                trade_id=ev.TradeId(HASH, n),
                amount=Decimal("0.5"),
                direction=Direction.BUY if n % 3 else Direction.SELL,
                price_usdc=Decimal("187.25"),
                block_timestamp=T0,
                seen_at=T0 + timedelta(seconds=n),
                block_number=200 + n,
            ),
            T0 + timedelta(seconds=n),
        )
        for n in range(256 + 40)
    ]
    snapshots = [
        (
            ev.SNAPSHOT,
            "venues",
            ev.OnchainEquity(balances={"AAPL": Decimal(1)}, fetched_at=T0, block_number=150),
            T0,
        ),
        (
            ev.SNAPSHOT,
            "venues",
            ev.OnchainCash(usdc_balance=Decimal(100), fetched_at=T0, block_number=150),
            T0,
        ),
    ]
    late = (
        ev.SNAPSHOT,
        "venues",
        ev.OnchainEquity(
            balances={"AAPL": Decimal(3)}, fetched_at=T0 + timedelta(hours=1), block_number=210
        ),
        T0 + timedelta(hours=1),
    )
    rows = rows_of([*snapshots, *fills, late])
    fast, reference = fast_fold(rows), reference_fold(rows)
    same(fast, reference)
    pools = fast[0]
    # Every leg above block 210 is re-applied and kept (blocks 211..495): none dropped
    # (issue 19: only the last 256 were kept, blocks 240..495).
    assert len(pools["AAPL"].onchain_fills_after) == 285
    assert pools[USDC_POOL].needs_reconciliation  # USDC ran out: flagged, as the projection does


@pytest.mark.django_db
@given(log=mixed_logs())
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_fast_rebuild_equals_the_incremental_projection_in_the_database(log):
    with transaction.atomic():
        for _, aggregate_id, event, recorded_at in log:
            append(aggregate_id, event, now=recorded_at)
        before = pools()
        assert inventory_rebuild(write=False) == []
        rows = list(log_rows(chunk_size=3))  # several chunks
        same(fast_fold(rows), reference_fold(rows))
        InventoryPool.objects.all().delete()
        assert inventory_rebuild(write=True) != []
        assert pools() == before
        assert inventory_rebuild(write=False) == []
        transaction.set_rollback(True)


@pytest.mark.django_db
def test_a_rejected_mint_rebuilds_to_the_same_pools_though_the_trigger_created_usdc():
    """The case PostgreSQL's run drew: the terminal MintRejected makes the trigger lock (and so
    create) an untouched USDC pool; rebuilt from the log, only the pools it moves come back."""
    at = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
    append(
        "op-0",
        ev.MintRequested(
            symbol="AAPL", quantity=Decimal(1), wallet="0x" + "ab" * 20, requested_at=at
        ),
        now=at,
    )
    append("op-0", ev.MintRejected(reason="x", rejected_at=at), now=at + timedelta(seconds=1))
    assert InventoryPool.objects.filter(key=USDC_POOL).exists()
    before = pools()
    assert inventory_rebuild(write=False) == []
    InventoryPool.objects.all().delete()
    inventory_rebuild(write=True)
    assert pools() == before
    assert [p["key"] for p in before] == ["AAPL"]

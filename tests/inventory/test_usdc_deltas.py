"""Fills record their USDC change as pending deltas (`inventory.usdc_deltas`), in parallel.

Fills of different symbols no longer take turns on the USDC row: each takes the USDC gate
shared and inserts its delta; a writer that changes USDC itself takes the gate exclusively and
folds the deltas in event id order. Proved here on PostgreSQL by concurrent writers whose
order is forced (a writer paused inside its transaction at a chosen statement, the other
observed blocked on a lock or finished, never by sleeping), and on both databases by the
replay (`inventory_rebuild`) and by what readers see.
"""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
from django.db import connection

from inventory.domain.values import USDC_POOL
from inventory.models import Event, InventoryPool, UsdcFillDelta
from inventory.selectors import pool_get, pools_list, pools_needing_reconciliation
from inventory.services import (
    fill_record_onchain,
    inventory_rebuild,
    snapshot_record,
    usdc_deltas_fold,
)
from inventory.usdc_deltas import FOLD_AT
from service.health import health_report
from tests.inventory.test_lock_order import WAIT_S, Writer, lock_waiters, wait_until
from tests.service.flows import observe, onchain_fill, tick

D = Decimal


def postgres_only() -> None:
    if connection.vendor != "postgresql":
        pytest.skip(
            "concurrent writers on their own connections: PostgreSQL only (SQLite "
            "has one writer at a time; the same code runs there without the gate)"
        )


def raw_usdc() -> InventoryPool:
    """The stored USDC row itself, without its pending deltas."""
    return InventoryPool.objects.get(key=USDC_POOL)


def usdc() -> InventoryPool:
    row = pool_get(key=USDC_POOL)
    assert row is not None
    return row


def seed(usdc_onchain: str = "100000") -> None:
    observe(
        "AAPL", onchain="1000", offchain="1000", usdc_onchain=usdc_onchain, usdc_offchain="1000"
    )
    observe("MSFT", onchain="1000", offchain="1000")
    observe("NVDA", onchain="1000", offchain="1000")
    observe("TSLA", onchain="1000", offchain="1000")


# --- what readers see ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_readers_see_the_pending_deltas_the_row_does_not_hold_yet():
    seed()
    onchain_fill("AAPL", "2", price="10")  # -20 USDC
    onchain_fill("MSFT", "3", direction="Sell", price="5")  # +15 USDC
    last = Event.objects.order_by("-id").first()

    assert raw_usdc().onchain_available == D(100000)  # the row is not written by fills
    assert UsdcFillDelta.objects.count() == 2
    assert usdc().onchain_available == D(99995)
    assert usdc().last_event_id == last.id
    assert {row.key: row.onchain_available for row in pools_list()}[USDC_POOL] == D(99995)
    assert inventory_rebuild(write=False) == []  # the replay agrees (it folds first)
    assert raw_usdc().onchain_available == D(99995)
    assert not UsdcFillDelta.objects.exists()


@pytest.mark.django_db
def test_a_pending_delta_that_cannot_be_applied_flags_the_pool_for_every_reader():
    seed(usdc_onchain="10")
    onchain_fill("AAPL", "3", price="5")  # needs 15 of the 10 USDC onchain

    assert not raw_usdc().needs_reconciliation
    flagged = usdc()
    assert flagged.needs_reconciliation
    assert flagged.reconciliation_reason.startswith("OnChainOrderFilled: insufficient available")
    assert flagged.onchain_available == D(10)  # values unchanged, as the projection does
    assert [row.key for row in pools_needing_reconciliation()] == [USDC_POOL]
    check = {c.name: c for c in health_report().checks}["pools_needing_reconciliation"]
    assert not check.ok and USDC_POOL in check.detail
    assert inventory_rebuild(write=False) == []


@pytest.mark.django_db
def test_a_writer_that_changes_usdc_folds_the_deltas_first_in_event_id_order():
    seed()
    onchain_fill("AAPL", "1", price="7")
    onchain_fill("MSFT", "1", price="3")
    snapshot_record(fetched_at=tick(), offchain_cash=D(2000))  # changes the USDC pool itself

    assert not UsdcFillDelta.objects.exists()
    row = raw_usdc()
    assert (row.onchain_available, row.offchain_available) == (D(99990), D(2000))
    assert inventory_rebuild(write=False) == []


@pytest.mark.django_db(transaction=True)
def test_the_pending_deltas_stay_bounded_a_fill_that_saw_many_folds_them():
    """Outside any transaction, as the API records fills: a fill that saw `FOLD_AT` pending
    deltas folds them after its commit."""
    seed()
    for n in range(FOLD_AT + 2):
        onchain_fill("AAPL", "1", direction="Buy" if n % 2 else "Sell", price="2")
    assert UsdcFillDelta.objects.count() < FOLD_AT
    assert raw_usdc().last_event_id is not None and raw_usdc().onchain_available != D(100000)
    assert usdc().onchain_available == D(100000)  # as many buys as sells of 2 USDC
    assert inventory_rebuild(write=False) == []


# --- concurrent writers on PostgreSQL -----------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_fill_of_another_symbol_does_not_wait_for_a_fill_in_progress():
    """The defect: every fill locked the USDC row to its commit, so fills of all symbols
    took turns. Now a fill paused inside its transaction (delta written, not committed)
    does not hold up a fill of another symbol."""
    postgres_only()
    seed()
    first = Writer(lambda: onchain_fill("AAPL", "1", price="10"), pause_after="INSERT INTO")
    first.start()
    assert first.paused.wait(WAIT_S)
    second = Writer(lambda: onchain_fill("MSFT", "1", price="4"))
    second.start()
    second.join(WAIT_S)  # finishes while the first is still inside its transaction
    assert not second.is_alive() and second.error is None
    assert first.is_alive() and first.paused.is_set()
    assert usdc().onchain_available == D(99996)  # the committed fill only

    first.release()
    first.join(WAIT_S)
    assert first.error is None
    assert first.result[0].id < second.result[0].id
    assert usdc().onchain_available == D(99986)
    assert inventory_rebuild(write=False) == []


@pytest.mark.django_db(transaction=True)
def test_a_fold_waits_for_a_fill_in_progress_and_folds_in_event_id_order_not_commit_order():
    """Fill 1 (lower event id) is paused before its commit; fill 2 (higher id) commits; a
    writer folding the deltas must wait for fill 1 and apply 1 then 2. The order matters:
    with 100 USDC, fill 1 spends 80 (applies) and fill 2 spends 50 (cannot: flags), as the
    replay of the log in id order decides; in commit order it would be the other way round."""
    postgres_only()
    seed(usdc_onchain="100")
    first = Writer(lambda: onchain_fill("AAPL", "8", price="10"), pause_after="INSERT INTO")
    first.start()
    assert first.paused.wait(WAIT_S)
    onchain_fill("MSFT", "5", price="10")  # commits first, with the higher event id
    fold = Writer(usdc_deltas_fold)
    fold.start()
    wait_until(lambda: lock_waiters() >= 1, "the fold to wait for the fill in progress")
    assert fold.is_alive()

    first.release()
    for writer in (first, fold):
        writer.join(WAIT_S)
        assert not writer.is_alive() and writer.error is None

    assert not UsdcFillDelta.objects.exists()
    row = raw_usdc()
    assert row.onchain_available == D(20)
    assert row.needs_reconciliation
    assert (
        "requested 50" in row.reconciliation_reason and "available 20" in row.reconciliation_reason
    )
    assert inventory_rebuild(write=False) == []


@pytest.mark.django_db(transaction=True)
def test_a_fill_waits_while_a_snapshot_holds_the_usdc_pool_and_its_delta_lands_after_it():
    """A cash snapshot holds the USDC gate exclusively (paused after its event insert); a
    fill's delta is written only once the snapshot commits, so it counts on top of it."""
    postgres_only()
    seed()
    before = onchain_fill("AAPL", "1", price="10")  # pending before the snapshot: folded by it
    snapshot = Writer(
        lambda: snapshot_record(fetched_at=tick(), onchain_cash=D(5000)),
        pause_after='INSERT INTO "inventory_event"',
    )
    snapshot.start()
    assert snapshot.paused.wait(WAIT_S)
    fill = Writer(lambda: onchain_fill("NVDA", "2", price="25"))
    fill.start()
    wait_until(lambda: lock_waiters() >= 1, "the fill to wait for the snapshot")
    assert fill.is_alive()
    # The fill before the snapshot is still pending to anyone else: the snapshot folded it,
    # uncommitted. The waiting fill has written nothing.
    assert list(UsdcFillDelta.objects.values_list("event_id", flat=True)) == [before[0].id]

    snapshot.release()
    for writer in (snapshot, fill):
        writer.join(WAIT_S)
        assert not writer.is_alive() and writer.error is None

    assert snapshot.result[0].id < fill.result[0].id
    assert raw_usdc().onchain_available == D(5000)
    assert UsdcFillDelta.objects.get().event_id == fill.result[0].id
    assert usdc().onchain_available == D(4950)
    assert inventory_rebuild(write=False) == []


@pytest.mark.django_db(transaction=True)
def test_many_fills_from_several_threads_replay_exactly():
    """Four threads record fills of four symbols at once (with block numbers above the
    snapshot, and a cash snapshot in between): the USDC pool is the replay of the log."""
    postgres_only()
    snapshot_record(
        fetched_at=tick(),
        onchain_equity={s: D(1000) for s in ("AAPL", "MSFT", "NVDA", "TSLA")},
        offchain_equity={s: D(1000) for s in ("AAPL", "MSFT", "NVDA", "TSLA")},
        onchain_cash=D(100000),
        offchain_cash=D(1000),
        onchain_block=100,
    )
    start = threading.Barrier(5, timeout=WAIT_S)
    per_thread = 40

    def fills(symbol: str, seed_: int) -> None:
        start.wait()
        for n in range(per_thread):
            fill_record_onchain(
                symbol=symbol,
                tx_hash="0x" + f"{seed_:08x}{n:056x}",
                log_index=0,
                amount=D("0.5") + D(n % 7) / 100,
                direction="Buy" if (n + seed_) % 3 else "Sell",
                price_usdc=D("12.34"),
                block_timestamp=tick(),
                block_number=101 + n,
            )
        if seed_ == 0:
            snapshot_record(fetched_at=tick(), offchain_cash=D(1500))

    writers = [
        Writer(lambda s=symbol, k=k: fills(s, k))
        for k, symbol in enumerate(("AAPL", "MSFT", "NVDA", "TSLA"))
    ]
    for writer in writers:
        writer.start()
    start.wait()
    for writer in writers:
        writer.join(WAIT_S * 2)
        assert not writer.is_alive() and writer.error is None

    fills_recorded = Event.objects.filter(event_type__endswith="::OnChainOrderFilled").count()
    assert fills_recorded == 4 * per_thread
    assert inventory_rebuild(write=False) == []
    assert not UsdcFillDelta.objects.exists()  # the check folded them, and still agrees
    assert inventory_rebuild(write=False) == []


@pytest.mark.django_db(transaction=True)
def test_a_fill_that_saw_many_deltas_folds_only_when_the_gate_is_free():
    """After its commit a fill that saw `FOLD_AT` deltas folds them without waiting: while
    another fill is inside its transaction it leaves them (that fill, or the next, folds)."""
    postgres_only()
    seed()
    onchain_fill("MSFT", "1", price="3")
    busy = Writer(lambda: onchain_fill("AAPL", "1", price="10"), pause_after="INSERT INTO")
    busy.start()
    assert busy.paused.wait(WAIT_S)
    assert usdc_deltas_fold(wait=False) is False  # returned at once: the gate is held
    assert UsdcFillDelta.objects.count() == 1
    busy.release()
    busy.join(WAIT_S)
    assert not busy.is_alive() and busy.error is None
    assert usdc_deltas_fold(wait=False) is True
    assert not UsdcFillDelta.objects.exists()
    assert raw_usdc().onchain_available == D(99987)
    assert inventory_rebuild(write=False) == []

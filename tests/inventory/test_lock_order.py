"""Writers lock every pool they need once, up front, in key order, before inserting.

So for any two events that touch a common pool, id order is application order (the stored
pools equal a replay of the log), and writers never deadlock. The interleavings are forced on
PostgreSQL: one writer is paused at a chosen statement (Django's `execute_wrapper`) while
another writes, and the test waits for the second to block on a lock (`pg_stat_activity`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext

from inventory.domain import events as ev
from inventory.models import InventoryPool
from inventory.services import inventory_rebuild, snapshot_record
from inventory.store import in_retried_transaction
from tests.service.flows import (
    active,
    append,
    enable,
    mint_accepted,
    mint_requested,
    observe,
    onchain_fill,
    pool,
    register,
    tick,
    tokens_received,
)

D = Decimal
WAIT_S = 60


def postgres_only() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("concurrent writers and row locks: PostgreSQL only (SQLite serialises)")


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def lock_waiters() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0]


class Writer(threading.Thread):
    """Runs `work` on its own connection; with `pause_after`, stops right after the first
    statement starting with it (inside its transaction) until `release()`."""

    def __init__(self, work: Callable[[], Any], pause_after: str | None = None) -> None:
        super().__init__(daemon=True)
        self.work = work
        self.pause_after = pause_after
        self.paused = threading.Event()
        self._release = threading.Event()
        self.error: BaseException | None = None
        self.result: Any = None

    def _wrapper(self, execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if self.pause_after and sql.startswith(self.pause_after) and not self.paused.is_set():
            self.paused.set()
            self._release.wait(WAIT_S)
        return result

    def run(self) -> None:
        try:
            with connections["default"].execute_wrapper(self._wrapper):
                self.result = self.work()
        except BaseException as error:  # noqa: BLE001 - reported by the test
            self.error = error
        finally:
            connections["default"].close()

    def release(self) -> None:
        self._release.set()


def _finish(*writers: Writer) -> None:
    for writer in writers:
        writer.release()
    for writer in writers:
        writer.join(WAIT_S)
        assert not writer.is_alive()
    errors = [w.error for w in writers if w.error is not None]
    assert errors == []


@pytest.mark.django_db(transaction=True)
def test_a_snapshot_paused_after_its_insert_while_a_fill_appends_still_replays_exactly():
    postgres_only()
    observe("AAPL", onchain="10", offchain="10", usdc_onchain="1000", usdc_offchain="1000")
    snapshot = Writer(
        lambda: snapshot_record(fetched_at=tick(), onchain_cash=D(5000)),
        pause_after='INSERT INTO "inventory_event"',
    )
    snapshot.start()
    assert snapshot.paused.wait(WAIT_S)
    fill = Writer(lambda: onchain_fill("AAPL", "1", price="100"))
    fill.start()
    # The fill either waits for the snapshot's pool locks or (the defect) goes ahead of it.
    wait_until(lambda: not fill.is_alive() or lock_waiters() >= 1, "the fill to block or end")

    _finish(snapshot, fill)

    assert snapshot.result[0].id < fill.result[0].id
    assert pool("USDC").onchain_available == D(4900)  # the snapshot, then the fill
    assert inventory_rebuild(write=False) == []


@pytest.mark.django_db(transaction=True)
def test_a_terminal_event_and_a_fill_of_a_symbol_created_after_usdc_never_deadlock(settings):
    postgres_only()
    enable(settings)
    observe(usdc_onchain="500", usdc_offchain="500")  # the USDC row first: the lower key id
    register("AAPL")
    observe("AAPL", onchain="20", offchain="80")
    operation = active("AAPL")
    assert operation is not None
    assert pool("USDC").pk < pool("AAPL").pk
    append(ev.MINT, operation.aggregate_id, mint_requested(operation))
    append(ev.MINT, operation.aggregate_id, mint_accepted(operation))
    append(ev.MINT, operation.aggregate_id, tokens_received())
    completion = Writer(
        lambda: append(ev.MINT, operation.aggregate_id, ev.MintCompleted(completed_at=tick())),
        pause_after='UPDATE "inventory_inventorypool"',
    )
    completion.start()
    assert completion.paused.wait(WAIT_S)
    fill = Writer(lambda: onchain_fill("AAPL", "1"))
    fill.start()
    wait_until(lambda: not fill.is_alive() or lock_waiters() >= 1, "the fill to block or end")

    _finish(completion, fill)

    operation.refresh_from_db()
    assert operation.status == "completed"
    assert inventory_rebuild(write=False) == []


@pytest.mark.django_db(transaction=True)
def test_a_transaction_aborted_as_a_deadlock_is_retried_to_completion():
    postgres_only()
    observe("AAPL", onchain="1", offchain="1", usdc_onchain="1", usdc_offchain="1")
    first_locked = threading.Barrier(2, timeout=WAIT_S)
    attempts = {"x": 0, "y": 0}

    def crossing(name: str, first: str, second: str) -> Callable[[], str]:
        def work() -> str:
            attempts[name] += 1
            InventoryPool.objects.select_for_update().get(key=first)
            if attempts[name] == 1:
                first_locked.wait()
            InventoryPool.objects.select_for_update().get(key=second)
            return name

        return lambda: in_retried_transaction(work, what=f"test/{name}")

    x = Writer(crossing("x", "AAPL", "USDC"))
    y = Writer(crossing("y", "USDC", "AAPL"))
    x.start()
    y.start()

    _finish(x, y)

    assert (x.result, y.result) == ("x", "y")
    assert sorted(attempts.values()) == [1, 2]  # PostgreSQL aborted one; it was run again


@pytest.mark.django_db
def test_an_append_locks_its_pools_once_before_it_inserts_and_the_trigger_locks_nothing_more(
    settings,
):
    enable(settings)
    observe(usdc_onchain="500", usdc_offchain="500")
    register("AAPL")
    observe("AAPL", onchain="20", offchain="80")
    operation = active("AAPL")
    append(ev.MINT, operation.aggregate_id, mint_requested(operation))
    append(ev.MINT, operation.aggregate_id, mint_accepted(operation))
    append(ev.MINT, operation.aggregate_id, tokens_received())

    with CaptureQueriesContext(connection) as queries, transaction.atomic():
        append(ev.MINT, operation.aggregate_id, ev.MintCompleted(completed_at=tick()))

    sqls = [q["sql"] for q in queries]
    locks = [
        i
        for i, sql in enumerate(sqls)
        if sql.startswith("SELECT")
        and 'FROM "inventory_inventorypool"' in sql
        and 'ORDER BY "inventory_inventorypool"."key"' in sql
    ]
    inserts = [i for i, sql in enumerate(sqls) if sql.startswith('INSERT INTO "inventory_event"')]
    assert len(locks) == 1 and len(inserts) == 1
    assert locks[0] < inserts[0]
    assert "AAPL" in sqls[locks[0]] and "USDC" in sqls[locks[0]]  # the ended mint re-checks USDC
    if connection.vendor == "postgresql":
        assert "FOR UPDATE" in sqls[locks[0]]

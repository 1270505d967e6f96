"""Balance snapshots (B1) and fills through the services, into the projection."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection

from inventory.domain import events as ev
from inventory.domain import position
from inventory.domain.values import USDC_POOL, Direction, InvalidValue
from inventory.models import Event, InventoryPool
from inventory.services import fill_record_offchain, fill_record_onchain, snapshot_record
from inventory.store import aggregate_execute
from tests.inventory.projection_helpers import append, mint_accepted, mint_requested, pool_read

pytestmark = pytest.mark.django_db

D = Decimal
T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
HASH = "0x" + "ef" * 32


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def amounts(key: str) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    row = pool_read(key)
    return (
        row.onchain_available,
        row.onchain_inflight,
        row.offchain_available,
        row.offchain_inflight,
    )


def seed(fetched_at: datetime = T0) -> list:
    return snapshot_record(
        fetched_at=fetched_at,
        onchain_equity={"AAPL": D(10)},
        offchain_equity={"AAPL": D(20)},
        onchain_cash=D("1000.5"),
        offchain_cash=D(2000),
        now=fetched_at,
    )


# --- snapshots -------------------------------------------------------------------------------


def test_snapshot_record_appends_one_event_per_kind_and_sets_pools():
    stored = seed()
    assert [s.event.variant() for s in stored] == [
        "OnchainEquity",
        "OffchainEquity",
        "OnchainCash",
        "OffchainCash",
    ]
    assert {s.aggregate_id for s in stored} == {"venues"}
    assert [s.sequence for s in stored] == [1, 2, 3, 4]
    assert amounts("AAPL") == (D(10), 0, D(20), 0)
    assert amounts(USDC_POOL) == (D("1000.5"), 0, D(2000), 0)


def test_later_snapshots_continue_the_sequence_and_replace_available():
    seed()
    stored = snapshot_record(fetched_at=at(5), onchain_equity={"AAPL": D("11.25")})
    assert stored[0].sequence == 5
    assert amounts("AAPL") == (D("11.25"), 0, D(20), 0)


def test_stale_snapshot_is_ignored_but_other_kinds_still_recorded():
    seed(at(10))
    stored = snapshot_record(fetched_at=at(5), onchain_equity={"AAPL": D(99)}, onchain_cash=D(1))
    assert stored == []
    assert Event.objects.count() == 4
    assert amounts("AAPL") == (D(10), 0, D(20), 0)


def test_stale_kind_is_skipped_while_a_new_kind_is_recorded():
    snapshot_record(fetched_at=at(10), onchain_equity={"AAPL": D(10)})
    stored = snapshot_record(
        fetched_at=at(5), onchain_equity={"AAPL": D(1)}, offchain_equity={"AAPL": D(7)}
    )
    assert [s.event.variant() for s in stored] == ["OffchainEquity"]
    assert amounts("AAPL") == (D(10), 0, D(7), 0)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"onchain_cash": D(-1)}, "usdc_balance"),
        ({"offchain_cash": 1.5}, "cash_balance"),
        ({"onchain_equity": {"AAPL": D("-0.1")}}, "balances[AAPL]"),
        ({"offchain_equity": {"": D(1)}}, "symbol"),
        ({"offchain_equity": {"USDC": D(1)}}, "symbol"),
        ({"onchain_cash": D(1), "fetched_at": datetime(2026, 1, 1)}, "fetched_at"),  # noqa: DTZ001
        ({}, "snapshot"),
    ],
)
def test_invalid_snapshot_is_refused_and_nothing_written(kwargs, field):
    kwargs.setdefault("fetched_at", T0)
    seed_first = {"onchain_cash": D(5), "fetched_at": at(-1)}
    snapshot_record(**seed_first)
    with pytest.raises(InvalidValue) as error:
        snapshot_record(**kwargs)
    assert error.value.field == field
    assert Event.objects.count() == 1


def test_snapshot_while_inflight_is_recorded_but_not_applied():
    seed()
    append("m-1", mint_requested("AAPL", "5"), mint_accepted())
    stored = snapshot_record(fetched_at=at(1), offchain_equity={"AAPL": D(15)})
    assert len(stored) == 1
    assert amounts("AAPL") == (D(10), 0, D(15), D(5))  # 20 - 5 moved; snapshot not applied


# --- fills -------------------------------------------------------------------------------------


def onchain(**overrides):
    kwargs = {
        "symbol": "AAPL",
        "tx_hash": HASH,
        "log_index": 4,
        "amount": D("1.5"),
        "direction": "Buy",
        "price_usdc": D("200.1"),
        "block_timestamp": T0,
        "now": at(1),
    }
    kwargs.update(overrides)
    return fill_record_onchain(**kwargs)


def test_first_onchain_fill_initializes_the_position_and_moves_both_pools():
    seed()
    stored = onchain()
    assert [s.event.variant() for s in stored] == ["OnChainOrderFilled"]
    variants = list(
        Event.objects.filter(aggregate_type=ev.POSITION, aggregate_id="AAPL").values_list(
            "event_type", flat=True
        )
    )
    assert variants == ["PositionEvent::Initialized", "PositionEvent::OnChainOrderFilled"]
    assert amounts("AAPL") == (D("11.5"), 0, D(20), 0)
    assert amounts(USDC_POOL) == (D("1000.5") - D("300.15"), 0, D(2000), 0)


def test_same_trade_id_is_recorded_once():
    seed()
    onchain()
    assert onchain() == []
    assert amounts("AAPL")[0] == D("11.5")
    assert onchain(log_index=5, direction=Direction.SELL)[0].event.direction is Direction.SELL
    assert amounts("AAPL")[0] == D(10)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"symbol": ""}, "symbol"),
        ({"symbol": "USDC"}, "symbol"),
        ({"amount": D(0)}, "amount"),
        ({"amount": D("-1")}, "amount"),
        ({"amount": 1.5}, "amount"),
        ({"direction": "Hold"}, "direction"),
        ({"price_usdc": D(0)}, "price_usdc"),
        ({"price_usdc": "200"}, "price_usdc"),
        ({"tx_hash": "0x12"}, "tx_hash"),
        ({"log_index": -1}, "log_index"),
        ({"block_timestamp": datetime(2026, 1, 1)}, "block_timestamp"),  # noqa: DTZ001
    ],
)
def test_invalid_onchain_fill_is_refused_and_nothing_written(overrides, field):
    with pytest.raises(InvalidValue) as error:
        onchain(**overrides)
    assert error.value.field == field
    assert not Event.objects.exists()
    assert not InventoryPool.objects.exists()


def test_offchain_fill_completes_the_pending_hedge_and_moves_cash():
    seed()
    onchain(amount=D(3), direction="Buy", price_usdc=D(1))
    aggregate_execute(
        spec=position.SPEC,
        aggregate_id="AAPL",
        command=position.PlaceOffChainOrder(
            execution_id=7, shares=D(3), direction=Direction.SELL, broker="alpaca"
        ),
        now=at(2),
    )
    stored = fill_record_offchain(
        symbol="AAPL",
        execution_id=7,
        shares_filled=D(3),
        direction="Sell",
        broker_order_id="b-1",
        price_cents=20012,
        broker_timestamp=at(3),
    )
    assert [s.event.variant() for s in stored] == ["OffChainOrderFilled"]
    assert amounts("AAPL") == (D(13), 0, D(17), 0)
    assert amounts(USDC_POOL) == (D("997.5"), 0, D(2000) + D("600.36"), 0)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"shares_filled": D(0)}, "shares_filled"),
        ({"price_cents": -1}, "price_cents"),
        ({"price_cents": 1.5}, "price_cents"),
        ({"direction": "buy"}, "direction"),
        ({"broker_order_id": ""}, "broker_order_id"),
        ({"symbol": "a b"}, "symbol"),
    ],
)
def test_invalid_offchain_fill_is_refused_and_nothing_written(overrides, field):
    kwargs = {
        "symbol": "AAPL",
        "execution_id": 1,
        "shares_filled": D(1),
        "direction": "Buy",
        "broker_order_id": "b",
        "price_cents": 100,
        "broker_timestamp": T0,
    }
    kwargs.update(overrides)
    with pytest.raises(InvalidValue) as error:
        fill_record_offchain(**kwargs)
    assert error.value.field == field
    assert not Event.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_concurrent_deliveries_of_one_trade_record_it_once():
    seed()
    barrier = threading.Barrier(3)
    errors: list[BaseException] = []

    def deliver() -> None:
        try:
            barrier.wait(timeout=10)
            onchain()
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    fills = Event.objects.filter(event_type=ev.OnChainOrderFilled.event_type_name())
    assert fills.count() == 1
    assert amounts("AAPL")[0] == D("11.5")

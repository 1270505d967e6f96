"""Batches of onchain fills: one transaction, same results as one at a time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inventory.domain import events as ev
from inventory.models import Event
from inventory.services import (
    BatchInvalid,
    FillConflict,
    FillStatus,
    OnchainFill,
    fill_record_onchain,
    fills_record_batch,
    inventory_rebuild,
    snapshot_record,
)
from tests.inventory.projection_helpers import pool_read, pools_read

D = Decimal
T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
NOW = T0 + timedelta(minutes=5)


def tx(n: int) -> str:
    return "0x" + f"{n:064x}"


def fill(n: int, symbol: str = "AAPL", **overrides) -> OnchainFill:
    values = {
        "symbol": symbol,
        "tx_hash": tx(n),
        "log_index": 0,
        "amount": D("1.5"),
        "direction": "Buy",
        "price_usdc": D("200.1"),
        "block_timestamp": T0,
    }
    values.update(overrides)
    return OnchainFill(**values)


def seed() -> None:
    snapshot_record(
        fetched_at=T0,
        onchain_equity={"AAPL": D(100), "MSFT": D(100)},
        offchain_equity={"AAPL": D(100), "MSFT": D(100)},
        onchain_cash=D(100000),
        offchain_cash=D(100000),
        now=T0,
    )


def log_rows() -> list[tuple]:
    return list(
        Event.objects.order_by("id").values_list(
            "aggregate_type", "aggregate_id", "sequence", "event_type", "payload"
        )
    )


def pool_rows() -> list[dict]:
    """The pools as readers see them (USDC with its pending fill deltas applied)."""
    return [dict(zip(_POOL_FIELDS, values, strict=True)) for values in pools_read(*_POOL_FIELDS)]


_POOL_FIELDS = (
    "key",
    "onchain_available",
    "onchain_inflight",
    "offchain_available",
    "offchain_inflight",
    "onchain_observed",
    "offchain_observed",
    "needs_reconciliation",
    "reconciliation_reason",
    "updated_at",
)


@pytest.mark.django_db
def test_a_batch_records_every_fill_and_moves_the_pools_once_per_fill():
    seed()
    results = fills_record_batch(
        fills=[fill(1), fill(2, "MSFT", direction="Sell"), fill(3)], now=NOW
    )

    assert [(r.index, r.symbol, r.status) for r in results] == [
        (0, "AAPL", FillStatus.RECORDED),
        (1, "MSFT", FillStatus.RECORDED),
        (2, "AAPL", FillStatus.RECORDED),
    ]
    assert [[s.event.variant() for s in r.events] for r in results] == [
        ["OnChainOrderFilled"],
        ["OnChainOrderFilled"],
        ["OnChainOrderFilled"],
    ]
    assert pool_read("AAPL").onchain_available == D(103)
    assert pool_read("MSFT").onchain_available == D("98.5")
    usdc = pool_read("USDC").onchain_available
    assert usdc == D(100000) - 2 * D("1.5") * D("200.1") + D("1.5") * D("200.1")
    assert inventory_rebuild(write=False) == []


@pytest.mark.django_db
def test_a_repeated_trade_in_the_batch_or_in_the_log_is_a_duplicate_and_written_once():
    seed()
    fills_record_batch(fills=[fill(1)], now=NOW)
    before = Event.objects.count()

    results = fills_record_batch(fills=[fill(1), fill(2), fill(2)], now=NOW)

    assert [r.status for r in results] == [
        FillStatus.DUPLICATE,
        FillStatus.RECORDED,
        FillStatus.DUPLICATE,
    ]
    assert Event.objects.count() == before + 1
    assert [r.events for r in results if r.status is FillStatus.DUPLICATE] == [[], []]


@pytest.mark.django_db
def test_a_trade_id_with_different_content_refuses_the_whole_batch():
    seed()
    fills_record_batch(fills=[fill(1)], now=NOW)
    before = log_rows()

    with pytest.raises(FillConflict) as refused:
        fills_record_batch(fills=[fill(2), fill(1, amount=D(7))], now=NOW)

    assert refused.value.field == "fills[1].trade_id"
    assert log_rows() == before
    with pytest.raises(FillConflict):
        fills_record_batch(fills=[fill(3), fill(3, direction="Sell")], now=NOW)
    assert log_rows() == before


@pytest.mark.django_db
def test_a_single_fill_with_a_known_trade_id_and_different_content_is_a_conflict():
    seed()
    fill_record_onchain(**_kwargs(fill(1)), now=NOW)

    assert fill_record_onchain(**_kwargs(fill(1)), now=NOW) == []
    with pytest.raises(FillConflict) as refused:
        fill_record_onchain(**_kwargs(fill(1, price_usdc=D(1))), now=NOW)
    assert refused.value.field == "trade_id"


@pytest.mark.django_db
def test_invalid_fills_refuse_the_batch_naming_each_one_and_write_nothing():
    seed()
    before = log_rows()

    with pytest.raises(BatchInvalid) as refused:
        fills_record_batch(
            fills=[fill(1), fill(2, amount=D(-1)), fill(3, tx_hash="0x12"), fill(4)], now=NOW
        )

    assert [(index, error.field) for index, error in refused.value.errors] == [
        (1, "amount"),
        (2, "tx_hash"),
    ]
    assert refused.value.field == "fills[1].amount"
    assert log_rows() == before


def _kwargs(f: OnchainFill) -> dict:
    return {
        "symbol": f.symbol,
        "tx_hash": f.tx_hash,
        "log_index": f.log_index,
        "amount": f.amount,
        "direction": f.direction,
        "price_usdc": f.price_usdc,
        "block_timestamp": f.block_timestamp,
    }


fills_strategy = st.lists(
    st.builds(
        fill,
        n=st.integers(min_value=1, max_value=6),
        symbol=st.sampled_from(["AAPL", "MSFT", "NVDA"]),
        amount=st.decimals(min_value=D("0.001"), max_value=D(50), places=3),
        direction=st.sampled_from(["Buy", "Sell"]),
        log_index=st.integers(min_value=0, max_value=1),
        # The same day, the day before (a neighbouring day of the trade key) and three days
        # before (another day): a repeated trade id is a duplicate, a conflict or a new fill.
        block_timestamp=st.sampled_from([T0, T0 - timedelta(hours=20), T0 - timedelta(days=3)]),
    ),
    min_size=1,
    max_size=12,
)


def _record_one_by_one(fills: list[OnchainFill]) -> list[FillStatus]:
    statuses = []
    for f in fills:
        try:
            stored = fill_record_onchain(**_kwargs(f), now=NOW)
        except FillConflict:
            return statuses + [None]
        statuses.append(FillStatus.RECORDED if stored else FillStatus.DUPLICATE)
    return statuses


@pytest.mark.django_db
@given(fills=fills_strategy, cut=st.integers(min_value=0, max_value=12))
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_a_batch_leaves_the_same_log_and_pools_as_the_fills_one_by_one(fills, cut):
    """Any sequence of fills (repeats included), recorded as a prefix one by one and the rest
    as one batch, or entirely one by one: identical logs (ids aside) and pools."""
    with transaction.atomic():
        seed()
        expected = _record_one_by_one(fills)
        one_by_one = (log_rows(), pool_rows())
        transaction.set_rollback(True)
    with transaction.atomic():
        seed()
        head, tail = fills[:cut], fills[cut:]
        statuses = _record_one_by_one(head)
        if None not in statuses and tail:
            try:
                results = fills_record_batch(fills=tail, now=NOW)
            except FillConflict:
                statuses.append(None)
            else:
                statuses.extend(r.status for r in results)
        batched = (log_rows(), pool_rows())
        transaction.set_rollback(True)
    if None in expected:
        # A conflict refuses the batch it is in, so only the statuses up to it compare.
        assert None in statuses
        return
    assert statuses == expected
    assert batched == one_by_one
    assert all(
        row[3] in {ev.OnChainOrderFilled.event_type_name(), ev.Initialized.event_type_name()}
        or row[0] == ev.SNAPSHOT
        for row in batched[0]
    )

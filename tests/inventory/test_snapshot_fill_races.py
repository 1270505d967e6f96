"""Spec 15.2: a balance snapshot and a fill never count the same trade twice.

Onchain: every read of a poll is pinned to one block, recorded with the snapshot; a fill
carries its block; a fill leg at or below the pool's snapshot block is already inside it. A
snapshot pinned below a fill already applied keeps that fill. Offchain: a snapshot does not
overwrite a symbol (or cash) while a hedge for it is pending or was filled after the read
began. Each race in both orders; the log replays to the same pools (`inventory_rebuild`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from inventory.domain import position
from inventory.domain.values import USDC_POOL, Direction
from inventory.models import OnchainFillLeg
from inventory.services import (
    fill_record_offchain,
    fill_record_onchain,
    inventory_rebuild,
    snapshot_record,
)
from inventory.store import aggregate_execute
from tests.inventory.projection_helpers import pool_read

pytestmark = pytest.mark.django_db

D = Decimal
T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def onchain_available(key: str) -> Decimal:
    return pool_read(key).onchain_available


def offchain_available(key: str) -> Decimal:
    return pool_read(key).offchain_available


def seed() -> None:
    snapshot_record(
        fetched_at=T0,
        onchain_equity={"AAPL": D(10)},
        onchain_cash=D(1000),
        onchain_block=100,
        offchain_equity={"AAPL": D(20)},
        offchain_cash=D(2000),
        now=T0,
    )


def buy_onchain(*, block: int, tx: str = "ab", amount: str = "2", price: str = "150") -> None:
    """We buy `amount` AAPL onchain at `price` (AAPL vault +amount, USDC vault -cost)."""
    fill_record_onchain(
        symbol="AAPL",
        tx_hash="0x" + tx * 32,
        log_index=0,
        amount=D(amount),
        direction="Buy",
        price_usdc=D(price),
        block_timestamp=at(block),
        block_number=block,
        now=at(block),
    )


def snapshot_onchain(*, block: int, aapl: str, usdc: str, fetched: int) -> None:
    snapshot_record(
        fetched_at=at(fetched),
        onchain_equity={"AAPL": D(aapl)},
        onchain_cash=D(usdc),
        onchain_block=block,
        now=at(fetched),
    )


def assert_rebuild_matches() -> None:
    assert inventory_rebuild(write=False) == []


# --- onchain ------------------------------------------------------------------------------------


def test_fill_then_snapshot_containing_it_counts_the_trade_once():
    seed()
    buy_onchain(block=105)
    assert (onchain_available("AAPL"), onchain_available(USDC_POOL)) == (D(12), D(700))
    # The vault read at block 106 contains the fill: it sets the balances, nothing is added.
    snapshot_onchain(block=106, aapl="12", usdc="700", fetched=110)
    assert (onchain_available("AAPL"), onchain_available(USDC_POOL)) == (D(12), D(700))
    assert_rebuild_matches()


def test_snapshot_containing_a_fill_then_its_report_does_not_apply_it_again():
    seed()
    # The vault read at block 106 already holds the fill of block 105 ...
    snapshot_onchain(block=106, aapl="12", usdc="700", fetched=106)
    # ... whose report arrives afterwards: both legs are at or below the snapshot block.
    buy_onchain(block=105)
    assert (onchain_available("AAPL"), onchain_available(USDC_POOL)) == (D(12), D(700))
    # A fill at exactly the snapshot block is inside it too.
    buy_onchain(block=106, tx="cd")
    assert (onchain_available("AAPL"), onchain_available(USDC_POOL)) == (D(12), D(700))
    assert_rebuild_matches()


def test_fill_above_the_snapshot_block_is_applied():
    seed()
    snapshot_onchain(block=106, aapl="12", usdc="700", fetched=106)
    buy_onchain(block=107)
    assert (onchain_available("AAPL"), onchain_available(USDC_POOL)) == (D(14), D(400))
    assert_rebuild_matches()


def test_snapshot_read_below_an_applied_fill_keeps_the_fill():
    seed()
    # The poll pinned block 104 and read 10 / 1000; before it was recorded, the fill of block
    # 105 was reported and applied. The snapshot must not erase it.
    buy_onchain(block=105)
    snapshot_onchain(block=104, aapl="10", usdc="1000", fetched=104)
    assert (onchain_available("AAPL"), onchain_available(USDC_POOL)) == (D(12), D(700))
    # The next poll (block 108, containing the fill) settles on the vault's truth.
    snapshot_onchain(block=108, aapl="12", usdc="700", fetched=112)
    assert (onchain_available("AAPL"), onchain_available(USDC_POOL)) == (D(12), D(700))
    pool = pool_read("AAPL")
    assert pool.onchain_block == 108
    assert not OnchainFillLeg.objects.filter(pool_key="AAPL").exists()
    assert_rebuild_matches()


def test_snapshot_pinned_below_the_pools_snapshot_block_is_not_taken():
    seed()
    snapshot_onchain(block=110, aapl="12", usdc="700", fetched=110)
    snapshot_onchain(block=109, aapl="99", usdc="99", fetched=111)
    assert (onchain_available("AAPL"), onchain_available(USDC_POOL)) == (D(12), D(700))


def test_fill_without_a_block_number_is_always_applied():
    seed()
    fill_record_onchain(
        symbol="AAPL",
        tx_hash="0x" + "ee" * 32,
        log_index=3,
        amount=D(1),
        direction="Sell",
        price_usdc=D(100),
        block_timestamp=at(1),
        now=at(1),
    )
    assert (onchain_available("AAPL"), onchain_available(USDC_POOL)) == (D(9), D(1100))


# --- offchain -----------------------------------------------------------------------------------


def place_hedge(*, execution_id: int = 7, shares: str = "3", now: int = 0) -> None:
    aggregate_execute(
        spec=position.SPEC,
        aggregate_id="AAPL",
        command=position.PlaceOffChainOrder(
            execution_id=execution_id,
            shares=D(shares),
            direction=Direction.BUY,
            broker="alpaca",
        ),
        now=at(now),
    )


def fill_hedge(*, execution_id: int = 7, shares: str = "3", now: int = 0) -> None:
    fill_record_offchain(
        symbol="AAPL",
        execution_id=execution_id,
        shares_filled=D(shares),
        direction="Buy",
        broker_order_id=f"order-{execution_id}",
        price_cents=10000,
        broker_timestamp=at(now),
        now=at(now),
    )


def seed_with_position() -> None:
    seed()
    # The hedge needs an onchain position to hedge (a sell onchain of 3 shares).
    fill_record_onchain(
        symbol="AAPL",
        tx_hash="0x" + "01" * 32,
        log_index=0,
        amount=D(3),
        direction="Sell",
        price_usdc=D(100),
        block_timestamp=at(1),
        block_number=101,
        now=at(1),
    )


def snapshot_offchain(*, aapl: str, cash: str, fetched: int, recorded: int) -> None:
    snapshot_record(
        fetched_at=at(fetched),
        offchain_equity={"AAPL": D(aapl)},
        offchain_cash=D(cash),
        now=at(recorded),
    )


def test_offchain_snapshot_while_a_hedge_is_pending_is_not_taken():
    seed_with_position()
    place_hedge(now=10)
    # Alpaca already executed the hedge (23 shares, cash 1700) but the fill is not reported.
    snapshot_offchain(aapl="23", cash="1700", fetched=11, recorded=12)
    assert (offchain_available("AAPL"), offchain_available(USDC_POOL)) == (D(20), D(2000))
    fill_hedge(now=13)
    assert (offchain_available("AAPL"), offchain_available(USDC_POOL)) == (D(23), D(1700))
    assert_rebuild_matches()


def test_offchain_snapshot_read_before_a_fill_recorded_after_the_read_began_is_not_taken():
    seed_with_position()
    place_hedge(now=10)
    # The read begins at 11 (before Alpaca executed: it will see 20 / 2000) ...
    # ... the fill is reported and recorded at 12 ...
    fill_hedge(now=12)
    assert (offchain_available("AAPL"), offchain_available(USDC_POOL)) == (D(23), D(1700))
    # ... and the snapshot fetched at 11 is recorded at 13: it must not erase the fill.
    snapshot_offchain(aapl="20", cash="2000", fetched=11, recorded=13)
    assert (offchain_available("AAPL"), offchain_available(USDC_POOL)) == (D(23), D(1700))
    assert_rebuild_matches()


def test_offchain_snapshot_read_after_the_fill_was_recorded_is_taken():
    seed_with_position()
    place_hedge(now=10)
    fill_hedge(now=12)
    snapshot_offchain(aapl="23.5", cash="1690", fetched=14, recorded=15)
    assert (offchain_available("AAPL"), offchain_available(USDC_POOL)) == (D("23.5"), D(1690))
    assert_rebuild_matches()


def test_failed_hedge_stops_holding_back_snapshots():
    seed_with_position()
    place_hedge(now=10)
    aggregate_execute(
        spec=position.SPEC,
        aggregate_id="AAPL",
        command=position.FailOffChainOrder(execution_id=7, error="rejected"),
        now=at(11),
    )
    snapshot_offchain(aapl="21", cash="1999", fetched=12, recorded=12)
    assert (offchain_available("AAPL"), offchain_available(USDC_POOL)) == (D(21), D(1999))
    assert_rebuild_matches()


def test_a_hedge_fill_that_flags_the_pool_is_no_longer_pending_and_the_next_snapshot_corrects():
    """A hedge buy costing more than the projection holds at Alpaca (real cash can be higher:
    a withdrawal counted inflight that Alpaca has not taken yet) cannot be applied to USDC and
    flags the pool; the hedge is still over. Counted pending for good, it refused every
    offchain snapshot after it, and the projected cash drifted from Alpaca's all day (the
    chaos day of CI: projected 10,671.15, observed 8,792.33)."""
    seed_with_position()
    place_hedge(now=10)
    fill_record_offchain(
        symbol="AAPL",
        execution_id=7,
        shares_filled=D(3),
        direction="Buy",
        broker_order_id="order-7",
        price_cents=100_000,  # 3 x 1,000.00 > the 2,000 projected
        broker_timestamp=at(12),
        now=at(12),
    )
    usdc = pool_read(USDC_POOL)
    assert usdc.needs_reconciliation and "OffChainOrderFilled" in usdc.reconciliation_reason
    assert (usdc.offchain_available, usdc.offchain_hedges_pending) == (D(2000), 0)
    aapl = pool_read("AAPL")
    assert (aapl.offchain_available, aapl.offchain_hedges_pending) == (D(23), 0)
    # Alpaca's cash read after the fill is taken and clears the flag.
    snapshot_offchain(aapl="23", cash="1500", fetched=14, recorded=15)
    usdc.refresh_from_db()
    assert (usdc.offchain_available, usdc.needs_reconciliation) == (D(1500), False)
    assert_rebuild_matches()

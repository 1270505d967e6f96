"""Position aggregate (spec 4.1 and the section-13 Position checklist). Pure, no database."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from inventory.domain import events as ev
from inventory.domain import position as pos
from inventory.domain.events import TradeId, TriggerReason
from inventory.domain.lifecycle import Lifecycle, LifecycleError, LifecycleErrorKind
from inventory.domain.values import Direction, InvalidValue

T0 = datetime(2025, 1, 2, 14, 30, tzinfo=UTC)
TX = "0x" + "ab" * 32


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def run(state, command, now=T0):
    """Handle a command and apply its events; returns (new state, events)."""
    events = pos.handle(state, command, now)
    for event in events:
        state = pos.apply(state, event)
    return state, events


def initialized(threshold=Decimal("1")) -> Lifecycle:
    state, _ = run(
        Lifecycle.uninitialized(), pos.Initialize("AAPL", pos.shares_threshold(threshold))
    )
    return state


def fill(amount: str, direction: Direction, log_index: int = 0) -> pos.AcknowledgeOnChainFill:
    return pos.AcknowledgeOnChainFill(
        trade_id=TradeId(TX, log_index),
        amount=Decimal(amount),
        direction=direction,
        price_usdc=Decimal("150.25"),
        block_timestamp=T0,
    )


def with_fills(*fills: tuple[str, Direction], threshold: str = "1") -> Lifecycle:
    state = initialized(Decimal(threshold))
    for index, (amount, direction) in enumerate(fills):
        state, _ = run(state, fill(amount, direction, index), at(index + 1))
    return state


def place(execution_id=7, shares="1", direction=Direction.SELL) -> pos.PlaceOffChainOrder:
    return pos.PlaceOffChainOrder(execution_id, Decimal(shares), direction, "alpaca")


def complete(execution_id=7, shares="1", direction=Direction.SELL) -> pos.CompleteOffChainOrder:
    return pos.CompleteOffChainOrder(
        execution_id=execution_id,
        shares_filled=Decimal(shares),
        direction=direction,
        broker_order_id="ord-1",
        price_cents=15025,
        broker_timestamp=at(30),
    )


# --- initialize, threshold, accumulation ----------------------------------------------------


def test_initialize_from_uninitialized_sets_symbol_threshold_and_zero_net():
    state, events = run(
        Lifecycle.uninitialized(), pos.Initialize("AAPL", pos.shares_threshold(Decimal(2)))
    )
    assert events == [ev.Initialized("AAPL", pos.shares_threshold(Decimal(2)), T0)]
    position = state.live_value()
    assert position == pos.Position(
        symbol="AAPL",
        net=Decimal(0),
        accumulated_long=Decimal(0),
        accumulated_short=Decimal(0),
        pending_execution_id=None,
        threshold=pos.shares_threshold(Decimal(2)),
        last_updated=T0,
    )


def test_initialize_on_live_position_is_already_initialized():
    with pytest.raises(pos.AlreadyInitialized) as caught:
        pos.handle(initialized(), pos.Initialize("AAPL", pos.shares_threshold(Decimal(1))), T0)
    assert caught.value.symbol == "AAPL"
    assert "AAPL" in str(caught.value)


@pytest.mark.parametrize(
    ("command", "field"),
    [
        (pos.Initialize("", pos.shares_threshold(Decimal(1))), "symbol"),
        (pos.Initialize("AAPL", pos.shares_threshold(Decimal(0))), "threshold.value"),
        (pos.Initialize("AAPL", pos.shares_threshold(Decimal(-1))), "threshold.value"),
        (pos.Initialize("AAPL", pos.dollar_threshold(Decimal("NaN"))), "threshold.value"),
    ],
)
def test_initialize_rejects_invalid_values_naming_the_field(command, field):
    with pytest.raises(InvalidValue) as caught:
        pos.handle(Lifecycle.uninitialized(), command, T0)
    assert caught.value.field == field


def test_commands_before_initialize_are_refused_as_not_initialized():
    with pytest.raises(pos.NotInitialized):
        pos.handle(Lifecycle.uninitialized(), fill("1", Direction.BUY), T0)


def test_onchain_buy_increases_net_and_accumulated_long():
    position = with_fills(("1.5", Direction.BUY), ("0.25", Direction.BUY)).live_value()
    assert position.net == Decimal("1.75")
    assert position.accumulated_long == Decimal("1.75")
    assert position.accumulated_short == Decimal(0)
    assert position.last_updated == at(2)


def test_onchain_sell_decreases_net_and_increases_accumulated_short():
    position = with_fills(("2", Direction.BUY), ("3.5", Direction.SELL)).live_value()
    assert position.net == Decimal("-1.5")
    assert position.accumulated_long == Decimal("2")
    assert position.accumulated_short == Decimal("3.5")


def test_acknowledge_onchain_fill_records_seen_at_now_and_the_fill():
    _, events = run(initialized(), fill("0.5", Direction.SELL), at(5))
    assert events == [
        ev.OnChainOrderFilled(
            trade_id=TradeId(TX, 0),
            amount=Decimal("0.5"),
            direction=Direction.SELL,
            price_usdc=Decimal("150.25"),
            block_timestamp=T0,
            seen_at=at(5),
        )
    ]


@pytest.mark.parametrize(
    ("amount", "price", "field"),
    [("0", "1", "amount"), ("-1", "1", "amount"), ("1", "0", "price_usdc"), ("Inf", "1", "amount")],
)
def test_acknowledge_onchain_fill_rejects_non_positive_values(amount, price, field):
    command = pos.AcknowledgeOnChainFill(
        TradeId(TX, 0), Decimal(amount), Direction.BUY, Decimal(price), T0
    )
    with pytest.raises(InvalidValue) as caught:
        pos.handle(initialized(), command, T0)
    assert caught.value.field == field


def test_acknowledge_onchain_fill_rejects_malformed_trade_tx_hash():
    command = pos.AcknowledgeOnChainFill(
        TradeId("0x12", 0), Decimal(1), Direction.BUY, Decimal(1), T0
    )
    with pytest.raises(InvalidValue) as caught:
        pos.handle(initialized(), command, T0)
    assert caught.value.field == "trade_id.tx_hash"


# --- placing, completing, failing offchain orders -------------------------------------------


def test_shares_threshold_triggers_execution():
    state = with_fills(("1.2", Direction.BUY))
    state, events = run(state, place(shares="1"), at(10))
    assert events == [
        ev.OffChainOrderPlaced(
            execution_id=7,
            shares=Decimal(1),
            direction=Direction.SELL,
            broker="alpaca",
            trigger_reason=TriggerReason(Decimal("1.2"), Decimal("1")),
            placed_at=at(10),
        )
    ]
    assert state.live_value().pending_execution_id == 7


def test_shares_threshold_uses_absolute_net_for_short_positions():
    state = with_fills(("1", Direction.SELL))
    _, events = run(state, place(direction=Direction.BUY))
    assert events[0].trigger_reason == TriggerReason(Decimal("1"), Decimal("1"))


def test_place_offchain_order_below_threshold_fails():
    state = with_fills(("0.99", Direction.BUY))
    with pytest.raises(pos.ThresholdNotMet) as caught:
        pos.handle(state, place(), T0)
    assert caught.value.net_position == Decimal("0.99")
    assert caught.value.threshold == pos.shares_threshold(Decimal(1))
    assert "0.99" in str(caught.value)


def test_dollar_value_threshold_never_triggers_in_this_era():
    state, _ = run(
        Lifecycle.uninitialized(), pos.Initialize("AAPL", pos.dollar_threshold(Decimal(1)))
    )
    state, _ = run(state, fill("100", Direction.BUY))
    with pytest.raises(pos.ThresholdNotMet):
        pos.handle(state, place(), T0)


def test_pending_execution_prevents_new_execution():
    state, _ = run(with_fills(("5", Direction.BUY)), place(execution_id=7))
    with pytest.raises(pos.PendingExecution) as caught:
        pos.handle(state, place(execution_id=8), T0)
    assert caught.value.pending_execution_id == 7


def test_complete_offchain_order_clears_pending():
    state, _ = run(with_fills(("5", Direction.BUY)), place())
    state, events = run(state, complete())
    assert events == [ev.OffChainOrderFilled(7, Decimal(1), Direction.SELL, "ord-1", 15025, at(30))]
    assert state.live_value().pending_execution_id is None
    assert state.live_value().last_updated == at(30)


def test_fail_offchain_order_clears_pending():
    state, _ = run(with_fills(("5", Direction.BUY)), place())
    state, events = run(state, pos.FailOffChainOrder(7, "broker down"), at(40))
    assert events == [ev.OffChainOrderFailed(7, "broker down", at(40))]
    position = state.live_value()
    assert position.pending_execution_id is None
    assert position.net == Decimal(5)
    # A new execution may be placed once the pending one failed.
    run(state, place(execution_id=8))


def test_offchain_sell_decreases_net():
    state, _ = run(with_fills(("2.5", Direction.BUY)), place(shares="2"))
    state, _ = run(state, complete(shares="2", direction=Direction.SELL))
    assert state.live_value().net == Decimal("0.5")


def test_offchain_buy_increases_net():
    state, _ = run(with_fills(("2.5", Direction.SELL)), place(shares="2", direction=Direction.BUY))
    state, _ = run(state, complete(shares="2", direction=Direction.BUY))
    assert state.live_value().net == Decimal("-0.5")


@pytest.mark.parametrize(
    "command", [complete(), pos.FailOffChainOrder(7, "x")], ids=["complete", "fail"]
)
def test_complete_or_fail_without_pending_is_no_pending_execution(command):
    with pytest.raises(pos.NoPendingExecution):
        pos.handle(with_fills(("5", Direction.BUY)), command, T0)


@pytest.mark.parametrize(
    "command", [complete(execution_id=9), pos.FailOffChainOrder(9, "x")], ids=["complete", "fail"]
)
def test_complete_or_fail_with_other_id_is_execution_id_mismatch(command):
    state, _ = run(with_fills(("5", Direction.BUY)), place(execution_id=7))
    with pytest.raises(pos.ExecutionIdMismatch) as caught:
        pos.handle(state, command, T0)
    assert (caught.value.expected, caught.value.actual) == (7, 9)
    assert "expected=7" in str(caught.value) and "actual=9" in str(caught.value)


def test_update_threshold_creates_audit_trail():
    state, events = run(
        initialized(Decimal(1)), pos.UpdateThreshold(pos.shares_threshold(Decimal(3))), at(3)
    )
    assert events == [
        ev.ThresholdUpdated(
            old_threshold=pos.shares_threshold(Decimal(1)),
            new_threshold=pos.shares_threshold(Decimal(3)),
            updated_at=at(3),
        )
    ]
    assert state.live_value().threshold == pos.shares_threshold(Decimal(3))


# --- apply: every transition ------------------------------------------------------------------


def live(**changes) -> Lifecycle:
    base = pos.Position(
        "AAPL", Decimal(0), Decimal(0), Decimal(0), None, pos.shares_threshold(Decimal(1)), T0
    )
    fields = {**base.__dict__, **changes}
    return Lifecycle.live(pos.Position(**fields))


@pytest.mark.parametrize(
    ("before", "event", "after"),
    [
        (
            {},
            ev.OnChainOrderFilled(TradeId(TX, 0), Decimal(2), Direction.BUY, Decimal(1), T0, at(1)),
            {"net": Decimal(2), "accumulated_long": Decimal(2), "last_updated": at(1)},
        ),
        (
            {"net": Decimal(1)},
            ev.OnChainOrderFilled(
                TradeId(TX, 0), Decimal(2), Direction.SELL, Decimal(1), T0, at(1)
            ),
            {"net": Decimal(-1), "accumulated_short": Decimal(2), "last_updated": at(1)},
        ),
        (
            {},
            ev.OffChainOrderPlaced(3, Decimal(1), Direction.SELL, "alpaca", None, at(2)),
            {
                "pending_execution_id": 3,
                "pending_shares": Decimal(1),
                "pending_direction": Direction.SELL,
                "last_updated": at(2),
            },
        ),
        (
            {"net": Decimal(2), "pending_execution_id": 3},
            ev.OffChainOrderFilled(3, Decimal(1), Direction.SELL, "o", 100, at(3)),
            {"net": Decimal(1), "pending_execution_id": None, "last_updated": at(3)},
        ),
        (
            {"net": Decimal(-2), "pending_execution_id": 3},
            ev.OffChainOrderFilled(3, Decimal(1), Direction.BUY, "o", 100, at(3)),
            {"net": Decimal(-1), "pending_execution_id": None, "last_updated": at(3)},
        ),
        (
            {"pending_execution_id": 3},
            ev.OffChainOrderFailed(3, "boom", at(4)),
            {"pending_execution_id": None, "last_updated": at(4)},
        ),
        (
            {},
            ev.ThresholdUpdated(
                pos.shares_threshold(Decimal(1)), pos.dollar_threshold(Decimal(500)), at(5)
            ),
            {"threshold": pos.dollar_threshold(Decimal(500)), "last_updated": at(5)},
        ),
    ],
    ids=[
        "onchain-buy",
        "onchain-sell",
        "placed",
        "offchain-sell",
        "offchain-buy",
        "failed",
        "threshold",
    ],
)
def test_apply_transition(before, event, after):
    expected = live(**{**before, **after})
    assert pos.apply(live(**before), event) == expected


def test_apply_order_placed_while_pending_corrupts_with_mismatch():
    state = live(pending_execution_id=3)
    result = pos.apply(
        state, ev.OffChainOrderPlaced(4, Decimal(1), Direction.SELL, "a", None, at(1))
    )
    assert result.is_failed
    assert result.error.kind is LifecycleErrorKind.MISMATCH
    assert result.last_valid_state == state.value


def test_apply_order_filled_with_other_id_corrupts_with_mismatch():
    state = live(pending_execution_id=3)
    result = pos.apply(state, ev.OffChainOrderFilled(4, Decimal(1), Direction.SELL, "o", 1, at(1)))
    assert result.is_failed and result.error.kind is LifecycleErrorKind.MISMATCH


def test_apply_genesis_on_live_position_corrupts_and_then_refuses_every_command():
    state = pos.apply(initialized(), ev.Initialized("AAPL", pos.shares_threshold(Decimal(1)), T0))
    assert state.is_failed and state.error.kind is LifecycleErrorKind.MISMATCH
    with pytest.raises(LifecycleError):
        pos.handle(state, fill("1", Direction.BUY), T0)
    with pytest.raises(LifecycleError):
        pos.handle(state, pos.Initialize("AAPL", pos.shares_threshold(Decimal(1))), T0)


def test_apply_non_genesis_event_on_uninitialized_corrupts():
    result = pos.apply(Lifecycle.uninitialized(), ev.OffChainOrderFailed(1, "x", T0))
    assert result.is_failed and result.last_valid_state is None


# --- timestamps -----------------------------------------------------------------------------

TH = pos.shares_threshold(Decimal(1))


@pytest.mark.parametrize(
    "event",
    [
        ev.Migrated("AAPL", Decimal(0), Decimal(0), Decimal(0), TH, at(1)),
        ev.Initialized("AAPL", TH, at(1)),
        ev.OnChainOrderFilled(TradeId(TX, 0), Decimal(1), Direction.BUY, Decimal(1), T0, at(1)),
        ev.OffChainOrderPlaced(1, Decimal(1), Direction.BUY, "a", None, at(1)),
        ev.OffChainOrderFilled(1, Decimal(1), Direction.BUY, "o", 1, at(1)),
        ev.OffChainOrderFailed(1, "x", at(1)),
        ev.ThresholdUpdated(TH, TH, at(1)),
    ],
    ids=[
        "timestamp_returns_migrated_at",
        "timestamp_returns_initialized_at",
        "timestamp_returns_seen_at",
        "timestamp_returns_placed_at",
        "timestamp_returns_broker_timestamp",
        "timestamp_returns_failed_at",
        "timestamp_returns_updated_at",
    ],
)
def test_timestamp_returns_the_event_time_field(event):
    assert event.timestamp() == at(1)


# --- migrate --------------------------------------------------------------------------------


def migrate(net="3.5", long="10", short="6.5") -> pos.Migrate:
    return pos.Migrate("AAPL", Decimal(net), Decimal(long), Decimal(short), TH)


def test_migrate_from_uninitialized_restores_net_and_accumulators():
    state, events = run(Lifecycle.uninitialized(), migrate(), at(1))
    assert events == [ev.Migrated("AAPL", Decimal("3.5"), Decimal(10), Decimal("6.5"), TH, at(1))]
    assert state.live_value() == pos.Position(
        "AAPL", Decimal("3.5"), Decimal(10), Decimal("6.5"), None, TH, at(1)
    )


def test_migrate_on_live_position_is_refused():
    with pytest.raises(pos.AlreadyInitialized):
        pos.handle(initialized(), migrate(), T0)


def test_migrated_position_accepts_fills_and_orders():
    state, _ = run(Lifecycle.uninitialized(), migrate(net="-1"))
    state, _ = run(state, fill("0.5", Direction.SELL))
    assert state.live_value().net == Decimal("-1.5")
    assert state.live_value().accumulated_short == Decimal(7)
    run(state, place(direction=Direction.BUY))


@pytest.mark.parametrize(
    ("command", "field"),
    [
        (migrate(long="-1"), "accumulated_long"),
        (migrate(short="-0.1"), "accumulated_short"),
        (migrate(net="NaN"), "net_position"),
    ],
)
def test_migrate_rejects_invalid_values(command, field):
    with pytest.raises(InvalidValue) as caught:
        pos.handle(Lifecycle.uninitialized(), command, T0)
    assert caught.value.field == field


def test_handle_refuses_naive_now():
    with pytest.raises(InvalidValue) as caught:
        pos.handle(initialized(), fill("1", Direction.BUY), datetime(2025, 1, 1))  # noqa: DTZ001
    assert caught.value.field == "now"


def test_spec_folds_history_into_the_same_state_as_stepwise_apply():
    state = with_fills(("2", Direction.BUY), ("0.5", Direction.SELL))
    state, events = run(state, place())
    assert pos.SPEC.aggregate_type == "Position"
    history = [
        ev.Initialized("AAPL", TH, T0),
        ev.OnChainOrderFilled(
            TradeId(TX, 0), Decimal(2), Direction.BUY, Decimal("150.25"), T0, at(1)
        ),
        ev.OnChainOrderFilled(
            TradeId(TX, 1), Decimal("0.5"), Direction.SELL, Decimal("150.25"), T0, at(2)
        ),
        *events,
    ]
    assert pos.SPEC.fold(history) == state
    assert all(type(e) in pos.SPEC.event_classes for e in history)

"""Position aggregate (spec 4.1): the source of fill events; aggregate id = the base symbol.

Pure state machine: `apply(lifecycle, event)` folds one event, `handle(lifecycle, command, now)`
decides which events a command produces or raises a `PositionError` / `InvalidValue`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Context, Decimal, Inexact, InvalidOperation, Overflow
from typing import Any

from inventory.domain import events as ev
from inventory.domain.aggregate import AggregateSpec
from inventory.domain.checks import (
    CommandRefused,
    validate_aware,
    validate_text,
    validate_tx_hash,
)
from inventory.domain.events import ExecutionThreshold, ThresholdKind, TradeId, TriggerReason
from inventory.domain.lifecycle import Lifecycle, LifecycleError, Mismatch, lifecycle_apply
from inventory.domain.values import (
    MAX_AMOUNT,
    Direction,
    DomainError,
    InvalidValue,
    validate_quantity,
    validate_symbol,
)

# Exact arithmetic: far more digits than any share amount, and an error instead of rounding.
_EXACT = Context(prec=80, traps=[Inexact, InvalidOperation, Overflow])


# --- state ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Position:
    symbol: str
    net: Decimal
    accumulated_long: Decimal
    accumulated_short: Decimal
    pending_execution_id: int | None
    threshold: ExecutionThreshold
    last_updated: datetime
    # The pending hedge's placement (None when none is pending): its fill must match it.
    pending_shares: Decimal | None = None
    pending_direction: Direction | None = None


# --- commands -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Initialize:
    symbol: str
    threshold: ExecutionThreshold


@dataclass(frozen=True)
class Migrate:
    symbol: str
    net_position: Decimal
    accumulated_long: Decimal
    accumulated_short: Decimal
    threshold: ExecutionThreshold


@dataclass(frozen=True)
class AcknowledgeOnChainFill:
    trade_id: TradeId
    amount: Decimal
    direction: Direction
    price_usdc: Decimal
    block_timestamp: datetime
    block_number: int | None = None


@dataclass(frozen=True)
class PlaceOffChainOrder:
    """Place a hedge: it must reduce the net position (Sell when long, Buy when short), and
    its shares are at most |net| + `tolerance` (HEDGE_PLACEMENT_TOLERANCE_SHARES)."""

    execution_id: int
    shares: Decimal
    direction: Direction
    broker: str
    tolerance: Decimal = Decimal(0)


@dataclass(frozen=True)
class CompleteOffChainOrder:
    """The brokerage's fill of the pending hedge, and the end of that execution.

    One fill per execution: the trading side reports it once the brokerage order is done,
    with the total shares it filled. Its direction is the placement's and its shares at most
    the placed shares; fewer is a partial fill (the rest was cancelled at the brokerage): the
    execution ends all the same and the unhedged rest stays in the net position, so the next
    placement hedges it. An execution that filled nothing ends with FailOffChainOrder.
    """

    execution_id: int
    shares_filled: Decimal
    direction: Direction
    broker_order_id: str
    price_cents: int
    broker_timestamp: datetime


@dataclass(frozen=True)
class FailOffChainOrder:
    execution_id: int
    error: str


@dataclass(frozen=True)
class UpdateThreshold:
    threshold: ExecutionThreshold


PositionCommand = (
    Initialize
    | Migrate
    | AcknowledgeOnChainFill
    | PlaceOffChainOrder
    | CompleteOffChainOrder
    | FailOffChainOrder
    | UpdateThreshold
)


# --- errors ---------------------------------------------------------------------------------


class PositionError(CommandRefused):
    """A position command refused in the current state."""


class AlreadyInitialized(PositionError):
    RULE = "the position is already initialized"


class NotInitialized(PositionError):
    RULE = "the position is not initialized (Initialize or Migrate first)"


class PendingExecution(PositionError):
    RULE = "an offchain execution is already pending"


class ThresholdNotMet(PositionError):
    RULE = "the net position does not reach the execution threshold"


class NoPendingExecution(PositionError):
    RULE = "no offchain execution is pending"


class ExecutionIdMismatch(PositionError):
    RULE = "the execution id is not the pending one"


class PositionArithmeticError(DomainError):
    def __init__(self, operation: str, lhs: Decimal, rhs: Decimal) -> None:
        self.operation = operation
        self.lhs = lhs
        self.rhs = rhs
        super().__init__(f"{operation}({lhs}, {rhs}) is not exact within 80 digits")


def _add(lhs: Decimal, rhs: Decimal) -> Decimal:
    try:
        return _EXACT.add(lhs, rhs)
    except (Inexact, InvalidOperation, Overflow):
        raise PositionArithmeticError("add", lhs, rhs) from None


def _sub(lhs: Decimal, rhs: Decimal) -> Decimal:
    try:
        return _EXACT.subtract(lhs, rhs)
    except (Inexact, InvalidOperation, Overflow):
        raise PositionArithmeticError("sub", lhs, rhs) from None


# --- threshold ------------------------------------------------------------------------------


def shares_threshold(value: Decimal) -> ExecutionThreshold:
    return ExecutionThreshold(ThresholdKind.SHARES, value)


def dollar_threshold(value: Decimal) -> ExecutionThreshold:
    return ExecutionThreshold(ThresholdKind.DOLLAR_VALUE, value)


def validate_threshold(field: str, threshold: ExecutionThreshold) -> ExecutionThreshold:
    if not isinstance(threshold, ExecutionThreshold) or not isinstance(
        threshold.kind, ThresholdKind
    ):
        raise InvalidValue(field, threshold, "must be an ExecutionThreshold")
    validate_quantity(f"{field}.value", threshold.value)
    return threshold


def trigger_reason(position: Position) -> TriggerReason | None:
    """Why an offchain hedge may be placed now; None when the threshold is not met.

    A `Shares` threshold is met when |net| >= threshold; a `DollarValue` threshold never
    triggers in this era (spec 4.1).
    """
    if position.threshold.kind is ThresholdKind.SHARES:
        net_abs = abs(position.net)
        if net_abs >= position.threshold.value:
            return TriggerReason(
                net_position_shares=net_abs, threshold_shares=position.threshold.value
            )
    return None


# --- apply ----------------------------------------------------------------------------------


def _from_event(event: Any) -> Position:
    if isinstance(event, ev.Initialized):
        return Position(
            symbol=event.symbol,
            net=Decimal(0),
            accumulated_long=Decimal(0),
            accumulated_short=Decimal(0),
            pending_execution_id=None,
            threshold=event.threshold,
            last_updated=event.initialized_at,
        )
    if isinstance(event, ev.Migrated):
        return Position(
            symbol=event.symbol,
            net=event.net_position,
            accumulated_long=event.accumulated_long,
            accumulated_short=event.accumulated_short,
            pending_execution_id=None,
            threshold=event.threshold,
            last_updated=event.migrated_at,
        )
    raise Mismatch(None, event)


def _transition(position: Position, event: Any) -> Position:
    if isinstance(event, ev.OnChainOrderFilled):
        if event.direction is Direction.BUY:
            return replace(
                position,
                net=_add(position.net, event.amount),
                accumulated_long=_add(position.accumulated_long, event.amount),
                last_updated=event.seen_at,
            )
        return replace(
            position,
            net=_sub(position.net, event.amount),
            accumulated_short=_add(position.accumulated_short, event.amount),
            last_updated=event.seen_at,
        )
    if isinstance(event, ev.OffChainOrderPlaced):
        if position.pending_execution_id is not None:
            raise Mismatch(position, event)
        return replace(
            position,
            pending_execution_id=event.execution_id,
            pending_shares=event.shares,
            pending_direction=event.direction,
            last_updated=event.placed_at,
        )
    if isinstance(event, ev.OffChainOrderFilled):
        if position.pending_execution_id != event.execution_id:
            raise Mismatch(position, event)
        if event.direction is Direction.SELL:
            net = _sub(position.net, event.shares_filled)
        else:
            net = _add(position.net, event.shares_filled)
        return replace(
            position,
            net=net,
            pending_execution_id=None,
            pending_shares=None,
            pending_direction=None,
            last_updated=event.broker_timestamp,
        )
    if isinstance(event, ev.OffChainOrderFailed):
        return replace(
            position,
            pending_execution_id=None,
            pending_shares=None,
            pending_direction=None,
            last_updated=event.failed_at,
        )
    if isinstance(event, ev.ThresholdUpdated):
        return replace(position, threshold=event.new_threshold, last_updated=event.updated_at)
    raise Mismatch(position, event)


def apply(state: Lifecycle[Position], event: Any) -> Lifecycle[Position]:
    return lifecycle_apply(state, event, apply_transition=_transition, from_event=_from_event)


# --- handle ---------------------------------------------------------------------------------


def _check_execution_id(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidValue("execution_id", value, "must be a non-negative integer")
    return value


def _check_pending(position: Position | None, command: Any, execution_id: int) -> None:
    if position is None:
        raise NotInitialized(command, None)
    if position.pending_execution_id is None:
        raise NoPendingExecution(command, position, execution_id=execution_id)
    if position.pending_execution_id != execution_id:
        raise ExecutionIdMismatch(
            command, position, expected=position.pending_execution_id, actual=execution_id
        )


def handle(state: Lifecycle[Position], command: Any, now: datetime) -> list[ev.PositionEvent]:
    """Decide the events for `command`; a Failed lifecycle refuses with its LifecycleError.

    `Initialize` and `Migrate` are genesis commands: valid while Uninitialized (a Failed
    lifecycle is sticky, so re-initializing it would record an event that changes nothing).
    """
    validate_aware("now", now)
    position: Position | None = state.current()  # raises the stored LifecycleError

    if isinstance(command, Initialize):
        if position is not None:
            raise AlreadyInitialized(command, position, symbol=position.symbol)
        return [
            ev.Initialized(
                symbol=validate_symbol(command.symbol),
                threshold=validate_threshold("threshold", command.threshold),
                initialized_at=now,
            )
        ]
    if isinstance(command, Migrate):
        if position is not None:
            raise AlreadyInitialized(command, position, symbol=position.symbol)
        return [
            ev.Migrated(
                symbol=validate_symbol(command.symbol),
                net_position=validate_quantity(
                    "net_position", command.net_position, allow_negative=True
                ),
                accumulated_long=validate_quantity(
                    "accumulated_long", command.accumulated_long, allow_zero=True
                ),
                accumulated_short=validate_quantity(
                    "accumulated_short", command.accumulated_short, allow_zero=True
                ),
                threshold=validate_threshold("threshold", command.threshold),
                migrated_at=now,
            )
        ]

    if position is None:
        raise NotInitialized(command, None)

    if isinstance(command, AcknowledgeOnChainFill):
        if not isinstance(command.trade_id, TradeId):
            raise InvalidValue("trade_id", command.trade_id, "must be a TradeId")
        validate_tx_hash("trade_id.tx_hash", command.trade_id.tx_hash)
        log_index = command.trade_id.log_index
        if isinstance(log_index, bool) or not isinstance(log_index, int) or log_index < 0:
            raise InvalidValue("trade_id.log_index", log_index, "must be a non-negative integer")
        return [
            ev.OnChainOrderFilled(
                trade_id=command.trade_id,
                amount=validate_quantity("amount", command.amount),
                direction=_check_direction(command.direction),
                price_usdc=validate_quantity("price_usdc", command.price_usdc),
                block_timestamp=validate_aware("block_timestamp", command.block_timestamp),
                seen_at=now,
                block_number=_check_block(command.block_number),
            )
        ]
    if isinstance(command, PlaceOffChainOrder):
        _check_execution_id(command.execution_id)
        if position.pending_execution_id is not None:
            raise PendingExecution(
                command, position, pending_execution_id=position.pending_execution_id
            )
        reason = trigger_reason(position)
        if reason is None:
            raise ThresholdNotMet(
                command, position, net_position=position.net, threshold=position.threshold
            )
        shares = validate_quantity("shares", command.shares)
        direction = _check_direction(command.direction)
        _check_placement(position, shares, direction, command.tolerance)
        return [
            ev.OffChainOrderPlaced(
                execution_id=command.execution_id,
                shares=shares,
                direction=direction,
                broker=validate_text("broker", command.broker),
                trigger_reason=reason,
                placed_at=now,
            )
        ]
    if isinstance(command, CompleteOffChainOrder):
        _check_pending(position, command, command.execution_id)
        price = command.price_cents
        if isinstance(price, bool) or not isinstance(price, int) or price < 0:
            raise InvalidValue("price_cents", price, "must be a non-negative integer")
        if price > MAX_AMOUNT * 100:
            raise InvalidValue("price_cents", price, f"must be at most {MAX_AMOUNT * 100:,}")
        shares_filled = validate_quantity("shares_filled", command.shares_filled)
        direction = _check_direction(command.direction)
        _check_fill(position, shares_filled, direction)
        return [
            ev.OffChainOrderFilled(
                execution_id=command.execution_id,
                shares_filled=shares_filled,
                direction=direction,
                broker_order_id=validate_text("broker_order_id", command.broker_order_id),
                price_cents=price,
                broker_timestamp=validate_aware("broker_timestamp", command.broker_timestamp),
            )
        ]
    if isinstance(command, FailOffChainOrder):
        _check_pending(position, command, command.execution_id)
        return [
            ev.OffChainOrderFailed(
                execution_id=command.execution_id,
                error=validate_text("error", command.error),
                failed_at=now,
            )
        ]
    if isinstance(command, UpdateThreshold):
        return [
            ev.ThresholdUpdated(
                old_threshold=position.threshold,
                new_threshold=validate_threshold("threshold", command.threshold),
                updated_at=now,
            )
        ]
    raise InvalidValue("command", command, "not a Position command")


def _check_placement(
    position: Position, shares: Decimal, direction: Direction, tolerance: Decimal
) -> None:
    """A hedge reduces the net position and is not far beyond it (|net| + tolerance)."""
    validate_quantity("tolerance", tolerance, allow_zero=True)
    reducing = Direction.SELL if position.net > 0 else Direction.BUY
    if direction is not reducing:
        raise InvalidValue(
            "direction",
            direction.value,
            f"must be {reducing.value}: the net position of {position.symbol} is "
            f"{position.net} shares, and a {direction.value} hedge would grow it",
        )
    limit = _add(abs(position.net), tolerance)
    if shares > limit:
        raise InvalidValue(
            "shares",
            shares,
            f"is more than the absolute net position {abs(position.net)} of "
            f"{position.symbol} plus the tolerance {tolerance} "
            f"(HEDGE_PLACEMENT_TOLERANCE_SHARES): at most {limit}",
        )


def _check_fill(position: Position, shares_filled: Decimal, direction: Direction) -> None:
    """A fill has its placement's direction and at most its shares (one fill per execution:
    nothing filled before it)."""
    if position.pending_direction is not None and direction is not position.pending_direction:
        raise InvalidValue(
            "direction",
            direction.value,
            f"must be the placement's direction {position.pending_direction.value} "
            f"(execution {position.pending_execution_id})",
        )
    if position.pending_shares is not None and shares_filled > position.pending_shares:
        raise InvalidValue(
            "shares_filled",
            shares_filled,
            f"is more than the {position.pending_shares} shares placed "
            f"(execution {position.pending_execution_id})",
        )


def _check_block(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidValue("block_number", value, "must be a non-negative integer")
    return value


def _check_direction(direction: Direction) -> Direction:
    if not isinstance(direction, Direction):
        raise InvalidValue("direction", direction, "must be a Direction")
    return direction


def position_of(state: Lifecycle[Position]) -> Position | None:
    """The live or last valid position, None when uninitialized."""
    return state.value


SPEC = AggregateSpec(
    aggregate_type=ev.POSITION,
    apply=apply,
    handle=handle,
    event_classes=(
        ev.Initialized,
        ev.Migrated,
        ev.OnChainOrderFilled,
        ev.OffChainOrderPlaced,
        ev.OffChainOrderFilled,
        ev.OffChainOrderFailed,
        ev.ThresholdUpdated,
    ),
)

__all__ = [
    "SPEC",
    "AcknowledgeOnChainFill",
    "AlreadyInitialized",
    "CompleteOffChainOrder",
    "ExecutionIdMismatch",
    "FailOffChainOrder",
    "Initialize",
    "LifecycleError",
    "Migrate",
    "NoPendingExecution",
    "NotInitialized",
    "PendingExecution",
    "PlaceOffChainOrder",
    "Position",
    "PositionArithmeticError",
    "PositionCommand",
    "PositionError",
    "ThresholdNotMet",
    "UpdateThreshold",
    "apply",
    "dollar_threshold",
    "handle",
    "position_of",
    "shares_threshold",
    "trigger_reason",
]

"""InventorySnapshot aggregate (B1): observed venue balances, aggregate id "venues".

Pure. Commands carry what a venue poll fetched; the events set a pool's available balance in
the projection when that pool has nothing inflight. The state is a per-kind watermark (the
newest `fetched_at` recorded), so a stale poll that finishes late is ignored, never recorded
over a newer one (upstream #675).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from inventory.domain import events as ev
from inventory.domain.aggregate import AggregateSpec
from inventory.domain.lifecycle import Lifecycle, lifecycle_apply
from inventory.domain.values import (
    SHARE_DECIMALS,
    USDC_DECIMALS,
    InvalidValue,
    validate_quantity,
    validate_symbol,
)

SNAPSHOT_AGGREGATE_ID = "venues"

SNAPSHOT_EVENTS: tuple[type[ev.SnapshotEvent], ...] = (
    ev.OnchainEquity,
    ev.OnchainCash,
    ev.OffchainEquity,
    ev.OffchainCash,
)


@dataclass(frozen=True)
class SnapshotState:
    # event variant name -> newest fetched_at recorded
    watermarks: Mapping[str, datetime] = field(default_factory=dict)


@dataclass(frozen=True)
class RecordOnchainEquity:
    balances: Mapping[str, Decimal]
    fetched_at: datetime
    block_number: int | None = None


@dataclass(frozen=True)
class RecordOffchainEquity:
    positions: Mapping[str, Decimal]
    fetched_at: datetime


@dataclass(frozen=True)
class RecordOnchainCash:
    usdc_balance: Decimal
    fetched_at: datetime
    block_number: int | None = None


@dataclass(frozen=True)
class RecordOffchainCash:
    cash_balance: Decimal
    fetched_at: datetime
    usdc_balance: Decimal | None = None
    cash_withdrawable: Decimal | None = None


SnapshotCommand = (
    RecordOnchainEquity | RecordOffchainEquity | RecordOnchainCash | RecordOffchainCash
)


def validate_balance(name: str, value: Any, *, decimals: int = SHARE_DECIMALS) -> Decimal:
    """A balance >= 0 within the domain's bounds (18 decimals for shares, 6 for cash)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = Decimal(value)
    return validate_quantity(name, value, allow_zero=True, decimals=decimals)


def validate_fetched_at(value: Any) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InvalidValue("fetched_at", value, "must be a timezone-aware datetime")
    return value


def validate_block(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidValue("block_number", value, "must be a non-negative integer or None")
    return value


def _opt_cash(name: str, value: Any) -> Decimal | None:
    return None if value is None else validate_balance(name, value, decimals=USDC_DECIMALS)


def _balances(name: str, values: Mapping[str, Any]) -> dict[str, Decimal]:
    if not isinstance(values, Mapping):
        raise InvalidValue(name, values, "must be a mapping of base symbol to amount")
    result = {}
    for symbol, amount in values.items():
        validate_symbol(symbol)
        result[symbol] = validate_balance(f"{name}[{symbol}]", amount)
    return dict(sorted(result.items()))


def event_for(command: SnapshotCommand) -> ev.SnapshotEvent:
    """Validate a command and build its event (raises `InvalidValue` naming the field)."""
    fetched_at = validate_fetched_at(command.fetched_at)
    if isinstance(command, RecordOnchainEquity):
        return ev.OnchainEquity(
            balances=_balances("balances", command.balances),
            fetched_at=fetched_at,
            block_number=validate_block(command.block_number),
        )
    if isinstance(command, RecordOffchainEquity):
        return ev.OffchainEquity(
            positions=_balances("positions", command.positions), fetched_at=fetched_at
        )
    if isinstance(command, RecordOnchainCash):
        return ev.OnchainCash(
            usdc_balance=validate_balance(
                "usdc_balance", command.usdc_balance, decimals=USDC_DECIMALS
            ),
            fetched_at=fetched_at,
            block_number=validate_block(command.block_number),
        )
    if isinstance(command, RecordOffchainCash):
        return ev.OffchainCash(
            cash_balance=validate_balance(
                "cash_balance", command.cash_balance, decimals=USDC_DECIMALS
            ),
            fetched_at=fetched_at,
            usdc_balance=_opt_cash("usdc_balance", command.usdc_balance),
            cash_withdrawable=_opt_cash("cash_withdrawable", command.cash_withdrawable),
        )
    raise TypeError(f"not a snapshot command: {type(command).__name__}")


def _fetched_at(event: ev.SnapshotEvent) -> datetime:
    assert isinstance(
        event, ev.OnchainEquity | ev.OnchainCash | ev.OffchainEquity | ev.OffchainCash
    )
    return event.fetched_at


def is_stale(state: SnapshotState, event: ev.SnapshotEvent) -> bool:
    """Older than the newest recorded snapshot of the same kind."""
    newest = state.watermarks.get(type(event).__name__)
    return newest is not None and _fetched_at(event) < newest


def _advance(state: SnapshotState, event: ev.SnapshotEvent) -> SnapshotState:
    name = type(event).__name__
    newest = state.watermarks.get(name)
    fetched_at = _fetched_at(event)
    if newest is not None and newest >= fetched_at:
        return state
    return SnapshotState(watermarks={**state.watermarks, name: fetched_at})


def apply(state: Lifecycle[SnapshotState], event: Any) -> Lifecycle[SnapshotState]:
    return lifecycle_apply(
        state,
        event,
        apply_transition=_advance,
        from_event=lambda e: _advance(SnapshotState(), e),
    )


def handle(
    state: Lifecycle[SnapshotState], command: SnapshotCommand, now: datetime
) -> list[ev.SnapshotEvent]:
    """The event for a snapshot, or nothing when it is stale."""
    current = state.current() or SnapshotState()
    event = event_for(command)
    return [] if is_stale(current, event) else [event]


SPEC = AggregateSpec(
    aggregate_type=ev.SNAPSHOT, apply=apply, handle=handle, event_classes=SNAPSHOT_EVENTS
)

"""A simulated day for the backtest tests, written through the real service path.

Fills go through `fill_record_onchain` (the store, the projection and the live trigger, which
creates the day's operations); a small scheduler then plays each operation's worker: its
intent event one second after the trigger created it, its completion `SECONDS[kind]` later,
both appended to the operation's aggregate at those times, as the workflows append them.
Every event carries its own time (`now=`), so the log's `recorded_at` is the day's clock.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from inventory.domain import events as ev
from inventory.domain.values import RebalanceDirection
from inventory.models import Event
from inventory.services import asset_register, fill_record_onchain, setting_change, snapshot_record
from inventory.store import events_append
from operations.models import ACTIVE_STATUSES, Operation
from tests.service.flows import _RAW, REDEMPTION_WALLET, TOKENS, TX, WALLET

DAY = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)
# Time in flight (intent to completion) of each kind in this day.
SECONDS = {
    "mint": 125,
    "redemption": 95,
    "usdc_alpaca_to_base": 155,
    "usdc_base_to_alpaca": 145,
}


@dataclass
class Day:
    start: datetime
    end: datetime
    operations: list[Operation] = field(default_factory=list)
    pools: dict[str, tuple[Decimal, ...]] = field(default_factory=dict)


def _append(operation: Operation, event: ev.DomainEvent, moment: datetime) -> None:
    sequence = Event.objects.filter(
        aggregate_type=operation.aggregate_type, aggregate_id=operation.aggregate_id
    ).count()
    events_append(
        spec=_RAW[operation.aggregate_type],
        aggregate_id=operation.aggregate_id,
        events=[event],
        expected_sequence=sequence,
        now=moment,
    )


def _direction(operation: Operation) -> RebalanceDirection:
    if operation.kind == "usdc_alpaca_to_base":
        return RebalanceDirection.ALPACA_TO_BASE
    return RebalanceDirection.BASE_TO_ALPACA


def _intent(operation: Operation, moment: datetime) -> ev.DomainEvent:
    if operation.kind == "mint":
        return ev.MintRequested(
            symbol=operation.pool, quantity=operation.amount, wallet=WALLET, requested_at=moment
        )
    if operation.kind == "redemption":
        return ev.TokensSent(
            symbol=operation.pool,
            quantity=operation.amount,
            redemption_wallet=REDEMPTION_WALLET,
            tx_hash=TX,
            sent_at=moment,
        )
    return ev.Requested(
        direction=_direction(operation), amount=operation.amount, requested_at=moment
    )


def _completion(operation: Operation, moment: datetime) -> ev.DomainEvent:
    if operation.kind == "mint":
        return ev.DepositedIntoVault(deposited_at=moment)
    if operation.kind == "redemption":
        return ev.Completed(completed_at=moment)
    return ev.DepositConfirmed(deposit_confirmed_at=moment, amount_deposited=operation.amount)


def simulated_day(
    *,
    seed: int = 7,
    fills: int = 240,
    every_s: int = 10,
    drift: float = 0.0,
    mid_day_deviation: str | None = "0.08",
    symbols: tuple[str, ...] = ("AAPL",),
    seconds: dict[str, int] | None = None,
    start: datetime = DAY,
    deviation: str = "0.1",
) -> Day:
    """Register, set the bands, observe the venues, then `fills` onchain fills `every_s`
    apart (random direction, biased by `drift`), the operations played as they come; the
    day ends after the last operation completed. With `mid_day_deviation`, the equity band
    is changed half-way (an audited change the as-run candidate must follow)."""
    rng = random.Random(seed)
    setup = start - timedelta(hours=1)
    for symbol in symbols:
        asset_register(
            base_symbol=symbol,
            token_address=TOKENS[symbol],
            token_symbol=f"t{symbol}",
            vault_id="0x" + "11" * 32,
            changed_by="test",
            now=setup,
        )
    for setting, value in (
        ("equity_deviation", deviation),
        ("usdc_deviation", deviation),
        ("usdc_minimum", "50"),
        ("equity_minimum_shares", "1"),
    ):
        setting_change(
            scope="global", setting=setting, new_value=value, changed_by="test", now=setup
        )
    snapshot_record(
        fetched_at=setup,
        onchain_equity={s: Decimal(60) for s in symbols},
        offchain_equity={s: Decimal(60) for s in symbols},
        onchain_cash=Decimal(4000),
        offchain_cash=Decimal(4000),
        now=setup,
    )
    queue: list[tuple[datetime, int, str, int]] = []  # (when, order, step, operation id)
    order = 0
    seen: set[int] = set()
    day = Day(start=start, end=start)

    def due(until: datetime) -> None:
        while queue and queue[0][0] <= until:
            moment, _, step, pk = heapq.heappop(queue)
            operation = Operation.objects.get(pk=pk)
            if step == "intent":
                _append(operation, _intent(operation, moment), moment)
            else:
                _append(operation, _completion(operation, moment), moment)
                day.end = max(day.end, moment)
            discover(moment)

    def discover(moment: datetime) -> None:
        nonlocal order
        for operation in Operation.objects.filter(status__in=ACTIVE_STATUSES).exclude(pk__in=seen):
            seen.add(operation.pk)
            Operation.objects.filter(pk=operation.pk).update(created_at=moment)
            operation.refresh_from_db()
            day.operations.append(operation)
            intent = moment + timedelta(seconds=1)
            done = intent + timedelta(seconds=(seconds or SECONDS)[operation.kind])
            order += 1
            heapq.heappush(queue, (intent, order, "intent", operation.pk))
            order += 1
            heapq.heappush(queue, (done, order, "done", operation.pk))

    for index in range(fills):
        moment = start + timedelta(seconds=every_s * (index + 1))
        due(moment - timedelta(microseconds=1))
        if mid_day_deviation is not None and index == fills // 2:
            setting_change(
                scope="global",
                setting="equity_deviation",
                new_value=mid_day_deviation,
                changed_by="test",
                now=moment - timedelta(milliseconds=500),
            )
        symbol = symbols[index % len(symbols)]
        direction = "Buy" if rng.random() < 0.5 + drift else "Sell"
        fill_record_onchain(
            symbol=symbol,
            tx_hash="0x" + f"{start.toordinal():064x}",
            log_index=index,
            amount=Decimal(rng.randint(1, 6)),
            direction=direction,
            price_usdc=Decimal(100) + Decimal(rng.randint(-300, 300)) / 100,
            block_timestamp=moment,
            now=moment,
        )
        discover(moment)
    due(start + timedelta(days=1))
    day.end = max(day.end, start + timedelta(seconds=every_s * (fills + 1))) + timedelta(seconds=1)
    return day

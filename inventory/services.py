"""Writes for the inventory app: fills, balance snapshots, assets and settings.

Every function takes keyword-only typed arguments, validates everything before writing, and
runs in one transaction: the events, the projection and any settings row change commit
together. Validation failures raise `InvalidValue(field, value, rule)` and write nothing.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import re
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple, Protocol

from django.conf import settings as django_settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from eth_utils import to_checksum_address

from inventory import chain_head, config_stamp, event_keys, rawsql, usdc_deltas
from inventory.db_errors import unique_violated
from inventory.domain import events as ev
from inventory.domain import position
from inventory.domain import settings as settings_domain
from inventory.domain import snapshot as snapshot_domain
from inventory.domain.checks import validate_address
from inventory.domain.events import ExecutionThreshold, ThresholdKind, TradeId
from inventory.domain.lifecycle import Lifecycle
from inventory.domain.values import (
    USDC_POOL,
    Direction,
    DomainError,
    InvalidValue,
    TokenizedEquitySymbol,
    TxHash,
    validate_quantity,
    validate_symbol,
)
from inventory.models import (
    ApiToken,
    ApiTokenScope,
    Asset,
    Event,
    EventKey,
    RebalancingSettingsRow,
)
from inventory.projection import pools_lock, pools_lock_statements
from inventory.rebuild import PoolDifference, inventory_rebuild  # noqa: F401
from inventory.store import (
    AggregateSnapshot,
    PendingAppend,
    StateDifference,
    StoredEvent,
    aggregate_execute,
    aggregate_state,
    aggregate_state_statement,
    aggregate_states_rebuild,
    appends_commit,
    in_retried_transaction,
    keys_recorded,
    keys_recorded_statements,
)

logger = logging.getLogger(__name__)

# Matched with re.fullmatch ("$" alone accepts a trailing newline, a second spelling of a hash).
_HASH = re.compile(r"0x[0-9a-fA-F]{64}")
_VAULT_ID = re.compile(r"0x[0-9a-fA-F]{64}")
# How far ahead of our clock an observation (fill, broker fill, balance poll) may be stamped.
DEFAULT_OBSERVATION_MAX_SKEW_S = 60.0

# Hedging rule (spec 4.1): hedge once |net| >= 1 share. Used when a symbol's first fill arrives.
DEFAULT_POSITION_THRESHOLD = ExecutionThreshold(kind=ThresholdKind.SHARES, value=Decimal(1))


# --- validation helpers -----------------------------------------------------------------------


def _direction(value: Any) -> Direction:
    if isinstance(value, Direction):
        return value
    try:
        return Direction(value)
    except ValueError:
        raise InvalidValue("direction", value, "must be Buy or Sell") from None


def _aware(field: str, value: Any) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InvalidValue(field, value, "must be a timezone-aware datetime")
    return value


def _observed(field: str, value: Any, now: datetime) -> datetime:
    """An observation's timestamp: aware, and not more than the configured skew ahead of now
    (a stamp in the future would make every real observation after it look stale)."""
    moment = _aware(field, value)
    skew_s = getattr(django_settings, "OBSERVATION_MAX_SKEW_S", DEFAULT_OBSERVATION_MAX_SKEW_S)
    if moment > now + timedelta(seconds=skew_s):
        raise InvalidValue(
            field,
            value,
            f"is more than {skew_s:g} s ahead of now ({now.isoformat()}): "
            "an observation cannot come from the future (OBSERVATION_MAX_SKEW_S)",
        )
    return moment


def _tx_hash(field: str, value: Any) -> TxHash:
    if not isinstance(value, str) or not _HASH.fullmatch(value):
        raise InvalidValue(field, value, "must be a 0x-prefixed 32-byte hex hash")
    return TxHash(value.lower())


def _non_negative_int(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidValue(field, value, "must be a non-negative integer")
    return value


def _positive(field: str, value: Any) -> Decimal:
    """A positive amount within the domain's bounds (at most 18 decimals, `MAX_AMOUNT`)."""
    return validate_quantity(field, value)


def _changed_by(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidValue("changed_by", value, "must name who made the change")
    if len(value.strip()) > 150:  # the settings row's updated_by column
        raise InvalidValue("changed_by", value, "must be at most 150 characters")
    return value.strip()


# --- fills ------------------------------------------------------------------------------------


# --- replays ----------------------------------------------------------------------------------


class ReplayConflict(DomainError):
    """A record whose id was already recorded with different content; nothing is written.

    `record` names the kind ("onchain fill", "hedge placement" ...), `key` its id, and
    `differences` maps each differing field to (recorded, given).
    """

    def __init__(self, record: str, key: str, differences: dict[str, tuple[Any, Any]]) -> None:
        self.record = record
        self.key = key
        self.differences = differences
        detail = "; ".join(
            f"{name} recorded {old!s}, given {new!s}" for name, (old, new) in differences.items()
        )
        super().__init__(f"{record} {key} was already recorded with different content: {detail}")


def _replay_check(record: str, key: str, recorded: Any, given: Mapping[str, Any]) -> None:
    """An identical replay passes (the caller writes nothing); any difference raises."""
    differences = {
        name: (getattr(recorded, name), value)
        for name, value in given.items()
        if getattr(recorded, name) != value
    }
    if differences:
        raise ReplayConflict(record, key, differences)


def _hedge_recorded(symbol: str, event_class: type, execution_id: int) -> Any | None:
    """The symbol's event of `event_class` for this execution id, decoded, or None: one
    lookup of its unique idempotency key."""
    found = EventKey.objects.filter(
        scope=event_keys.EXECUTION_SCOPES[event_class],
        day=event_keys.NO_DAY,
        key=event_keys.execution_key(symbol, execution_id),
    ).values_list("event_id", flat=True)
    row = Event.objects.filter(id__in=found).first()
    return row.domain_event() if row is not None else None


def _hedge_append(
    symbol: str,
    command: Any,
    recorded_as: type,
    what: str,
    given: dict[str, Any],
    moment: datetime,
) -> list[StoredEvent] | None:
    """Append a hedge command to the symbol's position once per execution, with the symbol's
    and USDC's pools locked (one writer per symbol at a time, as for fills). None when the
    execution's `recorded_as` event is stored already and equals `given` (an identical
    replay: nothing written); `ReplayConflict` when it differs."""
    with transaction.atomic():
        pools_lock({symbol, USDC_POOL})
        recorded = _hedge_recorded(symbol, recorded_as, command.execution_id)
        if recorded is not None:
            _replay_check(what, f"{symbol}/{command.execution_id}", recorded, given)
            logger.info(
                "%s %s for %s already recorded, skipped", what, command.execution_id, symbol
            )
            return None
        return aggregate_execute(
            spec=position.SPEC, aggregate_id=symbol, command=command, now=moment
        )


@dataclass(frozen=True)
class OnchainFill:
    """One order-book fill as the trading side reports it (input of `fills_record_batch`)."""

    symbol: str
    tx_hash: str
    log_index: int
    amount: Decimal
    direction: Direction | str
    price_usdc: Decimal
    block_timestamp: datetime
    # The block the fill landed in (spec 15.2); None when the reporter does not know it.
    block_number: int | None = None


@dataclass(frozen=True)
class CheckedOnchainFill(OnchainFill):
    """A fill whose fields `inventory.schemas.OnchainFillIn` already validated with the same
    domain validators (symbol, tx hash, log index, amounts, block number, an aware timestamp):
    the service does not run them again, so each field is validated once per request. The
    checks that depend on the service's clock (`block_timestamp` skew) still run."""


class FillStatus(enum.StrEnum):
    RECORDED = "recorded"
    DUPLICATE = "duplicate"


@dataclass(frozen=True)
class FillResult:
    """The outcome of one fill of a batch, in input order."""

    index: int
    symbol: str
    trade_id: TradeId
    status: FillStatus
    events: list[StoredEvent]


class FillConflict(InvalidValue):
    """The trade id is already recorded (or repeated in the batch) with different content."""


class BatchInvalid(InvalidValue):
    """Some fills of a batch are invalid; `errors` lists (index, error) for every one of them.
    Nothing is written."""

    def __init__(self, errors: list[tuple[int, InvalidValue]]) -> None:
        self.errors = errors
        index, first = errors[0]
        super().__init__(
            f"fills[{index}].{first.field}",
            first.value,
            first.rule
            + (f" (and {len(errors) - 1} more invalid fill(s))" if len(errors) > 1 else ""),
        )


@dataclass(frozen=True)
class _ParsedFill:
    index: int
    symbol: str
    command: position.AcknowledgeOnChainFill


def _parse_onchain_fill(
    fill: OnchainFill, now: datetime
) -> tuple[str, position.AcknowledgeOnChainFill]:
    if isinstance(fill, CheckedOnchainFill):
        return fill.symbol, position.AcknowledgeOnChainFill(
            trade_id=TradeId(tx_hash=TxHash(fill.tx_hash), log_index=fill.log_index),
            amount=fill.amount,
            direction=_direction(fill.direction),
            price_usdc=fill.price_usdc,
            block_timestamp=_observed("block_timestamp", fill.block_timestamp, now),
            block_number=fill.block_number,
        )
    symbol = validate_symbol(fill.symbol)
    trade_id = TradeId(
        tx_hash=_tx_hash("tx_hash", fill.tx_hash),
        log_index=_non_negative_int("log_index", fill.log_index),
    )
    command = position.AcknowledgeOnChainFill(
        trade_id=trade_id,
        amount=_positive("amount", fill.amount),
        direction=_direction(fill.direction),
        price_usdc=_positive("price_usdc", fill.price_usdc),
        block_timestamp=_observed("block_timestamp", fill.block_timestamp, now),
        block_number=(
            None
            if fill.block_number is None
            else _non_negative_int("block_number", fill.block_number)
        ),
    )
    return symbol, command


def _same_fill(
    recorded_symbol: str,
    recorded: Any,
    symbol: str,
    command: position.AcknowledgeOnChainFill,
) -> bool:
    return (
        recorded_symbol == symbol
        and isinstance(recorded, ev.OnChainOrderFilled)
        and recorded.amount == command.amount
        and recorded.direction == command.direction
        and recorded.price_usdc == command.price_usdc
        and recorded.block_timestamp == command.block_timestamp
        and recorded.block_number == command.block_number
    )


def _conflict(index: int | None, symbol: str, trade_id: TradeId) -> FillConflict:
    field = "trade_id" if index is None else f"fills[{index}].trade_id"
    return FillConflict(
        field, str(trade_id), f"already recorded for {symbol} with a different content"
    )


class _RecordedTrade(NamedTuple):
    symbol: str
    event: Any


def _recorded_trades(
    claims: set[event_keys.Claim],
) -> dict[event_keys.Claim, _RecordedTrade]:
    """Trade claim -> the symbol and event recorded for the claims whose key is already in the log:
    one index lookup (plus one read of the recorded events when there are duplicates)."""
    found = keys_recorded(claims)
    if not found:
        return {}
    rows = {row.id: row for row in Event.objects.filter(id__in=found.values())}
    return {
        claim: _RecordedTrade(rows[event_id].aggregate_id, rows[event_id].domain_event())
        for claim, event_id in found.items()
    }


@dataclass
class _Run:
    """Consecutive fills of one symbol in a batch: one append to its Position."""

    symbol: str
    after_sequence: int
    events: list[Any]
    state: Lifecycle[Any]
    cached: Any


# Fills up to this many per call go to PostgreSQL in four round trips (`_fill_reads`).
PIPELINED_MAX_FILLS = 16


def _fill_reads(
    parsed: list[_ParsedFill], claims: list[event_keys.Claim]
) -> list[tuple[str, list[Any]]]:
    """Every read a small batch of fills needs, sent in one round trip (PostgreSQL): the trade
    keys, the positions' cached states, the USDC gate (shared), the symbols' pool rows locked
    in key order, the USDC row and its pending deltas (read, not locked: a fill adds its USDC
    change as a delta, `inventory.usdc_deltas`), the chain head and the configuration stamp
    the trigger reads. The append turn (`inventory.store._take_turn`) goes first in the same
    round trip. The code below asks for them as it always does and gets the rows already
    read (`rawsql.prefetch`)."""
    symbols = sorted({item.symbol for item in parsed})
    return [
        *keys_recorded_statements(claims),
        *(aggregate_state_statement(position.SPEC, symbol) for symbol in symbols),
        *pools_lock_statements([*symbols, USDC_POOL], shared={USDC_POOL}),
        (chain_head.HEAD_SQL, []),
        (config_stamp.STAMP_SQL, []),
    ]


def _fills_commit(
    parsed: list[_ParsedFill], moment: datetime, *, pipelined: bool = False
) -> list[FillResult]:
    # Decide first, without any lock (index lookups only); `appends_commit` then locks the
    # batch's pools once, in key order, and inserts. A writer that got in between makes the
    # insert fail on the unique sequence or trade key: the whole batch is decided again.
    # Pipelined (PostgreSQL, small batches): the reads go in one round trip first (the pool
    # locks with them), the writes in a second.
    claims = [
        event_keys.trade_claim(item.command.trade_id, item.command.block_timestamp)
        for item in parsed
    ]
    with rawsql.prefetched(_fill_reads(parsed, claims) if pipelined else []):
        return _fills_decide_commit(parsed, claims, moment, pipelined=pipelined)


def _fills_decide_commit(
    parsed: list[_ParsedFill],
    claims: list[event_keys.Claim],
    moment: datetime,
    *,
    pipelined: bool,
) -> list[FillResult]:
    recorded = _recorded_trades(set(claims))
    loaded: dict[str, AggregateSnapshot] = {}
    states: dict[str, Lifecycle[Any]] = {}
    sequences: dict[str, int] = {}
    # Trade key -> (day, symbol, fill) of the batch's earlier fills with that trade id.
    seen: dict[str, list[tuple[int, str, position.AcknowledgeOnChainFill]]] = {}
    runs: list[_Run] = []
    outcomes: list[tuple[_ParsedFill, FillStatus, int]] = []  # (fill, status, events in append)
    for item, claim in zip(parsed, claims, strict=True):
        trade_id = item.command.trade_id
        earlier = recorded.get(claim)
        if earlier is not None:
            if not _same_fill(earlier.symbol, earlier.event, item.symbol, item.command):
                raise _conflict(item.index, item.symbol, trade_id)
            outcomes.append((item, FillStatus.DUPLICATE, 0))
            continue
        in_batch = [
            (symbol, command)
            for day, symbol, command in seen.get(claim.key, ())
            if claim.matches(day)
        ]
        if in_batch:
            if in_batch[0] != (item.symbol, item.command):
                raise _conflict(item.index, item.symbol, trade_id)
            outcomes.append((item, FillStatus.DUPLICATE, 0))
            continue
        seen.setdefault(claim.key, []).append((claim.day, item.symbol, item.command))
        symbol = item.symbol
        if symbol not in loaded:
            loaded[symbol] = aggregate_state(position.SPEC, symbol)
            states[symbol] = loaded[symbol].state
            sequences[symbol] = loaded[symbol].sequence
        state = states[symbol]
        events: list[Any] = []
        if state.is_uninitialized:
            # The symbol's first fill initializes its Position (default hedging threshold).
            init = position.Initialize(symbol=symbol, threshold=DEFAULT_POSITION_THRESHOLD)
            for event in position.SPEC.handle(state, init, moment):
                state = position.SPEC.apply(state, event)
                events.append(event)
        fill_events = list(position.SPEC.handle(state, item.command, moment))
        for event in fill_events:
            state = position.SPEC.apply(state, event)
        events.extend(fill_events)
        if runs and runs[-1].symbol == symbol:
            runs[-1].events.extend(events)  # in place: a copy per fill would be quadratic
            runs[-1].state = state
        else:
            runs.append(_Run(symbol, sequences[symbol], events, state, loaded[symbol].cached))
        states[symbol] = state
        sequences[symbol] += len(events)
        outcomes.append((item, FillStatus.RECORDED, len(fill_events)))
    appends = [
        PendingAppend(
            spec=position.SPEC,
            aggregate_id=run.symbol,
            after_sequence=run.after_sequence,
            events=run.events,
            state=run.state,
            cached=run.cached,
        )
        for run in runs
    ]
    stored = appends_commit(appends, now=moment, keys_checked=True, pipelined=pipelined)
    fill_events_of = iter([s for s in stored if isinstance(s.event, ev.OnChainOrderFilled)])
    results = []
    for item, status, count in outcomes:
        events_of_fill = [next(fill_events_of) for _ in range(count)]
        results.append(
            FillResult(item.index, item.symbol, item.command.trade_id, status, events_of_fill)
        )
    return results


def _fills_record_parsed(parsed: list[_ParsedFill], moment: datetime) -> list[FillResult]:
    pipelined = len(parsed) <= PIPELINED_MAX_FILLS and rawsql.pipelining()
    results = in_retried_transaction(
        lambda: _fills_commit(parsed, moment, pipelined=pipelined),
        what=f"{ev.POSITION}/batch",
        pipelined=pipelined,
    )
    seen = usdc_deltas.fold_due_take()
    if seen:
        # Several writers see the same deltas pile up: the first that finds the gate free
        # folds them, the others go on (until there are far too many: then they wait).
        usdc_deltas_fold(wait=seen >= 4 * usdc_deltas.FOLD_AT)
    return results


def usdc_deltas_fold(*, wait: bool = True) -> bool:
    """Fold the USDC pool's pending fill deltas into its row now, in a transaction of its own
    (`inventory.usdc_deltas`; what any writer that locks the USDC row does first). Without
    `wait`, only if no one holds the USDC gate at this moment. Returns whether it folded."""

    def fold() -> bool:
        if not wait and not usdc_deltas.gate_try():
            return False
        pools_lock({USDC_POOL}, create=False)
        return True

    return in_retried_transaction(fold, what="USDC/fold")


def fills_record_batch(
    *, fills: Sequence[OnchainFill], now: datetime | None = None
) -> list[FillResult]:
    """Record a batch of order-book fills in one transaction; one `FillResult` per fill.

    Every fill is validated first: any invalid one raises `BatchInvalid` (listing all of them)
    and nothing is written. A trade id already recorded, or repeated in the batch, with the
    same content is a `DUPLICATE` (writes nothing); with a different content the whole batch
    is refused with `FillConflict`. The batch takes the pool locks once (its symbols and USDC,
    in key order), updates each pool once and runs the trigger once per touched pool (on the
    pools after the whole batch). The log and the pools are those of recording the fills one
    at a time in the same order (`fill_record_onchain`).
    """
    moment = _aware("now", now) if now is not None else timezone.now()
    parsed: list[_ParsedFill] = []
    errors: list[tuple[int, InvalidValue]] = []
    for index, fill in enumerate(fills):
        try:
            symbol, command = _parse_onchain_fill(fill, moment)
        except InvalidValue as error:
            errors.append((index, error))
            continue
        parsed.append(_ParsedFill(index=index, symbol=symbol, command=command))
    if errors:
        raise BatchInvalid(errors)
    if not parsed:
        return []
    results = _fills_record_parsed(parsed, moment)
    recorded_count = sum(1 for r in results if r.status is FillStatus.RECORDED)
    logger.info(
        "recorded a batch of %d onchain fill(s): %d new, %d duplicate(s)",
        len(results),
        recorded_count,
        len(results) - recorded_count,
    )
    return results


def fill_record_onchain(
    *,
    symbol: str,
    tx_hash: str,
    log_index: int,
    amount: Decimal,
    direction: Direction | str,
    price_usdc: Decimal,
    block_timestamp: datetime,
    block_number: int | None = None,
    now: datetime | None = None,
) -> list[StoredEvent]:
    """Record an order-book fill (moves the symbol's and USDC's onchain balances).

    Idempotent on the trade id (tx hash and log index): a fill seen twice is recorded once
    (returns []); the same trade id with a different content raises `FillConflict`.
    `block_number` is the block the fill landed in: a leg at or below its pool's onchain
    snapshot block is already in that snapshot and is not applied again (spec 15.2).
    """
    fill = OnchainFill(
        symbol=symbol,
        tx_hash=tx_hash,
        log_index=log_index,
        amount=amount,
        direction=direction,
        price_usdc=price_usdc,
        block_timestamp=block_timestamp,
        block_number=block_number,
    )
    return fill_record(fill, now=now)


def fill_record(fill: OnchainFill, *, now: datetime | None = None) -> list[StoredEvent]:
    """`fill_record_onchain` of one `OnchainFill` (a `CheckedOnchainFill` is not validated
    again)."""
    moment = _aware("now", now) if now is not None else timezone.now()
    symbol, command = _parse_onchain_fill(fill, moment)
    try:
        [result] = _fills_record_parsed([_ParsedFill(0, symbol, command)], moment)
    except FillConflict:
        raise _conflict(None, symbol, command.trade_id) from None
    if result.status is FillStatus.DUPLICATE:
        logger.info("fill %s for %s already recorded, skipped", command.trade_id, symbol)
        return []
    logger.info(
        "recorded onchain %s fill %s %s @ %s USDC (%s)",
        command.direction,
        command.amount,
        symbol,
        command.price_usdc,
        command.trade_id,
    )
    return result.events


HEDGE_BROKER = "alpaca"
# How far beyond the absolute net position a hedge placement may go (rounding at the broker).
DEFAULT_HEDGE_TOLERANCE_SHARES = Decimal(1)


def hedge_place(
    *,
    symbol: str,
    execution_id: int,
    direction: Direction | str,
    shares: Decimal,
    broker: str = HEDGE_BROKER,
    now: datetime | None = None,
) -> list[StoredEvent]:
    """Record that the trading side placed an offchain hedge order (spec 4.1, `PlaceOffChainOrder`).

    Refused (`PositionError`) while another execution is pending or below the position's
    threshold; refused (`InvalidValue`) when it would grow the net position (a Buy while
    long, a Sell while short) or is more than |net| + HEDGE_PLACEMENT_TOLERANCE_SHARES
    shares. An identical replay returns [] and writes nothing; the same execution id with
    different content raises `ReplayConflict`.
    """
    symbol = validate_symbol(symbol)
    command = position.PlaceOffChainOrder(
        execution_id=_non_negative_int("execution_id", execution_id),
        shares=_positive("shares", shares),
        direction=_direction(direction),
        broker=broker,
        tolerance=getattr(
            django_settings, "HEDGE_PLACEMENT_TOLERANCE_SHARES", DEFAULT_HEDGE_TOLERANCE_SHARES
        ),
    )
    moment = _aware("now", now) if now is not None else timezone.now()
    stored = _hedge_append(
        symbol,
        command,
        ev.OffChainOrderPlaced,
        "hedge placement",
        {"shares": command.shares, "direction": command.direction, "broker": broker},
        moment,
    )
    if stored is None:
        return []
    logger.info(
        "recorded hedge %s placed: %s %s %s",
        command.execution_id,
        command.direction,
        command.shares,
        symbol,
    )
    return stored


def fill_record_offchain(
    *,
    symbol: str,
    execution_id: int,
    shares_filled: Decimal,
    direction: Direction | str,
    broker_order_id: str,
    price_cents: int,
    broker_timestamp: datetime,
    now: datetime | None = None,
) -> list[StoredEvent]:
    """Record a brokerage hedge fill of the symbol's pending execution (moves offchain
    shares and cash) and end that execution. Refused by the Position aggregate when no such
    execution is pending (`PositionError`), and (`InvalidValue`) when its direction is not
    the placement's or its shares are more than the placed shares. One fill per execution:
    report the order's total filled shares once it is done; fewer than placed is a partial
    fill, the rest stays in the net position for the next hedge.
    An identical replay returns [] and writes nothing; the same execution id filled with
    different content raises `ReplayConflict`."""
    symbol = validate_symbol(symbol)
    moment = _aware("now", now) if now is not None else timezone.now()
    if not isinstance(broker_order_id, str) or not broker_order_id.strip():
        raise InvalidValue("broker_order_id", broker_order_id, "must be a non-empty string")
    command = position.CompleteOffChainOrder(
        execution_id=_non_negative_int("execution_id", execution_id),
        shares_filled=_positive("shares_filled", shares_filled),
        direction=_direction(direction),
        broker_order_id=broker_order_id,
        price_cents=_non_negative_int("price_cents", price_cents),
        broker_timestamp=_observed("broker_timestamp", broker_timestamp, moment),
    )
    stored = _hedge_append(
        symbol,
        command,
        ev.OffChainOrderFilled,
        "hedge fill",
        {
            "shares_filled": command.shares_filled,
            "direction": command.direction,
            "broker_order_id": command.broker_order_id,
            "price_cents": command.price_cents,
            "broker_timestamp": command.broker_timestamp,
        },
        moment,
    )
    if stored is None:
        return []
    logger.info(
        "recorded offchain %s fill %s %s @ %s cents (execution %s)",
        command.direction,
        command.shares_filled,
        symbol,
        command.price_cents,
        command.execution_id,
    )
    return stored


hedge_fill = fill_record_offchain


def hedge_fail(
    *,
    symbol: str,
    execution_id: int,
    error: str,
    now: datetime | None = None,
) -> list[StoredEvent]:
    """Record that the symbol's pending hedge failed at the brokerage (clears pending).

    An identical replay returns [] and writes nothing; the same execution id failed with a
    different error raises `ReplayConflict`.
    """
    symbol = validate_symbol(symbol)
    command = position.FailOffChainOrder(
        execution_id=_non_negative_int("execution_id", execution_id), error=error
    )
    if not isinstance(error, str) or not error.strip():
        raise InvalidValue("error", error, "must be a non-empty string")
    moment = _aware("now", now) if now is not None else timezone.now()
    stored = _hedge_append(
        symbol, command, ev.OffChainOrderFailed, "hedge failure", {"error": error}, moment
    )
    if stored is None:
        return []
    logger.info("recorded hedge %s for %s failed: %s", command.execution_id, symbol, error)
    return stored


# --- batches ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordOutcome:
    """What became of one record of a batch: stored events, nothing (an identical replay),
    or the error that refused it."""

    index: int
    events: list[StoredEvent]
    error: DomainError | None = None

    @property
    def duplicate(self) -> bool:
        return self.error is None and not self.events


def records_ingest(
    *,
    records: Sequence[OnchainFill | tuple[Callable[..., list[StoredEvent]], Mapping[str, Any]]],
) -> list[RecordOutcome]:
    """Record a mixed batch in order, in one transaction, refusing records one by one.

    A record is an `OnchainFill` or a hedge service of this module with its keyword arguments.
    Consecutive fills go through `fills_record_batch` together (a fill it refuses is set
    aside as refused and the others are recorded); any other record runs in its own
    savepoint. A refused record (any `DomainError`) writes nothing and leaves the others as
    they are. One outcome per record, in input order.
    """
    outcomes: dict[int, RecordOutcome] = {}
    with transaction.atomic():
        if not all(isinstance(record, OnchainFill) for record in records):
            # A hedge moves the USDC pool itself (it takes the USDC gate exclusively): take it
            # first, so the fills before it in this transaction do not hold it shared then
            # need it exclusively while another writer waits on them (`inventory.usdc_deltas`).
            pools_lock({USDC_POOL})
        index = 0
        while index < len(records):
            if isinstance(records[index], OnchainFill):
                end = index
                while end < len(records) and isinstance(records[end], OnchainFill):
                    end += 1
                _ingest_fills(records, list(range(index, end)), outcomes)
                index = end
                continue
            service, kwargs = records[index]  # type: ignore[misc]
            try:
                with transaction.atomic():
                    outcomes[index] = RecordOutcome(index, service(**kwargs))
            except DomainError as error:
                outcomes[index] = RecordOutcome(index, [], error)
            index += 1
    return [outcomes[index] for index in range(len(records))]


def _batch_position(field: str) -> int:
    """ "fills[3].trade_id" -> 3"""
    return int(field.split("[", 1)[1].split("]", 1)[0])


def _ingest_fills(
    records: Sequence[Any], pending: list[int], outcomes: dict[int, RecordOutcome]
) -> None:
    while pending:
        try:
            with transaction.atomic():
                results = fills_record_batch(fills=[records[i] for i in pending])
        except BatchInvalid as invalid:
            refused = {pending[at]: error for at, error in invalid.errors}
            for index, error in refused.items():
                outcomes[index] = RecordOutcome(index, [], error)
            pending = [index for index in pending if index not in refused]
            continue
        except FillConflict as conflict:
            index = pending.pop(_batch_position(conflict.field))
            outcomes[index] = RecordOutcome(index, [], conflict)
            continue
        except DomainError as error:
            # Not attributable to one fill by the batch: record them one at a time.
            if len(pending) == 1:
                outcomes[pending[0]] = RecordOutcome(pending[0], [], error)
                return
            for index in pending:
                _ingest_fills(records, [index], outcomes)
            return
        for index, result in zip(pending, results, strict=True):
            outcomes[index] = RecordOutcome(index, result.events)
        return


# --- balance snapshots (B1) -------------------------------------------------------------------


def _log_stale(state: Any, command: snapshot_domain.SnapshotCommand) -> None:
    event = snapshot_domain.event_for(command)
    current = state.current() or snapshot_domain.SnapshotState()
    newest = current.watermarks.get(type(event).__name__)
    logger.warning(
        "stale %s snapshot ignored: fetched at %s, older than the newest recorded (%s)",
        type(event).__name__,
        command.fetched_at.isoformat(),
        newest.isoformat() if newest is not None else None,
    )


def snapshot_record(
    *,
    fetched_at: datetime,
    onchain_equity: Mapping[str, Decimal] | None = None,
    offchain_equity: Mapping[str, Decimal] | None = None,
    onchain_cash: Decimal | None = None,
    offchain_cash: Decimal | None = None,
    onchain_block: int | None = None,
    offchain_usdc: Decimal | None = None,
    offchain_cash_withdrawable: Decimal | None = None,
    now: datetime | None = None,
) -> list[StoredEvent]:
    """Record polled venue balances (each argument given is one snapshot event).

    Equity mappings are base symbol -> shares; cash in USDC/USD. A pool takes a snapshot's
    value only while nothing is inflight in it and only when `fetched_at` (stamp it before
    asking the venue) is after the pool's latest inflight change; a snapshot older than the
    newest of its kind is ignored.
    `onchain_block` is the block every onchain read was pinned to (spec 15.2: fills at or
    below it are already inside). `offchain_usdc` (Alpaca's `USDCUSD` quantity) and
    `offchain_cash_withdrawable` go with `offchain_cash` (spec 15.5): the USDC pool counts cash
    plus USDC at Alpaca.
    """
    commands: list[snapshot_domain.SnapshotCommand] = []
    if onchain_equity is not None:
        commands.append(
            snapshot_domain.RecordOnchainEquity(onchain_equity, fetched_at, onchain_block)
        )
    if offchain_equity is not None:
        commands.append(snapshot_domain.RecordOffchainEquity(offchain_equity, fetched_at))
    if onchain_cash is not None:
        commands.append(snapshot_domain.RecordOnchainCash(onchain_cash, fetched_at, onchain_block))
    if offchain_cash is not None:
        commands.append(
            snapshot_domain.RecordOffchainCash(
                offchain_cash,
                fetched_at,
                usdc_balance=offchain_usdc,
                cash_withdrawable=offchain_cash_withdrawable,
            )
        )
    if not commands:
        raise InvalidValue("snapshot", None, "give at least one balance to record")
    moment = _aware("now", now) if now is not None else timezone.now()
    for command in commands:
        snapshot_domain.event_for(command)  # validate everything before writing
    _observed("fetched_at", fetched_at, moment)

    def attempt() -> list[StoredEvent]:
        loaded = aggregate_state(snapshot_domain.SPEC, snapshot_domain.SNAPSHOT_AGGREGATE_ID)
        state = loaded.state
        events = []
        for command in commands:
            handled = snapshot_domain.SPEC.handle(loaded.state, command, moment)
            if not handled:
                _log_stale(loaded.state, command)
            events.extend(handled)
        if not events:
            return []
        for event in events:
            state = snapshot_domain.SPEC.apply(state, event)
        append = PendingAppend(
            spec=snapshot_domain.SPEC,
            aggregate_id=snapshot_domain.SNAPSHOT_AGGREGATE_ID,
            after_sequence=loaded.sequence,
            events=events,
            state=state,
            cached=loaded.cached,
        )
        return appends_commit([append], now=moment)

    return in_retried_transaction(
        attempt, what=f"{ev.SNAPSHOT}/{snapshot_domain.SNAPSHOT_AGGREGATE_ID}"
    )


# --- assets (spec section 10, B8) -------------------------------------------------------------


class AssetConflict(InvalidValue):
    """A base symbol or token address that is already registered."""


class TokenReader(Protocol):
    """What registration reads from a token contract (`venues.chain.EvmChain` has it)."""

    def erc20_decimals(self, *, token: str) -> int: ...
    def erc20_symbol(self, *, token: str) -> str: ...


def _token_contract_check(
    reader: TokenReader, *, address: str, decimals: int, token_symbol: str
) -> None:
    try:
        onchain_decimals = int(reader.erc20_decimals(token=address))
        onchain_symbol = str(reader.erc20_symbol(token=address))
    except Exception as exc:  # noqa: BLE001 - any failure to read refuses the registration
        raise InvalidValue(
            "token_address", address, f"cannot read decimals() and symbol() from it: {exc}"
        ) from None
    if onchain_decimals != decimals:
        raise InvalidValue(
            "decimals",
            decimals,
            f"the token contract at {address} says decimals()={onchain_decimals}",
        )
    if onchain_symbol != token_symbol:
        raise InvalidValue(
            "token_symbol",
            token_symbol,
            f"the token contract at {address} says symbol()={onchain_symbol!r}",
        )


# The unique constraints of `Asset` (PostgreSQL's names) -> the field a conflict names.
_ASSET_UNIQUE = {
    "inventory_asset_base_symbol_key": "base_symbol",
    "inventory_asset_token_address_key": "token_address",
}


def asset_register(
    *,
    base_symbol: str,
    token_address: str,
    token_symbol: str,
    vault_id: str,
    changed_by: str,
    decimals: int = 18,
    rebalancing_enabled: bool = True,
    now: datetime | None = None,
    token_reader: TokenReader | None = None,
) -> Asset:
    """Register a tokenized equity; refuses a token whose symbol's base is not `base_symbol`.

    With `token_reader` (the Base chain client) the token contract's `decimals()` and
    `symbol()` are read and must equal `decimals` and `token_symbol`: every amount of the
    asset is converted with these decimals, so a mismatch is refused, not stored."""
    try:
        base_symbol = validate_symbol(base_symbol)
    except InvalidValue as error:
        raise InvalidValue("base_symbol", base_symbol, error.rule) from None
    if not isinstance(token_symbol, str):
        raise InvalidValue("token_symbol", token_symbol, "must be a string")
    parsed = TokenizedEquitySymbol.parse(token_symbol)
    if parsed.base != base_symbol:
        raise InvalidValue(
            "token_symbol",
            token_symbol,
            f"its base {parsed.base!r} differs from base_symbol {base_symbol!r}",
        )
    address = to_checksum_address(validate_address("token_address", token_address))
    if not isinstance(vault_id, str) or not _VAULT_ID.fullmatch(vault_id):
        raise InvalidValue("vault_id", vault_id, "must be 0x followed by 64 hex digits")
    if isinstance(decimals, bool) or not isinstance(decimals, int) or not 0 <= decimals <= 77:
        raise InvalidValue("decimals", decimals, "must be an integer between 0 and 77")
    if not isinstance(rebalancing_enabled, bool):
        raise InvalidValue("rebalancing_enabled", rebalancing_enabled, "must be a boolean")
    if token_reader is not None:
        _token_contract_check(
            token_reader, address=address, decimals=decimals, token_symbol=token_symbol
        )
    who = _changed_by(changed_by)
    moment = _aware("now", now) if now is not None else timezone.now()
    with transaction.atomic():
        if Asset.objects.filter(base_symbol=base_symbol).exists():
            raise AssetConflict("base_symbol", base_symbol, "is already registered")
        if Asset.objects.filter(token_address=address).exists():
            raise AssetConflict("token_address", address, "is already registered")
        try:
            with transaction.atomic():  # a savepoint: a concurrent registration wins the race
                asset = Asset.objects.create(
                    base_symbol=base_symbol,
                    token_address=address,
                    token_symbol=token_symbol,
                    decimals=decimals,
                    vault_id=vault_id.lower(),
                    rebalancing_enabled=rebalancing_enabled,
                    created_at=moment,
                    updated_at=moment,
                )
        except IntegrityError as error:
            # Registered by another writer between the checks above and this insert.
            field = _ASSET_UNIQUE.get(unique_violated(error) or "")
            if field is None:
                raise
            value = address if field == "token_address" else base_symbol
            raise AssetConflict(field, value, "is already registered") from None
        aggregate_execute(
            spec=settings_domain.SPEC,
            aggregate_id=base_symbol,
            command=settings_domain.ChangeSetting(
                scope=base_symbol,
                setting=settings_domain.ASSET_REGISTERED,
                old_value=None,
                new_value=(
                    f"token_address={address} token_symbol={token_symbol} "
                    f"decimals={decimals} vault_id={asset.vault_id} "
                    f"rebalancing_enabled={settings_domain.format_setting(rebalancing_enabled)}"
                ),
                changed_by=who,
            ),
            now=moment,
        )
    logger.info("registered asset %s -> %s (%s) by %s", base_symbol, address, token_symbol, who)
    return asset


# --- settings ---------------------------------------------------------------------------------


def settings_row_defaults() -> dict[str, Any]:
    config = django_settings.REBALANCING
    return {
        "paused": False,
        "equity_target_ratio": config.equity_target_ratio,
        "equity_deviation": config.equity_deviation,
        "usdc_target_ratio": config.usdc_target_ratio,
        "usdc_deviation": config.usdc_deviation,
        "equity_minimum_shares": config.equity_minimum_shares,
        "usdc_minimum": config.usdc_minimum,
        "equity_cap_shares": config.equity_cap_shares,
        "usdc_cap": config.usdc_cap,
    }


def settings_row_ensure() -> RebalancingSettingsRow:
    """The global settings row, created from `settings.REBALANCING` on first use."""
    row = RebalancingSettingsRow.objects.filter(scope=settings_domain.GLOBAL_SCOPE).first()
    if row is not None:
        return row
    with transaction.atomic():
        row, created = RebalancingSettingsRow.objects.get_or_create(
            scope=settings_domain.GLOBAL_SCOPE, defaults=settings_row_defaults()
        )
    if created:
        logger.info("created global rebalancing settings from the environment defaults")
    return row


def setting_change(
    *,
    scope: str,
    setting: str,
    new_value: Any,
    changed_by: str,
    now: datetime | None = None,
) -> StoredEvent | None:
    """Change one setting and append the audited `SettingChanged` in the same transaction.

    `scope` is "global" or a registered asset's base symbol. Returns the event, or None
    when the value does not change (nothing written).
    """
    value = settings_domain.parse_setting(scope, setting, new_value)
    who = _changed_by(changed_by)
    moment = _aware("now", now) if now is not None else timezone.now()
    if scope == settings_domain.GLOBAL_SCOPE:
        settings_row_ensure()
    with transaction.atomic():
        if scope == settings_domain.GLOBAL_SCOPE:
            row: Any = RebalancingSettingsRow.objects.select_for_update().get(scope=scope)
        else:
            row = Asset.objects.select_for_update().filter(base_symbol=scope).first()
            if row is None:
                raise InvalidValue("scope", scope, "no asset is registered with this symbol")
        old = getattr(row, setting)
        if old == value and type(old) is type(value):
            return None
        stored = aggregate_execute(
            spec=settings_domain.SPEC,
            aggregate_id=scope,
            command=settings_domain.ChangeSetting(
                scope=scope,
                setting=setting,
                old_value=settings_domain.format_setting(old),
                new_value=settings_domain.format_setting(value),
                changed_by=who,
            ),
            now=moment,
        )
        setattr(row, setting, value)
        row.updated_at = moment
        fields = [setting, "updated_at"]
        if isinstance(row, RebalancingSettingsRow):
            row.updated_by = who
            fields.append("updated_by")
        row.save(update_fields=fields)
    logger.info("setting %s/%s changed from %s to %s by %s", scope, setting, old, value, who)
    return stored[0] if stored else None


# --- API tokens -------------------------------------------------------------------------------

API_TOKEN_PREFIX = "rbt_"
_TOKEN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # re.fullmatch


class ApiTokenConflict(InvalidValue):
    """A token name that is already taken."""


def api_token_digest(secret: str) -> str:
    """The stored form of a token: SHA-256 of the secret, hex (the secret is 256 random bits)."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _scopes(value: Any) -> str:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise InvalidValue("scopes", value, "must be a list of scopes")
    scopes = sorted(set(value))
    unknown = [scope for scope in scopes if scope not in ApiTokenScope.values]
    if unknown or not scopes:
        allowed = ", ".join(ApiTokenScope.values)
        raise InvalidValue("scopes", list(value), f"give one or more of: {allowed}")
    return " ".join(scopes)


def api_token_create(
    *, name: str, scopes: Iterable[str], created_by: str = "", now: datetime | None = None
) -> tuple[ApiToken, str]:
    """Create a token; returns the row and the secret, which is never stored or shown again."""
    if not isinstance(name, str) or not _TOKEN_NAME.fullmatch(name):
        raise InvalidValue(
            "name", name, "must be 1-64 letters, digits, '_', '.' or '-', starting alphanumeric"
        )
    scope_text = _scopes(scopes)
    moment = _aware("now", now) if now is not None else timezone.now()
    secret = API_TOKEN_PREFIX + secrets.token_urlsafe(32)
    try:
        with transaction.atomic():
            token = ApiToken.objects.create(
                name=name,
                token_hash=api_token_digest(secret),
                prefix=secret[: len(API_TOKEN_PREFIX) + 4],
                scopes=scope_text,
                created_by=created_by,
                created_at=moment,
            )
    except IntegrityError as error:
        if unique_violated(error) != "inventory_apitoken_name_key":
            raise
        raise ApiTokenConflict("name", name, "a token with this name already exists") from None
    logger.info("created API token %s (scopes %s) by %s", name, scope_text, created_by or "-")
    return token, secret


def api_token_revoke(*, name: str, revoked_by: str = "", now: datetime | None = None) -> ApiToken:
    """Revoke a token by name: from now on it authenticates nothing. The row stays (audit)."""
    moment = _aware("now", now) if now is not None else timezone.now()
    with transaction.atomic():
        token = ApiToken.objects.select_for_update().filter(name=name).first()
        if token is None:
            raise InvalidValue("name", name, "no API token has this name")
        if token.revoked_at is not None:
            raise InvalidValue("name", name, f"the token was already revoked at {token.revoked_at}")
        token.revoked_at = moment
        token.revoked_by = revoked_by
        token.save(update_fields=["revoked_at", "revoked_by"])
    logger.info("revoked API token %s by %s", name, revoked_by or "-")
    return token


# --- rebuild: `inventory.rebuild` (re-exported here, where callers have always found it) ------


def aggregate_specs() -> list[Any]:
    """Every aggregate the log holds, as the store folds it."""
    from inventory.domain import challengers, costs, decisions, market_clock, mint, redemption, usdc

    return [
        position.SPEC,
        mint.SPEC,
        redemption.SPEC,
        usdc.SPEC,
        snapshot_domain.SPEC,
        settings_domain.SPEC,
        decisions.SPEC,
        costs.SPEC,
        challengers.SPEC,
        market_clock.SPEC,
    ]


def aggregate_states_check(*, write: bool) -> list[StateDifference]:
    """Compare every cached aggregate state with a fold of its whole log (and, with `write`,
    store the fold). Runs in one transaction."""
    with transaction.atomic():
        differences = aggregate_states_rebuild(specs=aggregate_specs(), write=write)
    for difference in differences:
        logger.warning("aggregate state difference: %s", difference)
    return differences

"""The aggregate store: load, decide, append with the next sequence, project, publish.

Loading an aggregate reads its cached state (`AggregateState`, written in the transaction that
appended its last events) and folds only the events after it, so a command costs the same
whatever the aggregate's history; the log stays the truth (a missing, stale or foreign-version
state is folded from the log).

Appending, projecting into the inventory pools and notifying the trigger happen in one database
transaction (`appends_commit`):

1. plan: which pools the events touch, plus the pools the trigger will re-check (an operation's
   pool and USDC when it ends), from the events alone;
2. lock all of those pool rows once, in key order (one global order: writers never deadlock),
   except the USDC row in a batch of onchain fills: the fills take the USDC gate shared and
   record their USDC changes as pending deltas (`inventory.usdc_deltas`), so fills of
   different symbols do not take turns;
3. refuse onchain fills whose block is beyond the chain head the service has seen
   (`inventory.chain_head`); insert the events (their ids are taken under the locks, so for
   any two events that touch a common pool, id order is the order in which they were
   applied), their idempotency keys (unique by scope and key) and the aggregates' new states;
   raise the chain head with the onchain snapshots;
4. apply them to the locked pools (one update per pool) and send `events_appended` inside the
   transaction, so whatever a receiver writes commits or rolls back with the events.

A concurrent append to the same aggregate loses on the unique (type, id, sequence) constraint
(or on a unique idempotency key another writer just recorded)
and is retried from a fresh load; a transaction that PostgreSQL aborts as a deadlock or a
serialization failure is retried too. Writers wait their turn rather than fail for being
concurrent: on PostgreSQL every outermost append transaction holds a shared advisory lock and a
retry takes it exclusively, so a writer that lost once runs alone among them (no starvation
however many writers collide); retries back off and give up (`ConcurrencyError`, an HTTP 503)
only after `APPEND_DEADLINE_S`.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, TypeVar

from django.db import IntegrityError, OperationalError, connection, transaction
from django.dispatch import Signal
from django.utils import timezone
from tenacity import (
    RetryCallState,
    RetryError,
    Retrying,
    retry_if_exception,
    stop_after_delay,
)

from inventory import rawsql
from inventory.chain_head import fills_bound_check, head_raise
from inventory.codec import decode_event, encode_event
from inventory.db_errors import sqlstate, unique_violated
from inventory.domain.aggregate import AggregateSpec
from inventory.domain.events import POSITION as _POSITION
from inventory.domain.events import DomainEvent
from inventory.domain.lifecycle import Lifecycle
from inventory.domain.values import InvalidValue
from inventory.event_keys import Claim, event_keys
from inventory.models import AggregateState, Event, EventKey
from inventory.state_codec import Unencodable, decode_state, encode_state, state_version

logger = logging.getLogger(__name__)

# Sent inside the appending transaction, after the projection has been updated.
# kwargs: events (list[StoredEvent]), pools (set[str]: the pool keys the projection touched),
# rows (dict[str, InventoryPool]: every pool row the transaction locked, already updated).
events_appended = Signal()

T = TypeVar("T")

# PostgreSQL: deadlock_detected, serialization_failure.
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})

# A writer that keeps losing (only possible for appends nested in an outer transaction, which
# take no turn: see `_take_turn`) gives up after this long.
APPEND_DEADLINE_S = 30.0
BACKOFF_CAP_S = 0.2
# pg_advisory_xact_lock key of the append turn ("rbal" as an integer).
APPEND_TURN_LOCK = 0x7262616C


class ConcurrencyError(Exception):
    def __init__(self, aggregate_type: str, aggregate_id: str, attempts: int) -> None:
        self.aggregate_type = aggregate_type
        self.aggregate_id = aggregate_id
        self.attempts = attempts
        super().__init__(
            f"{aggregate_type}/{aggregate_id}: gave up after {attempts} concurrent appends"
        )


@dataclass(frozen=True)
class StoredEvent:
    id: int
    aggregate_type: str
    aggregate_id: str
    sequence: int
    event: DomainEvent
    recorded_at: datetime
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: Event) -> StoredEvent:
        return cls(
            id=row.id,
            aggregate_type=row.aggregate_type,
            aggregate_id=row.aggregate_id,
            sequence=row.sequence,
            event=row.domain_event(),
            recorded_at=row.recorded_at,
            metadata=row.metadata,
        )


@dataclass(frozen=True)
class LoadedAggregate:
    state: Lifecycle[Any]
    sequence: int
    events: list[StoredEvent]


class KeyAlreadyRecorded(InvalidValue):
    """An event claims an idempotency key (trade id, execution id, withdrawal id) that an
    earlier event holds."""

    def __init__(self, scope: str, key: str) -> None:
        self.scope = scope
        self.key = key
        super().__init__(scope, key, "is already recorded")


def aggregate_events(*, aggregate_type: str, aggregate_id: str) -> list[StoredEvent]:
    rows = Event.objects.filter(aggregate_type=aggregate_type, aggregate_id=aggregate_id).order_by(
        "sequence"
    )
    return [StoredEvent.from_row(row) for row in rows]


def aggregate_load(spec: AggregateSpec, aggregate_id: str) -> LoadedAggregate:
    """The full history and its fold (for inspection and the short operation aggregates;
    commands go through `aggregate_state`)."""
    stored = aggregate_events(aggregate_type=spec.aggregate_type, aggregate_id=aggregate_id)
    state = spec.fold([s.event for s in stored])
    return LoadedAggregate(
        state=state, sequence=stored[-1].sequence if stored else 0, events=stored
    )


@dataclass(frozen=True)
class AggregateSnapshot:
    """An aggregate's state after `sequence`; `cached` says whether a state row exists."""

    state: Lifecycle[Any]
    sequence: int
    cached: bool


def _json(value: Any) -> Any:
    """A JSON column read with plain SQL: text on SQLite (and from Django's psycopg setup)."""
    return json.loads(value) if isinstance(value, str | bytes) else value


_STATE_SQL = (
    'SELECT s."sequence", s."version", s."state", (SELECT MAX(e."sequence") '
    'FROM "inventory_event" e WHERE e."aggregate_type" = s."aggregate_type" '
    'AND e."aggregate_id" = s."aggregate_id") '
    'FROM "inventory_aggregatestate" s WHERE s."aggregate_type" = %s AND s."aggregate_id" = %s'
)


# The states this process last wrote or read, by aggregate, with the stored value they came
# from (as the database returns it): a row whose stored value is the same decodes to the same
# state, so it is not decoded again. Keyed by content, never by sequence, so a write that was
# rolled back (or another process's write) can only miss, never hit a wrong state.
_decoded: dict[tuple[str, str, str], tuple[Any, Lifecycle[Any]]] = {}
_DECODED_MAX = 4096


def _state_key(aggregate_type: str, aggregate_id: str) -> tuple[str, str, str]:
    return (str(connection.settings_dict.get("NAME")), aggregate_type, aggregate_id)


def _state_decoded(aggregate_type: str, aggregate_id: str, stored: Any) -> Lifecycle[Any]:
    key = _state_key(aggregate_type, aggregate_id)
    hit = _decoded.get(key)
    if hit is not None and hit[0] == stored:
        return hit[1]
    state = decode_state(_json(stored))
    _state_remember(key, stored, state)
    return state


def _state_remember(key: tuple[str, str, str], stored: Any, state: Lifecycle[Any]) -> None:
    if len(_decoded) >= _DECODED_MAX:
        _decoded.clear()
    _decoded[key] = (stored, state)


def aggregate_state(spec: AggregateSpec, aggregate_id: str) -> AggregateSnapshot:
    """The state from the cached row plus the events after it: one statement (with the log's
    latest sequence as an index lookup) when the cached state is current, else a second one
    reads the events after it."""
    found = rawsql.fetch(_STATE_SQL, [spec.aggregate_type, aggregate_id])
    state: Lifecycle[Any] = Lifecycle.uninitialized()
    after = 0
    if found and found[0][1] == state_version():
        try:
            state = _state_decoded(spec.aggregate_type, aggregate_id, found[0][2])
            after = int(found[0][0])
            if found[0][3] is not None and int(found[0][3]) == after:
                return AggregateSnapshot(state=state, sequence=after, cached=True)
        except (Unencodable, TypeError, ValueError, KeyError, AttributeError) as error:
            logger.warning(
                "cached state of %s/%s unreadable (%s); folding the log",
                spec.aggregate_type,
                aggregate_id,
                error,
            )
            state = Lifecycle.uninitialized()
    tail = rawsql.fetch(
        'SELECT "sequence", "event_type", "payload" FROM "inventory_event" '
        'WHERE "aggregate_type" = %s AND "aggregate_id" = %s AND "sequence" > %s '
        'ORDER BY "sequence"',
        [spec.aggregate_type, aggregate_id, after],
    )
    sequence = after
    for event_sequence, event_type, payload in tail:
        state = spec.apply(state, decode_event(event_type, _json(payload)))
        sequence = int(event_sequence)
    return AggregateSnapshot(state=state, sequence=sequence, cached=bool(found))


@dataclass(frozen=True)
class PendingAppend:
    """Decided events of one aggregate, appended after `after_sequence`.

    `state` is the aggregate's state after them (cached for the next load); None drops the
    cached state (the next load folds the log). `cached` says whether a state row exists
    (None: unknown).
    """

    spec: AggregateSpec
    aggregate_id: str
    after_sequence: int
    events: Sequence[DomainEvent]
    metadata: dict[str, Any] = field(default_factory=dict)
    state: Lifecycle[Any] | None = None
    cached: bool | None = None


_EVENT_COLUMNS = (
    "aggregate_type",
    "aggregate_id",
    "sequence",
    "event_type",
    "event_version",
    "payload",
    "metadata",
    "recorded_at",
)
_EVENT_VERSION = Event._meta.get_field("event_version").default


def _insert(
    appends: Sequence[PendingAppend], now: datetime, *, deferred: bool = False
) -> tuple[list[StoredEvent], list[int]]:
    """Insert every event of the batch (multi-row INSERTs in batch order): ids follow the
    batch order. `deferred`: the INSERT waits for the next round trip and each event's id is
    an `EventRef` until then (the returned list of ids is filled when it is sent)."""
    values: list[tuple[Any, ...]] = []
    decided: list[tuple[PendingAppend, int, DomainEvent]] = []
    for append in appends:
        aggregate_type = append.spec.aggregate_type
        for offset, event in enumerate(append.events, start=1):
            if aggregate_type != event.AGGREGATE_TYPE:
                raise TypeError(
                    f"{type(event).__name__} belongs to {event.AGGREGATE_TYPE}, "
                    f"not {aggregate_type}"
                )
            event_type, payload = encode_event(event)
            sequence = append.after_sequence + offset
            values.append(
                (
                    aggregate_type,
                    append.aggregate_id,
                    sequence,
                    event_type,
                    _EVENT_VERSION,
                    payload,
                    append.metadata,
                    now,
                )
            )
            decided.append((append, sequence, event))
    ids = rawsql.insert_rows(Event, _EVENT_COLUMNS, values, returning_pk=True, deferred=deferred)
    refs: Sequence[Any] = (
        [rawsql.EventRef(a.spec.aggregate_type, a.aggregate_id, seq) for a, seq, _ in decided]
        if deferred
        else ids
    )
    return [
        StoredEvent(
            id=event_id,
            aggregate_type=append.spec.aggregate_type,
            aggregate_id=append.aggregate_id,
            sequence=sequence,
            event=event,
            recorded_at=now,
            metadata=append.metadata,
        )
        for event_id, (append, sequence, event) in zip(refs, decided, strict=True)
    ], ids


_KEY_COLUMNS = (
    "scope",
    "day",
    "key",
    "event_id",
    "aggregate_type",
    "aggregate_id",
    "recorded_at",
)


def _keys_of(stored: Iterable[StoredEvent]) -> list[tuple[Any, ...]]:
    """`EventKey` rows (values in `_KEY_COLUMNS` order) of the stored events."""
    return [
        (*claim, s.id, s.aggregate_type, s.aggregate_id, s.recorded_at)
        for s in stored
        for claim in event_keys(s.aggregate_type, s.aggregate_id, s.event)
    ]


def _keys_statement(scope: str, keys: list[str]) -> tuple[str, list[Any]]:
    return (
        'SELECT "key", "event_id" FROM "inventory_eventkey" WHERE "scope" = %s '
        f'AND "key" IN ({rawsql.placeholders(len(keys))})',
        [scope, *keys],
    )


def keys_recorded_statements(claims: Iterable[Claim]) -> list[tuple[str, list[Any]]]:
    """The statements `keys_recorded(claims)` runs (to prefetch them)."""
    groups: dict[str, set[str]] = {}
    for claim in claims:
        groups.setdefault(claim.scope, set()).add(claim.key)
    return [_keys_statement(scope, sorted(keys)) for scope, keys in sorted(groups.items())]


def aggregate_state_statement(spec: AggregateSpec, aggregate_id: str) -> tuple[str, list[Any]]:
    """The first statement `aggregate_state(spec, aggregate_id)` runs (to prefetch it)."""
    return _STATE_SQL, [spec.aggregate_type, aggregate_id]


def keys_recorded(claims: Iterable[Claim]) -> dict[Claim, int]:
    """Claim -> id of the event already holding its key, for the claims that are recorded:
    one lookup of the unique (scope, key) index per scope. A key is found whatever day it
    was filed under (its identity does not depend on a timestamp the reporter sends)."""
    groups: dict[str, list[Claim]] = {}
    for claim in set(claims):
        groups.setdefault(claim.scope, []).append(claim)
    found: dict[Claim, int] = {}
    for scope, grouped in sorted(groups.items()):
        rows = rawsql.fetch(*_keys_statement(scope, sorted({claim.key for claim in grouped})))
        holders = {key: event_id for key, event_id in rows}
        for claim in grouped:
            if claim.key in holders:
                found[claim] = holders[claim.key]
    return found


def _keys_check(appends: Sequence[PendingAppend]) -> None:
    """Refuse events claiming a key already recorded (or twice in the batch): one lookup."""
    claimed = [
        claim
        for append in appends
        for event in append.events
        for claim in event_keys(append.spec.aggregate_type, append.aggregate_id, event)
    ]
    if not claimed:
        return
    seen: set[tuple[str, str]] = set()
    for claim in claimed:
        if claim.identity in seen:
            raise KeyAlreadyRecorded(claim.scope, claim.key)
        seen.add(claim.identity)
    recorded = keys_recorded(claimed)
    if recorded:
        claim = min(recorded)
        raise KeyAlreadyRecorded(claim.scope, claim.key)


_STATE_FIELD = AggregateState._meta.get_field("state")


_STATE_UPSERT = (
    'INSERT INTO "inventory_aggregatestate" ("aggregate_type", "aggregate_id", "sequence", '
    '"version", "state") VALUES (%s, %s, %s, %s, %s) ON CONFLICT ("aggregate_type", '
    '"aggregate_id") DO UPDATE SET "sequence" = EXCLUDED."sequence", '
    '"version" = EXCLUDED."version", "state" = EXCLUDED."state"'
)


def _states_save(appends: Sequence[PendingAppend], *, deferred: bool = False) -> None:
    """Store each aggregate's new state (or drop it when it cannot be cached). `deferred`
    (PostgreSQL): one upsert per aggregate, sent with the next round trip."""
    version = state_version()
    done: set[tuple[str, str]] = set()
    for append in reversed(appends):  # an aggregate appended in several runs: its last state
        if (append.spec.aggregate_type, append.aggregate_id) in done:
            continue
        done.add((append.spec.aggregate_type, append.aggregate_id))
        aggregate = {
            "aggregate_type": append.spec.aggregate_type,
            "aggregate_id": append.aggregate_id,
        }
        encoded: dict[str, Any] | None = None
        if append.state is not None:
            try:
                encoded = encode_state(append.state)
            except Unencodable as error:
                logger.debug("%s/%s state not cached: %s", *aggregate.values(), error)
        if encoded is None:
            if append.cached is not False:
                rawsql.execute(
                    'DELETE FROM "inventory_aggregatestate" WHERE "aggregate_type" = %s '
                    'AND "aggregate_id" = %s',
                    list(aggregate.values()),
                )
            continue
        sequence = append.after_sequence + len(append.events)
        prepared = rawsql.prep_save(_STATE_FIELD, encoded, connection)
        if deferred:
            rawsql.defer(_STATE_UPSERT, [*aggregate.values(), sequence, version, prepared])
            continue
        if isinstance(prepared, str):
            # The JSON text a later read returns for this row (SQLite); where the database
            # reformats JSON (PostgreSQL) a read remembers what it decoded instead.
            _state_remember(_state_key(*aggregate.values()), prepared, append.state)
        updated = (
            0
            if append.cached is False
            else rawsql.execute(
                'UPDATE "inventory_aggregatestate" SET "sequence" = %s, "version" = %s, '
                '"state" = %s WHERE "aggregate_type" = %s AND "aggregate_id" = %s',
                [sequence, version, prepared, *aggregate.values()],
            )
        )
        if not updated:
            rawsql.insert_rows(
                AggregateState,
                ("aggregate_type", "aggregate_id", "sequence", "version", "state"),
                [(*aggregate.values(), sequence, version, encoded)],
            )


def appends_commit(
    appends: Sequence[PendingAppend],
    *,
    now: datetime,
    locked: dict[str, Any] | None = None,
    keys_checked: bool = False,
    pipelined: bool = False,
) -> list[StoredEvent]:
    """Lock, insert, cache states, project and publish a batch of decided events.

    Must run inside a transaction. `locked` are pool rows the caller already locked for this
    transaction (they must cover every pool the batch needs; anything missing is locked with
    them, in key order). `keys_checked` skips the idempotency key lookup when the caller has
    already refused duplicates under the same locks.

    `pipelined` (PostgreSQL, `rawsql.pipelining`; appends of positions only): every write of
    the batch (events, keys, states, pools, legs) goes to the server in one round trip, sent
    before the receivers of `events_appended` run (they see the real event ids); the rows
    written and the rules applied are the same.
    """
    from inventory.projection import pools_lock, projection_apply, projection_plan

    appends = [a for a in appends if a.events]
    if not appends:
        return []
    plan = projection_plan(
        [(a.spec.aggregate_type, a.aggregate_id, a.after_sequence, a.events) for a in appends]
    )
    if locked is not None and plan.lock <= locked.keys():
        rows = locked
    else:
        wanted = plan.lock | (locked.keys() if locked else set())
        rows = pools_lock(wanted, shared=plan.shared) if wanted else {}
    if not keys_checked:
        _keys_check(appends)
    fills_bound_check(event for append in appends for event in append.events)
    if pipelined and any(a.spec.aggregate_type != _POSITION for a in appends):
        pipelined = False
    stored, ids = _insert(appends, now, deferred=pipelined)
    rawsql.insert_rows(EventKey, _KEY_COLUMNS, _keys_of(stored), deferred=pipelined)
    if not pipelined:
        head_raise(stored)  # position events carry no snapshot block
    _states_save(appends, deferred=pipelined)
    domains: dict[str, Any] = {}
    pools = projection_apply(stored, plan=plan, rows=rows, domains=domains, deferred=pipelined)
    if pipelined:
        rawsql.flush()
        real = {s.id: event_id for s, event_id in zip(stored, ids, strict=True)}
        stored = [replace(s, id=event_id) for s, event_id in zip(stored, ids, strict=True)]
        for row in rows.values():
            if type(row.last_event_id) is rawsql.EventRef:
                row.last_event_id = real[row.last_event_id]
    events_appended.send(sender=Event, events=stored, pools=pools, rows=rows, domains=domains)
    return stored


def _retryable(error: BaseException) -> bool:
    if isinstance(error, IntegrityError):
        return _is_sequence_conflict(error)
    if isinstance(error, OperationalError):
        return sqlstate(error) in RETRYABLE_SQLSTATES
    return False


def _take_turn(*, alone: bool, deferred: bool = False) -> None:
    """PostgreSQL, outermost transaction only: share the append turn, or (a retry) hold it
    alone. Taken first in the transaction, before any row lock, so waiting for it never
    deadlocks; a nested append (its outer transaction may hold row locks) takes no turn.
    `deferred`: sent in front of the transaction's first statement (`rawsql.defer`), which
    must then be one of `inventory.rawsql`'s."""
    if connection.vendor != "postgresql":
        return
    function = "pg_advisory_xact_lock" if alone else "pg_advisory_xact_lock_shared"
    sql = f"SELECT {function}(%s)"
    if deferred and rawsql.pipelining():
        rawsql.defer(sql, [APPEND_TURN_LOCK])
        return
    with connection.cursor() as cursor:
        cursor.execute(sql, [APPEND_TURN_LOCK])


def _append_wait(attempt: int, *, outermost: bool) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based). The outermost
    transaction's first retry holds the append turn alone, so it goes at once; after that
    (and in a savepoint always) a jittered, growing wait, so writers that lost together do
    not collide again in lockstep."""
    if outermost and attempt <= 2:
        return 0.0
    return random.uniform(0, min(BACKOFF_CAP_S, 0.005 * 2**attempt))


def in_retried_transaction(work: Callable[[], T], *, what: str, pipelined: bool = False) -> T:
    """Run `work` in a transaction (a savepoint when nested), again from the start when it
    lost a sequence race, a deadlock or a serialization failure: the retry waits for its turn
    alone (`_take_turn`), then backs off (`_append_wait`) until `APPEND_DEADLINE_S`.

    The first attempt runs bare: nearly every call succeeds at once, and it is the hot path
    of every fill (tenacity's loop costs tens of microseconds a call). The retries run on
    tenacity, numbered from 2.

    `pipelined`: the turn is sent with `work`'s first statement (which must be one of
    `inventory.rawsql`'s, e.g. its `prefetch`). Whatever `work` left deferred is sent before
    the commit; what it left prefetched is dropped when the transaction ends."""
    outermost = not connection.in_atomic_block
    started = time.monotonic()

    def once(*, alone: bool) -> T:
        try:
            with transaction.atomic():
                if outermost:
                    _take_turn(alone=alone, deferred=pipelined)
                result = work()
                rawsql.flush()
                return result
        finally:
            # Nothing deferred outlives its transaction or savepoint.
            rawsql.pipeline_reset(keep_prefetched=not outermost)

    def log(state: RetryCallState, attempt: int) -> None:
        error = state.outcome.exception() if state.outcome else None
        logger.warning("%s: %s (attempt %d), retrying", what, error, attempt)

    try:
        return once(alone=False)
    except (IntegrityError, OperationalError) as error:
        if not _retryable(error):
            raise
        logger.warning("%s: %s (attempt %d), retrying", what, error, 1)
    elapsed = time.monotonic() - started
    if elapsed < APPEND_DEADLINE_S:
        time.sleep(_append_wait(1, outermost=outermost))
        retrying = Retrying(
            retry=retry_if_exception(_retryable),
            stop=stop_after_delay(APPEND_DEADLINE_S - elapsed),
            wait=lambda state: _append_wait(state.attempt_number + 1, outermost=outermost),
            after=lambda state: log(state, state.attempt_number + 1),
        )
        try:
            return retrying(once, alone=True)
        except RetryError as error:
            attempts = error.last_attempt.attempt_number + 1
    else:
        attempts = 1
    aggregate_type, _, aggregate_id = what.partition("/")
    raise ConcurrencyError(aggregate_type, aggregate_id, attempts)


def aggregate_execute(
    *,
    spec: AggregateSpec,
    aggregate_id: str,
    command: Any,
    now: datetime | None = None,
    metadata: dict[str, Any] | None = None,
) -> list[StoredEvent]:
    """Load, `handle(command)`, append the new events and publish them, in one transaction.

    A domain error from `handle` propagates and nothing is written.
    """
    moment = now or timezone.now()

    def attempt() -> list[StoredEvent]:
        loaded = aggregate_state(spec, aggregate_id)
        events = list(spec.handle(loaded.state, command, moment))
        if not events:
            return []
        state = loaded.state
        for event in events:
            state = spec.apply(state, event)
        append = PendingAppend(
            spec=spec,
            aggregate_id=aggregate_id,
            after_sequence=loaded.sequence,
            events=events,
            metadata=metadata or {},
            state=state,
            cached=loaded.cached,
        )
        return appends_commit([append], now=moment)

    return in_retried_transaction(attempt, what=f"{spec.aggregate_type}/{aggregate_id}")


def events_append(
    *,
    spec: AggregateSpec,
    aggregate_id: str,
    events: Iterable[DomainEvent],
    expected_sequence: int,
    now: datetime | None = None,
    metadata: dict[str, Any] | None = None,
) -> list[StoredEvent]:
    """Append already-decided events after `expected_sequence` (optimistic concurrency).

    Raises `IntegrityError` when another writer appended first; callers reload and decide
    again. The aggregate's cached state is dropped (the next load folds its log once).
    """
    moment = now or timezone.now()
    with transaction.atomic():
        return appends_commit(
            [
                PendingAppend(
                    spec=spec,
                    aggregate_id=aggregate_id,
                    after_sequence=expected_sequence,
                    events=list(events),
                    metadata=metadata or {},
                )
            ],
            now=moment,
        )


# What a writer that appended to the same aggregate (or recorded the same trade key) first
# makes this append violate: the conflicts decided again from the start.
APPEND_RACE_CONSTRAINTS = frozenset(
    {
        "event_unique_aggregate_sequence",
        "aggregatestate_unique_aggregate",
        "eventkey_unique_scope_key",
    }
)


def _is_sequence_conflict(error: IntegrityError) -> bool:
    return unique_violated(error) in APPEND_RACE_CONSTRAINTS


@dataclass(frozen=True)
class StateDifference:
    aggregate_type: str
    aggregate_id: str
    detail: str

    def __str__(self) -> str:
        return f"state {self.aggregate_type}/{self.aggregate_id}: {self.detail}"


def aggregate_states_rebuild(
    *, specs: Iterable[AggregateSpec], write: bool, chunk_size: int = 2000
) -> list[StateDifference]:
    """Fold every aggregate's whole log and compare with its cached state row; with `write`,
    store the folded state (or drop the row when the fold is not cacheable).

    Streams the log in (type, id, sequence) order (the unique index), holding one aggregate's
    state at a time. A missing row is not a difference (the next load folds and stores it).
    """
    by_type = {spec.aggregate_type: spec for spec in specs}
    cached = {
        (row.aggregate_type, row.aggregate_id): row
        for row in AggregateState.objects.filter(aggregate_type__in=list(by_type))
    }
    version = state_version()
    differences: list[StateDifference] = []

    def settle(key: tuple[str, str], state: Lifecycle[Any], sequence: int) -> None:
        row = cached.get(key)
        if row is None:
            return
        try:
            expected = encode_state(state)
        except Unencodable:
            expected = None
        if expected is not None and (row.state, row.sequence, row.version) == (
            expected,
            sequence,
            version,
        ):
            return
        differences.append(
            StateDifference(
                *key,
                f"cached at #{row.sequence} ({row.version[:8]}) differs from the log's fold "
                f"at #{sequence} ({version[:8]})",
            )
        )
        if write:
            if expected is None:
                row.delete()
            else:
                row.state, row.sequence, row.version = expected, sequence, version
                row.save(update_fields=["state", "sequence", "version"])

    rows = (
        Event.objects.filter(aggregate_type__in=list(by_type))
        .order_by("aggregate_type", "aggregate_id", "sequence")
        .values_list("aggregate_type", "aggregate_id", "sequence", "event_type", "payload")
        .iterator(chunk_size=chunk_size)
    )
    current: tuple[str, str] | None = None
    state: Lifecycle[Any] = Lifecycle.uninitialized()
    sequence = 0
    for aggregate_type, aggregate_id, seq, event_type, payload in rows:
        key = (aggregate_type, aggregate_id)
        if key != current:
            if current is not None:
                settle(current, state, sequence)
            current, state = key, Lifecycle.uninitialized()
        state = by_type[aggregate_type].apply(state, decode_event(event_type, payload))
        sequence = seq
    if current is not None:
        settle(current, state, sequence)
    return differences

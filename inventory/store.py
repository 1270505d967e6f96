"""The aggregate store: load by folding events, decide, append with the next sequence.

Appending, projecting into the inventory pools and notifying the trigger happen in one
database transaction (DESIGN.md "Data flow"): the `events_appended` signal is sent inside it,
so whatever a receiver writes (an operation, a queued task) commits or rolls back with the
events. A concurrent append to the same aggregate loses on the unique (type, id, sequence)
constraint and is retried from a fresh load.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.dispatch import Signal
from django.utils import timezone

from inventory.codec import encode_event
from inventory.domain.aggregate import AggregateSpec
from inventory.domain.events import DomainEvent
from inventory.domain.lifecycle import Lifecycle
from inventory.models import Event

logger = logging.getLogger(__name__)

# Sent inside the appending transaction, after the projection has been updated.
# kwargs: events (list[StoredEvent]), pools (set[str]: the pool keys the projection touched).
events_appended = Signal()

MAX_APPEND_ATTEMPTS = 20


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


def aggregate_events(*, aggregate_type: str, aggregate_id: str) -> list[StoredEvent]:
    rows = Event.objects.filter(aggregate_type=aggregate_type, aggregate_id=aggregate_id).order_by(
        "sequence"
    )
    return [StoredEvent.from_row(row) for row in rows]


def aggregate_load(spec: AggregateSpec, aggregate_id: str) -> LoadedAggregate:
    stored = aggregate_events(aggregate_type=spec.aggregate_type, aggregate_id=aggregate_id)
    state = spec.fold([s.event for s in stored])
    return LoadedAggregate(
        state=state, sequence=stored[-1].sequence if stored else 0, events=stored
    )


def _insert(
    spec: AggregateSpec,
    aggregate_id: str,
    after_sequence: int,
    events: Sequence[DomainEvent],
    metadata: dict[str, Any],
    now: datetime,
) -> list[StoredEvent]:
    stored = []
    for offset, event in enumerate(events, start=1):
        if spec.aggregate_type != event.AGGREGATE_TYPE:
            raise TypeError(
                f"{type(event).__name__} belongs to {event.AGGREGATE_TYPE}, "
                f"not {spec.aggregate_type}"
            )
        event_type, payload = encode_event(event)
        row = Event.objects.create(
            aggregate_type=spec.aggregate_type,
            aggregate_id=aggregate_id,
            sequence=after_sequence + offset,
            event_type=event_type,
            payload=payload,
            metadata=metadata,
            recorded_at=now,
        )
        stored.append(
            StoredEvent(
                id=row.id,
                aggregate_type=row.aggregate_type,
                aggregate_id=aggregate_id,
                sequence=row.sequence,
                event=event,
                recorded_at=now,
                metadata=metadata,
            )
        )
    return stored


def _publish(stored: list[StoredEvent]) -> None:
    from inventory.projection import projection_apply

    pools = projection_apply(stored)
    events_appended.send(sender=Event, events=stored, pools=pools)


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
    for attempt in range(1, MAX_APPEND_ATTEMPTS + 1):
        try:
            with transaction.atomic():
                loaded = aggregate_load(spec, aggregate_id)
                events = list(spec.handle(loaded.state, command, moment))
                if not events:
                    return []
                stored = _insert(
                    spec, aggregate_id, loaded.sequence, events, metadata or {}, moment
                )
                _publish(stored)
                return stored
        except IntegrityError as error:
            if not _is_sequence_conflict(error):
                raise
            logger.warning(
                "sequence conflict on %s/%s (attempt %d), retrying",
                spec.aggregate_type,
                aggregate_id,
                attempt,
            )
            # Jitter so writers that lost together do not collide again in lockstep.
            time.sleep(random.uniform(0, 0.005 * attempt))
    raise ConcurrencyError(spec.aggregate_type, aggregate_id, MAX_APPEND_ATTEMPTS)


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

    Raises `IntegrityError` when another writer appended first; callers reload and decide again.
    """
    moment = now or timezone.now()
    with transaction.atomic():
        stored = _insert(
            spec, aggregate_id, expected_sequence, list(events), metadata or {}, moment
        )
        _publish(stored)
        return stored


def _is_sequence_conflict(error: IntegrityError) -> bool:
    text = str(error).lower()
    return "event_unique_aggregate_sequence" in text or (
        "unique" in text and "inventory_event" in text
    )

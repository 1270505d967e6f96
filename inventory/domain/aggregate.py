"""What the event store needs to know about an aggregate."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from inventory.domain.lifecycle import Lifecycle


@dataclass(frozen=True)
class AggregateSpec:
    """An aggregate as pure functions.

    `apply(state, event) -> state` folds one stored event; `handle(state, command, now) ->
    events` decides, raising a `DomainError` subclass to refuse (nothing is persisted).
    """

    aggregate_type: str
    apply: Callable[[Lifecycle[Any], Any], Lifecycle[Any]]
    handle: Callable[[Lifecycle[Any], Any, datetime], Sequence[Any]]
    event_classes: tuple[type, ...]

    def fold(self, events: Sequence[Any]) -> Lifecycle[Any]:
        state: Lifecycle[Any] = Lifecycle.uninitialized()
        for event in events:
            state = self.apply(state, event)
        return state

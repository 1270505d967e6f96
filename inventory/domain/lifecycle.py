"""Lifecycle wrapper around every aggregate state (spec section 2).

Uninitialized -> Live(state) via the genesis event; any invalid transition yields
Failed(error, last_valid_state). A Failed state with a last valid state is sticky: further
events leave it unchanged, and every command is refused with its error.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Generic, TypeVar

from inventory.domain.values import DomainError

S = TypeVar("S")
E = TypeVar("E")


class LifecycleErrorKind(enum.StrEnum):
    UNINITIALIZED = "Uninitialized"
    ALREADY_INITIALIZED = "AlreadyInitialized"
    MISMATCH = "Mismatch"
    CUSTOM = "Custom"


class LifecycleError(DomainError):
    def __init__(
        self, kind: LifecycleErrorKind, *, state: str = "", event: str = "", detail: str = ""
    ) -> None:
        self.kind = kind
        self.state = state
        self.event = event
        self.detail = detail
        parts = [str(kind)]
        if state or event:
            parts.append(f"state={state or '-'} event={event or '-'}")
        if detail:
            parts.append(detail)
        super().__init__(": ".join(parts))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LifecycleError) and (
            self.kind,
            self.state,
            self.event,
            self.detail,
        ) == (other.kind, other.state, other.event, other.detail)

    def __hash__(self) -> int:
        return hash((self.kind, self.state, self.event, self.detail))


class Mismatch(LifecycleError):
    """An event that is not valid in the current state."""

    def __init__(self, state: object, event: object) -> None:
        super().__init__(
            LifecycleErrorKind.MISMATCH,
            state=type(state).__name__ if state is not None else "Uninitialized",
            event=type(event).__name__,
        )


class LifecycleStatus(enum.StrEnum):
    UNINITIALIZED = "uninitialized"
    LIVE = "live"
    FAILED = "failed"


@dataclass(frozen=True)
class Lifecycle(Generic[S]):
    status: LifecycleStatus
    value: S | None = None
    error: LifecycleError | None = None
    # What the operation's cost ledger holds (`onchain_tx.recorded_keys`): its events move no
    # state, only this set, so a receipt or venue charge is recorded once.
    ledger: frozenset[str] = frozenset()

    @classmethod
    def uninitialized(cls) -> Lifecycle[S]:
        return cls(LifecycleStatus.UNINITIALIZED)

    @classmethod
    def live(cls, value: S) -> Lifecycle[S]:
        return cls(LifecycleStatus.LIVE, value=value)

    @classmethod
    def failed(cls, error: LifecycleError, last_valid_state: S | None) -> Lifecycle[S]:
        return cls(LifecycleStatus.FAILED, value=last_valid_state, error=error)

    @property
    def is_live(self) -> bool:
        return self.status is LifecycleStatus.LIVE

    @property
    def is_uninitialized(self) -> bool:
        return self.status is LifecycleStatus.UNINITIALIZED

    @property
    def is_failed(self) -> bool:
        return self.status is LifecycleStatus.FAILED

    @property
    def last_valid_state(self) -> S | None:
        return self.value

    def current(self) -> S | None:
        """The live state, None when uninitialized; raises the stored error when failed."""
        if self.status is LifecycleStatus.FAILED:
            assert self.error is not None
            raise self.error
        return self.value

    def live_value(self) -> S:
        """The live state; raises when uninitialized or failed."""
        value = self.current()
        if value is None:
            raise LifecycleError(LifecycleErrorKind.UNINITIALIZED)
        return value

    def initialize(self, value: S) -> Lifecycle[S]:
        if self.is_live:
            raise LifecycleError(LifecycleErrorKind.ALREADY_INITIALIZED)
        return Lifecycle.live(value)

    def transition(self, event: E, apply_transition: Callable[[S, E], S]) -> Lifecycle[S]:
        """Apply a non-genesis event. Live -> apply (errors fail the lifecycle)."""
        if self.status is LifecycleStatus.LIVE:
            assert self.value is not None
            try:
                return Lifecycle.live(apply_transition(self.value, event))
            except LifecycleError as error:
                return Lifecycle.failed(error, self.value)
            except DomainError as error:
                wrapped = LifecycleError(LifecycleErrorKind.CUSTOM, detail=str(error))
                return Lifecycle.failed(wrapped, self.value)
        if self.status is LifecycleStatus.UNINITIALIZED:
            return Lifecycle.failed(LifecycleError(LifecycleErrorKind.UNINITIALIZED), None)
        return self

    def or_initialize(self, event: E, from_event: Callable[[E], S]) -> Lifecycle[S]:
        """After a transition on Uninitialized failed, try the event as genesis."""
        if (
            self.status is LifecycleStatus.FAILED
            and self.value is None
            and self.error is not None
            and self.error.kind is LifecycleErrorKind.UNINITIALIZED
        ):
            try:
                return Lifecycle.live(from_event(event))
            except LifecycleError:
                return Lifecycle.failed(Mismatch(None, event), None)
        return self


def lifecycle_apply(
    state: Lifecycle[S],
    event: E,
    *,
    apply_transition: Callable[[S, E], S],
    from_event: Callable[[E], S],
) -> Lifecycle[S]:
    """The full apply: transition, then genesis when it was uninitialized."""
    return state.transition(event, apply_transition).or_initialize(event, from_event)


def with_ledger(
    state: Lifecycle[S], event: E, keys: frozenset[str] | None, then: Callable[[], Lifecycle[S]]
) -> Lifecycle[S]:
    """A cost ledger event (`keys`: what it records) adds to `state.ledger` and moves nothing
    else, in any state; any other event folds by `then()`, the ledger kept."""
    if keys is not None:
        return replace(state, ledger=state.ledger | keys)
    folded = then()
    if folded.ledger != state.ledger:
        folded = replace(folded, ledger=state.ledger)
    return folded

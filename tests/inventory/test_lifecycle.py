"""Lifecycle wrapper (spec section 2 and the section-13 Lifecycle checklist), on a toy
counter aggregate so the wrapper is tested on its own."""

from dataclasses import dataclass

import pytest

from inventory.domain.aggregate import AggregateSpec
from inventory.domain.lifecycle import (
    Lifecycle,
    LifecycleError,
    LifecycleErrorKind,
    LifecycleStatus,
    Mismatch,
    lifecycle_apply,
)
from inventory.domain.values import DomainError


@dataclass(frozen=True)
class Started:
    value: int


@dataclass(frozen=True)
class Added:
    amount: int


@dataclass(frozen=True)
class Counter:
    total: int


class TooBig(DomainError):
    pass


def from_event(event):
    if isinstance(event, Started):
        return Counter(event.value)
    raise Mismatch(None, event)


def apply_transition(state: Counter, event):
    if isinstance(event, Added):
        if state.total + event.amount > 100:
            raise TooBig(f"{state.total} + {event.amount} > 100")
        return Counter(state.total + event.amount)
    raise Mismatch(state, event)


def apply(state, event):
    return lifecycle_apply(state, event, apply_transition=apply_transition, from_event=from_event)


def test_transition_on_active_succeeds():
    result = Lifecycle.live(Counter(1)).transition(Added(2), apply_transition)
    assert result == Lifecycle.live(Counter(3))


def test_transition_on_uninitialized_corrupts_with_none():
    result = Lifecycle.uninitialized().transition(Added(2), apply_transition)
    assert result.is_failed
    assert result.error.kind is LifecycleErrorKind.UNINITIALIZED
    assert result.last_valid_state is None


def test_or_initialize_after_transition_on_uninitialized():
    result = (
        Lifecycle.uninitialized()
        .transition(Started(5), apply_transition)
        .or_initialize(Started(5), from_event)
    )
    assert result == Lifecycle.live(Counter(5))


def test_or_initialize_skipped_after_successful_transition():
    result = (
        Lifecycle.live(Counter(1))
        .transition(Added(1), apply_transition)
        .or_initialize(Added(1), from_event)
    )
    assert result == Lifecycle.live(Counter(2))


def test_or_initialize_skipped_after_failed_transition_with_state():
    failed = Lifecycle.live(Counter(1)).transition(Started(9), apply_transition)
    result = failed.or_initialize(Started(9), from_event)
    assert result == failed
    assert result.error.kind is LifecycleErrorKind.MISMATCH
    assert result.last_valid_state == Counter(1)


def test_or_initialize_with_non_init_event_corrupts():
    result = apply(Lifecycle.uninitialized(), Added(1))
    assert result.is_failed
    assert result.error.kind is LifecycleErrorKind.MISMATCH
    assert (result.error.state, result.error.event) == ("Uninitialized", "Added")
    assert result.last_valid_state is None


def test_multiple_transitions_accumulate():
    state = Lifecycle.live(Counter(0))
    for amount in (1, 2, 3, 4):
        state = apply(state, Added(amount))
    assert state == Lifecycle.live(Counter(10))


def test_init_then_transitions():
    state = Lifecycle.uninitialized()
    for event in (Started(10), Added(5), Added(7)):
        state = apply(state, event)
    assert state.live_value() == Counter(22)


def test_genesis_on_live_is_mismatch_keeping_last_valid_state():
    result = apply(Lifecycle.live(Counter(3)), Started(1))
    assert result.is_failed
    assert result.error == Mismatch(Counter(3), Started(1))
    assert result.last_valid_state == Counter(3)


def test_domain_error_in_transition_becomes_custom_failure():
    result = apply(Lifecycle.live(Counter(99)), Added(5))
    assert result.is_failed
    assert result.error.kind is LifecycleErrorKind.CUSTOM
    assert "99 + 5 > 100" in result.error.detail
    assert result.last_valid_state == Counter(99)


def test_failed_state_is_sticky():
    failed = apply(Lifecycle.live(Counter(1)), Started(1))
    assert apply(failed, Added(1)) == failed
    assert apply(failed, Started(2)) == failed


def test_failed_without_state_is_sticky_too():
    failed = apply(Lifecycle.uninitialized(), Added(1))
    assert apply(failed, Started(1)) == failed


def test_current_raises_the_stored_error_when_failed():
    failed = apply(Lifecycle.live(Counter(1)), Started(1))
    with pytest.raises(LifecycleError) as caught:
        failed.current()
    assert caught.value is failed.error


def test_current_is_none_when_uninitialized_and_live_value_raises():
    assert Lifecycle.uninitialized().current() is None
    with pytest.raises(LifecycleError) as caught:
        Lifecycle.uninitialized().live_value()
    assert caught.value.kind is LifecycleErrorKind.UNINITIALIZED


def test_initialize_on_live_is_already_initialized():
    with pytest.raises(LifecycleError) as caught:
        Lifecycle.live(Counter(1)).initialize(Counter(2))
    assert caught.value.kind is LifecycleErrorKind.ALREADY_INITIALIZED
    assert Lifecycle.uninitialized().initialize(Counter(2)) == Lifecycle.live(Counter(2))


def test_status_flags():
    assert Lifecycle.uninitialized().status is LifecycleStatus.UNINITIALIZED
    assert Lifecycle.live(Counter(1)).is_live
    assert apply(Lifecycle.uninitialized(), Added(1)).is_failed


def test_lifecycle_errors_compare_by_value_and_name_state_and_event():
    error = Mismatch(Counter(1), Added(2))
    assert error == Mismatch(Counter(5), Added(9))
    assert error != Mismatch(None, Added(2))
    assert hash(error) == hash(Mismatch(Counter(5), Added(9)))
    assert "state=Counter event=Added" in str(error)


def test_aggregate_spec_fold_replays_from_uninitialized():
    spec = AggregateSpec(
        aggregate_type="Counter", apply=apply, handle=lambda s, c, n: [], event_classes=()
    )
    assert spec.fold([]) == Lifecycle.uninitialized()
    assert spec.fold([Started(1), Added(2), Added(3)]) == Lifecycle.live(Counter(6))
    assert spec.fold([Added(1), Started(1)]).is_failed

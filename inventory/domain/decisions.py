"""RebalanceDecision aggregate: what the trigger decided without starting an operation
(aggregate id = pool key). Pure.

In REBALANCING_MODE=monitor the trigger records the operation it would start as
`RebalanceProposed`. A pool's proposal changes with every fill, so a new one is recorded only
when the state of the decision changes: the first proposal, another kind, or an amount that
moved by at least the command's `significant_change` (the pool's minimum amount) since the
last recorded one. Events touch no pool.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from inventory.domain import events as ev
from inventory.domain.aggregate import AggregateSpec
from inventory.domain.lifecycle import Lifecycle, lifecycle_apply
from inventory.domain.values import InvalidValue


@dataclass(frozen=True)
class DecisionState:
    # The last recorded decision: its event variant, kind and amount.
    last: str
    kind: str
    amount: Decimal
    # A deferral's rule, and the pool's newest operation when it was recorded.
    rule: str = ""
    last_operation_id: int = 0


@dataclass(frozen=True)
class Propose:
    pool: str
    kind: str
    amount: Decimal
    estimated_cost_usd: Decimal | None
    # A proposal of the same kind is recorded again only when its amount moved this much.
    significant_change: Decimal


@dataclass(frozen=True)
class Defer:
    pool: str
    kind: str
    amount: Decimal
    estimated_cost_usd: Decimal | None
    value_usd: Decimal | None
    rule: str
    detail: str
    # The pool's newest operation id (0: none): a deferral after it started is a new state.
    last_operation_id: int


@dataclass(frozen=True)
class RecordOperatorAction:
    """The audit of an operator's start or cancel (`event` is decided by the service that
    made the change, in the same transaction)."""

    event: ev.OperationStartedByOperator | ev.OperationCancelledByOperator


_NO_DECISION = DecisionState(last="", kind="", amount=Decimal(0))
_OPERATOR_EVENTS = (ev.OperationStartedByOperator, ev.OperationCancelledByOperator)


def _advance(state: DecisionState | None, event: Any) -> DecisionState:
    if isinstance(event, ev.RebalanceProposed):
        return DecisionState(last=event.variant(), kind=event.kind, amount=event.amount)
    if isinstance(event, ev.RebalanceDeferred):
        return DecisionState(
            last=event.variant(),
            kind=event.kind,
            amount=event.amount,
            rule=event.rule,
            last_operation_id=event.last_operation_id,
        )
    if isinstance(event, _OPERATOR_EVENTS):
        # An operator's action is audit: the trigger's decision state stays as it was.
        return _NO_DECISION if state is None else state
    raise InvalidValue("event", type(event).__name__, "not a RebalanceDecision event")


def apply(state: Lifecycle[DecisionState], event: Any) -> Lifecycle[DecisionState]:
    return lifecycle_apply(
        state, event, apply_transition=_advance, from_event=lambda e: _advance(None, e)
    )


def proposal_is_new(state: DecisionState | None, command: Propose) -> bool:
    """Whether `command` changes the pool's decision (and so is recorded)."""
    if state is None or state.last != ev.RebalanceProposed.variant():
        return True
    if state.kind != command.kind:
        return True
    return abs(state.amount - command.amount) >= command.significant_change


def deferral_is_new(state: DecisionState | None, command: Defer) -> bool:
    """Whether `command` changes the pool's decision: not the deferral last recorded (same
    kind and rule, no operation started since)."""
    return not (
        state is not None
        and state.last == ev.RebalanceDeferred.variant()
        and state.kind == command.kind
        and state.rule == command.rule
        and state.last_operation_id == command.last_operation_id
    )


def handle(
    state: Lifecycle[DecisionState], command: Propose | Defer | RecordOperatorAction, now: datetime
) -> list[ev.DecisionEvent]:
    current = state.current()
    if isinstance(command, Defer):
        if not command.rule:
            raise InvalidValue("rule", command.rule, "a deferral names the rule it applied")
        if not deferral_is_new(current, command):
            return []
        return [
            ev.RebalanceDeferred(
                pool=command.pool,
                kind=command.kind,
                amount=command.amount,
                estimated_cost_usd=command.estimated_cost_usd,
                value_usd=command.value_usd,
                rule=command.rule,
                detail=command.detail,
                last_operation_id=command.last_operation_id,
                deferred_at=now,
            )
        ]
    if isinstance(command, RecordOperatorAction):
        event = command.event
        if not isinstance(event, _OPERATOR_EVENTS):
            raise InvalidValue("event", type(event).__name__, "not an operator's action")
        for name in ("actor", "reason"):
            if not getattr(event, name).strip():
                raise InvalidValue(name, getattr(event, name), "must be a non-empty text")
        return [event]
    if not isinstance(command, Propose):
        raise InvalidValue("command", type(command).__name__, "not a RebalanceDecision command")
    if command.amount <= 0:
        raise InvalidValue("amount", command.amount, "a proposal moves a positive amount")
    if not proposal_is_new(current, command):
        return []
    return [
        ev.RebalanceProposed(
            pool=command.pool,
            kind=command.kind,
            amount=command.amount,
            estimated_cost_usd=command.estimated_cost_usd,
            proposed_at=now,
        )
    ]


SPEC = AggregateSpec(
    aggregate_type=ev.DECISIONS,
    apply=apply,
    handle=handle,
    event_classes=(
        ev.RebalanceProposed,
        ev.RebalanceDeferred,
        ev.OperationStartedByOperator,
        ev.OperationCancelledByOperator,
    ),
)

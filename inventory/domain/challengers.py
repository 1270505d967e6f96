"""ChallengerDecision aggregate: a challenger's shadow decision for one pool (aggregate id =
`CHALLENGER:POOL`). Pure.

The trigger evaluates each candidate of `REBALANCING_CHALLENGERS` (and `as-run`, the settings
in force, for comparison) with the pure `inventory.domain.plan.plan_pool` over the live pool
state. A decision is recorded as `ChallengerDecided` only when it changes: the first operation
the challenger would start, another kind (or none after one), or the same kind with an amount
that moved by at least the command's `significant_change` (the pool's minimum under the
challenger's settings). "None" before any recorded decision is not recorded. Events touch no
pool and are never acted on.
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
class ChallengerState:
    kind: str  # "" : no operation
    amount: Decimal


@dataclass(frozen=True)
class Decide:
    challenger: str
    spec: str
    pool: str
    kind: str  # "" : no operation
    amount: Decimal
    reason: str
    estimated_cost_usd: Decimal | None
    significant_change: Decimal


def aggregate_id(challenger: str, pool: str) -> str:
    return f"{challenger}:{pool}"


def _advance(state: ChallengerState | None, event: Any) -> ChallengerState:
    if not isinstance(event, ev.ChallengerDecided):
        raise InvalidValue("event", type(event).__name__, "not a ChallengerDecision event")
    return ChallengerState(kind=event.kind, amount=event.amount)


def apply(state: Lifecycle[ChallengerState], event: Any) -> Lifecycle[ChallengerState]:
    return lifecycle_apply(
        state, event, apply_transition=_advance, from_event=lambda e: _advance(None, e)
    )


def decision_is_new(state: ChallengerState | None, command: Decide) -> bool:
    """Whether `command` changes the challenger's recorded decision for the pool."""
    if state is None:
        return command.kind != ""
    if state.kind != command.kind:
        return True
    if command.kind == "":
        return False
    return abs(state.amount - command.amount) >= command.significant_change


def handle(
    state: Lifecycle[ChallengerState], command: Decide, now: datetime
) -> list[ev.ChallengerDecided]:
    if not isinstance(command, Decide):
        raise InvalidValue("command", type(command).__name__, "not a ChallengerDecision command")
    if command.kind and command.amount <= 0:
        raise InvalidValue("amount", command.amount, "an operation moves a positive amount")
    if not command.kind and command.amount != 0:
        raise InvalidValue("amount", command.amount, "no operation moves nothing")
    if not decision_is_new(state.current(), command):
        return []
    return [
        ev.ChallengerDecided(
            challenger=command.challenger,
            spec=command.spec,
            pool=command.pool,
            kind=command.kind,
            amount=command.amount,
            reason=command.reason,
            estimated_cost_usd=command.estimated_cost_usd,
            decided_at=now,
        )
    ]


SPEC = AggregateSpec(
    aggregate_type=ev.CHALLENGERS,
    apply=apply,
    handle=handle,
    event_classes=(ev.ChallengerDecided,),
)

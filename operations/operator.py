"""Operator services: retry now, force-fail with a reason, reconcile kept inflight (B13).

Used by the admin and `manage.py operation ...`. Facts go through the aggregates: a force-fail
records the failure command valid in the aggregate's state (or, before the first event,
`operation_fail` releases the guard); a reconcile records the aggregate's Reconcile command
(zeroes the inflight a failure kept, and the trigger clears `needs_attention`). Retry-now only
reschedules the operation (due now) and queues its task: it changes no fact.

Operators and workers do not race: every action takes the operation's lease the way a worker
does (`operator_lease`), so a force-fail cannot land between a worker's check and its venue
call; while a worker's lease is valid the action is refused ("try again") and changes nothing.

Never declare a venue request dead without asking the venue: a force-fail asks the workflow to
look the request up first (a requested mint by our issuer_request_id, an Alpaca withdrawal by
its transfer); when the venue cannot answer the operation stays active and flagged. An
operator who checked the venue themselves reconciles it with a reason (`operator_reconcile`
on an active operation records the step's failure without asking the venue).

Bad input (unknown id, empty reason, a state with no such command) raises `OperatorError`
and changes nothing.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from inventory.domain.checks import CommandRefused
from inventory.domain.values import InvalidValue
from inventory.store import aggregate_execute
from operations.models import ACTIVE_STATUSES, Operation, PoolBreaker
from operations.services import (
    OperationAlreadyFinished,
    OperationError,
    OperationNotFound,
    PoolNotHeld,
    operation_attention_clear,
    operation_enqueue,
    operation_fail,
    operation_flag,
    operation_has_events,
    pool_resume,
)
from operations.venues import Venues, VenuesNotConfigured, venues_get
from operations.workflows.base import NotFailable, NotReconcilable, OperationInactive
from operations.workflows.context import StepContext
from operations.workflows.registry import NoWorkflow, workflow_for
from operations.workflows.runner import lease_seconds

logger = logging.getLogger(__name__)


class OperatorError(Exception):
    """An operator action that cannot be done; nothing was changed."""


def _text(field: str, value: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise OperatorError(f"{field}={value!r}: must be a non-empty text")
    if field == "actor" and len(value.strip()) > 128:  # the operation's finished_by column
        raise OperatorError(f"{field}={value!r}: must be at most 128 characters")
    return value.strip()


def _operation(operation_id: int) -> Operation:
    operation = Operation.objects.filter(pk=operation_id).first()
    if operation is None:
        raise OperatorError(str(OperationNotFound(operation_id)))
    return operation


@contextmanager
def operator_lease(*, operation_id: int, actor: str, lease_s: float) -> Iterator[str]:
    """Take the operation's lease as a worker does (row lock, `claimed_by`/`claimed_until`),
    yield the token, and drop it afterwards. A valid lease of someone else (a worker between
    its check and its venue call) refuses the action with `OperatorError`; nothing changes.
    A finished operation has no lease to take: the token is "" (nothing to race with)."""
    token = f"operator:{actor}:{uuid.uuid4().hex[:8]}"
    now = timezone.now()
    with transaction.atomic():
        operation = Operation.objects.select_for_update().filter(pk=operation_id).first()
        if operation is None:
            raise OperatorError(str(OperationNotFound(operation_id)))
        if not operation.is_active:
            token = ""
        elif operation.claimed_by and operation.claimed_until and operation.claimed_until > now:
            raise OperatorError(
                f"operation_id={operation_id}: {operation.claimed_by} holds its lease until "
                f"{operation.claimed_until.isoformat()} (a worker is advancing it); nothing "
                "was changed, try again once it is released"
            )
        else:
            operation.claimed_by = token
            operation.claimed_until = now + timedelta(seconds=lease_s)
            operation.save(update_fields=["claimed_by", "claimed_until"])
    if token:
        logger.info("operation %s: lease taken by operator %s", operation_id, actor)
    try:
        yield token
    finally:
        if token:
            Operation.objects.filter(pk=operation_id, claimed_by=token).update(
                claimed_by="", claimed_until=None
            )


def _venues(operation: Operation, venues: Venues | None) -> Venues:
    try:
        return venues or venues_get()
    except VenuesNotConfigured as exc:
        raise OperatorError(
            f"operation_id={operation.pk}: its aggregate has events, and checking them needs "
            f"the venues: {exc}"
        ) from exc


def _lease_s(venues: Venues | None) -> float:
    return lease_seconds(venues.workers if venues else settings.REBALANCING.workers)


def _context(operation: Operation, *, actor: str, venues: Venues, lease_token: str) -> StepContext:
    try:
        workflow = workflow_for(operation.kind)
    except NoWorkflow as exc:
        raise OperatorError(str(exc)) from exc
    return StepContext(
        operation=operation,
        venues=venues,
        spec=workflow.spec,
        lease_token=lease_token,
        lease_s=lease_seconds(venues.workers),
        actor=actor,
    )


def operator_retry_now(*, operation_id: int, actor: str) -> Operation:
    """Make an active operation due now and queue its task (after a fixed outage, say)."""
    actor = _text("actor", actor)
    now = timezone.now()
    with transaction.atomic():
        operation = Operation.objects.select_for_update().filter(pk=operation_id).first()
        if operation is None:
            raise OperatorError(str(OperationNotFound(operation_id)))
        if not operation.is_active:
            raise OperatorError(str(OperationAlreadyFinished(operation_id, operation.status)))
        if operation.claimed_by and operation.claimed_until and operation.claimed_until > now:
            raise OperatorError(
                f"operation_id={operation_id}: {operation.claimed_by} holds its lease until "
                f"{operation.claimed_until.isoformat()} (a worker is advancing it now); "
                "nothing was changed"
            )
        if operation.queued_until and operation.queued_until > now:
            raise OperatorError(
                f"operation_id={operation_id}: a task is already queued for it; nothing was "
                "changed (it runs when a worker takes it)"
            )
        operation.next_run_at = now
        operation.attempts = 0
        operation.updated_at = now
        operation.save(update_fields=["next_run_at", "attempts", "updated_at"])
        operation_enqueue(operation=operation)
    logger.warning("operation %s: retry now requested by %s", operation_id, actor)
    return operation


def operator_force_fail(
    *, operation_id: int, reason: str, actor: str, venues: Venues | None = None
) -> Operation:
    """End an active operation: the workflow settles what only it can check (a stored
    transaction mined or pending), then `operations.services.operation_force_fail` applies the
    one per-state failure mapping (`operation_fail` when there are no events yet)."""
    reason = _text("reason", reason)
    actor = _text("actor", actor)
    operation = _operation(operation_id)
    if not operation.is_active:
        raise OperatorError(str(OperationAlreadyFinished(operation_id, operation.status)))
    with operator_lease(operation_id=operation_id, actor=actor, lease_s=_lease_s(venues)) as token:
        operation.refresh_from_db()
        if not operation.is_active:
            raise OperatorError(str(OperationAlreadyFinished(operation_id, operation.status)))
        if not operation_has_events(operation):  # nothing happened yet: no venue to ask
            try:
                operation = operation_fail(operation_id=operation_id, reason=reason, actor=actor)
            except OperationError as exc:
                raise OperatorError(str(exc)) from exc
            logger.warning(
                "operation %s failed by %s before its first event: %s",
                operation_id,
                actor,
                reason,
            )
            return operation
        chosen = _venues(operation, venues)
        ctx = _context(operation, actor=actor, venues=chosen, lease_token=token)
        try:
            workflow_for(operation.kind).fail(ctx, reason=reason, actor=actor)
        except NotFailable as exc:
            operation_flag(operation_id=operation_id, error=f"force-fail by {actor}: {exc}")
            raise OperatorError(
                f"operation_id={operation_id}: {exc}; it stays active (flagged): reconcile it "
                "with a reason once you have checked the venue yourself"
            ) from exc
        except (CommandRefused, OperationInactive) as exc:  # moved on meanwhile
            raise OperatorError(f"operation_id={operation_id}: {exc}; try again") from exc
    operation.refresh_from_db()
    logger.warning("operation %s force-failed by %s: %s", operation_id, actor, reason)
    return operation


def operator_reconcile(
    *, operation_id: int, reason: str, actor: str, venues: Venues | None = None
) -> Operation:
    """Record the aggregate's Reconcile command: the inflight a failure kept is declared
    settled outside the system (zeroed without crediting, B13); the operation is ended if it
    was still active and its `needs_attention` cleared."""
    reason = _text("reason", reason)
    actor = _text("actor", actor)
    operation = _operation(operation_id)
    if not operation_has_events(operation):  # nothing was ever inflight: no venue to ask
        hint = " (use fail to end it)" if operation.is_active else ""
        raise OperatorError(
            f"operation_id={operation_id}: it has no events, so nothing is inflight: it cannot "
            f"be reconciled; nothing was changed{hint}"
        )
    chosen = _venues(operation, venues)
    with operator_lease(
        operation_id=operation_id, actor=actor, lease_s=lease_seconds(chosen.workers)
    ) as token:
        operation.refresh_from_db()
        ctx = _context(operation, actor=actor, venues=chosen, lease_token=token)
        workflow = workflow_for(operation.kind)
        command = None
        if operation.is_active:
            # A step whose venue outcome is unknown: the operator checked the venue.
            command = workflow.reconcile_unknown(ctx, reason=reason, operator=actor)
        if command is None:
            try:
                command = workflow.reconcile_command(ctx, reason=reason, operator=actor)
            except NotReconcilable as exc:
                raise OperatorError(f"operation_id={operation_id}: {exc}") from exc
        try:
            aggregate_execute(
                spec=workflow.spec,
                aggregate_id=operation.aggregate_id,
                command=command,
                metadata={"operation_id": operation.pk, "actor": actor, "action": "reconcile"},
            )
        except CommandRefused as exc:  # moved on meanwhile
            raise OperatorError(f"operation_id={operation_id}: {exc}; try again") from exc
    operation.refresh_from_db()
    if operation.needs_attention and not operation.is_active:
        operation_attention_clear(operation_id=operation_id)
        operation.refresh_from_db()
    logger.warning("operation %s reconciled by %s: %s", operation_id, actor, reason)
    return operation


def operator_resume_pool(*, pool: str, reason: str, actor: str) -> PoolBreaker:
    """Resume a pool held after failures: close its circuit breaker (audited as a
    `SettingChanged`), end its cool-down; the trigger re-checks it at once."""
    reason = _text("reason", reason)
    actor = _text("actor", actor)
    pool = _text("pool", pool)
    try:
        return pool_resume(pool=pool, actor=actor, reason=reason)
    except PoolNotHeld as exc:
        raise OperatorError(str(exc)) from exc


# --- manual operations (issue 24) ------------------------------------------------------------

# A pool's side an operation of each kind takes its amount from.
_SOURCE_SIDE = {
    "mint": "offchain_available",
    "redemption": "onchain_available",
    "usdc_alpaca_to_base": "offchain_available",
    "usdc_base_to_alpaca": "onchain_available",
}


def operator_start(
    *, kind: str, pool: str, amount: Any, reason: str, actor: str
) -> tuple[Operation, Decimal | None]:
    """Start a mint, redemption or USDC move of a chosen amount for a pool, through the same
    guard (one active operation per pool) and workflows as the trigger's; audited as
    `OperationStartedByOperator` (who, why, the estimate shown) in the same transaction.

    Returns the operation and its estimated cost in USD (None: not estimated). Refused with
    `OperatorError` (nothing changed) unless REBALANCING_MODE is on, when the pool needs
    reconciliation, holds less than the amount on the side it moves from, or already has an
    active operation; bad kind, pool or amount raise `InvalidValue` naming the field."""
    from inventory.domain import decisions as decisions_domain
    from inventory.domain import events as ev
    from inventory.projection import pools_lock
    from inventory.selectors import asset_by_symbol
    from operations.services import _create_arguments, operation_create

    reason = _text("reason", reason)
    actor = _text("actor", actor)
    config = settings.REBALANCING
    if not config.writes:
        raise OperatorError(
            f"REBALANCING_MODE is {config.mode}: no operation can start (no venue write); "
            "nothing was changed"
        )
    if isinstance(amount, str):
        try:
            amount = Decimal(amount.strip())
        except InvalidOperation as exc:
            raise InvalidValue("amount", amount, "must be a decimal number") from exc
    elif isinstance(amount, int) and not isinstance(amount, bool):
        amount = Decimal(amount)
    token = ""
    if kind == "redemption" and isinstance(pool, str):
        asset = asset_by_symbol(pool.strip().upper())
        token = asset.token_address if asset is not None else ""
        if not token:
            raise InvalidValue("pool", pool, "no registered asset with a token to redeem")
    kind, pool, amount, token = _create_arguments(kind, pool, amount, token)
    if kind == "mint" and asset_by_symbol(pool) is None:
        raise InvalidValue("pool", pool, "no registered asset with this symbol")
    from operations.costgate import estimate_cost

    # Shown (and recorded with the audit), not enforced: the operator decides.
    estimate = estimate_cost(str(kind), pool, amount).usd
    now = timezone.now()
    with transaction.atomic():
        # Locked, and for USDC with its pending fill deltas folded in (`pools_lock`).
        row = pools_lock([pool], create=False).get(pool)
        if row is None:
            raise InvalidValue("pool", pool, "no such pool (pools appear with a fill or a poll)")
        if row.needs_reconciliation:
            raise OperatorError(
                f"pool {pool} needs reconciliation ({row.reconciliation_reason}); nothing was "
                "changed"
            )
        side = _SOURCE_SIDE[str(kind)]
        available = getattr(row, side)
        if amount > available:
            raise InvalidValue(
                "amount", amount, f"more than the pool's {side.replace('_', ' ')} {available}"
            )
        operation = operation_create(kind=kind, pool=pool, amount=amount, token_address=token)
        if operation is None:
            active = Operation.objects.filter(pool=pool, status__in=ACTIVE_STATUSES).first()
            raise OperatorError(
                f"pool {pool} already has an active operation"
                + (f" #{active.pk} ({active.kind} {active.amount})" if active else "")
                + "; nothing was changed"
            )
        aggregate_execute(
            spec=decisions_domain.SPEC,
            aggregate_id=pool,
            command=decisions_domain.RecordOperatorAction(
                ev.OperationStartedByOperator(
                    pool=pool,
                    kind=str(kind),
                    amount=amount,
                    operation_id=int(operation.pk),
                    operation_aggregate_id=operation.aggregate_id,
                    estimated_cost_usd=estimate,
                    actor=actor,
                    reason=reason,
                    started_at=now,
                )
            ),
            now=now,
            metadata={"operation_id": operation.pk, "actor": actor, "action": "start"},
        )
    logger.warning(
        "operation %s started by %s: %s %s %s (%s)", operation.pk, actor, kind, pool, amount, reason
    )
    return operation, estimate


def operation_cancellable(operation: Operation) -> bool:
    """Active, nothing recorded for it and no venue request out: nothing has moved."""
    return (
        operation.is_active
        and operation.venue_request_at is None
        and not operation_has_events(operation)
    )


# What an operator can do to an operation (console buttons, `manage.py operation ...`, API).
OPERATOR_ACTIONS = ("retry", "fail", "reconcile", "cancel")


def operation_actions_applicable(operation: Operation) -> list[str]:
    """The operator actions that apply to `operation` now: none once it is finished
    (completed, failed, cancelled); cancel only before anything moved."""
    if not operation.is_active:
        return []
    return [
        name for name in OPERATOR_ACTIONS if name != "cancel" or operation_cancellable(operation)
    ]


def operator_cancel(*, operation_id: int, reason: str, actor: str) -> Operation:
    """Cancel an operation that has not moved anything yet (before its first venue request
    or transaction: its aggregate has no event and no request is out), audited as
    `OperationCancelledByOperator`. Every side effect of a worker is preceded by a check,
    under the same row lock, that the operation is still active, so none follows a cancel.
    Refused with `OperatorError` (nothing changed) otherwise."""
    from inventory.domain import decisions as decisions_domain
    from inventory.domain import events as ev
    from operations.models import OperationStatus
    from operations.services import _terminate, operation_released

    reason = _text("reason", reason)
    actor = _text("actor", actor)
    now = timezone.now()
    with transaction.atomic():
        operation = Operation.objects.select_for_update().filter(pk=operation_id).first()
        if operation is None:
            raise OperatorError(str(OperationNotFound(operation_id)))
        if not operation.is_active:
            raise OperatorError(
                f"operation_id={operation_id}: already {operation.status}, it cannot be "
                "cancelled; nothing was changed"
            )
        if not operation_cancellable(operation):
            raise OperatorError(
                f"operation_id={operation_id}: it has already moved something (recorded steps "
                "or a venue request out); it cannot be cancelled, force-fail it instead; "
                "nothing was changed"
            )
        _terminate(
            operation,
            status=OperationStatus.CANCELLED,
            reason=f"cancelled by {actor}: {reason}",
            finished_by=actor,
            now=now,
        )
        aggregate_execute(
            spec=decisions_domain.SPEC,
            aggregate_id=operation.pool,
            command=decisions_domain.RecordOperatorAction(
                ev.OperationCancelledByOperator(
                    pool=operation.pool,
                    kind=str(operation.kind),
                    amount=operation.amount,
                    operation_id=int(operation.pk),
                    operation_aggregate_id=operation.aggregate_id,
                    actor=actor,
                    reason=reason,
                    cancelled_at=now,
                )
            ),
            now=now,
            metadata={"operation_id": operation.pk, "actor": actor, "action": "cancel"},
        )
        operation_released.send(sender=Operation, operation=operation)
    logger.warning("operation %s cancelled by %s: %s", operation_id, actor, reason)
    return operation

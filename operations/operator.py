"""Operator services: retry now, force-fail with a reason, reconcile kept inflight (B13).

Used by the admin and `manage.py operation ...`. Facts go through the aggregates: a force-fail
records the failure command valid in the aggregate's state (or, before the first event,
`operation_fail` releases the guard); a reconcile records the aggregate's Reconcile command
(zeroes the inflight a failure kept, and the trigger clears `needs_attention`). Retry-now only
reschedules the operation (due now) and queues its task: it changes no fact.

Bad input (unknown id, empty reason, a state with no such command) raises `OperatorError`
and changes nothing.
"""

from __future__ import annotations

import logging

from django.db import transaction
from django.utils import timezone

from inventory.domain.checks import CommandRefused
from inventory.store import aggregate_execute
from operations.models import Operation
from operations.services import (
    OperationAlreadyFinished,
    OperationNotFound,
    operation_enqueue,
)
from operations.venues import Venues, venues_get
from operations.workflows.base import NotFailable, NotReconcilable
from operations.workflows.context import StepContext
from operations.workflows.registry import NoWorkflow, workflow_for
from operations.workflows.runner import lease_seconds

logger = logging.getLogger(__name__)


class OperatorError(Exception):
    """An operator action that cannot be done; nothing was changed."""


def _text(field: str, value: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise OperatorError(f"{field}={value!r}: must be a non-empty text")
    return value.strip()


def _operation(operation_id: int) -> Operation:
    operation = Operation.objects.filter(pk=operation_id).first()
    if operation is None:
        raise OperatorError(str(OperationNotFound(operation_id)))
    return operation


def _context(operation: Operation, *, actor: str, venues: Venues | None) -> StepContext:
    try:
        workflow = workflow_for(operation.kind)
    except NoWorkflow as exc:
        raise OperatorError(str(exc)) from exc
    chosen = venues or venues_get()
    return StepContext(
        operation=operation,
        venues=chosen,
        spec=workflow.spec,
        lease_token="",  # an operator acts whoever holds the lease; the aggregate arbitrates
        lease_s=lease_seconds(chosen.workers),
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
    ctx = _context(operation, actor=actor, venues=venues)
    try:
        workflow_for(operation.kind).fail(ctx, reason=reason, actor=actor)
    except NotFailable as exc:
        raise OperatorError(f"operation_id={operation_id}: {exc}") from exc
    except CommandRefused as exc:  # a worker moved the aggregate on meanwhile
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
    ctx = _context(operation, actor=actor, venues=venues)
    workflow = workflow_for(operation.kind)
    try:
        command = workflow.reconcile_command(ctx, reason=reason, operator=actor)
    except NotReconcilable as exc:
        raise OperatorError(f"operation_id={operation_id}: {exc}") from exc
    aggregate_execute(
        spec=workflow.spec,
        aggregate_id=operation.aggregate_id,
        command=command,
        metadata={"operation_id": operation.pk, "actor": actor, "action": "reconcile"},
    )
    operation.refresh_from_db()
    logger.warning("operation %s reconciled by %s: %s", operation_id, actor, reason)
    return operation

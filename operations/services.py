"""Writes to Operation rows: create (the guard) with its queued task, finish, fail, force-fail.

The guard is the database: `operation_one_active_per_pool` allows one active operation per pool.
`operation_create` inserts inside a savepoint, so losing the race is an ordinary "already active"
outcome (None), never an error in the caller's transaction.

The queued task is the outbox: with the ORM broker on the same database, `async_task` inside the
creating transaction means the task exists iff the operation does. With another broker (Redis)
the task is pushed on commit and the sweep (`operations.sweep`) covers a lost push.

Every path that ends an operation goes through `operation_finish` (a terminal event, called by
the trigger) or `operation_fail` (no terminal event: an error before the aggregate's first event,
exhausted attempts, an operator force-fail). `operation_fail` sends `operation_released` inside
its transaction so the trigger re-checks the pool and USDC (the rebalancer app listens).
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.dispatch import Signal
from django.utils import timezone

from inventory.domain.events import MINT, REDEMPTION, USDC_REBALANCE
from inventory.models import Event
from operations.models import (
    ACTIVE_STATUSES,
    EQUITY_KINDS,
    Operation,
    OperationKind,
    OperationStatus,
)

logger = logging.getLogger(__name__)

EXECUTE_TASK = "operations.tasks.execute_operation"
TASK_GROUP = "operations"
GUARD_CONSTRAINT = "operation_one_active_per_pool"

# Sent inside the transaction of `operation_fail` after the guard was released without a
# terminal event. kwargs: operation (Operation, now terminal). The trigger re-checks pools.
operation_released = Signal()


class OperationError(Exception):
    """Root of the operations app's errors."""


class OperationNotFound(OperationError):
    def __init__(self, operation_id: int) -> None:
        self.operation_id = operation_id
        super().__init__(f"operation_id={operation_id}: no such operation")


class OperationAlreadyFinished(OperationError):
    def __init__(self, operation_id: int, status: str) -> None:
        self.operation_id = operation_id
        self.status = status
        super().__init__(f"operation_id={operation_id}: already {status}, cannot be failed")


class OperationStarted(OperationError):
    """The aggregate has events: ending it must go through the aggregate's failure command."""

    def __init__(self, operation_id: int, aggregate_type: str, aggregate_id: str) -> None:
        self.operation_id = operation_id
        self.aggregate_type = aggregate_type
        self.aggregate_id = aggregate_id
        super().__init__(
            f"operation_id={operation_id}: {aggregate_type}/{aggregate_id} has events; "
            "fail it through the aggregate's failure command so the log records it"
        )


def orm_broker_in_use() -> bool:
    return "orm" in settings.Q_CLUSTER and not settings.Q_CLUSTER.get("redis")


def operation_enqueue(*, operation: Operation) -> None:
    """Queue `execute_operation(operation.pk)`: in this transaction (ORM), else on commit."""
    from django_q.tasks import async_task

    operation_id = operation.pk

    def push() -> None:
        async_task(
            EXECUTE_TASK, operation_id, task_name=f"operation-{operation_id}", group=TASK_GROUP
        )

    if orm_broker_in_use():
        push()
    else:
        transaction.on_commit(push)
    logger.debug("operation %s: task queued", operation_id)


def _is_guard_conflict(error: IntegrityError) -> bool:
    text = str(error)
    # PostgreSQL names the index; SQLite names the column of the partial unique index.
    return GUARD_CONSTRAINT in text or "operations_operation.pool" in text


def operation_create(
    *,
    kind: OperationKind,
    pool: str,
    amount: Decimal,
    token_address: str = "",
    now: datetime | None = None,
) -> Operation | None:
    """Create an active operation for `pool` and queue its task, or None if one is active.

    Runs in the caller's transaction when there is one (the trigger's event transaction).
    """
    moment = now or timezone.now()
    if kind == OperationKind.REDEMPTION and not token_address:
        raise ValueError(f"token_address={token_address!r}: a redemption needs the token")
    if kind not in EQUITY_KINDS and token_address:
        raise ValueError(f"token_address={token_address!r}: only redemptions carry a token")
    with transaction.atomic():
        try:
            with transaction.atomic():
                operation = Operation.objects.create(
                    kind=kind,
                    pool=pool,
                    amount=amount,
                    token_address=token_address,
                    status=OperationStatus.PENDING,
                    aggregate_id=str(uuid.uuid4()),
                    created_at=moment,
                    updated_at=moment,
                )
        except IntegrityError as error:
            if not _is_guard_conflict(error):
                raise
            logger.debug("pool %s: an operation is already active, not creating %s", pool, kind)
            return None
        operation_enqueue(operation=operation)
    logger.info(
        "operation %s created: %s %s amount=%s aggregate_id=%s",
        operation.pk,
        kind,
        pool,
        amount,
        operation.aggregate_id,
    )
    return operation


def _terminate(
    operation: Operation,
    *,
    status: OperationStatus,
    reason: str,
    finished_by: str,
    now: datetime,
) -> None:
    operation.status = status
    operation.failure_reason = reason
    operation.finished_by = finished_by
    operation.finished_at = now
    operation.updated_at = now
    operation.next_run_at = None
    operation.claimed_by = ""
    operation.claimed_until = None
    operation.save(
        update_fields=[
            "status",
            "failure_reason",
            "finished_by",
            "finished_at",
            "updated_at",
            "next_run_at",
            "claimed_by",
            "claimed_until",
        ]
    )


def operation_finish(
    *,
    aggregate_id: str,
    status: OperationStatus,
    reason: str = "",
    finished_by: str,
    needs_attention: bool = False,
    now: datetime | None = None,
) -> Operation | None:
    """Mark the active operation of `aggregate_id` terminal (a terminal event arrived).

    Returns the operation, or None when there is none or it is already terminal (idempotent).
    The caller (the trigger) re-checks the pools afterwards.
    """
    if status in ACTIVE_STATUSES:
        raise ValueError(f"status={status!r}: must be terminal")
    moment = now or timezone.now()
    with transaction.atomic():
        operation = Operation.objects.select_for_update().filter(aggregate_id=aggregate_id).first()
        if operation is None:
            logger.debug("aggregate %s has no operation row", aggregate_id)
            return None
        if not operation.is_active:
            logger.debug("operation %s already %s", operation.pk, operation.status)
            return None
        _terminate(operation, status=status, reason=reason, finished_by=finished_by, now=moment)
        if needs_attention and not operation.needs_attention:
            operation.needs_attention = True
            operation.save(update_fields=["needs_attention"])
    logger.info(
        "operation %s %s (%s)%s",
        operation.pk,
        status,
        finished_by,
        f": {reason}" if reason else "",
    )
    return operation


def operation_reconciled(
    *,
    aggregate_id: str,
    reason: str,
    finished_by: str,
    now: datetime | None = None,
) -> Operation | None:
    """An operator reconciled the aggregate (B13): end the operation if it is still active
    (failed, with the reason) and clear `needs_attention` (a human has dealt with it).

    Returns the operation (whatever its status), or None when the aggregate has no row.
    """
    moment = now or timezone.now()
    with transaction.atomic():
        operation = Operation.objects.select_for_update().filter(aggregate_id=aggregate_id).first()
        if operation is None:
            return None
        if operation.is_active:
            _terminate(
                operation,
                status=OperationStatus.FAILED,
                reason=reason,
                finished_by=finished_by,
                now=moment,
            )
        operation.needs_attention = False
        operation.updated_at = moment
        operation.save(update_fields=["needs_attention", "updated_at"])
    logger.info("operation %s reconciled: %s", operation.pk, reason)
    return operation


def operation_has_events(operation: Operation) -> bool:
    return Event.objects.filter(
        aggregate_type=operation.aggregate_type, aggregate_id=operation.aggregate_id
    ).exists()


def operation_fail(
    *, operation_id: int, reason: str, actor: str, now: datetime | None = None
) -> Operation:
    """End an active operation whose aggregate has no events yet, releasing the guard.

    For the paths with no terminal event (B4): an error before the first event, exhausted
    attempts, an operator force-fail before anything happened. Sends `operation_released`
    in the transaction so the trigger re-checks the pool and USDC.

    Raises OperationNotFound, OperationAlreadyFinished, or OperationStarted when the aggregate
    has events (then the aggregate's failure command must end it, so the log records why).
    """
    if not reason.strip():
        raise ValueError(f"reason={reason!r}: must not be empty")
    moment = now or timezone.now()
    with transaction.atomic():
        operation = Operation.objects.select_for_update().filter(pk=operation_id).first()
        if operation is None:
            raise OperationNotFound(operation_id)
        if not operation.is_active:
            raise OperationAlreadyFinished(operation_id, operation.status)
        if operation_has_events(operation):
            raise OperationStarted(operation_id, operation.aggregate_type, operation.aggregate_id)
        operation.last_error = reason
        operation.save(update_fields=["last_error"])
        _terminate(
            operation, status=OperationStatus.FAILED, reason=reason, finished_by=actor, now=moment
        )
        operation_released.send(sender=Operation, operation=operation)
    logger.warning(
        "operation %s failed by %s before its first event: %s", operation_id, actor, reason
    )
    return operation


class OperationCannotFail(OperationError):
    """The aggregate is in a step with no failure command (e.g. a mint's tokens arrived)."""

    def __init__(self, operation_id: int, aggregate_type: str, step: str) -> None:
        self.operation_id = operation_id
        self.aggregate_type = aggregate_type
        self.step = step
        super().__init__(
            f"operation_id={operation_id}: {aggregate_type} in step {step} has no failure "
            "command (let it finish, or reconcile it once it has failed)"
        )


def _failure_command(aggregate_type: str, step: str, reason: str) -> Any | None:
    """The aggregate's own failure command for its current step, or None if it has none.

    Conservative where the outcome is unknown: an accepted mint times out (inflight kept, the
    shares may still be moving) rather than failing acceptance (which returns them).
    """
    from inventory.domain import mint, redemption, usdc

    by_step: dict[str, dict[str, Any]] = {
        MINT: {
            mint.MintStep.REQUESTED: mint.RejectMint,
            mint.MintStep.ACCEPTED: mint.TimeOutMint,
        },
        REDEMPTION: {
            redemption.RedemptionStep.TRANSFER_PENDING: redemption.FailTransfer,
            redemption.RedemptionStep.TOKENS_SENT: redemption.FailDetection,
            redemption.RedemptionStep.PENDING: redemption.RejectRedemption,
        },
        USDC_REBALANCE: {
            usdc.UsdcStep.REQUESTED: usdc.FailRequest,
            usdc.UsdcStep.WITHDRAWING: usdc.FailWithdrawal,
            usdc.UsdcStep.WITHDRAWAL_COMPLETE: usdc.FailBridging,
            usdc.UsdcStep.BRIDGING: usdc.FailBridging,
            usdc.UsdcStep.ATTESTED: usdc.FailBridging,
            usdc.UsdcStep.BRIDGED: usdc.FailDeposit,
            usdc.UsdcStep.DEPOSIT_INITIATED: usdc.FailDeposit,
        },
    }
    command_class = by_step[aggregate_type].get(step)
    return None if command_class is None else command_class(reason=reason)


def _aggregate_module(aggregate_type: str) -> Any:
    from inventory.domain import mint, redemption, usdc

    return {MINT: mint, REDEMPTION: redemption, USDC_REBALANCE: usdc}[aggregate_type]


def operation_force_fail(
    *, operation_id: int, reason: str, actor: str, now: datetime | None = None
) -> Operation:
    """Operator force-fail: end an active operation whatever its progress.

    Before the aggregate's first event this is `operation_fail`. Afterwards the aggregate's own
    failure command for its current step is executed, so the log records who and why; its
    terminal event ends the Operation through the trigger (guard released, pools re-checked).
    Raises OperationCannotFail in a step without a failure command, and the aggregate's
    `CommandRefused` if a worker moved it on meanwhile.
    """
    from inventory.store import aggregate_execute, aggregate_load

    if not reason.strip():
        raise ValueError(f"reason={reason!r}: must not be empty")
    if not actor.strip():
        raise ValueError(f"actor={actor!r}: must not be empty")
    with transaction.atomic():
        operation = Operation.objects.select_for_update().filter(pk=operation_id).first()
        if operation is None:
            raise OperationNotFound(operation_id)
        if not operation.is_active:
            raise OperationAlreadyFinished(operation_id, operation.status)
        if not operation_has_events(operation):
            return operation_fail(operation_id=operation_id, reason=reason, actor=actor, now=now)
        module = _aggregate_module(operation.aggregate_type)
        loaded = aggregate_load(module.SPEC, operation.aggregate_id)
        step = module.step_of(loaded.state)
        if module.is_terminal(loaded.state):
            # The terminal event is in the log but the row missed it: settle from the log.
            operation_finish(
                aggregate_id=operation.aggregate_id,
                status=OperationStatus.FAILED,
                reason=f"{reason} (aggregate already {step})",
                finished_by=actor,
                now=now,
            )
        else:
            command = _failure_command(operation.aggregate_type, step, reason)
            if command is None:
                raise OperationCannotFail(operation_id, operation.aggregate_type, str(step))
            aggregate_execute(
                spec=module.SPEC,
                aggregate_id=operation.aggregate_id,
                command=command,
                now=now,
                metadata={"actor": actor, "action": "force_fail"},
            )
        operation.refresh_from_db()
        if operation.is_active:
            raise OperationError(
                f"operation_id={operation_id}: the failure in step {step} did not end it"
            )
        if operation.finished_by.startswith("event:"):
            operation.finished_by = actor
            operation.save(update_fields=["finished_by"])
    logger.warning("operation %s force-failed by %s: %s", operation_id, actor, reason)
    return operation


def operation_flag(
    *, operation_id: int, error: str, now: datetime | None = None
) -> Operation | None:
    """Record an error and ask for a human (`needs_attention`) without ending the operation."""
    moment = now or timezone.now()
    updated = Operation.objects.filter(pk=operation_id).update(
        needs_attention=True, last_error=error, updated_at=moment
    )
    if not updated:
        return None
    logger.error("operation %s needs attention: %s", operation_id, error)
    return Operation.objects.get(pk=operation_id)

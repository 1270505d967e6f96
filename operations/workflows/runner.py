"""The workflow runner: claim an operation, advance it step by step, release it.

`operation_advance(operation_id=...)` is what the django-q2 task calls (at least once per
delivery). It

1. claims the operation in a short transaction (row lock; SQLite serialises via IMMEDIATE):
   skips it when terminal, when another worker's lease (`claimed_until`) is still valid (a
   duplicate delivery) or, for a django-q2 task (`due_only`), when it waits and its
   `next_run_at` has not come (a task delivered late); else sets the lease, status running,
   clears `queued_until` and counts the attempt.
   An exhausted attempt counter fails it through the workflow (the failure command valid in
   the aggregate's state) or `operation_fail` when there is no aggregate yet; the guard is
   released on every terminal path (the trigger ends the operation on the terminal event).
2. runs steps with no transaction or lock held while a venue is called. `Wait` -> status
   waiting, `next_run_at`, lease released, attempts reset (progress was made); the due loop
   (`operations.due`) enqueues it when due. Errors -> `last_error`, waiting with backoff
   (the attempt stays counted, so a persistent failure exhausts the counter).

Attempts count deliveries without progress: a clean `Wait`/`Done` resets the counter, a crash
or an error keeps it (django-q2's own max_attempts is bypassed when a worker dies).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from conf.env import WorkerConfig
from operations.models import ACTIVE_STATUSES, Operation, OperationStatus
from operations.services import (
    OperationAlreadyFinished,
    operation_fail,
    operation_flag,
)
from operations.venues import Venues, VenuesNotConfigured, venues_get
from operations.workflows.base import (
    Continue,
    Done,
    NeedsAttention,
    NotFailable,
    OperationInactive,
    TransientStepError,
    Wait,
)
from operations.workflows.context import StepContext
from operations.workflows.registry import NoWorkflow, Workflow, workflow_for

logger = logging.getLogger(__name__)

MAX_STEPS_PER_RUN = 40


@dataclass(frozen=True)
class AdvanceResult:
    """What one run did: skipped | waiting | done | retry | gave_up | attention."""

    outcome: str
    detail: str = ""
    wait_s: float | None = None


def lease_seconds(config: WorkerConfig) -> float:
    if config.lease_s is not None:
        return config.lease_s
    return float(settings.Q_CLUSTER.get("timeout", 120))


def backoff_seconds(config: WorkerConfig, attempts: int) -> float:
    exponent = max(0, attempts - 1)
    return min(config.backoff_max_s, config.backoff_base_s * (2 ** min(exponent, 20)))


def retry_after_s(exc: BaseException) -> float:
    """The wait a venue asked for (a rate limit's `Retry-After`, carried by the error or one
    of its causes as `retry_after_s`), or 0."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        value = getattr(current, "retry_after_s", None)
        if isinstance(value, int | float) and value > 0:
            return float(value)
        current = current.__cause__ or current.__context__
    return 0.0


def _worker_token() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _claim(operation_id: int, *, token: str, lease_s: float, due_only: bool) -> Operation | None:
    now = timezone.now()
    with transaction.atomic():
        operation = Operation.objects.select_for_update().filter(pk=operation_id).first()
        if operation is None:
            logger.warning("operation %s: no such operation, task dropped", operation_id)
            return None
        if operation.status not in ACTIVE_STATUSES:
            logger.info("operation %s already %s, task dropped", operation_id, operation.status)
            return None
        if operation.claimed_by and operation.claimed_until and operation.claimed_until > now:
            logger.info(
                "operation %s: lease held by %s until %s, duplicate delivery skipped",
                operation_id,
                operation.claimed_by,
                operation.claimed_until.isoformat(),
            )
            return None
        if (
            due_only
            and operation.status == OperationStatus.WAITING
            and operation.next_run_at is not None
            and operation.next_run_at > now
        ):
            # An earlier task delivered late: the row says when it runs, not the queue.
            logger.debug(
                "operation %s: not due before %s, task dropped", operation_id, operation.next_run_at
            )
            return None
        operation.attempts += 1
        operation.status = OperationStatus.RUNNING
        operation.claimed_by = token
        operation.claimed_until = now + timedelta(seconds=lease_s)
        operation.next_run_at = None
        operation.queued_until = None
        operation.updated_at = now
        if operation.started_at is None:
            operation.started_at = now
        operation.save(
            update_fields=[
                "attempts",
                "status",
                "claimed_by",
                "claimed_until",
                "next_run_at",
                "queued_until",
                "updated_at",
                "started_at",
            ]
        )
    return operation


def _park(
    operation_id: int,
    *,
    token: str,
    wait_s: float,
    error: str | None = None,
    reset_attempts: bool = False,
    attention: bool = False,
) -> None:
    """Release the lease and wait (only if the operation is still active and ours)."""
    now = timezone.now()
    changes: dict[str, object] = {
        "status": OperationStatus.WAITING,
        "next_run_at": now + timedelta(seconds=wait_s),
        "claimed_by": "",
        "claimed_until": None,
        "updated_at": now,
    }
    if error is not None:
        changes["last_error"] = error[:4000]
    if reset_attempts:
        changes["attempts"] = 0
    if attention:
        changes["needs_attention"] = True
    Operation.objects.filter(pk=operation_id, status__in=ACTIVE_STATUSES, claimed_by=token).update(
        **changes
    )


def _release(operation_id: int, *, token: str) -> None:
    """Drop our lease (terminal operations had it cleared by the finishing service)."""
    Operation.objects.filter(pk=operation_id, claimed_by=token).update(
        claimed_by="", claimed_until=None
    )


def operation_give_up(
    *, operation: Operation, workflow: Workflow, ctx: StepContext, reason: str, actor: str
) -> str:
    """End an operation that cannot go on: the workflow's failure command valid in its state,
    else `operation_fail` (no aggregate yet). Returns what happened: failed | flagged."""
    try:
        recorded = workflow.fail(ctx, reason=reason, actor=actor)
    except NotFailable as exc:
        # Not the whole reason: it quotes the last error, which this becomes (no nesting when
        # the venue stays unable to answer and giving up is tried again).
        head = reason.partition("; last error: ")[0]
        operation_flag(operation_id=operation.pk, error=f"{head}, cannot be failed yet: {exc}")
        return "flagged"
    if not recorded:
        with contextlib.suppress(OperationAlreadyFinished):
            operation_fail(operation_id=operation.pk, reason=reason, actor=actor)
    return "failed"


def operation_advance(
    *, operation_id: int, venues: Venues | None = None, due_only: bool = False
) -> AdvanceResult:
    """Advance one operation as far as it can go now (see the module docstring). With
    `due_only` (a django-q2 task) a waiting operation whose `next_run_at` has not come is
    skipped: the row says when it runs, not the queue."""
    config: WorkerConfig = venues.workers if venues else settings.REBALANCING.workers
    lease_s = lease_seconds(config)
    token = _worker_token()
    operation = _claim(operation_id, token=token, lease_s=lease_s, due_only=due_only)
    if operation is None:
        return AdvanceResult("skipped")
    if venues is None:
        try:
            venues = venues_get()
        except VenuesNotConfigured as exc:
            logger.error("operation %s: %s", operation_id, exc)
            wait_s = backoff_seconds(config, operation.attempts)
            _park(operation_id, token=token, wait_s=wait_s, error=str(exc), attention=True)
            return AdvanceResult("attention", str(exc), wait_s)
    try:
        workflow = workflow_for(operation.kind)
    except NoWorkflow as exc:
        logger.error("operation %s: %s", operation_id, exc)
        wait_s = backoff_seconds(config, operation.attempts)
        _park(operation_id, token=token, wait_s=wait_s, error=str(exc), attention=True)
        return AdvanceResult("attention", str(exc), wait_s)
    ctx = StepContext(
        operation=operation, venues=venues, spec=workflow.spec, lease_token=token, lease_s=lease_s
    )

    if operation.attempts > config.max_attempts:
        reason = f"exhausted {config.max_attempts} attempts"
        if operation.last_error:
            reason = f"{reason}; last error: {operation.last_error}"
        logger.error("operation %s (%s): %s", operation_id, operation.kind, reason)
        try:
            what = operation_give_up(
                operation=operation, workflow=workflow, ctx=ctx, reason=reason, actor="system"
            )
        except Exception as exc:  # noqa: BLE001 - keep it resumable
            logger.exception("operation %s: giving up failed", operation_id)
            what = f"give-up error: {exc}"
        if what != "failed":
            _park(operation_id, token=token, wait_s=config.backoff_max_s, attention=True)
            return AdvanceResult("attention", what)
        _release(operation_id, token=token)
        return AdvanceResult("gave_up", reason)

    logger.info(
        "operation %s (%s %s %s): attempt %d",
        operation_id,
        operation.kind,
        operation.pool,
        operation.amount,
        operation.attempts,
    )
    try:
        for _ in range(MAX_STEPS_PER_RUN):
            outcome = workflow.step(ctx)
            if isinstance(outcome, Continue):
                continue
            if isinstance(outcome, Wait):
                logger.info(
                    "operation %s: waiting %.1fs (%s)",
                    operation_id,
                    outcome.seconds,
                    outcome.reason,
                )
                _park(operation_id, token=token, wait_s=outcome.seconds, reset_attempts=True)
                return AdvanceResult("waiting", outcome.reason, outcome.seconds)
            if isinstance(outcome, Done):
                logger.info("operation %s: done %s", operation_id, outcome.note)
                _release(operation_id, token=token)
                return AdvanceResult("done", outcome.note)
            raise TypeError(f"step returned {outcome!r}")
        _park(operation_id, token=token, wait_s=0, reset_attempts=True)
        return AdvanceResult("waiting", "step budget used", 0)
    except OperationInactive as exc:
        logger.info("operation %s: stopped: %s", operation_id, exc)
        _release(operation_id, token=token)
        return AdvanceResult("skipped", str(exc))
    except NeedsAttention as exc:
        logger.error("operation %s needs attention: %s", operation_id, exc)
        wait_s = config.backoff_max_s
        _park(operation_id, token=token, wait_s=wait_s, error=str(exc), attention=True)
        return AdvanceResult("attention", str(exc), wait_s)
    except TransientStepError as exc:
        wait_s = max(backoff_seconds(config, operation.attempts), retry_after_s(exc))
        logger.warning(
            "operation %s: attempt %d failed, retrying in %.1fs: %s",
            operation_id,
            operation.attempts,
            wait_s,
            exc,
        )
        _park(operation_id, token=token, wait_s=wait_s, error=str(exc))
        return AdvanceResult("retry", str(exc), wait_s)
    except Exception as exc:
        wait_s = max(backoff_seconds(config, operation.attempts), retry_after_s(exc))
        logger.exception(
            "operation %s: unexpected error on attempt %d, retrying in %.1fs",
            operation_id,
            operation.attempts,
            wait_s,
        )
        _park(operation_id, token=token, wait_s=wait_s, error=f"{type(exc).__name__}: {exc}")
        return AdvanceResult("retry", f"{type(exc).__name__}: {exc}", wait_s)

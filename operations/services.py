"""Writes to Operation rows: create (the guard) with its queued task, finish, fail, force-fail.

The guard is the database: `operation_one_active_per_pool` allows one active operation per pool.
`operation_create` inserts inside a savepoint, so losing the race is an ordinary "already active"
outcome (None), never an error in the caller's transaction.

The row owns "when does this run next and who holds it" (`next_run_at`, the lease
`claimed_by`/`claimed_until`, `queued_until`); the django-q2 task only wakes a worker. The task
queued with a new operation is the outbox: with the ORM broker on the same database,
`async_task` inside the creating transaction means the task exists iff the operation does. With
another broker (Redis) the task is pushed on commit; a lost push is a `queued_until` that passed,
and the due loop (`operations.due`) enqueues the operation again.

Every path that ends an operation goes through `operation_finish` (a terminal event, called by
the trigger) or `operation_fail` (no terminal event: an error before the aggregate's first event,
exhausted attempts, an operator force-fail). `operation_fail` sends `operation_released` inside
its transaction so the trigger re-checks the pool and USDC (the rebalancer app listens).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.dispatch import Signal
from django.utils import timezone
from eth_utils import to_checksum_address

from inventory.db_errors import unique_violated
from inventory.domain.checks import validate_address, validate_text
from inventory.domain.events import MINT, REDEMPTION, USDC_REBALANCE
from inventory.domain.values import (
    SHARE_DECIMALS,
    USDC_DECIMALS,
    USDC_POOL,
    InvalidValue,
    validate_quantity,
    validate_symbol,
)
from inventory.models import Event
from operations.models import (
    ACTIVE_STATUSES,
    EQUITY_KINDS,
    Operation,
    OperationKind,
    OperationStatus,
    PoolBreaker,
)

logger = logging.getLogger(__name__)

EXECUTE_TASK = "operations.tasks.execute_operation"
TASK_GROUP = "operations"
GUARD_CONSTRAINT = "operation_one_active_per_pool"

# Sent inside the transaction of `operation_fail` after the guard was released without a
# terminal event. kwargs: operation (Operation, now terminal). The trigger re-checks pools.
operation_released = Signal()
# Sent when pools may be rebalanced again (a cool-down ended, an operator resumed a pool).
# kwargs: pools (set of pool keys). The trigger re-checks them.
pools_recheck = Signal()


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


def operation_due(now: datetime) -> Q:
    """Active operations a worker may take now: not waiting (or waiting and its time came) and
    no valid lease. A lost task is a lease that expired: it is due again like any other."""
    time_came = ~Q(status=OperationStatus.WAITING) | Q(next_run_at__isnull=True)
    unleased = Q(claimed_until__isnull=True) | Q(claimed_until__lte=now)
    return Q(status__in=ACTIVE_STATUSES) & (time_came | Q(next_run_at__lte=now)) & unleased


def queued_for_s() -> float:
    """How long an enqueued task may go untaken before the due loop enqueues another: the
    broker's own redelivery period (Q_RETRY_S)."""
    return float(settings.Q_CLUSTER.get("retry", 180))


def queued_until_from(now: datetime | None = None) -> datetime:
    return (now or timezone.now()) + timedelta(seconds=queued_for_s())


def operation_enqueue(*, operation: Operation, now: datetime | None = None) -> None:
    """Mark the row queued (`queued_until`) and queue its task (`task_push`)."""
    operation.queued_until = queued_until_from(now)
    Operation.objects.filter(pk=operation.pk).update(queued_until=operation.queued_until)
    task_push(operation.pk)


def task_push(operation_id: int) -> None:
    """Queue `execute_operation(operation_id)`: in this transaction (ORM), else on commit. The
    caller has marked the row queued."""
    from django_q.tasks import async_task

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
    return unique_violated(error) == GUARD_CONSTRAINT


def _create_arguments(
    kind: Any, pool: Any, amount: Any, token_address: Any
) -> tuple[OperationKind, str, Decimal, str]:
    """Validate `operation_create`'s arguments like every other service (`InvalidValue`
    naming field, value and rule): a known kind, the pool that kind moves (an equity symbol
    or USDC), a positive amount within that unit's decimals, a redemption's EIP-55 token."""
    if kind not in OperationKind.values:
        raise InvalidValue("kind", kind, f"must be one of {', '.join(OperationKind.values)}")
    kind = OperationKind(kind)
    if kind in EQUITY_KINDS:
        pool = validate_symbol(pool, "pool")
        amount = validate_quantity("amount", amount, decimals=SHARE_DECIMALS)
    else:
        if pool != USDC_POOL:
            raise InvalidValue("pool", pool, f"a {kind} operation moves the {USDC_POOL} pool")
        amount = validate_quantity("amount", amount, decimals=USDC_DECIMALS)
    if kind == OperationKind.REDEMPTION:
        if not token_address:
            raise InvalidValue("token_address", token_address, "a redemption needs the token")
        token_address = to_checksum_address(validate_address("token_address", token_address))
    elif token_address:
        raise InvalidValue("token_address", token_address, "only redemptions carry a token")
    return kind, pool, amount, token_address or ""


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
    kind, pool, amount, token_address = _create_arguments(kind, pool, amount, token_address)
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
                    queued_until=queued_until_from(),
                )
        except IntegrityError as error:
            if not _is_guard_conflict(error):
                raise
            logger.debug("pool %s: an operation is already active, not creating %s", pool, kind)
            return None
        task_push(operation.pk)
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
    terminal = [value for value in OperationStatus.values if value not in ACTIVE_STATUSES]
    if not isinstance(status, str) or status not in terminal:
        raise InvalidValue("status", status, f"must be a terminal status: {', '.join(terminal)}")
    status = OperationStatus(status)
    if not isinstance(reason, str):
        raise InvalidValue("reason", reason, "must be a string")
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
        if status == OperationStatus.COMPLETED:
            pool_success_record(pool=operation.pool, now=moment)
        else:
            pool_failure_record(operation=operation, reason=reason, now=moment)
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
        # A human settled it: the pool need not sit out the cool-down of that failure (an open
        # circuit breaker stays open until resumed explicitly).
        PoolBreaker.objects.filter(pool=operation.pool, open_since__isnull=True).update(
            cooldown_until=None, recheck_pending=False, updated_at=moment
        )
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
    validate_text("reason", reason)
    validate_text("actor", actor)
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
        pool_failure_record(operation=operation, reason=reason, now=moment)
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
            mint.MintStep.TOKENS_RECEIVED: mint.FailVaultDeposit,
            mint.MintStep.VAULT_DEPOSIT_SUBMITTED: mint.FailVaultDeposit,
        },
        REDEMPTION: {
            redemption.RedemptionStep.VAULT_WITHDRAW_PENDING: redemption.FailVaultWithdraw,
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

    validate_text("reason", reason)
    validate_text("actor", actor)
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


def operation_attention_clear(
    *, operation_id: int, now: datetime | None = None
) -> Operation | None:
    """A human dealt with it: clear `needs_attention` (after an operator's reconciliation)."""
    moment = now or timezone.now()
    updated = Operation.objects.filter(pk=operation_id).update(
        needs_attention=False, updated_at=moment
    )
    if not updated:
        return None
    logger.info("operation %s: attention cleared", operation_id)
    return Operation.objects.get(pk=operation_id)


# --- failures do not loop: per-pool cool-down and circuit breaker -----------------------------


class PoolNotHeld(OperationError):
    def __init__(self, pool: str) -> None:
        self.pool = pool
        super().__init__(f"pool={pool!r}: neither cooling down nor stopped by its breaker")


def cooldown_seconds(*, consecutive_failures: int) -> float:
    """The cool-down after the n-th failure in a row: the base doubled per earlier failure,
    at most the maximum (`REBALANCER_COOLDOWN_BASE_S`, `REBALANCER_COOLDOWN_MAX_S`)."""
    config = settings.REBALANCING.workers
    exponent = min(max(0, consecutive_failures - 1), 30)
    return float(min(config.cooldown_max_s, config.cooldown_base_s * (2**exponent)))


def _breaker_audit(*, pool: str, old: str, new: str, changed_by: str, now: datetime) -> None:
    from inventory.domain import settings as settings_domain
    from inventory.store import aggregate_execute

    aggregate_execute(
        spec=settings_domain.SPEC,
        aggregate_id=settings_domain.GLOBAL_SCOPE,
        command=settings_domain.ChangeSetting(
            scope=settings_domain.GLOBAL_SCOPE,
            setting=settings_domain.circuit_breaker_setting(pool),
            old_value=old,
            new_value=new,
            changed_by=changed_by,
        ),
        now=now,
    )


def _breaker_locked(pool: str) -> PoolBreaker:
    PoolBreaker.objects.get_or_create(pool=pool)
    return PoolBreaker.objects.select_for_update().get(pool=pool)


def pool_failure_record(
    *, operation: Operation, reason: str, now: datetime | None = None
) -> PoolBreaker:
    """A pool's operation failed: count it, cool the pool down (shown on the operation and
    logged), and open the pool's breaker (audited) at the configured count. In the caller's
    transaction (the one that ended the operation), so no trigger in it plans a new one."""
    from inventory.domain import settings as settings_domain

    moment = now or timezone.now()
    config = settings.REBALANCING.workers
    with transaction.atomic():
        breaker = _breaker_locked(operation.pool)
        breaker.consecutive_failures += 1
        wait_s = cooldown_seconds(consecutive_failures=breaker.consecutive_failures)
        breaker.cooldown_until = moment + timedelta(seconds=wait_s)
        breaker.recheck_pending = True
        breaker.last_failure_reason = reason[:4000]
        breaker.updated_at = moment
        opened = (
            breaker.open_since is None and breaker.consecutive_failures >= config.breaker_failures
        )
        if opened:
            breaker.open_since = moment
        breaker.save()
        operation.cooldown_until = breaker.cooldown_until
        operation.save(update_fields=["cooldown_until"])
        if opened:
            _breaker_audit(
                pool=operation.pool,
                old=settings_domain.BREAKER_CLOSED,
                new=settings_domain.BREAKER_OPEN,
                changed_by="system",
                now=moment,
            )
    logger.warning(
        "pool %s: operation %s failed (%d in a row); cooling down %.0fs until %s",
        operation.pool,
        operation.pk,
        breaker.consecutive_failures,
        wait_s,
        breaker.cooldown_until.isoformat(),
    )
    if opened:
        logger.error(
            "pool %s: circuit breaker open after %d failures in a row (last: %s); no "
            "rebalancing of it until an operator resumes it",
            operation.pool,
            breaker.consecutive_failures,
            reason,
        )
    return breaker


def pool_success_record(*, pool: str, now: datetime | None = None) -> None:
    """A pool's operation completed: the count of failures in a row starts again."""
    moment = now or timezone.now()
    updated = PoolBreaker.objects.filter(pool=pool, consecutive_failures__gt=0).update(
        consecutive_failures=0, cooldown_until=None, recheck_pending=False, updated_at=moment
    )
    if updated:
        logger.info("pool %s: operation completed, failure count reset", pool)


@dataclass(frozen=True)
class BreakerState:
    """What the trigger needs of a pool's breaker row."""

    consecutive_failures: int
    cooldown_until: datetime | None
    open_since: datetime | None


def pool_breakers_load(pools: Iterable[str]) -> dict[str, BreakerState]:
    rows = PoolBreaker.objects.filter(pool__in=sorted(set(pools))).values_list(
        "pool", "consecutive_failures", "cooldown_until", "open_since"
    )
    return {
        pool: BreakerState(failures, cooldown_until, open_since)
        for pool, failures, cooldown_until, open_since in rows
    }


def pool_breakers(pools: Iterable[str]) -> dict[str, BreakerState]:
    """The breakers of `pools`, kept in memory and read again only when the configuration
    stamp changed (every write to a breaker changes it: `inventory.config_stamp`)."""
    from inventory import config_stamp

    wanted = tuple(sorted(set(pools)))
    return config_stamp.cached(f"pool_breakers:{wanted}", lambda: pool_breakers_load(wanted))


def breaker_hold_reason(breaker: BreakerState | None, now: datetime) -> str | None:
    """Why a pool with this breaker must not get a new operation at `now`, or None."""
    if breaker is None:
        return None
    if breaker.open_since is not None:
        return (
            f"circuit breaker open since {breaker.open_since.isoformat()} after "
            f"{breaker.consecutive_failures} failures in a row; an operator must resume it"
        )
    if breaker.cooldown_until is not None and breaker.cooldown_until > now:
        return (
            f"cooling down until {breaker.cooldown_until.isoformat()} after "
            f"{breaker.consecutive_failures} failure(s) in a row"
        )
    return None


def pool_hold_reason(*, pool: str, now: datetime | None = None) -> str | None:
    """Why the trigger must not plan an operation for `pool` now, or None."""
    return breaker_hold_reason(pool_breakers([pool]).get(pool), now or timezone.now())


def pool_resume(*, pool: str, actor: str, reason: str, now: datetime | None = None) -> PoolBreaker:
    """An operator resumes a pool: closes its breaker (audited, like the pause switch), ends
    its cool-down and resets the count; the trigger re-checks it. Raises `PoolNotHeld` when
    there is nothing to resume, and `ValueError` for an empty actor or reason."""
    from inventory.domain import settings as settings_domain

    if not isinstance(actor, str) or not actor.strip():
        raise ValueError(f"actor={actor!r}: must name who resumes the pool")
    if not isinstance(reason, str) or not reason.strip():
        raise ValueError(f"reason={reason!r}: must not be empty")
    moment = now or timezone.now()
    with transaction.atomic():
        breaker = PoolBreaker.objects.select_for_update().filter(pool=pool).first()
        cooling = (
            breaker is not None
            and breaker.cooldown_until is not None
            and breaker.cooldown_until > moment
        )
        if breaker is None or (breaker.open_since is None and not cooling):
            raise PoolNotHeld(pool)
        was_open = breaker.open_since is not None
        breaker.consecutive_failures = 0
        breaker.cooldown_until = None
        breaker.recheck_pending = False
        breaker.open_since = None
        breaker.updated_at = moment
        breaker.save()
        if was_open:
            _breaker_audit(
                pool=pool,
                old=settings_domain.BREAKER_OPEN,
                new=settings_domain.BREAKER_CLOSED,
                changed_by=actor.strip(),
                now=moment,
            )
    logger.warning("pool %s resumed by %s: %s", pool, actor, reason)
    # After commit, holding no breaker lock: the re-check locks pool rows (the event path
    # locks pools before breakers, so never the other way round).
    pools_recheck.send(sender=PoolBreaker, pools={pool})
    return breaker


def pools_cooled_down_recheck(*, now: datetime | None = None) -> set[str]:
    """Pools whose cool-down ended since their failure: re-check each once (the due loop)."""
    moment = now or timezone.now()
    with transaction.atomic():
        rows = list(
            PoolBreaker.objects.select_for_update()
            .filter(recheck_pending=True, open_since__isnull=True, cooldown_until__lte=moment)
            .order_by("pk")
        )
        if not rows:
            return set()
        PoolBreaker.objects.filter(pk__in=[row.pk for row in rows]).update(
            recheck_pending=False, updated_at=moment
        )
        pools = {row.pool for row in rows}
    logger.info("cool-down over for %s: re-checking", ", ".join(sorted(pools)))
    # After commit, holding no breaker lock (the event path locks pools before breakers).
    pools_recheck.send(sender=PoolBreaker, pools=pools)
    return pools

"""django-q2 task entry points (thin: parse, call one service)."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def execute_operation(operation_id: int) -> None:
    """Advance one operation (queued by the trigger, the due loop, an operator).

    The runner claims it (lease, attempt counter; an exhausted counter fails it and releases
    the guard), runs its steps and parks it when it must wait. Anything escaping the runner is
    logged here at ERROR and re-raised so django-q2 records the failed task; the operation
    stays active and the due loop enqueues it again once its lease has expired.
    """
    from django.conf import settings

    from operations.workflows import operation_advance

    if settings.REBALANCING.monitor_only:
        # REBALANCING_MODE=monitor: no venue write. The operation stays as it is;
        # the sweep queues it again once the mode is on.
        logger.warning(
            "operation %s not advanced: REBALANCING_MODE is %s (no venue write)",
            operation_id,
            settings.REBALANCING.mode,
        )
        return
    try:
        result = operation_advance(operation_id=int(operation_id), due_only=True)
    except Exception:
        logger.exception("operation %s: task failed", operation_id)
        raise
    logger.debug("operation %s: %s %s", operation_id, result.outcome, result.detail)

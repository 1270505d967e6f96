"""django-q2 task entry points (thin: parse, call one service)."""

from __future__ import annotations

import importlib
import importlib.util
import logging

from operations.services import operation_attempt_record

logger = logging.getLogger(__name__)

WORKFLOWS_MODULE = "operations.workflows"


def execute_operation(operation_id: int) -> None:
    """Run the next steps of one operation (queued by the trigger and by the sweep).

    Records the delivery as an attempt (an exhausted counter fails the operation and releases
    its guard), then hands over to `operations.workflows.operation_advance`. The workflows that
    call the venues land with issue #5 ("Workers"); until that module exists this task only
    counts the attempt and logs an error, and performs no venue effect.
    """
    operation = operation_attempt_record(operation_id=int(operation_id))
    if operation is None:
        return
    if importlib.util.find_spec(WORKFLOWS_MODULE) is None:
        logger.error(
            "operation %s: no workflow runner (%s is not installed), attempt %d recorded",
            operation.pk,
            WORKFLOWS_MODULE,
            operation.attempts,
        )
        return
    workflows = importlib.import_module(WORKFLOWS_MODULE)
    workflows.operation_advance(operation_id=operation.pk)

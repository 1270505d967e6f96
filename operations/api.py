"""HTTP API reads of operations: a filtered list and one operation with its events in order.

Mounted under /api/v1/ by `rebalancer.api`; the `read` scope.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from django.http import HttpRequest
from ninja import Field, Path, Query, Router, Schema, Status

from inventory.auth import operate_auth, read_auth
from inventory.schemas import INT64_MAX, error_responses
from operations.models import Operation, OperationKind, OperationStatus
from operations.selectors import operation_events, operations_filtered

router = Router(tags=["operations"], auth=read_auth)
# POST /operations, POST /operations/{id}/cancel take the `operate` scope (issue 24).

MAX_LIMIT = 500


def decimal_text(value: Decimal | None) -> str | None:
    """A decimal as plain text (never exponent notation), None kept."""
    return None if value is None else format(value, "f")


def timestamp_text(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


class OperationOut(Schema):
    id: int
    kind: str
    pool: str
    amount: str = Field(description="Shares (mint, redemption) or USDC, decimal string")
    status: str
    aggregate_id: str
    created_at: str
    updated_at: str
    started_at: str | None
    finished_at: str | None
    next_run_at: str | None
    attempts: int
    needs_attention: bool
    last_error: str
    failure_reason: str
    finished_by: str


class OperationEventOut(Schema):
    id: int
    sequence: int
    event_type: str
    recorded_at: str
    payload: dict[str, Any]


class OperationDetailOut(OperationOut):
    events: list[OperationEventOut]
    costs: dict[str, Any] = Field(
        description="The realized cost ledger (issue 24): each transaction's receipt figures "
        "and USD value as recorded, Circle's and Alpaca's fees, venue charges, step times"
    )
    actions: list[str] = Field(
        description="The operator actions that apply now: retry, fail and reconcile while it "
        "is active, cancel only before anything moved; none once it is finished"
    )


class OperationFilters(Schema):
    status: OperationStatus | None = None
    kind: OperationKind | None = None
    pool: str | None = Field(None, max_length=32, pattern=r"^[A-Za-z0-9.\-]+$")
    limit: int = Field(100, ge=1, le=MAX_LIMIT)


def operation_body(operation: Operation) -> dict[str, Any]:
    return {
        "id": operation.pk,
        "kind": operation.kind,
        "pool": operation.pool,
        "amount": decimal_text(operation.amount),
        "status": operation.status,
        "aggregate_id": operation.aggregate_id,
        "created_at": timestamp_text(operation.created_at),
        "updated_at": timestamp_text(operation.updated_at),
        "started_at": timestamp_text(operation.started_at),
        "finished_at": timestamp_text(operation.finished_at),
        "next_run_at": timestamp_text(operation.next_run_at),
        "attempts": operation.attempts,
        "needs_attention": operation.needs_attention,
        "last_error": operation.last_error,
        "failure_reason": operation.failure_reason,
        "finished_by": operation.finished_by,
    }


@router.get("/operations", response={200: list[OperationOut], **error_responses(400, 401, 403)})
def operations_list(request: HttpRequest, filters: Query[OperationFilters]) -> Any:
    """Operations, newest first, filtered by status, kind and pool."""
    rows = operations_filtered(
        status=filters.status, kind=filters.kind, pool=filters.pool, limit=filters.limit
    )
    return [operation_body(operation) for operation in rows]


@router.get(
    "/operations/{operation_id}",
    response={200: OperationDetailOut, **error_responses(400, 401, 403, 404)},
)
def operation_detail(
    request: HttpRequest, operation_id: Annotated[int, Path(ge=1, le=INT64_MAX)]
) -> Any:
    """One operation, its aggregate's events in sequence order and its cost ledger."""
    operation = Operation.objects.filter(pk=operation_id).first()
    if operation is None:
        raise Operation.DoesNotExist(f"no operation has id {operation_id}")
    body = operation_body(operation)
    body["events"] = [
        {
            "id": row.id,
            "sequence": row.sequence,
            "event_type": row.event_type,
            "recorded_at": timestamp_text(row.recorded_at),
            "payload": row.payload,
        }
        for row in operation_events(operation=operation)
    ]
    from operations.costs import operation_costs, operation_costs_body

    body["costs"] = operation_costs_body(operation_costs(operation))
    from operations.operator import operation_actions_applicable

    body["actions"] = operation_actions_applicable(operation)
    return body


# --- manual operations (issue 24): the `operate` scope ----------------------------------------


class OperationStartIn(Schema):
    kind: OperationKind
    pool: str = Field(description="An equity symbol, or USDC for the USDC kinds")
    amount: str = Field(description="Shares (mint, redemption) or USDC, decimal string")
    reason: str = Field(description="Why (recorded with the token's name)")


class OperationStartedOut(OperationOut):
    estimated_cost_usd: str | None = Field(
        description="The estimate shown, not enforced (null: not estimated)"
    )


class OperationCancelIn(Schema):
    reason: str = Field(description="Why (recorded with the token's name)")


class OperatorRefused(Exception):
    """An operator action refused in the current state (409); nothing was changed."""


def _actor(request: HttpRequest) -> str:
    return f"api:{request.auth.name}"  # type: ignore[attr-defined]


@router.post(
    "/operations",
    auth=operate_auth,
    response={201: OperationStartedOut, **error_responses(400, 401, 403, 409)},
)
def operation_start(request: HttpRequest, body: OperationStartIn) -> Any:
    """Start a mint, redemption or USDC move of a chosen amount for a pool (the same guard
    and workflows as the trigger's; the cost estimate is shown, not enforced). 409 when
    REBALANCING_MODE is not on, the pool already has an active operation or needs
    reconciliation; audited with the token's name."""
    from operations.operator import OperatorError, operator_start

    try:
        operation, estimate = operator_start(
            kind=body.kind,
            pool=body.pool,
            amount=body.amount,
            reason=body.reason,
            actor=_actor(request),
        )
    except OperatorError as exc:
        raise OperatorRefused(str(exc)) from exc
    return Status(201, {**operation_body(operation), "estimated_cost_usd": decimal_text(estimate)})


@router.post(
    "/operations/{operation_id}/cancel",
    auth=operate_auth,
    response={200: OperationOut, **error_responses(400, 401, 403, 404, 409)},
)
def operation_cancel(
    request: HttpRequest,
    operation_id: Annotated[int, Path(ge=1, le=INT64_MAX)],
    body: OperationCancelIn,
) -> Any:
    """Cancel an operation that has not moved anything yet (no recorded step, no venue
    request out); 409 otherwise (a started one is force-failed in the console or with
    `manage.py operation fail`). Audited with the token's name."""
    from operations.operator import OperatorError, operator_cancel

    if not Operation.objects.filter(pk=operation_id).exists():
        raise Operation.DoesNotExist(f"no operation has id {operation_id}")
    try:
        operation = operator_cancel(
            operation_id=operation_id, reason=body.reason, actor=_actor(request)
        )
    except OperatorError as exc:
        raise OperatorRefused(str(exc)) from exc
    return operation_body(operation)

"""The HTTP API (`/api/v1/`): the apps' routers, the pools read, and every error's status code.

Handlers never catch errors; the exception handlers below map them, so an error means the
same status wherever it is raised:

- 400 a bad field (schema or domain `InvalidValue`): one entry per field, naming it and the rule
- 401 no valid token (missing, unknown or revoked); 403 a token without the endpoint's scope
- 404 no such object; 413 a body above DATA_UPLOAD_MAX_MEMORY_SIZE; 503 (Retry-After) when
  the database cannot be reached (concurrent writers wait their turn: see `inventory.store`)
- 409 a domain refusal (threshold not met, execution id mismatch ...) or the same id recorded
  with different content (in a batch: nothing of the batch is written)
"""

from __future__ import annotations

import logging
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from django.core.exceptions import ObjectDoesNotExist, RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from ninja import Field, NinjaAPI, Query, Router, Schema
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.parser import Parser

from inventory.api import router as inventory_router
from inventory.auth import ScopeMissing, read_auth
from inventory.domain.checks import CommandRefused
from inventory.domain.values import USDC_POOL, DomainError, InvalidValue
from inventory.jsontext import JsonRefused
from inventory.jsontext import loads as json_loads
from inventory.schemas import error_responses, field_errors
from inventory.selectors import offchain_cash_latest
from inventory.services import BatchInvalid, FillConflict, ReplayConflict
from inventory.store import ConcurrencyError
from operations.api import OperatorRefused, decimal_text
from operations.api import router as operations_router
from service.selectors import PoolOverview, pools_overview

RATIO_PLACES = Decimal("1e-8")

logger = logging.getLogger(__name__)


class BoundedParser(Parser):
    """Request bodies through `inventory.jsontext.loads`: a body nested deeper than a few
    dozen levels, with a key given twice, a lone surrogate or bytes that are not UTF-8 is
    refused (400, naming where) before `json.loads` could recurse into it."""

    def parse_body(self, request: HttpRequest) -> Any:
        return json_loads(request.body)


api = NinjaAPI(
    parser=BoundedParser(),
    title="rebalancer",
    version="1",
    description=(
        "Fills and hedges of the trading side in; pools and operations out. "
        "`Authorization: Bearer <token>` (`python manage.py api_token create NAME --scope "
        "ingest|read|operate`). Amounts are decimal strings, timestamps ISO-8601 with an offset."
    ),
    urls_namespace="api-v1",
)


# --- errors -----------------------------------------------------------------------------------


def _error(request: HttpRequest, status: int, body: dict[str, Any]) -> HttpResponse:
    return api.create_response(request, body, status=status)


@api.exception_handler(ValidationError)
def _invalid_request(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    return _error(request, 400, {"detail": "invalid request", "errors": field_errors(exc.errors)})


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    """Ninja's own errors; a body our parser refused names the field and the rule."""
    cause = exc.__cause__
    if isinstance(cause, JsonRefused):
        errors = [{"field": cause.field, "rule": cause.rule}]
        return _error(request, 400, {"detail": f"invalid body: {cause}", "errors": errors})
    return _error(request, exc.status_code, {"detail": str(exc.message)})


def _field_error(exc: InvalidValue) -> dict[str, Any]:
    return {"field": exc.field, "value": str(exc.value), "rule": exc.rule}


@api.exception_handler(InvalidValue)
def _invalid_value(request: HttpRequest, exc: InvalidValue) -> HttpResponse:
    return _error(request, 400, {"detail": str(exc), "errors": [_field_error(exc)]})


@api.exception_handler(BatchInvalid)
def _invalid_batch(request: HttpRequest, exc: BatchInvalid) -> HttpResponse:
    errors = [
        {**_field_error(error), "field": f"fills[{index}].{error.field}"}
        for index, error in exc.errors
    ]
    return _error(request, 400, {"detail": str(exc), "errors": errors})


@api.exception_handler(FillConflict)
def _fill_conflict(request: HttpRequest, exc: FillConflict) -> HttpResponse:
    """A trade id recorded before (or earlier in the batch) with different content."""
    return _error(
        request,
        409,
        {"detail": str(exc), "reason": "replay_conflict", "errors": [_field_error(exc)]},
    )


@api.exception_handler(AuthenticationError)
def _unauthenticated(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    response = _error(
        request, 401, {"detail": "a valid token is required: Authorization: Bearer <token>"}
    )
    response["WWW-Authenticate"] = "Bearer"
    return response


@api.exception_handler(ScopeMissing)
def _forbidden(request: HttpRequest, exc: ScopeMissing) -> HttpResponse:
    return _error(request, 403, {"detail": str(exc), "scope": exc.scope})


@api.exception_handler(RequestDataTooBig)
def _too_big(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    return _error(request, 413, {"detail": f"request body too large: {exc}"})


@api.exception_handler(ConcurrencyError)
def _busy(request: HttpRequest, exc: ConcurrencyError) -> HttpResponse:
    """Writers kept colliding on one aggregate: nothing was written; the client retries."""
    response = _error(request, 503, {"detail": str(exc), "reason": "busy"})
    response["Retry-After"] = "1"
    return response


@api.exception_handler(OperationalError)
@api.exception_handler(InterfaceError)
def _database_unavailable(request: HttpRequest, exc: Exception) -> HttpResponse:
    """The database cannot be reached (down, restarting, out of connections): nothing was
    written; the client retries later."""
    logger.error("database unavailable: %s", exc)
    response = _error(
        request,
        503,
        {"detail": "the database is unavailable; nothing was recorded", "reason": "unavailable"},
    )
    response["Retry-After"] = "5"
    return response


@api.exception_handler(OperatorRefused)
def _operator_refused(request: HttpRequest, exc: OperatorRefused) -> HttpResponse:
    """An operator action refused in the current state; nothing was changed."""
    return _error(request, 409, {"detail": str(exc), "reason": "refused"})


@api.exception_handler(ObjectDoesNotExist)
def _not_found(request: HttpRequest, exc: ObjectDoesNotExist) -> HttpResponse:
    return _error(request, 404, {"detail": str(exc) or "not found"})


@api.exception_handler(ReplayConflict)
def _replay_conflict(request: HttpRequest, exc: ReplayConflict) -> HttpResponse:
    differences = {
        name: {"recorded": str(old), "given": str(new)}
        for name, (old, new) in exc.differences.items()
    }
    return _error(
        request,
        409,
        {"detail": str(exc), "reason": "replay_conflict", "differences": differences},
    )


@api.exception_handler(DomainError)
def _refused(request: HttpRequest, exc: DomainError) -> HttpResponse:
    """A command the domain refuses in the current state (threshold not met, no pending
    execution, execution id mismatch ...)."""
    body: dict[str, Any] = {"detail": str(exc), "reason": type(exc).__name__}
    if isinstance(exc, CommandRefused):
        body["rule"] = exc.rule
    return _error(request, 409, body)


# --- pools ------------------------------------------------------------------------------------

pools_router = Router(tags=["pools"], auth=read_auth)


class ActiveOperationOut(Schema):
    id: int
    kind: str
    status: str
    amount: str


class AlpacaBalancesOut(Schema):
    """The USDC pool's offchain side as Alpaca last showed it (spec 15.5): USD cash, the part
    of it that may leave now, and USDC held (the `USDCUSD` position)."""

    cash: str
    cash_withdrawable: str | None
    usdc: str | None
    fetched_at: str


class ProposalOut(Schema):
    """What REBALANCING_MODE=monitor would start for this pool (a `RebalanceProposed`)."""

    kind: str
    amount: str
    estimated_cost_usd: str | None
    proposed_at: datetime
    event_id: int


class DeferralOut(Schema):
    """The cost gate held this pool's operation back (a `RebalanceDeferred`)."""

    kind: str
    amount: str
    estimated_cost_usd: str | None
    rule: str = Field(description="below_minimum, daily_cap or cost_above_max_bps")
    detail: str
    deferred_at: datetime
    event_id: int


class PoolOut(Schema):
    key: str
    kind: str
    onchain_available: str
    onchain_inflight: str
    offchain_available: str
    offchain_inflight: str
    onchain_observed: bool
    offchain_observed: bool
    ratio: str | None
    band_lower: str
    band_upper: str
    state: str
    needs_reconciliation: bool
    reconciliation_reason: str
    active_operation: ActiveOperationOut | None
    alpaca_balances: AlpacaBalancesOut | None = None
    proposal: ProposalOut | None = None
    deferral: DeferralOut | None = None


def ratio_text(value: Decimal | None) -> str | None:
    if value is None:
        return None
    return format(value.quantize(RATIO_PLACES, rounding=ROUND_HALF_EVEN), "f")


def alpaca_balances_body() -> dict[str, Any] | None:
    snapshot = offchain_cash_latest()
    if snapshot is None:
        return None
    return {
        "cash": decimal_text(snapshot.cash_balance),
        "cash_withdrawable": (
            None if snapshot.cash_withdrawable is None else decimal_text(snapshot.cash_withdrawable)
        ),
        "usdc": None if snapshot.usdc_balance is None else decimal_text(snapshot.usdc_balance),
        "fetched_at": snapshot.fetched_at.isoformat(),
    }


def pool_body(pool: PoolOverview) -> dict[str, Any]:
    operation = pool.active_operation
    return {
        "key": pool.key,
        "kind": pool.kind,
        "onchain_available": decimal_text(pool.onchain_available),
        "onchain_inflight": decimal_text(pool.onchain_inflight),
        "offchain_available": decimal_text(pool.offchain_available),
        "offchain_inflight": decimal_text(pool.offchain_inflight),
        "onchain_observed": pool.onchain_observed,
        "offchain_observed": pool.offchain_observed,
        "ratio": ratio_text(pool.ratio),
        "band_lower": decimal_text(pool.band_lower),
        "band_upper": decimal_text(pool.band_upper),
        "state": pool.state,
        "needs_reconciliation": pool.needs_reconciliation,
        "reconciliation_reason": pool.reconciliation_reason,
        "active_operation": (
            None
            if operation is None
            else {
                "id": operation.pk,
                "kind": operation.kind,
                "status": operation.status,
                "amount": decimal_text(operation.amount),
            }
        ),
        "alpaca_balances": alpaca_balances_body() if pool.key == USDC_POOL else None,
        "proposal": (
            None
            if pool.proposal is None
            else {
                "kind": pool.proposal.kind,
                "amount": decimal_text(pool.proposal.amount),
                "estimated_cost_usd": (
                    None
                    if pool.proposal.estimated_cost_usd is None
                    else decimal_text(pool.proposal.estimated_cost_usd)
                ),
                "proposed_at": pool.proposal.proposed_at,
                "event_id": pool.proposal.event_id,
            }
        ),
        "deferral": (
            None
            if pool.deferral is None
            else {
                "kind": pool.deferral.kind,
                "amount": decimal_text(pool.deferral.amount),
                "estimated_cost_usd": decimal_text(pool.deferral.estimated_cost_usd),
                "rule": pool.deferral.rule,
                "detail": pool.deferral.detail,
                "deferred_at": pool.deferral.deferred_at,
                "event_id": pool.deferral.event_id,
            }
        ),
    }


class CostGroupOut(Schema):
    day: str | None = None
    kind: str | None = None
    operations: int
    moved_usd: str = Field(description="USDC at par; equities at the last onchain fill price")
    unvalued_moves: int = Field(description="Equity moves without a fill price to value them")
    transactions: int
    native_fee_wei: dict[str, str] = Field(description="By chain, exact from the receipts")
    gas_usd: str = Field(description="At the ETH/USD price recorded with each transaction")
    gas_unvalued: int = Field(description="Transactions recorded without an ETH/USD price")
    circle_fee_usdc: str
    alpaca_fee_usdc: str
    venue_costs_usd: str
    total_usd: str
    cost_per_10k_usd: str | None = Field(description="total_usd per 10,000 USD moved")
    mean_in_flight_s: float | None


class CostsOut(Schema):
    since: str | None
    until: str | None
    groups: list[CostGroupOut]
    total: CostGroupOut


class CostFilters(Schema):
    since: str | None = Field(None, alias="from", description="Date (00:00 UTC) or datetime")
    until: str | None = Field(None, alias="to", description="Exclusive; date or datetime")


@pools_router.get("/costs", response={200: CostsOut, **error_responses(400, 401, 403)})
def costs(request: HttpRequest, filters: Query[CostFilters]) -> Any:
    """The realized cost of the operations created in [from, to), per UTC day and kind, with
    the cost per 10,000 USD moved (the same as `manage.py costs --json`)."""
    from operations.costs import costs_report, jsonable
    from service.management.commands.costs import parse_moment

    moments = {}
    for name, text in (("from", filters.since), ("to", filters.until)):
        try:
            moments[name] = parse_moment(name, text)
        except ValueError as exc:
            raise InvalidValue(name, text, str(exc).split(": ", 1)[-1]) from exc
    if moments["from"] and moments["to"] and moments["to"] <= moments["from"]:
        raise InvalidValue("to", filters.until, "must be after from")
    report = jsonable(costs_report(since=moments["from"], until=moments["to"]))
    return {
        "since": report["from"],
        "until": report["to"],
        "groups": report["groups"],
        "total": report["total"],
    }


@pools_router.get("/pools", response={200: list[PoolOut], **error_responses(401, 403)})
def pools(request: HttpRequest) -> Any:
    """Every inventory pool (each equity symbol and USDC): balances per venue, the onchain
    ratio against its band, its state, the active operation and, for an out-of-band pool in
    REBALANCING_MODE=monitor, the operation that would start (`proposal`)."""
    return [pool_body(pool) for pool in pools_overview()]


api.add_router("/", inventory_router)
api.add_router("/", operations_router)
api.add_router("/", pools_router)

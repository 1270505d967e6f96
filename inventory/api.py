"""HTTP API of the trading side's records: onchain fills and offchain hedges (spec 4.1).

Mounted under /api/v1/ by `rebalancer.api`, which maps every error to its status code in one
place. A handler parses its schema (`inventory.schemas`), calls one service and answers 201
when something was recorded or 200 with `"duplicate": true` for an identical replay.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Router, Schema, Status

from inventory.auth import ingest_auth
from inventory.schemas import (
    ExecutionIdPath,
    HedgeFailIn,
    HedgeFillIn,
    HedgePlaceIn,
    OnchainFillBatchIn,
    OnchainFillIn,
    error_responses,
)
from inventory.services import (
    CheckedOnchainFill,
    FillStatus,
    fill_record,
    fill_record_offchain,
    fills_record_batch,
    hedge_fail,
    hedge_place,
)
from inventory.store import StoredEvent

router = Router(tags=["fills and hedges"], auth=ingest_auth)


class RecordedOut(Schema):
    duplicate: bool
    event_ids: list[int]


class BatchItemOut(Schema):
    index: int
    duplicate: bool
    event_ids: list[int]


class BatchOut(Schema):
    recorded: int
    duplicates: int
    results: list[BatchItemOut]


WRITE_ERRORS = error_responses(400, 401, 403, 409, 413)
RECORD_RESPONSES = {200: RecordedOut, 201: RecordedOut, **WRITE_ERRORS}


def _recorded(stored: list[StoredEvent]) -> Status[dict[str, Any]]:
    body = {"duplicate": not stored, "event_ids": [event.id for event in stored]}
    return Status(201 if stored else 200, body)


@router.post("/fills/onchain", response=RECORD_RESPONSES)
def fill_onchain(request: HttpRequest, payload: OnchainFillIn) -> Any:
    """Record a fill of our order on the onchain order book (idempotent on tx_hash:log_index)."""
    # The schema validated every field: the service does not validate them again.
    return _recorded(fill_record(CheckedOnchainFill(**payload.service_kwargs())))


@router.post("/fills/onchain/batch", response={200: BatchOut, 201: BatchOut, **WRITE_ERRORS})
def fill_onchain_batch(request: HttpRequest, payload: OnchainFillBatchIn) -> Any:
    """Record many onchain fills in one transaction: all of them, or (when any fill conflicts
    with a recorded one) none."""
    results = fills_record_batch(
        fills=[CheckedOnchainFill(**fill.service_kwargs()) for fill in payload.fills]
    )
    recorded = sum(1 for result in results if result.status is FillStatus.RECORDED)
    body = {
        "recorded": recorded,
        "duplicates": len(results) - recorded,
        "results": [
            {
                "index": result.index,
                "duplicate": result.status is FillStatus.DUPLICATE,
                "event_ids": [event.id for event in result.events],
            }
            for result in results
        ],
    }
    return Status(201 if recorded else 200, body)


@router.post("/hedges", response=RECORD_RESPONSES)
def hedge_placed(request: HttpRequest, payload: HedgePlaceIn) -> Any:
    """Record that an offchain hedge order was placed (refused below the threshold or while
    another execution is pending)."""
    return _recorded(hedge_place(**payload.service_kwargs()))


@router.post("/hedges/{execution_id}/fill", response=RECORD_RESPONSES)
def hedge_filled(request: HttpRequest, execution_id: ExecutionIdPath, payload: HedgeFillIn) -> Any:
    """Record the brokerage's fill of the pending hedge `execution_id`, which ends it: one fill
    per execution, in the placement's direction, with the order's total filled shares (at most
    the placed shares; fewer is a partial fill, the rest stays in the net position for the
    next hedge). An execution that filled nothing ends with `/fail`."""
    return _recorded(fill_record_offchain(**payload.service_kwargs(execution_id)))


@router.post("/hedges/{execution_id}/fail", response=RECORD_RESPONSES)
def hedge_failed(request: HttpRequest, execution_id: ExecutionIdPath, payload: HedgeFailIn) -> Any:
    """Record that the pending hedge `execution_id` failed at the brokerage."""
    return _recorded(hedge_fail(**payload.service_kwargs(execution_id)))

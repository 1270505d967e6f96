"""JSON Lines records of the trading side, for the `ingest` command.

One record per line with a `type` and the HTTP API's fields (`inventory.schemas`), so a line
is accepted or refused for the same reason as the same record posted to the API:

- `onchain_fill`: the fields of POST /api/v1/fills/onchain
- `hedge_placed`: the fields of POST /api/v1/hedges
- `hedge_filled`: `execution_id` and the fields of POST /api/v1/hedges/{execution_id}/fill
- `hedge_failed`: `execution_id` and the fields of POST /api/v1/hedges/{execution_id}/fail
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError

from inventory.domain.checks import CommandRefused
from inventory.domain.values import DomainError, InvalidValue
from inventory.jsontext import JsonRefused, loads
from inventory.schemas import (
    HedgeFailedRecord,
    HedgeFilledRecord,
    HedgePlacedRecord,
    OnchainFillIn,
    RecordSchema,
    field_errors,
)
from inventory.services import (
    CheckedOnchainFill,
    OnchainFill,
    fill_record_offchain,
    hedge_fail,
    hedge_place,
)
from inventory.store import StoredEvent

IngestRecord = OnchainFill | tuple[Callable[..., list[StoredEvent]], Mapping[str, Any]]

RECORD_TYPES: dict[str, type[RecordSchema]] = {
    "onchain_fill": OnchainFillIn,
    "hedge_placed": HedgePlacedRecord,
    "hedge_filled": HedgeFilledRecord,
    "hedge_failed": HedgeFailedRecord,
}


class LineRejected(Exception):
    def __init__(self, reasons: list[str]) -> None:
        self.reasons = reasons
        super().__init__("; ".join(reasons))


def _record(parsed: RecordSchema) -> IngestRecord:
    if isinstance(parsed, OnchainFillIn):
        # The schema validated every field: the service does not validate them again.
        return CheckedOnchainFill(**parsed.service_kwargs())
    if isinstance(parsed, HedgePlacedRecord):
        return hedge_place, parsed.service_kwargs()
    if isinstance(parsed, HedgeFilledRecord):
        return fill_record_offchain, parsed.service_kwargs(parsed.execution_id)
    if isinstance(parsed, HedgeFailedRecord):
        return hedge_fail, parsed.service_kwargs(parsed.execution_id)
    raise TypeError(f"no service for {type(parsed).__name__}")  # pragma: no cover


def parse_line(text: str | bytes) -> IngestRecord:
    """One JSON Lines record (text, or bytes that must be UTF-8) -> an
    `inventory.services.records_ingest` record, or `LineRejected` with one reason per bad
    field. JSON is parsed within `inventory.jsontext`'s bounds (nesting depth, duplicate keys,
    lone surrogates)."""
    try:
        data = loads(text)
    except JsonRefused as error:
        reason = error.rule if error.field == "body" else f"{error.field}: {error.rule}"
        raise LineRejected([reason]) from None
    if not isinstance(data, dict):
        raise LineRejected(["not a JSON object"])
    kind = data.pop("type", None)
    schema = RECORD_TYPES.get(kind) if isinstance(kind, str) else None
    if schema is None:
        raise LineRejected([f"type: {kind!r} is not one of {', '.join(RECORD_TYPES)}"])
    try:
        parsed = schema.model_validate(data)
    except ValidationError as error:
        reasons = [f"{e['field']}: {e['rule']}" for e in field_errors(error.errors())]
        raise LineRejected(reasons) from None
    return _record(parsed)


def refusal_reason(error: DomainError) -> str:
    """Why the domain refused a record, in one line."""
    if isinstance(error, InvalidValue):
        return f"{error.field}: {error.rule}"
    if isinstance(error, CommandRefused):
        return f"{type(error).__name__}: {error.rule}"
    return str(error)

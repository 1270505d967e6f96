"""Typed request schemas of the trading side's records (fills and hedges).

The HTTP API (`inventory.api`) and the `ingest` command parse input with the same schemas, so
a record is accepted or refused for the same reason whichever way it arrives. Each field is
checked by the domain's own validator (`inventory.domain`), whose rule becomes the error;
amounts travel as decimal strings (a JSON number would pass through a float), timestamps as
ISO-8601 with an offset.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

from ninja import Path, Schema
from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    StrictInt,
    ValidationInfo,
    model_validator,
)
from pydantic_core import PydanticCustomError

from inventory.domain.checks import validate_aware, validate_text, validate_tx_hash
from inventory.domain.values import Direction, InvalidValue, validate_quantity, validate_symbol

# Fills per batch request (and per transaction of the ingest command).
MAX_BATCH_FILLS = 1000

# Bounds of what the chain and the brokerage produce: counts and ids fit a signed 64-bit
# integer (a PostgreSQL bigint); timestamps are after the first chains (2015) and at most a day
# ahead of our clock (a skewed clock, never a typo'd year).
INT64_MAX = 2**63 - 1
EARLIEST_TIMESTAMP = datetime(2015, 1, 1, tzinfo=UTC)
FUTURE_TOLERANCE = timedelta(days=1)
TEXT_MAX_LENGTH = 500

_DECIMAL_TEXT = re.compile(r"-?[0-9]+(\.[0-9]+)?")  # re.fullmatch: no trailing newline
DIRECTIONS = {"buy": Direction.BUY, "sell": Direction.SELL}


def field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    """A pydantic error location as a field name: ("fills", 3, "quantity") -> "fills[3].quantity".

    The HTTP API's leading parts (the source "body"/"query"/"path" and the parameter name)
    are dropped.
    """
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:]
        if len(parts) > 1 and parts[0] in ("payload", "filters"):
            parts = parts[1:]
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "body"


def field_errors(errors: list[Any]) -> list[dict[str, Any]]:
    """Pydantic errors as one {field, rule[, value]} per bad field (the API's 400 body)."""
    found = []
    for error in errors:
        entry: dict[str, Any] = {"field": field_path(error.get("loc", ())), "rule": error["msg"]}
        context = error.get("ctx") or {}
        if "value" in context:
            entry["value"] = context["value"]
        found.append(entry)
    return found


def _domain_rule(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Run a domain validator; its `InvalidValue` becomes a field error carrying the rule."""

    def run(value: Any) -> Any:
        try:
            return check(value)
        except InvalidValue as error:
            raise PydanticCustomError(
                "invalid_value", "{rule}", {"rule": error.rule, "value": str(error.value)}
            ) from None

    return run


def parse_amount(field: str, text: str) -> Decimal:
    """A positive amount written as a plain decimal string ("12.5", never 1.25e1)."""
    if not _DECIMAL_TEXT.fullmatch(text):
        raise InvalidValue(field, text, 'must be a decimal string such as "12.5"')
    try:
        value = Decimal(text)
    except InvalidOperation:  # pragma: no cover - the pattern admits only valid decimals
        raise InvalidValue(field, text, "must be a decimal string") from None
    return validate_quantity(field, value)


def parse_timestamp(field: str, text: str) -> datetime:
    """ISO-8601 with a UTC offset ("2026-01-02T15:04:05Z" or "...+00:00")."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidValue(field, text, "must be an ISO-8601 timestamp") from None
    if value.tzinfo is None:
        raise InvalidValue(field, text, "must carry a UTC offset (Z or +HH:MM)")
    value = validate_aware(field, value)
    if value < EARLIEST_TIMESTAMP:
        raise InvalidValue(field, text, f"must not be before {EARLIEST_TIMESTAMP.date()}")
    latest = datetime.now(UTC) + FUTURE_TOLERANCE
    if value > latest:
        raise InvalidValue(field, text, f"must not be after {latest.isoformat(timespec='seconds')}")
    return value


def validate_count(field: str, value: int) -> int:
    """A non-negative integer that fits a signed 64-bit integer (a PostgreSQL bigint)."""
    if value < 0:
        raise InvalidValue(field, value, "must be a non-negative integer")
    if value > INT64_MAX:
        raise InvalidValue(field, value, f"must be at most {INT64_MAX}")
    return value


Symbol = Annotated[
    str,
    AfterValidator(_domain_rule(validate_symbol)),
    Field(description="Base equity ticker, e.g. AAPL", examples=["AAPL"]),
]
TxHashText = Annotated[
    str,
    AfterValidator(_domain_rule(lambda v: validate_tx_hash("tx_hash", v).lower())),
    Field(description="0x-prefixed 32-byte transaction hash"),
]


def _amount(field: str, description: str) -> Any:
    return Annotated[
        str,
        AfterValidator(_domain_rule(lambda v: parse_amount(field, v))),
        Field(description=description, examples=["12.5"]),
    ]


def _timestamp(field: str) -> Any:
    return Annotated[
        str,
        AfterValidator(_domain_rule(lambda v: parse_timestamp(field, v))),
        Field(
            description="ISO-8601 timestamp with a UTC offset",
            examples=["2026-01-02T15:04:05+00:00"],
            json_schema_extra={"format": "date-time"},
        ),
    ]


def _count(field: str, description: str) -> Any:
    return Annotated[
        StrictInt,
        AfterValidator(_domain_rule(lambda v: validate_count(field, v))),
        Field(description=description),
    ]


def _text(field: str, description: str) -> Any:
    return Annotated[
        str,
        AfterValidator(_domain_rule(lambda v: validate_text(field, v))),
        Field(description=description, max_length=TEXT_MAX_LENGTH),
    ]


# The hedge's execution id in a URL (/hedges/{execution_id}/fill).
ExecutionIdPath = Annotated[
    int, Path(ge=0, le=INT64_MAX, description="The trading side's id of the hedge")
]

DirectionText = Annotated[
    Literal["buy", "sell"], Field(description="From our point of view: buy or sell")
]


class FieldErrorOut(Schema):
    field: str = Field(description='The bad field, e.g. "quantity" or "fills[3].quantity"')
    rule: str = Field(description="The rule it breaks, in the domain's words")
    value: str | None = None


class ErrorOut(Schema):
    """Every error answer: what went wrong, and (per status) the bad fields or the reason."""

    detail: str
    reason: str | None = Field(
        None, description="409: the refusal (replay_conflict, ThresholdNotMet, ...)"
    )
    rule: str | None = None
    errors: list[FieldErrorOut] | None = Field(None, description="400: one entry per bad field")
    scope: str | None = Field(None, description="403: the scope the token lacks")


def error_responses(*codes: int) -> dict[int, type[Schema]]:
    return dict.fromkeys(codes, ErrorOut)


class RecordSchema(Schema):
    """Unknown fields are errors (a misspelt field must not be silently dropped)."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="wrap")
    @classmethod
    def _run_root_validator(
        cls, values: Any, handler: ModelWrapValidatorHandler[Any], info: ValidationInfo
    ) -> Any:
        """Validate once. ninja's `Schema` validates a model with `extra="forbid"` twice (the
        input itself, then wrapped for attribute access to ORM objects), and a batch's fills
        once per enclosing pass: every validator of a batch's fill ran four times. A record
        is parsed from JSON or a dict, never from an ORM object, so the first pass is all
        there is to do; unknown fields are still refused by `extra="forbid"`."""
        return handler(values)


class OnchainFillIn(RecordSchema):
    """A fill of our order on the onchain order book."""

    tx_hash: TxHashText
    log_index: _count("log_index", "Index of the fill's log in the transaction")  # type: ignore[valid-type]
    block_number: _count("block_number", "Block that holds the transaction")  # type: ignore[valid-type]
    symbol: Symbol
    direction: DirectionText
    quantity: _amount("quantity", "Shares, decimal string")  # type: ignore[valid-type]
    price_usdc: _amount("price_usdc", "USDC per share, decimal string")  # type: ignore[valid-type]
    block_timestamp: _timestamp("block_timestamp")  # type: ignore[valid-type]

    def service_kwargs(self) -> dict[str, Any]:
        """Arguments of `inventory.services.fill_record_onchain`."""
        # block_number: a leg at or below its pool's onchain snapshot block is already in
        # that snapshot and is not applied again (spec 15.2).
        return {
            "symbol": self.symbol,
            "tx_hash": self.tx_hash,
            "log_index": self.log_index,
            "amount": self.quantity,
            "direction": DIRECTIONS[self.direction],
            "price_usdc": self.price_usdc,
            "block_timestamp": self.block_timestamp,
            "block_number": self.block_number,
        }


class OnchainFillBatchIn(RecordSchema):
    fills: list[OnchainFillIn] = Field(min_length=1, max_length=MAX_BATCH_FILLS)


class HedgePlaceIn(RecordSchema):
    """The trading side placed an offchain hedge order (spec 4.1, PlaceOffChainOrder)."""

    symbol: Symbol
    execution_id: _count("execution_id", "The trading side's id of this hedge")  # type: ignore[valid-type]
    direction: DirectionText
    shares: _amount("shares", "Shares ordered, decimal string")  # type: ignore[valid-type]

    def service_kwargs(self) -> dict[str, Any]:
        """Arguments of `inventory.services.hedge_place`."""
        return {
            "symbol": self.symbol,
            "execution_id": self.execution_id,
            "direction": DIRECTIONS[self.direction],
            "shares": self.shares,
        }


class HedgeFillIn(RecordSchema):
    """The brokerage filled the pending hedge (spec 4.1, CompleteOffChainOrder)."""

    symbol: Symbol
    shares_filled: _amount("shares_filled", "Shares filled, decimal string")  # type: ignore[valid-type]
    direction: DirectionText
    broker_order_id: _text("broker_order_id", "The brokerage's order id")  # type: ignore[valid-type]
    price_cents: _count("price_cents", "Fill price in cents per share")  # type: ignore[valid-type]
    broker_timestamp: _timestamp("broker_timestamp")  # type: ignore[valid-type]

    def service_kwargs(self, execution_id: int) -> dict[str, Any]:
        """Arguments of `inventory.services.fill_record_offchain`."""
        return {
            "symbol": self.symbol,
            "execution_id": execution_id,
            "shares_filled": self.shares_filled,
            "direction": DIRECTIONS[self.direction],
            "broker_order_id": self.broker_order_id,
            "price_cents": self.price_cents,
            "broker_timestamp": self.broker_timestamp,
        }


class HedgeFailIn(RecordSchema):
    """The pending hedge failed at the brokerage (spec 4.1, FailOffChainOrder)."""

    symbol: Symbol
    error: _text("error", "Why the order failed")  # type: ignore[valid-type]

    def service_kwargs(self, execution_id: int) -> dict[str, Any]:
        """Arguments of `inventory.services.hedge_fail`."""
        return {"symbol": self.symbol, "execution_id": execution_id, "error": self.error}


class HedgePlacedRecord(HedgePlaceIn):
    """A `hedge_placed` line of the ingest command (the placement's fields)."""


class HedgeFilledRecord(HedgeFillIn):
    """A `hedge_filled` line of the ingest command: the fill plus its execution id."""

    execution_id: _count("execution_id", "The hedge's execution id")  # type: ignore[valid-type]


class HedgeFailedRecord(HedgeFailIn):
    """A `hedge_failed` line of the ingest command: the failure plus its execution id."""

    execution_id: _count("execution_id", "The hedge's execution id")  # type: ignore[valid-type]

"""Alpaca Broker API client: tokenization, trading account, positions, orders, market clock and
crypto wallet transfers of one account (`ALPACA_ACCOUNT_ID`).

Everything goes to one Broker API base URL (sandbox or live) with the account id in the path
(domain spec 15.4): tokenization `/v1/accounts/{id}/tokenization/...`, wallets
`/v1/accounts/{id}/wallets/...`, trading `/v1/trading/accounts/{id}/...`, clock `/v1/clock`.
Every request carries HTTP Basic auth (key, secret) and the two `APCA-API-*` headers.

Every response is parsed at this boundary into frozen dataclasses with `Decimal` amounts and
aware datetimes; nothing inward sees a raw dict. A list read for a lookup skips (with a WARNING
naming it) an entry it does not understand instead of failing the lookup. Reads are retried on
5xx and timeouts; a POST is sent once and, when its outcome cannot be known, raises
`AlpacaOutcomeUnknown` so the caller looks the request up (mint by `issuer_request_id`,
withdrawals by listing, orders by `client_order_id`) before acting again. The API secret is
kept only inside the request headers and never logged or shown.
"""

from __future__ import annotations

import base64
import enum
import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import requests

from venues import http
from venues.polling import DEFAULT_INTERVAL_S, DEFAULT_TIMEOUT_S, poll_until

logger = logging.getLogger(__name__)

T = TypeVar("T")

SANDBOX_URL = "https://broker-api.sandbox.alpaca.markets"
LIVE_URL = "https://broker-api.alpaca.markets"

DEFAULT_ISSUER = "st0x"
DEFAULT_TOKEN_NETWORK = "base"
USDC = "USDC"
ETHEREUM = "ethereum"
IDEMPOTENCY_HEADER = "Idempotency-Key"
# How far Alpaca's clock may be behind ours: a lookup bounded by the time we recorded a
# request looks for entries created since that time less this.
CLOCK_SKEW = timedelta(hours=1)
# Alpaca's crypto position for USDC (a crypto asset, never an equity).
USDC_POSITION_SYMBOL = "USDCUSD"

# Chain spellings seen in Alpaca's answers ("ETH" on transfers, "Ethereum" on some whitelist
# endpoints, lower case elsewhere), mapped to one canonical name.
CHAIN_SPELLINGS: dict[str, str] = {
    "eth": "ethereum",
    "ethereum": "ethereum",
    "ethereum mainnet": "ethereum",
    "ethereum-mainnet": "ethereum",
    "erc20": "ethereum",
    "base": "base",
    "base mainnet": "base",
    "base-mainnet": "base",
    "sol": "solana",
    "solana": "solana",
    "btc": "bitcoin",
    "bitcoin": "bitcoin",
    "arb": "arbitrum",
    "arbitrum": "arbitrum",
}


def canonical_chain(spelling: str) -> str:
    """One name per chain whatever Alpaca's spelling ("ETH", "Ethereum" -> "ethereum");
    an unknown spelling is returned lower-cased and stripped."""
    lowered = spelling.strip().lower()
    return CHAIN_SPELLINGS.get(lowered, lowered)


def same_chain(a: str, b: str) -> bool:
    return canonical_chain(a) == canonical_chain(b)


class TradingMode(enum.StrEnum):
    """`paper` talks to the Broker API sandbox, `live` to production."""

    PAPER = "paper"
    LIVE = "live"


BASE_URLS = {TradingMode.PAPER: SANDBOX_URL, TradingMode.LIVE: LIVE_URL}


class TokenizationType(enum.StrEnum):
    MINT = "mint"
    REDEEM = "redeem"


class TokenizationStatus(enum.StrEnum):
    PENDING = "pending"
    COMPLETED = "completed"
    REJECTED = "rejected"
    FAILED = "failed"

    @property
    def is_terminal(self) -> bool:
        return self is not TokenizationStatus.PENDING

    @property
    def is_refusal(self) -> bool:
        """Alpaca ended the request without doing it (`rejected` or `failed`)."""
        return self in (TokenizationStatus.REJECTED, TokenizationStatus.FAILED)


class TransferStatus(enum.StrEnum):
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    COMPLETE = "COMPLETE"
    FAILED = "FAILED"

    @property
    def is_terminal(self) -> bool:
        return self in (TransferStatus.COMPLETE, TransferStatus.FAILED)


class TransferDirection(enum.StrEnum):
    INCOMING = "INCOMING"
    OUTGOING = "OUTGOING"


class WhitelistStatus(enum.StrEnum):
    PENDING = "PENDING"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"


class OrderSide(enum.StrEnum):
    BUY = "buy"
    SELL = "sell"


# Order statuses after which nothing more fills.
ORDER_TERMINAL_STATUSES = frozenset(
    {"filled", "canceled", "expired", "rejected", "replaced", "done_for_day", "stopped"}
)


# ---------------------------------------------------------------------------
# Errors: one root, structured attributes, messages that name field, value and rule.


class AlpacaError(Exception):
    """Root of every Alpaca client error."""


class AlpacaApiError(AlpacaError):
    """Alpaca answered with an error status (the request was definitely not accepted)."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(f"Alpaca API error: HTTP {status}: {message}")


class InsufficientPosition(AlpacaApiError):
    def __init__(self, symbol: str, status: int, message: str) -> None:
        self.symbol = symbol
        super().__init__(status, f"insufficient position in {symbol!r}: {message}")


class UnsupportedAccount(AlpacaApiError):
    pass


class InvalidParameters(AlpacaApiError):
    def __init__(self, status: int, details: str) -> None:
        super().__init__(status, details)
        self.details = details


class AlpacaNotFound(AlpacaApiError):
    """HTTP 404 on a route that is not a by-id read (a wrong account id, say)."""


class AlpacaRateLimited(AlpacaApiError):
    """HTTP 429; `retry_after_s` is Alpaca's `Retry-After` when it sent one."""

    def __init__(self, status: int, message: str, retry_after_s: float | None) -> None:
        self.retry_after_s = retry_after_s
        shown = "" if retry_after_s is None else f" (retry after {retry_after_s:g}s)"
        super().__init__(status, f"rate limited{shown}: {message}")


class RequestNotFound(AlpacaError):
    def __init__(self, key: str, value: str) -> None:
        self.key = key
        self.value = value
        super().__init__(f"tokenization request with {key}={value!r} not found")


class TransferNotFound(AlpacaError):
    def __init__(self, transfer_id: str) -> None:
        self.transfer_id = transfer_id
        super().__init__(f"wallet transfer id={transfer_id!r} not found")


class OrderNotFound(AlpacaError):
    def __init__(self, order_id: str) -> None:
        self.order_id = order_id
        super().__init__(f"order id={order_id!r} not found")


class AlpacaNetworkError(AlpacaError):
    """No HTTP response (after the retries, for a read). A write was certainly not sent."""

    def __init__(self, method: str, url: str, reason: str) -> None:
        self.method = method
        self.url = url
        self.reason = reason
        super().__init__(f"Alpaca network error: {method} {url}: {reason}")


class AlpacaOutcomeUnknown(AlpacaError):
    """A write may have taken effect: look it up by its id before acting again."""

    def __init__(self, method: str, url: str, reason: str, status: int | None) -> None:
        self.method = method
        self.url = url
        self.reason = reason
        self.status = status
        super().__init__(f"Alpaca {method} {url}: outcome unknown ({reason})")


class AlpacaMalformedResponse(AlpacaError):
    def __init__(self, url: str, detail: str) -> None:
        self.url = url
        self.detail = detail
        super().__init__(f"Alpaca {url}: malformed response: {detail}")


class InvalidAmount(AlpacaError):
    def __init__(self, field: str, value: Decimal) -> None:
        self.field = field
        self.value = value
        super().__init__(f"{field}={value}: must be a finite amount > 0")


class AddressNotWhitelisted(AlpacaError):
    """No APPROVED whitelist entry; `status` is the entry's status, None when absent."""

    def __init__(
        self, address: str, asset: str, network: str, status: WhitelistStatus | None
    ) -> None:
        self.address = address
        self.asset = asset
        self.network = network
        self.status = status
        shown = "absent" if status is None else status.value
        super().__init__(
            f"address {address} is not whitelisted for {asset} on {network} "
            f"(entry {shown}; APPROVED required)"
        )


class InvalidStatusTransition(AlpacaError):
    def __init__(self, transfer_id: str, previous: TransferStatus, current: TransferStatus) -> None:
        self.transfer_id = transfer_id
        self.previous = previous
        self.current = current
        super().__init__(
            f"transfer {transfer_id}: status went from {previous.value} to {current.value}, "
            "which is a regression"
        )


class AlpacaPollTimeout(AlpacaError):
    def __init__(self, what: str, elapsed_s: float) -> None:
        self.what = what
        self.elapsed_s = elapsed_s
        super().__init__(f"{what}: not done after {elapsed_s:.3f}s")


class DepositTimeout(AlpacaPollTimeout):
    def __init__(self, tx_hash: str, elapsed_s: float) -> None:
        self.tx_hash = tx_hash
        super().__init__(f"deposit of tx {tx_hash} not complete", elapsed_s)


# ---------------------------------------------------------------------------
# Typed responses.


@dataclass(frozen=True)
class TokenizationRequest:
    """`type` and `wallet_address` may be absent from an entry (None): such an entry is still
    matched by our `issuer_request_id` or its transaction, never refused for the gap."""

    tokenization_request_id: str
    type: TokenizationType | None
    status: TokenizationStatus
    underlying_symbol: str
    token_symbol: str | None
    qty: Decimal
    issuer: str
    network: str
    wallet_address: str | None
    issuer_request_id: str | None
    tx_hash: str | None
    fees: Decimal | None
    created_at: datetime
    updated_at: datetime | None

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> TokenizationRequest:
        return cls(
            tokenization_request_id=http.field_str(obj, "tokenization_request_id"),
            type=(
                None
                if obj.get("type") is None
                else _enum(TokenizationType, obj, "type", lower=True)
            ),
            status=_enum(TokenizationStatus, obj, "status", lower=True),
            underlying_symbol=http.field_str(obj, "underlying_symbol"),
            token_symbol=http.field_opt_str(obj, "token_symbol"),
            qty=http.field_decimal(obj, "qty"),
            issuer=http.field_str(obj, "issuer"),
            network=canonical_chain(http.field_str(obj, "network")),
            wallet_address=http.field_opt_str(obj, "wallet_address"),
            issuer_request_id=http.field_opt_str(obj, "issuer_request_id"),
            tx_hash=http.field_opt_str(obj, "tx_hash"),
            fees=http.field_opt_decimal(obj, "fees"),
            created_at=http.field_datetime(obj, "created_at"),
            updated_at=http.field_opt_datetime(obj, "updated_at"),
        )


@dataclass(frozen=True)
class Transfer:
    """A crypto wallet transfer; `chain` is canonical ("ETH" -> "ethereum")."""

    id: str
    direction: TransferDirection
    amount: Decimal
    usd_value: Decimal | None
    chain: str
    asset: str
    from_address: str | None
    to_address: str | None
    status: TransferStatus
    tx_hash: str | None
    created_at: datetime
    network_fee: Decimal | None
    fees: Decimal | None

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Transfer:
        return cls(
            id=http.field_str(obj, "id"),
            direction=_enum(TransferDirection, obj, "direction", upper=True),
            amount=http.field_decimal(obj, "amount"),
            usd_value=http.field_opt_decimal(obj, "usd_value"),
            chain=canonical_chain(http.field_str(obj, "chain")),
            asset=http.field_str(obj, "asset"),
            from_address=http.field_opt_str(obj, "from_address"),
            to_address=http.field_opt_str(obj, "to_address"),
            status=_enum(TransferStatus, obj, "status", upper=True),
            tx_hash=http.field_opt_str(obj, "tx_hash"),
            created_at=http.field_datetime(obj, "created_at"),
            network_fee=http.field_opt_decimal(obj, "network_fee"),
            fees=http.field_opt_decimal(obj, "fees"),
        )


@dataclass(frozen=True)
class WhitelistEntry:
    """A withdrawal whitelist entry; `chain` is canonical ("ETH", "Ethereum" -> "ethereum")."""

    id: str
    address: str
    asset: str
    chain: str
    status: WhitelistStatus
    created_at: datetime

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> WhitelistEntry:
        return cls(
            id=http.field_str(obj, "id"),
            address=http.field_str(obj, "address"),
            asset=http.field_str(obj, "asset"),
            chain=canonical_chain(http.field_str(obj, "chain")),
            status=_enum(WhitelistStatus, obj, "status", upper=True),
            created_at=http.field_datetime(obj, "created_at"),
        )


@dataclass(frozen=True)
class Position:
    """One position; `qty_available` is what can be used now (not held by open orders)."""

    symbol: str
    asset_class: str
    qty: Decimal
    qty_available: Decimal

    @property
    def is_equity(self) -> bool:
        """A US equity; the USDC crypto position (`USDCUSD`) and other crypto are not."""
        return self.asset_class == "us_equity" and self.symbol != USDC_POSITION_SYMBOL

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Position:
        return cls(
            symbol=http.field_str(obj, "symbol"),
            asset_class=http.field_str(obj, "asset_class").lower(),
            qty=http.field_decimal(obj, "qty"),
            qty_available=http.field_decimal(obj, "qty_available"),
        )


@dataclass(frozen=True)
class Account:
    """USD cash (`cash`) and what of it may leave the account now (`cash_withdrawable`:
    unsettled T+1 proceeds excluded; None when the body does not carry it). USDC held at
    Alpaca is not cash: it is the `USDCUSD` crypto position (spec 15.5)."""

    id: str
    cash: Decimal
    cash_withdrawable: Decimal | None = None

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Account:
        return cls(
            id=http.field_str(obj, "id"),
            cash=http.field_decimal(obj, "cash"),
            cash_withdrawable=http.field_opt_decimal(obj, "cash_withdrawable"),
        )


@dataclass(frozen=True)
class MarketClock:
    timestamp: datetime
    is_open: bool
    next_open: datetime
    next_close: datetime

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> MarketClock:
        is_open = obj.get("is_open")
        if not isinstance(is_open, bool):
            raise ValueError(f"field 'is_open'={is_open!r}: must be true or false")
        return cls(
            timestamp=http.field_datetime(obj, "timestamp"),
            is_open=is_open,
            next_open=http.field_datetime(obj, "next_open"),
            next_close=http.field_datetime(obj, "next_close"),
        )


@dataclass(frozen=True)
class Order:
    """An order; `status` is Alpaca's string (`new`, `accepted`, `partially_filled`,
    `filled`, `canceled`, ...), `filled_avg_price` None until something filled."""

    id: str
    client_order_id: str
    symbol: str
    side: OrderSide
    type: str
    time_in_force: str
    qty: Decimal | None  # None for an order placed by `notional` until it fills
    filled_qty: Decimal
    filled_avg_price: Decimal | None
    status: str
    created_at: datetime
    filled_at: datetime | None
    notional: Decimal | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status in ORDER_TERMINAL_STATUSES

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Order:
        return cls(
            id=http.field_str(obj, "id"),
            client_order_id=http.field_str(obj, "client_order_id"),
            symbol=http.field_str(obj, "symbol"),
            side=_enum(OrderSide, obj, "side", lower=True),
            type=http.field_str(obj, "type").lower(),
            time_in_force=http.field_str(obj, "time_in_force").lower(),
            qty=_order_qty(obj),
            filled_qty=http.field_decimal(obj, "filled_qty"),
            filled_avg_price=http.field_opt_decimal(obj, "filled_avg_price"),
            status=http.field_str(obj, "status").lower(),
            created_at=http.field_datetime(obj, "created_at"),
            filled_at=http.field_opt_datetime(obj, "filled_at"),
            notional=http.field_opt_decimal(obj, "notional"),
        )


def _order_qty(obj: Mapping[str, Any]) -> Decimal | None:
    """`qty`; only an order placed by `notional` may leave it null."""
    if obj.get("qty") is None and obj.get("notional") is not None:
        return None
    return http.field_decimal(obj, "qty")


E = TypeVar("E", bound=enum.Enum)


def _enum(
    enum_cls: type[E],
    obj: Mapping[str, Any],
    name: str,
    *,
    lower: bool = False,
    upper: bool = False,
) -> E:
    raw = http.field_str(obj, name)
    value = raw.lower() if lower else raw.upper() if upper else raw
    try:
        return enum_cls(value)
    except ValueError:
        allowed = ", ".join(str(m.value) for m in enum_cls)
        raise ValueError(f"field {name!r}={raw!r}: must be one of {allowed}") from None


def transfer_status_check_transition(
    transfer_id: str, previous: TransferStatus | None, current: TransferStatus
) -> None:
    """Raise `InvalidStatusTransition` for PROCESSING->PENDING or any change after a terminal
    status. Workers that check once and come back later store the last status and call this."""
    if previous is None or previous == current:
        return
    if previous.is_terminal or (
        previous is TransferStatus.PROCESSING and current is TransferStatus.PENDING
    ):
        raise InvalidStatusTransition(transfer_id, previous, current)


# ---------------------------------------------------------------------------


class AlpacaClient:
    """The Broker API endpoints of one account (`account_id` is required)."""

    def __init__(
        self,
        *,
        api_key: str,
        api_secret: str,
        account_id: str,
        base_url: str | None = None,
        trading_mode: TradingMode | str = TradingMode.PAPER,
        timeout_s: float = http.DEFAULT_TIMEOUT_S,
        retry: http.RetryPolicy | None = None,
        session: requests.Session | None = None,
    ) -> None:
        if not account_id:
            raise ValueError("account_id='': must be Alpaca's account id (ALPACA_ACCOUNT_ID)")
        url = base_url or BASE_URLS[TradingMode(trading_mode)]
        basic = base64.b64encode(f"{api_key}:{api_secret}".encode()).decode()
        self._http = http.JsonHttp(
            base_url=url,
            headers={
                "Authorization": f"Basic {basic}",
                "APCA-API-KEY-ID": api_key,
                "APCA-API-SECRET-KEY": api_secret,
            },
            timeout_s=timeout_s,
            retry=retry,
            session=session,
        )
        self.base_url = self._http.base_url
        self._account_id = account_id
        # Entries already warned about: a list is read on every poll; warn once per entry.
        self._skipped: set[str] = set()

    def __repr__(self) -> str:
        return f"AlpacaClient(base_url={self.base_url!r}, account_id={self._account_id!r})"

    def account_id(self) -> str:
        return self._account_id

    # -- paths -----------------------------------------------------------------------

    def _tokenization_path(self, suffix: str) -> str:
        return f"/v1/accounts/{self._account_id}/tokenization{suffix}"

    def _wallet_path(self, suffix: str) -> str:
        return f"/v1/accounts/{self._account_id}/wallets{suffix}"

    def _trading_path(self, suffix: str) -> str:
        return f"/v1/trading/accounts/{self._account_id}{suffix}"

    # -- transport and error mapping ---------------------------------------------------

    def _get(
        self,
        path: str,
        params: Mapping[str, str | None] | None = None,
        *,
        not_found: Callable[[], AlpacaError] | None = None,
    ) -> Any:
        try:
            response = self._http.get(path, params)
        except http.TransportError as exc:
            raise AlpacaNetworkError(exc.method, exc.url, exc.reason) from exc
        if response.status == 404 and not_found is not None:
            raise not_found()
        _raise_for_status(response, symbol=None)
        return _json(response)

    def _post(
        self,
        path: str,
        body: Mapping[str, Any],
        *,
        symbol: str | None,
        idempotency_key: str | None = None,
    ) -> Any:
        # Alpaca's create requests take an `Idempotency-Key` header: a re-sent request with
        # the same key is answered with the first one's result instead of acting twice.
        headers = {IDEMPOTENCY_HEADER: idempotency_key} if idempotency_key else None
        try:
            response = self._http.post(path, body, headers=headers)
        except http.TransportError as exc:
            raise AlpacaNetworkError(exc.method, exc.url, exc.reason) from exc
        except http.OutcomeUnknown as exc:
            raise AlpacaOutcomeUnknown(exc.method, exc.url, exc.reason, exc.status) from exc
        _raise_for_status(response, symbol=symbol)
        try:
            return response.json()
        except http.MalformedJson as exc:
            raise AlpacaOutcomeUnknown(
                "POST", response.url, f"unreadable HTTP {response.status} body", response.status
            ) from exc

    def _post_parsed(
        self,
        path: str,
        body: Mapping[str, Any],
        parse: Callable[[Mapping[str, Any]], T],
        *,
        symbol: str | None,
        what: str,
        idempotency_key: str | None = None,
    ) -> T:
        data = self._post(path, body, symbol=symbol, idempotency_key=idempotency_key)
        try:
            return parse(_obj(data))
        except ValueError as exc:
            raise AlpacaOutcomeUnknown(
                "POST", self._http.url(path), f"unparseable {what} response: {exc}", 200
            ) from exc

    def _get_one(
        self,
        path: str,
        parse: Callable[[Mapping[str, Any]], T],
        *,
        not_found: Callable[[], AlpacaError] | None = None,
    ) -> T:
        body = self._get(path, not_found=not_found)
        return _parse(self._http.url(path), lambda: parse(_obj(body)))

    def _get_list(
        self,
        path: str,
        parse: Callable[[Mapping[str, Any]], T],
        params: Mapping[str, str | None] | None = None,
        *,
        skip_unknown: bool,
        keep: Callable[[Any], bool] | None = None,
    ) -> list[T]:
        url = self._http.url(path)
        body = self._get(path, params)
        if not isinstance(body, list):
            raise AlpacaMalformedResponse(url, f"expected a JSON array, got {type(body).__name__}")
        items: list[T] = []
        for index, item in enumerate(body):
            if keep is not None and not keep(item):
                continue
            try:
                items.append(parse(_obj(item)))
            except ValueError as exc:
                if not skip_unknown:
                    raise AlpacaMalformedResponse(url, f"entry {index}: {exc}") from exc
                self._warn_skipped(url, index, item, exc)
        return items

    def _warn_skipped(self, url: str, index: int, item: Any, exc: ValueError) -> None:
        entry = _describe_entry(item)
        key = f"{url} {entry} {exc}"
        if key in self._skipped:
            return
        if len(self._skipped) >= _MAX_REMEMBERED_SKIPS:
            self._skipped.clear()
        self._skipped.add(key)
        logger.warning(
            "Alpaca %s: skipping entry %d that is not understood (%s): %s", url, index, exc, entry
        )

    # -- account, positions, clock, orders -------------------------------------------

    def account(self) -> Account:
        """`GET /v1/trading/accounts/{id}/account`: the account's id and cash."""
        return self._get_one(self._trading_path("/account"), Account.from_json)

    def positions(self) -> list[Position]:
        """Every position (equities and crypto such as `USDCUSD`)."""
        return self._get_list(
            self._trading_path("/positions"), Position.from_json, skip_unknown=False
        )

    def equity_positions(self) -> list[Position]:
        """The equity positions only (the USDC crypto position is not an equity)."""
        return [p for p in self.positions() if p.is_equity]

    def clock(self) -> MarketClock:
        """`GET /v1/clock`: whether the market is open, and the next open and close."""
        return self._get_one("/v1/clock", MarketClock.from_json)

    def submit_market_order(
        self, *, symbol: str, qty: Decimal, side: OrderSide | str, client_order_id: str
    ) -> Order:
        """A `day` market order. `client_order_id` is our idempotency key: after
        `AlpacaOutcomeUnknown`, look for it among the orders before submitting again."""
        if not qty.is_finite() or qty <= 0:
            raise InvalidAmount("qty", qty)
        body = {
            "symbol": symbol,
            "qty": http.decimal_str(qty),
            "side": OrderSide(side).value,
            "type": "market",
            "time_in_force": "day",
            "client_order_id": client_order_id,
        }
        logger.info(
            "submitting market order client_order_id=%s %s %s %s",
            client_order_id,
            body["side"],
            body["qty"],
            symbol,
        )
        return self._post_parsed(
            self._trading_path("/orders"),
            body,
            Order.from_json,
            symbol=symbol,
            what="order",
            idempotency_key=client_order_id,
        )

    def submit_usdc_conversion(
        self,
        *,
        side: OrderSide | str,
        client_order_id: str,
        notional_usd: Decimal | None = None,
        qty_usdc: Decimal | None = None,
    ) -> Order:
        """A `USDCUSD` market order (spec 15.5): buy USDC for `notional_usd` before a
        withdrawal, or sell `qty_usdc` after a deposit. Crypto orders are `gtc`.
        `client_order_id` is our idempotency key (also sent as `Idempotency-Key`): after
        `AlpacaOutcomeUnknown`, look it up before ever placing again."""
        side = OrderSide(side)
        if (notional_usd is None) == (qty_usdc is None):
            raise ValueError("give exactly one of notional_usd and qty_usdc")
        amount = notional_usd if notional_usd is not None else qty_usdc
        assert amount is not None
        if not amount.is_finite() or amount <= 0:
            raise InvalidAmount("notional_usd" if notional_usd is not None else "qty_usdc", amount)
        body: dict[str, Any] = {
            "symbol": USDC_POSITION_SYMBOL,
            "side": side.value,
            "type": "market",
            "time_in_force": "gtc",
            "client_order_id": client_order_id,
        }
        if notional_usd is not None:
            body["notional"] = http.decimal_str(notional_usd)
        else:
            assert qty_usdc is not None
            body["qty"] = http.decimal_str(qty_usdc)
        logger.info(
            "submitting USDC conversion client_order_id=%s %s %s",
            client_order_id,
            side.value,
            body.get("notional", body.get("qty")),
        )
        return self._post_parsed(
            self._trading_path("/orders"),
            body,
            Order.from_json,
            symbol=USDC_POSITION_SYMBOL,
            what="order",
            idempotency_key=client_order_id,
        )

    def get_order(self, order_id: str) -> Order:
        """`GET /v1/trading/accounts/{id}/orders/{order_id}`; `OrderNotFound`."""
        return self._get_one(
            self._trading_path(f"/orders/{order_id}"),
            Order.from_json,
            not_found=lambda: OrderNotFound(order_id),
        )

    def find_order_by_client_order_id(self, client_order_id: str) -> Order | None:
        """Our order by our idempotency key (`GET .../orders:by_client_order_id`), or None
        when Alpaca never received it: the lookup after `AlpacaOutcomeUnknown`."""
        path = self._trading_path("/orders:by_client_order_id")
        try:
            body = self._get(
                path,
                {"client_order_id": client_order_id},
                not_found=lambda: OrderNotFound(client_order_id),
            )
        except OrderNotFound:
            return None
        return _parse(self._http.url(path), lambda: Order.from_json(_obj(body)))

    # -- tokenization ----------------------------------------------------------------

    def request_mint(
        self,
        *,
        underlying_symbol: str,
        quantity_shares: Decimal,
        wallet_address: str,
        issuer_request_id: str,
        issuer: str = DEFAULT_ISSUER,
        network: str = DEFAULT_TOKEN_NETWORK,
    ) -> TokenizationRequest:
        """`POST .../tokenization/mint`. `issuer_request_id` is our idempotency key: after
        `AlpacaOutcomeUnknown`, call `find_request_by_issuer_request_id` before retrying."""
        if not quantity_shares.is_finite() or quantity_shares <= 0:
            raise InvalidAmount("quantity_shares", quantity_shares)
        body = {
            "underlying_symbol": underlying_symbol,
            "qty": http.decimal_str(quantity_shares),
            "issuer": issuer,
            "network": network,
            "wallet_address": wallet_address,
            "issuer_request_id": issuer_request_id,
        }
        logger.info(
            "requesting mint issuer_request_id=%s symbol=%s qty=%s wallet=%s",
            issuer_request_id,
            underlying_symbol,
            body["qty"],
            wallet_address,
        )
        return self._post_parsed(
            self._tokenization_path("/mint"),
            body,
            TokenizationRequest.from_json,
            symbol=underlying_symbol,
            what="mint",
            idempotency_key=issuer_request_id,
        )

    def list_requests(
        self,
        *,
        type: TokenizationType | None = None,
        status: TokenizationStatus | None = None,
        underlying_symbol: str | None = None,
        after: datetime | None = None,
    ) -> list[TokenizationRequest]:
        """The account's tokenization requests; entries not understood are skipped (WARNING).

        The filters are Alpaca's documented query parameters (`type`, `status`,
        `underlying_symbol`, and `after`: created strictly after that time); the list has no
        pagination, so `after` is what keeps a lookup from downloading the account's whole
        history. Results are checked here too, as the list may ignore a filter."""
        params = {
            "type": type.value if type else None,
            "status": status.value if status else None,
            "underlying_symbol": underlying_symbol,
            "after": None if after is None else _rfc3339(after),
        }
        requests_ = self._get_list(
            self._tokenization_path("/requests"),
            TokenizationRequest.from_json,
            params,
            skip_unknown=True,
        )
        return [
            r
            for r in requests_
            # An entry without `type` is kept: the caller matches it by its own key.
            if (type is None or r.type is None or r.type is type)
            and (status is None or r.status is status)
            and (underlying_symbol is None or r.underlying_symbol == underlying_symbol)
            and (after is None or r.created_at > after)
        ]

    def get_request(self, tokenization_request_id: str) -> TokenizationRequest:
        """`GET .../tokenization/requests/{id}`: one request by Alpaca's id; `RequestNotFound`."""
        return self._get_one(
            self._tokenization_path(f"/requests/{tokenization_request_id}"),
            TokenizationRequest.from_json,
            not_found=lambda: RequestNotFound("tokenization_request_id", tokenization_request_id),
        )

    def find_request_by_issuer_request_id(
        self, issuer_request_id: str, *, since: datetime | None = None
    ) -> TokenizationRequest | None:
        """Our own mint by our idempotency key, or None if Alpaca never received it.
        `since` (by our clock, no later than we recorded the request: the operation's start)
        bounds the list to requests created since, less `CLOCK_SKEW`."""
        after = None if since is None else since - CLOCK_SKEW
        for request in self.list_requests(type=TokenizationType.MINT, after=after):
            if request.issuer_request_id == issuer_request_id:
                return request
        return None

    def find_redemption_by_tx(
        self, tx_hash: str, *, since: datetime | None = None
    ) -> TokenizationRequest | None:
        """The `redeem` request Alpaca created for our token transfer `tx_hash` (matched by
        transaction, never by wallet), or None if not detected yet. `since` (by our clock, no
        later than the transfer was sent: the operation's start) bounds the list to requests
        created since, less `CLOCK_SKEW`."""
        wanted = tx_hash.lower()
        after = None if since is None else since - CLOCK_SKEW
        for request in self.list_requests(type=TokenizationType.REDEEM, after=after):
            if request.tx_hash is not None and request.tx_hash.lower() == wanted:
                return request
        return None

    def poll_until_terminal(
        self,
        tokenization_request_id: str,
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> TokenizationRequest:
        """Completed, rejected or failed (returned as a value); `AlpacaPollTimeout`."""

        def check() -> TokenizationRequest | None:
            request = self.get_request(tokenization_request_id)
            return request if request.status.is_terminal else None

        return poll_until(
            check,
            interval_s=interval_s,
            timeout_s=timeout_s,
            on_timeout=lambda elapsed: AlpacaPollTimeout(
                f"tokenization request {tokenization_request_id} not terminal", elapsed
            ),
        )

    def poll_for_redemption_detection(
        self,
        tx_hash: str,
        *,
        since: datetime | None = None,
        interval_s: float = DEFAULT_INTERVAL_S,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> TokenizationRequest:
        return poll_until(
            lambda: self.find_redemption_by_tx(tx_hash, since=since),
            interval_s=interval_s,
            timeout_s=timeout_s,
            on_timeout=lambda elapsed: AlpacaPollTimeout(
                f"redemption of tx {tx_hash} not detected", elapsed
            ),
        )

    # -- crypto wallet ---------------------------------------------------------------

    def whitelists(self) -> list[WhitelistEntry]:
        return self._get_list(
            self._wallet_path("/whitelists"), WhitelistEntry.from_json, skip_unknown=True
        )

    def whitelist_entry(
        self, address: str, *, asset: str = USDC, network: str = ETHEREUM
    ) -> WhitelistEntry | None:
        """The entry for this address/asset/chain (an APPROVED one first), or None. Chains
        compare over their known spellings ("ETH" and "Ethereum" are both ethereum)."""
        matches = [
            entry
            for entry in self.whitelists()
            if entry.address.lower() == address.lower()
            and entry.asset.upper() == asset.upper()
            and same_chain(entry.chain, network)
        ]
        for entry in matches:
            if entry.status is WhitelistStatus.APPROVED:
                return entry
        return matches[0] if matches else None

    def initiate_withdrawal(
        self,
        *,
        amount_usdc: Decimal,
        address: str,
        asset: str = USDC,
        network: str = ETHEREUM,
        idempotency_key: str | None = None,
    ) -> Transfer:
        """`POST .../wallets/transfers` after checking the address is APPROVED.

        `idempotency_key` (the operation's stored request id) goes in the `Idempotency-Key`
        header. The transfer body carries no id of ours, so after `AlpacaOutcomeUnknown` the
        caller still lists transfers (`find_outgoing_transfers`) before anything else.
        """
        if not amount_usdc.is_finite() or amount_usdc <= 0:
            raise InvalidAmount("amount_usdc", amount_usdc)
        entry = self.whitelist_entry(address, asset=asset, network=network)
        if entry is None or entry.status is not WhitelistStatus.APPROVED:
            raise AddressNotWhitelisted(
                address, asset, canonical_chain(network), None if entry is None else entry.status
            )
        body = {"amount": http.decimal_str(amount_usdc), "asset": asset, "address": address}
        logger.info("initiating withdrawal of %s %s to %s", body["amount"], asset, address)
        return self._post_parsed(
            self._wallet_path("/transfers"),
            body,
            Transfer.from_json,
            symbol=asset,
            what="transfer",
            idempotency_key=idempotency_key,
        )

    def get_transfer(self, transfer_id: str) -> Transfer:
        """`GET .../wallets/transfers/{id}`: one transfer by id; `TransferNotFound`."""
        return self._get_one(
            self._wallet_path(f"/transfers/{transfer_id}"),
            Transfer.from_json,
            not_found=lambda: TransferNotFound(transfer_id),
        )

    def list_transfers(self, *, since: datetime | None = None) -> list[Transfer]:
        """The account's transfers; entries not understood are skipped (WARNING).

        Alpaca documents no query parameter and no pagination for this list (every transfer
        of the account, in no documented order), so the whole history is downloaded whatever
        we ask. `since` bounds the rest: an entry created before it is dropped before it is
        parsed (and is never warned about)."""
        path = self._wallet_path("/transfers")
        if since is None:
            return self._get_list(path, Transfer.from_json, skip_unknown=True)

        def recent(item: Any) -> bool:
            created = item.get("created_at") if isinstance(item, Mapping) else None
            if not isinstance(created, str):
                return True  # unreadable: parsed (and skipped with a warning) as before
            try:
                return http.parse_datetime("created_at", created) >= since
            except ValueError:
                return True

        return self._get_list(path, Transfer.from_json, skip_unknown=True, keep=recent)

    def find_outgoing_transfers(
        self, *, to_address: str, amount_usdc: Decimal, created_at_or_after: datetime
    ) -> list[Transfer]:
        """Withdrawals to `to_address` of exactly `amount_usdc` created at or after a time:
        the candidates for a POST whose outcome was unknown."""
        return [
            t
            for t in self.list_transfers(since=created_at_or_after)
            if t.direction is TransferDirection.OUTGOING
            and t.to_address is not None
            and t.to_address.lower() == to_address.lower()
            and t.amount == amount_usdc
            and t.created_at >= created_at_or_after
        ]

    def find_deposit_by_tx(self, tx_hash: str, *, since: datetime | None = None) -> Transfer | None:
        """The INCOMING transfer Alpaca credited for onchain tx `tx_hash`, or None yet.
        `since` (by our clock, no later than the deposit was sent: the operation's start)
        bounds the scan to transfers created since, less `CLOCK_SKEW`."""
        wanted = tx_hash.lower()
        created_since = None if since is None else since - CLOCK_SKEW
        for transfer in self.list_transfers(since=created_since):
            if (
                transfer.direction is TransferDirection.INCOMING
                and transfer.tx_hash is not None
                and transfer.tx_hash.lower() == wanted
            ):
                return transfer
        return None

    def deposit_address(self, *, asset: str = USDC, network: str = ETHEREUM) -> str:
        """Alpaca's address that credits `asset` sent on `network` to this account (B12):
        `GET .../wallets?asset=` (one wallet object, or a list of them by chain)."""
        path = self._wallet_path("")
        body = self._get(path, {"asset": asset, "network": network})
        url = self._http.url(path)
        wallets = body if isinstance(body, list) else [body]
        for wallet in wallets:
            obj = _parse(url, functools.partial(_obj, wallet))
            chain = obj.get("chain") or obj.get("network")
            if chain is None or (isinstance(chain, str) and same_chain(chain, network)):
                return _parse(url, functools.partial(http.field_str, obj, "address"))
        raise AlpacaMalformedResponse(url, f"no {asset} wallet on {canonical_chain(network)}")

    def poll_transfer_until_complete(
        self,
        transfer_id: str,
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> Transfer:
        """COMPLETE or FAILED (a value: the caller checks); `InvalidStatusTransition` on a
        regression; `AlpacaPollTimeout`."""
        last: list[TransferStatus] = []

        def check() -> Transfer | None:
            transfer = self.get_transfer(transfer_id)
            transfer_status_check_transition(
                transfer_id, last[-1] if last else None, transfer.status
            )
            last.append(transfer.status)
            return transfer if transfer.status.is_terminal else None

        return poll_until(
            check,
            interval_s=interval_s,
            timeout_s=timeout_s,
            on_timeout=lambda elapsed: AlpacaPollTimeout(
                f"transfer {transfer_id} not terminal", elapsed
            ),
        )

    def poll_deposit_by_tx(
        self,
        tx_hash: str,
        *,
        since: datetime | None = None,
        interval_s: float = DEFAULT_INTERVAL_S,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> Transfer:
        """The deposit for `tx_hash` once COMPLETE or FAILED; not yet detected keeps polling;
        `DepositTimeout`."""
        last: list[TransferStatus] = []

        def check() -> Transfer | None:
            transfer = self.find_deposit_by_tx(tx_hash, since=since)
            if transfer is None:
                return None
            transfer_status_check_transition(
                transfer.id, last[-1] if last else None, transfer.status
            )
            last.append(transfer.status)
            return transfer if transfer.status.is_terminal else None

        return poll_until(
            check,
            interval_s=interval_s,
            timeout_s=timeout_s,
            on_timeout=lambda elapsed: DepositTimeout(tx_hash, elapsed),
        )


_MAX_REMEMBERED_SKIPS = 10_000


def _raise_for_status(response: http.HttpResponse, *, symbol: str | None) -> None:
    if response.ok:
        return
    message = response.text.strip()[:500]
    if response.status == 403:
        lowered = message.lower()
        if "insufficient" in lowered or "position" in lowered:
            raise InsufficientPosition(symbol or "?", response.status, message)
        raise UnsupportedAccount(response.status, message)
    if response.status in (400, 422):
        raise InvalidParameters(response.status, message)
    if response.status == 404:
        raise AlpacaNotFound(response.status, message)
    if response.status == 429:
        raise AlpacaRateLimited(
            response.status, message, _retry_after_s(response.header("Retry-After"))
        )
    raise AlpacaApiError(response.status, message)


def _retry_after_s(value: str | None) -> float | None:
    """`Retry-After` in seconds (delta-seconds form; an HTTP date or junk gives None)."""
    if value is None:
        return None
    parsed = http.parse_decimal(value)
    if parsed is None or parsed < 0:
        return None
    return float(parsed)


def _rfc3339(moment: datetime) -> str:
    """A query parameter time: UTC, `Z` suffix (naive means UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _json(response: http.HttpResponse) -> Any:
    try:
        return response.json()
    except http.MalformedJson as exc:
        raise AlpacaMalformedResponse(response.url, exc.detail) from exc


def _obj(body: Any) -> Mapping[str, Any]:
    if not isinstance(body, dict):
        raise ValueError(f"expected a JSON object, got {type(body).__name__}")
    return body


def _parse(url: str, build: Callable[[], T]) -> T:
    try:
        return build()
    except ValueError as exc:
        raise AlpacaMalformedResponse(url, str(exc)) from exc


def _describe_entry(item: Any) -> str:
    """An entry for a log line: its id fields when it has any, else a short repr."""
    if isinstance(item, dict):
        ids = {
            k: item.get(k) for k in ("tokenization_request_id", "id", "type", "status") if k in item
        }
        if ids:
            return repr(ids)
    text = repr(item)
    return text if len(text) <= 200 else text[:200] + "..."

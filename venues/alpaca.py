"""Alpaca client: tokenization (mint/redeem), account and positions, crypto wallet transfers.

Every response is parsed at this boundary into frozen dataclasses with `Decimal` amounts and
aware datetimes; nothing inward sees a raw dict. Reads are retried on 5xx and timeouts; a
POST is sent once and, when its outcome cannot be known, raises `AlpacaOutcomeUnknown` so the
caller looks the request up (mint by `issuer_request_id`, transfers by listing) before acting
again. The API secret is kept only inside the request headers and never logged or shown.
"""

from __future__ import annotations

import enum
import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol, TypeVar

import requests

from venues import http
from venues.polling import DEFAULT_INTERVAL_S, DEFAULT_TIMEOUT_S, poll_until

logger = logging.getLogger(__name__)

T = TypeVar("T")

PAPER_URL = "https://paper-api.alpaca.markets"
LIVE_URL = "https://api.alpaca.markets"

DEFAULT_ISSUER = "st0x"
DEFAULT_TOKEN_NETWORK = "base"
USDC = "USDC"
ETHEREUM = "ethereum"


class TradingMode(enum.StrEnum):
    PAPER = "paper"
    LIVE = "live"


BASE_URLS = {TradingMode.PAPER: PAPER_URL, TradingMode.LIVE: LIVE_URL}


class TokenizationType(enum.StrEnum):
    MINT = "mint"
    REDEEM = "redeem"


class TokenizationStatus(enum.StrEnum):
    PENDING = "pending"
    COMPLETED = "completed"
    REJECTED = "rejected"

    @property
    def is_terminal(self) -> bool:
        return self is not TokenizationStatus.PENDING


class TransferStatus(enum.StrEnum):
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    COMPLETE = "COMPLETE"
    FAILED = "FAILED"

    @property
    def is_terminal(self) -> bool:
        return self in (TransferStatus.COMPLETE, TransferStatus.FAILED)


class TransferRelationship(enum.StrEnum):
    INCOMING = "INCOMING"
    OUTGOING = "OUTGOING"


class WhitelistStatus(enum.StrEnum):
    PENDING = "PENDING"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"


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


class RequestNotFound(AlpacaError):
    def __init__(self, key: str, value: str) -> None:
        self.key = key
        self.value = value
        super().__init__(f"tokenization request with {key}={value!r} not found")


class TransferNotFound(AlpacaError):
    def __init__(self, transfer_id: str) -> None:
        self.transfer_id = transfer_id
        super().__init__(f"wallet transfer id={transfer_id!r} not found")


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
    tokenization_request_id: str
    type: TokenizationType
    status: TokenizationStatus
    underlying_symbol: str
    token_symbol: str | None
    qty: Decimal
    issuer: str
    network: str
    wallet_address: str
    issuer_request_id: str | None
    tx_hash: str | None
    fees: Decimal | None
    created_at: datetime
    updated_at: datetime | None

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> TokenizationRequest:
        return cls(
            tokenization_request_id=http.field_str(obj, "tokenization_request_id"),
            type=_enum(TokenizationType, obj, "type", lower=True),
            status=_enum(TokenizationStatus, obj, "status", lower=True),
            underlying_symbol=http.field_str(obj, "underlying_symbol"),
            token_symbol=http.field_opt_str(obj, "token_symbol"),
            qty=http.field_decimal(obj, "qty"),
            issuer=http.field_str(obj, "issuer"),
            network=http.field_str(obj, "network").lower(),
            wallet_address=http.field_str(obj, "wallet_address"),
            issuer_request_id=http.field_opt_str(obj, "issuer_request_id"),
            tx_hash=http.field_opt_str(obj, "tx_hash"),
            fees=http.field_opt_decimal(obj, "fees"),
            created_at=http.field_datetime(obj, "created_at"),
            updated_at=http.field_opt_datetime(obj, "updated_at"),
        )


@dataclass(frozen=True)
class Transfer:
    id: str
    relationship: TransferRelationship
    amount: Decimal
    asset: str
    from_address: str | None
    to_address: str
    status: TransferStatus
    tx_hash: str | None
    created_at: datetime
    network_fee_amount: Decimal | None

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Transfer:
        return cls(
            id=http.field_str(obj, "id"),
            relationship=_enum(TransferRelationship, obj, "relationship", upper=True),
            amount=http.field_decimal(obj, "amount"),
            asset=http.field_str(obj, "asset"),
            from_address=http.field_opt_str(obj, "from_address"),
            to_address=http.field_str(obj, "to_address"),
            status=_enum(TransferStatus, obj, "status", upper=True),
            tx_hash=http.field_opt_str(obj, "tx_hash"),
            created_at=http.field_datetime(obj, "created_at"),
            network_fee_amount=http.field_opt_decimal(obj, "network_fee_amount"),
        )


@dataclass(frozen=True)
class WhitelistEntry:
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
            chain=http.field_str(obj, "chain").lower(),
            status=_enum(WhitelistStatus, obj, "status", upper=True),
            created_at=http.field_datetime(obj, "created_at"),
        )


@dataclass(frozen=True)
class Position:
    symbol: str
    qty: Decimal

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Position:
        return cls(symbol=http.field_str(obj, "symbol"), qty=http.field_decimal(obj, "qty"))


@dataclass(frozen=True)
class Account:
    id: str
    cash: Decimal

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Account:
        return cls(id=http.field_str(obj, "id"), cash=http.field_decimal(obj, "cash"))


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


class TokenizationApi(Protocol):
    """What the mint and redemption workflows need (check-once calls; they never block)."""

    def request_mint(
        self,
        *,
        underlying_symbol: str,
        quantity_shares: Decimal,
        wallet_address: str,
        issuer_request_id: str,
        issuer: str = ...,
        network: str = ...,
    ) -> TokenizationRequest: ...
    def get_request(self, tokenization_request_id: str) -> TokenizationRequest: ...
    def find_request_by_issuer_request_id(
        self, issuer_request_id: str
    ) -> TokenizationRequest | None: ...
    def find_redemption_by_tx(self, tx_hash: str) -> TokenizationRequest | None: ...


class WalletApi(Protocol):
    """What the USDC workflows need from Alpaca's crypto wallet (check-once calls)."""

    def whitelist_entry(
        self, address: str, *, asset: str = ..., network: str = ...
    ) -> WhitelistEntry | None: ...
    def initiate_withdrawal(
        self, *, amount_usdc: Decimal, address: str, asset: str = ..., network: str = ...
    ) -> Transfer: ...
    def get_transfer(self, transfer_id: str) -> Transfer: ...
    def find_outgoing_transfers(
        self, *, to_address: str, amount_usdc: Decimal, created_at_or_after: datetime
    ) -> list[Transfer]: ...
    def find_deposit_by_tx(self, tx_hash: str) -> Transfer | None: ...
    def deposit_address(self, *, asset: str = ..., network: str = ...) -> str: ...


class BrokerageApi(Protocol):
    """What inventory snapshots need: cash and positions."""

    def account(self) -> Account: ...
    def positions(self) -> list[Position]: ...


# ---------------------------------------------------------------------------


class AlpacaClient:
    """Trading (`/v2`) and broker wallet (`/v1/accounts/{id}`) endpoints of one account."""

    def __init__(
        self,
        *,
        api_key: str,
        api_secret: str,
        base_url: str | None = None,
        trading_mode: TradingMode | str = TradingMode.PAPER,
        account_id: str | None = None,
        timeout_s: float = http.DEFAULT_TIMEOUT_S,
        retry: http.RetryPolicy | None = None,
        session: requests.Session | None = None,
    ) -> None:
        url = base_url or BASE_URLS[TradingMode(trading_mode)]
        self._http = http.JsonHttp(
            base_url=url,
            headers={"APCA-API-KEY-ID": api_key, "APCA-API-SECRET-KEY": api_secret},
            timeout_s=timeout_s,
            retry=retry,
            session=session,
        )
        self.base_url = self._http.base_url
        self._account_id = account_id

    def __repr__(self) -> str:
        return f"AlpacaClient(base_url={self.base_url!r}, account_id={self._account_id!r})"

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

    def _post(self, path: str, body: Mapping[str, Any], *, symbol: str | None) -> Any:
        try:
            response = self._http.post(path, body)
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

    # -- account ---------------------------------------------------------------------

    def account(self) -> Account:
        body = self._get("/v2/account")
        account = _parse(self._http.url("/v2/account"), lambda: Account.from_json(_obj(body)))
        if self._account_id is None:
            self._account_id = account.id
        return account

    def account_id(self) -> str:
        """The account id, fetched once from `GET /v2/account` unless given at construction."""
        if self._account_id is None:
            self.account()
        assert self._account_id is not None
        return self._account_id

    def positions(self) -> list[Position]:
        body = self._get("/v2/positions")
        return _parse_list(self._http.url("/v2/positions"), body, Position.from_json)

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
        """`POST /v2/tokenization/mint`. `issuer_request_id` is our idempotency key: after
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
        data = self._post("/v2/tokenization/mint", body, symbol=underlying_symbol)
        url = self._http.url("/v2/tokenization/mint")
        try:
            return TokenizationRequest.from_json(_obj(data))
        except ValueError as exc:
            raise AlpacaOutcomeUnknown(
                "POST", url, f"unparseable mint response: {exc}", 200
            ) from exc

    def list_requests(
        self,
        *,
        type: TokenizationType | None = None,
        status: TokenizationStatus | None = None,
        underlying_symbol: str | None = None,
    ) -> list[TokenizationRequest]:
        params = {
            "type": type.value if type else None,
            "status": status.value if status else None,
            "underlying_symbol": underlying_symbol,
        }
        body = self._get("/v2/tokenization/requests", params)
        return _parse_list(
            self._http.url("/v2/tokenization/requests"), body, TokenizationRequest.from_json
        )

    def get_request(self, tokenization_request_id: str) -> TokenizationRequest:
        """One request by Alpaca's id (listed and filtered client-side); `RequestNotFound`."""
        for request in self.list_requests():
            if request.tokenization_request_id == tokenization_request_id:
                return request
        raise RequestNotFound("tokenization_request_id", tokenization_request_id)

    def find_request_by_issuer_request_id(
        self, issuer_request_id: str
    ) -> TokenizationRequest | None:
        """Our own mint by our idempotency key, or None if Alpaca never received it."""
        for request in self.list_requests(type=TokenizationType.MINT):
            if request.issuer_request_id == issuer_request_id:
                return request
        return None

    def find_redemption_by_tx(self, tx_hash: str) -> TokenizationRequest | None:
        """The `redeem` request Alpaca created for our token transfer `tx_hash` (matched by
        transaction, never by wallet), or None if not detected yet."""
        wanted = tx_hash.lower()
        for request in self.list_requests(type=TokenizationType.REDEEM):
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
        """Completed or rejected (returned as a value); `AlpacaPollTimeout`."""

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
        interval_s: float = DEFAULT_INTERVAL_S,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> TokenizationRequest:
        return poll_until(
            lambda: self.find_redemption_by_tx(tx_hash),
            interval_s=interval_s,
            timeout_s=timeout_s,
            on_timeout=lambda elapsed: AlpacaPollTimeout(
                f"redemption of tx {tx_hash} not detected", elapsed
            ),
        )

    # -- crypto wallet ---------------------------------------------------------------

    def _wallet_path(self, suffix: str) -> str:
        return f"/v1/accounts/{self.account_id()}/wallets{suffix}"

    def whitelists(self) -> list[WhitelistEntry]:
        path = self._wallet_path("/whitelists")
        return _parse_list(self._http.url(path), self._get(path), WhitelistEntry.from_json)

    def whitelist_entry(
        self, address: str, *, asset: str = USDC, network: str = ETHEREUM
    ) -> WhitelistEntry | None:
        """The entry for this address/asset/chain (an APPROVED one first), or None."""
        matches = [
            entry
            for entry in self.whitelists()
            if entry.address.lower() == address.lower()
            and entry.asset.upper() == asset.upper()
            and entry.chain == network.lower()
        ]
        for entry in matches:
            if entry.status is WhitelistStatus.APPROVED:
                return entry
        return matches[0] if matches else None

    def initiate_withdrawal(
        self, *, amount_usdc: Decimal, address: str, asset: str = USDC, network: str = ETHEREUM
    ) -> Transfer:
        """`POST .../wallets/transfers` after checking the address is APPROVED.

        Alpaca takes no idempotency key here: after `AlpacaOutcomeUnknown` the caller lists
        transfers (`find_outgoing_transfers`) before sending again.
        """
        if not amount_usdc.is_finite() or amount_usdc <= 0:
            raise InvalidAmount("amount_usdc", amount_usdc)
        entry = self.whitelist_entry(address, asset=asset, network=network)
        if entry is None or entry.status is not WhitelistStatus.APPROVED:
            raise AddressNotWhitelisted(
                address, asset, network.lower(), None if entry is None else entry.status
            )
        path = self._wallet_path("/transfers")
        body = {"amount": http.decimal_str(amount_usdc), "asset": asset, "address": address}
        logger.info("initiating withdrawal of %s %s to %s", body["amount"], asset, address)
        data = self._post(path, body, symbol=asset)
        try:
            return Transfer.from_json(_obj(data))
        except ValueError as exc:
            raise AlpacaOutcomeUnknown(
                "POST", self._http.url(path), f"unparseable transfer response: {exc}", 200
            ) from exc

    def get_transfer(self, transfer_id: str) -> Transfer:
        path = self._wallet_path("/transfers")
        body = self._get(
            path, {"transfer_id": transfer_id}, not_found=lambda: TransferNotFound(transfer_id)
        )
        transfers = _parse_list(self._http.url(path), body, Transfer.from_json)
        if not transfers:
            raise TransferNotFound(transfer_id)
        return transfers[0]

    def list_transfers(self) -> list[Transfer]:
        path = self._wallet_path("/transfers")
        return _parse_list(self._http.url(path), self._get(path), Transfer.from_json)

    def find_outgoing_transfers(
        self, *, to_address: str, amount_usdc: Decimal, created_at_or_after: datetime
    ) -> list[Transfer]:
        """Withdrawals to `to_address` of exactly `amount_usdc` created at or after a time:
        the candidates for a POST whose outcome was unknown."""
        return [
            t
            for t in self.list_transfers()
            if t.relationship is TransferRelationship.OUTGOING
            and t.to_address.lower() == to_address.lower()
            and t.amount == amount_usdc
            and t.created_at >= created_at_or_after
        ]

    def find_deposit_by_tx(self, tx_hash: str) -> Transfer | None:
        """The INCOMING transfer Alpaca credited for onchain tx `tx_hash`, or None yet."""
        wanted = tx_hash.lower()
        for transfer in self.list_transfers():
            if (
                transfer.relationship is TransferRelationship.INCOMING
                and transfer.tx_hash is not None
                and transfer.tx_hash.lower() == wanted
            ):
                return transfer
        return None

    def deposit_address(self, *, asset: str = USDC, network: str = ETHEREUM) -> str:
        """Alpaca's address that credits `asset` sent on `network` to this account (B12)."""
        path = self._wallet_path("")
        body = self._get(path, {"asset": asset, "network": network})
        url = self._http.url(path)
        if isinstance(body, list):
            if not body:
                raise AlpacaMalformedResponse(url, f"no {asset} wallet on {network}")
            body = body[0]
        return _parse(url, lambda: http.field_str(_obj(body), "address"))

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
        interval_s: float = DEFAULT_INTERVAL_S,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> Transfer:
        """The deposit for `tx_hash` once COMPLETE or FAILED; not yet detected keeps polling;
        `DepositTimeout`."""
        last: list[TransferStatus] = []

        def check() -> Transfer | None:
            transfer = self.find_deposit_by_tx(tx_hash)
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


def _raise_for_status(response: http.HttpResponse, *, symbol: str | None) -> None:
    if response.ok:
        return
    message = response.text.strip()[:500]
    if response.status == 403:
        lowered = message.lower()
        if "insufficient" in lowered or "position" in lowered:
            raise InsufficientPosition(symbol or "?", response.status, message)
        raise UnsupportedAccount(response.status, message)
    if response.status == 422:
        raise InvalidParameters(response.status, message)
    raise AlpacaApiError(response.status, message)


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


def _parse_list(url: str, body: Any, parse: Callable[[Mapping[str, Any]], T]) -> list[T]:
    if not isinstance(body, list):
        raise AlpacaMalformedResponse(url, f"expected a JSON array, got {type(body).__name__}")
    return [_parse(url, functools.partial(_parse_item, parse, item)) for item in body]


def _parse_item(parse: Callable[[Mapping[str, Any]], T], item: Any) -> T:
    return parse(_obj(item))

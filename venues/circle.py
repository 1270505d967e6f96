"""Circle Iris (CCTP V2 attestation service): fast-transfer fees and attested messages."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, Context, Decimal
from typing import Any, Protocol

import requests

from venues import http
from venues.polling import poll_until

logger = logging.getLogger(__name__)

IRIS_URL = "https://iris-api.circle.com"
ETHEREUM_DOMAIN = 0
BASE_DOMAIN = 6
FAST_FINALITY_THRESHOLD = 1000
STANDARD_FINALITY_THRESHOLD = 2000
STATUS_COMPLETE = "complete"

_CONTEXT = Context(prec=200)


class CircleError(Exception):
    """Root of every Circle client error."""


class IrisApiError(CircleError):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(f"Iris API error: HTTP {status}: {message}")


class IrisNetworkError(CircleError):
    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"Iris network error: GET {url}: {reason}")


class IrisMalformedResponse(CircleError):
    def __init__(self, url: str, detail: str) -> None:
        self.url = url
        self.detail = detail
        super().__init__(f"Iris {url}: malformed response: {detail}")


class FastTransferFeeNotAvailable(CircleError):
    def __init__(self, src_domain: int, dst_domain: int) -> None:
        self.src_domain = src_domain
        self.dst_domain = dst_domain
        super().__init__(
            f"no fee listed for finalityThreshold={FAST_FINALITY_THRESHOLD} "
            f"from domain {src_domain} to domain {dst_domain}"
        )


class AttestationTimeout(CircleError):
    def __init__(self, src_domain: int, tx_hash: str, elapsed_s: float) -> None:
        self.src_domain = src_domain
        self.tx_hash = tx_hash
        self.elapsed_s = elapsed_s
        super().__init__(
            f"attestation for tx {tx_hash} on domain {src_domain} not complete "
            f"after {elapsed_s:.3f}s"
        )


@dataclass(frozen=True)
class IrisMessage:
    """A complete attested CCTP V2 message: both parts come from Iris (the emitted message's
    nonce is a placeholder under V2)."""

    status: str
    message: bytes
    attestation: bytes
    event_nonce: str | None

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> IrisMessage:
        return cls(
            status=http.field_str(obj, "status"),
            message=_hex_bytes(obj, "message"),
            attestation=_hex_bytes(obj, "attestation"),
            event_nonce=_opt_nonce(obj),
        )


def _hex_bytes(obj: Mapping[str, Any], name: str) -> bytes:
    value = http.field_str(obj, name)
    text = value[2:] if value.startswith(("0x", "0X")) else value
    try:
        data = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"field {name!r}={value[:20]!r}: must be 0x-prefixed hex") from None
    if not data:
        raise ValueError(f"field {name!r}={value!r}: must not be empty")
    return data


def _opt_nonce(obj: Mapping[str, Any]) -> str | None:
    value = obj.get("eventNonce")
    return None if value is None else str(value)


def fast_transfer_max_fee(amount_units: int, fee_bps: Decimal) -> int:
    """`maxFee = ceil(amount * fee_bps / 10000)` in USDC units (fee_bps may be fractional)."""
    if amount_units < 0:
        raise ValueError(f"amount_units={amount_units}: must be >= 0")
    if fee_bps < 0:
        raise ValueError(f"fee_bps={fee_bps}: must be >= 0")
    raw = _CONTEXT.divide(_CONTEXT.multiply(Decimal(amount_units), fee_bps), Decimal(10000))
    return int(raw.to_integral_value(rounding=ROUND_CEILING, context=_CONTEXT))


class AttestationApi(Protocol):
    """What the USDC workflows need from Iris (check-once calls)."""

    def fast_transfer_fee_bps(self, src_domain: int, dst_domain: int) -> Decimal: ...
    def get_message(self, src_domain: int, tx_hash: str) -> IrisMessage | None: ...


class IrisClient:
    def __init__(
        self,
        base_url: str = IRIS_URL,
        *,
        timeout_s: float = http.DEFAULT_TIMEOUT_S,
        retry: http.RetryPolicy | None = None,
        session: requests.Session | None = None,
    ) -> None:
        self._http = http.JsonHttp(
            base_url=base_url, timeout_s=timeout_s, retry=retry, session=session
        )
        self.base_url = self._http.base_url

    def __repr__(self) -> str:
        return f"IrisClient(base_url={self.base_url!r})"

    def _get(self, path: str, params: Mapping[str, str] | None = None) -> http.HttpResponse:
        try:
            return self._http.get(path, params)
        except http.TransportError as exc:
            raise IrisNetworkError(exc.url, exc.reason) from exc

    def fast_transfer_fee_bps(self, src_domain: int, dst_domain: int) -> Decimal:
        """`minimumFee` (basis points, may be fractional) of the fast tier (threshold 1000)."""
        response = self._get(f"/v2/burn/USDC/fees/{src_domain}/{dst_domain}")
        if not response.ok:
            raise IrisApiError(response.status, response.text.strip()[:500])
        body = _json(response)
        if not isinstance(body, list):
            raise IrisMalformedResponse(response.url, "expected a JSON array of fee tiers")
        for tier in body:
            if not isinstance(tier, dict):
                raise IrisMalformedResponse(response.url, f"fee tier {tier!r} is not an object")
            threshold = http.parse_decimal(tier.get("finalityThreshold"))
            if threshold != FAST_FINALITY_THRESHOLD:
                continue
            fee = http.parse_decimal(tier.get("minimumFee"))
            if fee is None or fee < 0:
                raise IrisMalformedResponse(
                    response.url, f"minimumFee={tier.get('minimumFee')!r}: must be a number >= 0"
                )
            return fee
        raise FastTransferFeeNotAvailable(src_domain, dst_domain)

    def get_message(self, src_domain: int, tx_hash: str) -> IrisMessage | None:
        """The attested message of burn `tx_hash`, or None while not ready (404 or a status
        other than complete). Check-once: workers call this and come back later."""
        response = self._get(f"/v2/messages/{src_domain}", {"transactionHash": tx_hash})
        if response.status == 404:
            return None
        if not response.ok:
            raise IrisApiError(response.status, response.text.strip()[:500])
        body = _json(response)
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list):
            raise IrisMalformedResponse(response.url, "expected {'messages': [...]}")
        if not messages:
            return None
        first = messages[0]
        if not isinstance(first, dict):
            raise IrisMalformedResponse(response.url, "message entry is not an object")
        if first.get("status") != STATUS_COMPLETE:
            return None
        try:
            return IrisMessage.from_json(first)
        except ValueError as exc:
            raise IrisMalformedResponse(response.url, str(exc)) from exc

    def poll_attestation(
        self, src_domain: int, tx_hash: str, *, interval_s: float = 5.0, timeout_s: float = 300.0
    ) -> IrisMessage:
        return poll_until(
            lambda: self.get_message(src_domain, tx_hash),
            interval_s=interval_s,
            timeout_s=timeout_s,
            on_timeout=lambda elapsed: AttestationTimeout(src_domain, tx_hash, elapsed),
        )


def _json(response: http.HttpResponse) -> Any:
    try:
        return response.json()
    except http.MalformedJson as exc:
        raise IrisMalformedResponse(response.url, exc.detail) from exc

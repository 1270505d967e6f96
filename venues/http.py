"""Shared HTTP plumbing for the venue clients: JSON in and out, retries for reads only.

A read (GET) is retried on HTTP 5xx, timeouts and connection failures with exponential
backoff. A write (POST) is sent exactly once: when its outcome cannot be known (timeout,
dropped connection, 5xx, unreadable 2xx body) the caller gets `OutcomeUnknown` and must look
the request up by its own id before acting again. JSON numbers are parsed as `Decimal`.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import requests
import tenacity

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class RetryPolicy:
    """How a read is retried: `attempts` in total, delays doubling from min to max."""

    attempts: int = 10
    min_delay_s: float = 1.0
    max_delay_s: float = 60.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts={self.attempts!r}: must be >= 1")
        if self.min_delay_s < 0 or self.max_delay_s < self.min_delay_s:
            raise ValueError(
                f"min_delay_s={self.min_delay_s!r}, max_delay_s={self.max_delay_s!r}: "
                "need 0 <= min_delay_s <= max_delay_s"
            )

    def delay_s(self, retry_index: int) -> float:
        """Delay before retry number `retry_index` (0-based)."""
        return min(self.max_delay_s, self.min_delay_s * (2**retry_index))


NO_RETRY = RetryPolicy(attempts=1, min_delay_s=0.0, max_delay_s=0.0)


class TransportError(Exception):
    """The request did not produce an HTTP response (connection failure, timeout)."""

    def __init__(self, method: str, url: str, reason: str) -> None:
        self.method = method
        self.url = url
        self.reason = reason
        super().__init__(f"{method} {url}: {reason}")


class OutcomeUnknown(Exception):
    """A write may or may not have taken effect; look it up by its id before acting again."""

    def __init__(self, method: str, url: str, reason: str, status: int | None = None) -> None:
        self.method = method
        self.url = url
        self.reason = reason
        self.status = status
        super().__init__(f"{method} {url}: outcome unknown ({reason})")


class MalformedJson(Exception):
    def __init__(self, url: str, status: int, detail: str) -> None:
        self.url = url
        self.status = status
        self.detail = detail
        super().__init__(f"{url} (HTTP {status}): malformed JSON body: {detail}")


@dataclass(frozen=True)
class HttpResponse:
    method: str
    url: str
    status: int
    text: str
    headers: Mapping[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        """A response header by case-insensitive name, or None."""
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return value
        return None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        """The body parsed with every JSON number as `Decimal` (int stays int)."""
        try:
            return json.loads(self.text, parse_float=Decimal)
        except ValueError as exc:
            raise MalformedJson(self.url, self.status, str(exc)) from exc


class JsonHttp:
    """One base URL, fixed headers, a timeout and a retry policy for reads."""

    def __init__(
        self,
        *,
        base_url: str,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = dict(headers or {})
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self._session = session or requests.Session()
        self._sleep = sleep

    def __repr__(self) -> str:
        # Headers may carry secrets: never show them.
        return f"JsonHttp(base_url={self.base_url!r})"

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def get(self, path: str, params: Mapping[str, str | None] | None = None) -> HttpResponse:
        """GET with retries on 5xx, timeouts and connection failures.

        After the last attempt a 5xx response is returned as is; a transport failure raises
        `TransportError`.
        """
        url = self.url(path)
        clean_params = {k: v for k, v in (params or {}).items() if v is not None}
        policy = self.retry

        def once() -> HttpResponse:
            try:
                raw = self._session.get(
                    url, params=clean_params, headers=self._headers, timeout=self.timeout_s
                )
            except requests.RequestException as exc:
                raise TransportError("GET", url, _describe(exc)) from exc
            return HttpResponse("GET", url, raw.status_code, raw.text, dict(raw.headers))

        def log(state: tenacity.RetryCallState) -> None:
            retry, of = state.attempt_number, policy.attempts - 1
            error = state.outcome.exception() if state.outcome else None
            if isinstance(error, TransportError):
                logger.warning("GET %s failed (%s), retry %d of %d", url, error.reason, retry, of)
            elif state.outcome is not None:
                status = state.outcome.result().status
                logger.warning("GET %s returned HTTP %d, retry %d of %d", url, status, retry, of)

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(TransportError)
            | tenacity.retry_if_result(lambda response: response.status >= 500),
            stop=tenacity.stop_after_attempt(policy.attempts),
            wait=lambda state: policy.delay_s(state.attempt_number - 1),
            sleep=self._sleep,
            before_sleep=log,
            # After the last attempt: its 5xx response is returned, its failure raised.
            retry_error_callback=lambda state: state.outcome.result(),  # type: ignore[union-attr]
        )
        return retrying(once)

    def post(
        self, path: str, body: Mapping[str, Any], *, headers: Mapping[str, str] | None = None
    ) -> HttpResponse:
        """POST once (`headers` added to the fixed ones). A 5xx or a failure after the request
        may have been sent is `OutcomeUnknown`; a connect timeout (nothing was sent) is
        `TransportError`."""
        url = self.url(path)
        sent_headers = {**self._headers, **(headers or {})}
        try:
            raw = self._session.post(url, json=body, headers=sent_headers, timeout=self.timeout_s)
        except requests.ConnectTimeout as exc:
            raise TransportError("POST", url, _describe(exc)) from exc
        except requests.RequestException as exc:
            raise OutcomeUnknown("POST", url, _describe(exc)) from exc
        response = HttpResponse("POST", url, raw.status_code, raw.text, dict(raw.headers))
        if response.status >= 500:
            raise OutcomeUnknown(
                "POST", url, f"HTTP {response.status}: {_snippet(response.text)}", response.status
            )
        return response


def _describe(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.Timeout):
        return f"timeout ({type(exc).__name__})"
    return f"{type(exc).__name__}: {_snippet(str(exc))}"


def _snippet(text: str, limit: int = 300) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + "..."


# ---------------------------------------------------------------------------
# Field parsing at the JSON boundary. Each raises ValueError naming the field and rule;
# clients turn it into their own "malformed response" error.


def field_str(obj: Mapping[str, Any], name: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or value == "":
        raise ValueError(f"field {name!r}={value!r}: must be a non-empty string")
    return value


def field_opt_str(obj: Mapping[str, Any], name: str) -> str | None:
    value = obj.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"field {name!r}={value!r}: must be a string or null")
    return value


def field_decimal(obj: Mapping[str, Any], name: str) -> Decimal:
    value = obj.get(name)
    parsed = parse_decimal(value)
    if parsed is None:
        raise ValueError(f"field {name!r}={value!r}: must be a decimal string or number")
    return parsed


def field_opt_decimal(obj: Mapping[str, Any], name: str) -> Decimal | None:
    value = obj.get(name)
    if value is None or value == "":
        return None
    return field_decimal(obj, name)


def parse_decimal(value: object) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, str):
        try:
            parsed = Decimal(value.strip())
        except InvalidOperation:
            return None
        return parsed if parsed.is_finite() else None
    return None


_FRACTION = re.compile(r"(\.\d{6})\d+")


def field_datetime(obj: Mapping[str, Any], name: str) -> datetime:
    value = obj.get(name)
    if not isinstance(value, str):
        raise ValueError(f"field {name!r}={value!r}: must be an ISO 8601 timestamp")
    return parse_datetime(name, value)


def field_opt_datetime(obj: Mapping[str, Any], name: str) -> datetime | None:
    value = obj.get(name)
    if value is None or value == "":
        return None
    return field_datetime(obj, name)


def parse_datetime(name: str, value: str) -> datetime:
    """ISO 8601 to an aware datetime (naive means UTC; nanoseconds are truncated)."""
    text = _FRACTION.sub(r"\1", value.strip())
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"field {name!r}={value!r}: must be an ISO 8601 timestamp") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def decimal_str(value: Decimal) -> str:
    """A Decimal as a plain (non-exponent) string for a JSON body."""
    return format(value, "f")

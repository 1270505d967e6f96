"""Helpers for venue-client tests against pytest-httpserver (scripted responses)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from venues.http import RetryPolicy

FAST_RETRY = RetryPolicy(attempts=3, min_delay_s=0.001, max_delay_s=0.002)
CREATED_AT = "2025-01-02T03:04:05.123456789Z"


class Script:
    """A handler answering from a list of (status, body) in order; the last one repeats.

    A body that is a dict or list is sent as JSON, a str as is; `("sleep", seconds)` as the
    status makes the server hang that long before answering with the next entry's content.
    """

    def __init__(self, *responses: tuple[Any, Any]) -> None:
        self.responses = responses
        self.requests: list[Request] = []
        self._lock = threading.Lock()

    def __call__(self, request: Request) -> Response:
        with self._lock:
            index = min(len(self.requests), len(self.responses) - 1)
            self.requests.append(request)
        status, body = self.responses[index]
        if status == "sleep":
            time.sleep(body)
            return Response("{}", status=200, content_type="application/json")
        text = body if isinstance(body, str) else json.dumps(body)
        return Response(text, status=status, content_type="application/json")

    @property
    def count(self) -> int:
        return len(self.requests)


def tokenization_json(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "tokenization_request_id": "tok-1",
        "type": "mint",
        "status": "pending",
        "underlying_symbol": "AAPL",
        "token_symbol": "tAAPL",
        "qty": "100.5",
        "issuer": "st0x",
        "network": "base",
        "wallet_address": "0x" + "11" * 20,
        "issuer_request_id": "our-1",
        "tx_hash": None,
        "fees": None,
        "created_at": CREATED_AT,
        "updated_at": None,
    }
    body.update(overrides)
    return body


def transfer_json(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "tr-1",
        "tx_hash": None,
        "direction": "OUTGOING",
        "status": "PENDING",
        "amount": "100",
        "usd_value": "100.02",
        "network_fee": "0.5",
        "fees": "0",
        "chain": "ETH",
        "asset": "USDC",
        "from_address": None,
        "to_address": "0x" + "22" * 20,
        "created_at": CREATED_AT,
    }
    body.update(overrides)
    return body


@pytest.fixture
def threaded_server() -> Iterator[HTTPServer]:
    """A pytest-httpserver that serves requests concurrently (for hanging handlers)."""
    server = HTTPServer(threaded=True)
    server.start()
    yield server
    server.clear()
    if server.is_running():
        server.stop()

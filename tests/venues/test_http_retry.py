"""`JsonHttp.get`'s retries (on tenacity): the policy's delays between attempts, the last 5xx
returned as is, a transport failure raised after the last attempt, a 4xx never retried."""

from __future__ import annotations

import socket

import pytest
from pytest_httpserver import HTTPServer

from tests.venues.http_fakes import Script
from venues.http import JsonHttp, RetryPolicy, TransportError

POLICY = RetryPolicy(attempts=4, min_delay_s=0.001, max_delay_s=0.003)


def client(base_url: str, slept: list[float]) -> JsonHttp:
    return JsonHttp(base_url=base_url, retry=POLICY, timeout_s=2.0, sleep=slept.append)


def test_a_5xx_is_retried_with_growing_delays_and_the_last_one_returned(httpserver: HTTPServer):
    script = Script((503, "down"))
    httpserver.expect_request("/x").respond_with_handler(script)
    slept: list[float] = []

    response = client(httpserver.url_for("/"), slept).get("/x")

    assert response.status == 503
    assert script.count == 4
    assert slept == [0.001, 0.002, 0.003]


def test_a_5xx_then_success_returns_the_success(httpserver: HTTPServer):
    script = Script((500, "oops"), (200, {"ok": 1}))
    httpserver.expect_request("/x").respond_with_handler(script)
    slept: list[float] = []

    assert client(httpserver.url_for("/"), slept).get("/x").json() == {"ok": 1}
    assert slept == [0.001]


def test_a_4xx_is_not_retried(httpserver: HTTPServer):
    script = Script((404, "no"))
    httpserver.expect_request("/x").respond_with_handler(script)
    slept: list[float] = []

    assert client(httpserver.url_for("/"), slept).get("/x").status == 404
    assert script.count == 1
    assert slept == []


def test_a_refused_connection_raises_after_the_last_attempt():
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    slept: list[float] = []

    with pytest.raises(TransportError) as caught:
        client(f"http://127.0.0.1:{port}", slept).get("/x")

    assert caught.value.method == "GET"
    assert slept == [0.001, 0.002, 0.003]

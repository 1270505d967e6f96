"""The alert webhook (issue 19): https only unless allowed, no private/loopback/link-local
target unless allowed, no redirect followed, one deadline for the whole call. Real local
HTTP servers: pytest-httpserver, and a raw socket server that trickles its answer."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from django.utils import timezone
from pytest_httpserver import HTTPServer

from conf.env import AlertConfig, ConfigError, Secret, load_settings_env
from console.alerts import (
    WebhookRefused,
    alerts_evaluate,
    alerts_record,
    webhook_post,
)
from console.models import AlertState

LOCAL = {"allow_http": True, "allow_private": True}


def test_a_loopback_webhook_is_refused_by_default(httpserver: HTTPServer):
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    url = httpserver.url_for("/hook")
    with pytest.raises(WebhookRefused, match="not a public address"):
        webhook_post(url, {"text": "x"}, timeout_s=5, allow_http=True)
    assert httpserver.log == []
    # explicitly allowed, it is delivered
    assert webhook_post(url, {"text": "x"}, timeout_s=5, **LOCAL) == 200
    assert len(httpserver.log) == 1


@pytest.mark.parametrize(
    "url",
    [
        "https://169.254.169.254/latest/meta-data/",
        "https://10.1.2.3/hook",
        "https://[::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://localhost/hook",
    ],
)
def test_link_local_private_and_loopback_targets_are_refused(url):
    with pytest.raises(WebhookRefused, match="not a public address"):
        webhook_post(url, {"text": "x"}, timeout_s=5)


def test_http_is_refused_unless_allowed(httpserver: HTTPServer):
    with pytest.raises(WebhookRefused, match="ALERT_WEBHOOK_ALLOW_HTTP"):
        webhook_post(httpserver.url_for("/hook"), {}, timeout_s=5, allow_private=True)
    assert httpserver.log == []


def test_http_webhook_url_is_refused_at_start_unless_allowed(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_settings_env(base_dir=tmp_path, env={"ALERT_WEBHOOK_URL": "http://hooks.example"})
    assert "ALERT_WEBHOOK_ALLOW_HTTP" in dict(info.value.problems)["ALERT_WEBHOOK_URL"]
    allowed = load_settings_env(
        base_dir=tmp_path,
        env={"ALERT_WEBHOOK_URL": "http://hooks.example", "ALERT_WEBHOOK_ALLOW_HTTP": "true"},
    )
    assert allowed.alerts.webhook_allow_http is True


def test_a_redirect_is_not_followed(httpserver: HTTPServer):
    httpserver.expect_request("/hook", method="POST").respond_with_data(
        "", status=307, headers={"Location": httpserver.url_for("/elsewhere")}
    )
    httpserver.expect_request("/elsewhere").respond_with_data("ok")
    status = webhook_post(httpserver.url_for("/hook"), {"text": "x"}, timeout_s=5, **LOCAL)
    assert status == 307
    assert [request.path for request, _ in httpserver.log] == ["/hook"]


@pytest.fixture
def trickling_server() -> Iterator[str]:
    """Answers every request with a status line trickled one byte every 0.2 s (for at most
    10 s), so only a deadline on the whole call ends it early."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(0.2)
                ends = time.monotonic() + 10
                for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 200:
                    if stop.is_set() or time.monotonic() > ends:
                        break
                    try:
                        conn.sendall(bytes([byte]))
                    except OSError:
                        break
                    stop.wait(0.2)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
    stop.set()
    thread.join(timeout=5)
    listener.close()


def test_a_trickling_webhook_is_cut_at_the_deadline(trickling_server):
    began = time.monotonic()
    with pytest.raises(TimeoutError):
        webhook_post(trickling_server, {"text": "x"}, timeout_s=1.0, **LOCAL)
    assert time.monotonic() - began < 2.5


@pytest.mark.django_db
def test_an_alert_check_is_not_held_past_the_webhook_deadline(
    settings, trading_state, trickling_server
):
    settings.ALERTS = AlertConfig(
        webhook_url=Secret(trickling_server),
        webhook_allow_http=True,
        webhook_allow_private=True,
        webhook_timeout_s=1.0,
    )
    now = timezone.now()
    conditions = alerts_evaluate(now=now)
    began = time.monotonic()
    alerts_record(conditions, now=now)
    elapsed = time.monotonic() - began
    # one post per open alert, each cut at 1 s
    assert elapsed < 1.5 * len(conditions) + 1
    assert AlertState.objects.get(kind="attention").last_sent_at is None

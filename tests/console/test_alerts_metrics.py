"""Alerts (conditions, webhook pacing against a real local HTTP server) and /metrics."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone
from pytest_httpserver import HTTPServer

from conf.env import AlertConfig, Secret
from console.alerts import alerts_drift_report, alerts_evaluate, alerts_record
from console.models import AlertState
from operations.models import Operation, OperationKind, OperationStatus

pytestmark = pytest.mark.django_db


@pytest.fixture
def webhook(httpserver: HTTPServer, settings):
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    # a local server: http and loopback must be allowed explicitly
    settings.ALERTS = AlertConfig(
        webhook_url=Secret(httpserver.url_for("/hook")),
        repeat_s=600.0,
        webhook_allow_http=True,
        webhook_allow_private=True,
    )
    return httpserver


def _posts(server: HTTPServer) -> list[dict]:
    return [json.loads(request.data) for request, _response in server.log]


def test_an_operation_needing_attention_opens_one_alert_and_posts_it_once(webhook, trading_state):
    now = timezone.now()
    alerts_record(alerts_evaluate(now=now), now=now)
    alerts_record(alerts_evaluate(now=now + timedelta(seconds=60)), now=now + timedelta(seconds=60))
    posts = _posts(webhook)
    assert len(posts) == 1
    assert posts[0]["alert"]["kind"] == "attention"
    assert "withdrawal outcome unknown" in posts[0]["text"]
    assert AlertState.objects.filter(resolved_at__isnull=True, kind="attention").count() == 1


def test_an_alert_is_posted_again_after_the_repeat_interval_then_resolved(webhook, trading_state):
    now = timezone.now()
    alerts_record(alerts_evaluate(now=now), now=now)
    later = now + timedelta(seconds=601)
    alerts_record(alerts_evaluate(now=later), now=later)
    assert [p["alert"]["state"] for p in _posts(webhook)] == ["open", "open"]
    Operation.objects.filter(pk=trading_state["attention"].pk).update(needs_attention=False)
    end = later + timedelta(seconds=5)
    alerts_record(alerts_evaluate(now=end), now=end)
    assert [p["alert"]["state"] for p in _posts(webhook)] == ["open", "open", "resolved"]
    assert not AlertState.objects.filter(resolved_at__isnull=True).exists()


def test_an_operation_past_its_kinds_expected_time_is_overdue(settings, db):
    settings.ALERTS = AlertConfig(
        expected_s={
            "mint": 60.0,
            "redemption": 60.0,
            "usdc_alpaca_to_base": 60.0,
            "usdc_base_to_alpaca": 60.0,
        }
    )
    now = timezone.now()
    Operation.objects.create(
        kind=OperationKind.MINT,
        pool="AAPL",
        amount=Decimal("1"),
        aggregate_id="00000000-0000-4000-8000-00000000000a",
        status=OperationStatus.RUNNING,
        created_at=now - timedelta(seconds=61),
    )
    kinds = [c.kind for c in alerts_evaluate(now=now)]
    assert kinds == ["overdue"]
    assert alerts_evaluate(now=now - timedelta(seconds=30)) == []


def test_low_signer_gas_and_reported_drift_raise_alerts(settings, db):
    settings.ALERTS = AlertConfig(gas_minimum_eth=Decimal("0.01"), drift_tolerance=Decimal("0.5"))
    low = alerts_evaluate(gas_wei={"base": 10**15, "ethereum": 10**17})
    assert [(c.key, c.kind) for c in low] == [("gas:base", "gas")]
    alerts_drift_report({("AAPL", "onchain"): Decimal("0.4"), ("USDC", "offchain"): Decimal("-2")})
    open_keys = set(
        AlertState.objects.filter(resolved_at__isnull=True).values_list("key", flat=True)
    )
    assert open_keys == {"drift_report:USDC:offchain"}
    alerts_drift_report({})
    assert not AlertState.objects.filter(resolved_at__isnull=True).exists()


def test_an_unreachable_webhook_is_retried_at_the_next_check(settings, trading_state):
    settings.ALERTS = AlertConfig(
        webhook_url=Secret("http://127.0.0.1:9/hook"),
        webhook_allow_http=True,
        webhook_allow_private=True,
    )
    now = timezone.now()
    alerts_record(alerts_evaluate(now=now), now=now)
    row = AlertState.objects.get(kind="attention")
    assert row.last_sent_at is None and row.sent_count == 0


def test_metrics_from_localhost_report_pools_operations_and_snapshot_age(trading_state, settings):
    settings.METRICS_TRUST_LOOPBACK = True
    response = Client(REMOTE_ADDR="127.0.0.1").get("/metrics")
    assert response.status_code == 200
    text = response.content.decode()
    assert 'rebalancer_pool_balance{bucket="available",pool="AAPL",venue="onchain"} 90.0' in text
    assert 'rebalancer_pool_ratio{pool="AAPL"} 0.9' in text
    assert 'rebalancer_operations{kind="mint",status="failed"} 1.0' in text
    assert "rebalancer_operations_needing_attention 1.0" in text
    assert 'rebalancer_snapshot_age_seconds{venue="Alpaca"}' in text


def test_metrics_refuse_a_remote_scraper_without_a_token(trading_state):
    response = Client(REMOTE_ADDR="203.0.113.7").get("/metrics")
    assert response.status_code == 401
    assert b"rebalancer_pool" not in response.content


def test_metrics_do_not_trust_loopback_unless_configured(trading_state, settings):
    # behind a reverse proxy on the same host every caller is loopback
    assert settings.METRICS_TRUST_LOOPBACK is False
    response = Client(REMOTE_ADDR="127.0.0.1").get("/metrics")
    assert response.status_code == 401
    assert b"rebalancer_pool" not in response.content
    from inventory.services import api_token_create

    secret = api_token_create(name="scraper", scopes=["read"])[1]
    scraped = Client(REMOTE_ADDR="127.0.0.1").get("/metrics", HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert scraped.status_code == 200
    assert b"rebalancer_pool_ratio" in scraped.content

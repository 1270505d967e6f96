"""Health: `manage.py health` (exit 1 when unhealthy) and `GET /api/v1/health` (no token; 503
when unhealthy): database, cluster heartbeat age, last read per venue, operations and pools
needing a human."""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from inventory.models import InventoryPool
from operations.models import Operation, OperationKind
from service.periodic import CLUSTER_HEARTBEAT, heartbeat_beat

pytestmark = pytest.mark.django_db


@pytest.fixture
def client(client):
    """Health details need a read-scope token (issue 19): these tests read the details."""
    from inventory.services import api_token_create

    secret = api_token_create(name="health-reader", scopes=["read"])[1]
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {secret}"
    return client


def test_without_a_token_health_shows_only_the_overall_status(db):
    from django.test import Client

    anonymous = Client()
    unhealthy = anonymous.get("/api/v1/health")
    assert (unhealthy.status_code, unhealthy.json()) == (503, {"healthy": False})
    heartbeat_beat(name=CLUSTER_HEARTBEAT)
    healthy = anonymous.get("/api/v1/health")
    assert (healthy.status_code, healthy.json()) == (200, {"healthy": True})
    wrong = anonymous.get("/api/v1/health", HTTP_AUTHORIZATION="Bearer rbt_not-a-token")
    assert wrong.json() == {"healthy": True}


def test_fresh_heartbeat_and_nothing_to_look_at_is_healthy(client):
    heartbeat_beat(name=CLUSTER_HEARTBEAT)
    response = client.get("/api/v1/health")
    assert response.status_code == 200
    body = response.json()
    assert body["healthy"] is True
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["cluster_heartbeat"]["age_s"] < 60
    call_command("health")


def test_no_cluster_heartbeat_is_unhealthy_503_and_exit_1(client, capsys):
    response = client.get("/api/v1/health")
    assert response.status_code == 503
    assert response.json()["checks"]["cluster_heartbeat"] == {
        "ok": False,
        "detail": "never",
        "age_s": None,
    }
    with pytest.raises(CommandError, match="unhealthy: cluster_heartbeat"):
        call_command("health")
    assert "FAIL cluster_heartbeat: never" in capsys.readouterr().out


def test_old_heartbeat_is_unhealthy(settings):
    heartbeat_beat(name=CLUSTER_HEARTBEAT, now=timezone.now() - timedelta(seconds=61))
    with pytest.raises(CommandError, match="cluster_heartbeat"):
        call_command("health")


def test_venue_reads_are_checked_when_rebalancing_is_enabled(settings, client):
    settings.REBALANCING = dataclasses.replace(settings.REBALANCING, enabled=True)
    heartbeat_beat(name=CLUSTER_HEARTBEAT)
    heartbeat_beat(name="venue:base")
    body = client.get("/api/v1/health").json()
    assert body["checks"]["snapshot_base"]["ok"] is True
    assert body["checks"]["snapshot_alpaca"] == {"ok": False, "detail": "never", "age_s": None}
    assert body["healthy"] is False


def test_operations_and_pools_needing_a_human_are_unhealthy(capsys):
    heartbeat_beat(name=CLUSTER_HEARTBEAT)
    operation = Operation.objects.create(
        kind=OperationKind.MINT,
        pool="AAPL",
        amount=Decimal(5),
        aggregate_id="a-1",
        needs_attention=True,
    )
    InventoryPool.objects.create(
        key="MSFT", kind="equity", needs_reconciliation=True, reconciliation_reason="x"
    )
    with pytest.raises(CommandError, match="operations_needing_attention"):
        call_command("health", "--json")
    report = json.loads(capsys.readouterr().out)
    assert report["checks"]["operations_needing_attention"]["ids"] == [operation.pk]
    assert report["checks"]["pools_needing_reconciliation"]["pools"] == ["MSFT"]

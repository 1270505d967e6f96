"""The models the project package held moved to `service` and `console` (issue 21) with their
data: a database at the pre-split state (rebalancer 0003) migrated forward keeps every row,
and every group and user keeps the console permissions it was granted."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from console.models import AlertState, PoolRatioSample
from service.models import Heartbeat, MarketClock, PeriodicRun
from service.periodic import HEARTBEAT_ENQUEUE_JOB

T0 = datetime(2026, 12, 1, 14, 30, tzinfo=UTC)
PRE_SPLIT = [("rebalancer", "0003_service_state"), ("console", None), ("service", None)]


def pre_split_rows(apps) -> None:
    """Rows as the pre-split code wrote them, through the models of that state."""
    apps.get_model("rebalancer", "AlertState").objects.create(
        key="drift_report:AAPL:base", kind="drift_report", message="drift", first_seen_at=T0
    )
    apps.get_model("rebalancer", "PoolRatioSample").objects.create(
        pool="AAPL", recorded_at=T0, ratio=Decimal("0.512345678901234567")
    )
    apps.get_model("rebalancer", "Heartbeat").objects.create(name="cluster", at=T0, detail="h1")
    apps.get_model("rebalancer", "PeriodicRun").objects.create(
        name="cluster_heartbeat", next_due_at=T0, last_started_by="h1"
    )
    apps.get_model("rebalancer", "PeriodicRun").objects.create(name="venue_poll", next_due_at=T0)
    apps.get_model("rebalancer", "MarketClock").objects.create(
        pk=1, is_open=True, next_open=T0, next_close=T0, fetched_at=T0
    )
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    # The permissions as granted before the split: under the `rebalancer` label.
    operate = Permission.objects.get(
        content_type=ContentType.objects.get(app_label="rebalancer", model="consolerole"),
        codename="operate",
    )
    view_alerts = Permission.objects.get(
        content_type=ContentType.objects.get(app_label="rebalancer", model="alertstate"),
        codename="view_alertstate",
    )
    apps.get_model("auth", "Group").objects.create(name="night desk").permissions.add(operate)
    user = apps.get_model("auth", "User").objects.create(username="ann", is_active=True)
    user.user_permissions.add(view_alerts)


@pytest.mark.django_db(transaction=True)
def test_a_pre_split_database_migrates_forward_with_every_row_and_grant():
    executor = MigrationExecutor(connection)
    latest = executor.loader.graph.leaf_nodes()
    try:
        executor.migrate(PRE_SPLIT)
        executor = MigrationExecutor(connection)
        state = executor.loader.project_state([("rebalancer", "0003_service_state")], at_end=True)
        # Before: the rows live in the project package's tables, under its label.
        assert {"rebalancer_alertstate", "rebalancer_heartbeat"} <= set(
            connection.introspection.table_names()
        )
        pre_split_rows(state.apps)
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(latest)

    alert = AlertState.objects.get()
    assert (alert.key, alert.kind, alert.first_seen_at) == (
        "drift_report:AAPL:base",
        "drift_report",
        T0,
    )
    assert PoolRatioSample.objects.get().ratio == Decimal("0.512345678901234567")
    assert Heartbeat.objects.get(name="cluster").at == T0
    # The heartbeat enqueue job's claim is renamed (it was the health check's name), due as before.
    assert sorted(PeriodicRun.objects.values_list("name", "next_due_at", "last_started_by")) == [
        (HEARTBEAT_ENQUEUE_JOB, T0, "h1"),
        ("venue_poll", T0, ""),
    ]
    assert MarketClock.objects.get(pk=1).open_at(T0) is False  # next_close == T0: closed at T0
    # The grants follow the models: the same permission rows, now under the apps' labels.
    assert list(
        Group.objects.get(name="night desk").permissions.values_list(
            "content_type__app_label", "codename"
        )
    ) == [("console", "operate")]
    assert User.objects.get(username="ann").has_perm("console.view_alertstate")
    assert not Permission.objects.filter(content_type__app_label="rebalancer").exists()

"""The trigger's configuration is cached per process, and a write by anyone is seen at once.

Another process (the API, a worker, the admin, an operator's SQL) changes the settings row, an
asset or a pool breaker through the database only: the database triggers change the stamp in
the same transaction, so the next read here loads the new rows.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.utils import timezone

from inventory import config_stamp
from inventory.selectors import rebalancing_settings_get
from operations.models import PoolBreaker
from operations.services import pool_hold_reason
from tests.service.flows import register

pytestmark = pytest.mark.django_db


def raw(sql: str, params: list) -> None:
    """A write the way another process or an operator would make it: SQL, no Python hook."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def test_a_cached_read_costs_one_query(django_assert_num_queries):
    register("AAPL")
    rebalancing_settings_get()  # creates the global row: a new stamp
    rebalancing_settings_get()
    with django_assert_num_queries(1):
        assert rebalancing_settings_get().asset_enabled("AAPL")


def test_settings_and_asset_rows_written_behind_the_cache_are_seen():
    register("AAPL")
    assert rebalancing_settings_get().paused is False
    assert rebalancing_settings_get().asset_enabled("AAPL")
    raw("UPDATE inventory_rebalancingsettingsrow SET paused = %s", [True])
    assert rebalancing_settings_get().paused is True
    raw("UPDATE inventory_asset SET rebalancing_enabled = %s", [False])
    assert not rebalancing_settings_get().asset_enabled("AAPL")
    raw("UPDATE inventory_asset SET deviation = %s", ["0.3"])
    assert rebalancing_settings_get().assets["AAPL"].deviation == Decimal("0.3")
    raw("DELETE FROM inventory_asset", [])
    assert "AAPL" not in rebalancing_settings_get().assets


def test_breakers_written_behind_the_cache_are_seen():
    assert pool_hold_reason(pool="AAPL") is None
    later = timezone.now() + timedelta(hours=1)
    PoolBreaker.objects.create(pool="AAPL", consecutive_failures=1, cooldown_until=later)
    assert "cooling down" in (pool_hold_reason(pool="AAPL") or "")
    raw("UPDATE operations_poolbreaker SET open_since = %s", [timezone.now()])
    assert "circuit breaker open" in (pool_hold_reason(pool="AAPL") or "")
    raw("DELETE FROM operations_poolbreaker", [])
    assert pool_hold_reason(pool="AAPL") is None


def test_a_rolled_back_change_never_leaves_its_value_in_the_cache():
    rebalancing_settings_get()
    before = config_stamp.stamp()
    with transaction.atomic():
        raw("UPDATE inventory_rebalancingsettingsrow SET paused = %s", [True])
        inside = config_stamp.stamp()
        assert rebalancing_settings_get().paused is True  # cached under the new stamp
        transaction.set_rollback(True)
    assert config_stamp.stamp() == before != inside
    assert rebalancing_settings_get().paused is False
    # Another writer's change gets a token of its own, never the rolled-back one.
    raw("UPDATE inventory_rebalancingsettingsrow SET equity_deviation = %s", ["0.25"])
    assert config_stamp.stamp() not in (before, inside)
    current = rebalancing_settings_get()
    assert current.paused is False and current.equity_threshold.deviation == Decimal("0.25")

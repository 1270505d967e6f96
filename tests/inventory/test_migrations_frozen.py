"""The migrations carry their own frozen logic (issue 21): rolled back past the event keys and
forward again, they rebuild the same keys, the append-only and configuration stamp triggers."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import DatabaseError, connection, transaction
from django.db.migrations.executor import MigrationExecutor

from inventory import append_only, config_stamp
from inventory.models import Event, EventKey, RebalancingSettingsRow
from inventory.services import hedge_place, settings_row_ensure
from tests.inventory.test_trade_key_days import LATE, NOW, fill, record, seed

D = Decimal


@pytest.mark.django_db(transaction=True)
def test_keys_and_triggers_are_rebuilt_by_the_frozen_migrations():
    seed()
    record(fill(1, LATE))
    record(fill(2, LATE + timedelta(days=2)))
    hedge_place(symbol="AAPL", execution_id=7, direction="Sell", shares=D("3"), now=NOW)
    before = sorted(EventKey.objects.values_list("scope", "day", "key", "event_id"))
    assert len(before) == 3
    executor = MigrationExecutor(connection)
    latest = executor.loader.graph.leaf_nodes()
    try:
        # Back to before the keys existed (0006 creates and backfills them): this also
        # reverses the configuration stamp triggers (inventory 0010, operations 0005).
        executor.migrate([("inventory", "0005_pool_inflight_changed_at")])
        assert "inventory_eventkey" not in connection.introspection.table_names()
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(latest)

    assert sorted(EventKey.objects.values_list("scope", "day", "key", "event_id")) == before
    assert append_only.installed(connection)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        Event.objects.filter(pk=Event.objects.first().pk).update(sequence=99)
    stamp = config_stamp.stamp()
    settings_row_ensure()  # an INSERT of a watched table
    assert config_stamp.stamp() not in (None, stamp)
    stamp = config_stamp.stamp()
    assert RebalancingSettingsRow.objects.update(paused=True) == 1
    assert config_stamp.stamp() not in (None, stamp)

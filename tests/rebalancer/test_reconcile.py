"""`manage.py reconcile` against the simulated venue: the drift per pool and venue
(projected, observed, difference) measured before the snapshots are recorded; `--json`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from inventory.domain.values import USDC_POOL
from inventory.models import InventoryPool
from inventory.services import snapshot_record
from tests.operations.conftest import config_from_env

pytestmark = [pytest.mark.chain, pytest.mark.django_db]


def test_reconcile_prints_drift_then_records_the_venues(
    sim_venue, venue_config, sim_assets, settings, capsys
):
    settings.REBALANCING = venue_config
    sim_venue.server.set_position("AAPL", Decimal("40"))
    # The projection believes 35 AAPL offchain.
    snapshot_record(fetched_at=datetime.now(UTC), offchain_equity={"AAPL": Decimal(35)})
    call_command("reconcile", "--json")
    report = json.loads(capsys.readouterr().out)
    rows = {(row["pool"], row["venue"]): row for row in report["drift"]}
    assert rows[("AAPL", "alpaca")] == {
        "pool": "AAPL",
        "venue": "alpaca",
        "projected": "35",
        "inflight": "0",
        "observed": "40",
        "difference": "5",
    }
    assert rows[("AAPL", "base")]["projected"] is None  # never observed before
    assert report["block_number"] >= 0
    assert report["failures"] == {}
    # Recorded: the pools now hold what the venues hold.
    assert InventoryPool.objects.get(key="AAPL").offchain_available == Decimal(40)
    # USD cash plus the `USDCUSD` position (spec 15.5).
    assert InventoryPool.objects.get(key=USDC_POOL).offchain_available == (
        sim_venue.server.cash() + sim_venue.server.usdc_position()
    )
    # A second reconcile finds no drift on the pair.
    call_command("reconcile", "--json")
    again = {(r["pool"], r["venue"]): r for r in json.loads(capsys.readouterr().out)["drift"]}
    assert again[("AAPL", "alpaca")]["difference"] == "0"
    assert Decimal(again[(USDC_POOL, "alpaca")]["difference"]) == 0


def test_reconcile_with_a_venue_down_records_the_other_and_exits_1(
    sim_venue, worker_env, sim_assets, settings, capsys
):
    settings.REBALANCING = config_from_env({**worker_env, "ALPACA_BASE_URL": "http://127.0.0.1:9"})
    with pytest.raises(CommandError, match="venue alpaca not read"):
        call_command("reconcile")
    out = capsys.readouterr().out
    assert "drift (onchain block" in out
    assert InventoryPool.objects.get(key="AAPL").onchain_observed
    assert not InventoryPool.objects.get(key="AAPL").offchain_observed

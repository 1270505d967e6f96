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


def test_a_drift_the_snapshots_do_not_correct_raises_an_alert_and_holds_the_pool(
    sim_venue, venue_config, sim_assets, settings
):
    """Issue 19: a fill recorded before the service ever saw the chain head (so its block,
    far beyond the chain, could not be bounded) is re-applied above every pinned snapshot:
    the pool shows 5 AAPL more than the vault after each poll. The first reconcile reports
    the drift; the second finds it again: a `drift_persistent` alert opens and the pool's
    breaker opens (audited), so nothing is rebalanced on the wrong numbers."""
    from datetime import timedelta

    from console.models import AlertState
    from inventory.services import fill_record_onchain
    from operations.models import PoolBreaker
    from service.poller import venue_balances_read
    from service.reconcile import reconcile_run

    settings.REBALANCING = venue_config
    truth = venue_balances_read().onchain
    now = datetime.now(UTC)
    snapshot_record(
        fetched_at=now - timedelta(seconds=30),
        onchain_equity=truth.equity,
        onchain_cash=truth.usdc,
    )  # no block: the head is not known yet
    fill_record_onchain(
        symbol="AAPL",
        tx_hash="0x" + "ef" * 32,
        log_index=0,
        amount=Decimal(5),
        direction="Buy",
        price_usdc=Decimal("0.01"),
        block_timestamp=now - timedelta(seconds=20),
        block_number=10**12,
    )

    first = reconcile_run()
    drift = {(d.pool, d.venue): d.difference for d in first.drifts}
    assert drift[("AAPL", "base")] == Decimal(-5)
    assert not AlertState.objects.filter(kind="drift_persistent").exists()
    assert not PoolBreaker.objects.filter(pool="AAPL", open_since__isnull=False).exists()
    # The snapshot pinned below the fill's block re-applied it: still 5 too many.
    assert InventoryPool.objects.get(key="AAPL").onchain_available == truth.equity["AAPL"] + 5

    second = reconcile_run()
    drift = {(d.pool, d.venue): d.difference for d in second.drifts}
    assert drift[("AAPL", "base")] == Decimal(-5)
    alert = AlertState.objects.get(key="drift_persistent:AAPL:base")
    assert alert.is_open and "two reconciles in a row" in alert.message
    breaker = PoolBreaker.objects.get(pool="AAPL")
    assert breaker.open_since is not None
    assert "drift persisted" in breaker.last_failure_reason
    assert not PoolBreaker.objects.filter(pool=USDC_POOL, open_since__isnull=False).exists()

"""`rebuild_inventory`: replaying the log reproduces the incrementally maintained pools."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from inventory.domain import events as ev
from inventory.domain.values import USDC_POOL, RebalanceDirection
from inventory.models import InventoryPool
from tests.inventory.projection_helpers import (
    append,
    at,
    mint_accepted,
    mint_requested,
    onchain_fill,
    pools_read,
    snapshot,
    tokens_received,
    tokens_sent,
    usdc_initiated,
)

pytestmark = pytest.mark.django_db

D = Decimal
FIELDS = [
    "key",
    "kind",
    "onchain_available",
    "onchain_inflight",
    "offchain_available",
    "offchain_inflight",
    "onchain_observed",
    "offchain_observed",
    "last_rebalancing",
    "needs_reconciliation",
    "reconciliation_reason",
    "last_event_id",
    "updated_at",
]


def rows() -> list[tuple]:
    """The pools as readers see them (USDC with its pending fill deltas applied)."""
    return pools_read(*FIELDS)


def history() -> None:
    snapshot(
        onchain_equity={"AAPL": D(100), "MSFT": D("3.5")},
        offchain_equity={"AAPL": D(100), "MSFT": D(4)},
        onchain_cash=D(1000),
        offchain_cash=D(1000),
    )
    append("AAPL", onchain_fill("Buy", "2", "150.25"), now=at(1))
    append("m-1", mint_requested("AAPL", "30"), now=at(2))
    append("m-1", mint_accepted(), now=at(3))
    append("m-1", tokens_received(), now=at(4))
    append("m-1", ev.MintCompleted(completed_at=at(5)), now=at(5))
    append("r-1", tokens_sent("MSFT", "1"), now=at(6))
    append("r-1", ev.RedemptionRejected(reason="no", rejected_at=at(7)), now=at(7))
    append("u-1", usdc_initiated(RebalanceDirection.BASE_TO_ALPACA, "100"), now=at(8))
    append(
        "u-1",
        ev.Bridged(mint_tx_hash="0x" + "99" * 32, minted_at=at(9), amount_received=D("99.5")),
        now=at(9),
    )
    append("NVDA", onchain_fill("Sell", "1", "10", log_index=3), now=at(10))  # never observed


def test_rebuild_reproduces_the_incremental_projection_exactly(capsys):
    history()
    before = rows()
    assert {r[0] for r in before} == {"AAPL", "MSFT", "NVDA", USDC_POOL}
    call_command("rebuild_inventory", "--check")
    assert "match" in capsys.readouterr().out
    call_command("rebuild_inventory")
    assert rows() == before


def test_check_reports_each_difference_and_exits_1_without_writing(capsys):
    history()
    InventoryPool.objects.filter(key="AAPL").update(onchain_available=D(1), onchain_inflight=D(2))
    tampered = rows()
    with pytest.raises(CommandError) as error:
        call_command("rebuild_inventory", "--check", "--no-progress")
    assert error.value.returncode == 1
    out = capsys.readouterr().out
    assert "AAPL\tonchain_available\tstored=1\trebuilt=132" in out
    assert "AAPL\tonchain_inflight\tstored=2\trebuilt=0" in out
    assert rows() == tampered


def test_rebuild_writes_the_rebuilt_rows_then_check_passes(capsys):
    history()
    before = rows()
    InventoryPool.objects.filter(key="USDC").update(
        offchain_available=D(0), needs_reconciliation=True, reconciliation_reason="x"
    )
    InventoryPool.objects.filter(key="MSFT").delete()
    call_command("rebuild_inventory")
    assert {r[0]: r[1:] for r in rows()} == {r[0]: r[1:] for r in before}
    call_command("rebuild_inventory", "--check")


def test_rebuild_shows_progress_on_stderr(capsys):
    history()
    call_command("rebuild_inventory", "--check")
    assert "event" in capsys.readouterr().err


def test_rebuild_of_an_empty_log_resets_stray_rows():
    InventoryPool.objects.create(key="AAPL", kind="equity", onchain_available=D(5))
    call_command("rebuild_inventory")
    row = InventoryPool.objects.get(key="AAPL")
    assert row.onchain_available == 0
    assert not row.onchain_observed

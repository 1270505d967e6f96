"""The persisted projection through the real store: events_append -> projection_apply."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from inventory.domain import events as ev
from inventory.domain.inventory import TooMuchOffchain, TooMuchOnchain
from inventory.domain.values import USDC_POOL, RebalanceDirection
from inventory.models import Event, InventoryPool, PoolKind
from inventory.selectors import pool_imbalance
from inventory.store import events_appended
from tests.inventory.projection_helpers import (
    T0,
    append,
    at,
    mint_accepted,
    mint_requested,
    offchain_fill,
    onchain_fill,
    pool_read,
    reconciled,
    snapshot,
    tokens_received,
    tokens_sent,
    transfer_signed,
    usdc_initiated,
    vault_deposit_submitted,
    vault_withdraw_signed,
)

pytestmark = pytest.mark.django_db

D = Decimal


def pool(key: str) -> InventoryPool:
    """The pool as readers see it (USDC with its pending fill deltas applied)."""
    return pool_read(key)


def amounts(key: str) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    row = pool(key)
    return (
        row.onchain_available,
        row.onchain_inflight,
        row.offchain_available,
        row.offchain_inflight,
    )


def seed(symbol: str = "AAPL", on: str = "100", off: str = "100", usdc: str = "1000") -> None:
    snapshot(
        onchain_equity={symbol: D(on)},
        offchain_equity={symbol: D(off)},
        onchain_cash=D(usdc),
        offchain_cash=D(usdc),
    )


def test_snapshot_creates_pools_and_marks_venues_observed():
    seed()
    aapl = pool("AAPL")
    assert aapl.kind == PoolKind.EQUITY
    assert (aapl.onchain_observed, aapl.offchain_observed) == (True, True)
    assert amounts("AAPL") == (D(100), 0, D(100), 0)
    assert pool(USDC_POOL).kind == PoolKind.USDC
    assert amounts(USDC_POOL) == (D(1000), 0, D(1000), 0)
    assert (
        aapl.last_event_id == Event.objects.filter(event_type__endswith="OffchainEquity").get().id
    )


def test_one_venue_snapshot_leaves_the_other_venue_unobserved():
    snapshot(onchain_equity={"TSLA": D(5)})
    row = pool("TSLA")
    assert (row.onchain_observed, row.offchain_observed) == (True, False)
    assert row.to_domain().offchain is None


def test_onchain_buy_fill_moves_symbol_and_usdc_pools():
    seed()
    append("AAPL", onchain_fill("Buy", "2.5", "180.10"))
    assert amounts("AAPL") == (D("102.5"), 0, D(100), 0)
    assert amounts(USDC_POOL) == (D("1000") - D("450.25"), 0, D(1000), 0)


def test_onchain_sell_fill_adds_usdc_and_removes_shares():
    seed()
    append("AAPL", onchain_fill("Sell", "10", "200"))
    assert amounts("AAPL") == (D(90), 0, D(100), 0)
    assert amounts(USDC_POOL) == (D(3000), 0, D(1000), 0)


@pytest.mark.parametrize(
    ("direction", "shares_after", "cash_after"),
    [("Buy", D(103), D("1000") - D("543.21")), ("Sell", D(97), D("1000") + D("543.21"))],
)
def test_offchain_fill_moves_shares_and_offchain_cash(direction, shares_after, cash_after):
    seed()
    append("AAPL", offchain_fill(direction, "3", 18107))
    assert amounts("AAPL")[2] == shares_after
    assert amounts(USDC_POOL) == (D(1000), 0, cash_after, 0)


def test_fill_updates_only_its_symbol():
    seed("AAPL")
    seed("MSFT", on="7", off="8")
    append("AAPL", onchain_fill("Buy", "1", "1"))
    assert amounts("MSFT") == (D(7), 0, D(8), 0)


def test_mint_in_separate_batches_uses_genesis_from_stored_events():
    """B3: MintAccepted and TokensReceived arrive without MintRequested in their batch."""
    seed(on="100", off="100")
    append("m-1", mint_requested("AAPL", "30"))
    # Issue 8: the intent holds the shares inflight (MintAccepted used to move them).
    assert amounts("AAPL") == (D(100), 0, D(70), D(30))
    append("m-1", mint_accepted())
    assert amounts("AAPL") == (D(100), 0, D(70), D(30))
    append("m-1", tokens_received())
    # In our wallet, not yet in the vault: still inflight (spec 15.1).
    assert amounts("AAPL") == (D(100), 0, D(70), D(30))
    append("m-1", vault_deposit_submitted())
    assert amounts("AAPL") == (D(100), 0, D(70), D(30))
    append("m-1", ev.DepositedIntoVault(deposited_at=at(5)), now=at(6))
    assert amounts("AAPL") == (D(130), 0, D(70), 0)
    row = pool("AAPL")
    assert row.last_rebalancing == at(5)
    assert row.updated_at == at(6)
    assert not row.needs_reconciliation


def test_trigger_era_mint_ending_in_the_wallet_settles_at_mint_completed():
    seed(on="100", off="100")
    append("m-1", mint_requested("AAPL", "30"), mint_accepted(), tokens_received())
    append("m-1", ev.MintCompleted(completed_at=at(5)))
    assert amounts("AAPL") == (D(130), 0, D(70), 0)
    assert pool("AAPL").last_rebalancing == at(5)


def test_failed_vault_deposit_keeps_inflight_and_reconcile_zeroes_it_without_credit():
    seed()
    append("m-1", mint_requested("AAPL", "30"), mint_accepted(), tokens_received())
    append("m-1", vault_deposit_submitted())
    append("m-1", ev.VaultDepositFailed(reason="reverted", failed_at=T0))
    assert amounts("AAPL") == (D(100), 0, D(70), D(30))
    append("m-1", reconciled(ev.MintReconciled))
    assert amounts("AAPL") == (D(100), 0, D(70), 0)


def test_mint_genesis_and_acceptance_in_one_batch():
    seed()
    append("m-1", mint_requested("AAPL", "30"), mint_accepted())
    assert amounts("AAPL") == (D(100), 0, D(70), D(30))


def test_mint_acceptance_failure_returns_shares_to_offchain_available():
    seed()
    append("m-1", mint_requested("AAPL", "30"))
    append("m-1", mint_accepted())
    append("m-1", ev.MintAcceptanceFailed(reason="rejected", failed_at=T0))
    assert amounts("AAPL") == (D(100), 0, D(100), 0)


def test_mint_timeout_keeps_inflight_and_reconcile_zeroes_it_without_credit():
    seed()
    append("m-1", mint_requested("AAPL", "30"))
    append("m-1", mint_accepted())
    append("m-1", ev.MintTimedOut(reason="no tokens", failed_at=T0))
    assert amounts("AAPL") == (D(100), 0, D(70), D(30))
    append("m-1", reconciled(ev.MintReconciled))
    assert amounts("AAPL") == (D(100), 0, D(70), 0)


def test_redemption_lifecycle_from_transfer_signed_genesis():
    seed()
    append("r-1", transfer_signed("AAPL", "30"))
    # Issue 8: the stored signed transfer holds the tokens inflight before the broadcast.
    assert amounts("AAPL") == (D(70), D(30), D(100), 0)
    append("r-1", tokens_sent("AAPL", "30"))
    assert amounts("AAPL") == (D(70), D(30), D(100), 0)
    append("r-1", ev.Detected(tokenization_request_id="t-9", detected_at=T0))
    assert amounts("AAPL") == (D(70), D(30), D(100), 0)
    append("r-1", ev.Completed(completed_at=at(7)))
    assert amounts("AAPL") == (D(70), 0, D(130), 0)
    assert pool("AAPL").last_rebalancing == at(7)


def test_redemption_through_the_vault_is_inflight_from_the_withdrawal_until_completed():
    """Onchain inventory is the vault: the amount leaves onchain available when the vault
    withdrawal is recorded (before it is broadcast) and reaches offchain at completion."""
    seed()
    append("r-1", vault_withdraw_signed("AAPL", "30"))
    assert amounts("AAPL") == (D(70), D(30), D(100), 0)
    append("r-1", ev.WithdrawnFromVault(amount_units=30 * 10**18, withdrawn_at=T0))
    append("r-1", transfer_signed("AAPL", "30"))
    append("r-1", tokens_sent("AAPL", "30"))  # already inflight: not moved twice
    append("r-1", ev.Detected(tokenization_request_id="t-9", detected_at=T0))
    assert amounts("AAPL") == (D(70), D(30), D(100), 0)
    append("r-1", ev.Completed(completed_at=at(7)))
    assert amounts("AAPL") == (D(70), 0, D(130), 0)


def test_failed_vault_withdrawal_returns_the_amount_to_onchain_available():
    seed()
    append("r-1", vault_withdraw_signed("AAPL", "30"))
    append("r-1", ev.VaultWithdrawFailed(reason="reverted", failed_at=T0))
    assert amounts("AAPL") == (D(100), 0, D(100), 0)


def test_failed_transfer_after_the_vault_withdrawal_keeps_inflight_until_reconciled():
    seed()
    append("r-1", vault_withdraw_signed("AAPL", "30"))
    append("r-1", ev.WithdrawnFromVault(amount_units=30 * 10**18, withdrawn_at=T0))
    append("r-1", transfer_signed("AAPL", "30"))
    append("r-1", ev.TransferFailed(reason="reverted", failed_at=T0))
    assert amounts("AAPL") == (D(70), D(30), D(100), 0)
    append("r-1", reconciled(ev.RedemptionReconciled))
    assert amounts("AAPL") == (D(70), 0, D(100), 0)


def test_redemption_transfer_failed_returns_the_tokens_to_available():
    seed()
    append("r-1", transfer_signed("AAPL", "30"))
    append("r-1", ev.TransferFailed(reason="reverted", failed_at=T0))
    assert amounts("AAPL") == (D(100), 0, D(100), 0)


def test_redemption_rejection_keeps_inflight_until_reconciled():
    seed()
    append("r-1", tokens_sent("AAPL", "30"))
    append("r-1", ev.Detected(tokenization_request_id="t-9", detected_at=T0))
    append("r-1", ev.RedemptionRejected(reason="no", rejected_at=T0))
    assert amounts("AAPL") == (D(70), D(30), D(100), 0)
    append("r-1", reconciled(ev.RedemptionReconciled))
    assert amounts("AAPL") == (D(70), 0, D(100), 0)


def test_usdc_alpaca_to_base_credits_the_received_amount_after_fees():
    seed(usdc="1000")
    append(
        "u-1",
        ev.Requested(direction=RebalanceDirection.ALPACA_TO_BASE, amount=D(200), requested_at=T0),
    )
    # Issue 8: the request (intent, before the withdrawal) holds the amount inflight.
    assert amounts(USDC_POOL) == (D(1000), 0, D(800), D(200))
    append("u-1", usdc_initiated(RebalanceDirection.ALPACA_TO_BASE, "200"))
    assert amounts(USDC_POOL) == (D(1000), 0, D(800), D(200))
    append("u-1", ev.WithdrawalConfirmed(confirmed_at=T0))
    append(
        "u-1", ev.BridgingInitiated(burn_tx_hash="0x" + "34" * 32, cctp_nonce="0x01", burned_at=T0)
    )
    append("u-1", ev.BridgeAttestationReceived(attestation=b"\x01", attested_at=T0))
    append(
        "u-1",
        ev.Bridged(
            mint_tx_hash="0x" + "56" * 32, minted_at=T0, amount_received=D("199.98"), fee=D("0.02")
        ),
    )
    # Issue 8: held inflight until the vault deposit is confirmed (Bridged used to settle).
    assert amounts(USDC_POOL) == (D(1000), 0, D(800), D(200))
    append("u-1", ev.DepositConfirmed(deposit_confirmed_at=at(30)))
    assert amounts(USDC_POOL) == (D("1199.98"), 0, D(800), 0)
    assert pool(USDC_POOL).last_rebalancing == at(30)


def test_usdc_base_to_alpaca_without_received_amount_credits_full_amount():
    seed(usdc="1000")
    append("u-2", usdc_initiated(RebalanceDirection.BASE_TO_ALPACA, "200"))
    assert amounts(USDC_POOL) == (D(800), D(200), D(1000), 0)
    append("u-2", ev.Bridged(mint_tx_hash="0x" + "56" * 32, minted_at=T0))
    assert amounts(USDC_POOL) == (D(800), D(200), D(1000), 0)  # until Alpaca credits it
    append("u-2", ev.DepositConfirmed(deposit_confirmed_at=T0))
    assert amounts(USDC_POOL) == (D(800), 0, D(1200), 0)


@pytest.mark.parametrize(
    "failure",
    [
        ev.WithdrawalFailed(reason="x", failed_at=T0),
        ev.BridgingFailed(burn_tx_hash=None, cctp_nonce=None, reason="x", failed_at=T0),
        ev.DepositFailed(deposit_ref=None, reason="x", failed_at=T0),
    ],
)
def test_usdc_failure_events_keep_inflight(failure):
    seed(usdc="1000")
    append("u-1", usdc_initiated(RebalanceDirection.ALPACA_TO_BASE, "200"))
    append("u-1", failure)
    assert amounts(USDC_POOL) == (D(1000), 0, D(800), D(200))
    append("u-1", reconciled(ev.UsdcReconciled))
    assert amounts(USDC_POOL) == (D(1000), 0, D(800), 0)


def test_snapshot_does_not_overwrite_a_pool_with_inflight():
    seed()
    append("m-1", mint_requested("AAPL", "30"), mint_accepted())
    snapshot(onchain_equity={"AAPL": D(999)}, offchain_equity={"AAPL": D(1)}, fetched_at=at(1))
    assert amounts("AAPL") == (D(100), 0, D(70), D(30))
    assert Event.objects.filter(event_type__endswith="OnchainEquity").count() == 2


def test_snapshot_sets_available_when_nothing_is_inflight():
    seed()
    snapshot(onchain_equity={"AAPL": D("12.5")}, fetched_at=at(1))
    assert amounts("AAPL") == (D("12.5"), 0, D(100), 0)
    assert pool("AAPL").updated_at == at(1)


def test_unapplicable_fill_is_recorded_and_flags_the_pool_with_values_unchanged():
    seed(on="5")
    stored = append("AAPL", onchain_fill("Sell", "10", "1"))
    assert Event.objects.filter(id=stored[0].id).exists()
    row = pool("AAPL")
    assert row.needs_reconciliation
    assert "insufficient available" in row.reconciliation_reason
    assert amounts("AAPL") == (D(5), 0, D(100), 0)
    # The USDC leg was applicable and moved.
    assert amounts(USDC_POOL)[0] == D(1010)
    assert not pool(USDC_POOL).needs_reconciliation


def test_snapshot_clears_the_reconciliation_flag():
    seed(on="5")
    append("AAPL", onchain_fill("Sell", "10", "1"))
    snapshot(onchain_equity={"AAPL": D(0)}, fetched_at=at(3))
    row = pool("AAPL")
    assert not row.needs_reconciliation
    assert row.reconciliation_reason == ""
    assert amounts("AAPL") == (D(0), 0, D(100), 0)


def test_fill_for_unknown_symbol_creates_a_flagged_pool_row():
    seed()
    append("NVDA", onchain_fill("Buy", "1", "100"))
    row = pool("NVDA")
    assert row.kind == PoolKind.EQUITY
    assert row.needs_reconciliation
    assert "never observed" in row.reconciliation_reason
    assert (row.onchain_observed, row.offchain_observed) == (False, False)


def test_projection_reports_touched_pools_to_the_signal():
    seed()
    seen: list[set[str]] = []

    def receiver(sender, events, pools, **kwargs):
        seen.append(pools)

    events_appended.connect(receiver, dispatch_uid="test-projection-pools")
    try:
        append("AAPL", onchain_fill("Buy", "1", "1"))
        append("m-1", mint_requested("AAPL", "3"))
        append(
            "global",
            ev.SettingChanged(
                scope="global",
                setting="paused",
                old_value="false",
                new_value="true",
                changed_by="ops",
                changed_at=T0,
            ),
        )
    finally:
        events_appended.disconnect(dispatch_uid="test-projection-pools")
    assert seen == [{"AAPL", USDC_POOL}, {"AAPL"}, set()]


def test_last_event_id_is_the_last_event_that_touched_the_pool():
    seed()
    stored = append("AAPL", onchain_fill("Buy", "1", "1"))
    assert pool("AAPL").last_event_id == stored[0].id
    assert pool(USDC_POOL).last_event_id == stored[0].id


def test_rows_are_locked_once_in_key_order():
    seed("AAPL")
    with CaptureQueriesContext(connection) as queries:
        append("AAPL", onchain_fill("Buy", "1", "1"))
    reads = [q["sql"] for q in queries if 'FROM "inventory_inventorypool"' in q["sql"]]
    locking = [sql for sql in reads if 'ORDER BY "inventory_inventorypool"."key" ASC' in sql]
    if connection.vendor == "postgresql":
        # The symbol's row locked; the USDC row read without a lock, after the USDC gate
        # (shared): the fill's USDC change is a pending delta (`inventory.usdc_deltas`).
        assert len(locking) == 2
        assert "FOR UPDATE" in locking[0] and "'AAPL'" in locking[0]
        assert "FOR UPDATE" not in locking[1] and "'USDC'" in locking[1]
        gate = [q["sql"] for q in queries if "pg_advisory_xact_lock_shared" in q["sql"]]
        assert len(gate) == 1
    else:
        assert len(locking) == 1  # SQLite: no row locks, one read of both rows
    updates = [q["sql"] for q in queries if q["sql"].startswith('UPDATE "inventory_inventorypool"')]
    assert len(updates) == 1  # AAPL, with only its changed fields; USDC is not written
    assert "offchain_available" not in updates[0]
    deltas = [q["sql"] for q in queries if q["sql"].startswith('INSERT INTO "inventory_usdcf')]
    assert len(deltas) == 1


# --- view-level checks (spec 13 check_equity_imbalance_* / check_usdc_imbalance_*) -----------


def test_check_equity_imbalance_balanced():
    seed(on="55", off="50")
    assert pool_imbalance(key="AAPL") is None


def test_check_equity_imbalance_too_much_onchain():
    seed(on="80", off="20")
    assert pool_imbalance(key="AAPL") == TooMuchOnchain(D(30))


def test_check_equity_imbalance_too_much_offchain():
    seed(on="20", off="80")
    assert pool_imbalance(key="AAPL") == TooMuchOffchain(D(30))


def test_check_equity_imbalance_unknown_symbol_returns_none():
    seed()
    assert pool_imbalance(key="NVDA") is None


def test_check_equity_imbalance_with_inflight_returns_none():
    seed(on="20", off="80")
    append("m-1", mint_requested("AAPL", "5"), mint_accepted())
    assert pool_imbalance(key="AAPL") is None


@pytest.mark.parametrize(
    ("on", "off", "expected"),
    [
        ("500", "500", None),
        ("900", "100", TooMuchOnchain(D(400))),  # USDC default band 0.5 +- 0.3
        ("100", "900", TooMuchOffchain(D(400))),
        ("800", "200", None),  # exactly on the upper edge
    ],
    ids=["balanced", "too-much-onchain", "too-much-offchain", "upper-edge"],
)
def test_check_usdc_imbalance(on, off, expected):
    seed(usdc="0")
    snapshot(onchain_cash=D(on), offchain_cash=D(off), fetched_at=at(1))
    assert pool_imbalance(key=USDC_POOL) == expected

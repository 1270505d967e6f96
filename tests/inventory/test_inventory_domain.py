"""Pure inventory maths (spec 3 and the section-13 VenueBalance / view checklist). No database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from inventory.domain import events as ev
from inventory.domain.inventory import (
    ImbalanceThreshold,
    InsufficientAvailable,
    InsufficientInflight,
    InvalidAmount,
    InventoryFold,
    OperationTrack,
    PoolInventory,
    TooMuchOffchain,
    TooMuchOnchain,
    VenueBalance,
    VenueNotObserved,
    apply_event,
    apply_event_or_flag,
    detect_imbalance,
    genesis_from_event,
    ratio,
    track_fold,
)
from inventory.domain.values import (
    USDC_POOL,
    InvalidValue,
    RebalanceDirection,
    TransferRef,
    TransferRefKind,
)

D = Decimal
NOW = datetime(2026, 1, 5, 15, 0, tzinfo=UTC)
LATER = NOW + timedelta(hours=1)
WALLET = "0x" + "ab" * 20
HASH = "0x" + "12" * 32
TH = ImbalanceThreshold(D("0.5"), D("0.2"))
USDC_TH = ImbalanceThreshold(D("0.5"), D("0.3"))


def vb(available: str | int, inflight: str | int = 0) -> VenueBalance:
    return VenueBalance(D(available), D(inflight))


def inv(on: int | str, off: int | str, on_inflight=0, off_inflight=0) -> PoolInventory:
    return PoolInventory(onchain=vb(on, on_inflight), offchain=vb(off, off_inflight))


def amounts(pool: PoolInventory) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    return (
        pool.onchain.available,
        pool.onchain.inflight,
        pool.offchain.available,
        pool.offchain.inflight,
    )


# --- VenueBalance ------------------------------------------------------------------------------


def test_total_sums_available_and_inflight():
    assert vb(100, 50).total() == 150


def test_has_inflight_true_when_nonzero():
    assert vb(0, 1).has_inflight()


def test_has_inflight_false_when_zero():
    assert not vb(100, 0).has_inflight()


def test_move_to_inflight_transfers_from_available():
    assert vb(100).move_to_inflight(D(30)) == vb(70, 30)


def test_move_to_inflight_fails_when_insufficient():
    with pytest.raises(InsufficientAvailable) as error:
        vb(10).move_to_inflight(D(30))
    assert (error.value.requested, error.value.available) == (30, 10)


def test_confirm_inflight_removes_from_inflight():
    assert vb(100, 50).confirm_inflight(D(30)) == vb(100, 20)


def test_confirm_inflight_fails_when_insufficient():
    with pytest.raises(InsufficientInflight) as error:
        vb(100, 10).confirm_inflight(D(30))
    assert (error.value.requested, error.value.inflight) == (30, 10)


def test_cancel_inflight_returns_to_available():
    assert vb(100, 50).cancel_inflight(D(30)) == vb(130, 20)


def test_cancel_inflight_fails_when_insufficient():
    with pytest.raises(InsufficientInflight):
        vb(100, 10).cancel_inflight(D(30))


def test_add_available_increases_available():
    assert vb(100, 5).add_available(D("0.5")) == vb("100.5", 5)


def test_remove_available_decreases_available():
    assert vb(100, 5).remove_available(D(40)) == vb(60, 5)


def test_remove_available_fails_when_insufficient():
    with pytest.raises(InsufficientAvailable):
        vb(10).remove_available(D("10.000001"))


def test_usdc_balance_works_same_as_equity():
    usdc = vb("1000.123456").move_to_inflight(D("0.123456"))
    assert usdc == vb(1000, "0.123456")
    assert usdc.confirm_inflight(D("0.123456")).total() == 1000


def test_failed_operation_leaves_the_original_unchanged():
    original = vb(10)
    with pytest.raises(InsufficientAvailable):
        original.move_to_inflight(D(30))
    assert original == vb(10)


def test_negative_amount_is_refused():
    with pytest.raises(InvalidAmount):
        vb(10).add_available(D(-1))


def test_arithmetic_is_exact_for_wei_precision_shares():
    big = D("123456789.123456789012345678")
    assert vb(big).move_to_inflight(D("0.000000000000000001")) == vb(
        "123456789.123456789012345677", "0.000000000000000001"
    )


# --- ratio and has_inflight ---------------------------------------------------------------------


def test_ratio_returns_none_when_total_is_zero():
    assert ratio(inv(0, 0)) is None


def test_ratio_returns_half_for_equal_split():
    assert ratio(inv(50, 50)) == D("0.5")


def test_ratio_returns_one_when_all_onchain():
    assert ratio(inv(50, 0)) == 1


def test_ratio_returns_zero_when_all_offchain():
    assert ratio(inv(0, 50)) == 0


def test_ratio_includes_inflight_in_total():
    assert ratio(inv(25, 25, on_inflight=25, off_inflight=25)) == D("0.5")


def test_ratio_returns_none_when_a_venue_was_never_observed():
    assert ratio(PoolInventory(onchain=vb(10), offchain=None)) is None


@pytest.mark.parametrize(
    ("pool", "expected"),
    [
        (inv(10, 10), False),
        (inv(10, 10, on_inflight=1), True),
        (inv(10, 10, off_inflight=1), True),
        (inv(10, 10, on_inflight=1, off_inflight=1), True),
    ],
    ids=["none", "onchain", "offchain", "both"],
)
def test_has_inflight_for_each_venue(pool, expected):
    assert pool.has_inflight() is expected


# --- detect_imbalance (worked examples of 3.3) --------------------------------------------------


def test_detect_imbalance_returns_none_when_balanced():
    assert detect_imbalance(inv(50, 50), TH) is None


def test_detect_imbalance_returns_none_when_has_inflight():
    assert detect_imbalance(inv(80, 20, on_inflight=10), TH) is None


def test_detect_imbalance_returns_none_when_total_is_zero():
    assert detect_imbalance(inv(0, 0), TH) is None


def test_detect_imbalance_returns_too_much_onchain():
    assert detect_imbalance(inv(80, 20), TH) == TooMuchOnchain(D(30))


def test_detect_imbalance_returns_too_much_offchain():
    assert detect_imbalance(inv(20, 80), TH) == TooMuchOffchain(D(30))


def test_detect_imbalance_at_upper_boundary_is_balanced():
    assert detect_imbalance(inv(70, 30), TH) is None


def test_detect_imbalance_at_lower_boundary_is_balanced():
    assert detect_imbalance(inv(30, 70), TH) is None


def test_detect_imbalance_just_past_the_boundary_triggers():
    assert detect_imbalance(inv("70.0001", "29.9999"), TH) == TooMuchOnchain(D("20.0001"))


def test_detect_imbalance_returns_none_when_a_venue_was_never_observed():
    assert detect_imbalance(PoolInventory(onchain=vb(100), offchain=None), TH) is None


def test_usdc_imbalance_triggers_at_800_200_but_not_with_inflight():
    # The view tests use 0.5/0.2 for USDC too; with the 0.3 default 800/200 sits on the edge.
    assert detect_imbalance(inv(800, 200), TH) == TooMuchOnchain(D(300))
    assert detect_imbalance(inv(700, 200, on_inflight=100), TH) is None
    assert detect_imbalance(inv(800, 200), USDC_TH) is None


def test_detect_imbalance_excess_brings_onchain_back_to_target():
    th = ImbalanceThreshold(D("0.6"), D("0.1"))
    imbalance = detect_imbalance(inv(10, 90), th)
    assert imbalance == TooMuchOffchain(D(50))
    assert ratio(inv(10 + 50, 90 - 50)) == th.target


@pytest.mark.parametrize(
    ("target", "deviation", "field"),
    [("-0.1", "0.2", "target"), ("1.01", "0", "target"), ("0.5", "-0.01", "deviation")],
)
def test_threshold_validation_names_the_field(target, deviation, field):
    with pytest.raises(InvalidValue) as error:
        ImbalanceThreshold(D(target), D(deviation))
    assert error.value.field == field


def test_threshold_accepts_edges():
    ImbalanceThreshold(D(0), D(0))
    ImbalanceThreshold(D(1), D(5))


# --- applying position events ---------------------------------------------------------------


def onchain_fill(direction: str, amount: str, price: str = "10") -> ev.OnChainOrderFilled:
    return ev.OnChainOrderFilled(
        trade_id=ev.TradeId(HASH, 1),
        amount=D(amount),
        direction=ev.Direction(direction),
        price_usdc=D(price),
        block_timestamp=NOW,
        seen_at=LATER,
    )


def offchain_fill(direction: str, shares: str, cents: int = 1000) -> ev.OffChainOrderFilled:
    return ev.OffChainOrderFilled(
        execution_id=1,
        shares_filled=D(shares),
        direction=ev.Direction(direction),
        broker_order_id="o",
        price_cents=cents,
        broker_timestamp=LATER,
    )


def apply_to(pool: PoolInventory, event, key: str = "AAPL", track=None) -> PoolInventory:
    return apply_event(pool, event, track, NOW, pool_key=key)


def test_apply_onchain_buy_increases_onchain_available():
    assert amounts(apply_to(inv(10, 10), onchain_fill("Buy", "5"))) == (15, 0, 10, 0)


def test_apply_onchain_sell_decreases_onchain_available():
    assert amounts(apply_to(inv(10, 10), onchain_fill("Sell", "5"))) == (5, 0, 10, 0)


def test_apply_offchain_buy_increases_offchain_available():
    assert amounts(apply_to(inv(10, 10), offchain_fill("Buy", "5"))) == (10, 0, 15, 0)


def test_apply_offchain_sell_decreases_offchain_available():
    assert amounts(apply_to(inv(10, 10), offchain_fill("Sell", "5"))) == (10, 0, 5, 0)


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (onchain_fill("Buy", "2", "180.5"), (D("639"), 0, 1000, 0)),
        (onchain_fill("Sell", "2", "180.5"), (D("1361"), 0, 1000, 0)),
        (offchain_fill("Buy", "2", 18050), (1000, 0, D("639"), 0)),
        (offchain_fill("Sell", "2", 18050), (1000, 0, D("1361"), 0)),
    ],
    ids=["onchain-buy", "onchain-sell", "offchain-buy", "offchain-sell"],
)
def test_fills_move_usdc_inversely_to_shares(event, expected):
    assert amounts(apply_to(inv(1000, 1000), event, key=USDC_POOL)) == expected


def test_apply_position_event_tracks_symbols_independently():
    fold = InventoryFold(pools={"AAPL": inv(10, 10), "MSFT": inv(3, 3), USDC_POOL: inv(100, 100)})
    fold.apply(ev.POSITION, "AAPL", onchain_fill("Buy", "1", "1"), NOW)
    assert amounts(fold.pools["MSFT"]) == (3, 0, 3, 0)
    assert amounts(fold.pools["AAPL"]) == (11, 0, 10, 0)


def test_apply_position_event_unknown_symbol_returns_error():
    with pytest.raises(VenueNotObserved):
        apply_to(PoolInventory(), onchain_fill("Buy", "1"))


def test_apply_position_event_other_events_only_update_last_updated():
    event = ev.OffChainOrderFailed(execution_id=1, error="x", failed_at=LATER)
    pool = apply_to(inv(10, 10), event)
    assert amounts(pool) == (10, 0, 10, 0)
    assert pool.last_updated == LATER


def test_position_events_use_their_own_timestamp():
    assert apply_to(inv(10, 10), onchain_fill("Buy", "1")).last_updated == LATER


# --- mint ----------------------------------------------------------------------------------------

MINT_REQUESTED = ev.MintRequested(symbol="AAPL", quantity=D(30), wallet=WALLET, requested_at=NOW)
MINT_ACCEPTED = ev.MintAccepted(issuer_request_id="i", tokenization_request_id="t", accepted_at=NOW)
TOKENS_RECEIVED = ev.TokensReceived(tx_hash=HASH, receipt_id=0, shares_minted=0, received_at=NOW)
MINT_TRACK = OperationTrack(genesis_from_event(ev.MINT, MINT_REQUESTED))
MINT_HELD = OperationTrack(MINT_TRACK.genesis, held_inflight=D(30), moved=True)


def test_apply_mint_requested_moves_offchain_to_inflight_before_the_request_is_sent():
    # Changed with issue 8 ("inflight is recorded before money moves"): the intent holds the
    # shares inflight; it used to only update last_updated until MintAccepted.
    pool = apply_to(inv(100, 100), MINT_REQUESTED, track=MINT_TRACK)
    assert amounts(pool) == (100, 0, 70, 30)
    assert pool.last_updated == NOW
    assert pool.inflight_changed_at == NOW


def test_mint_accepted_after_the_intent_moves_nothing_again():
    assert amounts(run(inv(100, 100), ev.MINT, MINT_REQUESTED, MINT_ACCEPTED)) == (100, 0, 70, 30)


def test_apply_mint_accepted_moves_offchain_to_inflight():
    assert amounts(apply_to(inv(100, 100), MINT_ACCEPTED, track=MINT_TRACK)) == (100, 0, 70, 30)


def test_apply_tokens_received_keeps_inflight_until_they_are_in_the_vault():
    """Onchain inventory is the vault (spec 15.1): tokens in our wallet are still inflight."""
    pool = apply_to(inv(100, 70, off_inflight=30), TOKENS_RECEIVED, track=MINT_HELD)
    assert amounts(pool) == (100, 0, 70, 30)


def test_apply_deposited_into_vault_transfers_inflight_to_onchain():
    event = ev.DepositedIntoVault(deposited_at=LATER)
    pool = apply_to(inv(100, 70, off_inflight=30), event, track=MINT_HELD)
    assert amounts(pool) == (130, 0, 70, 0)
    assert pool.last_rebalancing == LATER


def test_apply_vault_deposit_failed_keeps_inflight():
    event = ev.VaultDepositFailed(reason="reverted", failed_at=NOW)
    pool = apply_to(inv(100, 70, off_inflight=30), event, track=MINT_HELD)
    assert amounts(pool) == (100, 0, 70, 30)


def test_apply_trigger_era_mint_completed_settles_what_the_mint_still_holds():
    pool = apply_to(
        inv(100, 70, off_inflight=30), ev.MintCompleted(completed_at=LATER), track=MINT_HELD
    )
    assert amounts(pool) == (130, 0, 70, 0)


def test_apply_mint_completed_updates_last_rebalancing():
    pool = apply_to(inv(130, 70), ev.MintCompleted(completed_at=LATER), track=MINT_TRACK)
    assert pool.last_rebalancing == LATER


def test_apply_mint_rejected_without_held_inflight_only_updates_last_updated():
    pool = apply_to(inv(100, 100), ev.MintRejected(reason="x", rejected_at=NOW), track=MINT_TRACK)
    assert amounts(pool) == (100, 0, 100, 0)


def test_mint_rejected_returns_the_intents_inflight_to_available():
    rejected = ev.MintRejected(reason="x", rejected_at=LATER)
    fold = InventoryFold(pools={"AAPL": inv(100, 100)})
    fold.apply(ev.MINT, "op-1", MINT_REQUESTED, NOW)
    fold.apply(ev.MINT, "op-1", rejected, LATER)
    assert amounts(fold.pools["AAPL"]) == (100, 0, 100, 0)
    assert fold.pools["AAPL"].inflight_changed_at == LATER
    assert fold.tracks[(ev.MINT, "op-1")].held_inflight == 0


def test_apply_mint_acceptance_failed_cancels_inflight_back_to_available():
    event = ev.MintAcceptanceFailed(reason="x", failed_at=NOW)
    assert amounts(apply_to(inv(100, 70, off_inflight=30), event, track=MINT_HELD)) == (
        100,
        0,
        100,
        0,
    )


def run(pool: PoolInventory, aggregate_type: str, *events) -> PoolInventory:
    fold = InventoryFold(pools={"AAPL": pool, USDC_POOL: pool})
    for event in events:
        fold.apply(aggregate_type, "op-1", event, NOW)
    key = USDC_POOL if aggregate_type == ev.USDC_REBALANCE else "AAPL"
    return fold.pools[key]


def test_mint_full_lifecycle_updates_inventory_correctly():
    pool = run(
        inv(100, 100),
        ev.MINT,
        MINT_REQUESTED,
        MINT_ACCEPTED,
        TOKENS_RECEIVED,
        ev.MintCompleted(completed_at=LATER),
    )
    assert amounts(pool) == (130, 0, 70, 0)
    assert pool.last_rebalancing == LATER


def test_mint_acceptance_failure_recovery_restores_available():
    pool = run(
        inv(100, 100),
        ev.MINT,
        MINT_REQUESTED,
        MINT_ACCEPTED,
        ev.MintAcceptanceFailed(reason="x", failed_at=NOW),
    )
    assert amounts(pool) == (100, 0, 100, 0)


def test_mint_token_receipt_failure_keeps_inflight():
    pool = run(
        inv(100, 100),
        ev.MINT,
        MINT_REQUESTED,
        MINT_ACCEPTED,
        ev.MintTimedOut(reason="no tokens", failed_at=NOW),
    )
    assert amounts(pool) == (100, 0, 70, 30)


def test_inflight_blocks_imbalance_detection_during_mint():
    assert detect_imbalance(inv(20, 50, on_inflight=0, off_inflight=30), TH) is None


def test_apply_mint_event_unknown_symbol_returns_error():
    with pytest.raises(VenueNotObserved):
        apply_to(PoolInventory(), MINT_ACCEPTED, track=MINT_TRACK)


def test_mint_reconciled_zeroes_inflight_without_crediting():
    reconciled = ev.MintReconciled(reason="r", operator="ops", reconciled_at=NOW)
    pool = run(inv(100, 100), ev.MINT, MINT_REQUESTED, MINT_ACCEPTED, reconciled)
    assert amounts(pool) == (100, 0, 70, 0)


def test_mint_reconciled_before_acceptance_zeroes_the_intents_inflight():
    # Changed with issue 8: the intent holds the shares inflight, so a reconciliation (which
    # the aggregate allows only after a time-out) settles them like any kept inflight.
    reconciled = ev.MintReconciled(reason="r", operator="ops", reconciled_at=NOW)
    assert amounts(run(inv(100, 100), ev.MINT, MINT_REQUESTED, reconciled)) == (100, 0, 70, 0)


# --- redemption ----------------------------------------------------------------------------------

TOKENS_SENT = ev.TokensSent(
    symbol="AAPL", quantity=D(30), redemption_wallet=WALLET, tx_hash=HASH, sent_at=NOW
)
DETECTED = ev.Detected(tokenization_request_id="t", detected_at=NOW)
REDEEM_TRACK = OperationTrack(genesis_from_event(ev.REDEMPTION, TOKENS_SENT))
REDEEM_HELD = OperationTrack(REDEEM_TRACK.genesis, held_inflight=D(30), moved=True)


def test_apply_tokens_sent_moves_onchain_to_inflight():
    assert amounts(apply_to(inv(100, 100), TOKENS_SENT, track=REDEEM_TRACK)) == (70, 30, 100, 0)


def test_apply_redemption_detected_only_updates_last_updated():
    pool = apply_to(inv(70, 100, on_inflight=30), DETECTED, track=REDEEM_HELD)
    assert amounts(pool) == (70, 30, 100, 0)


def test_apply_redemption_completed_transfers_inflight_to_offchain():
    event = ev.Completed(completed_at=LATER)
    pool = apply_to(inv(70, 100, on_inflight=30), event, track=REDEEM_HELD)
    assert amounts(pool) == (70, 0, 130, 0)
    assert pool.last_rebalancing == LATER


def test_apply_detection_failed_keeps_funds_inflight():
    event = ev.DetectionFailed(reason="x", failed_at=NOW)
    assert amounts(apply_to(inv(70, 100, 30), event, track=REDEEM_HELD)) == (70, 30, 100, 0)


def test_apply_redemption_rejected_keeps_funds_inflight():
    event = ev.RedemptionRejected(reason="x", rejected_at=NOW)
    assert amounts(apply_to(inv(70, 100, 30), event, track=REDEEM_HELD)) == (70, 30, 100, 0)


def test_redemption_full_lifecycle_updates_inventory_correctly():
    pool = run(
        inv(100, 100), ev.REDEMPTION, TOKENS_SENT, DETECTED, ev.Completed(completed_at=LATER)
    )
    assert amounts(pool) == (70, 0, 130, 0)
    assert pool.last_rebalancing == LATER


def test_redemption_rejection_keeps_inflight_and_blocks_rebalancing():
    pool = run(
        inv(100, 100),
        ev.REDEMPTION,
        TOKENS_SENT,
        DETECTED,
        ev.RedemptionRejected(reason="x", rejected_at=NOW),
    )
    assert amounts(pool) == (70, 30, 100, 0)
    # 70 onchain of 200 would be balanced anyway; make it lopsided to prove the block.
    assert detect_imbalance(pool, ImbalanceThreshold(D("0.9"), D("0.01"))) is None


def test_inflight_blocks_imbalance_detection_during_redemption():
    assert detect_imbalance(inv(90, 10, on_inflight=30), TH) is None


def test_apply_redemption_event_unknown_symbol_returns_error():
    with pytest.raises(VenueNotObserved):
        apply_to(PoolInventory(), TOKENS_SENT, track=REDEEM_TRACK)


def test_transfer_signed_is_a_genesis_that_moves_the_tokens_inflight_once():
    # Changed with issue 8: the stored signed transfer (the intent) holds the tokens inflight
    # before the broadcast; TokensSent used to move them.
    signed = ev.TransferSigned(
        symbol="AAPL",
        quantity=D(30),
        token=WALLET,
        redemption_wallet=WALLET,
        raw_tx=b"\x01",
        tx_hash=HASH,
        signed_at=NOW,
    )
    pool = run(inv(100, 100), ev.REDEMPTION, signed)
    assert amounts(pool) == (70, 30, 100, 0)
    pool = run(inv(100, 100), ev.REDEMPTION, signed, TOKENS_SENT)
    assert amounts(pool) == (70, 30, 100, 0)
    failed = ev.TransferFailed(reason="x", failed_at=NOW)
    assert amounts(run(inv(100, 100), ev.REDEMPTION, signed, failed)) == (100, 0, 100, 0)


# --- USDC ----------------------------------------------------------------------------------------


def initiated(direction: RebalanceDirection, amount: int) -> ev.Initiated:
    return ev.Initiated(
        direction=direction,
        amount=D(amount),
        withdrawal_ref=TransferRef(TransferRefKind.ALPACA_ID, "w"),
        initiated_at=NOW,
    )


A2B = initiated(RebalanceDirection.ALPACA_TO_BASE, 100)
B2A = initiated(RebalanceDirection.BASE_TO_ALPACA, 100)
BRIDGED = ev.Bridged(mint_tx_hash=HASH, minted_at=NOW)


def usdc_track(genesis_event, held=0) -> OperationTrack:
    return OperationTrack(
        genesis_from_event(ev.USDC_REBALANCE, genesis_event), D(held), moved=held != 0
    )


def test_apply_usdc_initiated_alpaca_to_base_moves_offchain_to_inflight():
    pool = apply_to(inv(1000, 1000), A2B, USDC_POOL, usdc_track(A2B))
    assert amounts(pool) == (1000, 0, 900, 100)


def test_apply_usdc_initiated_base_to_alpaca_moves_onchain_to_inflight():
    pool = apply_to(inv(1000, 1000), B2A, USDC_POOL, usdc_track(B2A))
    assert amounts(pool) == (900, 100, 1000, 0)


# Changed with issue 8: a USDC move settles when its deposit is confirmed (the money is in the
# vault or credited by Alpaca), no longer when the bridge mints (Bridged used to settle it, so a
# destination snapshot between the mint and the deposit missed the amount).
DEPOSITED = ev.DepositConfirmed(deposit_confirmed_at=NOW)


def test_apply_usdc_bridged_keeps_the_amount_inflight_until_the_deposit():
    pool = apply_to(inv(1000, 900, 0, 100), BRIDGED, USDC_POOL, usdc_track(A2B, 100))
    assert amounts(pool) == (1000, 0, 900, 100)


def test_apply_usdc_deposit_confirmed_alpaca_to_base_transfers_to_onchain():
    pool = apply_to(inv(1000, 900, 0, 100), DEPOSITED, USDC_POOL, usdc_track(A2B, 100))
    assert amounts(pool) == (1100, 0, 900, 0)


def test_apply_usdc_deposit_confirmed_base_to_alpaca_transfers_to_offchain():
    pool = apply_to(inv(900, 1000, 100, 0), DEPOSITED, USDC_POOL, usdc_track(B2A, 100))
    assert amounts(pool) == (900, 0, 1100, 0)


def test_usdc_deposit_credits_the_bridged_amount_received_and_settles_the_full_amount():
    bridged = ev.Bridged(mint_tx_hash=HASH, minted_at=NOW, amount_received=D("99.9"), fee=D("0.1"))
    track = track_fold(ev.USDC_REBALANCE, [A2B, bridged])
    pool = apply_to(inv(1000, 900, 0, 100), DEPOSITED, USDC_POOL, track)
    assert amounts(pool) == (D("1099.9"), 0, 900, 0)


def test_usdc_deposit_credits_the_deposited_amount_when_reported():
    bridged = ev.Bridged(mint_tx_hash=HASH, minted_at=NOW, amount_received=D("99.9"), fee=D("0.1"))
    deposited = ev.DepositConfirmed(deposit_confirmed_at=NOW, amount_deposited=D("99.8"))
    track = track_fold(ev.USDC_REBALANCE, [A2B, bridged])
    pool = apply_to(inv(1000, 900, 0, 100), deposited, USDC_POOL, track)
    assert amounts(pool) == (D("1099.8"), 0, 900, 0)


def test_apply_usdc_deposit_confirmed_updates_last_rebalancing():
    event = ev.DepositConfirmed(deposit_confirmed_at=LATER)
    pool = apply_to(inv(1000, 1000), event, USDC_POOL, usdc_track(A2B))
    assert pool.last_rebalancing == LATER


def usdc_steps(direction_event, amount: int = 200) -> list:
    return [
        initiated(direction_event, amount),
        ev.WithdrawalConfirmed(confirmed_at=NOW),
        ev.BridgingInitiated(burn_tx_hash=HASH, cctp_nonce="0x01", burned_at=NOW),
        ev.BridgeAttestationReceived(attestation=b"\x01", attested_at=NOW),
        BRIDGED,
        ev.DepositInitiated(
            deposit_ref=TransferRef(TransferRefKind.ONCHAIN_TX, HASH),
            deposit_initiated_at=NOW,
        ),
        ev.DepositConfirmed(deposit_confirmed_at=LATER),
    ]


def test_usdc_alpaca_to_base_full_lifecycle():
    pool = run(inv(1000, 1000), ev.USDC_REBALANCE, *usdc_steps(RebalanceDirection.ALPACA_TO_BASE))
    assert amounts(pool) == (1200, 0, 800, 0)
    assert pool.last_rebalancing == LATER


def test_usdc_base_to_alpaca_full_lifecycle():
    pool = run(inv(1000, 1000), ev.USDC_REBALANCE, *usdc_steps(RebalanceDirection.BASE_TO_ALPACA))
    assert amounts(pool) == (800, 0, 1200, 0)


@pytest.mark.parametrize(
    "failure",
    [
        ev.WithdrawalFailed(reason="x", failed_at=NOW),
        ev.BridgingFailed(burn_tx_hash=None, cctp_nonce=None, reason="x", failed_at=NOW),
        ev.DepositFailed(deposit_ref=None, reason="x", failed_at=NOW),
    ],
)
def test_usdc_failure_events_keep_inflight(failure):
    pool = run(inv(1000, 1000), ev.USDC_REBALANCE, A2B, failure)
    assert amounts(pool) == (1000, 0, 900, 100)


def test_usdc_inflight_blocks_imbalance_detection():
    pool = run(inv(800, 200), ev.USDC_REBALANCE, B2A)
    assert detect_imbalance(pool, USDC_TH) is None


def test_usdc_requested_genesis_then_initiated_moves_once():
    # Changed with issue 8: Requested (the intent, before the withdrawal) holds the amount
    # inflight; Initiated used to move it.
    requested = ev.Requested(
        direction=RebalanceDirection.ALPACA_TO_BASE, amount=D(100), requested_at=NOW
    )
    pool = run(inv(1000, 1000), ev.USDC_REBALANCE, requested)
    assert amounts(pool) == (1000, 0, 900, 100)
    failed = ev.RequestFailed(reason="x", failed_at=NOW)
    assert amounts(run(inv(1000, 1000), ev.USDC_REBALANCE, requested, failed)) == (
        1000,
        0,
        1000,
        0,
    )
    pool = run(inv(1000, 1000), ev.USDC_REBALANCE, requested, A2B)
    assert amounts(pool) == (1000, 0, 900, 100)


def conversion(usd: str, usdc: str, *, partial: bool) -> ev.ConversionConfirmed:
    return ev.ConversionConfirmed(
        order_id="o",
        filled_qty=D(usdc),
        filled_avg_price=D(1),
        usdc_amount=D(usdc),
        usd_amount=D(usd),
        cost=D(usd) - D(usdc),
        confirmed_at=NOW,
        partial=partial,
    )


def test_a_partial_usdc_buy_returns_the_unspent_usd_to_alpaca_and_settles_what_it_spent():
    """Issue 20: an Alpaca-to-Base move holds the requested USD inflight; a buy Alpaca fills
    only in part spent less, and the rest never left Alpaca: available there again at once."""
    requested = ev.Requested(
        direction=RebalanceDirection.ALPACA_TO_BASE, amount=D(100), requested_at=NOW
    )
    bought = conversion("40", "40", partial=True)
    pool = run(inv(1000, 1000), ev.USDC_REBALANCE, requested, bought)
    assert amounts(pool) == (1000, 0, 960, 40)
    deposited = ev.DepositConfirmed(deposit_confirmed_at=LATER, amount_deposited=D("39.9"))
    withdrawn = initiated(RebalanceDirection.ALPACA_TO_BASE, 40)
    pool = run(inv(1000, 1000), ev.USDC_REBALANCE, requested, bought, withdrawn, deposited)
    assert amounts(pool) == (D("1039.9"), 0, 960, 0)
    # A full fill spends what was held: nothing returns.
    full = conversion("100", "99.9", partial=False)
    assert amounts(run(inv(1000, 1000), ev.USDC_REBALANCE, requested, full)) == (1000, 0, 900, 100)


def test_a_base_to_alpaca_sale_leaves_the_inflight_to_the_deposit():
    requested = ev.Requested(
        direction=RebalanceDirection.BASE_TO_ALPACA, amount=D(100), requested_at=NOW
    )
    sold = conversion("39.9", "40", partial=True)
    assert amounts(run(inv(1000, 1000), ev.USDC_REBALANCE, requested, sold)) == (900, 100, 1000, 0)


@pytest.mark.parametrize(
    "event",
    [
        ev.RequestFailed(reason="x", failed_at=NOW),
        ev.TransactionSigned(
            purpose=ev.TxPurpose.BURN, chain_id=1, raw_tx=b"\x01", tx_hash=HASH, signed_at=NOW
        ),
    ],
)
def test_usdc_request_and_signature_events_only_update_last_updated(event):
    pool = apply_to(inv(10, 10), event, USDC_POOL, usdc_track(A2B))
    assert amounts(pool) == (10, 0, 10, 0)
    assert pool.last_updated == NOW


# --- genesis ---------------------------------------------------------------------------------


def test_extract_mint_info_returns_symbol_and_quantity():
    genesis = genesis_from_event(
        ev.MINT,
        ev.MintRequested(symbol="AAPL", quantity=D("42.5"), wallet=WALLET, requested_at=NOW),
    )
    assert (genesis.pool_key, genesis.amount) == ("AAPL", D("42.5"))
    assert genesis.direction is RebalanceDirection.ALPACA_TO_BASE


def test_extract_mint_info_fails_without_mint_requested():
    assert track_fold(ev.MINT, []) is None
    with pytest.raises(Exception, match="no genesis"):
        genesis_from_event(ev.MINT, MINT_ACCEPTED)


def test_operation_without_genesis_moves_nothing():
    fold = InventoryFold(pools={"AAPL": inv(100, 100)})
    assert fold.apply(ev.MINT, "orphan", MINT_ACCEPTED, NOW) == ()
    assert amounts(fold.pools["AAPL"]) == (100, 0, 100, 0)


# --- snapshots (B1) ------------------------------------------------------------------------------


def test_snapshot_observes_a_never_observed_venue():
    snap = ev.OnchainEquity(balances={"AAPL": D(5)}, fetched_at=LATER)
    pool = apply_to(PoolInventory(), snap)
    assert pool.onchain == vb(5)
    assert pool.offchain is None
    assert pool.last_updated == LATER


def test_snapshot_with_inflight_is_recorded_but_does_not_overwrite():
    snap = ev.OffchainEquity(positions={"AAPL": D(1)}, fetched_at=NOW)
    assert amounts(apply_to(inv(100, 70, off_inflight=30), snap)) == (100, 0, 70, 30)


def test_cash_snapshots_set_the_usdc_pool():
    pool = apply_to(
        PoolInventory(), ev.OnchainCash(usdc_balance=D("5.5"), fetched_at=NOW), USDC_POOL
    )
    pool = apply_to(pool, ev.OffchainCash(cash_balance=D(7), fetched_at=NOW), USDC_POOL)
    assert amounts(pool) == (D("5.5"), 0, 7, 0)


def test_snapshot_clears_needs_reconciliation():
    flagged = apply_event_or_flag(inv(1, 1), onchain_fill("Sell", "5"), None, NOW, pool_key="AAPL")
    assert flagged.needs_reconciliation
    assert amounts(flagged) == (1, 0, 1, 0)
    cleared = apply_to(flagged, ev.OnchainEquity(balances={"AAPL": D(0)}, fetched_at=NOW))
    assert not cleared.needs_reconciliation


def test_unapplicable_event_flags_pool_and_keeps_values():
    pool = apply_event_or_flag(PoolInventory(), MINT_ACCEPTED, MINT_TRACK, NOW, pool_key="AAPL")
    assert pool.reconciliation_reason.startswith("MintAccepted: offchain venue was never observed")
    assert pool.onchain is None and pool.offchain is None


# --- inflight is recorded before money moves (issue 8) -------------------------------------------
#
# Each window: the side effect happened (Alpaca took the shares for a mint, the transfer or the
# vault withdraw was mined), a balance snapshot is fetched and recorded, and only then the event
# that used to move the amount inflight. The intent already holds it inflight, so the snapshot
# is ignored: nothing is counted twice and nothing is flagged.


def at_s(seconds: int) -> datetime:
    return NOW + timedelta(seconds=seconds)


def observed_fold(on: int, off: int, key: str = "AAPL") -> InventoryFold:
    return InventoryFold(pools={key: inv(on, off)})


def assert_pool(fold: InventoryFold, key: str, expected: tuple) -> None:
    pool = fold.pools[key]
    assert amounts(pool) == tuple(D(x) for x in expected)
    assert not pool.needs_reconciliation, pool.reconciliation_reason


def test_offchain_snapshot_between_mint_post_and_acceptance_is_not_counted_twice():
    fold = observed_fold(100, 100)
    fold.apply(ev.MINT, "m", MINT_REQUESTED, at_s(1))  # committed before the POST
    # Alpaca took the 30 shares on the POST; the poll sees 70 before we record the acceptance.
    fold.apply(ev.SNAPSHOT, "venues", ev.OffchainEquity({"AAPL": D(70)}, at_s(2)), at_s(2))
    fold.apply(ev.MINT, "m", MINT_ACCEPTED, at_s(3))
    assert_pool(fold, "AAPL", (100, 0, 70, 30))
    fold.apply(ev.MINT, "m", TOKENS_RECEIVED, at_s(4))
    assert_pool(fold, "AAPL", (100, 0, 70, 30))  # in the wallet, not yet in the vault
    fold.apply(ev.MINT, "m", ev.DepositedIntoVault(deposited_at=at_s(5)), at_s(5))
    assert_pool(fold, "AAPL", (130, 0, 70, 0))


def test_onchain_snapshot_between_redemption_broadcast_and_tokens_sent_is_not_counted_twice():
    signed = ev.TransferSigned(
        symbol="AAPL",
        quantity=D(30),
        token=WALLET,
        redemption_wallet=WALLET,
        raw_tx=b"\x01",
        tx_hash=HASH,
        signed_at=at_s(1),
    )
    fold = observed_fold(100, 100)
    fold.apply(ev.REDEMPTION, "r", signed, at_s(1))  # stored before the broadcast
    fold.apply(ev.SNAPSHOT, "venues", ev.OnchainEquity({"AAPL": D(70)}, at_s(2)), at_s(2))
    fold.apply(ev.REDEMPTION, "r", TOKENS_SENT, at_s(3))
    assert_pool(fold, "AAPL", (70, 30, 100, 0))
    fold.apply(ev.REDEMPTION, "r", DETECTED, at_s(4))
    fold.apply(ev.REDEMPTION, "r", ev.Completed(completed_at=at_s(5)), at_s(5))
    assert_pool(fold, "AAPL", (70, 0, 130, 0))


def test_onchain_cash_snapshot_between_vault_withdraw_and_initiate_is_not_counted_twice():
    requested = ev.Requested(
        direction=RebalanceDirection.BASE_TO_ALPACA, amount=D(100), requested_at=at_s(1)
    )
    signed = ev.TransactionSigned(
        purpose=ev.TxPurpose.VAULT_WITHDRAW,
        chain_id=8453,
        raw_tx=b"\x01",
        tx_hash=HASH,
        signed_at=at_s(1),
    )
    fold = observed_fold(1000, 1000, USDC_POOL)
    fold.apply(ev.USDC_REBALANCE, "u", requested, at_s(1))
    fold.apply(ev.USDC_REBALANCE, "u", signed, at_s(1))
    fold.apply(ev.SNAPSHOT, "venues", ev.OnchainCash(D(900), at_s(2)), at_s(2))
    fold.apply(ev.USDC_REBALANCE, "u", B2A, at_s(3))
    assert_pool(fold, USDC_POOL, (900, 100, 1000, 0))
    fold.apply(ev.USDC_REBALANCE, "u", BRIDGED, at_s(4))
    # The bridge minted on Ethereum; Alpaca has not credited it: a cash poll now shows 1000.
    fold.apply(ev.SNAPSHOT, "venues", ev.OffchainCash(D(1000), at_s(5)), at_s(5))
    assert_pool(fold, USDC_POOL, (900, 100, 1000, 0))
    fold.apply(ev.USDC_REBALANCE, "u", ev.DepositConfirmed(deposit_confirmed_at=at_s(6)), at_s(6))
    assert_pool(fold, USDC_POOL, (900, 0, 1100, 0))


def test_snapshot_fetched_before_the_latest_inflight_change_is_stale_for_that_pool():
    fold = observed_fold(100, 100)
    fold.apply(ev.MINT, "m", MINT_REQUESTED, at_s(1))
    fold.apply(ev.MINT, "m", MINT_ACCEPTED, at_s(2))
    # Fetched while the tokens were still moving, recorded after they reached the vault.
    late = ev.OnchainEquity({"AAPL": D(100)}, at_s(3))
    fold.apply(ev.MINT, "m", ev.DepositedIntoVault(deposited_at=at_s(4)), at_s(4))
    fold.apply(ev.SNAPSHOT, "venues", late, at_s(5))
    assert_pool(fold, "AAPL", (130, 0, 70, 0))
    assert fold.pools["AAPL"].inflight_changed_at == at_s(4)
    # A snapshot fetched after the change is applied as before.
    fold.apply(ev.SNAPSHOT, "venues", ev.OnchainEquity({"AAPL": D(131)}, at_s(6)), at_s(6))
    assert_pool(fold, "AAPL", (131, 0, 70, 0))


def test_stale_snapshot_for_one_pool_still_sets_the_others():
    fold = InventoryFold(pools={"AAPL": inv(100, 100), "MSFT": inv(5, 5)})
    fold.apply(ev.MINT, "m", MINT_REQUESTED, at_s(2))
    snapshot = ev.OffchainEquity({"AAPL": D(1), "MSFT": D(7)}, at_s(1))
    fold.apply(ev.SNAPSHOT, "venues", snapshot, at_s(3))
    assert amounts(fold.pools["AAPL"]) == (100, 0, 70, 30)
    assert amounts(fold.pools["MSFT"]) == (5, 0, 7, 0)


def test_events_that_leave_inflight_unchanged_do_not_move_the_stamp():
    fold = observed_fold(100, 100)
    fold.apply(ev.MINT, "m", MINT_REQUESTED, at_s(1))
    fold.apply(ev.MINT, "m", MINT_ACCEPTED, at_s(2))
    assert fold.pools["AAPL"].inflight_changed_at == at_s(1)

"""Property tests: transfers conserve inventory; replaying the log equals the projection."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inventory.domain import events as ev
from inventory.domain.inventory import InventoryFold, PoolInventory, VenueBalance
from inventory.domain.values import USDC_POOL, RebalanceDirection, TransferRef, TransferRefKind
from inventory.services import inventory_rebuild
from tests.inventory.projection_helpers import append, pools_read_dicts

T0 = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
WALLET = "0x" + "ab" * 20
HASH = "0x" + "12" * 32
SYMBOLS = ("AAPL", "MSFT")

amounts = st.decimals(
    min_value=Decimal("0.000001"), max_value=Decimal(400), places=6, allow_nan=False
)
balances = st.decimals(min_value=Decimal(0), max_value=Decimal(1000), places=6, allow_nan=False)


def mint_path(symbol: str, q: Decimal, ending: int) -> list[ev.DomainEvent]:
    requested = ev.MintRequested(symbol=symbol, quantity=q, wallet=WALLET, requested_at=T0)
    accepted = ev.MintAccepted(issuer_request_id="i", tokenization_request_id="t", accepted_at=T0)
    endings = [
        [],
        [ev.MintRejected(reason="x", rejected_at=T0)],
        [accepted],
        [accepted, ev.MintAcceptanceFailed(reason="x", failed_at=T0)],
        [accepted, ev.MintTimedOut(reason="x", failed_at=T0)],
        [
            accepted,
            ev.TokensReceived(tx_hash=HASH, receipt_id=0, shares_minted=0, received_at=T0),
            ev.MintCompleted(completed_at=T0),
        ],
    ]
    return [requested, *endings[ending % len(endings)]]


def redemption_path(symbol: str, q: Decimal, ending: int) -> list[ev.DomainEvent]:
    signed = ev.TransferSigned(
        symbol=symbol,
        quantity=q,
        token=WALLET,
        redemption_wallet=WALLET,
        raw_tx=b"\x01",
        tx_hash=HASH,
        signed_at=T0,
    )
    sent = ev.TokensSent(
        symbol=symbol, quantity=q, redemption_wallet=WALLET, tx_hash=HASH, sent_at=T0
    )
    detected = ev.Detected(tokenization_request_id="t", detected_at=T0)
    endings = [
        [signed, ev.TransferFailed(reason="x", failed_at=T0)],
        [signed, sent],
        [sent, ev.DetectionFailed(reason="x", failed_at=T0)],
        [signed, sent, detected, ev.RedemptionRejected(reason="x", rejected_at=T0)],
        [sent, detected, ev.Completed(completed_at=T0)],
    ]
    return endings[ending % len(endings)]


def usdc_path(direction: RebalanceDirection, amount: Decimal, ending: int) -> list:
    steps = [
        ev.Requested(direction=direction, amount=amount, requested_at=T0),
        ev.Initiated(
            direction=direction,
            amount=amount,
            withdrawal_ref=TransferRef(TransferRefKind.ALPACA_ID, "w"),
            initiated_at=T0,
        ),
        ev.WithdrawalConfirmed(confirmed_at=T0),
        ev.BridgingInitiated(burn_tx_hash=HASH, cctp_nonce="0x01", burned_at=T0),
        ev.BridgeAttestationReceived(attestation=b"\x01", attested_at=T0),
        ev.Bridged(mint_tx_hash=HASH, minted_at=T0),
        ev.DepositInitiated(
            deposit_ref=TransferRef(TransferRefKind.ONCHAIN_TX, HASH), deposit_initiated_at=T0
        ),
        ev.DepositConfirmed(deposit_confirmed_at=T0),
    ]
    cut = 1 + ending % len(steps)
    path = steps[:cut]
    failures = {
        2: ev.WithdrawalFailed(reason="x", failed_at=T0),
        3: ev.BridgingFailed(burn_tx_hash=None, cctp_nonce=None, reason="x", failed_at=T0),
        7: ev.DepositFailed(deposit_ref=None, reason="x", failed_at=T0),
    }
    if cut in failures and ending % 2:
        path.append(failures[cut])
    return path


@st.composite
def operations(draw, with_reconcile: bool = False):
    """Interleaved lifecycles: [(aggregate_type, aggregate_id, event), ...] in a valid order."""
    ops = []
    for index in range(draw(st.integers(min_value=1, max_value=5))):
        kind = draw(st.sampled_from([ev.MINT, ev.REDEMPTION, ev.USDC_REBALANCE]))
        ending = draw(st.integers(min_value=0, max_value=20))
        amount = draw(amounts)
        if kind == ev.MINT:
            path = mint_path(draw(st.sampled_from(SYMBOLS)), amount, ending)
        elif kind == ev.REDEMPTION:
            path = redemption_path(draw(st.sampled_from(SYMBOLS)), amount, ending)
        else:
            path = usdc_path(draw(st.sampled_from(list(RebalanceDirection))), amount, ending)
        if with_reconcile and draw(st.booleans()):
            cls = {
                ev.MINT: ev.MintReconciled,
                ev.REDEMPTION: ev.RedemptionReconciled,
                ev.USDC_REBALANCE: ev.UsdcReconciled,
            }[kind]
            path = [*path, cls(reason="r", operator="ops", reconciled_at=T0)]
        ops.append([(kind, f"op-{index}", event) for event in path])
    order = draw(st.permutations([i for i, op in enumerate(ops) for _ in op]))
    cursors = [0] * len(ops)
    result = []
    for i in order:
        result.append(ops[i][cursors[i]])
        cursors[i] += 1
    return result


def total(pool: PoolInventory) -> Decimal:
    return pool.onchain.total() + pool.offchain.total()


@given(
    ops=operations(),
    start=st.dictionaries(
        st.sampled_from([*SYMBOLS, USDC_POOL]), st.tuples(balances, balances), min_size=3
    ),
)
@settings(max_examples=200, deadline=None)
def test_transfers_conserve_each_pool_total_and_never_go_negative(ops, start):
    pools = {
        key: PoolInventory(onchain=VenueBalance(on), offchain=VenueBalance(off))
        for key, (on, off) in start.items()
    }
    totals = {key: total(pool) for key, pool in pools.items()}
    fold = InventoryFold(pools=dict(pools))
    for aggregate_type, aggregate_id, event in ops:
        fold.apply(aggregate_type, aggregate_id, event, T0)
        for key, pool in fold.pools.items():
            assert total(pool) == totals[key], (key, event)
            for venue in (pool.onchain, pool.offchain):
                assert venue.available >= 0 and venue.inflight >= 0


@given(ops=operations(with_reconcile=True))
@settings(max_examples=100, deadline=None)
def test_operations_that_finish_or_are_reconciled_leave_no_inflight(ops):
    pools = {
        key: PoolInventory(
            onchain=VenueBalance(Decimal(5000)), offchain=VenueBalance(Decimal(5000))
        )
        for key in (*SYMBOLS, USDC_POOL)
    }
    fold = InventoryFold(pools=pools)
    for aggregate_type, aggregate_id, event in ops:
        fold.apply(aggregate_type, aggregate_id, event, T0)
    held = sum((track.held_inflight for track in fold.tracks.values()), Decimal(0))
    inflight = sum(
        (p.onchain.inflight + p.offchain.inflight for p in fold.pools.values()), Decimal(0)
    )
    assert inflight == held  # every unit inflight belongs to an operation still holding it
    assert not any(p.needs_reconciliation for p in fold.pools.values())


# --- replay equals the incremental projection (real store, real database) ---------------------


@st.composite
def logs(draw):
    """Snapshots, fills and interleaved operations, split into random append batches."""
    entries = []
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        key = draw(st.sampled_from([*SYMBOLS, USDC_POOL]))
        venue = draw(st.sampled_from(["on", "off"]))
        value = draw(balances)
        if key == USDC_POOL:
            event = (
                ev.OnchainCash(usdc_balance=value, fetched_at=T0)
                if venue == "on"
                else ev.OffchainCash(cash_balance=value, fetched_at=T0)
            )
        else:
            event = (
                ev.OnchainEquity(balances={key: value}, fetched_at=T0)
                if venue == "on"
                else ev.OffchainEquity(positions={key: value}, fetched_at=T0)
            )
        entries.append((ev.SNAPSHOT, "venues", event))
    for index in range(draw(st.integers(min_value=0, max_value=4))):
        entries.append(
            (
                ev.POSITION,
                draw(st.sampled_from([*SYMBOLS, "NVDA"])),
                ev.OnChainOrderFilled(
                    trade_id=ev.TradeId(HASH, index),
                    amount=draw(amounts),
                    direction=draw(st.sampled_from(list(ev.Direction))),
                    price_usdc=draw(amounts),
                    block_timestamp=T0,
                    seen_at=T0 + timedelta(seconds=index),
                ),
            )
        )
    entries = draw(st.permutations(entries))
    # Operations after the fills/snapshots, in a valid interleaving; with random batch cuts.
    entries = [*entries, *draw(operations(with_reconcile=True))]
    cuts = draw(st.lists(st.booleans(), min_size=len(entries), max_size=len(entries)))
    return entries, cuts


def append_log(entries, cuts) -> None:
    batch: list = []
    for (aggregate_type, aggregate_id, event), cut in zip(entries, cuts, strict=True):
        if batch and (batch[0][:2] != (aggregate_type, aggregate_id) or cut):
            append(batch[0][1], *[e for _, _, e in batch])
            batch = []
        batch.append((aggregate_type, aggregate_id, event))
    if batch:
        append(batch[0][1], *[e for _, _, e in batch])


@pytest.mark.django_db
@given(log=logs())
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_replaying_the_log_gives_exactly_the_incremental_projection(log):
    entries, cuts = log
    with transaction.atomic():
        append_log(entries, cuts)
        before = pools_read_dicts()
        assert inventory_rebuild(write=False) == []
        inventory_rebuild(write=True)
        assert pools_read_dicts() == before
        transaction.set_rollback(True)

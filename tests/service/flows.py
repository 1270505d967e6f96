"""Test helpers that drive the real store, projection and trigger."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import count

from inventory.domain import events as ev
from inventory.domain.aggregate import AggregateSpec
from inventory.domain.values import RebalanceDirection, TransferRef, TransferRefKind
from inventory.models import Asset, Event, InventoryPool
from inventory.services import asset_register, fill_record_onchain, snapshot_record
from inventory.store import StoredEvent, events_append
from operations.models import ACTIVE_STATUSES, Operation

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
WALLET = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359"
REDEMPTION_WALLET = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
TOKENS = {
    "AAPL": "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
    "MSFT": "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
    "NVDA": "0x52908400098527886E0F7030069857D2E4169EE7",
}
TX = "0x" + "ab" * 32

_ticks = count(1)


def tick() -> datetime:
    """Strictly increasing timestamps (snapshots older than the newest are ignored)."""
    return T0 + timedelta(seconds=next(_ticks))


def enable(settings, **changes) -> None:
    """The deployment switch (REBALANCING_ENABLED) and other env defaults, for this test."""
    settings.REBALANCING = dataclasses.replace(settings.REBALANCING, enabled=True, **changes)


def register(symbol: str, *, rebalancing_enabled: bool = True) -> Asset:
    return asset_register(
        base_symbol=symbol,
        token_address=TOKENS[symbol],
        token_symbol=f"t{symbol}",
        vault_id="0x" + "11" * 32,
        changed_by="test",
        rebalancing_enabled=rebalancing_enabled,
    )


def observe(
    symbol: str | None = None,
    *,
    onchain: str | None = None,
    offchain: str | None = None,
    usdc_onchain: str | None = None,
    usdc_offchain: str | None = None,
) -> list[StoredEvent]:
    return snapshot_record(
        fetched_at=tick(),
        onchain_equity={symbol: Decimal(onchain)} if onchain is not None else None,
        offchain_equity={symbol: Decimal(offchain)} if offchain is not None else None,
        onchain_cash=Decimal(usdc_onchain) if usdc_onchain is not None else None,
        offchain_cash=Decimal(usdc_offchain) if usdc_offchain is not None else None,
    )


_log_index = count(0)


def onchain_fill(symbol: str, amount: str, direction: str = "Buy", price: str = "1"):
    return fill_record_onchain(
        symbol=symbol,
        tx_hash=TX,
        log_index=next(_log_index),
        amount=Decimal(amount),
        direction=direction,
        price_usdc=Decimal(price),
        block_timestamp=tick(),
    )


_RAW = {
    aggregate_type: AggregateSpec(
        aggregate_type=aggregate_type,
        apply=lambda state, event: state,
        handle=lambda state, command, now: [],
        event_classes=(),
    )
    for aggregate_type in ev.OPERATION_EVENT_TYPES
}


def append(
    aggregate_type: str, aggregate_id: str, *events: ev.DomainEvent, now: datetime | None = None
) -> list[StoredEvent]:
    """Append operation events as the workflows will (each call its own batch), recorded at
    `now` (default: the next tick)."""
    sequence = Event.objects.filter(
        aggregate_type=aggregate_type, aggregate_id=aggregate_id
    ).count()
    return events_append(
        spec=_RAW[aggregate_type],
        aggregate_id=aggregate_id,
        events=list(events),
        expected_sequence=sequence,
        now=tick() if now is None else now,
    )


def pool(key: str) -> InventoryPool:
    """The pool as readers see it (`pool_get`: USDC with its pending fill deltas applied)."""
    from inventory.selectors import pool_get

    row = pool_get(key=key)
    if row is None:
        raise InventoryPool.DoesNotExist(key)
    return row


def active(key: str) -> Operation | None:
    return Operation.objects.filter(pool=key, status__in=ACTIVE_STATUSES).first()


# --- operation event factories ----------------------------------------------------------------


def mint_requested(op: Operation) -> ev.MintRequested:
    return ev.MintRequested(symbol=op.pool, quantity=op.amount, wallet=WALLET, requested_at=tick())


def mint_accepted(op: Operation) -> ev.MintAccepted:
    return ev.MintAccepted(
        issuer_request_id=op.aggregate_id, tokenization_request_id="tok-1", accepted_at=tick()
    )


def tokens_received() -> ev.TokensReceived:
    return ev.TokensReceived(tx_hash=TX, receipt_id=1, shares_minted=10**18, received_at=tick())


def vault_deposit_submitted() -> ev.VaultDepositSubmitted:
    return ev.VaultDepositSubmitted(
        vault="0x" + "0b" * 20,
        vault_id="0x" + "77" * 32,
        amount_units=10**18,
        raw_tx=b"\x02deposit",
        tx_hash=TX,
        submitted_at=tick(),
    )


def transfer_signed(op: Operation) -> ev.TransferSigned:
    return ev.TransferSigned(
        symbol=op.pool,
        quantity=op.amount,
        token=op.token_address,
        redemption_wallet=REDEMPTION_WALLET,
        raw_tx=b"\x02signed",
        tx_hash=TX,
        signed_at=tick(),
    )


def tokens_sent(op: Operation) -> ev.TokensSent:
    return ev.TokensSent(
        symbol=op.pool,
        quantity=op.amount,
        redemption_wallet=REDEMPTION_WALLET,
        tx_hash=TX,
        sent_at=tick(),
    )


def usdc_requested(op: Operation) -> ev.Requested:
    return ev.Requested(direction=usdc_direction(op), amount=op.amount, requested_at=tick())


def usdc_initiated(op: Operation) -> ev.Initiated:
    return ev.Initiated(
        direction=usdc_direction(op),
        amount=op.amount,
        withdrawal_ref=TransferRef(
            TransferRefKind.ALPACA_ID, "0b1c5e9e-2f4a-4c1d-9a55-3f0e8d7c6b5a"
        ),
        initiated_at=tick(),
    )


def usdc_direction(op: Operation) -> RebalanceDirection:
    return (
        RebalanceDirection.ALPACA_TO_BASE
        if op.kind == "usdc_alpaca_to_base"
        else RebalanceDirection.BASE_TO_ALPACA
    )


def after_cooldown(key: str) -> Operation | None:
    """Time passes until the pool's cool-down after a failure ends, and the due loop re-checks
    it (`operations.due.operations_due_enqueue` -> `pools_cooled_down_recheck`); returns the
    active operation."""
    from django.utils import timezone

    from operations.due import operations_due_enqueue
    from operations.models import PoolBreaker

    PoolBreaker.objects.filter(pool=key).update(cooldown_until=timezone.now())
    operations_due_enqueue()  # one pass of the due loop
    return active(key)

"""Helpers to append events through the real store (`events_append`) in projection tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from inventory.domain import events as ev
from inventory.domain.aggregate import AggregateSpec
from inventory.domain.lifecycle import Lifecycle
from inventory.domain.values import RebalanceDirection, TransferRef, TransferRefKind
from inventory.models import Event
from inventory.store import StoredEvent, events_append

T0 = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
WALLET = "0x" + "ab" * 20
TOKEN = "0x" + "cd" * 20
HASH = "0x" + "12" * 32


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def _raw_spec(aggregate_type: str) -> AggregateSpec:
    """Only the aggregate type matters to `events_append`; the events are already decided."""

    def apply(state: Lifecycle, event: object) -> Lifecycle:
        return state

    def handle(state: Lifecycle, command: object, now: datetime) -> list:
        return []

    return AggregateSpec(
        aggregate_type=aggregate_type, apply=apply, handle=handle, event_classes=()
    )


def append(aggregate_id: str, *events: ev.DomainEvent, now: datetime = T0) -> list[StoredEvent]:
    """Append after the aggregate's last stored sequence, one batch."""
    aggregate_type = events[0].AGGREGATE_TYPE
    last = (
        Event.objects.filter(aggregate_type=aggregate_type, aggregate_id=aggregate_id)
        .order_by("-sequence")
        .values_list("sequence", flat=True)
        .first()
        or 0
    )
    return events_append(
        spec=_raw_spec(aggregate_type),
        aggregate_id=aggregate_id,
        events=list(events),
        expected_sequence=last,
        now=now,
    )


def snapshot(**kwargs) -> list[StoredEvent]:
    fetched_at = kwargs.pop("fetched_at", T0)
    events: list[ev.DomainEvent] = []
    if "onchain_equity" in kwargs:
        events.append(ev.OnchainEquity(balances=kwargs["onchain_equity"], fetched_at=fetched_at))
    if "offchain_equity" in kwargs:
        events.append(ev.OffchainEquity(positions=kwargs["offchain_equity"], fetched_at=fetched_at))
    if "onchain_cash" in kwargs:
        events.append(ev.OnchainCash(usdc_balance=kwargs["onchain_cash"], fetched_at=fetched_at))
    if "offchain_cash" in kwargs:
        events.append(ev.OffchainCash(cash_balance=kwargs["offchain_cash"], fetched_at=fetched_at))
    return append("venues", *events, now=fetched_at)


def mint_requested(symbol: str, quantity: str) -> ev.MintRequested:
    return ev.MintRequested(
        symbol=symbol, quantity=Decimal(quantity), wallet=WALLET, requested_at=T0
    )


def mint_accepted() -> ev.MintAccepted:
    return ev.MintAccepted(issuer_request_id="i-1", tokenization_request_id="t-1", accepted_at=T0)


def tokens_received() -> ev.TokensReceived:
    return ev.TokensReceived(tx_hash=HASH, receipt_id=0, shares_minted=0, received_at=T0)


def vault_deposit_submitted() -> ev.VaultDepositSubmitted:
    return ev.VaultDepositSubmitted(
        vault="0x" + "0b" * 20,
        vault_id="0x" + "77" * 32,
        amount_units=30 * 10**18,
        raw_tx=b"\x02deposit",
        tx_hash=HASH,
        submitted_at=T0,
    )


def tokens_sent(symbol: str, quantity: str) -> ev.TokensSent:
    return ev.TokensSent(
        symbol=symbol,
        quantity=Decimal(quantity),
        redemption_wallet=WALLET,
        tx_hash=HASH,
        sent_at=T0,
    )


def transfer_signed(symbol: str, quantity: str) -> ev.TransferSigned:
    return ev.TransferSigned(
        symbol=symbol,
        quantity=Decimal(quantity),
        token=TOKEN,
        redemption_wallet=WALLET,
        raw_tx=b"\x01",
        tx_hash=HASH,
        signed_at=T0,
    )


def vault_withdraw_signed(symbol: str, quantity: str) -> ev.VaultWithdrawSigned:
    return ev.VaultWithdrawSigned(
        symbol=symbol,
        quantity=Decimal(quantity),
        token=TOKEN,
        vault="0x" + "0b" * 20,
        vault_id="0x" + "77" * 32,
        amount_units=int(Decimal(quantity) * 10**18),
        raw_tx=b"\x02withdraw",
        tx_hash=HASH,
        signed_at=T0,
    )


def usdc_initiated(direction: RebalanceDirection, amount: str) -> ev.Initiated:
    return ev.Initiated(
        direction=direction,
        amount=Decimal(amount),
        withdrawal_ref=TransferRef(TransferRefKind.ALPACA_ID, "w-1"),
        initiated_at=T0,
    )


def onchain_fill(direction: str, amount: str, price: str, log_index: int = 0):
    return ev.OnChainOrderFilled(
        trade_id=ev.TradeId(tx_hash=HASH, log_index=log_index),
        amount=Decimal(amount),
        direction=ev.Direction(direction),
        price_usdc=Decimal(price),
        block_timestamp=T0,
        seen_at=at(1),
    )


def offchain_fill(direction: str, shares: str, price_cents: int):
    return ev.OffChainOrderFilled(
        execution_id=1,
        shares_filled=Decimal(shares),
        direction=ev.Direction(direction),
        broker_order_id="o-1",
        price_cents=price_cents,
        broker_timestamp=at(2),
    )


def reconciled(cls: type) -> ev.DomainEvent:
    return cls(reason="settled by hand", operator="ops", reconciled_at=at(9))


def pool_read(key: str):
    """The pool as every reader sees it (`inventory.selectors.pool_get`): for USDC the row
    with its pending fill deltas applied (`inventory.usdc_deltas`)."""
    from inventory.selectors import pool_get

    row = pool_get(key=key)
    assert row is not None, f"no pool {key}"
    return row


def pools_read(*fields: str) -> list[tuple]:
    """`fields` of every pool in key order, as readers see them (`pools_list`)."""
    from inventory.selectors import pools_list

    return [tuple(getattr(row, name) for name in fields) for row in pools_list()]


def pools_read_dicts() -> list[dict]:
    """Every column of every pool in key order, as readers see them (what
    `InventoryPool.objects.values()` gives of the rows)."""
    from inventory.models import InventoryPool
    from inventory.selectors import pools_list

    names = [f.attname for f in InventoryPool._meta.concrete_fields]
    return [{name: getattr(row, name) for name in names} for row in pools_list()]


def usdc_folded() -> None:
    """Fold the USDC pool's pending fill deltas into its row (and its legs into
    `OnchainFillLeg`), as the next writer that locks the USDC row does."""
    from inventory.services import usdc_deltas_fold

    usdc_deltas_fold()

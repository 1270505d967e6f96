"""Venue balances (B1 at run time): read what each venue holds and record balance snapshots.

One poll reads
- onchain (Base): every registered asset's vault balance and the USDC vault in the order book
  (`BASE_ORDERBOOK`, the asset's vault id, our wallet as owner), all pinned to one block,
  which is recorded with the snapshot (spec 15.2: a fill at or below it is already inside);
- offchain (Alpaca): the positions of the registered assets (a symbol Alpaca does not list
  holds zero), the account's USD `cash` and `cash_withdrawable`, and the USDC it holds (the
  `USDCUSD` crypto position's `qty`; no row is zero). USD cash and USDC are two balances
  (spec 15.5): the USDC pool's offchain side is their sum;
and records them through `inventory.services.snapshot_record`. A venue that fails is named in
a WARNING and recorded nothing; the other venue is still recorded. Nothing is ever guessed.

Runs at service start, then every `SNAPSHOT_INTERVAL_S`, claimed through
`service.periodic` so that several hosts never double a poll.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_DOWN, Decimal
from typing import Any

from django.conf import settings
from django.utils import timezone

from inventory.domain.offchain import USDC_UNIT
from inventory.models import Asset
from inventory.services import snapshot_record
from operations.venues import Venues, venues_get
from service.periodic import heartbeat_beat, periodic_claim
from venues.alpaca import USDC_POSITION_SYMBOL

logger = logging.getLogger(__name__)

ONCHAIN_VENUE = "base"
OFFCHAIN_VENUE = "alpaca"
VENUES = (ONCHAIN_VENUE, OFFCHAIN_VENUE)
VENUE_LABELS = {
    ONCHAIN_VENUE: "Base order book vaults",
    OFFCHAIN_VENUE: "Alpaca positions and cash",
}
POLL_JOB = "venue_poll"
POLL_TASK = "service.poller.venue_poll_if_due"


def venue_heartbeat_name(venue: str) -> str:
    return f"venue:{venue}"


@dataclass(frozen=True)
class OnchainReading:
    block_number: int
    equity: dict[str, Decimal]
    usdc: Decimal


@dataclass(frozen=True)
class OffchainReading:
    equity: dict[str, Decimal]
    cash: Decimal
    usdc: Decimal = Decimal(0)
    cash_withdrawable: Decimal | None = None


@dataclass
class VenueReadings:
    """What one read of the venues returned; a failed venue is in `failures` only."""

    started_at: datetime
    onchain: OnchainReading | None = None
    offchain: OffchainReading | None = None
    failures: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PollResult:
    readings: VenueReadings
    events_recorded: int

    @property
    def failures(self) -> dict[str, str]:
        return self.readings.failures


def _vault_id(value: str) -> bytes:
    return bytes.fromhex(value.removeprefix("0x"))


def vault_balance_read(venues: Venues, *, token: str, vault_id: str, block: int) -> Decimal:
    """One order-book vault balance (owner: our wallet, or the `RaindexInventory` that owns
    the vaults) at `block`, as a Decimal amount:
    `vaultBalance2` returns a Rain Float, taken exactly. The one place the service reads a
    vault."""
    config = venues.config
    assert config.base_orderbook is not None
    balance = venues.base.vault_balance_float(
        vault=config.base_orderbook,
        owner=venues.vault_owner,
        token=token,
        vault_id=_vault_id(vault_id),
        block=block,
    )
    # The exact value the order book holds (a trade can leave it finer than the token's
    # decimals); the snapshot refuses a negative one.
    return balance.to_decimal()


def onchain_read(venues: Venues, assets: list[Asset]) -> OnchainReading:
    config = venues.config
    if config.base_orderbook is None or config.usdc_vault_id is None:
        raise RuntimeError("BASE_ORDERBOOK and USDC_VAULT_ID must be set to read the vaults")
    block = venues.base.block_number()
    equity = {
        asset.base_symbol: vault_balance_read(
            venues,
            token=asset.token_address,
            vault_id=asset.vault_id,
            block=block,
        )
        for asset in assets
    }
    usdc = vault_balance_read(
        venues,
        token=config.workers.usdc_base,
        vault_id=config.usdc_vault_id,
        block=block,
    )
    return OnchainReading(block_number=block, equity=equity, usdc=usdc)


def offchain_read(venues: Venues, assets: list[Asset]) -> OffchainReading:
    positions = venues.alpaca.positions()
    # `qty_available`: what can be used now (spec 15.4), equities only (not `USDCUSD`).
    held = {p.symbol: p.qty_available for p in positions if p.is_equity}
    equity = {asset.base_symbol: held.get(asset.base_symbol, Decimal(0)) for asset in assets}
    # USDC at Alpaca: the `USDCUSD` row's `qty` (spec 15.5: locked USDC of a pending
    # withdrawal still counts there until it settles; the pool holds it inflight from the
    # withdrawal's intent, and no snapshot is applied to a pool with inflight). Crypto
    # quantities can be finer than USDC's 6 decimals; what is finer can never leave as USDC.
    usdc = sum((p.qty for p in positions if p.symbol == USDC_POSITION_SYMBOL), Decimal(0)).quantize(
        USDC_UNIT, rounding=ROUND_DOWN
    )
    account = venues.alpaca.account()
    return OffchainReading(
        equity=equity, cash=account.cash, usdc=usdc, cash_withdrawable=account.cash_withdrawable
    )


def _describe(error: BaseException) -> str:
    # Venue clients redact URLs and keys in their own messages; never add more here.
    return f"{type(error).__name__}: {error}"


def venue_balances_read(*, venues: Venues | None = None) -> VenueReadings:
    """Read both venues now; a venue that fails is recorded in `failures` by name."""
    venues = venues or venues_get()
    assets = list(Asset.objects.order_by("base_symbol"))
    readings = VenueReadings(started_at=timezone.now())
    reads: dict[str, Callable[[], Any]] = {
        ONCHAIN_VENUE: lambda: onchain_read(venues, assets),
        OFFCHAIN_VENUE: lambda: offchain_read(venues, assets),
    }
    for venue, read in reads.items():
        try:
            value = read()
        except Exception as error:  # noqa: BLE001 - any failure of one venue is reported
            readings.failures[venue] = _describe(error)
            logger.warning(
                "venue poll: %s (%s) failed, not recorded: %s",
                venue,
                VENUE_LABELS[venue],
                readings.failures[venue],
            )
            continue
        if venue == ONCHAIN_VENUE:
            readings.onchain = value
        else:
            readings.offchain = value
    return readings


def readings_record(readings: VenueReadings) -> int:
    """Record the venues that were read as snapshot events; returns how many were written."""
    onchain, offchain = readings.onchain, readings.offchain
    if onchain is None and offchain is None:
        return 0
    stored = snapshot_record(
        fetched_at=readings.started_at,
        onchain_equity=onchain.equity if onchain is not None else None,
        onchain_cash=onchain.usdc if onchain is not None else None,
        onchain_block=onchain.block_number if onchain is not None else None,
        offchain_equity=offchain.equity if offchain is not None else None,
        offchain_cash=offchain.cash if offchain is not None else None,
        offchain_usdc=offchain.usdc if offchain is not None else None,
        offchain_cash_withdrawable=offchain.cash_withdrawable if offchain is not None else None,
    )
    if onchain is not None:
        heartbeat_beat(
            name=venue_heartbeat_name(ONCHAIN_VENUE), detail=f"block {onchain.block_number}"
        )
    if offchain is not None:
        heartbeat_beat(name=venue_heartbeat_name(OFFCHAIN_VENUE))
    return len(stored)


def venue_balances_poll(*, venues: Venues | None = None) -> PollResult:
    """Read the venues and record what was read (one poll)."""
    readings = venue_balances_read(venues=venues)
    recorded = readings_record(readings)
    logger.info(
        "venue poll: %s; %d snapshot event(s) recorded",
        ", ".join(
            f"{venue} failed"
            if venue in readings.failures
            else (
                f"{venue} read at block {readings.onchain.block_number}"
                if venue == ONCHAIN_VENUE and readings.onchain
                else f"{venue} read"
            )
            for venue in VENUES
        ),
        recorded,
    )
    return PollResult(readings=readings, events_recorded=recorded)


def venue_poll_if_due(*, min_gap_s: float | None = None) -> PollResult | None:
    """Poll when this period's poll is still unclaimed (the scheduled task and the service's
    ticker both call this; the claim makes one of them, on one host, poll)."""
    if not settings.REBALANCING.enabled:
        return None
    interval = settings.SERVICE.snapshot_interval_s
    if not periodic_claim(name=POLL_JOB, interval_s=interval, min_gap_s=min_gap_s):
        return None
    return venue_balances_poll()

"""Reads for the inventory app: pools, assets and the typed rebalancing settings."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from decimal import Decimal
from typing import TypeVar

from django.conf import settings as django_settings

from inventory.codec import decode_event
from inventory.domain.events import (
    POSITION,
    SNAPSHOT,
    OffchainCash,
    OffChainOrderPlaced,
    OnChainOrderFilled,
)
from inventory.domain.inventory import (
    Imbalance,
    ImbalanceThreshold,
    PoolInventory,
    detect_imbalance,
)
from inventory.domain.offchain import OffchainLeavable
from inventory.domain.settings import AssetOverride, RebalancingSettings
from inventory.domain.snapshot import SNAPSHOT_AGGREGATE_ID
from inventory.domain.values import USDC_POOL, Direction
from inventory.models import ApiToken, Asset, Event, InventoryPool, RebalancingSettingsRow
from inventory.usdc_deltas import pools_current

T = TypeVar("T")


def pool_get(*, key: str) -> InventoryPool | None:
    """The pool's row as it is (for USDC: with its pending fill deltas applied, unsaved)."""
    row = InventoryPool.objects.filter(key=key).first()
    return None if row is None else pools_current([row])[0]


def pool_inventory(*, key: str) -> PoolInventory:
    """The pool as a domain value; a pool with no row is entirely unobserved."""
    row = pool_get(key=key)
    return row.to_domain() if row is not None else PoolInventory()


def pools_list() -> list[InventoryPool]:
    """Every pool in key order, as it is (`pools_current`: USDC with its pending fill deltas
    applied)."""
    return pools_current(InventoryPool.objects.order_by("key"))


def pools_by_key(keys: Iterable[str]) -> dict[str, InventoryPool]:
    """The pools of `keys` that exist, as they are (`pools_current`)."""
    rows = InventoryPool.objects.filter(key__in=sorted(set(keys)))
    return {row.key: row for row in pools_current(rows)}


def pools_needing_reconciliation() -> list[InventoryPool]:
    """The pools flagged for reconciliation, as they are: USDC also when a pending fill
    delta flags it."""
    rows = list(InventoryPool.objects.filter(needs_reconciliation=True).exclude(key=USDC_POOL))
    usdc = pool_get(key=USDC_POOL)
    if usdc is not None and usdc.needs_reconciliation:
        rows.append(usdc)
    return sorted(rows, key=lambda row: row.key)


def asset_by_symbol(base_symbol: str) -> Asset | None:
    """Base symbol (the Position id, e.g. "AAPL") -> registered asset, or None."""
    return Asset.objects.filter(base_symbol=base_symbol).first()


def asset_by_address(token_address: str) -> Asset | None:
    """Token address (any letter case) -> registered asset, or None."""
    if not isinstance(token_address, str):
        return None
    return Asset.objects.filter(token_address__iexact=token_address).first()


def assets_list() -> list[Asset]:
    return list(Asset.objects.order_by("base_symbol"))


def rebalancing_settings_load(symbols: Iterable[str] | None = None) -> RebalancingSettings:
    """Read the global row (created from the environment defaults on first read) and the
    assets of `symbols` (all when None) from the database (`rebalancing_settings_get` caches
    this, keyed by the configuration stamp)."""
    from inventory.services import settings_row_ensure

    row: RebalancingSettingsRow = settings_row_ensure()
    assets = (
        Asset.objects.all()
        if symbols is None
        else Asset.objects.filter(base_symbol__in=sorted(set(symbols)))
    )
    return RebalancingSettings(
        enabled=bool(django_settings.REBALANCING.enabled),
        paused=row.paused,
        equity_threshold=ImbalanceThreshold(row.equity_target_ratio, row.equity_deviation),
        usdc_threshold=ImbalanceThreshold(row.usdc_target_ratio, row.usdc_deviation),
        equity_minimum_shares=row.equity_minimum_shares,
        usdc_minimum=row.usdc_minimum,
        equity_cap_shares=row.equity_cap_shares,
        usdc_cap=row.usdc_cap,
        assets={
            asset.base_symbol: AssetOverride(
                rebalancing_enabled=asset.rebalancing_enabled,
                target_ratio=asset.target_ratio,
                deviation=asset.deviation,
                decimals=asset.decimals,
            )
            for asset in assets
        },
    )


def rebalancing_settings_from(stored: RebalancingSettings) -> RebalancingSettings:
    """A cached `stored` with the deployment switch as configured now (the environment,
    which tests and operators change without touching the database)."""
    return replace(
        stored,
        enabled=bool(django_settings.REBALANCING.enabled),
        assets=dict(stored.assets),
    )


def rebalancing_settings_get(*, symbols: Iterable[str] | None = None) -> RebalancingSettings:
    """The global row (created from the environment defaults on first read) and the assets
    (only those of `symbols` when given: a fill reads its own asset row, never all of them).
    Kept in memory and read again only when the configuration stamp changed
    (`inventory.config_stamp`): one query when nothing changed."""
    from inventory import config_stamp

    wanted = None if symbols is None else tuple(sorted(set(symbols)))
    stored = config_stamp.cached(
        f"rebalancing_settings:{wanted}", lambda: rebalancing_settings_load(wanted)
    )
    return rebalancing_settings_from(stored)


def threshold_for(pool_key: str, settings: RebalancingSettings | None = None) -> ImbalanceThreshold:
    """The imbalance threshold of a pool (per-asset override, else global; USDC its own)."""
    return (settings or rebalancing_settings_get()).threshold_for(pool_key)


def pool_imbalance(*, key: str, settings: RebalancingSettings | None = None) -> Imbalance | None:
    """The pool's imbalance against its threshold; None for an unknown or unobserved pool,
    a pool with anything inflight, or a balanced one."""
    return detect_imbalance(pool_inventory(key=key), threshold_for(key, settings))


def api_tokens_list() -> list[ApiToken]:
    return list(ApiToken.objects.order_by("name"))


def api_token_authenticate(*, secret: str) -> ApiToken | None:
    """The active token whose secret this is, or None (unknown, revoked or malformed)."""
    from inventory.services import api_token_digest

    if not isinstance(secret, str) or not secret or len(secret) > 256:
        return None
    return ApiToken.objects.filter(
        token_hash=api_token_digest(secret), revoked_at__isnull=True
    ).first()


# --- what can leave Alpaca as USDC (spec 15.5) -------------------------------------------------


def offchain_cash_latest() -> OffchainCash | None:
    """The newest recorded Alpaca cash snapshot (cash, cash_withdrawable, USDC held)."""
    return _latest_event(SNAPSHOT, SNAPSHOT_AGGREGATE_ID, OffchainCash)


def pending_hedge_spend() -> Decimal | None:
    """What the hedges still pending at the brokerage may spend in USD: each pending buy's
    shares at its symbol's latest onchain fill price (the fill it hedges). None when a pending
    buy has no known price (the spend cannot be bounded)."""
    spend = Decimal(0)
    pending = InventoryPool.objects.filter(offchain_hedges_pending__gt=0).exclude(key=USDC_POOL)
    for key in pending.values_list("key", flat=True):
        placed = _latest_event(POSITION, key, OffChainOrderPlaced)
        if placed is None or placed.direction != Direction.BUY:
            continue
        fill = _latest_event(POSITION, key, OnChainOrderFilled)
        if fill is None:
            return None
        spend += placed.shares * fill.price_usdc
    return spend


def _latest_event(aggregate_type: str, aggregate_id: str, event_class: type[T]) -> T | None:
    """The aggregate's newest event of `event_class`, decoded (None: it has none)."""
    row = (
        Event.objects.filter(
            aggregate_type=aggregate_type,
            aggregate_id=aggregate_id,
            event_type=event_class.event_type_name(),
        )
        .order_by("-sequence")
        .only("event_type", "payload")
        .first()
    )
    if row is None:
        return None
    event = decode_event(row.event_type, row.payload)
    assert isinstance(event, event_class)
    return event


def offchain_leavable(*, pool: PoolInventory, reserve: Decimal) -> OffchainLeavable | None:
    """What an Alpaca-to-Base move may take now, with its inputs; None when it cannot be
    bounded (Alpaca not read with its USDC yet, or a pending buy hedge of unknown price)."""
    snapshot = offchain_cash_latest()
    if snapshot is None or pool.offchain is None:
        return None
    hedge_spend = pending_hedge_spend() if pool.offchain_hedges_pending > 0 else Decimal(0)
    if hedge_spend is None:
        return None
    return OffchainLeavable(
        pool_available=pool.offchain.available,
        cash=snapshot.cash_balance,
        cash_withdrawable=snapshot.cash_withdrawable,
        usdc=snapshot.usdc_balance or Decimal(0),
        reserve=reserve,
        hedge_spend=hedge_spend,
    )

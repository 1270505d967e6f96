"""Writes for the inventory app: fills, balance snapshots, assets and settings.

Every function takes keyword-only typed arguments, validates everything before writing, and
runs in one transaction: the events, the projection and any settings row change commit
together. Validation failures raise `InvalidValue(field, value, rule)` and write nothing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.conf import settings as django_settings
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone
from eth_utils import is_address, to_checksum_address

from inventory.domain import events as ev
from inventory.domain import position
from inventory.domain import settings as settings_domain
from inventory.domain import snapshot as snapshot_domain
from inventory.domain.events import ExecutionThreshold, ThresholdKind, TradeId
from inventory.domain.inventory import InventoryFold
from inventory.domain.lifecycle import Lifecycle
from inventory.domain.values import (
    USDC_POOL,
    Direction,
    InvalidValue,
    TokenizedEquitySymbol,
    TxHash,
    validate_quantity,
    validate_symbol,
)
from inventory.models import Asset, Event, InventoryPool, RebalancingSettingsRow
from inventory.projection import pools_lock
from inventory.store import (
    MAX_APPEND_ATTEMPTS,
    ConcurrencyError,
    StoredEvent,
    aggregate_execute,
    aggregate_load,
    events_append,
)

logger = logging.getLogger(__name__)

_HASH = re.compile(r"^0x[0-9a-fA-F]{64}$")
_VAULT_ID = re.compile(r"^0x[0-9a-fA-F]{64}$")

# Hedging rule (spec 4.1): hedge once |net| >= 1 share. Used when a symbol's first fill arrives.
DEFAULT_POSITION_THRESHOLD = ExecutionThreshold(kind=ThresholdKind.SHARES, value=Decimal(1))


# --- validation helpers -----------------------------------------------------------------------


def _direction(value: Any) -> Direction:
    if isinstance(value, Direction):
        return value
    try:
        return Direction(value)
    except ValueError:
        raise InvalidValue("direction", value, "must be Buy or Sell") from None


def _aware(field: str, value: Any) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InvalidValue(field, value, "must be a timezone-aware datetime")
    return value


def _tx_hash(field: str, value: Any) -> TxHash:
    if not isinstance(value, str) or not _HASH.match(value):
        raise InvalidValue(field, value, "must be a 0x-prefixed 32-byte hex hash")
    return TxHash(value.lower())


def _non_negative_int(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidValue(field, value, "must be a non-negative integer")
    return value


def _positive(field: str, value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, Decimal):
        raise InvalidValue(field, value, "must be a Decimal (built from str or int, never float)")
    return validate_quantity(field, value)


def _changed_by(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidValue("changed_by", value, "must name who made the change")
    return value.strip()


# --- fills ------------------------------------------------------------------------------------


def _position_ready(symbol: str, now: datetime) -> None:
    """Initialize the symbol's Position on its first fill (default hedging threshold)."""
    loaded = aggregate_load(position.SPEC, symbol)
    if loaded.state.is_uninitialized:
        aggregate_execute(
            spec=position.SPEC,
            aggregate_id=symbol,
            command=position.Initialize(symbol=symbol, threshold=DEFAULT_POSITION_THRESHOLD),
            now=now,
        )


def _onchain_fill_recorded(symbol: str, trade_id: TradeId) -> bool:
    return Event.objects.filter(
        aggregate_type=ev.POSITION,
        aggregate_id=symbol,
        event_type=ev.OnChainOrderFilled.event_type_name(),
        payload__OnChainOrderFilled__trade_id__tx_hash=trade_id.tx_hash,
        payload__OnChainOrderFilled__trade_id__log_index=str(trade_id.log_index),
    ).exists()


def fill_record_onchain(
    *,
    symbol: str,
    tx_hash: str,
    log_index: int,
    amount: Decimal,
    direction: Direction | str,
    price_usdc: Decimal,
    block_timestamp: datetime,
    now: datetime | None = None,
) -> list[StoredEvent]:
    """Record an order-book fill (moves the symbol's and USDC's onchain balances).

    Idempotent on the trade id (tx hash and log index): a fill seen twice is recorded once.
    """
    symbol = validate_symbol(symbol)
    trade_id = TradeId(
        tx_hash=_tx_hash("tx_hash", tx_hash), log_index=_non_negative_int("log_index", log_index)
    )
    command = position.AcknowledgeOnChainFill(
        trade_id=trade_id,
        amount=_positive("amount", amount),
        direction=_direction(direction),
        price_usdc=_positive("price_usdc", price_usdc),
        block_timestamp=_aware("block_timestamp", block_timestamp),
    )
    moment = _aware("now", now) if now is not None else timezone.now()
    with transaction.atomic():
        # Serialise fills of this symbol (the same rows, in the same order, the projection
        # locks next), so two deliveries of one trade cannot both pass the check below.
        pools_lock({symbol, USDC_POOL})
        if _onchain_fill_recorded(symbol, trade_id):
            logger.info("fill %s for %s already recorded, skipped", trade_id, symbol)
            return []
        _position_ready(symbol, moment)
        stored = aggregate_execute(
            spec=position.SPEC, aggregate_id=symbol, command=command, now=moment
        )
    logger.info(
        "recorded onchain %s fill %s %s @ %s USDC (%s)",
        command.direction,
        command.amount,
        symbol,
        command.price_usdc,
        trade_id,
    )
    return stored


def fill_record_offchain(
    *,
    symbol: str,
    execution_id: int,
    shares_filled: Decimal,
    direction: Direction | str,
    broker_order_id: str,
    price_cents: int,
    broker_timestamp: datetime,
    now: datetime | None = None,
) -> list[StoredEvent]:
    """Record a brokerage hedge fill of the symbol's pending execution (moves offchain
    shares and cash). Refused by the Position aggregate when no such execution is pending."""
    symbol = validate_symbol(symbol)
    if not isinstance(broker_order_id, str) or not broker_order_id.strip():
        raise InvalidValue("broker_order_id", broker_order_id, "must be a non-empty string")
    command = position.CompleteOffChainOrder(
        execution_id=_non_negative_int("execution_id", execution_id),
        shares_filled=_positive("shares_filled", shares_filled),
        direction=_direction(direction),
        broker_order_id=broker_order_id,
        price_cents=_non_negative_int("price_cents", price_cents),
        broker_timestamp=_aware("broker_timestamp", broker_timestamp),
    )
    moment = _aware("now", now) if now is not None else timezone.now()
    with transaction.atomic():
        stored = aggregate_execute(
            spec=position.SPEC, aggregate_id=symbol, command=command, now=moment
        )
    logger.info(
        "recorded offchain %s fill %s %s @ %s cents (execution %s)",
        command.direction,
        command.shares_filled,
        symbol,
        command.price_cents,
        command.execution_id,
    )
    return stored


# --- balance snapshots (B1) -------------------------------------------------------------------


def _snapshot_state() -> tuple[Lifecycle[Any], int]:
    """The snapshot aggregate's state from the newest event of each kind (not a full replay:
    the state is only a per-kind watermark) and its last sequence."""
    rows = Event.objects.filter(
        aggregate_type=ev.SNAPSHOT, aggregate_id=snapshot_domain.SNAPSHOT_AGGREGATE_ID
    )
    last_sequence = rows.aggregate(last=Max("sequence"))["last"] or 0
    state: Lifecycle[Any] = Lifecycle.uninitialized()
    for event_class in snapshot_domain.SNAPSHOT_EVENTS:
        newest = rows.filter(event_type=event_class.event_type_name()).order_by("-sequence").first()
        if newest is not None:
            state = snapshot_domain.SPEC.apply(state, newest.domain_event())
    return state, last_sequence


def snapshot_record(
    *,
    fetched_at: datetime,
    onchain_equity: Mapping[str, Decimal] | None = None,
    offchain_equity: Mapping[str, Decimal] | None = None,
    onchain_cash: Decimal | None = None,
    offchain_cash: Decimal | None = None,
    now: datetime | None = None,
) -> list[StoredEvent]:
    """Record polled venue balances (each argument given is one snapshot event).

    Equity mappings are base symbol -> shares; cash in USDC/USD. A pool takes a snapshot's
    value only while nothing is inflight in it; a snapshot older than the newest of its
    kind is ignored.
    """
    commands: list[snapshot_domain.SnapshotCommand] = []
    if onchain_equity is not None:
        commands.append(snapshot_domain.RecordOnchainEquity(onchain_equity, fetched_at))
    if offchain_equity is not None:
        commands.append(snapshot_domain.RecordOffchainEquity(offchain_equity, fetched_at))
    if onchain_cash is not None:
        commands.append(snapshot_domain.RecordOnchainCash(onchain_cash, fetched_at))
    if offchain_cash is not None:
        commands.append(snapshot_domain.RecordOffchainCash(offchain_cash, fetched_at))
    if not commands:
        raise InvalidValue("snapshot", None, "give at least one balance to record")
    for command in commands:
        snapshot_domain.event_for(command)  # validate everything before writing
    moment = _aware("now", now) if now is not None else timezone.now()
    for attempt in range(1, MAX_APPEND_ATTEMPTS + 1):
        try:
            with transaction.atomic():
                state, last_sequence = _snapshot_state()
                events = []
                for command in commands:
                    events.extend(snapshot_domain.SPEC.handle(state, command, moment))
                if not events:
                    logger.info("stale balance snapshot fetched at %s ignored", fetched_at)
                    return []
                return events_append(
                    spec=snapshot_domain.SPEC,
                    aggregate_id=snapshot_domain.SNAPSHOT_AGGREGATE_ID,
                    events=events,
                    expected_sequence=last_sequence,
                    now=moment,
                )
        except IntegrityError:
            logger.warning("snapshot sequence conflict (attempt %d), retrying", attempt)
    raise ConcurrencyError(ev.SNAPSHOT, snapshot_domain.SNAPSHOT_AGGREGATE_ID, MAX_APPEND_ATTEMPTS)


# --- assets (spec section 10, B8) -------------------------------------------------------------


class AssetConflict(InvalidValue):
    """A base symbol or token address that is already registered."""


def asset_register(
    *,
    base_symbol: str,
    token_address: str,
    token_symbol: str,
    vault_id: str,
    changed_by: str,
    decimals: int = 18,
    rebalancing_enabled: bool = True,
    now: datetime | None = None,
) -> Asset:
    """Register a tokenized equity; refuses a token whose symbol's base is not `base_symbol`."""
    try:
        base_symbol = validate_symbol(base_symbol)
    except InvalidValue as error:
        raise InvalidValue("base_symbol", base_symbol, error.rule) from None
    if not isinstance(token_symbol, str):
        raise InvalidValue("token_symbol", token_symbol, "must be a string")
    parsed = TokenizedEquitySymbol.parse(token_symbol)
    if parsed.base != base_symbol:
        raise InvalidValue(
            "token_symbol",
            token_symbol,
            f"its base {parsed.base!r} differs from base_symbol {base_symbol!r}",
        )
    if not isinstance(token_address, str) or not is_address(token_address):
        raise InvalidValue("token_address", token_address, "must be a 20-byte hex address")
    address = to_checksum_address(token_address)
    if not isinstance(vault_id, str) or not _VAULT_ID.match(vault_id):
        raise InvalidValue("vault_id", vault_id, "must be 0x followed by 64 hex digits")
    if isinstance(decimals, bool) or not isinstance(decimals, int) or not 0 <= decimals <= 77:
        raise InvalidValue("decimals", decimals, "must be an integer between 0 and 77")
    if not isinstance(rebalancing_enabled, bool):
        raise InvalidValue("rebalancing_enabled", rebalancing_enabled, "must be a boolean")
    who = _changed_by(changed_by)
    moment = _aware("now", now) if now is not None else timezone.now()
    with transaction.atomic():
        if Asset.objects.filter(base_symbol=base_symbol).exists():
            raise AssetConflict("base_symbol", base_symbol, "is already registered")
        if Asset.objects.filter(token_address=address).exists():
            raise AssetConflict("token_address", address, "is already registered")
        asset = Asset.objects.create(
            base_symbol=base_symbol,
            token_address=address,
            token_symbol=token_symbol,
            decimals=decimals,
            vault_id=vault_id.lower(),
            rebalancing_enabled=rebalancing_enabled,
            created_at=moment,
            updated_at=moment,
        )
        aggregate_execute(
            spec=settings_domain.SPEC,
            aggregate_id=base_symbol,
            command=settings_domain.ChangeSetting(
                scope=base_symbol,
                setting=settings_domain.ASSET_REGISTERED,
                old_value=None,
                new_value=(
                    f"token_address={address} token_symbol={token_symbol} "
                    f"decimals={decimals} vault_id={asset.vault_id} "
                    f"rebalancing_enabled={settings_domain.format_setting(rebalancing_enabled)}"
                ),
                changed_by=who,
            ),
            now=moment,
        )
    logger.info("registered asset %s -> %s (%s) by %s", base_symbol, address, token_symbol, who)
    return asset


# --- settings ---------------------------------------------------------------------------------


def settings_row_defaults() -> dict[str, Any]:
    config = django_settings.REBALANCING
    return {
        "paused": False,
        "equity_target_ratio": config.equity_target_ratio,
        "equity_deviation": config.equity_deviation,
        "usdc_target_ratio": config.usdc_target_ratio,
        "usdc_deviation": config.usdc_deviation,
        "equity_minimum_shares": config.equity_minimum_shares,
        "usdc_minimum": config.usdc_minimum,
        "equity_cap_shares": config.equity_cap_shares,
        "usdc_cap": config.usdc_cap,
    }


def settings_row_ensure() -> RebalancingSettingsRow:
    """The global settings row, created from `settings.REBALANCING` on first use."""
    row = RebalancingSettingsRow.objects.filter(scope=settings_domain.GLOBAL_SCOPE).first()
    if row is not None:
        return row
    with transaction.atomic():
        row, created = RebalancingSettingsRow.objects.get_or_create(
            scope=settings_domain.GLOBAL_SCOPE, defaults=settings_row_defaults()
        )
    if created:
        logger.info("created global rebalancing settings from the environment defaults")
    return row


def setting_change(
    *,
    scope: str,
    setting: str,
    new_value: Any,
    changed_by: str,
    now: datetime | None = None,
) -> StoredEvent | None:
    """Change one setting and append the audited `SettingChanged` in the same transaction.

    `scope` is "global" or a registered asset's base symbol. Returns the event, or None
    when the value does not change (nothing written).
    """
    value = settings_domain.parse_setting(scope, setting, new_value)
    who = _changed_by(changed_by)
    moment = _aware("now", now) if now is not None else timezone.now()
    if scope == settings_domain.GLOBAL_SCOPE:
        settings_row_ensure()
    with transaction.atomic():
        if scope == settings_domain.GLOBAL_SCOPE:
            row: Any = RebalancingSettingsRow.objects.select_for_update().get(scope=scope)
        else:
            row = Asset.objects.select_for_update().filter(base_symbol=scope).first()
            if row is None:
                raise InvalidValue("scope", scope, "no asset is registered with this symbol")
        old = getattr(row, setting)
        if old == value and type(old) is type(value):
            return None
        stored = aggregate_execute(
            spec=settings_domain.SPEC,
            aggregate_id=scope,
            command=settings_domain.ChangeSetting(
                scope=scope,
                setting=setting,
                old_value=settings_domain.format_setting(old),
                new_value=settings_domain.format_setting(value),
                changed_by=who,
            ),
            now=moment,
        )
        setattr(row, setting, value)
        row.updated_at = moment
        fields = [setting, "updated_at"]
        if isinstance(row, RebalancingSettingsRow):
            row.updated_by = who
            fields.append("updated_by")
        row.save(update_fields=fields)
    logger.info("setting %s/%s changed from %s to %s by %s", scope, setting, old, value, who)
    return stored[0] if stored else None


# --- rebuild ----------------------------------------------------------------------------------

REBUILD_CHUNK_SIZE = 2000

POOL_FIELDS = (
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
)


@dataclass(frozen=True)
class PoolDifference:
    pool: str
    field: str
    stored: Any
    rebuilt: Any

    def __str__(self) -> str:
        return f"{self.pool}.{self.field}: stored {self.stored!r}, rebuilt {self.rebuilt!r}"


def inventory_fold_log(
    *, progress: Callable[[Iterable[Event], int], Iterable[Event]] | None = None
) -> dict[str, InventoryPool]:
    """Replay the whole log in id order with the projection's pure fold; unsaved rows."""
    fold = InventoryFold()
    last_event: dict[str, int] = {}
    rows: Iterable[Event] = (
        Event.objects.order_by("id")
        .only("id", "aggregate_type", "aggregate_id", "event_type", "payload", "recorded_at")
        .iterator(chunk_size=REBUILD_CHUNK_SIZE)
    )
    if progress is not None:
        rows = progress(rows, Event.objects.count())
    for row in rows:
        keys = fold.apply(row.aggregate_type, row.aggregate_id, row.domain_event(), row.recorded_at)
        for key in keys:
            last_event[key] = row.id
    rebuilt = {}
    for key, pool in fold.pools.items():
        row = InventoryPool(key=key, kind=InventoryPool.kind_for(key))
        row.set_from_domain(pool)
        row.last_event_id = last_event.get(key)
        rebuilt[key] = row
    return rebuilt


def _differences(
    stored: InventoryPool | None, rebuilt: InventoryPool, key: str
) -> list[PoolDifference]:
    baseline = stored or InventoryPool(key=key, kind=InventoryPool.kind_for(key))
    found = []
    for name in POOL_FIELDS:
        old, new = getattr(baseline, name), getattr(rebuilt, name)
        if stored is None or old != new:
            found.append(PoolDifference(key, name, None if stored is None else old, new))
    return found


def inventory_rebuild(
    *,
    write: bool,
    progress: Callable[[Iterable[Event], int], Iterable[Event]] | None = None,
) -> list[PoolDifference]:
    """Replay the log, report every difference from the stored pools, and (with `write`)
    store the rebuilt values. Runs with every pool row locked, in one transaction."""
    with transaction.atomic():
        stored = {row.key: row for row in InventoryPool.objects.select_for_update().order_by("pk")}
        rebuilt = inventory_fold_log(progress=progress)
        differences: list[PoolDifference] = []
        for key in sorted(set(stored) | set(rebuilt)):
            target = rebuilt.get(key) or InventoryPool(key=key, kind=InventoryPool.kind_for(key))
            differences.extend(_differences(stored.get(key), target, key))
        if write and differences:
            for key in sorted({d.pool for d in differences}):
                target = rebuilt.get(key) or InventoryPool(
                    key=key, kind=InventoryPool.kind_for(key)
                )
                row = stored.get(key)
                if row is None:
                    target.save(force_insert=True)
                    continue
                fields = [d.field for d in differences if d.pool == key]
                for name in fields:
                    setattr(row, name, getattr(target, name))
                row.save(update_fields=fields)
    for difference in differences:
        logger.warning("inventory rebuild difference: %s", difference)
    logger.info(
        "inventory rebuild: %d pool(s), %d difference(s)%s",
        len(set(stored) | set(rebuilt)),
        len(differences),
        ", written" if write and differences else "",
    )
    return differences

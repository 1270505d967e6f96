from decimal import Decimal

from django.db import models
from django.utils import timezone

from inventory.domain.inventory import PoolInventory, VenueBalance
from inventory.domain.values import USDC_POOL
from inventory.fields import ExactDecimalField


class Event(models.Model):
    """One fact in the append-only log. The database refuses UPDATE and DELETE on this table."""

    id = models.BigAutoField(primary_key=True)
    aggregate_type = models.CharField(max_length=64)
    aggregate_id = models.CharField(max_length=128)
    sequence = models.PositiveBigIntegerField()
    event_type = models.CharField(max_length=128)
    event_version = models.CharField(max_length=16, default="1.0")
    payload = models.JSONField()
    metadata = models.JSONField(default=dict, blank=True)
    recorded_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["aggregate_type", "aggregate_id", "sequence"],
                name="event_unique_aggregate_sequence",
            ),
            models.CheckConstraint(
                condition=models.Q(sequence__gte=1), name="event_sequence_gte_1"
            ),
        ]
        indexes = [
            models.Index(fields=["event_type"], name="event_type_idx"),
            models.Index(fields=["aggregate_id"], name="event_aggregate_id_idx"),
            models.Index(fields=["event_type", "recorded_at"], name="event_type_recorded_idx"),
        ]
        ordering = ["id"]

    def __str__(self) -> str:
        return (
            f"#{self.id} {self.aggregate_type}/{self.aggregate_id}"
            f"#{self.sequence} {self.event_type}"
        )

    def domain_event(self):
        from inventory.codec import decode_event

        return decode_event(self.event_type, self.payload)


class PoolKind(models.TextChoices):
    EQUITY = "equity", "Equity"
    USDC = "usdc", "USDC"


class InventoryPool(models.Model):
    """Projection row: one per equity symbol and one for USDC ("USDC").

    Updated in the same transaction as the events it reflects (`inventory.projection`);
    `rebuild_inventory` replays the log and must reproduce every field. An unobserved venue
    (never snapshotted) has `*_observed = False` and zero amounts.
    """

    id = models.BigAutoField(primary_key=True)
    key = models.CharField(max_length=64, unique=True)
    kind = models.CharField(max_length=16, choices=PoolKind.choices)
    onchain_available = ExactDecimalField(default=Decimal(0))
    onchain_inflight = ExactDecimalField(default=Decimal(0))
    offchain_available = ExactDecimalField(default=Decimal(0))
    offchain_inflight = ExactDecimalField(default=Decimal(0))
    onchain_observed = models.BooleanField(default=False)
    offchain_observed = models.BooleanField(default=False)
    last_rebalancing = models.DateTimeField(null=True, blank=True)
    needs_reconciliation = models.BooleanField(default=False)
    reconciliation_reason = models.TextField(blank=True, default="")
    last_event_id = models.BigIntegerField(null=True, blank=True)
    # The domain's `last_updated`: event time of the last change, deterministic on replay.
    updated_at = models.DateTimeField(null=True, blank=True)
    # Recorded time of the operation event that last changed the inflight: a balance snapshot
    # fetched at or before it is stale for this pool.
    inflight_changed_at = models.DateTimeField(null=True, blank=True)
    # Spec 15.2 (a snapshot and a fill never count one trade twice): the block of the onchain
    # snapshot last taken (the fill legs above it are rows of `OnchainFillLeg`), hedges
    # pending at the brokerage and when the last hedge fill was recorded.
    onchain_block = models.BigIntegerField(null=True, blank=True)
    offchain_hedges_pending = models.PositiveIntegerField(default=0)
    offchain_last_fill_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["key"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(kind__in=PoolKind.values), name="inventorypool_kind_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.key} pool"

    def to_domain(self) -> PoolInventory:
        """The pool without its remembered fill legs (`onchain_fills_after` empty): they are
        rows of `OnchainFillLeg`, loaded by the projection only to apply an onchain snapshot
        (`inventory.projection`)."""
        return PoolInventory(
            onchain=(
                VenueBalance(self.onchain_available, self.onchain_inflight)
                if self.onchain_observed
                else None
            ),
            offchain=(
                VenueBalance(self.offchain_available, self.offchain_inflight)
                if self.offchain_observed
                else None
            ),
            last_rebalancing=self.last_rebalancing,
            last_updated=self.updated_at,
            reconciliation_reason=self.reconciliation_reason if self.needs_reconciliation else None,
            inflight_changed_at=self.inflight_changed_at,
            onchain_block=self.onchain_block,
            offchain_hedges_pending=self.offchain_hedges_pending,
            offchain_last_fill_at=self.offchain_last_fill_at,
        )

    def set_from_domain(self, pool: PoolInventory) -> list[str]:
        """Copy a domain pool onto the row; returns the names of the fields that changed."""
        on = pool.onchain or VenueBalance()
        off = pool.offchain or VenueBalance()
        values = {
            "onchain_available": on.available,
            "onchain_inflight": on.inflight,
            "offchain_available": off.available,
            "offchain_inflight": off.inflight,
            "onchain_observed": pool.onchain is not None,
            "offchain_observed": pool.offchain is not None,
            "last_rebalancing": pool.last_rebalancing,
            "needs_reconciliation": pool.needs_reconciliation,
            "reconciliation_reason": pool.reconciliation_reason or "",
            "updated_at": pool.last_updated,
            "inflight_changed_at": pool.inflight_changed_at,
            "onchain_block": pool.onchain_block,
            "offchain_hedges_pending": pool.offchain_hedges_pending,
            "offchain_last_fill_at": pool.offchain_last_fill_at,
        }
        changed = []
        for name, value in values.items():
            current = getattr(self, name)
            if current != value:
                setattr(self, name, value)
                changed.append(name)
        return changed

    @staticmethod
    def kind_for(key: str) -> str:
        return PoolKind.USDC if key == USDC_POOL else PoolKind.EQUITY


class OnchainFillLeg(models.Model):
    """Spec 15.2: one onchain fill leg (a fill's signed change of one pool's onchain
    available) above the pool's onchain snapshot block, remembered so that a snapshot pinned
    below it (a lagging poll) re-applies it. Derived state (`rebuild_inventory` rebuilds and
    checks it): inserted with its fill (one row per pool and fill, whatever the number
    remembered), deleted when a snapshot taken at or above its block covers it. No limit on
    how many are remembered."""

    id = models.BigAutoField(primary_key=True)
    pool_key = models.CharField(max_length=64)
    # The fill event; None for legs moved from a pool's list before they were rows (0013).
    event_id = models.BigIntegerField(null=True, blank=True)
    block_number = models.BigIntegerField()
    delta = ExactDecimalField()

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["pool_key", "block_number"], name="fillleg_pool_block_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.pool_key} leg {self.delta} at block {self.block_number}"


class ChainHead(models.Model):
    """The chain's head as the service last saw it: the highest block an onchain snapshot was
    pinned to (the venue poller reads the head, then every vault at it). Derived from the log
    (`rebuild_inventory` checks it), raised in the transaction that appends the snapshot. A
    fill's block may not exceed it by more than `FILL_BLOCK_MARGIN` (`inventory.chain_head`).
    One row."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    block = models.BigIntegerField(null=True, blank=True)
    event_id = models.BigIntegerField(null=True, blank=True)

    def __str__(self) -> str:
        return f"chain head {self.block}"


class Asset(models.Model):
    """A tokenized equity we rebalance (spec section 10): base symbol <-> onchain token."""

    id = models.BigAutoField(primary_key=True)
    base_symbol = models.CharField(max_length=32, unique=True)
    token_address = models.CharField(max_length=42, unique=True)
    token_symbol = models.CharField(max_length=40)
    decimals = models.PositiveSmallIntegerField(default=18)
    vault_id = models.CharField(max_length=66)
    rebalancing_enabled = models.BooleanField(default=True)
    # Per-asset threshold overrides; None falls back to the global equity threshold.
    target_ratio = ExactDecimalField(null=True, blank=True)
    deviation = ExactDecimalField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["base_symbol"]

    def __str__(self) -> str:
        return f"{self.base_symbol} ({self.token_symbol} {self.token_address})"


class RebalancingSettingsRow(models.Model):
    """Operator-editable global settings; one row (`scope="global"`), created on first read
    from `settings.REBALANCING`. Every change also appends a `SettingChanged` event."""

    id = models.BigAutoField(primary_key=True)
    scope = models.CharField(max_length=32, unique=True, default="global")
    paused = models.BooleanField(default=False)
    equity_target_ratio = ExactDecimalField()
    equity_deviation = ExactDecimalField()
    usdc_target_ratio = ExactDecimalField()
    usdc_deviation = ExactDecimalField()
    equity_minimum_shares = ExactDecimalField()
    usdc_minimum = ExactDecimalField()
    equity_cap_shares = ExactDecimalField(null=True, blank=True)
    usdc_cap = ExactDecimalField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)
    updated_by = models.CharField(max_length=150, blank=True, default="")

    class Meta:
        verbose_name = "rebalancing settings"
        verbose_name_plural = "rebalancing settings"

    def __str__(self) -> str:
        return f"rebalancing settings ({self.scope})"


class AggregateState(models.Model):
    """The folded state of one aggregate after `sequence`, written in the transaction that
    appends its events, so loading an aggregate folds only the events after it.

    Derived data: the log is the truth. A row of another `version` (the domain code's
    fingerprint) or behind the log is folded forward or ignored, never trusted over the log.
    """

    id = models.BigAutoField(primary_key=True)
    aggregate_type = models.CharField(max_length=64)
    aggregate_id = models.CharField(max_length=128)
    sequence = models.PositiveBigIntegerField()
    version = models.CharField(max_length=64)
    state = models.JSONField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["aggregate_type", "aggregate_id"], name="aggregatestate_unique_aggregate"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.aggregate_type}/{self.aggregate_id} state at #{self.sequence}"


class EventKey(models.Model):
    """An idempotency key carried by an event (a trade id, a hedge's execution id, an Alpaca
    request id we recorded): unique per (scope, key), so a duplicate costs one index lookup
    and two writers cannot both record it. Written with the event, in the same transaction;
    append-only like the event log (`inventory.append_only`)."""

    id = models.BigAutoField(primary_key=True)
    scope = models.CharField(max_length=32)
    # A trade key's UTC day of its block timestamp (days since 1970-01-01), 0 for other keys:
    # where it is filed, never part of its identity (`inventory.event_keys`).
    day = models.IntegerField(default=0)
    key = models.CharField(max_length=200)
    event_id = models.BigIntegerField()
    aggregate_type = models.CharField(max_length=64)
    aggregate_id = models.CharField(max_length=128)
    recorded_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["scope", "key"], name="eventkey_unique_scope_key"),
        ]
        indexes = [
            models.Index(fields=["scope", "recorded_at"], name="eventkey_scope_recorded_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.scope}:{self.key} -> event #{self.event_id}"


class ApiTokenScope(models.TextChoices):
    INGEST = "ingest", "Ingest (record fills and hedges)"
    READ = "read", "Read (pools and operations)"
    OPERATE = "operate", "Operate (start and cancel operations)"


class ApiToken(models.Model):
    """A bearer token for the HTTP API. Only the SHA-256 of the secret is stored; the secret
    is shown once, when the token is created (`inventory.services.api_token_create`)."""

    id = models.BigAutoField(primary_key=True)
    name = models.CharField(max_length=64, unique=True)
    token_hash = models.CharField(max_length=64, unique=True)
    # The first characters of the secret, to tell tokens apart in lists (not enough to use).
    prefix = models.CharField(max_length=16)
    # Space-separated, sorted ApiTokenScope values.
    scopes = models.CharField(max_length=64)
    created_by = models.CharField(max_length=150, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.CharField(max_length=150, blank=True, default="")

    class Meta:
        ordering = ["name"]
        verbose_name = "API token"

    def __str__(self) -> str:
        state = "revoked" if self.revoked_at else "active"
        return f"API token {self.name} ({self.scopes}, {state})"

    @property
    def scope_list(self) -> list[str]:
        return self.scopes.split()

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class ConfigStamp(models.Model):
    """One row whose token the database changes on every write to the settings row, the
    assets and the pool breakers (`inventory.config_stamp`): processes cache those tables and
    read only this row to know whether their copy is current."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    token = models.CharField(max_length=64)

    def __str__(self) -> str:
        return f"configuration stamp {self.token}"


class UsdcFillDelta(models.Model):
    """One onchain fill's change of the USDC pool, not yet folded into its row.

    Every fill moves the USDC pool; locking its row to the commit made all symbols' fills
    take turns. A fill instead inserts this row (append-only, no lock on the USDC row: on
    PostgreSQL a shared advisory lock, `inventory.usdc_deltas.USDC_GATE_LOCK`), and the next
    writer that changes the USDC pool itself (a snapshot, an operation, a hedge, the rebuild)
    takes that lock exclusively, applies these rows to the row in event id order with the
    projection's own rule (`inventory.domain.inventory.onchain_fill_apply`) and deletes
    them. Every reader of the USDC pool sees the row with these applied
    (`inventory.usdc_deltas.pools_current`). Derived state, like the row itself."""

    id = models.BigAutoField(primary_key=True)
    event_id = models.BigIntegerField(unique=True)
    # The fill's signed change of the USDC onchain available (applied unless its block is at
    # or below the pool's onchain snapshot block, or it would make the pool negative).
    delta = ExactDecimalField()
    block_number = models.BigIntegerField(null=True, blank=True)
    # The fill's `seen_at` (the pool's `updated_at` once applied) and when it was recorded
    # (a fill that cannot be applied flags the pool at that time).
    seen_at = models.DateTimeField()
    recorded_at = models.DateTimeField()

    class Meta:
        ordering = ["event_id"]

    def __str__(self) -> str:
        return f"USDC {self.delta} from event #{self.event_id}"

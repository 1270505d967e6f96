"""Operation records: one row per rebalancing operation the trigger started.

The row is the durable guard (a partial unique constraint allows one active operation per pool:
per equity symbol, and one for USDC) and the worker's to-do item. The operation's facts live in
its aggregate's events (`aggregate_id` is that aggregate's id, and for a mint our
issuer_request_id); this row only tracks scheduling: status, attempts, errors, lease, times.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from inventory.domain.events import MINT, REDEMPTION, USDC_REBALANCE
from inventory.domain.values import USDC_POOL
from inventory.fields import ExactDecimalField


class OperationKind(models.TextChoices):
    MINT = "mint", "Mint (offchain shares -> onchain tokens)"
    REDEMPTION = "redemption", "Redemption (onchain tokens -> offchain shares)"
    USDC_ALPACA_TO_BASE = "usdc_alpaca_to_base", "USDC Alpaca -> Base"
    USDC_BASE_TO_ALPACA = "usdc_base_to_alpaca", "USDC Base -> Alpaca"


class OperationStatus(models.TextChoices):
    PENDING = "pending", "Pending"  # created, task queued, no attempt yet
    RUNNING = "running", "Running"  # a worker is advancing it
    WAITING = "waiting", "Waiting"  # between steps, resumes at next_run_at
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


ACTIVE_STATUSES = (OperationStatus.PENDING, OperationStatus.RUNNING, OperationStatus.WAITING)
TERMINAL_STATUSES = (
    OperationStatus.COMPLETED,
    OperationStatus.FAILED,
    OperationStatus.CANCELLED,
)
EQUITY_KINDS = (OperationKind.MINT, OperationKind.REDEMPTION)
USDC_KINDS = (OperationKind.USDC_ALPACA_TO_BASE, OperationKind.USDC_BASE_TO_ALPACA)
AGGREGATE_TYPE_BY_KIND = {
    OperationKind.MINT: MINT,
    OperationKind.REDEMPTION: REDEMPTION,
    OperationKind.USDC_ALPACA_TO_BASE: USDC_REBALANCE,
    OperationKind.USDC_BASE_TO_ALPACA: USDC_REBALANCE,
}


class Operation(models.Model):
    kind = models.CharField(max_length=32, choices=OperationKind.choices)
    # An equity symbol, or "USDC" for the cash pool.
    pool = models.CharField(max_length=32)
    # Shares for mint/redemption, USDC for the USDC kinds.
    amount = ExactDecimalField()
    # The ERC-20 token redeemed (redemptions only), from the asset table.
    token_address = models.CharField(max_length=42, blank=True, default="")
    status = models.CharField(
        max_length=16, choices=OperationStatus.choices, default=OperationStatus.PENDING
    )
    # The operation's aggregate id (UUID4); for a mint also our issuer_request_id.
    aggregate_id = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    # Why it ended when it failed or was cancelled (the terminal event's reason or the operator's).
    failure_reason = models.TextField(blank=True, default="")
    # Who ended it: "event:<EventType>", "system" or an operator name.
    finished_by = models.CharField(max_length=128, blank=True, default="")
    # When a waiting operation is due again (the due loop enqueues its task then).
    next_run_at = models.DateTimeField(null=True, blank=True)
    # Set when a human must look (for example a failure that left inflight behind).
    needs_attention = models.BooleanField(default=False)
    # A worker's lease: a duplicate delivery of the same task skips while it is valid.
    claimed_by = models.CharField(max_length=128, blank=True, default="")
    claimed_until = models.DateTimeField(null=True, blank=True)
    # A task for it was enqueued and no worker has taken it yet: the due loop does not enqueue
    # another before this moment (`operations.due.operations_dispatch`). The row, not the
    # broker, says what is queued; the broker is only the transport that wakes a worker.
    queued_until = models.DateTimeField(null=True, blank=True)
    # After it failed: the pool is not rebalanced again before this (`PoolBreaker`).
    cooldown_until = models.DateTimeField(null=True, blank=True)
    # When a venue request that carries no id of ours (an Alpaca withdrawal POST) was sent
    # and got no answer yet, committed before it leaves: a worker resuming after a crash
    # mid-request gives it time to land before any second request (cleared once answered).
    venue_request_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["pool"],
                condition=models.Q(status__in=ACTIVE_STATUSES),
                name="operation_one_active_per_pool",
                violation_error_message="An operation is already active for this pool.",
            ),
            models.CheckConstraint(
                condition=models.Q(status__in=OperationStatus.values),
                name="operation_status_valid",
            ),
            models.CheckConstraint(
                condition=(
                    models.Q(kind__in=USDC_KINDS, pool=USDC_POOL)
                    | (models.Q(kind__in=EQUITY_KINDS) & ~models.Q(pool=USDC_POOL))
                ),
                name="operation_kind_matches_pool",
            ),
            models.CheckConstraint(
                condition=~models.Q(kind=OperationKind.REDEMPTION, token_address=""),
                name="operation_redemption_has_token",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "next_run_at"], name="operation_status_next_run_idx"),
            models.Index(fields=["pool", "-created_at"], name="operation_pool_created_idx"),
        ]
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"#{self.pk} {self.kind} {self.pool} {self.amount} [{self.status}]"

    @property
    def aggregate_type(self) -> str:
        return AGGREGATE_TYPE_BY_KIND[OperationKind(self.kind)]

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES


class PoolBreaker(models.Model):
    """Failures do not loop: consecutive failed operations of one pool, its cool-down and its
    circuit breaker (`operations.services.pool_failure_record` / `pool_resume`).

    Each failure sets `cooldown_until` (the base doubled per consecutive failure, capped) and the
    trigger plans nothing for the pool before then; the due loop re-checks the pool once when
    it ends (`recheck_pending`). At the configured count the breaker opens (`open_since`):
    nothing is planned until an operator resumes the pool. Opening and resuming are audited as
    `SettingChanged` events, like the pause switch. A completed operation resets the count.
    """

    pool = models.CharField(max_length=32, unique=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    cooldown_until = models.DateTimeField(null=True, blank=True)
    recheck_pending = models.BooleanField(default=False)
    open_since = models.DateTimeField(null=True, blank=True)
    last_failure_reason = models.TextField(blank=True, default="")
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        state = "open" if self.open_since else "closed"
        return f"{self.pool}: breaker {state}, {self.consecutive_failures} failure(s) in a row"

    @property
    def is_open(self) -> bool:
        return self.open_since is not None


class ChainNonce(models.Model):
    """The next nonce our signer may use on one chain (`operations.nonces`).

    Allocation locks this row, takes max(stored, the chain's pending nonce read before the
    lock) and records the signed transaction in an event in the same transaction, so two
    workers never sign two transactions with one nonce and a crash never leaves a nonce that
    was allocated but not recorded.
    """

    chain_id = models.BigIntegerField()
    address = models.CharField(max_length=42)
    next_nonce = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["chain_id", "address"], name="chain_nonce_unique"),
        ]

    def __str__(self) -> str:
        return f"chain {self.chain_id} {self.address}: next nonce {self.next_nonce}"


class NonceFill(models.Model):
    """A zero-value transfer to ourselves that takes the nonce of an abandoned transaction.

    An operation failed while its signed transaction had never been broadcast. When that nonce
    was not the last one allocated, every later transaction of ours on the chain would wait
    behind the gap forever; the filler uses the nonce instead. Like every transaction it is
    signed and stored here before it is broadcast, broadcast again until its nonce is used
    (`operations.nonces.nonce_fills_resume`), and `settled_at` is set once that nonce is mined
    (by the filler, or by anything else).
    """

    chain_id = models.BigIntegerField()
    address = models.CharField(max_length=42)
    nonce = models.BigIntegerField()
    abandoned_tx_hash = models.CharField(max_length=66)
    raw_tx = models.BinaryField()
    tx_hash = models.CharField(max_length=66)
    operation = models.ForeignKey(
        Operation, null=True, blank=True, on_delete=models.PROTECT, related_name="nonce_fills"
    )
    created_at = models.DateTimeField(default=timezone.now)
    settled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["chain_id", "address", "nonce"], name="nonce_fill_unique"
            ),
        ]

    def __str__(self) -> str:
        state = "settled" if self.settled_at else "pending"
        return f"chain {self.chain_id} {self.address}: nonce {self.nonce} filler ({state})"


class GasQuote(models.Model):
    """One chain's gas price as last read (issue 24), with the ETH/USD feed's price then: the
    cost gate estimates with it inside the trigger's transaction, without a network call.
    Written by the ticker's cost-quote job (`operations.costgate.gas_quotes_refresh`)."""

    chain = models.CharField(max_length=32, primary_key=True)
    # The base fee of the latest block plus the priority fee: what a transaction pays now.
    gas_price_wei = models.DecimalField(max_digits=40, decimal_places=0)
    eth_usd = ExactDecimalField(null=True, blank=True)
    read_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.chain}: {self.gas_price_wei} wei/gas at {self.read_at.isoformat()}"

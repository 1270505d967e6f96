"""Inventory maths: venue balances, pools, imbalance detection and event application.

Pure: standard library only, time passed in. Spec section 3 with the section-12 fixes:
venues that were never observed are `None` (distinct from zero, B1), genesis data comes from
the operation's first stored event (B3), fills move USDC too (B11), a USDC move credits the
amount that arrived (B6: deposited, else bridged) and an operator reconciliation zeroes kept
inflight (B13). Issue 8: an operation's amount is inflight from its intent (before any venue
is called) until it is usable at the destination (tokens in the vault, shares credited, USDC
deposited), and a snapshot fetched at or before a pool's latest inflight change is stale there.

All arithmetic runs in `_EXACT`, a context that refuses to round (`Inexact` trapped): an
amount is either represented exactly or the operation fails, it is never silently changed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import (
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
)
from functools import cached_property
from typing import Any

from inventory.domain import events as ev
from inventory.domain.values import (
    USDC_POOL,
    Direction,
    DomainError,
    InvalidValue,
    RebalanceDirection,
)

ZERO = Decimal(0)

_EXACT = Context(
    prec=120,
    rounding=ROUND_HALF_EVEN,
    Emin=-999999,
    Emax=999999,
    traps=[Inexact, InvalidOperation, DivisionByZero, Overflow],
)
# Ratios are for display only; detection compares products exactly.
_RATIO = Context(prec=40, rounding=ROUND_HALF_EVEN, Emin=-999999, Emax=999999)
# Normalizing for messages must not round either.
_RATIO_TEXT = Context(prec=200, rounding=ROUND_HALF_EVEN, Emin=-999999, Emax=999999)


# --- errors -----------------------------------------------------------------------------------


def fmt(amount: object) -> str:
    """Canonical text of an amount (`0.000000`, `0` and `0E-6` all print `0`), so a stored
    message never depends on how a Decimal happened to be represented."""
    if isinstance(amount, Decimal) and amount.is_finite():
        text = format(amount.normalize(_RATIO_TEXT), "f")
        return "0" if text in ("-0", "0") else text
    return repr(amount)


class InventoryError(DomainError):
    """A balance change that cannot be applied; the caller keeps the old value."""


class InsufficientAvailable(InventoryError):
    def __init__(self, requested: Decimal, available: Decimal) -> None:
        self.requested = requested
        self.available = available
        super().__init__(
            f"insufficient available: requested {fmt(requested)}, available {fmt(available)}"
        )


class InsufficientInflight(InventoryError):
    def __init__(self, requested: Decimal, inflight: Decimal) -> None:
        self.requested = requested
        self.inflight = inflight
        super().__init__(
            f"insufficient inflight: requested {fmt(requested)}, inflight {fmt(inflight)}"
        )


class VenueNotObserved(InventoryError):
    def __init__(self, venue: str) -> None:
        self.venue = venue
        super().__init__(f"{venue} venue was never observed (no balance snapshot yet)")


class InvalidAmount(InventoryError):
    def __init__(self, amount: object, rule: str) -> None:
        self.amount = amount
        self.rule = rule
        super().__init__(f"amount {fmt(amount)}: {rule}")


class InventoryArithmeticError(InventoryError):
    def __init__(self, operation: str, lhs: Decimal, rhs: Decimal) -> None:
        self.operation = operation
        self.lhs = lhs
        self.rhs = rhs
        super().__init__(f"{operation}({fmt(lhs)}, {fmt(rhs)}) cannot be computed exactly")


def _amount(a: Decimal) -> Decimal:
    if not isinstance(a, Decimal) or not a.is_finite():
        raise InvalidAmount(a, "must be a finite Decimal")
    if a < 0:
        raise InvalidAmount(a, "must be >= 0")
    return a


def _add(lhs: Decimal, rhs: Decimal) -> Decimal:
    try:
        return _EXACT.add(lhs, rhs)
    except ArithmeticError:
        raise InventoryArithmeticError("add", lhs, rhs) from None


def _sub(lhs: Decimal, rhs: Decimal) -> Decimal:
    try:
        return _EXACT.subtract(lhs, rhs)
    except ArithmeticError:
        raise InventoryArithmeticError("subtract", lhs, rhs) from None


def _mul(lhs: Decimal, rhs: Decimal) -> Decimal:
    try:
        return _EXACT.multiply(lhs, rhs)
    except ArithmeticError:
        raise InventoryArithmeticError("multiply", lhs, rhs) from None


# --- 3.1 VenueBalance -------------------------------------------------------------------------


def _available_plus(available: Decimal, a: Decimal) -> Decimal:
    """`available` with `a` (>= 0) added: `VenueBalance.add_available`'s rule."""
    return _add(available, _amount(a))


def _available_minus(available: Decimal, a: Decimal) -> Decimal:
    """`available` less `a` (>= 0), never below zero: `VenueBalance.remove_available`'s rule."""
    a = _amount(a)
    left = _sub(available, a)
    if left < 0:
        raise InsufficientAvailable(requested=a, available=available)
    return left


@dataclass(frozen=True)
class VenueBalance:
    """Assets ready at a venue (`available`) and assets that left it (`inflight`)."""

    available: Decimal = ZERO
    inflight: Decimal = ZERO

    def total(self) -> Decimal:
        return _add(self.available, self.inflight)

    def has_inflight(self) -> bool:
        return self.inflight != 0

    def move_to_inflight(self, a: Decimal) -> VenueBalance:
        a = _amount(a)
        available = _sub(self.available, a)
        if available < 0:
            raise InsufficientAvailable(requested=a, available=self.available)
        return VenueBalance(available=available, inflight=_add(self.inflight, a))

    def confirm_inflight(self, a: Decimal) -> VenueBalance:
        a = _amount(a)
        inflight = _sub(self.inflight, a)
        if inflight < 0:
            raise InsufficientInflight(requested=a, inflight=self.inflight)
        return VenueBalance(available=self.available, inflight=inflight)

    def cancel_inflight(self, a: Decimal) -> VenueBalance:
        a = _amount(a)
        inflight = _sub(self.inflight, a)
        if inflight < 0:
            raise InsufficientInflight(requested=a, inflight=self.inflight)
        return VenueBalance(available=_add(self.available, a), inflight=inflight)

    def add_available(self, a: Decimal) -> VenueBalance:
        return VenueBalance(available=_available_plus(self.available, a), inflight=self.inflight)

    def remove_available(self, a: Decimal) -> VenueBalance:
        return VenueBalance(available=_available_minus(self.available, a), inflight=self.inflight)

    def with_available(self, a: Decimal) -> VenueBalance:
        return VenueBalance(available=_amount(a), inflight=self.inflight)


# --- 3.2 PoolInventory ------------------------------------------------------------------------

ONCHAIN = "onchain"
OFFCHAIN = "offchain"


@dataclass(frozen=True)
class PoolInventory:
    """One venue pair (an equity symbol or the USDC pool).

    `None` for a venue means it was never observed (no snapshot yet), which is not zero.
    `reconciliation_reason` is set when a recorded fact could not be applied; the values are
    then not trusted until a balance snapshot sets them again.
    """

    onchain: VenueBalance | None = None
    offchain: VenueBalance | None = None
    last_rebalancing: datetime | None = None
    last_updated: datetime | None = None
    reconciliation_reason: str | None = None
    # When an operation event last changed this pool's inflight (its recorded time): a balance
    # snapshot fetched at or before it may predate that money movement, so it is stale here.
    inflight_changed_at: datetime | None = None
    # Spec 15.2, onchain: the block of the onchain snapshot this pool last took (None: not
    # pinned), and the onchain fill legs applied since whose block is above it, as
    # (block, signed amount), so a snapshot read below a fill it has not seen keeps the fill.
    # All of them (no limit). In the database they are `OnchainFillLeg` rows: a pool read from
    # its row carries none until the projection loads them for an onchain snapshot.
    onchain_block: int | None = None
    onchain_fills_after: tuple[tuple[int, Decimal], ...] = ()
    # Spec 15.2, offchain: hedges placed and not yet filled or failed, and when the last
    # hedge fill was recorded; an offchain snapshot read before either is not taken.
    offchain_hedges_pending: int = 0
    offchain_last_fill_at: datetime | None = None

    @property
    def needs_reconciliation(self) -> bool:
        return self.reconciliation_reason is not None

    @property
    def observed(self) -> bool:
        return self.onchain is not None and self.offchain is not None

    def venue(self, name: str) -> VenueBalance:
        balance = self.onchain if name == ONCHAIN else self.offchain
        if balance is None:
            raise VenueNotObserved(name)
        return balance

    def with_venue(self, name: str, balance: VenueBalance) -> PoolInventory:
        if name == ONCHAIN:
            return replace(self, onchain=balance)
        return replace(self, offchain=balance)

    def has_inflight(self) -> bool:
        on, off = self.onchain, self.offchain
        return (on is not None and on.inflight != 0) or (off is not None and off.inflight != 0)

    def add_onchain_available(self, a: Decimal) -> PoolInventory:
        return self.with_venue(ONCHAIN, self.venue(ONCHAIN).add_available(a))

    def remove_onchain_available(self, a: Decimal) -> PoolInventory:
        return self.with_venue(ONCHAIN, self.venue(ONCHAIN).remove_available(a))

    def add_offchain_available(self, a: Decimal) -> PoolInventory:
        return self.with_venue(OFFCHAIN, self.venue(OFFCHAIN).add_available(a))

    def remove_offchain_available(self, a: Decimal) -> PoolInventory:
        return self.with_venue(OFFCHAIN, self.venue(OFFCHAIN).remove_available(a))

    def move_offchain_to_inflight(self, a: Decimal) -> PoolInventory:
        return self.with_venue(OFFCHAIN, self.venue(OFFCHAIN).move_to_inflight(a))

    def move_onchain_to_inflight(self, a: Decimal) -> PoolInventory:
        return self.with_venue(ONCHAIN, self.venue(ONCHAIN).move_to_inflight(a))

    def transfer_offchain_inflight_to_onchain(
        self, a: Decimal, received: Decimal | None = None
    ) -> PoolInventory:
        """Confirm `a` out of offchain inflight; credit onchain with `received` (default a)."""
        offchain = self.venue(OFFCHAIN).confirm_inflight(a)
        onchain = self.venue(ONCHAIN).add_available(a if received is None else received)
        return replace(self, onchain=onchain, offchain=offchain)

    def transfer_onchain_inflight_to_offchain(
        self, a: Decimal, received: Decimal | None = None
    ) -> PoolInventory:
        onchain = self.venue(ONCHAIN).confirm_inflight(a)
        offchain = self.venue(OFFCHAIN).add_available(a if received is None else received)
        return replace(self, onchain=onchain, offchain=offchain)

    def cancel_offchain_inflight(self, a: Decimal) -> PoolInventory:
        return self.with_venue(OFFCHAIN, self.venue(OFFCHAIN).cancel_inflight(a))

    def cancel_onchain_inflight(self, a: Decimal) -> PoolInventory:
        return self.with_venue(ONCHAIN, self.venue(ONCHAIN).cancel_inflight(a))

    def reconcile_inflight(self, venue: str, a: Decimal) -> PoolInventory:
        """Zero `a` of the venue's inflight without crediting anything (operator, B13)."""
        return self.with_venue(venue, self.venue(venue).confirm_inflight(a))

    def with_last_rebalancing(self, ts: datetime) -> PoolInventory:
        return replace(self, last_rebalancing=ts)

    def touched(self, ts: datetime) -> PoolInventory:
        return replace(self, last_updated=ts)

    def inflight_changed(self, ts: datetime) -> PoolInventory:
        return replace(self, inflight_changed_at=ts)

    def snapshot_is_stale(self, fetched_at: datetime) -> bool:
        """A snapshot fetched at or before the latest inflight change may not show it."""
        return self.inflight_changed_at is not None and fetched_at <= self.inflight_changed_at

    def flagged(self, reason: str) -> PoolInventory:
        return replace(self, reconciliation_reason=reason)


# --- 3.3 Imbalance detection ------------------------------------------------------------------


@dataclass(frozen=True)
class ImbalanceThreshold:
    """Target onchain share of the pool and the allowed deviation either side."""

    target: Decimal
    deviation: Decimal

    def __post_init__(self) -> None:
        for name in ("target", "deviation"):
            value = getattr(self, name)
            if not isinstance(value, Decimal) or not value.is_finite():
                raise InvalidValue(name, value, "must be a finite Decimal")
        if not ZERO <= self.target <= 1:
            raise InvalidValue("target", self.target, "must be between 0 and 1 inclusive")
        if self.deviation < 0:
            raise InvalidValue("deviation", self.deviation, "must be >= 0")

    # Computed once per threshold (every decision compares with both).
    @cached_property
    def lower(self) -> Decimal:
        return _EXACT.subtract(self.target, self.deviation)

    @cached_property
    def upper(self) -> Decimal:
        return _EXACT.add(self.target, self.deviation)


@dataclass(frozen=True)
class TooMuchOnchain:
    """Redeem (equity) or move USDC Base -> Alpaca by `excess`."""

    excess: Decimal


@dataclass(frozen=True)
class TooMuchOffchain:
    """Mint (equity) or move USDC Alpaca -> Base by `excess`."""

    excess: Decimal


Imbalance = TooMuchOnchain | TooMuchOffchain


def _venue_totals(pool: PoolInventory) -> tuple[Decimal, Decimal] | None:
    if pool.onchain is None or pool.offchain is None:
        return None
    return pool.onchain.total(), pool.offchain.total()


def ratio(pool: PoolInventory) -> Decimal | None:
    """Onchain share of the pool's total (inflight counts); None if unobserved or empty."""
    totals = _venue_totals(pool)
    if totals is None:
        return None
    on, off = totals
    total = _add(on, off)
    if total == 0:
        return None
    return _RATIO.divide(on, total)


def detect_imbalance(pool: PoolInventory, threshold: ImbalanceThreshold) -> Imbalance | None:
    """Spec 3.3 exactly: strict band edges, any inflight / zero total / unobserved -> None.

    Compared as products (`on < lower * total`), so no division rounding decides an edge.
    """
    onchain, offchain = pool.onchain, pool.offchain
    if onchain is None or offchain is None:  # unobserved
        return None
    if onchain.inflight != 0 or offchain.inflight != 0:
        return None
    # `_EXACT` directly (the trigger and the replay decide on every event): a result it cannot
    # represent exactly raises an ArithmeticError, which `_add` and `_mul` would turn into an
    # `InventoryError`: either way, no imbalance is reported.
    add, mul = _EXACT.add, _EXACT.multiply
    try:
        on = add(onchain.available, onchain.inflight)
        total = add(on, add(offchain.available, offchain.inflight))
        if total == 0:
            return None
        if on < mul(total, threshold.lower):
            return TooMuchOffchain(excess=_EXACT.subtract(mul(total, threshold.target), on))
        if on > mul(total, threshold.upper):
            return TooMuchOnchain(excess=_EXACT.subtract(on, mul(total, threshold.target)))
        return None
    except ArithmeticError:
        return None


# --- 3.4 applying events ----------------------------------------------------------------------


@dataclass(frozen=True)
class OperationGenesis:
    """What an operation moves, from its first stored event (B3).

    `direction` is the flow: a mint is AlpacaToBase (offchain -> onchain), a redemption
    BaseToAlpaca (onchain -> offchain); USDC uses its own direction.
    """

    aggregate_type: str
    pool_key: str
    direction: RebalanceDirection
    amount: Decimal

    @property
    def source(self) -> str:
        return OFFCHAIN if self.direction is RebalanceDirection.ALPACA_TO_BASE else ONCHAIN

    @property
    def destination(self) -> str:
        return ONCHAIN if self.direction is RebalanceDirection.ALPACA_TO_BASE else OFFCHAIN


class NotAGenesisEvent(DomainError):
    def __init__(self, aggregate_type: str, event: object) -> None:
        self.aggregate_type = aggregate_type
        self.event = event
        super().__init__(
            f"{aggregate_type}: first event {type(event).__name__} carries no genesis data"
        )


def genesis_from_event(aggregate_type: str, event: Any) -> OperationGenesis:
    """Genesis data from an operation's sequence-1 event."""
    if aggregate_type == ev.MINT and isinstance(event, ev.MintRequested):
        return OperationGenesis(
            ev.MINT, event.symbol, RebalanceDirection.ALPACA_TO_BASE, event.quantity
        )
    if aggregate_type == ev.REDEMPTION and isinstance(
        event, ev.VaultWithdrawSigned | ev.TransferSigned | ev.TokensSent
    ):
        return OperationGenesis(
            ev.REDEMPTION, event.symbol, RebalanceDirection.BASE_TO_ALPACA, event.quantity
        )
    if aggregate_type == ev.USDC_REBALANCE and isinstance(event, ev.Requested | ev.Initiated):
        return OperationGenesis(ev.USDC_REBALANCE, USDC_POOL, event.direction, event.amount)
    raise NotAGenesisEvent(aggregate_type, event)


@dataclass(frozen=True)
class OperationTrack:
    """An operation's genesis plus the inflight it currently holds (its own events only).

    `moved` is True once the genesis amount went inflight: an operation moves it once.
    `left_source` is True once it has left the source venue for good (a redemption's tokens
    out of the vault): a later failure keeps it inflight instead of cancelling.
    """

    genesis: OperationGenesis
    held_inflight: Decimal = ZERO
    moved: bool = False
    left_source: bool = False
    # What the bridge delivered (`Bridged.amount_received`): credited at the destination when
    # the deposit is confirmed, unless `DepositConfirmed` reports the deposited amount.
    received: Decimal | None = None


# Inflight is recorded with the intent: the event that stores the request id (a mint's
# MintRequested, a USDC rebalance's Requested) or the signed transaction (a redemption's
# VaultWithdrawSigned, or TransferSigned in logs that began at the wallet) commits before the
# side effect, so no balance snapshot can see the money gone while the pool still counts it
# available.
_INTENTS = (ev.MintRequested, ev.VaultWithdrawSigned, ev.TransferSigned, ev.Requested)
# Events that move the genesis amount from the source venue into inflight when nothing moved
# it yet: the intents, and the outcome events that are genesis in logs without an intent.
_MOVES_TO_INFLIGHT = (*_INTENTS, ev.MintAccepted, ev.TokensSent, ev.Initiated)
# Events that settle the held inflight at the destination. A mint settles when its tokens are
# in the vault (onchain inventory is what the order book can trade, spec 15.1), not when they
# reach our wallet; MintCompleted settles trigger-era logs, which ended in the wallet. A USDC
# move settles likewise when its deposit is confirmed (in the vault, or credited by Alpaca),
# not when the bridge mints into our wallet: a destination snapshot in between lacks it.
_SETTLES = (ev.DepositedIntoVault, ev.MintCompleted, ev.Completed, ev.DepositConfirmed)
# The venue confirmed nothing left the source: the held inflight returns to available. A
# redemption's TransferFailed after its vault withdrawal is not one: the tokens left the vault
# (`OperationTrack.left_source`), they sit in our wallet, and stay inflight for an operator.
_CANCELS = (
    ev.MintRejected,
    ev.MintAcceptanceFailed,
    ev.VaultWithdrawFailed,
    ev.TransferFailed,
    ev.RequestFailed,
)
# Events after which the amount has left the source venue for good.
_LEAVES_SOURCE = (ev.WithdrawnFromVault,)
_RECONCILES = (ev.MintReconciled, ev.RedemptionReconciled, ev.UsdcReconciled)
# Events that can open an operation's log (`genesis_from_event`).
GENESIS_TYPES = (
    ev.MintRequested,
    ev.VaultWithdrawSigned,
    ev.TransferSigned,
    ev.TokensSent,
    ev.Requested,
    ev.Initiated,
)


def _unspent(track: OperationTrack, event: Any) -> Decimal:
    """What an Alpaca-to-Base USDC move's conversion did not spend of the USD it holds
    inflight (a buy Alpaca filled only in part, spec 15.5): that cash never left Alpaca."""
    if (
        isinstance(event, ev.ConversionConfirmed)
        and track.genesis.direction is RebalanceDirection.ALPACA_TO_BASE
        and track.moved
        and event.usd_amount < track.held_inflight
    ):
        return track.held_inflight - event.usd_amount
    return ZERO


def track_apply(track: OperationTrack, event: Any) -> OperationTrack:
    """The operation's held inflight after `event` (independent of any pool's values)."""
    if isinstance(event, _MOVES_TO_INFLIGHT):
        if track.moved:
            return track
        return replace(track, held_inflight=track.genesis.amount, moved=True)
    if isinstance(event, ev.ConversionConfirmed):
        return replace(track, held_inflight=track.held_inflight - _unspent(track, event))
    if isinstance(event, ev.Bridged):
        return replace(track, received=event.amount_received)
    if isinstance(event, _LEAVES_SOURCE):
        return replace(track, left_source=True)
    if isinstance(event, _CANCELS) and track.left_source:
        return track
    if isinstance(event, _SETTLES + _CANCELS + _RECONCILES):
        return replace(track, held_inflight=ZERO)
    return track


def track_fold(aggregate_type: str, events: Iterable[Any]) -> OperationTrack | None:
    """Track from an operation's stored events in sequence order (the first is genesis)."""
    track: OperationTrack | None = None
    for event in events:
        if track is None:
            track = OperationTrack(genesis_from_event(aggregate_type, event))
        track = track_apply(track, event)
    return track


def _fill_usdc(shares: Decimal, price_usdc: Decimal) -> Decimal:
    return _mul(shares, price_usdc)


def _cents_to_usd(price_cents: int) -> Decimal:
    return _EXACT.divide(Decimal(price_cents), Decimal(100))


def affected_pools(
    aggregate_type: str, aggregate_id: str, event: Any, track: OperationTrack | None
) -> tuple[str, ...]:
    """Pool keys an event changes (a fill touches its symbol and USDC)."""
    if aggregate_type == ev.POSITION:
        if isinstance(event, _TWO_POOL_POSITION_EVENTS):
            return (aggregate_id, USDC_POOL)
        return (aggregate_id,)
    if aggregate_type in ev.OPERATION_EVENT_TYPES:
        if isinstance(event, ev.TxCostFields | ev.VenueCostFields):
            return ()  # the cost ledger (part of the operation's log) moves no inventory
        return (track.genesis.pool_key,) if track is not None else ()
    if isinstance(event, ev.OnchainEquity):
        return tuple(sorted(event.balances))
    if isinstance(event, ev.OffchainEquity):
        return tuple(sorted(event.positions))
    if isinstance(event, ev.OnchainCash | ev.OffchainCash):
        return (USDC_POOL,)
    return ()


# Position events that move (or hold back snapshots of) both the symbol and USDC.
_TWO_POOL_POSITION_EVENTS = (
    ev.OnChainOrderFilled,
    ev.OffChainOrderFilled,
    ev.OffChainOrderPlaced,
    ev.OffChainOrderFailed,
)


def _onchain_fill_delta(event: ev.OnChainOrderFilled, is_usdc: bool) -> Decimal:
    """The fill's signed change of this pool's onchain available."""
    buy = event.direction == Direction.BUY
    if is_usdc:
        cost = _fill_usdc(event.amount, event.price_usdc)
        return -cost if buy else cost
    return event.amount if buy else -event.amount


class MutablePool:
    """One pool's state, changed in place: the fields of `PoolInventory`, which is its
    immutable form (`MutablePool(pool)` and `.domain()` convert). The projection and the
    rebuild fold a fill's position events (most of any log) on it without a copy per event;
    `apply_event` applies them to a `PoolInventory` through the same functions on a copy."""

    __slots__ = (
        "on",
        "off",
        "last_rebalancing",
        "last_updated",
        "reason",
        "inflight_changed_at",
        "onchain_block",
        "fills",
        "hedges",
        "last_fill_at",
    )

    def __init__(self, pool: PoolInventory) -> None:
        self.load(pool)

    @classmethod
    def copy_of(cls, pool: PoolInventory) -> MutablePool:
        """For one event: the fill legs stay the pool's tuple (a fill's leg is added by one
        copy of it, as `PoolInventory` itself would), not a list copied in and out."""
        mutable = cls.__new__(cls)
        mutable.load(pool, legs_list=False)
        return mutable

    def load(self, pool: PoolInventory, *, legs_list: bool = True) -> None:
        on, off = pool.onchain, pool.offchain
        # [available, inflight] of an observed venue, None when never observed.
        self.on = None if on is None else [on.available, on.inflight]
        self.off = None if off is None else [off.available, off.inflight]
        self.last_rebalancing = pool.last_rebalancing
        self.last_updated = pool.last_updated
        self.reason = pool.reconciliation_reason
        self.inflight_changed_at = pool.inflight_changed_at
        self.onchain_block = pool.onchain_block
        # A list, so a fill's leg is appended in O(1) (`copy_of` keeps the tuple).
        legs = pool.onchain_fills_after
        self.fills: list[tuple[int, Decimal]] | tuple[tuple[int, Decimal], ...] = (
            list(legs) if legs_list else legs
        )
        self.hedges = pool.offchain_hedges_pending
        self.last_fill_at = pool.offchain_last_fill_at

    def domain(self) -> PoolInventory:
        on, off = self.on, self.off
        return PoolInventory(
            onchain=None if on is None else VenueBalance(on[0], on[1]),
            offchain=None if off is None else VenueBalance(off[0], off[1]),
            last_rebalancing=self.last_rebalancing,
            last_updated=self.last_updated,
            reconciliation_reason=self.reason,
            inflight_changed_at=self.inflight_changed_at,
            onchain_block=self.onchain_block,
            onchain_fills_after=self.fills if type(self.fills) is tuple else tuple(self.fills),
            offchain_hedges_pending=self.hedges,
            offchain_last_fill_at=self.last_fill_at,
        )


def _available_moved(balance: list[Decimal] | None, venue: str, delta: Decimal) -> None:
    """Add `delta` (signed) to an observed venue's available, in place, with
    `VenueBalance`'s checks and errors (a venue never observed, an amount not available)."""
    if balance is None:
        raise VenueNotObserved(venue)
    if delta >= 0:
        balance[0] = _available_plus(balance[0], delta)
    else:
        balance[0] = _available_minus(balance[0], -delta)


_ONCHAIN_FILLED = ev.OnChainOrderFilled
_OFFCHAIN_FILLED = ev.OffChainOrderFilled
_OFFCHAIN_PLACED = ev.OffChainOrderPlaced
_OFFCHAIN_FAILED = ev.OffChainOrderFailed


def position_apply(
    pool: MutablePool, event: Any, pool_key: str, now: datetime | None, *, flag: bool
) -> None:
    """A position event's effect on one pool, in place: the one definition of these rules.

    A fact that cannot be applied leaves the balances unchanged and, with `flag`, flags the
    pool (`apply_event_or_flag`'s reason and time), else raises its `InventoryError`. A hedge
    event's tracking (the pending count, the last fill's time) advances either way: a hedge
    that filled is no longer pending even when its fill flags the pool (or offchain
    snapshots, refused while a hedge is pending, would be refused for good and the pool
    could never be corrected).

    Spec 15.2: an onchain fill leg at or below the pool's snapshot block is already in the
    snapshot; every leg above it is remembered, however many (issue 19: cutting the list to
    its last 256 lost the oldest legs when a lagging snapshot re-applied them)."""
    kind = type(event)
    if kind is _ONCHAIN_FILLED:
        onchain_fill_apply(
            pool,
            _onchain_fill_delta(event, pool_key == USDC_POOL),
            event.block_number,
            event.seen_at,
            now,
            flag=flag,
        )
        return
    try:
        if kind is _OFFCHAIN_FILLED:
            pool.hedges = max(0, pool.hedges - 1)
            pool.last_fill_at = now or event.broker_timestamp
            buy = event.direction == Direction.BUY
            if pool_key == USDC_POOL:
                cost = _mul(event.shares_filled, _cents_to_usd(event.price_cents))
                _available_moved(pool.off, OFFCHAIN, -cost if buy else cost)
            else:
                shares = event.shares_filled
                _available_moved(pool.off, OFFCHAIN, shares if buy else -shares)
        elif kind is _OFFCHAIN_PLACED:
            pool.hedges += 1
        elif kind is _OFFCHAIN_FAILED:
            pool.hedges = max(0, pool.hedges - 1)
        pool.last_updated = event.timestamp()
    except InventoryError as error:
        if not flag:
            raise
        pool.reason = _flag_reason(event, error)
        pool.last_updated = now


def onchain_fill_apply(
    pool: MutablePool,
    delta: Decimal,
    block: int | None,
    seen_at: datetime,
    now: datetime | None,
    *,
    flag: bool,
) -> None:
    """An onchain fill's effect on one pool, in place (`position_apply`'s rule, also used to
    fold a USDC fill delta recorded without the pool's row: `inventory.usdc_deltas`): `delta`
    is the fill's signed change of the pool's onchain available, applied unless the fill's
    block is at or below the pool's snapshot block (spec 15.2); an applied fill with a block
    is remembered as a leg. One that cannot be applied flags the pool (`flag`) or raises."""
    try:
        if block is None or pool.onchain_block is None or block > pool.onchain_block:
            _available_moved(pool.on, ONCHAIN, delta)
            if block is not None:
                fills = pool.fills
                if type(fills) is list:
                    fills.append((block, delta))
                else:
                    pool.fills = (*fills, (block, delta))
        pool.last_updated = seen_at
    except InventoryError as error:
        if not flag:
            raise
        pool.reason = f"{_ONCHAIN_FILLED.__name__}: {error}"
        pool.last_updated = now


def onchain_fill_delta(event: ev.OnChainOrderFilled, pool_key: str) -> Decimal:
    """The fill's signed change of pool `pool_key`'s onchain available."""
    return _onchain_fill_delta(event, pool_key == USDC_POOL)


def _flag_reason(event: Any, error: InventoryError) -> str:
    return f"{type(event).__name__}: {error}"


def _apply_position(
    pool: PoolInventory, event: Any, pool_key: str, now: datetime | None = None
) -> PoolInventory:
    mutable = MutablePool.copy_of(pool)
    position_apply(mutable, event, pool_key, now, flag=False)
    return mutable.domain()


def _apply_operation(
    pool: PoolInventory, event: Any, track: OperationTrack, now: datetime
) -> PoolInventory:
    genesis = track.genesis
    source, destination = genesis.source, genesis.destination
    inflight_before = _inflights(pool)
    if isinstance(event, _MOVES_TO_INFLIGHT):
        if not track.moved:
            pool = pool.with_venue(source, pool.venue(source).move_to_inflight(genesis.amount))
    elif isinstance(event, _SETTLES):
        received = None
        if isinstance(event, ev.DepositConfirmed):
            received = event.amount_deposited
            received = track.received if received is None else received
            pool = pool.with_last_rebalancing(event.deposit_confirmed_at)
        held = track.held_inflight
        confirmed = pool.venue(source).confirm_inflight(held)
        credited = pool.venue(destination).add_available(held if received is None else received)
        pool = pool.with_venue(source, confirmed).with_venue(destination, credited)
        if isinstance(event, ev.Completed | ev.MintCompleted):
            pool = pool.with_last_rebalancing(event.completed_at)
        elif isinstance(event, ev.DepositedIntoVault):
            pool = pool.with_last_rebalancing(event.deposited_at)
    elif isinstance(event, ev.ConversionConfirmed):
        unspent = _unspent(track, event)
        if unspent:
            pool = pool.with_venue(source, pool.venue(source).cancel_inflight(unspent))
    elif isinstance(event, _CANCELS):
        if track.held_inflight != 0 and not track.left_source:
            pool = pool.with_venue(source, pool.venue(source).cancel_inflight(track.held_inflight))
    elif isinstance(event, _RECONCILES):
        pool = pool.reconcile_inflight(source, track.held_inflight)
    # Everything else (signatures, detections, failures that keep inflight) only updates
    # last_updated.
    if _inflights(pool) != inflight_before:
        pool = pool.inflight_changed(now)
    return pool.touched(now)


def _inflights(pool: PoolInventory) -> tuple[Decimal | None, Decimal | None]:
    on, off = pool.onchain, pool.offchain
    return (None if on is None else on.inflight, None if off is None else off.inflight)


def _snapshot_value(event: Any, pool_key: str) -> tuple[str, Decimal | None]:
    if isinstance(event, ev.OnchainEquity):
        return ONCHAIN, event.balances.get(pool_key)
    if isinstance(event, ev.OffchainEquity):
        return OFFCHAIN, event.positions.get(pool_key)
    if isinstance(event, ev.OnchainCash):
        return ONCHAIN, event.usdc_balance if pool_key == USDC_POOL else None
    if isinstance(event, ev.OffchainCash):
        # USD cash plus the USDC position: the pool's offchain side counts both (spec 15.5).
        return OFFCHAIN, event.offchain_value if pool_key == USDC_POOL else None
    raise TypeError(f"not a snapshot event: {type(event).__name__}")


def _apply_snapshot(pool: PoolInventory, event: Any, pool_key: str) -> PoolInventory:
    """B1: a snapshot sets available only when the pool has no inflight at all, and only when
    it was fetched after the pool's latest inflight change (an older one may show money gone
    that the pool counts available, or miss money that just arrived): stale, ignored.

    Spec 15.2: an onchain snapshot pinned below the pool's snapshot block is older and not
    taken; one pinned at block B keeps the fill legs applied since whose block is above B.
    An offchain snapshot is not taken while a hedge of the pool is pending or when a hedge
    fill was recorded after the read began (the read may or may not contain it).
    """
    venue, value = _snapshot_value(event, pool_key)
    if value is None:
        return pool
    if pool.snapshot_is_stale(event.fetched_at):
        return pool
    if pool.has_inflight():
        return pool.touched(event.fetched_at)
    current = (pool.onchain if venue == ONCHAIN else pool.offchain) or VenueBalance()
    extra: dict[str, Any] = {}
    if venue == ONCHAIN:
        block = event.block_number
        if block is None:
            extra = {"onchain_block": None, "onchain_fills_after": ()}
        else:
            if pool.onchain_block is not None and block < pool.onchain_block:
                return pool.touched(event.fetched_at)
            later = [(b, d) for b, d in pool.onchain_fills_after if b > block]
            for _, delta in later:
                value = _add(value, delta)
            if value < 0:
                raise InsufficientAvailable(-value, ZERO)
            extra = {"onchain_block": block, "onchain_fills_after": tuple(later)}
    elif pool.offchain_hedges_pending > 0 or (
        pool.offchain_last_fill_at is not None and pool.offchain_last_fill_at >= event.fetched_at
    ):
        return pool.touched(event.fetched_at)
    return replace(
        pool.with_venue(venue, current.with_available(value)),
        reconciliation_reason=None,
        **extra,
    ).touched(event.fetched_at)


def apply_event(
    pool: PoolInventory,
    event: Any,
    genesis: OperationTrack | None,
    now: datetime,
    *,
    pool_key: str,
) -> PoolInventory:
    """One event's effect on one pool; raises `InventoryError` (the caller keeps `pool`).

    `genesis` is the operation's track (genesis from its first stored event plus the inflight
    it holds before this event); None for position and snapshot events. `now` is when the
    event was recorded: operation events stamp `last_updated` with it, position events use
    their own timestamp, snapshots their `fetched_at`.
    """
    aggregate_type = type(event).AGGREGATE_TYPE
    if aggregate_type == ev.POSITION:
        return _apply_position(pool, event, pool_key, now)
    if aggregate_type in ev.OPERATION_EVENT_TYPES:
        if genesis is None:
            raise NotAGenesisEvent(aggregate_type, event)
        return _apply_operation(pool, event, genesis, now)
    if aggregate_type == ev.SNAPSHOT:
        return _apply_snapshot(pool, event, pool_key)
    return pool


def apply_event_or_flag(
    pool: PoolInventory,
    event: Any,
    genesis: OperationTrack | None,
    now: datetime,
    *,
    pool_key: str,
) -> PoolInventory:
    """`apply_event`, but a fact that cannot be applied flags the pool (values unchanged;
    a hedge event's tracking still advances: `position_apply`)."""
    if type(event).AGGREGATE_TYPE == ev.POSITION:
        mutable = MutablePool.copy_of(pool)
        position_apply(mutable, event, pool_key, now, flag=True)
        return mutable.domain()
    try:
        return apply_event(pool, event, genesis, now, pool_key=pool_key)
    except InventoryError as error:
        return pool.flagged(_flag_reason(event, error)).touched(now)


# --- replaying many events (projection and rebuild share this) --------------------------------


@dataclass
class InventoryFold:
    """Mutable accumulator: pools by key and the tracks of the operations seen so far."""

    pools: dict[str, PoolInventory] = field(default_factory=dict)
    tracks: dict[tuple[str, str], OperationTrack] = field(default_factory=dict)

    def pool(self, key: str) -> PoolInventory:
        return self.pools.get(key) or PoolInventory()

    def track_for(
        self, aggregate_type: str, aggregate_id: str, event: Any
    ) -> OperationTrack | None:
        """Track before `event`; a genesis event starts one (never overwrites a stored one)."""
        key = (aggregate_type, aggregate_id)
        track = self.tracks.get(key)
        if track is None and isinstance(event, GENESIS_TYPES):
            track = OperationTrack(genesis_from_event(aggregate_type, event))
            self.tracks[key] = track
        return track

    def follow(self, aggregate_type: str, aggregate_id: str, event: Any) -> None:
        """Advance only an operation's track (for history the pools already reflect)."""
        if aggregate_type not in ev.OPERATION_EVENT_TYPES:
            return
        track = self.track_for(aggregate_type, aggregate_id, event)
        if track is not None:
            self.tracks[(aggregate_type, aggregate_id)] = track_apply(track, event)

    def step(
        self, aggregate_type: str, aggregate_id: str, event: Any
    ) -> tuple[tuple[str, ...], OperationTrack | None]:
        """The pool keys `event` touches and its operation's track before it (what
        `apply_event` takes); the track after it is stored. Which pools an event touches never
        depends on their values, so no pool is read."""
        if aggregate_type == ev.POSITION:
            return affected_pools(aggregate_type, aggregate_id, event, None), None
        track = None
        if aggregate_type in ev.OPERATION_EVENT_TYPES:
            track = self.track_for(aggregate_type, aggregate_id, event)
        keys = affected_pools(aggregate_type, aggregate_id, event, track)
        if track is not None:
            self.tracks[(aggregate_type, aggregate_id)] = track_apply(track, event)
        return keys, track

    def touches(
        self, aggregate_type: str, aggregate_id: str, event: Any
    ) -> tuple[tuple[str, ...], OperationTrack | None]:
        """The pool keys `event` touches and its operation's track after it, without folding
        any pool."""
        keys, track = self.step(aggregate_type, aggregate_id, event)
        if track is None:
            return keys, None
        return keys, self.tracks[(aggregate_type, aggregate_id)]

    def apply(
        self, aggregate_type: str, aggregate_id: str, event: Any, now: datetime
    ) -> tuple[str, ...]:
        """Apply one stored event to `pools` (immutable pools, one new one per event and
        pool); returns the pool keys it touched."""
        keys, track = self.step(aggregate_type, aggregate_id, event)
        for key in keys:
            self.pools[key] = apply_event_or_flag(self.pool(key), event, track, now, pool_key=key)
        return keys


_EMPTY = PoolInventory()


def fold_stored(
    pools: dict[str, MutablePool],
    fold: InventoryFold,
    aggregate_type: str,
    aggregate_id: str,
    event: Any,
    recorded_at: datetime,
) -> tuple[str, ...]:
    """`fold.apply` on mutable pools (missing ones start empty), with `fold`'s operation
    tracks: the same step and rules, but a position event changes its pools in place (no
    copy per event; the hot path of the projection and the replay). Returns the pool keys it
    touched."""
    if aggregate_type == ev.POSITION:
        keys = affected_pools(aggregate_type, aggregate_id, event, None)
        for key in keys:
            pool = pools.get(key)
            if pool is None:
                pool = pools[key] = MutablePool(_EMPTY)
            position_apply(pool, event, key, recorded_at, flag=True)
        return keys
    keys, track = fold.step(aggregate_type, aggregate_id, event)
    for key in keys:
        pool = pools.get(key)
        if pool is None:
            pool = pools[key] = MutablePool(_EMPTY)
        pool.load(apply_event_or_flag(pool.domain(), event, track, recorded_at, pool_key=key))
    return keys

"""TokenizedEquityMint aggregate (spec 4.2): offchain shares -> onchain tokens; id = a UUID.

States (each carries exactly the data valid in it; `STEP` names it for workers):

    MintRequested -> MintAccepted -> TokensReceived -> Completed        (success, terminal)
    MintRequested -> Failed (MintRejected, nothing inflight)            (terminal)
    MintAccepted  -> Failed (MintAcceptanceFailed, nothing inflight)    (terminal)
    MintAccepted  -> Failed (MintTimedOut, inflight kept)               (terminal)
    Failed(inflight kept) -> Reconciled (operator, MintReconciled)      (terminal)

State classes share names with some events: import this module (`from inventory.domain
import mint`) and write `mint.MintAccepted` for the state, `ev.MintAccepted` for the event.
Workers should branch on `step_of(lifecycle)`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar

from inventory.domain import events as ev
from inventory.domain.aggregate import AggregateSpec
from inventory.domain.checks import (
    CommandRefused,
    refuse_by_table,
    validate_address,
    validate_amount,
    validate_aware,
    validate_text,
    validate_tx_hash,
    validate_u256,
)
from inventory.domain.lifecycle import Lifecycle, Mismatch, lifecycle_apply
from inventory.domain.values import Address, TxHash, validate_symbol


class MintStep(enum.StrEnum):
    UNINITIALIZED = "Uninitialized"
    REQUESTED = "MintRequested"
    ACCEPTED = "MintAccepted"
    TOKENS_RECEIVED = "TokensReceived"
    COMPLETED = "Completed"
    FAILED = "Failed"
    RECONCILED = "Reconciled"
    # The lifecycle is Failed (an invalid event was stored): every command is refused.
    CORRUPTED = "Corrupted"


TERMINAL_STEPS = frozenset({MintStep.COMPLETED, MintStep.FAILED, MintStep.RECONCILED})


# --- states ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MintRequested:
    STEP: ClassVar[MintStep] = MintStep.REQUESTED
    symbol: str
    quantity: Decimal
    wallet: Address
    requested_at: datetime


@dataclass(frozen=True)
class MintAccepted:
    STEP: ClassVar[MintStep] = MintStep.ACCEPTED
    symbol: str
    quantity: Decimal
    wallet: Address
    requested_at: datetime
    issuer_request_id: str
    tokenization_request_id: str
    accepted_at: datetime


@dataclass(frozen=True)
class TokensReceived:
    STEP: ClassVar[MintStep] = MintStep.TOKENS_RECEIVED
    symbol: str
    quantity: Decimal
    wallet: Address
    requested_at: datetime
    issuer_request_id: str
    tokenization_request_id: str
    accepted_at: datetime
    tx_hash: TxHash
    receipt_id: int
    shares_minted: int
    received_at: datetime


@dataclass(frozen=True)
class Completed:
    STEP: ClassVar[MintStep] = MintStep.COMPLETED
    symbol: str
    quantity: Decimal
    wallet: Address
    issuer_request_id: str
    tokenization_request_id: str
    tx_hash: TxHash
    receipt_id: int
    shares_minted: int
    requested_at: datetime
    completed_at: datetime


@dataclass(frozen=True)
class Failed:
    """Terminal failure. `inflight_kept` is True only after `MintTimedOut`: the shares may
    still be moving, so the inventory keeps them inflight until an operator reconciles.
    The Alpaca ids are present when the failure happened after acceptance."""

    STEP: ClassVar[MintStep] = MintStep.FAILED
    symbol: str
    quantity: Decimal
    reason: str
    requested_at: datetime
    failed_at: datetime
    issuer_request_id: str | None = None
    tokenization_request_id: str | None = None
    inflight_kept: bool = False


@dataclass(frozen=True)
class Reconciled:
    """An operator declared the kept inflight settled outside the system (B13)."""

    STEP: ClassVar[MintStep] = MintStep.RECONCILED
    symbol: str
    quantity: Decimal
    failed: Failed
    reason: str
    operator: str
    reconciled_at: datetime


MintState = MintRequested | MintAccepted | TokensReceived | Completed | Failed | Reconciled


# --- commands -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestMint:
    symbol: str
    quantity: Decimal
    wallet: Address


@dataclass(frozen=True)
class RejectMint:
    reason: str


@dataclass(frozen=True)
class AcknowledgeAcceptance:
    issuer_request_id: str
    tokenization_request_id: str


@dataclass(frozen=True)
class FailAcceptance:
    reason: str


@dataclass(frozen=True)
class ReceiveTokens:
    tx_hash: TxHash
    receipt_id: int
    shares_minted: int


@dataclass(frozen=True)
class Finalize:
    pass


@dataclass(frozen=True)
class TimeOutMint:
    """No outcome in time after acceptance; the shares may still be moving."""

    reason: str


@dataclass(frozen=True)
class ReconcileMint:
    reason: str
    operator: str


MintCommand = (
    RequestMint
    | RejectMint
    | AcknowledgeAcceptance
    | FailAcceptance
    | ReceiveTokens
    | Finalize
    | TimeOutMint
    | ReconcileMint
)


# --- errors ---------------------------------------------------------------------------------


class MintError(CommandRefused):
    """A mint command refused in the current state (`command`, `state`, `rule`)."""


class AlreadyInProgress(MintError):
    RULE = "a mint was already requested for this id"


class NotRequested(MintError):
    RULE = "the mint has not been requested"


class NotAccepted(MintError):
    RULE = "the mint has not been accepted by Alpaca"


class TokensNotReceived(MintError):
    RULE = "the minted tokens have not been received"


class AlreadyCompleted(MintError):
    RULE = "the mint is already past this step"


class AlreadyFailed(MintError):
    RULE = "the mint already failed"


class AlreadyReconciled(MintError):
    RULE = "the mint was already reconciled by an operator"


class NotReconcilable(MintError):
    RULE = "only a timed-out mint (shares possibly still moving, inflight kept) can be reconciled"


# Command validation (spec 4.2 table plus TimeOutMint / ReconcileMint): for each command the
# error per step; None = valid. Steps not listed (Reconciled) refuse with AlreadyReconciled.
_S = MintStep
_VALIDITY: dict[type, dict[MintStep, type[MintError] | None]] = {
    RequestMint: {
        _S.UNINITIALIZED: None,
        _S.REQUESTED: AlreadyInProgress,
        _S.ACCEPTED: AlreadyInProgress,
        _S.TOKENS_RECEIVED: AlreadyInProgress,
        _S.COMPLETED: AlreadyInProgress,
        _S.FAILED: AlreadyInProgress,
    },
    RejectMint: {
        _S.UNINITIALIZED: NotRequested,
        _S.REQUESTED: None,
        _S.ACCEPTED: AlreadyCompleted,
        _S.TOKENS_RECEIVED: AlreadyCompleted,
        _S.COMPLETED: AlreadyCompleted,
        _S.FAILED: AlreadyFailed,
    },
    AcknowledgeAcceptance: {
        _S.UNINITIALIZED: NotRequested,
        _S.REQUESTED: None,
        _S.ACCEPTED: AlreadyCompleted,
        _S.TOKENS_RECEIVED: AlreadyCompleted,
        _S.COMPLETED: AlreadyCompleted,
        _S.FAILED: AlreadyFailed,
    },
    FailAcceptance: {
        _S.UNINITIALIZED: NotAccepted,
        _S.REQUESTED: NotAccepted,
        _S.ACCEPTED: None,
        _S.TOKENS_RECEIVED: AlreadyCompleted,
        _S.COMPLETED: AlreadyCompleted,
        _S.FAILED: AlreadyFailed,
    },
    ReceiveTokens: {
        _S.UNINITIALIZED: NotAccepted,
        _S.REQUESTED: NotAccepted,
        _S.ACCEPTED: None,
        _S.TOKENS_RECEIVED: AlreadyCompleted,
        _S.COMPLETED: AlreadyCompleted,
        _S.FAILED: AlreadyFailed,
    },
    Finalize: {
        _S.UNINITIALIZED: TokensNotReceived,
        _S.REQUESTED: TokensNotReceived,
        _S.ACCEPTED: TokensNotReceived,
        _S.TOKENS_RECEIVED: None,
        _S.COMPLETED: AlreadyCompleted,
        _S.FAILED: AlreadyFailed,
    },
    TimeOutMint: {
        _S.UNINITIALIZED: NotAccepted,
        _S.REQUESTED: NotAccepted,
        _S.ACCEPTED: None,
        _S.TOKENS_RECEIVED: AlreadyCompleted,
        _S.COMPLETED: AlreadyCompleted,
        _S.FAILED: AlreadyFailed,
    },
    ReconcileMint: {
        _S.UNINITIALIZED: NotReconcilable,
        _S.REQUESTED: NotReconcilable,
        _S.ACCEPTED: NotReconcilable,
        _S.TOKENS_RECEIVED: NotReconcilable,
        _S.COMPLETED: NotReconcilable,
        _S.FAILED: None,  # further checked: only with inflight kept
    },
}


# --- helpers for the trigger, the projection and workers ------------------------------------


def _value(state: Lifecycle[MintState] | MintState | None) -> MintState | None:
    if isinstance(state, Lifecycle):
        return state.value
    return state


def step_of(state: Lifecycle[MintState]) -> MintStep:
    """Which step the mint is in; CORRUPTED when the lifecycle is Failed."""
    if state.is_failed:
        return MintStep.CORRUPTED
    if state.value is None:
        return MintStep.UNINITIALIZED
    return state.value.STEP


def genesis_of(state: Lifecycle[MintState] | MintState | None) -> tuple[str, Decimal] | None:
    """(symbol, quantity) from the stored state (also a corrupted one's last valid state)."""
    value = _value(state)
    if value is None:
        return None
    return value.symbol, value.quantity


def is_terminal(state: Lifecycle[MintState] | MintState | None) -> bool:
    """True for Completed, Failed and Reconciled (a corrupted lifecycle is not terminal)."""
    if isinstance(state, Lifecycle) and state.is_failed:
        return False
    value = _value(state)
    return value is not None and value.STEP in TERMINAL_STEPS


def can_reconcile(state: Lifecycle[MintState] | MintState | None) -> bool:
    value = _value(state)
    if isinstance(state, Lifecycle) and state.is_failed:
        return False
    return isinstance(value, Failed) and value.inflight_kept


# --- apply ----------------------------------------------------------------------------------


def _from_event(event: Any) -> MintState:
    if isinstance(event, ev.MintRequested):
        return MintRequested(
            symbol=event.symbol,
            quantity=event.quantity,
            wallet=event.wallet,
            requested_at=event.requested_at,
        )
    raise Mismatch(None, event)


def _failed(
    state: MintRequested | MintAccepted, reason: str, failed_at: datetime, *, inflight_kept: bool
) -> Failed:
    return Failed(
        symbol=state.symbol,
        quantity=state.quantity,
        reason=reason,
        requested_at=state.requested_at,
        failed_at=failed_at,
        issuer_request_id=getattr(state, "issuer_request_id", None),
        tokenization_request_id=getattr(state, "tokenization_request_id", None),
        inflight_kept=inflight_kept,
    )


def _transition(state: MintState, event: Any) -> MintState:
    if isinstance(state, MintRequested):
        if isinstance(event, ev.MintAccepted):
            return MintAccepted(
                symbol=state.symbol,
                quantity=state.quantity,
                wallet=state.wallet,
                requested_at=state.requested_at,
                issuer_request_id=event.issuer_request_id,
                tokenization_request_id=event.tokenization_request_id,
                accepted_at=event.accepted_at,
            )
        if isinstance(event, ev.MintRejected):
            return _failed(state, event.reason, event.rejected_at, inflight_kept=False)
    elif isinstance(state, MintAccepted):
        if isinstance(event, ev.TokensReceived):
            return TokensReceived(
                symbol=state.symbol,
                quantity=state.quantity,
                wallet=state.wallet,
                requested_at=state.requested_at,
                issuer_request_id=state.issuer_request_id,
                tokenization_request_id=state.tokenization_request_id,
                accepted_at=state.accepted_at,
                tx_hash=event.tx_hash,
                receipt_id=event.receipt_id,
                shares_minted=event.shares_minted,
                received_at=event.received_at,
            )
        if isinstance(event, ev.MintAcceptanceFailed):
            return _failed(state, event.reason, event.failed_at, inflight_kept=False)
        if isinstance(event, ev.MintTimedOut):
            return _failed(state, event.reason, event.failed_at, inflight_kept=True)
    elif isinstance(state, TokensReceived):
        if isinstance(event, ev.MintCompleted):
            return Completed(
                symbol=state.symbol,
                quantity=state.quantity,
                wallet=state.wallet,
                issuer_request_id=state.issuer_request_id,
                tokenization_request_id=state.tokenization_request_id,
                tx_hash=state.tx_hash,
                receipt_id=state.receipt_id,
                shares_minted=state.shares_minted,
                requested_at=state.requested_at,
                completed_at=event.completed_at,
            )
    elif isinstance(state, Failed) and isinstance(event, ev.MintReconciled) and state.inflight_kept:
        return Reconciled(
            symbol=state.symbol,
            quantity=state.quantity,
            failed=state,
            reason=event.reason,
            operator=event.operator,
            reconciled_at=event.reconciled_at,
        )
    raise Mismatch(state, event)


def apply(state: Lifecycle[MintState], event: Any) -> Lifecycle[MintState]:
    return lifecycle_apply(state, event, apply_transition=_transition, from_event=_from_event)


# --- handle ---------------------------------------------------------------------------------


def _refuse_if_invalid(current: MintState | None, command: Any) -> None:
    refuse_by_table(
        validity=_VALIDITY,
        command=command,
        current=current,
        step=MintStep.UNINITIALIZED if current is None else current.STEP,
        aggregate="a TokenizedEquityMint",
        already_reconciled=AlreadyReconciled,
        not_reconcilable=NotReconcilable,
        reconcile_command=ReconcileMint,
    )


def handle(state: Lifecycle[MintState], command: Any, now: datetime) -> list[ev.MintEvent]:
    """Decide the events for `command`, or raise a `MintError` / `InvalidValue`.

    A Failed (corrupted) lifecycle refuses every command with its `LifecycleError`.
    """
    validate_aware("now", now)
    current: MintState | None = state.current()
    _refuse_if_invalid(current, command)

    if isinstance(command, RequestMint):
        return [
            ev.MintRequested(
                symbol=validate_symbol(command.symbol),
                quantity=validate_amount("quantity", command.quantity),
                wallet=validate_address("wallet", command.wallet),
                requested_at=now,
            )
        ]
    if isinstance(command, RejectMint):
        return [ev.MintRejected(reason=validate_text("reason", command.reason), rejected_at=now)]
    if isinstance(command, AcknowledgeAcceptance):
        return [
            ev.MintAccepted(
                issuer_request_id=validate_text("issuer_request_id", command.issuer_request_id),
                tokenization_request_id=validate_text(
                    "tokenization_request_id", command.tokenization_request_id
                ),
                accepted_at=now,
            )
        ]
    if isinstance(command, FailAcceptance):
        return [
            ev.MintAcceptanceFailed(reason=validate_text("reason", command.reason), failed_at=now)
        ]
    if isinstance(command, ReceiveTokens):
        return [
            ev.TokensReceived(
                tx_hash=validate_tx_hash("tx_hash", command.tx_hash),
                receipt_id=validate_u256("receipt_id", command.receipt_id),
                shares_minted=validate_u256(
                    "shares_minted", command.shares_minted, allow_zero=False
                ),
                received_at=now,
            )
        ]
    if isinstance(command, Finalize):
        return [ev.MintCompleted(completed_at=now)]
    if isinstance(command, TimeOutMint):
        return [ev.MintTimedOut(reason=validate_text("reason", command.reason), failed_at=now)]
    assert isinstance(command, ReconcileMint)
    return [
        ev.MintReconciled(
            reason=validate_text("reason", command.reason),
            operator=validate_text("operator", command.operator),
            reconciled_at=now,
        )
    ]


SPEC = AggregateSpec(
    aggregate_type=ev.MINT,
    apply=apply,
    handle=handle,
    event_classes=(
        ev.MintRequested,
        ev.MintRejected,
        ev.MintAccepted,
        ev.MintAcceptanceFailed,
        ev.MintTimedOut,
        ev.TokensReceived,
        ev.MintCompleted,
        ev.MintReconciled,
    ),
)

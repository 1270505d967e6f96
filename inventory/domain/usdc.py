"""UsdcRebalance aggregate (spec 4.4, plus the section-12 fixes); id = a UUID.

Happy path (both directions; `STEP` on each state names it for workers):

    [Requested] -> Withdrawing -> WithdrawalComplete -> Bridging -> Attested -> Bridged
                -> DepositInitiated -> DepositConfirmed (terminal, success)

Genesis is `Request` (state Requested, recorded before the first side effect) or, as in the
spec, `Initiate` straight from Uninitialized. Failures (terminal):

    Requested          -> RequestFailed     (nothing inflight)
    Withdrawing        -> WithdrawalFailed  (inflight kept)
    WithdrawalComplete -> BridgingFailed    (burn failed, B5; no burn data; inflight kept)
    Bridging/Attested  -> BridgingFailed    (burn data kept; inflight kept)
    Bridged            -> DepositFailed     (deposit submission failed, B5; no deposit_ref)
    DepositInitiated   -> DepositFailed     (deposit_ref kept; inflight kept)
    WithdrawalFailed / BridgingFailed / DepositFailed -> Reconciled (operator, B13)

Signed transactions (B7): `RecordTransaction` stores a signed transaction before it is
broadcast, in any non-terminal state from Requested on. Every state carries
`transactions: dict[TxPurpose, SignedTx]` so a resumed worker finds the bytes for its step.
Rule: recording the identical transaction again is a no-op (no event); recording a different
transaction for a purpose already recorded is refused (`TransactionConflict`) unless the
current state is past that purpose's step (then the newer one replaces it). A bumped-fee
replacement at the same nonce of a transaction left unmined is the shared lifecycle's
`ReplaceTransaction(purpose, ...)` -> `TransactionReplaced` (`inventory.domain.onchain_tx`;
older logs: `TransactionSigned(replaces=...)`, read alike): the stored one's hash stays watched
in `earlier_hashes`, and outcome commands may name either. Each purpose's
step: vault_withdraw -> Requested, burn -> WithdrawalComplete, mint -> Attested,
vault_deposit / alpaca_deposit -> Bridged. A step's outcome command (Initiate with an
OnchainTx ref, InitiateBridging, ConfirmBridging, InitiateDeposit with an OnchainTx ref) must
name the recorded transaction's hash when one was recorded (`TransactionMismatch`).

Amounts (B6): every state carries `amounts: UsdcAmounts` with the optional received amounts
and fees reported along the way; `burnable_amount` / `depositable_amount` pick the net amount.

State classes share names with some events: import this module (`from inventory.domain
import usdc`) and write `usdc.Bridged` for the state, `ev.Bridged` for the event. Workers
should branch on `step_of(lifecycle)`.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar

from inventory.domain import events as ev
from inventory.domain import onchain_tx
from inventory.domain.aggregate import AggregateSpec
from inventory.domain.checks import (
    CommandRefused,
    validate_amount,
    validate_aware,
    validate_bytes,
    validate_direction,
    validate_fee,
    validate_optional_amount,
    validate_text,
    validate_transfer_ref,
    validate_tx_hash,
)
from inventory.domain.events import TxPurpose
from inventory.domain.lifecycle import Lifecycle, Mismatch, lifecycle_apply
from inventory.domain.onchain_tx import (
    RecordReceipt,
    RecordVenueCost,
    ReplaceTransaction,
    StoredTx,
    replacement_of,
)
from inventory.domain.values import (
    USDC_DECIMALS,
    InvalidValue,
    RebalanceDirection,
    TransferRef,
    TransferRefKind,
    TxHash,
)

_NONCE = re.compile(r"0x[0-9a-fA-F]{64}")  # re.fullmatch: no trailing newline


class UsdcStep(enum.StrEnum):
    UNINITIALIZED = "Uninitialized"
    REQUESTED = "Requested"
    REQUEST_FAILED = "RequestFailed"
    WITHDRAWING = "Withdrawing"
    WITHDRAWAL_COMPLETE = "WithdrawalComplete"
    WITHDRAWAL_FAILED = "WithdrawalFailed"
    BRIDGING = "Bridging"
    ATTESTED = "Attested"
    BRIDGED = "Bridged"
    BRIDGING_FAILED = "BridgingFailed"
    DEPOSIT_INITIATED = "DepositInitiated"
    DEPOSIT_CONFIRMED = "DepositConfirmed"
    DEPOSIT_FAILED = "DepositFailed"
    RECONCILED = "Reconciled"
    # The lifecycle is Failed (an invalid event was stored): every command is refused.
    CORRUPTED = "Corrupted"


_S = UsdcStep
TERMINAL_STEPS = frozenset(
    {
        _S.REQUEST_FAILED,
        _S.WITHDRAWAL_FAILED,
        _S.BRIDGING_FAILED,
        _S.DEPOSIT_CONFIRMED,
        _S.DEPOSIT_FAILED,
        _S.RECONCILED,
    }
)
# Failed states whose funds are still inflight: an operator may reconcile them.
RECONCILABLE_STEPS = frozenset({_S.WITHDRAWAL_FAILED, _S.BRIDGING_FAILED, _S.DEPOSIT_FAILED})

# Position along the pipeline; a failed state sits just after the step it failed in.
_RANK: dict[UsdcStep, float] = {
    _S.UNINITIALIZED: 0,
    _S.REQUESTED: 1,
    _S.REQUEST_FAILED: 1.5,
    _S.WITHDRAWING: 2,
    _S.WITHDRAWAL_FAILED: 2.5,
    _S.WITHDRAWAL_COMPLETE: 3,
    _S.BRIDGING: 4,
    _S.ATTESTED: 5,
    _S.BRIDGING_FAILED: 5.5,
    _S.BRIDGED: 6,
    _S.DEPOSIT_INITIATED: 7,
    _S.DEPOSIT_FAILED: 7.5,
    _S.DEPOSIT_CONFIRMED: 8,
}

# The state in which each purpose's transaction is signed and broadcast.
PURPOSE_STEP: dict[TxPurpose, UsdcStep] = {
    TxPurpose.VAULT_WITHDRAW: _S.REQUESTED,
    TxPurpose.BURN: _S.WITHDRAWAL_COMPLETE,
    TxPurpose.MINT: _S.ATTESTED,
    TxPurpose.VAULT_DEPOSIT: _S.BRIDGED,
    TxPurpose.ALPACA_DEPOSIT: _S.BRIDGED,
    TxPurpose.APPROVE_BURN: _S.WITHDRAWAL_COMPLETE,
    TxPurpose.APPROVE_VAULT: _S.BRIDGED,
}


# --- state data -----------------------------------------------------------------------------


# A signed transaction stored before broadcast (rebroadcast the same bytes on resume).
SignedTx = StoredTx


@dataclass(frozen=True)
class UsdcAmounts:
    """Amounts and fees reported by the steps so far (None = not reported)."""

    withdrawal_received: Decimal | None = None  # ConfirmWithdrawal.amount_received
    withdrawal_fee: Decimal | None = None  # ConfirmWithdrawal.fee
    burn_amount: Decimal | None = None  # InitiateBridging.burn_amount
    max_fee: Decimal | None = None  # InitiateBridging.max_fee
    bridged_received: Decimal | None = None  # ConfirmBridging.amount_received
    bridge_fee: Decimal | None = None  # ConfirmBridging.fee
    deposited: Decimal | None = None  # ConfirmDeposit.amount_deposited


Transactions = dict[TxPurpose, SignedTx]


@dataclass(frozen=True)
class Conversion:
    """A `USDCUSD` conversion at Alpaca (spec 15.5): initiated, then confirmed (filled) or
    failed (nothing filled)."""

    client_order_id: str
    side: str
    amount: Decimal
    initiated_at: datetime
    confirmed: ev.ConversionConfirmed | None = None
    failure: str | None = None

    @property
    def settled(self) -> bool:
        return self.confirmed is not None or self.failure is not None


@dataclass(frozen=True)
class Requested:
    STEP: ClassVar[UsdcStep] = _S.REQUESTED
    direction: RebalanceDirection
    amount: Decimal
    requested_at: datetime
    transactions: Transactions
    # Alpaca-to-Base: the USD -> USDC buy before the withdrawal.
    conversion: Conversion | None = None


@dataclass(frozen=True)
class RequestFailed:
    STEP: ClassVar[UsdcStep] = _S.REQUEST_FAILED
    direction: RebalanceDirection
    amount: Decimal
    requested_at: datetime
    reason: str
    failed_at: datetime
    transactions: Transactions


@dataclass(frozen=True)
class _Initiated:
    """Fields every state from Withdrawing on carries."""

    STEP: ClassVar[UsdcStep]
    direction: RebalanceDirection
    amount: Decimal
    initiated_at: datetime
    transactions: Transactions
    amounts: UsdcAmounts


@dataclass(frozen=True)
class Withdrawing(_Initiated):
    STEP: ClassVar[UsdcStep] = _S.WITHDRAWING
    withdrawal_ref: TransferRef


@dataclass(frozen=True)
class WithdrawalComplete(_Initiated):
    STEP: ClassVar[UsdcStep] = _S.WITHDRAWAL_COMPLETE
    confirmed_at: datetime


@dataclass(frozen=True)
class WithdrawalFailed(_Initiated):
    STEP: ClassVar[UsdcStep] = _S.WITHDRAWAL_FAILED
    withdrawal_ref: TransferRef
    reason: str
    failed_at: datetime


@dataclass(frozen=True)
class Bridging(_Initiated):
    STEP: ClassVar[UsdcStep] = _S.BRIDGING
    burn_tx_hash: TxHash
    cctp_nonce: str
    burned_at: datetime


@dataclass(frozen=True)
class Attested(_Initiated):
    STEP: ClassVar[UsdcStep] = _S.ATTESTED
    burn_tx_hash: TxHash
    cctp_nonce: str
    attestation: bytes
    message: bytes | None
    attested_at: datetime


@dataclass(frozen=True)
class Bridged(_Initiated):
    STEP: ClassVar[UsdcStep] = _S.BRIDGED
    burn_tx_hash: TxHash
    mint_tx_hash: TxHash
    minted_at: datetime


@dataclass(frozen=True)
class BridgingFailed(_Initiated):
    """burn_tx_hash / cctp_nonce are None when the burn itself failed (B5)."""

    STEP: ClassVar[UsdcStep] = _S.BRIDGING_FAILED
    burn_tx_hash: TxHash | None
    cctp_nonce: str | None
    reason: str
    failed_at: datetime


@dataclass(frozen=True)
class DepositInitiated(_Initiated):
    STEP: ClassVar[UsdcStep] = _S.DEPOSIT_INITIATED
    burn_tx_hash: TxHash
    mint_tx_hash: TxHash
    deposit_ref: TransferRef
    deposit_initiated_at: datetime
    # Base-to-Alpaca: the USDC -> USD sale once Alpaca credited the deposit.
    conversion: Conversion | None = None


@dataclass(frozen=True)
class DepositConfirmed(_Initiated):
    STEP: ClassVar[UsdcStep] = _S.DEPOSIT_CONFIRMED
    burn_tx_hash: TxHash
    mint_tx_hash: TxHash
    deposit_confirmed_at: datetime


@dataclass(frozen=True)
class DepositFailed(_Initiated):
    """deposit_ref is None when the deposit submission itself failed (B5)."""

    STEP: ClassVar[UsdcStep] = _S.DEPOSIT_FAILED
    burn_tx_hash: TxHash
    mint_tx_hash: TxHash
    deposit_ref: TransferRef | None
    reason: str
    failed_at: datetime


@dataclass(frozen=True)
class Reconciled(_Initiated):
    """An operator declared the kept inflight settled outside the system (B13)."""

    STEP: ClassVar[UsdcStep] = _S.RECONCILED
    failed: WithdrawalFailed | BridgingFailed | DepositFailed
    reason: str
    operator: str
    reconciled_at: datetime


UsdcState = (
    Requested
    | RequestFailed
    | Withdrawing
    | WithdrawalComplete
    | WithdrawalFailed
    | Bridging
    | Attested
    | Bridged
    | BridgingFailed
    | DepositInitiated
    | DepositConfirmed
    | DepositFailed
    | Reconciled
)


# --- commands -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """Genesis alternative, recorded before the first side effect."""

    direction: RebalanceDirection
    amount: Decimal


@dataclass(frozen=True)
class FailRequest:
    reason: str


@dataclass(frozen=True)
class RecordTransaction:
    purpose: TxPurpose
    chain_id: int
    raw_tx: bytes
    tx_hash: TxHash


@dataclass(frozen=True)
class Initiate:
    direction: RebalanceDirection
    amount: Decimal
    withdrawal: TransferRef


@dataclass(frozen=True)
class ConfirmWithdrawal:
    amount_received: Decimal | None = None
    fee: Decimal | None = None


@dataclass(frozen=True)
class FailWithdrawal:
    reason: str


@dataclass(frozen=True)
class InitiateBridging:
    burn_tx: TxHash
    cctp_nonce: str  # 0x + 32 bytes hex, never all zero
    burn_amount: Decimal | None = None
    max_fee: Decimal | None = None


@dataclass(frozen=True)
class ReceiveAttestation:
    attestation: bytes
    message: bytes | None = None


@dataclass(frozen=True)
class ConfirmBridging:
    mint_tx: TxHash
    amount_received: Decimal | None = None
    fee: Decimal | None = None


@dataclass(frozen=True)
class FailBridging:
    reason: str


@dataclass(frozen=True)
class InitiateDeposit:
    deposit: TransferRef


@dataclass(frozen=True)
class ConfirmDeposit:
    amount_deposited: Decimal | None = None


@dataclass(frozen=True)
class FailDeposit:
    reason: str


@dataclass(frozen=True)
class ReconcileUsdc:
    reason: str
    operator: str


@dataclass(frozen=True)
class InitiateConversion:
    client_order_id: str
    side: str  # "buy" (Alpaca-to-Base, in Requested) or "sell" (Base-to-Alpaca, in
    # DepositInitiated)
    amount: Decimal  # USD for a buy, USDC for a sell


@dataclass(frozen=True)
class ConfirmConversion:
    order_id: str
    filled_qty: Decimal
    filled_avg_price: Decimal
    usdc_amount: Decimal
    usd_amount: Decimal
    fee: Decimal | None = None
    partial: bool = False


@dataclass(frozen=True)
class FailConversion:
    reason: str


UsdcCommand = (
    Request
    | FailRequest
    | RecordTransaction
    | ReplaceTransaction
    | RecordReceipt
    | RecordVenueCost
    | Initiate
    | ConfirmWithdrawal
    | FailWithdrawal
    | InitiateBridging
    | ReceiveAttestation
    | ConfirmBridging
    | FailBridging
    | InitiateDeposit
    | ConfirmDeposit
    | FailDeposit
    | ReconcileUsdc
    | InitiateConversion
    | ConfirmConversion
    | FailConversion
)


# --- errors ---------------------------------------------------------------------------------


class UsdcRebalanceError(CommandRefused):
    """A USDC rebalance command refused in the current state (`command`, `state`, `rule`)."""


class AlreadyInitiated(UsdcRebalanceError):
    RULE = "the rebalance was already requested or initiated"


class NotRequested(UsdcRebalanceError):
    RULE = "the rebalance has not been requested"


class RequestAlreadyFailed(UsdcRebalanceError):
    RULE = "the rebalance request already failed"


class WithdrawalNotInitiated(UsdcRebalanceError):
    RULE = "the withdrawal has not been initiated"


class WithdrawalAlreadyCompleted(UsdcRebalanceError):
    RULE = "the withdrawal step is already over"


class WithdrawalNotConfirmed(UsdcRebalanceError):
    RULE = "the withdrawal has not been confirmed"


class BridgingNotInitiated(UsdcRebalanceError):
    RULE = "the bridging (CCTP burn) has not been initiated"


class AttestationNotReceived(UsdcRebalanceError):
    RULE = "the CCTP attestation has not been received"


class BridgingAlreadyCompleted(UsdcRebalanceError):
    RULE = "the bridging step is already over"


class BridgingNotCompleted(UsdcRebalanceError):
    RULE = "the bridging has not completed"


class DepositNotInitiated(UsdcRebalanceError):
    RULE = "the deposit has not been initiated"


class InvalidCommand(UsdcRebalanceError):
    RULE = "the rebalance is already past this step"


class ConversionNotValid(UsdcRebalanceError):
    RULE = (
        "a conversion is a buy before an Alpaca-to-Base withdrawal or a sell after a "
        "Base-to-Alpaca deposit, one per operation"
    )


class ConversionNotInitiated(UsdcRebalanceError):
    RULE = "no conversion is waiting for its outcome"


class ConversionPending(UsdcRebalanceError):
    RULE = "the conversion has not settled yet"


class AlreadyTerminal(UsdcRebalanceError):
    RULE = "the rebalance is over: no transaction can be recorded"


class AlreadyReconciled(UsdcRebalanceError):
    RULE = "the rebalance was already reconciled by an operator"


class NotReconcilable(UsdcRebalanceError):
    RULE = (
        "only WithdrawalFailed, BridgingFailed or DepositFailed (funds still inflight) "
        "can be reconciled"
    )


class RequestMismatch(UsdcRebalanceError):
    RULE = "Initiate must carry the requested direction and amount"


class TransactionConflict(UsdcRebalanceError):
    RULE = "a different transaction is already recorded for this purpose"


class TransactionMismatch(UsdcRebalanceError):
    RULE = "the step must name the transaction recorded for it"


@dataclass(frozen=True)
class _Rule:
    valid: frozenset[UsdcStep]
    before: type[UsdcRebalanceError]
    after: type[UsdcRebalanceError]
    overrides: tuple[tuple[UsdcStep, type[UsdcRebalanceError]], ...] = ()


def _rule(
    valid: set[UsdcStep],
    before: type[UsdcRebalanceError],
    after: type[UsdcRebalanceError],
    **overrides: type[UsdcRebalanceError],
) -> _Rule:
    return _Rule(
        frozenset(valid), before, after, tuple((UsdcStep(k), v) for k, v in overrides.items())
    )


# Spec 4.4 command table plus the additions: the states each command is valid in, the error
# for a state before them and for a state after them. RequestFailed refuses everything with
# RequestAlreadyFailed and Reconciled with AlreadyReconciled (except as noted).
_RULES: dict[type, _Rule] = {
    Request: _rule({_S.UNINITIALIZED}, AlreadyInitiated, AlreadyInitiated),
    Initiate: _rule({_S.UNINITIALIZED, _S.REQUESTED}, AlreadyInitiated, AlreadyInitiated),
    FailRequest: _rule({_S.REQUESTED}, NotRequested, AlreadyInitiated),
    ConfirmWithdrawal: _rule({_S.WITHDRAWING}, WithdrawalNotInitiated, WithdrawalAlreadyCompleted),
    FailWithdrawal: _rule({_S.WITHDRAWING}, WithdrawalNotInitiated, WithdrawalAlreadyCompleted),
    InitiateBridging: _rule({_S.WITHDRAWAL_COMPLETE}, WithdrawalNotConfirmed, InvalidCommand),
    ReceiveAttestation: _rule(
        {_S.BRIDGING}, BridgingNotInitiated, BridgingAlreadyCompleted, Attested=InvalidCommand
    ),
    ConfirmBridging: _rule({_S.ATTESTED}, AttestationNotReceived, BridgingAlreadyCompleted),
    FailBridging: _rule(
        {_S.WITHDRAWAL_COMPLETE, _S.BRIDGING, _S.ATTESTED},
        BridgingNotInitiated,
        BridgingAlreadyCompleted,
    ),
    InitiateDeposit: _rule({_S.BRIDGED}, BridgingNotCompleted, InvalidCommand),
    ConfirmDeposit: _rule({_S.DEPOSIT_INITIATED}, DepositNotInitiated, InvalidCommand),
    FailDeposit: _rule({_S.BRIDGED, _S.DEPOSIT_INITIATED}, DepositNotInitiated, InvalidCommand),
    InitiateConversion: _rule({_S.REQUESTED, _S.DEPOSIT_INITIATED}, NotRequested, InvalidCommand),
    ConfirmConversion: _rule({_S.REQUESTED, _S.DEPOSIT_INITIATED}, NotRequested, InvalidCommand),
    FailConversion: _rule({_S.REQUESTED, _S.DEPOSIT_INITIATED}, NotRequested, InvalidCommand),
}

_LIVE_NON_TERMINAL = frozenset(
    {
        _S.REQUESTED,
        _S.WITHDRAWING,
        _S.WITHDRAWAL_COMPLETE,
        _S.BRIDGING,
        _S.ATTESTED,
        _S.BRIDGED,
        _S.DEPOSIT_INITIATED,
    }
)


# --- helpers for the trigger, the projection and workers ------------------------------------


def _value(state: Lifecycle[UsdcState] | UsdcState | None) -> UsdcState | None:
    if isinstance(state, Lifecycle):
        return state.value
    return state


def step_of(state: Lifecycle[UsdcState]) -> UsdcStep:
    """Which step the rebalance is in; CORRUPTED when the lifecycle is Failed."""
    if state.is_failed:
        return UsdcStep.CORRUPTED
    if state.value is None:
        return UsdcStep.UNINITIALIZED
    return state.value.STEP


def genesis_of(
    state: Lifecycle[UsdcState] | UsdcState | None,
) -> tuple[RebalanceDirection, Decimal] | None:
    """(direction, amount) from the stored state (also a corrupted one's last valid state)."""
    value = _value(state)
    if value is None:
        return None
    return value.direction, value.amount


def is_terminal(state: Lifecycle[UsdcState] | UsdcState | None) -> bool:
    """True for the success, failure and reconciled states (not for a corrupted lifecycle)."""
    if isinstance(state, Lifecycle) and state.is_failed:
        return False
    value = _value(state)
    return value is not None and value.STEP in TERMINAL_STEPS


def can_reconcile(state: Lifecycle[UsdcState] | UsdcState | None) -> bool:
    if isinstance(state, Lifecycle) and state.is_failed:
        return False
    value = _value(state)
    return value is not None and value.STEP in RECONCILABLE_STEPS


def transaction_for(
    state: Lifecycle[UsdcState] | UsdcState | None, purpose: TxPurpose
) -> SignedTx | None:
    """The signed transaction stored for `purpose`, if any (rebroadcast it on resume)."""
    value = _value(state)
    if value is None:
        return None
    return value.transactions.get(purpose)


def burnable_amount(state: UsdcState) -> Decimal:
    """What reached the bridge source: the withdrawal's received amount, else the amount."""
    amounts = getattr(state, "amounts", UsdcAmounts())
    if amounts.withdrawal_received is not None:
        return amounts.withdrawal_received
    return state.amount


def depositable_amount(state: UsdcState) -> Decimal:
    """What the bridge delivered: the minted amount received, else the burn amount, else the
    withdrawal's received amount, else the amount (B6: never deposit the gross amount when a
    net amount is known)."""
    amounts = getattr(state, "amounts", UsdcAmounts())
    if amounts.bridged_received is not None:
        return amounts.bridged_received
    if amounts.burn_amount is not None:
        return amounts.burn_amount
    return burnable_amount(state)


def validate_cctp_nonce(field: str, value: str) -> str:
    if not isinstance(value, str) or not _NONCE.fullmatch(value):
        raise InvalidValue(field, value, "must be a 0x-prefixed 32-byte hex nonce")
    if int(value, 16) == 0:
        raise InvalidValue(field, value, "must not be all zero (no burn was observed)")
    return value


# --- apply ----------------------------------------------------------------------------------


def _from_event(event: Any) -> UsdcState:
    if isinstance(event, ev.Requested):
        return Requested(
            direction=event.direction,
            amount=event.amount,
            requested_at=event.requested_at,
            transactions={},
        )
    if isinstance(event, ev.Initiated):
        return _withdrawing(event, {})
    raise Mismatch(None, event)


def _withdrawing(event: ev.Initiated, transactions: Transactions) -> Withdrawing:
    return Withdrawing(
        direction=event.direction,
        amount=event.amount,
        initiated_at=event.initiated_at,
        transactions=transactions,
        amounts=UsdcAmounts(),
        withdrawal_ref=event.withdrawal_ref,
    )


def _base(state: _Initiated) -> dict[str, Any]:
    return {
        "direction": state.direction,
        "amount": state.amount,
        "initiated_at": state.initiated_at,
        "transactions": state.transactions,
        "amounts": state.amounts,
    }


def _transition(state: UsdcState, event: Any) -> UsdcState:
    replacement = replacement_of(event)
    if replacement is not None:  # TransactionReplaced, or a TransactionSigned(replaces=...)
        if state.STEP not in _LIVE_NON_TERMINAL:
            raise Mismatch(state, event)
        replaced = state.transactions.get(replacement.purpose)
        if replaced is None or replaced.tx_hash.lower() != replacement.replaces.lower():
            raise Mismatch(state, event)
        return replace(
            state,
            transactions={
                **state.transactions,
                replacement.purpose: replaced.replaced_by(replacement),
            },
        )
    if isinstance(event, ev.TransactionSigned):
        if state.STEP not in _LIVE_NON_TERMINAL:
            raise Mismatch(state, event)
        signed = StoredTx(
            purpose=event.purpose,
            chain_id=event.chain_id,
            raw_tx=event.raw_tx,
            tx_hash=event.tx_hash,
            signed_at=event.signed_at,
        )
        return replace(state, transactions={**state.transactions, event.purpose: signed})

    if isinstance(event, ev.ConversionInitiated | ev.ConversionConfirmed | ev.ConversionFailed):
        return _conversion_applied(state, event)
    if isinstance(state, Requested):
        if isinstance(event, ev.Initiated) and (
            event.direction == state.direction and event.amount == withdrawal_amount(state)
        ):
            return _withdrawing(event, state.transactions)
        if isinstance(event, ev.RequestFailed):
            return RequestFailed(
                direction=state.direction,
                amount=state.amount,
                requested_at=state.requested_at,
                reason=event.reason,
                failed_at=event.failed_at,
                transactions=state.transactions,
            )
    elif isinstance(state, Withdrawing):
        if isinstance(event, ev.WithdrawalConfirmed):
            amounts = replace(
                state.amounts, withdrawal_received=event.amount_received, withdrawal_fee=event.fee
            )
            return WithdrawalComplete(
                **{**_base(state), "amounts": amounts}, confirmed_at=event.confirmed_at
            )
        if isinstance(event, ev.WithdrawalFailed):
            return WithdrawalFailed(
                **_base(state),
                withdrawal_ref=state.withdrawal_ref,
                reason=event.reason,
                failed_at=event.failed_at,
            )
    elif isinstance(state, WithdrawalComplete):
        if isinstance(event, ev.BridgingInitiated):
            amounts = replace(state.amounts, burn_amount=event.burn_amount, max_fee=event.max_fee)
            return Bridging(
                **{**_base(state), "amounts": amounts},
                burn_tx_hash=event.burn_tx_hash,
                cctp_nonce=event.cctp_nonce,
                burned_at=event.burned_at,
            )
        if isinstance(event, ev.BridgingFailed):
            return _bridging_failed(state, event)
    elif isinstance(state, Bridging):
        if isinstance(event, ev.BridgeAttestationReceived):
            return Attested(
                **_base(state),
                burn_tx_hash=state.burn_tx_hash,
                cctp_nonce=state.cctp_nonce,
                attestation=event.attestation,
                message=event.message,
                attested_at=event.attested_at,
            )
        if isinstance(event, ev.BridgingFailed):
            return _bridging_failed(state, event)
    elif isinstance(state, Attested):
        if isinstance(event, ev.Bridged):
            amounts = replace(
                state.amounts, bridged_received=event.amount_received, bridge_fee=event.fee
            )
            return Bridged(
                **{**_base(state), "amounts": amounts},
                burn_tx_hash=state.burn_tx_hash,
                mint_tx_hash=event.mint_tx_hash,
                minted_at=event.minted_at,
            )
        if isinstance(event, ev.BridgingFailed):
            return _bridging_failed(state, event)
    elif isinstance(state, Bridged):
        if isinstance(event, ev.DepositInitiated):
            return DepositInitiated(
                **_base(state),
                burn_tx_hash=state.burn_tx_hash,
                mint_tx_hash=state.mint_tx_hash,
                deposit_ref=event.deposit_ref,
                deposit_initiated_at=event.deposit_initiated_at,
            )
        if isinstance(event, ev.DepositFailed):
            return _deposit_failed(state, event)
    elif isinstance(state, DepositInitiated):
        if isinstance(event, ev.DepositConfirmed):
            amounts = replace(state.amounts, deposited=event.amount_deposited)
            return DepositConfirmed(
                **{**_base(state), "amounts": amounts},
                burn_tx_hash=state.burn_tx_hash,
                mint_tx_hash=state.mint_tx_hash,
                deposit_confirmed_at=event.deposit_confirmed_at,
            )
        if isinstance(event, ev.DepositFailed):
            return _deposit_failed(state, event)
    elif isinstance(state, WithdrawalFailed | BridgingFailed | DepositFailed) and isinstance(
        event, ev.UsdcReconciled
    ):
        return Reconciled(
            **_base(state),
            failed=state,
            reason=event.reason,
            operator=event.operator,
            reconciled_at=event.reconciled_at,
        )
    raise Mismatch(state, event)


def _conversion_applied(state: UsdcState, event: Any) -> UsdcState:
    if not isinstance(state, Requested | DepositInitiated):
        raise Mismatch(state, event)
    conversion = state.conversion
    if isinstance(event, ev.ConversionInitiated):
        if conversion is not None:
            raise Mismatch(state, event)
        started = Conversion(
            client_order_id=event.client_order_id,
            side=event.side,
            amount=event.amount,
            initiated_at=event.initiated_at,
        )
        return replace(state, conversion=started)
    if conversion is None or conversion.settled:
        raise Mismatch(state, event)
    if isinstance(event, ev.ConversionConfirmed):
        return replace(state, conversion=replace(conversion, confirmed=event))
    return replace(state, conversion=replace(conversion, failure=event.reason))


def withdrawal_amount(state: Requested) -> Decimal:
    """What an Alpaca-to-Base withdrawal sends: the USDC its conversion bought (floored to 6
    decimals), else (no conversion recorded: logs before conversions) the requested amount."""
    conversion = state.conversion
    if conversion is not None and conversion.confirmed is not None:
        return conversion.confirmed.usdc_amount
    return state.amount


def _bridging_failed(
    state: WithdrawalComplete | Bridging | Attested, event: ev.BridgingFailed
) -> BridgingFailed:
    return BridgingFailed(
        **_base(state),
        burn_tx_hash=event.burn_tx_hash,
        cctp_nonce=event.cctp_nonce,
        reason=event.reason,
        failed_at=event.failed_at,
    )


def _deposit_failed(state: Bridged | DepositInitiated, event: ev.DepositFailed) -> DepositFailed:
    return DepositFailed(
        **_base(state),
        burn_tx_hash=state.burn_tx_hash,
        mint_tx_hash=state.mint_tx_hash,
        deposit_ref=event.deposit_ref,
        reason=event.reason,
        failed_at=event.failed_at,
    )


def _fold(state: Lifecycle[UsdcState], event: Any) -> Lifecycle[UsdcState]:
    return lifecycle_apply(state, event, apply_transition=_transition, from_event=_from_event)


def apply(state: Lifecycle[UsdcState], event: Any) -> Lifecycle[UsdcState]:
    return onchain_tx.apply(state, event, _fold)


# --- handle ---------------------------------------------------------------------------------


def _details(current: UsdcState | None) -> dict[str, Any]:
    if current is None:
        return {}
    return {"direction": str(current.direction), "amount": current.amount}


def _refuse_if_invalid(current: UsdcState | None, command: Any) -> None:
    step = UsdcStep.UNINITIALIZED if current is None else current.STEP
    details = _details(current)
    if isinstance(command, ReconcileUsdc):
        if step is _S.RECONCILED:
            raise AlreadyReconciled(command, current, **details)
        if step not in RECONCILABLE_STEPS:
            raise NotReconcilable(command, current, **details)
        return
    if type(command) not in _RULES and not isinstance(
        command, RecordTransaction | ReplaceTransaction
    ):
        raise InvalidValue("command", command, "not a UsdcRebalance command")
    if step is _S.RECONCILED:
        raise AlreadyReconciled(command, current, **details)
    if step is _S.REQUEST_FAILED:
        raise RequestAlreadyFailed(command, current, **details)
    if isinstance(command, RecordTransaction | ReplaceTransaction):
        if step is _S.UNINITIALIZED:
            raise NotRequested(command, current)
        if step not in _LIVE_NON_TERMINAL:
            raise AlreadyTerminal(command, current, **details)
        return
    rule = _RULES[type(command)]
    if step in rule.valid:
        return
    for override_step, error in rule.overrides:
        if override_step is step:
            raise error(command, current, **details)
    first_valid = min(_RANK[s] for s in rule.valid)
    error = rule.before if _RANK[step] < first_valid else rule.after
    raise error(command, current, **details)


def _check_recorded(
    command: Any,
    current: UsdcState,
    purposes: tuple[TxPurpose, ...],
    tx_hash: str,
) -> None:
    recorded = [current.transactions[p] for p in purposes if p in current.transactions]
    if recorded and not any(h.lower() == tx_hash.lower() for r in recorded for h in r.all_hashes()):
        raise TransactionMismatch(
            command,
            current,
            purpose=str(recorded[0].purpose),
            recorded=recorded[0].tx_hash,
            actual=tx_hash,
        )


def _record_transaction(
    command: RecordTransaction, current: UsdcState, now: datetime
) -> list[ev.UsdcRebalanceEvent]:
    if not isinstance(command.purpose, TxPurpose):
        raise InvalidValue("purpose", command.purpose, "must be a TxPurpose")
    chain_id = command.chain_id
    if isinstance(chain_id, bool) or not isinstance(chain_id, int) or chain_id <= 0:
        raise InvalidValue("chain_id", chain_id, "must be a positive integer")
    raw_tx = validate_bytes("raw_tx", command.raw_tx)
    tx_hash = validate_tx_hash("tx_hash", command.tx_hash)
    if command.purpose not in PURPOSE_STEP:
        raise InvalidValue("purpose", command.purpose, "a USDC move sends no such transaction")
    stored = current.transactions.get(command.purpose)
    if stored is not None:
        same = (
            stored.tx_hash.lower() == tx_hash.lower()
            and stored.raw_tx == raw_tx
            and stored.chain_id == chain_id
        )
        if same:
            return []  # already recorded: idempotent
        past_step = _RANK[current.STEP] > _RANK[PURPOSE_STEP[command.purpose]]
        if not past_step:
            raise TransactionConflict(
                command,
                current,
                purpose=str(command.purpose),
                recorded=stored.tx_hash,
                actual=tx_hash,
            )
    return [
        ev.TransactionSigned(
            purpose=command.purpose,
            chain_id=chain_id,
            raw_tx=raw_tx,
            tx_hash=tx_hash,
            signed_at=now,
        )
    ]


def handle(state: Lifecycle[UsdcState], command: Any, now: datetime) -> list[ev.UsdcRebalanceEvent]:
    """Decide the events for `command`, or raise a `UsdcRebalanceError` / `InvalidValue`.

    A Failed (corrupted) lifecycle refuses every command with its `LifecycleError`.
    """
    validate_aware("now", now)
    if isinstance(command, onchain_tx.LEDGER_COMMANDS):
        return onchain_tx.handle_ledger(
            state,
            command,
            now,
            transaction_cost=ev.UsdcTransactionCostRecorded,
            venue_cost=ev.UsdcVenueCostRecorded,
        )
    current: UsdcState | None = state.current()
    _refuse_if_invalid(current, command)

    if isinstance(command, ReplaceTransaction):
        assert current is not None
        purpose = onchain_tx.validate_purpose(command.purpose)
        return onchain_tx.decide_replacement(
            command,
            current,
            current.transactions.get(purpose),
            event=ev.UsdcTransactionReplaced,
            now=now,
        )
    if isinstance(command, Request):
        return [
            ev.Requested(
                direction=validate_direction("direction", command.direction),
                amount=validate_amount("amount", command.amount, decimals=USDC_DECIMALS),
                requested_at=now,
            )
        ]
    if isinstance(command, Initiate):
        direction = validate_direction("direction", command.direction)
        amount = validate_amount("amount", command.amount, decimals=USDC_DECIMALS)
        withdrawal = validate_transfer_ref("withdrawal", command.withdrawal)
        if isinstance(current, Requested):
            if direction != current.direction:
                raise RequestMismatch(
                    command,
                    current,
                    field="direction",
                    expected=current.direction,
                    actual=direction,
                )
            if current.conversion is not None and not current.conversion.settled:
                raise ConversionPending(command, current, **_details(current))
            expected = withdrawal_amount(current)
            if amount != expected:
                raise RequestMismatch(
                    command, current, field="amount", expected=expected, actual=amount
                )
            if withdrawal.kind is TransferRefKind.ONCHAIN_TX:
                _check_recorded(command, current, (TxPurpose.VAULT_WITHDRAW,), withdrawal.value)
        return [
            ev.Initiated(
                direction=direction, amount=amount, withdrawal_ref=withdrawal, initiated_at=now
            )
        ]

    assert current is not None  # every other command is refused while uninitialized
    if isinstance(command, FailRequest):
        return [ev.RequestFailed(reason=validate_text("reason", command.reason), failed_at=now)]
    if isinstance(command, RecordTransaction):
        return _record_transaction(command, current, now)
    if isinstance(command, ConfirmWithdrawal):
        return [
            ev.WithdrawalConfirmed(
                confirmed_at=now,
                amount_received=validate_optional_amount(
                    "amount_received", command.amount_received, decimals=USDC_DECIMALS
                ),
                fee=validate_fee("fee", command.fee, decimals=USDC_DECIMALS),
            )
        ]
    if isinstance(command, FailWithdrawal):
        return [ev.WithdrawalFailed(reason=validate_text("reason", command.reason), failed_at=now)]
    if isinstance(command, InitiateBridging):
        burn_tx = validate_tx_hash("burn_tx", command.burn_tx)
        nonce = validate_cctp_nonce("cctp_nonce", command.cctp_nonce)
        burn_amount = validate_optional_amount(
            "burn_amount", command.burn_amount, decimals=USDC_DECIMALS
        )
        max_fee = validate_fee("max_fee", command.max_fee, decimals=USDC_DECIMALS)
        _check_recorded(command, current, (TxPurpose.BURN,), burn_tx)
        return [
            ev.BridgingInitiated(
                burn_tx_hash=burn_tx,
                cctp_nonce=nonce,
                burned_at=now,
                burn_amount=burn_amount,
                max_fee=max_fee,
            )
        ]
    if isinstance(command, ReceiveAttestation):
        message = command.message
        if message is not None:
            validate_bytes("message", message)
        return [
            ev.BridgeAttestationReceived(
                attestation=validate_bytes("attestation", command.attestation),
                attested_at=now,
                message=message,
            )
        ]
    if isinstance(command, ConfirmBridging):
        mint_tx = validate_tx_hash("mint_tx", command.mint_tx)
        amount_received = validate_optional_amount(
            "amount_received", command.amount_received, decimals=USDC_DECIMALS
        )
        fee = validate_fee("fee", command.fee, decimals=USDC_DECIMALS)
        _check_recorded(command, current, (TxPurpose.MINT,), mint_tx)
        return [
            ev.Bridged(
                mint_tx_hash=mint_tx, minted_at=now, amount_received=amount_received, fee=fee
            )
        ]
    if isinstance(command, FailBridging):
        reason = validate_text("reason", command.reason)
        if isinstance(current, Bridging | Attested):
            return [
                ev.BridgingFailed(
                    burn_tx_hash=current.burn_tx_hash,
                    cctp_nonce=current.cctp_nonce,
                    reason=reason,
                    failed_at=now,
                )
            ]
        return [ev.BridgingFailed(burn_tx_hash=None, cctp_nonce=None, reason=reason, failed_at=now)]
    if isinstance(command, InitiateDeposit):
        deposit = validate_transfer_ref("deposit", command.deposit)
        if deposit.kind is TransferRefKind.ONCHAIN_TX:
            _check_recorded(
                command,
                current,
                (TxPurpose.VAULT_DEPOSIT, TxPurpose.ALPACA_DEPOSIT),
                deposit.value,
            )
        return [ev.DepositInitiated(deposit_ref=deposit, deposit_initiated_at=now)]
    if isinstance(command, InitiateConversion | ConfirmConversion | FailConversion):
        return _conversion_events(command, current, now)
    if isinstance(command, ConfirmDeposit):
        if (
            isinstance(current, DepositInitiated)
            and current.conversion is not None
            and not current.conversion.settled
        ):
            raise ConversionPending(command, current, **_details(current))
        return [
            ev.DepositConfirmed(
                deposit_confirmed_at=now,
                amount_deposited=validate_optional_amount(
                    "amount_deposited", command.amount_deposited, decimals=USDC_DECIMALS
                ),
            )
        ]
    if isinstance(command, FailDeposit):
        reason = validate_text("reason", command.reason)
        deposit_ref = current.deposit_ref if isinstance(current, DepositInitiated) else None
        return [ev.DepositFailed(deposit_ref=deposit_ref, reason=reason, failed_at=now)]
    assert isinstance(command, ReconcileUsdc)
    return [
        ev.UsdcReconciled(
            reason=validate_text("reason", command.reason),
            operator=validate_text("operator", command.operator),
            reconciled_at=now,
        )
    ]


def _conversion_events(
    command: InitiateConversion | ConfirmConversion | FailConversion,
    current: UsdcState,
    now: datetime,
) -> list[ev.UsdcRebalanceEvent]:
    assert isinstance(current, Requested | DepositInitiated)
    details = _details(current)
    conversion = current.conversion
    if isinstance(command, InitiateConversion):
        side = command.side
        expected = "buy" if isinstance(current, Requested) else "sell"
        direction = (
            RebalanceDirection.ALPACA_TO_BASE
            if isinstance(current, Requested)
            else RebalanceDirection.BASE_TO_ALPACA
        )
        if side != expected or current.direction != direction or conversion is not None:
            raise ConversionNotValid(command, current, side=side, **details)
        return [
            ev.ConversionInitiated(
                client_order_id=validate_text("client_order_id", command.client_order_id),
                side=side,
                amount=validate_amount("amount", command.amount, decimals=USDC_DECIMALS),
                initiated_at=now,
            )
        ]
    if conversion is None or conversion.settled:
        raise ConversionNotInitiated(command, current, **details)
    if isinstance(command, FailConversion):
        return [ev.ConversionFailed(reason=validate_text("reason", command.reason), failed_at=now)]
    filled_qty = validate_amount("filled_qty", command.filled_qty, decimals=18)
    price = validate_amount("filled_avg_price", command.filled_avg_price, decimals=18)
    usdc_amount = validate_amount("usdc_amount", command.usdc_amount, decimals=USDC_DECIMALS)
    usd_amount = validate_amount("usd_amount", command.usd_amount, decimals=USDC_DECIMALS)
    fee = validate_fee("fee", command.fee, decimals=USDC_DECIMALS)
    # What was lost to the spread and fees, in USD (USDC counted at 1).
    cost = usd_amount - usdc_amount if conversion.side == "buy" else usdc_amount - usd_amount
    return [
        ev.ConversionConfirmed(
            order_id=validate_text("order_id", command.order_id),
            filled_qty=filled_qty,
            filled_avg_price=price,
            usdc_amount=usdc_amount,
            usd_amount=usd_amount,
            cost=cost,
            confirmed_at=now,
            fee=fee,
            partial=bool(command.partial),
        )
    ]


SPEC = AggregateSpec(
    aggregate_type=ev.USDC_REBALANCE,
    apply=apply,
    handle=handle,
    event_classes=(
        ev.Requested,
        ev.RequestFailed,
        ev.TransactionSigned,
        ev.Initiated,
        ev.WithdrawalConfirmed,
        ev.WithdrawalFailed,
        ev.BridgingInitiated,
        ev.BridgeAttestationReceived,
        ev.Bridged,
        ev.BridgingFailed,
        ev.DepositInitiated,
        ev.DepositConfirmed,
        ev.DepositFailed,
        ev.UsdcReconciled,
        ev.UsdcTransactionReplaced,
        ev.UsdcTransactionCostRecorded,
        ev.UsdcVenueCostRecorded,
        ev.ConversionInitiated,
        ev.ConversionConfirmed,
        ev.ConversionFailed,
    ),
)

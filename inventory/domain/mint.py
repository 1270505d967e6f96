"""TokenizedEquityMint aggregate (spec 4.2): offchain shares -> onchain tokens; id = a UUID.

States (each carries exactly the data valid in it; `STEP` names it for workers):

    MintRequested -> MintAccepted -> TokensReceived -> VaultDepositSubmitted -> Completed
                                     (DepositedIntoVault: the tokens are in the order book)
    MintRequested -> Failed (MintRejected, nothing inflight)            (terminal)
    MintAccepted  -> Failed (MintAcceptanceFailed, nothing inflight)    (terminal)
    MintAccepted  -> Failed (MintTimedOut, inflight kept)               (terminal)
    TokensReceived / VaultDepositSubmitted -> Failed (VaultDepositFailed, inflight kept)
    Failed(inflight kept) -> Reconciled (operator, MintReconciled)      (terminal)

Onchain inventory is the vault (spec 15.1): tokens in our wallet are not tradable, so a mint
is complete only once `deposit4` moved them into the asset's vault. `TokensReceived` may
record a standing approval of the order book (`VaultApprovalSigned`) before the deposit; both
transactions are stored signed before they are broadcast. Either one left unmined is replaced
(`ReplaceVaultApproval` -> `VaultApprovalReplaced`, `ReplaceVaultDeposit` ->
`VaultDepositReplaced`: same nonce, bumped fees, stored before it is broadcast); the ones it
replaced stay watched, and `ConfirmVaultDeposit` names whichever deposit was mined. Older logs
that end
`TokensReceived -> MintCompleted` (trigger era, tokens left in the wallet) still replay.

State classes share names with some events: import this module (`from inventory.domain
import mint`) and write `mint.MintAccepted` for the state, `ev.MintAccepted` for the event.
Workers should branch on `step_of(lifecycle)`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar

from inventory.domain import events as ev
from inventory.domain import onchain_tx
from inventory.domain.aggregate import AggregateSpec
from inventory.domain.checks import (
    CommandRefused,
    names_one_of,
    refuse_by_table,
    validate_address,
    validate_amount,
    validate_aware,
    validate_bytes,
    validate_bytes32_hex,
    validate_text,
    validate_tx_hash,
    validate_u256,
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
from inventory.domain.values import Address, TxHash, validate_symbol


class MintStep(enum.StrEnum):
    UNINITIALIZED = "Uninitialized"
    REQUESTED = "MintRequested"
    ACCEPTED = "MintAccepted"
    TOKENS_RECEIVED = "TokensReceived"
    VAULT_DEPOSIT_SUBMITTED = "VaultDepositSubmitted"
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
    # A standing approval of the order book, signed and stored (None: none needed yet).
    approval_raw_tx: bytes | None = None
    approval_tx_hash: TxHash | None = None
    approval_signed_at: datetime | None = None  # of the stored one (a replacement: its own)
    # Hashes of the approvals the stored one replaced (same nonce, lower fees), oldest first.
    approval_earlier_hashes: tuple[TxHash, ...] = ()

    def approval_hashes(self) -> tuple[TxHash, ...]:
        """The stored approval first, then the ones it replaced (empty: none stored)."""
        if self.approval_tx_hash is None:
            return ()
        return (self.approval_tx_hash, *reversed(self.approval_earlier_hashes))


@dataclass(frozen=True)
class VaultDepositSubmitted:
    """The deposit of the received tokens into the vault is signed and stored; it may or may
    not have been broadcast."""

    STEP: ClassVar[MintStep] = MintStep.VAULT_DEPOSIT_SUBMITTED
    symbol: str
    quantity: Decimal
    wallet: Address
    requested_at: datetime
    issuer_request_id: str
    tokenization_request_id: str
    tx_hash: TxHash
    receipt_id: int
    shares_minted: int
    received_at: datetime
    vault: Address
    vault_id: str
    deposit_units: int
    deposit_raw_tx: bytes
    deposit_tx_hash: TxHash
    submitted_at: datetime  # when the first deposit was signed (time-outs count from it)
    # Hashes of the deposits the stored one replaced (same nonce, lower fees), oldest first.
    deposit_earlier_hashes: tuple[TxHash, ...] = ()
    deposit_replaced_at: datetime | None = None  # when the latest replacement was signed

    @property
    def deposit_last_signed_at(self) -> datetime:
        return self.deposit_replaced_at or self.submitted_at

    def deposit_hashes(self) -> tuple[TxHash, ...]:
        """The stored deposit first, then the ones it replaced."""
        return (self.deposit_tx_hash, *reversed(self.deposit_earlier_hashes))


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
    # The vault deposit that ended the mint (None in trigger-era logs: tokens left in wallet).
    deposit_tx_hash: TxHash | None = None


@dataclass(frozen=True)
class Failed:
    """Terminal failure. `inflight_kept` is True after `MintTimedOut` (the shares may still
    be moving) and after `VaultDepositFailed` (the tokens were minted but are not in the
    vault): the inventory keeps them inflight until an operator reconciles. The Alpaca ids
    are present when the failure happened after acceptance."""

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


MintState = (
    MintRequested
    | MintAccepted
    | TokensReceived
    | VaultDepositSubmitted
    | Completed
    | Failed
    | Reconciled
)


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
    """Trigger era: complete with the tokens in the wallet. Refused now (see the table)."""


@dataclass(frozen=True)
class RecordVaultApproval:
    """Store a signed approval of the order book for the token before broadcasting it."""

    raw_tx: bytes
    tx_hash: TxHash


@dataclass(frozen=True)
class SubmitVaultDeposit:
    """Store the signed `deposit4` of the received tokens before broadcasting it."""

    vault: Address
    vault_id: str
    amount_units: int
    raw_tx: bytes
    tx_hash: TxHash


@dataclass(frozen=True)
class ConfirmVaultDeposit:
    """The stored deposit (or one it replaced: `tx_hash`, the mined one; None = the stored
    one) was mined and moved the tokens into the vault."""

    tx_hash: TxHash | None = None


@dataclass(frozen=True)
class FailVaultDeposit:
    """The deposit cannot be made; the tokens stay in the wallet (inflight kept)."""

    reason: str


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
    | RecordVaultApproval
    | SubmitVaultDeposit
    | ReplaceTransaction
    | RecordReceipt
    | RecordVenueCost
    | ConfirmVaultDeposit
    | FailVaultDeposit
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


class VaultDepositRequired(MintError):
    RULE = "a mint completes only by depositing the received tokens into the vault"


class VaultDepositNotSubmitted(MintError):
    RULE = "no vault deposit has been submitted"


class VaultApprovalNotSigned(MintError):
    RULE = "no signed vault approval is waiting"


class DepositMismatch(MintError):
    RULE = "ConfirmVaultDeposit must name the stored deposit (or one it replaced)"


class AlreadyCompleted(MintError):
    RULE = "the mint is already past this step"


class AlreadyFailed(MintError):
    RULE = "the mint already failed"


class AlreadyReconciled(MintError):
    RULE = "the mint was already reconciled by an operator"


class NotReconcilable(MintError):
    RULE = "only a timed-out mint (shares possibly still moving, inflight kept) can be reconciled"


# Command validation (spec 4.2 table plus TimeOutMint / ReconcileMint and the vault deposit of
# spec 15.1; Finalize is refused now that a mint ends in the vault): for each command the
# error per step; None = valid. Steps not listed (Reconciled) refuse with AlreadyReconciled.
_S = MintStep
_VALIDITY: dict[Any, dict[MintStep, type[MintError] | None]] = {
    RequestMint: {
        _S.UNINITIALIZED: None,
        _S.REQUESTED: AlreadyInProgress,
        _S.ACCEPTED: AlreadyInProgress,
        _S.TOKENS_RECEIVED: AlreadyInProgress,
        _S.VAULT_DEPOSIT_SUBMITTED: AlreadyInProgress,
        _S.COMPLETED: AlreadyInProgress,
        _S.FAILED: AlreadyInProgress,
    },
    RejectMint: {
        _S.UNINITIALIZED: NotRequested,
        _S.REQUESTED: None,
        _S.ACCEPTED: AlreadyCompleted,
        _S.TOKENS_RECEIVED: AlreadyCompleted,
        _S.VAULT_DEPOSIT_SUBMITTED: AlreadyCompleted,
        _S.COMPLETED: AlreadyCompleted,
        _S.FAILED: AlreadyFailed,
    },
    AcknowledgeAcceptance: {
        _S.UNINITIALIZED: NotRequested,
        _S.REQUESTED: None,
        _S.ACCEPTED: AlreadyCompleted,
        _S.TOKENS_RECEIVED: AlreadyCompleted,
        _S.VAULT_DEPOSIT_SUBMITTED: AlreadyCompleted,
        _S.COMPLETED: AlreadyCompleted,
        _S.FAILED: AlreadyFailed,
    },
    FailAcceptance: {
        _S.UNINITIALIZED: NotAccepted,
        _S.REQUESTED: NotAccepted,
        _S.ACCEPTED: None,
        _S.TOKENS_RECEIVED: AlreadyCompleted,
        _S.VAULT_DEPOSIT_SUBMITTED: AlreadyCompleted,
        _S.COMPLETED: AlreadyCompleted,
        _S.FAILED: AlreadyFailed,
    },
    ReceiveTokens: {
        _S.UNINITIALIZED: NotAccepted,
        _S.REQUESTED: NotAccepted,
        _S.ACCEPTED: None,
        _S.TOKENS_RECEIVED: AlreadyCompleted,
        _S.VAULT_DEPOSIT_SUBMITTED: AlreadyCompleted,
        _S.COMPLETED: AlreadyCompleted,
        _S.FAILED: AlreadyFailed,
    },
    Finalize: {
        _S.UNINITIALIZED: TokensNotReceived,
        _S.REQUESTED: TokensNotReceived,
        _S.ACCEPTED: TokensNotReceived,
        _S.TOKENS_RECEIVED: VaultDepositRequired,
        _S.VAULT_DEPOSIT_SUBMITTED: AlreadyCompleted,
        _S.COMPLETED: AlreadyCompleted,
        _S.FAILED: AlreadyFailed,
    },
    RecordVaultApproval: {
        _S.UNINITIALIZED: TokensNotReceived,
        _S.REQUESTED: TokensNotReceived,
        _S.ACCEPTED: TokensNotReceived,
        _S.TOKENS_RECEIVED: None,
        _S.VAULT_DEPOSIT_SUBMITTED: AlreadyCompleted,
        _S.COMPLETED: AlreadyCompleted,
        _S.FAILED: AlreadyFailed,
    },
    (ReplaceTransaction, TxPurpose.APPROVE_VAULT): {
        _S.UNINITIALIZED: TokensNotReceived,
        _S.REQUESTED: TokensNotReceived,
        _S.ACCEPTED: TokensNotReceived,
        _S.TOKENS_RECEIVED: None,  # further checked: an approval is stored
        _S.VAULT_DEPOSIT_SUBMITTED: AlreadyCompleted,
        _S.COMPLETED: AlreadyCompleted,
        _S.FAILED: AlreadyFailed,
    },
    SubmitVaultDeposit: {
        _S.UNINITIALIZED: TokensNotReceived,
        _S.REQUESTED: TokensNotReceived,
        _S.ACCEPTED: TokensNotReceived,
        _S.TOKENS_RECEIVED: None,
        _S.VAULT_DEPOSIT_SUBMITTED: AlreadyCompleted,
        _S.COMPLETED: AlreadyCompleted,
        _S.FAILED: AlreadyFailed,
    },
    (ReplaceTransaction, TxPurpose.VAULT_DEPOSIT): {
        _S.UNINITIALIZED: VaultDepositNotSubmitted,
        _S.REQUESTED: VaultDepositNotSubmitted,
        _S.ACCEPTED: VaultDepositNotSubmitted,
        _S.TOKENS_RECEIVED: VaultDepositNotSubmitted,
        _S.VAULT_DEPOSIT_SUBMITTED: None,
        _S.COMPLETED: AlreadyCompleted,
        _S.FAILED: AlreadyFailed,
    },
    ConfirmVaultDeposit: {
        _S.UNINITIALIZED: VaultDepositNotSubmitted,
        _S.REQUESTED: VaultDepositNotSubmitted,
        _S.ACCEPTED: VaultDepositNotSubmitted,
        _S.TOKENS_RECEIVED: VaultDepositNotSubmitted,
        _S.VAULT_DEPOSIT_SUBMITTED: None,
        _S.COMPLETED: AlreadyCompleted,
        _S.FAILED: AlreadyFailed,
    },
    FailVaultDeposit: {
        _S.UNINITIALIZED: TokensNotReceived,
        _S.REQUESTED: TokensNotReceived,
        _S.ACCEPTED: TokensNotReceived,
        _S.TOKENS_RECEIVED: None,
        _S.VAULT_DEPOSIT_SUBMITTED: None,
        _S.COMPLETED: AlreadyCompleted,
        _S.FAILED: AlreadyFailed,
    },
    TimeOutMint: {
        _S.UNINITIALIZED: NotAccepted,
        _S.REQUESTED: NotAccepted,
        _S.ACCEPTED: None,
        _S.TOKENS_RECEIVED: AlreadyCompleted,
        _S.VAULT_DEPOSIT_SUBMITTED: AlreadyCompleted,
        _S.COMPLETED: AlreadyCompleted,
        _S.FAILED: AlreadyFailed,
    },
    ReconcileMint: {
        _S.UNINITIALIZED: NotReconcilable,
        _S.REQUESTED: NotReconcilable,
        _S.ACCEPTED: NotReconcilable,
        _S.TOKENS_RECEIVED: NotReconcilable,
        _S.VAULT_DEPOSIT_SUBMITTED: NotReconcilable,
        _S.COMPLETED: NotReconcilable,
        _S.FAILED: None,  # further checked: only with inflight kept
    },
}


# --- helpers for the trigger, the projection and workers ------------------------------------


def stored_tx(
    state: Lifecycle[MintState] | MintState | None, purpose: TxPurpose
) -> StoredTx | None:
    """The stored transaction of `purpose` (approval or deposit) in the current step."""
    value = _value(state)
    if purpose is TxPurpose.APPROVE_VAULT and isinstance(value, TokensReceived):
        if value.approval_raw_tx is None or value.approval_tx_hash is None:
            return None
        assert value.approval_signed_at is not None
        return StoredTx(
            purpose=purpose,
            raw_tx=value.approval_raw_tx,
            tx_hash=value.approval_tx_hash,
            signed_at=value.approval_signed_at,
            earlier_hashes=value.approval_earlier_hashes,
        )
    if purpose is TxPurpose.VAULT_DEPOSIT and isinstance(value, VaultDepositSubmitted):
        return StoredTx(
            purpose=purpose,
            raw_tx=value.deposit_raw_tx,
            tx_hash=value.deposit_tx_hash,
            signed_at=value.deposit_last_signed_at,
            earlier_hashes=value.deposit_earlier_hashes,
            first_signed_at=value.submitted_at,
        )
    return None


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
    state: MintRequested | MintAccepted | TokensReceived | VaultDepositSubmitted,
    reason: str,
    failed_at: datetime,
    *,
    inflight_kept: bool,
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


def _same_hex(left: str, right: str | None) -> bool:
    return right is not None and left.lower() == right.lower()


def _completed(
    state: TokensReceived | VaultDepositSubmitted,
    completed_at: datetime,
    *,
    deposit_tx_hash: TxHash | None,
) -> Completed:
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
        completed_at=completed_at,
        deposit_tx_hash=deposit_tx_hash,
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
        if isinstance(event, ev.VaultApprovalSigned):  # a first one, or a new one (dead)
            return replace(
                state,
                approval_raw_tx=event.raw_tx,
                approval_tx_hash=event.tx_hash,
                approval_signed_at=event.signed_at,
                approval_earlier_hashes=(),
            )
        replaced = replacement_of(event)
        if (
            replaced is not None
            and replaced.purpose is TxPurpose.APPROVE_VAULT
            and _same_hex(replaced.replaces, state.approval_tx_hash)
        ):
            assert state.approval_tx_hash is not None
            return replace(
                state,
                approval_raw_tx=replaced.raw_tx,
                approval_tx_hash=replaced.tx_hash,
                approval_signed_at=replaced.replaced_at,
                approval_earlier_hashes=(*state.approval_earlier_hashes, state.approval_tx_hash),
            )
        if isinstance(event, ev.VaultDepositSubmitted):
            return VaultDepositSubmitted(
                symbol=state.symbol,
                quantity=state.quantity,
                wallet=state.wallet,
                requested_at=state.requested_at,
                issuer_request_id=state.issuer_request_id,
                tokenization_request_id=state.tokenization_request_id,
                tx_hash=state.tx_hash,
                receipt_id=state.receipt_id,
                shares_minted=state.shares_minted,
                received_at=state.received_at,
                vault=event.vault,
                vault_id=event.vault_id,
                deposit_units=event.amount_units,
                deposit_raw_tx=event.raw_tx,
                deposit_tx_hash=event.tx_hash,
                submitted_at=event.submitted_at,
            )
        if isinstance(event, ev.VaultDepositFailed):
            return _failed(state, event.reason, event.failed_at, inflight_kept=True)
        if isinstance(event, ev.MintCompleted):  # trigger-era logs
            return _completed(state, event.completed_at, deposit_tx_hash=None)
    elif isinstance(state, VaultDepositSubmitted):
        if isinstance(event, ev.DepositedIntoVault) and (
            event.tx_hash is None
            or any(_same_hex(event.tx_hash, known) for known in state.deposit_hashes())
        ):
            return _completed(
                state, event.deposited_at, deposit_tx_hash=event.tx_hash or state.deposit_tx_hash
            )
        replaced = replacement_of(event)
        if (
            replaced is not None
            and replaced.purpose is TxPurpose.VAULT_DEPOSIT
            and _same_hex(replaced.replaces, state.deposit_tx_hash)
        ):
            return replace(
                state,
                deposit_raw_tx=replaced.raw_tx,
                deposit_tx_hash=replaced.tx_hash,
                deposit_replaced_at=replaced.replaced_at,
                deposit_earlier_hashes=(*state.deposit_earlier_hashes, state.deposit_tx_hash),
            )
        if isinstance(event, ev.VaultDepositFailed):
            return _failed(state, event.reason, event.failed_at, inflight_kept=True)
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


def _fold(state: Lifecycle[MintState], event: Any) -> Lifecycle[MintState]:
    return lifecycle_apply(state, event, apply_transition=_transition, from_event=_from_event)


def apply(state: Lifecycle[MintState], event: Any) -> Lifecycle[MintState]:
    return onchain_tx.apply(state, event, _fold)


# --- handle ---------------------------------------------------------------------------------


def _refuse_if_invalid(current: MintState | None, command: Any) -> None:
    refuse_by_table(
        validity=onchain_tx.validity_for(_VALIDITY, command, "a mint"),
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
    if isinstance(command, onchain_tx.LEDGER_COMMANDS):
        return onchain_tx.handle_ledger(
            state,
            command,
            now,
            transaction_cost=ev.MintTransactionCostRecorded,
            venue_cost=ev.MintVenueCostRecorded,
        )
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
    if isinstance(command, Finalize):  # refused by the table in every state today
        return [ev.MintCompleted(completed_at=now)]
    if isinstance(command, RecordVaultApproval):
        return [
            ev.VaultApprovalSigned(
                raw_tx=validate_bytes("raw_tx", command.raw_tx),
                tx_hash=validate_tx_hash("tx_hash", command.tx_hash),
                signed_at=now,
            )
        ]
    if isinstance(command, ReplaceTransaction):
        stored = stored_tx(current, command.purpose)
        if stored is None:  # TokensReceived without a signed approval
            raise VaultApprovalNotSigned(command, current)
        return onchain_tx.decide_replacement(
            command, current, stored, event=ev.MintTransactionReplaced, now=now
        )
    if isinstance(command, SubmitVaultDeposit):
        return [
            ev.VaultDepositSubmitted(
                vault=validate_address("vault", command.vault),
                vault_id=validate_bytes32_hex("vault_id", command.vault_id),
                amount_units=validate_u256("amount_units", command.amount_units, allow_zero=False),
                raw_tx=validate_bytes("raw_tx", command.raw_tx),
                tx_hash=validate_tx_hash("tx_hash", command.tx_hash),
                submitted_at=now,
            )
        ]
    if isinstance(command, ConfirmVaultDeposit):
        assert isinstance(current, VaultDepositSubmitted)
        if command.tx_hash is None:
            return [ev.DepositedIntoVault(deposited_at=now, tx_hash=current.deposit_tx_hash)]
        mined = validate_tx_hash("tx_hash", command.tx_hash)
        if not names_one_of(mined, current.deposit_hashes()):
            raise DepositMismatch(command, current, tx_hash=mined)
        return [ev.DepositedIntoVault(deposited_at=now, tx_hash=mined)]
    if isinstance(command, FailVaultDeposit):
        return [
            ev.VaultDepositFailed(reason=validate_text("reason", command.reason), failed_at=now)
        ]
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
        ev.VaultApprovalSigned,
        ev.VaultApprovalReplaced,
        ev.VaultDepositSubmitted,
        ev.VaultDepositReplaced,
        ev.DepositedIntoVault,
        ev.VaultDepositFailed,
        ev.MintReconciled,
        ev.MintTransactionReplaced,
        ev.MintTransactionCostRecorded,
        ev.MintVenueCostRecorded,
    ),
)

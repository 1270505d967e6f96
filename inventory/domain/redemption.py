"""EquityRedemption aggregate (spec 4.3): onchain tokens -> offchain shares; id = a UUID.

States (`STEP` names each one for workers):

    VaultWithdrawPending --ConfirmVaultWithdraw--> WithdrawnFromVault --SignTransfer-->
    TransferPending --SendTokens--> TokensSent --Detect--> Pending --Complete--> Completed
    (genesis via SignVaultWithdraw: onchain inventory is the vault, spec 15.1, so a redemption
    begins by withdrawing the tokens from the asset's vault; trigger-era logs start at
    TransferPending via SignTransfer, or at TokensSent via SendTokens, as in the spec)
    VaultWithdrawPending -> Failed (VaultWithdrawFailed: nothing left the vault)
    TransferPending -> Failed (TransferFailed: no tokens left the wallet; inflight kept when
                               they had left the vault, nothing inflight otherwise)
    TokensSent      -> Failed (DetectionFailed: tokens sent, inflight kept)
    Pending         -> Failed (RedemptionRejected: tokens sent, inflight kept, id kept)
    Failed(inflight kept) -> Reconciled (operator, RedemptionReconciled)

`VaultWithdrawPending` stores the signed `withdraw4` and `TransferPending` the signed ERC-20
transfer (raw bytes and hash) so a resumed worker rebroadcasts the same bytes; `SendTokens`
from there must name the same transfer. A transaction left unmined is replaced (same nonce,
bumped fees, stored before it is broadcast) by the lifecycle every operation shares
(`inventory.domain.onchain_tx`): `ReplaceTransaction(VAULT_WITHDRAW | TRANSFER, ...)` ->
`TransactionReplaced` (older logs: `VaultWithdrawReplaced` / `TransferReplaced`, read alike);
`ConfirmVaultWithdraw` / `SendTokens` may then name it or any one it replaced, whichever was
mined.

State classes share names with some events: import this module (`from inventory.domain
import redemption`) and write `redemption.TokensSent` for the state, `ev.TokensSent` for the
event. Workers should branch on `step_of(lifecycle)`.
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


class RedemptionStep(enum.StrEnum):
    UNINITIALIZED = "Uninitialized"
    VAULT_WITHDRAW_PENDING = "VaultWithdrawPending"
    WITHDRAWN_FROM_VAULT = "WithdrawnFromVault"
    TRANSFER_PENDING = "TransferPending"
    TOKENS_SENT = "TokensSent"
    PENDING = "Pending"
    COMPLETED = "Completed"
    FAILED = "Failed"
    RECONCILED = "Reconciled"
    # The lifecycle is Failed (an invalid event was stored): every command is refused.
    CORRUPTED = "Corrupted"


TERMINAL_STEPS = frozenset(
    {RedemptionStep.COMPLETED, RedemptionStep.FAILED, RedemptionStep.RECONCILED}
)


# --- states ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class VaultWithdrawPending:
    """The vault withdrawal is signed and stored; it may or may not have been broadcast."""

    STEP: ClassVar[RedemptionStep] = RedemptionStep.VAULT_WITHDRAW_PENDING
    symbol: str
    quantity: Decimal
    token: Address
    vault: Address
    vault_id: str
    amount_units: int
    raw_tx: bytes
    tx_hash: TxHash
    signed_at: datetime  # when the first withdrawal was signed (time-outs count from it)
    # Hashes of the withdrawals this one replaced (same nonce, lower fees), oldest first.
    earlier_tx_hashes: tuple[TxHash, ...] = ()
    replaced_at: datetime | None = None  # when the latest replacement was signed

    @property
    def last_signed_at(self) -> datetime:
        return self.replaced_at or self.signed_at

    def all_tx_hashes(self) -> tuple[TxHash, ...]:
        """The latest signed withdrawal first, then the ones it replaced."""
        return (self.tx_hash, *reversed(self.earlier_tx_hashes))


@dataclass(frozen=True)
class WithdrawnFromVault:
    """The tokens left the vault into our wallet; the transfer is next."""

    STEP: ClassVar[RedemptionStep] = RedemptionStep.WITHDRAWN_FROM_VAULT
    symbol: str
    quantity: Decimal
    token: Address
    withdraw_tx_hash: TxHash
    amount_units: int
    withdrawn_at: datetime


@dataclass(frozen=True)
class TransferPending:
    """The transfer is signed and stored; it may or may not have been broadcast.
    `withdrawn_from_vault`: the tokens came out of the vault first (so a failed transfer keeps
    them inflight: they are in our wallet, not in the vault)."""

    STEP: ClassVar[RedemptionStep] = RedemptionStep.TRANSFER_PENDING
    symbol: str
    quantity: Decimal
    token: Address
    redemption_wallet: Address
    raw_tx: bytes
    tx_hash: TxHash
    signed_at: datetime  # when the first transfer was signed (time-outs count from it)
    # Hashes of the transfers this one replaced (same nonce, lower fees), oldest first.
    earlier_tx_hashes: tuple[TxHash, ...] = ()
    replaced_at: datetime | None = None  # when the latest replacement was signed
    withdrawn_from_vault: bool = False

    @property
    def last_signed_at(self) -> datetime:
        return self.replaced_at or self.signed_at

    def all_tx_hashes(self) -> tuple[TxHash, ...]:
        """The latest signed transfer first, then the ones it replaced."""
        return (self.tx_hash, *reversed(self.earlier_tx_hashes))


@dataclass(frozen=True)
class TokensSent:
    STEP: ClassVar[RedemptionStep] = RedemptionStep.TOKENS_SENT
    symbol: str
    quantity: Decimal
    redemption_wallet: Address
    tx_hash: TxHash
    sent_at: datetime


@dataclass(frozen=True)
class Pending:
    STEP: ClassVar[RedemptionStep] = RedemptionStep.PENDING
    symbol: str
    quantity: Decimal
    tx_hash: TxHash
    tokenization_request_id: str
    sent_at: datetime
    detected_at: datetime


@dataclass(frozen=True)
class Completed:
    STEP: ClassVar[RedemptionStep] = RedemptionStep.COMPLETED
    symbol: str
    quantity: Decimal
    tx_hash: TxHash
    tokenization_request_id: str
    completed_at: datetime


@dataclass(frozen=True)
class Failed:
    """Terminal failure.

    `tokenization_request_id` is present only when the failure came after detection;
    `sent_at` is None when the vault withdrawal or the transfer failed; `inflight_kept` is
    False when nothing left the vault (VaultWithdrawFailed) or, in trigger-era logs, the
    wallet (TransferFailed); once the tokens left the vault the inventory keeps them inflight
    (`inflight_kept` True) until an operator reconciles. `tx_hash` is the transfer's, or the
    vault withdrawal's when that failed.
    """

    STEP: ClassVar[RedemptionStep] = RedemptionStep.FAILED
    symbol: str
    quantity: Decimal
    tx_hash: TxHash
    tokenization_request_id: str | None
    reason: str
    sent_at: datetime | None
    failed_at: datetime
    inflight_kept: bool = True


@dataclass(frozen=True)
class Reconciled:
    """An operator declared the kept inflight settled outside the system (B13)."""

    STEP: ClassVar[RedemptionStep] = RedemptionStep.RECONCILED
    symbol: str
    quantity: Decimal
    failed: Failed
    reason: str
    operator: str
    reconciled_at: datetime


RedemptionState = (
    VaultWithdrawPending
    | WithdrawnFromVault
    | TransferPending
    | TokensSent
    | Pending
    | Completed
    | Failed
    | Reconciled
)


# --- commands -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignVaultWithdraw:
    """Genesis: record the signed `withdraw4` from the asset's vault before broadcasting it."""

    symbol: str
    quantity: Decimal
    token: Address
    vault: Address
    vault_id: str
    amount_units: int
    raw_tx: bytes
    tx_hash: TxHash


@dataclass(frozen=True)
class ConfirmVaultWithdraw:
    """The stored withdrawal (or one it replaced: `tx_hash`, the mined one; None = the stored
    one) was mined; `amount_units` is what its Transfer log moved."""

    amount_units: int
    tx_hash: TxHash | None = None


@dataclass(frozen=True)
class FailVaultWithdraw:
    """The withdrawal reverted, can never be mined, or moved nothing: the vault kept all."""

    reason: str


@dataclass(frozen=True)
class SignTransfer:
    """Record the signed ERC-20 transfer before broadcasting it (after the vault withdrawal;
    the genesis of trigger-era logs)."""

    symbol: str
    quantity: Decimal
    token: Address
    redemption_wallet: Address
    raw_tx: bytes
    tx_hash: TxHash


@dataclass(frozen=True)
class SendTokens:
    symbol: str
    quantity: Decimal
    redemption_wallet: Address
    tx_hash: TxHash


@dataclass(frozen=True)
class FailTransfer:
    """The signed transfer reverted or can never be mined: no tokens left."""

    reason: str


@dataclass(frozen=True)
class Detect:
    tokenization_request_id: str


@dataclass(frozen=True)
class FailDetection:
    reason: str


@dataclass(frozen=True)
class Complete:
    pass


@dataclass(frozen=True)
class RejectRedemption:
    reason: str


@dataclass(frozen=True)
class ReconcileRedemption:
    reason: str
    operator: str


RedemptionCommand = (
    SignVaultWithdraw
    | ConfirmVaultWithdraw
    | ReplaceTransaction
    | RecordReceipt
    | RecordVenueCost
    | FailVaultWithdraw
    | SignTransfer
    | SendTokens
    | FailTransfer
    | Detect
    | FailDetection
    | Complete
    | RejectRedemption
    | ReconcileRedemption
)


# --- errors ---------------------------------------------------------------------------------


class RedemptionError(CommandRefused):
    """A redemption command refused in the current state (`command`, `state`, `rule`)."""


class AlreadyInProgress(RedemptionError):
    RULE = "a redemption was already started for this id"


class AlreadyCompleted(RedemptionError):
    RULE = "the redemption is already past this step"


class AlreadyFailed(RedemptionError):
    RULE = "the redemption already failed"


class AlreadyReconciled(RedemptionError):
    RULE = "the redemption was already reconciled by an operator"


class TokensNotSent(RedemptionError):
    RULE = "the tokens have not been sent"


class NotPending(RedemptionError):
    RULE = "the redemption has not been detected by Alpaca (not pending)"


class NotPendingForRejection(RedemptionError):
    RULE = "only a pending (detected) redemption can be rejected"


class VaultWithdrawNotSigned(RedemptionError):
    RULE = "no signed vault withdrawal is waiting"


class NotWithdrawnFromVault(RedemptionError):
    RULE = "the tokens have not been withdrawn from the vault"


class WithdrawnAmountShort(RedemptionError):
    RULE = "the vault withdrawal must move the whole amount to be redeemed"


class TransferNotSigned(RedemptionError):
    RULE = "no signed transfer is waiting to be sent"


class WithdrawMismatch(RedemptionError):
    RULE = "ConfirmVaultWithdraw must name the stored withdrawal (or one it replaced)"


class SignedTransferMismatch(RedemptionError):
    RULE = "SendTokens must name the transfer that was signed and stored (or one it replaced)"


class NotReconcilable(RedemptionError):
    RULE = "only a failed redemption whose tokens were sent (inflight kept) can be reconciled"


_S = RedemptionStep
_STEPS = (
    _S.UNINITIALIZED,
    _S.VAULT_WITHDRAW_PENDING,
    _S.WITHDRAWN_FROM_VAULT,
    _S.TRANSFER_PENDING,
    _S.TOKENS_SENT,
    _S.PENDING,
    _S.COMPLETED,
    _S.FAILED,
)


def _row(*errors: type[RedemptionError] | None) -> dict[RedemptionStep, Any]:
    return dict(zip(_STEPS, errors, strict=True))


OK = None
# Command validation (spec 4.3 table plus the additions): the error per step, None = valid.
# Reconciled (not listed) refuses every command with AlreadyReconciled.
_VALIDITY: dict[Any, dict[RedemptionStep, type[RedemptionError] | None]] = {
    #                      U                     VaultWithdrawPending WithdrawnFromVault
    #                      TransferPending       TokensSent           Pending
    #                      Completed             Failed
    SignVaultWithdraw: _row(
        OK, AlreadyInProgress, AlreadyInProgress,
        AlreadyInProgress, AlreadyInProgress, AlreadyInProgress,
        AlreadyInProgress, AlreadyInProgress,
    ),
    ConfirmVaultWithdraw: _row(
        VaultWithdrawNotSigned, OK, AlreadyCompleted,
        AlreadyCompleted, AlreadyCompleted, AlreadyCompleted,
        AlreadyCompleted, AlreadyFailed,
    ),
    (ReplaceTransaction, TxPurpose.VAULT_WITHDRAW): _row(
        VaultWithdrawNotSigned, OK, AlreadyCompleted,
        AlreadyCompleted, AlreadyCompleted, AlreadyCompleted,
        AlreadyCompleted, AlreadyFailed,
    ),
    FailVaultWithdraw: _row(
        VaultWithdrawNotSigned, OK, AlreadyCompleted,
        AlreadyCompleted, AlreadyCompleted, AlreadyCompleted,
        AlreadyCompleted, AlreadyFailed,
    ),
    SignTransfer: _row(
        OK, NotWithdrawnFromVault, OK,
        AlreadyInProgress, AlreadyInProgress, AlreadyInProgress,
        AlreadyInProgress, AlreadyInProgress,
    ),
    SendTokens: _row(
        OK, NotWithdrawnFromVault, TransferNotSigned,
        OK, AlreadyCompleted, AlreadyCompleted,
        AlreadyCompleted, AlreadyFailed,
    ),
    (ReplaceTransaction, TxPurpose.TRANSFER): _row(
        TransferNotSigned, TransferNotSigned, TransferNotSigned,
        OK, AlreadyCompleted, AlreadyCompleted,
        AlreadyCompleted, AlreadyFailed,
    ),
    FailTransfer: _row(
        TransferNotSigned, TransferNotSigned, TransferNotSigned,
        OK, AlreadyCompleted, AlreadyCompleted,
        AlreadyCompleted, AlreadyFailed,
    ),
    Detect: _row(
        TokensNotSent, TokensNotSent, TokensNotSent,
        TokensNotSent, OK, AlreadyCompleted,
        AlreadyCompleted, AlreadyFailed,
    ),
    FailDetection: _row(
        TokensNotSent, TokensNotSent, TokensNotSent,
        TokensNotSent, OK, AlreadyCompleted,
        AlreadyCompleted, AlreadyFailed,
    ),
    Complete: _row(
        NotPending, NotPending, NotPending,
        NotPending, NotPending, OK,
        AlreadyCompleted, AlreadyFailed,
    ),
    RejectRedemption: _row(
        NotPendingForRejection, NotPendingForRejection, NotPendingForRejection,
        NotPendingForRejection, NotPendingForRejection, OK,
        AlreadyCompleted, AlreadyFailed,
    ),
    ReconcileRedemption: _row(
        NotReconcilable, NotReconcilable, NotReconcilable,
        NotReconcilable, NotReconcilable, NotReconcilable,
        NotReconcilable, OK,  # further checked: only with inflight kept
    ),
}  # fmt: skip


# --- helpers for the trigger, the projection and workers ------------------------------------


def _value(
    state: Lifecycle[RedemptionState] | RedemptionState | None,
) -> RedemptionState | None:
    if isinstance(state, Lifecycle):
        return state.value
    return state


def step_of(state: Lifecycle[RedemptionState]) -> RedemptionStep:
    """Which step the redemption is in; CORRUPTED when the lifecycle is Failed."""
    if state.is_failed:
        return RedemptionStep.CORRUPTED
    if state.value is None:
        return RedemptionStep.UNINITIALIZED
    return state.value.STEP


def genesis_of(
    state: Lifecycle[RedemptionState] | RedemptionState | None,
) -> tuple[str, Decimal] | None:
    """(symbol, quantity) from the stored state (also a corrupted one's last valid state)."""
    value = _value(state)
    if value is None:
        return None
    return value.symbol, value.quantity


def is_terminal(state: Lifecycle[RedemptionState] | RedemptionState | None) -> bool:
    """True for Completed, Failed and Reconciled (a corrupted lifecycle is not terminal)."""
    if isinstance(state, Lifecycle) and state.is_failed:
        return False
    value = _value(state)
    return value is not None and value.STEP in TERMINAL_STEPS


def can_reconcile(state: Lifecycle[RedemptionState] | RedemptionState | None) -> bool:
    if isinstance(state, Lifecycle) and state.is_failed:
        return False
    value = _value(state)
    return isinstance(value, Failed) and value.inflight_kept


def tokens_sent(state: Lifecycle[RedemptionState] | RedemptionState | None) -> bool:
    """Whether the tokens left our wallet (so the onchain amount is inflight or settled)."""
    value = _value(state)
    if value is None or isinstance(
        value, VaultWithdrawPending | WithdrawnFromVault | TransferPending
    ):
        return False
    if isinstance(value, Failed):
        return value.sent_at is not None
    return True


# --- apply ----------------------------------------------------------------------------------


def _from_event(event: Any) -> RedemptionState:
    if isinstance(event, ev.VaultWithdrawSigned):
        return VaultWithdrawPending(
            symbol=event.symbol,
            quantity=event.quantity,
            token=event.token,
            vault=event.vault,
            vault_id=event.vault_id,
            amount_units=event.amount_units,
            raw_tx=event.raw_tx,
            tx_hash=event.tx_hash,
            signed_at=event.signed_at,
        )
    if isinstance(event, ev.TransferSigned):
        return TransferPending(
            symbol=event.symbol,
            quantity=event.quantity,
            token=event.token,
            redemption_wallet=event.redemption_wallet,
            raw_tx=event.raw_tx,
            tx_hash=event.tx_hash,
            signed_at=event.signed_at,
        )
    if isinstance(event, ev.TokensSent):
        return TokensSent(
            symbol=event.symbol,
            quantity=event.quantity,
            redemption_wallet=event.redemption_wallet,
            tx_hash=event.tx_hash,
            sent_at=event.sent_at,
        )
    raise Mismatch(None, event)


def _same_hex(left: str, right: str) -> bool:
    return left.lower() == right.lower()


def _one_of(value: str, candidates: tuple[str, ...]) -> bool:
    return any(_same_hex(value, candidate) for candidate in candidates)


def _with_replacement(
    state: VaultWithdrawPending | TransferPending, event: Any, purpose: TxPurpose
) -> VaultWithdrawPending | TransferPending | None:
    """The pending transaction replaced by `event`'s (the one it replaced kept as earlier);
    None when `event` is no replacement of it."""
    replaced = replacement_of(event)
    if replaced is None or replaced.purpose is not purpose:
        return None
    if not _same_hex(replaced.replaces, state.tx_hash):
        return None
    return replace(
        state,
        raw_tx=replaced.raw_tx,
        tx_hash=replaced.tx_hash,
        replaced_at=replaced.replaced_at,
        earlier_tx_hashes=(*state.earlier_tx_hashes, state.tx_hash),
    )


def _transition(state: RedemptionState, event: Any) -> RedemptionState:
    if isinstance(state, VaultWithdrawPending):
        if isinstance(event, ev.WithdrawnFromVault) and (
            event.tx_hash is None or _one_of(event.tx_hash, state.all_tx_hashes())
        ):
            return WithdrawnFromVault(
                symbol=state.symbol,
                quantity=state.quantity,
                token=state.token,
                withdraw_tx_hash=event.tx_hash or state.tx_hash,  # the one that was mined
                amount_units=event.amount_units,
                withdrawn_at=event.withdrawn_at,
            )
        withdraw = _with_replacement(state, event, TxPurpose.VAULT_WITHDRAW)
        if withdraw is not None:
            return withdraw
        if isinstance(event, ev.VaultWithdrawFailed):
            return Failed(
                symbol=state.symbol,
                quantity=state.quantity,
                tx_hash=state.tx_hash,
                tokenization_request_id=None,
                reason=event.reason,
                sent_at=None,
                failed_at=event.failed_at,
                inflight_kept=False,
            )
    elif isinstance(state, WithdrawnFromVault):
        if (
            isinstance(event, ev.TransferSigned)
            and event.symbol == state.symbol
            and event.quantity == state.quantity
            and _same_hex(event.token, state.token)
        ):
            return TransferPending(
                symbol=state.symbol,
                quantity=state.quantity,
                token=state.token,
                redemption_wallet=event.redemption_wallet,
                raw_tx=event.raw_tx,
                tx_hash=event.tx_hash,
                signed_at=event.signed_at,
                withdrawn_from_vault=True,
            )
    elif isinstance(state, TransferPending):
        if isinstance(event, ev.TokensSent) and _one_of(event.tx_hash, state.all_tx_hashes()):
            return TokensSent(
                symbol=state.symbol,
                quantity=state.quantity,
                redemption_wallet=state.redemption_wallet,
                tx_hash=event.tx_hash,  # the one that was mined
                sent_at=event.sent_at,
            )
        transfer = _with_replacement(state, event, TxPurpose.TRANSFER)
        if transfer is not None:
            return transfer
        if isinstance(event, ev.TransferFailed):
            return Failed(
                symbol=state.symbol,
                quantity=state.quantity,
                tx_hash=state.tx_hash,
                tokenization_request_id=None,
                reason=event.reason,
                sent_at=None,
                failed_at=event.failed_at,
                inflight_kept=state.withdrawn_from_vault,
            )
    elif isinstance(state, TokensSent):
        if isinstance(event, ev.Detected):
            return Pending(
                symbol=state.symbol,
                quantity=state.quantity,
                tx_hash=state.tx_hash,
                tokenization_request_id=event.tokenization_request_id,
                sent_at=state.sent_at,
                detected_at=event.detected_at,
            )
        if isinstance(event, ev.DetectionFailed):
            return Failed(
                symbol=state.symbol,
                quantity=state.quantity,
                tx_hash=state.tx_hash,
                tokenization_request_id=None,
                reason=event.reason,
                sent_at=state.sent_at,
                failed_at=event.failed_at,
                inflight_kept=True,
            )
    elif isinstance(state, Pending):
        if isinstance(event, ev.Completed):
            return Completed(
                symbol=state.symbol,
                quantity=state.quantity,
                tx_hash=state.tx_hash,
                tokenization_request_id=state.tokenization_request_id,
                completed_at=event.completed_at,
            )
        if isinstance(event, ev.RedemptionRejected):
            return Failed(
                symbol=state.symbol,
                quantity=state.quantity,
                tx_hash=state.tx_hash,
                tokenization_request_id=state.tokenization_request_id,
                reason=event.reason,
                sent_at=state.sent_at,
                failed_at=event.rejected_at,
                inflight_kept=True,
            )
    elif (
        isinstance(state, Failed)
        and isinstance(event, ev.RedemptionReconciled)
        and state.inflight_kept
    ):
        return Reconciled(
            symbol=state.symbol,
            quantity=state.quantity,
            failed=state,
            reason=event.reason,
            operator=event.operator,
            reconciled_at=event.reconciled_at,
        )
    raise Mismatch(state, event)


def _fold(state: Lifecycle[RedemptionState], event: Any) -> Lifecycle[RedemptionState]:
    return lifecycle_apply(state, event, apply_transition=_transition, from_event=_from_event)


def apply(state: Lifecycle[RedemptionState], event: Any) -> Lifecycle[RedemptionState]:
    return onchain_tx.apply(state, event, _fold)


# --- handle ---------------------------------------------------------------------------------


def _refuse_if_invalid(current: RedemptionState | None, command: Any) -> None:
    refuse_by_table(
        validity=onchain_tx.validity_for(_VALIDITY, command, "a redemption"),
        command=command,
        current=current,
        step=RedemptionStep.UNINITIALIZED if current is None else current.STEP,
        aggregate="an EquityRedemption",
        already_reconciled=AlreadyReconciled,
        not_reconcilable=NotReconcilable,
        reconcile_command=ReconcileRedemption,
    )


def _check_same_redemption(command: SignTransfer, withdrawn: WithdrawnFromVault) -> None:
    pairs: list[tuple[str, object, object, bool]] = [
        ("symbol", withdrawn.symbol, command.symbol, withdrawn.symbol == command.symbol),
        ("quantity", withdrawn.quantity, command.quantity, withdrawn.quantity == command.quantity),
        ("token", withdrawn.token, command.token, _same_hex(withdrawn.token, command.token)),
    ]
    for field, expected, actual, same in pairs:
        if not same:
            raise SignedTransferMismatch(
                command, withdrawn, field=field, expected=expected, actual=actual
            )


def _check_same_transfer(command: SendTokens, signed: TransferPending) -> None:
    pairs: list[tuple[str, object, object, bool]] = [
        (
            "tx_hash",
            signed.tx_hash,
            command.tx_hash,
            _one_of(command.tx_hash, signed.all_tx_hashes()),
        ),
        ("symbol", signed.symbol, command.symbol, signed.symbol == command.symbol),
        ("quantity", signed.quantity, command.quantity, signed.quantity == command.quantity),
        (
            "redemption_wallet",
            signed.redemption_wallet,
            command.redemption_wallet,
            _same_hex(signed.redemption_wallet, command.redemption_wallet),
        ),
    ]
    for field, expected, actual, same in pairs:
        if not same:
            raise SignedTransferMismatch(
                command, signed, field=field, expected=expected, actual=actual
            )


def stored_tx(
    state: Lifecycle[RedemptionState] | RedemptionState | None, purpose: TxPurpose
) -> StoredTx | None:
    """The stored transaction of `purpose` (vault withdraw or transfer) in the current step."""
    value = state.value if isinstance(state, Lifecycle) else state
    pending = {
        TxPurpose.VAULT_WITHDRAW: VaultWithdrawPending,
        TxPurpose.TRANSFER: TransferPending,
    }.get(purpose)
    if pending is None or not isinstance(value, pending):
        return None
    assert isinstance(value, VaultWithdrawPending | TransferPending)
    return StoredTx(
        purpose=purpose,
        raw_tx=value.raw_tx,
        tx_hash=value.tx_hash,
        signed_at=value.last_signed_at,
        earlier_hashes=value.earlier_tx_hashes,
        first_signed_at=value.signed_at,
    )


def handle(
    state: Lifecycle[RedemptionState], command: Any, now: datetime
) -> list[ev.RedemptionEvent]:
    """Decide the events for `command`, or raise a `RedemptionError` / `InvalidValue`.

    A Failed (corrupted) lifecycle refuses every command with its `LifecycleError`.
    """
    validate_aware("now", now)
    if isinstance(command, onchain_tx.LEDGER_COMMANDS):
        return onchain_tx.handle_ledger(
            state,
            command,
            now,
            transaction_cost=ev.RedemptionTransactionCostRecorded,
            venue_cost=ev.RedemptionVenueCostRecorded,
        )
    current: RedemptionState | None = state.current()
    _refuse_if_invalid(current, command)

    if isinstance(command, SignVaultWithdraw):
        return [
            ev.VaultWithdrawSigned(
                symbol=validate_symbol(command.symbol),
                quantity=validate_amount("quantity", command.quantity),
                token=validate_address("token", command.token),
                vault=validate_address("vault", command.vault),
                vault_id=validate_bytes32_hex("vault_id", command.vault_id),
                amount_units=validate_u256("amount_units", command.amount_units, allow_zero=False),
                raw_tx=validate_bytes("raw_tx", command.raw_tx),
                tx_hash=validate_tx_hash("tx_hash", command.tx_hash),
                signed_at=now,
            )
        ]
    if isinstance(command, ConfirmVaultWithdraw):
        assert isinstance(current, VaultWithdrawPending)
        moved = validate_u256("amount_units", command.amount_units)
        if moved < current.amount_units:
            raise WithdrawnAmountShort(command, current, expected=current.amount_units, moved=moved)
        mined = current.tx_hash
        if command.tx_hash is not None:
            mined = validate_tx_hash("tx_hash", command.tx_hash)
            if not _one_of(mined, current.all_tx_hashes()):
                raise WithdrawMismatch(command, current, tx_hash=mined)
        return [ev.WithdrawnFromVault(amount_units=moved, withdrawn_at=now, tx_hash=mined)]
    if isinstance(command, ReplaceTransaction):
        return onchain_tx.decide_replacement(
            command,
            current,
            stored_tx(current, command.purpose),
            event=ev.RedemptionTransactionReplaced,
            now=now,
        )
    if isinstance(command, FailVaultWithdraw):
        return [
            ev.VaultWithdrawFailed(reason=validate_text("reason", command.reason), failed_at=now)
        ]
    if isinstance(command, SignTransfer):
        if isinstance(current, WithdrawnFromVault):
            _check_same_redemption(command, current)
        return [
            ev.TransferSigned(
                symbol=validate_symbol(command.symbol),
                quantity=validate_amount("quantity", command.quantity),
                token=validate_address("token", command.token),
                redemption_wallet=validate_address("redemption_wallet", command.redemption_wallet),
                raw_tx=validate_bytes("raw_tx", command.raw_tx),
                tx_hash=validate_tx_hash("tx_hash", command.tx_hash),
                signed_at=now,
            )
        ]
    if isinstance(command, SendTokens):
        event = ev.TokensSent(
            symbol=validate_symbol(command.symbol),
            quantity=validate_amount("quantity", command.quantity),
            redemption_wallet=validate_address("redemption_wallet", command.redemption_wallet),
            tx_hash=validate_tx_hash("tx_hash", command.tx_hash),
            sent_at=now,
        )
        if isinstance(current, TransferPending):
            _check_same_transfer(command, current)
        return [event]
    if isinstance(command, FailTransfer):
        return [ev.TransferFailed(reason=validate_text("reason", command.reason), failed_at=now)]
    if isinstance(command, Detect):
        return [
            ev.Detected(
                tokenization_request_id=validate_text(
                    "tokenization_request_id", command.tokenization_request_id
                ),
                detected_at=now,
            )
        ]
    if isinstance(command, FailDetection):
        return [ev.DetectionFailed(reason=validate_text("reason", command.reason), failed_at=now)]
    if isinstance(command, Complete):
        return [ev.Completed(completed_at=now)]
    if isinstance(command, RejectRedemption):
        return [
            ev.RedemptionRejected(reason=validate_text("reason", command.reason), rejected_at=now)
        ]
    assert isinstance(command, ReconcileRedemption)
    return [
        ev.RedemptionReconciled(
            reason=validate_text("reason", command.reason),
            operator=validate_text("operator", command.operator),
            reconciled_at=now,
        )
    ]


SPEC = AggregateSpec(
    aggregate_type=ev.REDEMPTION,
    apply=apply,
    handle=handle,
    event_classes=(
        ev.VaultWithdrawSigned,
        ev.VaultWithdrawReplaced,
        ev.WithdrawnFromVault,
        ev.VaultWithdrawFailed,
        ev.TransferSigned,
        ev.TransferReplaced,
        ev.TransferFailed,
        ev.TokensSent,
        ev.Detected,
        ev.DetectionFailed,
        ev.Completed,
        ev.RedemptionRejected,
        ev.RedemptionReconciled,
        ev.RedemptionTransactionReplaced,
        ev.RedemptionTransactionCostRecorded,
        ev.RedemptionVenueCostRecorded,
    ),
)

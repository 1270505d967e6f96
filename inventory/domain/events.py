"""Every event kind in the log, as frozen dataclasses (spec sections 2-4, 12).

`event_type` is "<Enum>::<Variant>" as in the reference; the JSON payload is externally tagged
(`{"MintRequested": {...}}`) and built by `inventory.codec`. Fields beyond the reference are the
section-12 fixes: signed transactions stored before broadcast, failure events valid where the
failure happens (B5), received amounts and fees (B6), operator reconciliation (B13) and venue
balance snapshots (B1).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import ClassVar

from inventory.domain.values import (
    Address,
    Direction,
    RebalanceDirection,
    TransferRef,
    TxHash,
)

EVENT_VERSION = "1.0"

POSITION = "Position"
MINT = "TokenizedEquityMint"
REDEMPTION = "EquityRedemption"
USDC_REBALANCE = "UsdcRebalance"
SNAPSHOT = "InventorySnapshot"
SETTINGS = "RebalancingSettings"
DECISIONS = "RebalanceDecision"
COSTS = "OperationCost"
CHALLENGERS = "ChallengerDecision"
MARKET_CLOCK = "MarketClock"

EVENT_CLASSES: dict[str, type[DomainEvent]] = {}


@dataclass(frozen=True)
class DomainEvent:
    AGGREGATE_TYPE: ClassVar[str] = ""
    ENUM: ClassVar[str] = ""
    # Terminal events end an operation (and release its guard).
    TERMINAL: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if cls.ENUM:
            EVENT_CLASSES[cls.event_type_name()] = cls

    @classmethod
    def event_type_name(cls) -> str:
        return f"{cls.ENUM}::{cls.__name__}"

    @property
    def event_type(self) -> str:
        return self.event_type_name()

    @classmethod
    def variant(cls) -> str:
        return cls.__name__


# --- Position (aggregate id = symbol) --------------------------------------------------------


class ThresholdKind(enum.StrEnum):
    SHARES = "Shares"
    DOLLAR_VALUE = "DollarValue"


@dataclass(frozen=True)
class ExecutionThreshold:
    kind: ThresholdKind
    value: Decimal


@dataclass(frozen=True)
class TradeId:
    tx_hash: TxHash
    log_index: int

    def __str__(self) -> str:
        return f"{self.tx_hash}:{self.log_index}"


@dataclass(frozen=True)
class TriggerReason:
    net_position_shares: Decimal
    threshold_shares: Decimal


@dataclass(frozen=True)
class PositionEvent(DomainEvent):
    AGGREGATE_TYPE: ClassVar[str] = POSITION
    ENUM: ClassVar[str] = ""

    def timestamp(self) -> datetime:
        raise NotImplementedError


@dataclass(frozen=True)
class Initialized(PositionEvent):
    ENUM: ClassVar[str] = "PositionEvent"
    symbol: str
    threshold: ExecutionThreshold
    initialized_at: datetime

    def timestamp(self) -> datetime:
        return self.initialized_at


@dataclass(frozen=True)
class Migrated(PositionEvent):
    ENUM: ClassVar[str] = "PositionEvent"
    symbol: str
    net_position: Decimal
    accumulated_long: Decimal
    accumulated_short: Decimal
    threshold: ExecutionThreshold
    migrated_at: datetime

    def timestamp(self) -> datetime:
        return self.migrated_at


@dataclass(frozen=True)
class OnChainOrderFilled(PositionEvent):
    """A fill on the onchain order book; price is USDC per share (moves onchain USDC too)."""

    ENUM: ClassVar[str] = "PositionEvent"
    trade_id: TradeId
    amount: Decimal
    direction: Direction
    price_usdc: Decimal
    block_timestamp: datetime
    seen_at: datetime
    # The block the fill landed in (spec 15.2): a balance snapshot read at or above it
    # already contains the fill. None for fills recorded before blocks were carried.
    block_number: int | None = None

    def timestamp(self) -> datetime:
        return self.seen_at


@dataclass(frozen=True)
class OffChainOrderPlaced(PositionEvent):
    ENUM: ClassVar[str] = "PositionEvent"
    execution_id: int
    shares: Decimal
    direction: Direction
    broker: str
    trigger_reason: TriggerReason | None
    placed_at: datetime

    def timestamp(self) -> datetime:
        return self.placed_at


@dataclass(frozen=True)
class OffChainOrderFilled(PositionEvent):
    """A hedge fill at the brokerage; price in cents per share (moves offchain cash too)."""

    ENUM: ClassVar[str] = "PositionEvent"
    execution_id: int
    shares_filled: Decimal
    direction: Direction
    broker_order_id: str
    price_cents: int
    broker_timestamp: datetime

    def timestamp(self) -> datetime:
        return self.broker_timestamp


@dataclass(frozen=True)
class OffChainOrderFailed(PositionEvent):
    ENUM: ClassVar[str] = "PositionEvent"
    execution_id: int
    error: str
    failed_at: datetime

    def timestamp(self) -> datetime:
        return self.failed_at


@dataclass(frozen=True)
class ThresholdUpdated(PositionEvent):
    ENUM: ClassVar[str] = "PositionEvent"
    old_threshold: ExecutionThreshold
    new_threshold: ExecutionThreshold
    updated_at: datetime

    def timestamp(self) -> datetime:
        return self.updated_at


# --- Operator reconciliation, shared by the three operation aggregates (B13) ------------------


@dataclass(frozen=True)
class ReconciliationFields:
    """Inflight that an operator declares settled outside the system (zeroed, not credited)."""

    reason: str
    operator: str
    reconciled_at: datetime


# --- The onchain transaction lifecycle, shared by the operation aggregates --------------------
# (`inventory.domain.onchain_tx`: sign and store, broadcast, watch, replace, give back the nonce,
# record the receipt). Each operation aggregate has its own variant of the replacement and the
# ledger events below (`<Enum>::TransactionReplaced`, `<Enum>::TransactionCostRecorded`,
# `<Enum>::VenueCostRecorded`), made by `_lifecycle_events`.


class TxPurpose(enum.StrEnum):
    """What a signed transaction of an operation is for (one stored transaction per purpose)."""

    VAULT_WITHDRAW = "vault_withdraw"
    BURN = "burn"
    MINT = "mint"
    VAULT_DEPOSIT = "vault_deposit"
    ALPACA_DEPOSIT = "alpaca_deposit"
    # Standing max ERC-20 approvals, signed and recorded like any other tx (h7, USDC workflow).
    APPROVE_BURN = "approve_burn"  # USDC -> TokenMessenger on the burn chain
    APPROVE_VAULT = "approve_vault"  # USDC (or a mint's share token) -> orderbook vault on Base
    TRANSFER = "transfer"  # a redemption's ERC-20 transfer to the redemption wallet


@dataclass(frozen=True)
class TxReplacedFields:
    """The stored transaction of `purpose` (`replaces`) stayed unmined: the same transaction at
    the same nonce, re-signed with bumped fees, stored before it is broadcast. Both stay
    watched until one is mined (only one can be: they share the nonce)."""

    purpose: TxPurpose
    raw_tx: bytes
    tx_hash: TxHash
    replaces: TxHash
    replaced_at: datetime


@dataclass(frozen=True)
class TxCostFields:
    """One mined transaction an operation sent, from its receipt (exact): gas used times the
    effective gas price is the native fee (wei). Valued in USD when recorded, at the ETH/USD
    price the service read itself (the feed, its round and answer kept with the value, so a
    report never re-prices history); None when no price could be read."""

    operation_kind: str
    pool: str
    chain: str
    chain_id: int
    tx_hash: TxHash
    gas_used: int
    effective_gas_price_wei: int
    native_fee_wei: int
    eth_usd: Decimal | None
    eth_usd_feed: str | None
    eth_usd_round: int | None
    fee_usd: Decimal | None
    recorded_at: datetime


@dataclass(frozen=True)
class VenueCostFields:
    """A venue's charge that no other operation event holds, e.g. a USD<->USDC conversion at
    Alpaca: `cost_kind` "conversion", `notional` what was converted, `filled_price` against 1
    and `spread_usd` (notional x |1 - filled price|) plus `fee_usd`. `reference` is the venue's
    id of the order or transfer (one cost per reference)."""

    operation_kind: str
    pool: str
    venue: str
    cost_kind: str
    reference: str
    notional: Decimal
    filled_price: Decimal | None
    spread_usd: Decimal
    fee_usd: Decimal
    recorded_at: datetime


def _lifecycle_events(base: type, enum: str, prefix: str) -> tuple[type, type, type]:
    """The aggregate `base`'s variants `<enum>::TransactionReplaced`,
    `<enum>::TransactionCostRecorded` and `<enum>::VenueCostRecorded` (Python names
    `<prefix>TransactionReplaced`, ...)."""
    made: list[type] = []
    for name, fields in (
        ("TransactionReplaced", TxReplacedFields),
        ("TransactionCostRecorded", TxCostFields),
        ("VenueCostRecorded", VenueCostFields),
    ):
        namespace = {"ENUM": enum, "__module__": __name__, "__doc__": fields.__doc__}
        cls: type = dataclass(frozen=True)(type(name, (base, fields), namespace))
        cls.__qualname__ = f"{prefix}{name}"
        made.append(cls)
    return made[0], made[1], made[2]


# --- TokenizedEquityMint (aggregate id = our issuer request id, a UUID) -----------------------


@dataclass(frozen=True)
class MintEvent(DomainEvent):
    AGGREGATE_TYPE: ClassVar[str] = MINT


@dataclass(frozen=True)
class MintRequested(MintEvent):
    """Genesis, recorded before Alpaca is called: the aggregate id is the idempotency key."""

    ENUM: ClassVar[str] = "TokenizedEquityMintEvent"
    symbol: str
    quantity: Decimal
    wallet: Address
    requested_at: datetime


@dataclass(frozen=True)
class MintRejected(MintEvent):
    ENUM: ClassVar[str] = "TokenizedEquityMintEvent"
    TERMINAL: ClassVar[bool] = True
    reason: str
    rejected_at: datetime


@dataclass(frozen=True)
class MintAccepted(MintEvent):
    ENUM: ClassVar[str] = "TokenizedEquityMintEvent"
    issuer_request_id: str
    tokenization_request_id: str
    accepted_at: datetime


@dataclass(frozen=True)
class MintAcceptanceFailed(MintEvent):
    """Alpaca rejected an accepted request: the shares never left, inflight returns."""

    ENUM: ClassVar[str] = "TokenizedEquityMintEvent"
    TERMINAL: ClassVar[bool] = True
    reason: str
    failed_at: datetime


@dataclass(frozen=True)
class MintTimedOut(MintEvent):
    """No outcome in time after acceptance: the shares may still be moving, inflight kept."""

    ENUM: ClassVar[str] = "TokenizedEquityMintEvent"
    TERMINAL: ClassVar[bool] = True
    reason: str
    failed_at: datetime


@dataclass(frozen=True)
class TokensReceived(MintEvent):
    ENUM: ClassVar[str] = "TokenizedEquityMintEvent"
    tx_hash: TxHash
    receipt_id: int
    shares_minted: int
    received_at: datetime


@dataclass(frozen=True)
class MintCompleted(MintEvent):
    """The trigger-era end of a mint (tokens in the wallet). Mints now end with
    `DepositedIntoVault`; this stays so that older logs replay."""

    ENUM: ClassVar[str] = "TokenizedEquityMintEvent"
    TERMINAL: ClassVar[bool] = True
    completed_at: datetime


@dataclass(frozen=True)
class VaultApprovalSigned(MintEvent):
    """A standing approval of the order book for the asset's token, signed and stored before
    it is broadcast (the vault deposit pulls the tokens with `transferFrom`)."""

    ENUM: ClassVar[str] = "TokenizedEquityMintEvent"
    raw_tx: bytes
    tx_hash: TxHash
    signed_at: datetime


@dataclass(frozen=True)
class VaultApprovalReplaced(MintEvent):
    """The stored approval (`replaces`) stayed unmined: the same approval at the same nonce,
    re-signed with bumped fees, stored before it is broadcast. Both stay watched until one is
    mined (only one can be: they share the nonce)."""

    ENUM: ClassVar[str] = "TokenizedEquityMintEvent"
    raw_tx: bytes
    tx_hash: TxHash
    replaces: TxHash
    replaced_at: datetime


@dataclass(frozen=True)
class VaultDepositSubmitted(MintEvent):
    """The order book `deposit4` of the received tokens into the asset's vault, signed and
    stored before it is broadcast (spec 15.1)."""

    ENUM: ClassVar[str] = "TokenizedEquityMintEvent"
    vault: Address
    vault_id: str
    amount_units: int
    raw_tx: bytes
    tx_hash: TxHash
    submitted_at: datetime


@dataclass(frozen=True)
class DepositedIntoVault(MintEvent):
    """The deposit was mined and its Transfer log moved the tokens into the order book: the
    tokens are onchain inventory now; the mint is complete."""

    ENUM: ClassVar[str] = "TokenizedEquityMintEvent"
    TERMINAL: ClassVar[bool] = True
    deposited_at: datetime
    # The deposit that was mined: the stored one or one it replaced (None in logs written
    # before deposits could be replaced: the stored one).
    tx_hash: TxHash | None = None


@dataclass(frozen=True)
class VaultDepositReplaced(MintEvent):
    """The stored deposit (`replaces`) stayed unmined: the same `deposit4` at the same nonce,
    re-signed with bumped fees, stored before it is broadcast. Both stay watched until one is
    mined (only one can be: they share the nonce)."""

    ENUM: ClassVar[str] = "TokenizedEquityMintEvent"
    raw_tx: bytes
    tx_hash: TxHash
    replaces: TxHash
    replaced_at: datetime


@dataclass(frozen=True)
class VaultDepositFailed(MintEvent):
    """The deposit could not be made (refused, reverted, dropped): the tokens were minted but
    sit in our wallet, not in the vault, so the amount stays inflight for an operator."""

    ENUM: ClassVar[str] = "TokenizedEquityMintEvent"
    TERMINAL: ClassVar[bool] = True
    reason: str
    failed_at: datetime


@dataclass(frozen=True)
class MintReconciled(MintEvent, ReconciliationFields):
    ENUM: ClassVar[str] = "TokenizedEquityMintEvent"


MintTransactionReplaced, MintTransactionCostRecorded, MintVenueCostRecorded = _lifecycle_events(
    MintEvent, "TokenizedEquityMintEvent", "Mint"
)


# --- EquityRedemption (aggregate id = UUID) ---------------------------------------------------


@dataclass(frozen=True)
class RedemptionEvent(DomainEvent):
    AGGREGATE_TYPE: ClassVar[str] = REDEMPTION


@dataclass(frozen=True)
class VaultWithdrawSigned(RedemptionEvent):
    """Genesis: the order book `withdraw4` of the tokens from the asset's vault into our wallet
    (onchain inventory is the vault, spec 15.1), signed and stored before it is broadcast."""

    ENUM: ClassVar[str] = "EquityRedemptionEvent"
    symbol: str
    quantity: Decimal
    token: Address
    vault: Address
    vault_id: str
    amount_units: int
    raw_tx: bytes
    tx_hash: TxHash
    signed_at: datetime


@dataclass(frozen=True)
class WithdrawnFromVault(RedemptionEvent):
    """The withdrawal was mined and its Transfer log moved `amount_units` from the order book
    to our wallet: the tokens left the vault and are on their way to the redemption wallet."""

    ENUM: ClassVar[str] = "EquityRedemptionEvent"
    amount_units: int
    withdrawn_at: datetime
    # The withdrawal that was mined: the stored one or one it replaced (None in logs written
    # before withdrawals could be replaced: the stored one).
    tx_hash: TxHash | None = None


@dataclass(frozen=True)
class VaultWithdrawReplaced(RedemptionEvent):
    """The stored withdrawal (`replaces`) stayed unmined: the same `withdraw4` at the same
    nonce, re-signed with bumped fees, stored before it is broadcast. Both stay watched until
    one is mined (only one can be: they share the nonce)."""

    ENUM: ClassVar[str] = "EquityRedemptionEvent"
    raw_tx: bytes
    tx_hash: TxHash
    replaces: TxHash
    replaced_at: datetime


@dataclass(frozen=True)
class VaultWithdrawFailed(RedemptionEvent):
    """The withdrawal reverted, was dropped or moved nothing: the tokens are still in the
    vault, so the inflight returns to onchain available."""

    ENUM: ClassVar[str] = "EquityRedemptionEvent"
    TERMINAL: ClassVar[bool] = True
    reason: str
    failed_at: datetime


@dataclass(frozen=True)
class TransferSigned(RedemptionEvent):
    """Genesis: the ERC-20 transfer to the redemption wallet, signed and stored before it is
    broadcast, so a resumed worker rebroadcasts the same bytes instead of sending twice."""

    ENUM: ClassVar[str] = "EquityRedemptionEvent"
    symbol: str
    quantity: Decimal
    token: Address
    redemption_wallet: Address
    raw_tx: bytes
    tx_hash: TxHash
    signed_at: datetime


@dataclass(frozen=True)
class TransferReplaced(RedemptionEvent):
    """The stored transfer (`replaces`) stayed unmined: the same transfer at the same nonce,
    re-signed with bumped fees, stored before it is broadcast. Both stay watched until one is
    mined (only one can be: they share the nonce)."""

    ENUM: ClassVar[str] = "EquityRedemptionEvent"
    raw_tx: bytes
    tx_hash: TxHash
    replaces: TxHash
    replaced_at: datetime


@dataclass(frozen=True)
class TransferFailed(RedemptionEvent):
    """The stored transfer reverted or can never be mined: no tokens left, nothing inflight."""

    ENUM: ClassVar[str] = "EquityRedemptionEvent"
    TERMINAL: ClassVar[bool] = True
    reason: str
    failed_at: datetime


@dataclass(frozen=True)
class TokensSent(RedemptionEvent):
    ENUM: ClassVar[str] = "EquityRedemptionEvent"
    symbol: str
    quantity: Decimal
    redemption_wallet: Address
    tx_hash: TxHash
    sent_at: datetime


@dataclass(frozen=True)
class Detected(RedemptionEvent):
    ENUM: ClassVar[str] = "EquityRedemptionEvent"
    tokenization_request_id: str
    detected_at: datetime


@dataclass(frozen=True)
class DetectionFailed(RedemptionEvent):
    ENUM: ClassVar[str] = "EquityRedemptionEvent"
    TERMINAL: ClassVar[bool] = True
    reason: str
    failed_at: datetime


@dataclass(frozen=True)
class Completed(RedemptionEvent):
    ENUM: ClassVar[str] = "EquityRedemptionEvent"
    TERMINAL: ClassVar[bool] = True
    completed_at: datetime


@dataclass(frozen=True)
class RedemptionRejected(RedemptionEvent):
    ENUM: ClassVar[str] = "EquityRedemptionEvent"
    TERMINAL: ClassVar[bool] = True
    reason: str
    rejected_at: datetime


@dataclass(frozen=True)
class RedemptionReconciled(RedemptionEvent, ReconciliationFields):
    ENUM: ClassVar[str] = "EquityRedemptionEvent"


(
    RedemptionTransactionReplaced,
    RedemptionTransactionCostRecorded,
    RedemptionVenueCostRecorded,
) = _lifecycle_events(RedemptionEvent, "EquityRedemptionEvent", "Redemption")


# --- UsdcRebalance (aggregate id = UUID) ------------------------------------------------------


@dataclass(frozen=True)
class UsdcRebalanceEvent(DomainEvent):
    AGGREGATE_TYPE: ClassVar[str] = USDC_REBALANCE


@dataclass(frozen=True)
class Requested(UsdcRebalanceEvent):
    """Genesis, recorded before the first side effect (Alpaca withdrawal or vault withdraw)."""

    ENUM: ClassVar[str] = "UsdcRebalanceEvent"
    direction: RebalanceDirection
    amount: Decimal
    requested_at: datetime


@dataclass(frozen=True)
class RequestFailed(UsdcRebalanceEvent):
    """The first side effect never happened (refused, or its transaction reverted)."""

    ENUM: ClassVar[str] = "UsdcRebalanceEvent"
    TERMINAL: ClassVar[bool] = True
    reason: str
    failed_at: datetime


@dataclass(frozen=True)
class TransactionSigned(UsdcRebalanceEvent):
    """A signed transaction stored before broadcast; valid in any non-terminal state."""

    ENUM: ClassVar[str] = "UsdcRebalanceEvent"
    purpose: TxPurpose
    chain_id: int
    raw_tx: bytes
    tx_hash: TxHash
    signed_at: datetime
    # Logs written before `UsdcTransactionReplaced`: the stored transaction of this purpose it
    # replaced (same nonce, bumped fees). New logs record a replacement as
    # `UsdcRebalanceEvent::TransactionReplaced`; both fold alike (`onchain_tx.replacement_of`).
    replaces: TxHash | None = None


@dataclass(frozen=True)
class Initiated(UsdcRebalanceEvent):
    ENUM: ClassVar[str] = "UsdcRebalanceEvent"
    direction: RebalanceDirection
    amount: Decimal
    withdrawal_ref: TransferRef
    initiated_at: datetime


@dataclass(frozen=True)
class WithdrawalConfirmed(UsdcRebalanceEvent):
    ENUM: ClassVar[str] = "UsdcRebalanceEvent"
    confirmed_at: datetime
    # USDC that reached the bridge source wallet (Alpaca's network fee deducted).
    amount_received: Decimal | None = None
    fee: Decimal | None = None


@dataclass(frozen=True)
class WithdrawalFailed(UsdcRebalanceEvent):
    ENUM: ClassVar[str] = "UsdcRebalanceEvent"
    TERMINAL: ClassVar[bool] = True
    reason: str
    failed_at: datetime


@dataclass(frozen=True)
class BridgingInitiated(UsdcRebalanceEvent):
    ENUM: ClassVar[str] = "UsdcRebalanceEvent"
    burn_tx_hash: TxHash
    cctp_nonce: str  # full 32-byte nonce as 0x hex
    burned_at: datetime
    burn_amount: Decimal | None = None
    max_fee: Decimal | None = None


@dataclass(frozen=True)
class BridgeAttestationReceived(UsdcRebalanceEvent):
    ENUM: ClassVar[str] = "UsdcRebalanceEvent"
    attestation: bytes
    attested_at: datetime
    message: bytes | None = None


@dataclass(frozen=True)
class Bridged(UsdcRebalanceEvent):
    ENUM: ClassVar[str] = "UsdcRebalanceEvent"
    mint_tx_hash: TxHash
    minted_at: datetime
    amount_received: Decimal | None = None
    fee: Decimal | None = None


@dataclass(frozen=True)
class BridgingFailed(UsdcRebalanceEvent):
    """Valid in WithdrawalComplete (burn failed, B5), Bridging and Attested."""

    ENUM: ClassVar[str] = "UsdcRebalanceEvent"
    TERMINAL: ClassVar[bool] = True
    burn_tx_hash: TxHash | None
    cctp_nonce: str | None
    reason: str
    failed_at: datetime


@dataclass(frozen=True)
class DepositInitiated(UsdcRebalanceEvent):
    ENUM: ClassVar[str] = "UsdcRebalanceEvent"
    deposit_ref: TransferRef
    deposit_initiated_at: datetime


@dataclass(frozen=True)
class DepositConfirmed(UsdcRebalanceEvent):
    ENUM: ClassVar[str] = "UsdcRebalanceEvent"
    TERMINAL: ClassVar[bool] = True
    deposit_confirmed_at: datetime
    amount_deposited: Decimal | None = None


@dataclass(frozen=True)
class DepositFailed(UsdcRebalanceEvent):
    """Valid in Bridged (deposit submission failed, B5) and DepositInitiated."""

    ENUM: ClassVar[str] = "UsdcRebalanceEvent"
    TERMINAL: ClassVar[bool] = True
    deposit_ref: TransferRef | None
    reason: str
    failed_at: datetime


@dataclass(frozen=True)
class ConversionInitiated(UsdcRebalanceEvent):
    """A `USDCUSD` market order at Alpaca, recorded before it is placed (spec 15.5): a buy of
    `amount` USD before an Alpaca-to-Base withdrawal (valid in Requested), or a sell of
    `amount` USDC once a Base-to-Alpaca deposit is credited (valid in DepositInitiated).
    `client_order_id` is derived from the operation: the order is looked up by it before any
    placing again."""

    ENUM: ClassVar[str] = "UsdcRebalanceEvent"
    client_order_id: str
    side: str  # "buy" or "sell"
    amount: Decimal
    initiated_at: datetime


@dataclass(frozen=True)
class ConversionConfirmed(UsdcRebalanceEvent):
    """The conversion order filled (`partial`: only part of it). `usdc_amount` is the USDC the
    move carries on (bought, floored to 6 decimals; or sold, rounded up), `usd_amount` the USD
    spent or received, `cost` what was lost to the spread and fees, in USD."""

    ENUM: ClassVar[str] = "UsdcRebalanceEvent"
    order_id: str
    filled_qty: Decimal
    filled_avg_price: Decimal
    usdc_amount: Decimal
    usd_amount: Decimal
    cost: Decimal
    confirmed_at: datetime
    fee: Decimal | None = None
    partial: bool = False


@dataclass(frozen=True)
class ConversionFailed(UsdcRebalanceEvent):
    """The conversion order ended with nothing filled (refused, canceled, expired)."""

    ENUM: ClassVar[str] = "UsdcRebalanceEvent"
    reason: str
    failed_at: datetime


@dataclass(frozen=True)
class UsdcReconciled(UsdcRebalanceEvent, ReconciliationFields):
    ENUM: ClassVar[str] = "UsdcRebalanceEvent"


UsdcTransactionReplaced, UsdcTransactionCostRecorded, UsdcVenueCostRecorded = _lifecycle_events(
    UsdcRebalanceEvent, "UsdcRebalanceEvent", "Usdc"
)


# --- InventorySnapshot (aggregate id = "venues"): observed venue balances (B1) ---------------


@dataclass(frozen=True)
class SnapshotEvent(DomainEvent):
    AGGREGATE_TYPE: ClassVar[str] = SNAPSHOT


@dataclass(frozen=True)
class OnchainEquity(SnapshotEvent):
    ENUM: ClassVar[str] = "InventorySnapshotEvent"
    balances: dict[str, Decimal]
    fetched_at: datetime
    # Every read of the poll was pinned to this block (spec 15.2); None if not pinned.
    block_number: int | None = None


@dataclass(frozen=True)
class OnchainCash(SnapshotEvent):
    ENUM: ClassVar[str] = "InventorySnapshotEvent"
    usdc_balance: Decimal
    fetched_at: datetime
    block_number: int | None = None


@dataclass(frozen=True)
class OffchainEquity(SnapshotEvent):
    ENUM: ClassVar[str] = "InventorySnapshotEvent"
    positions: dict[str, Decimal]
    fetched_at: datetime


@dataclass(frozen=True)
class OffchainCash(SnapshotEvent):
    """Alpaca's two USD-valued balances (spec 15.5): USD cash (`cash_balance`) and the USDC
    crypto position (`usdc_balance`, the `USDCUSD` row's `qty`, which still includes USDC
    locked by a pending withdrawal). The USDC pool's offchain side is their sum.
    `cash_withdrawable` (cash less unsettled proceeds) bounds what may leave as USDC. Both are
    None in snapshots recorded before they were read."""

    ENUM: ClassVar[str] = "InventorySnapshotEvent"
    cash_balance: Decimal
    fetched_at: datetime
    usdc_balance: Decimal | None = None
    cash_withdrawable: Decimal | None = None

    @property
    def offchain_value(self) -> Decimal:
        """What the USDC pool counts at Alpaca: USD cash plus USDC held."""
        if self.usdc_balance is None:
            return self.cash_balance
        return self.cash_balance + self.usdc_balance


# --- RebalancingSettings (aggregate id = "global" or a base symbol): audited config ----------


@dataclass(frozen=True)
class SettingsEvent(DomainEvent):
    AGGREGATE_TYPE: ClassVar[str] = SETTINGS


@dataclass(frozen=True)
class SettingChanged(SettingsEvent):
    """An operator changed a threshold, switch, minimum, cap or asset: who, old and new."""

    ENUM: ClassVar[str] = "RebalancingSettingsEvent"
    scope: str
    setting: str
    old_value: str | None
    new_value: str | None
    changed_by: str
    changed_at: datetime


# --- RebalanceDecision (aggregate id = pool key): what the trigger decided not to start ------


@dataclass(frozen=True)
class DecisionEvent(DomainEvent):
    AGGREGATE_TYPE: ClassVar[str] = DECISIONS


@dataclass(frozen=True)
class RebalanceProposed(DecisionEvent):
    """REBALANCING_MODE=monitor: the operation the trigger would have started (kind is an
    `OperationKind` value, amount in the pool's unit: shares or USDC). `estimated_cost_usd` is
    None until costs are estimated. Recorded once per change of the proposal, not per event."""

    ENUM: ClassVar[str] = "RebalanceDecisionEvent"
    pool: str
    kind: str
    amount: Decimal
    estimated_cost_usd: Decimal | None
    proposed_at: datetime


@dataclass(frozen=True)
class RebalanceDeferred(DecisionEvent):
    """The cost gate held back the operation the trigger planned: `rule` is the rule it broke
    (below_minimum, daily_cap, cost_above_max_bps), `detail` says by how much. Recorded once
    per change of state (another kind or rule, or an operation started since), not per event."""

    ENUM: ClassVar[str] = "RebalanceDecisionEvent"
    pool: str
    kind: str
    amount: Decimal
    estimated_cost_usd: Decimal | None
    value_usd: Decimal | None
    rule: str
    detail: str
    last_operation_id: int
    deferred_at: datetime


@dataclass(frozen=True)
class OperationStartedByOperator(DecisionEvent):
    """An operator started an operation of a chosen amount (the audit of a manual start).
    `estimated_cost_usd` is what was shown to the operator (None when not estimated)."""

    ENUM: ClassVar[str] = "RebalanceDecisionEvent"
    pool: str
    kind: str
    amount: Decimal
    operation_id: int
    operation_aggregate_id: str
    estimated_cost_usd: Decimal | None
    actor: str
    reason: str
    started_at: datetime


@dataclass(frozen=True)
class OperationCancelledByOperator(DecisionEvent):
    """An operator cancelled an operation before its first venue request or transaction."""

    ENUM: ClassVar[str] = "RebalanceDecisionEvent"
    pool: str
    kind: str
    amount: Decimal
    operation_id: int
    operation_aggregate_id: str
    actor: str
    reason: str
    cancelled_at: datetime


# --- ChallengerDecision (aggregate id = "CHALLENGER:POOL"): the live challenger (issue 25) ---


@dataclass(frozen=True)
class ChallengerEvent(DomainEvent):
    AGGREGATE_TYPE: ClassVar[str] = CHALLENGERS


@dataclass(frozen=True)
class ChallengerDecided(ChallengerEvent):
    """What candidate settings (`REBALANCING_CHALLENGERS`; `as-run` is the settings in force,
    evaluated the same way) decided for a pool over the live pool state: the operation it
    would start (`kind`, `amount`) or none (`kind` "", `reason` the plan's skip code), with the
    cost gate's estimate of that operation (None: none, or no gas quote). Counterfactual: never
    acted on. Recorded once per change of the decision, not per event."""

    ENUM: ClassVar[str] = "ChallengerDecisionEvent"
    challenger: str
    spec: str
    pool: str
    kind: str
    amount: Decimal
    reason: str
    estimated_cost_usd: Decimal | None
    decided_at: datetime


# --- MarketClock (aggregate id = the venue, "alpaca"): the market's sessions as read ----------


@dataclass(frozen=True)
class MarketClockEvent(DomainEvent):
    AGGREGATE_TYPE: ClassVar[str] = MARKET_CLOCK


@dataclass(frozen=True)
class MarketClockRead(MarketClockEvent):
    """Alpaca's clock (`GET /v1/clock`) when its session changed: open or not, the next open
    and close, read at `fetched_at`. Recorded once per change (about twice a trading day), so
    a replay of the log knows when new equity operations could start."""

    ENUM: ClassVar[str] = "MarketClockEvent"
    is_open: bool
    next_open: datetime
    next_close: datetime
    fetched_at: datetime


# --- OperationCost (aggregate id = the operation's aggregate id): the legacy cost ledger --------
# Logs written before the ledger became part of each operation's own log hold the cost of its
# transactions and venue charges here; they stay readable (`operations.costs` reads both).
# New costs are events of the operation's aggregate (`<Enum>::TransactionCostRecorded`).


@dataclass(frozen=True)
class CostEvent(DomainEvent):
    AGGREGATE_TYPE: ClassVar[str] = COSTS


@dataclass(frozen=True)
class TransactionCostRecorded(CostEvent, TxCostFields):
    ENUM: ClassVar[str] = "OperationCostEvent"


@dataclass(frozen=True)
class VenueCostRecorded(CostEvent, VenueCostFields):
    ENUM: ClassVar[str] = "OperationCostEvent"


OPERATION_EVENT_TYPES = (MINT, REDEMPTION, USDC_REBALANCE)

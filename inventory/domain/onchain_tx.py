"""The onchain transaction lifecycle, one for every operation aggregate (issue 21 item 3). Pure.

Every transaction a mint, a redemption or a USDC move sends goes through the same steps:

1. sign and store: the signed bytes are recorded (`StoredTx`, one per `TxPurpose`) before they
   are broadcast, with the nonce taken in the same database transaction
   (`StepContext.sign_and_record`). The step event that stores them is the aggregate's own
   (e.g. `VaultDepositSubmitted`, `TransferSigned`, `TransactionSigned`): it carries the step's
   data with the transaction.
2. broadcast the stored bytes, as often as needed (idempotent: same bytes, same hash);
3. watch: a receipt of the stored one or of any it replaced ends the wait;
4. replace: one left unmined too long is re-signed at the same nonce with higher fees,
   `ReplaceTransaction(purpose, raw_tx, tx_hash)` -> `<Enum>::TransactionReplaced`, stored
   before it is broadcast; a replacement that is not new is refused (`ReplacementNotNew`);
5. give back the nonce of a transaction abandoned before it was ever broadcast
   (`StepContext.nonce_give_back`: released or filled, never left as a gap);
6. record the receipt: `RecordReceipt` -> `<Enum>::TransactionCostRecorded` (chain, gas used,
   effective gas price, native fee, its USD value at the ETH/USD price read then), an event of
   the operation's own aggregate (the cost ledger is part of the log); `RecordVenueCost` ->
   `<Enum>::VenueCostRecorded` likewise for venue charges.

Older logs hold other variants of step 4 (`VaultApprovalReplaced`, `VaultDepositReplaced`,
`VaultWithdrawReplaced`, `TransferReplaced`, `TransactionSigned(replaces=...)`) and of step 6
(the `OperationCost` aggregate's events): `replacement_of` reads every replacement variant as
one `Replacement`, so old and new logs fold to the same state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from inventory.domain import events as ev
from inventory.domain.checks import CommandRefused, validate_bytes, validate_tx_hash
from inventory.domain.lifecycle import Lifecycle, with_ledger
from inventory.domain.values import InvalidValue, TxHash

WEI_PER_ETH = Decimal(10) ** 18
USD_PLACES = Decimal("1e-8")


# --- the stored transaction ---------------------------------------------------------------


@dataclass(frozen=True)
class StoredTx:
    """A signed transaction stored before broadcast (rebroadcast the same bytes on resume)."""

    purpose: ev.TxPurpose
    raw_tx: bytes
    tx_hash: TxHash
    signed_at: datetime  # of this transaction (a replacement: when it was signed)
    # Hashes of the transactions this one replaced (same nonce, lower fees), oldest first.
    earlier_hashes: tuple[TxHash, ...] = ()
    first_signed_at: datetime | None = None  # of the first one it replaced (None: itself)
    chain_id: int | None = None  # where it is sent (None: the aggregate's one chain, Base)

    @property
    def pending_since(self) -> datetime:
        """When the first transaction for this nonce was signed (time-outs count from it)."""
        return self.first_signed_at or self.signed_at

    def all_hashes(self) -> tuple[TxHash, ...]:
        """The latest signed transaction first, then the ones it replaced."""
        return (self.tx_hash, *reversed(self.earlier_hashes))

    def names(self, tx_hash: str | None) -> bool:
        """`tx_hash` is this transaction or one it replaced."""
        return tx_hash is not None and any(
            tx_hash.lower() == known.lower() for known in self.all_hashes()
        )

    def replaced_by(self, replacement: Replacement) -> StoredTx:
        return replace(
            self,
            raw_tx=replacement.raw_tx,
            tx_hash=replacement.tx_hash,
            signed_at=replacement.replaced_at,
            earlier_hashes=(*self.earlier_hashes, self.tx_hash),
            first_signed_at=self.pending_since,
        )


# --- commands -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplaceTransaction:
    """Store a bumped-fee replacement (same nonce) of the stored transaction of `purpose`
    before it is broadcast. The same command for every operation aggregate."""

    purpose: ev.TxPurpose
    raw_tx: bytes
    tx_hash: TxHash


@dataclass(frozen=True)
class RecordReceipt:
    """A mined transaction of the operation, from its receipt: recorded once per transaction
    (keyed by its hash) as the operation's `TransactionCostRecorded`."""

    operation_kind: str
    pool: str
    chain: str
    chain_id: int
    tx_hash: str
    gas_used: int
    effective_gas_price_wei: int
    # ETH/USD as read from the feed (None: not read), with the feed and round it came from.
    eth_usd: Decimal | None = None
    eth_usd_feed: str | None = None
    eth_usd_round: int | None = None


@dataclass(frozen=True)
class RecordVenueCost:
    """A venue's charge that no other event of the operation holds, once per reference."""

    operation_kind: str
    pool: str
    venue: str
    cost_kind: str
    reference: str
    notional: Decimal
    filled_price: Decimal | None
    spread_usd: Decimal
    fee_usd: Decimal


LEDGER_COMMANDS = (RecordReceipt, RecordVenueCost)


# --- errors -------------------------------------------------------------------------------


class ReplacementNotNew(CommandRefused):
    RULE = "a replacement must be a signed transaction not stored yet"


class NothingToReplace(CommandRefused):
    RULE = "no signed transaction of this purpose is stored in this step"


class NotStarted(CommandRefused):
    RULE = "the operation has no event yet: nothing of it was sent"


# --- replacements, old and new ------------------------------------------------------------


@dataclass(frozen=True)
class Replacement:
    """Any stored replacement, whichever variant recorded it."""

    purpose: ev.TxPurpose
    raw_tx: bytes
    tx_hash: TxHash
    replaces: TxHash
    replaced_at: datetime


# Replacement variants written before `<Enum>::TransactionReplaced`, and their purpose.
_LEGACY_REPLACEMENTS: dict[type, ev.TxPurpose] = {
    ev.VaultApprovalReplaced: ev.TxPurpose.APPROVE_VAULT,
    ev.VaultDepositReplaced: ev.TxPurpose.VAULT_DEPOSIT,
    ev.VaultWithdrawReplaced: ev.TxPurpose.VAULT_WITHDRAW,
    ev.TransferReplaced: ev.TxPurpose.TRANSFER,
}


def replacement_of(event: Any) -> Replacement | None:
    """The replacement `event` records (new or legacy variant), else None."""
    if isinstance(event, ev.TxReplacedFields):
        return Replacement(
            event.purpose, event.raw_tx, event.tx_hash, event.replaces, event.replaced_at
        )
    purpose = _LEGACY_REPLACEMENTS.get(type(event))
    if purpose is not None:
        return Replacement(purpose, event.raw_tx, event.tx_hash, event.replaces, event.replaced_at)
    if isinstance(event, ev.TransactionSigned) and event.replaces is not None:
        return Replacement(
            event.purpose, event.raw_tx, event.tx_hash, event.replaces, event.signed_at
        )
    return None


def decide_replacement(
    command: ReplaceTransaction,
    current: object,
    stored: StoredTx | None,
    *,
    event: type,
    now: datetime,
) -> list[Any]:
    """The `event` (the aggregate's `TransactionReplaced`) storing `command`'s replacement of
    `stored`; [] when `command` names the stored transaction (recorded already: idempotent);
    `ReplacementNotNew` when it names one the stored transaction replaced."""
    purpose = validate_purpose(command.purpose)
    if stored is None:
        raise NothingToReplace(command, current, purpose=str(purpose))
    raw_tx = validate_bytes("raw_tx", command.raw_tx)
    tx_hash = validate_tx_hash("tx_hash", command.tx_hash)
    if tx_hash.lower() == stored.tx_hash.lower() and raw_tx == stored.raw_tx:
        return []
    if stored.names(tx_hash):
        raise ReplacementNotNew(command, current, tx_hash=tx_hash)
    return [
        event(
            purpose=purpose,
            raw_tx=raw_tx,
            tx_hash=tx_hash,
            replaces=stored.tx_hash,
            replaced_at=now,
        )
    ]


def validity_for(validity: Mapping[Any, Any], command: Any, aggregate: str) -> Mapping[Any, Any]:
    """An equity aggregate's command table (`checks.refuse_by_table`) for `command`: its rows
    of `ReplaceTransaction` are keyed by (ReplaceTransaction, purpose), one per transaction
    that aggregate sends."""
    if not isinstance(command, ReplaceTransaction):
        return validity
    key = (ReplaceTransaction, validate_purpose(command.purpose))
    if key not in validity:
        raise InvalidValue("purpose", command.purpose, f"{aggregate} sends no such transaction")
    return {ReplaceTransaction: validity[key]}


def validate_purpose(purpose: Any) -> ev.TxPurpose:
    if not isinstance(purpose, ev.TxPurpose):
        raise InvalidValue("purpose", purpose, "must be a TxPurpose")
    return purpose


# --- the receipt and the cost ledger ------------------------------------------------------


def is_ledger(event: Any) -> bool:
    """A cost ledger event (any aggregate's, legacy ones too): it moves no state."""
    return isinstance(event, ev.TxCostFields | ev.VenueCostFields)


def fee_usd(native_fee_wei: int, eth_usd: Decimal | None) -> Decimal | None:
    """The native fee in USD at `eth_usd` (8 decimals, half-even); None without a price."""
    if eth_usd is None:
        return None
    return (Decimal(native_fee_wei) / WEI_PER_ETH * eth_usd).quantize(USD_PLACES)


def _non_negative(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | Decimal) or value < 0:
        raise InvalidValue(name, value, "must be a non-negative integer or Decimal")


def recorded_keys(events: Iterable[Any]) -> frozenset[str]:
    """What a ledger already holds: `tx:<hash>` per receipt, `<venue>:<reference>` per charge."""
    keys: set[str] = set()
    for event in events:
        if isinstance(event, ev.TxCostFields):
            keys.add(f"tx:{event.tx_hash.lower()}")
        elif isinstance(event, ev.VenueCostFields):
            keys.add(f"{event.venue}:{event.reference}")
    return frozenset(keys)


def ledger_key(command: RecordReceipt | RecordVenueCost) -> str:
    if isinstance(command, RecordReceipt):
        return f"tx:{command.tx_hash.lower()}"
    return f"{command.venue}:{command.reference}"


def decide_ledger(
    command: RecordReceipt | RecordVenueCost,
    *,
    recorded: frozenset[str],
    transaction_cost: type,
    venue_cost: type,
    now: datetime,
) -> list[Any]:
    """The cost event of `command` (the aggregate's variant), [] when `recorded` (the keys of
    what the ledger holds) has it already."""
    if isinstance(command, RecordReceipt):
        for name in ("gas_used", "effective_gas_price_wei", "chain_id"):
            _non_negative(name, getattr(command, name))
        if command.eth_usd is not None and command.eth_usd <= 0:
            raise InvalidValue("eth_usd", command.eth_usd, "a price must be positive")
        tx_hash = validate_tx_hash("tx_hash", command.tx_hash)
        if ledger_key(command) in recorded:
            return []
        native_fee = command.gas_used * command.effective_gas_price_wei
        return [
            transaction_cost(
                operation_kind=command.operation_kind,
                pool=command.pool,
                chain=command.chain,
                chain_id=command.chain_id,
                tx_hash=TxHash(tx_hash.lower()),
                gas_used=command.gas_used,
                effective_gas_price_wei=command.effective_gas_price_wei,
                native_fee_wei=native_fee,
                eth_usd=command.eth_usd,
                eth_usd_feed=command.eth_usd_feed,
                eth_usd_round=command.eth_usd_round,
                fee_usd=fee_usd(native_fee, command.eth_usd),
                recorded_at=now,
            )
        ]
    for name in ("notional", "spread_usd", "fee_usd"):
        _non_negative(name, getattr(command, name))
    if not command.reference.strip():
        raise InvalidValue("reference", command.reference, "names the venue's order or transfer")
    if ledger_key(command) in recorded:
        return []
    return [
        venue_cost(
            operation_kind=command.operation_kind,
            pool=command.pool,
            venue=command.venue,
            cost_kind=command.cost_kind,
            reference=command.reference,
            notional=command.notional,
            filled_price=command.filled_price,
            spread_usd=command.spread_usd,
            fee_usd=command.fee_usd,
            recorded_at=now,
        )
    ]


# --- what every operation aggregate folds and decides alike -------------------------------


def ledger_keys(event: Any) -> frozenset[str] | None:
    """The ledger keys a cost event records, None for any other event."""
    return recorded_keys([event]) if is_ledger(event) else None


def apply(
    state: Lifecycle[Any], event: Any, fold: Callable[[Lifecycle[Any], Any], Lifecycle[Any]]
) -> Lifecycle[Any]:
    """An operation aggregate's apply: a cost event adds to the ledger in any state (it moves
    no step), any other event folds by `fold`."""
    return with_ledger(state, event, ledger_keys(event), lambda: fold(state, event))


def handle_ledger(
    state: Lifecycle[Any],
    command: RecordReceipt | RecordVenueCost,
    now: datetime,
    *,
    transaction_cost: type,
    venue_cost: type,
) -> list[Any]:
    """Record a receipt or a venue charge in any state of a started operation (a terminal one
    too: a receipt may be read after the step that ended it), once per key."""
    if state.current() is None:
        raise NotStarted(command, None)
    return decide_ledger(
        command,
        recorded=state.ledger,
        transaction_cost=transaction_cost,
        venue_cost=venue_cost,
        now=now,
    )

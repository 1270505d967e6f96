"""What a workflow step may use (`StepContext`), built by the runner for one claimed operation.

ctx.operation / ctx.operation_id / ctx.aggregate_id / ctx.kind   (the claimed row)
ctx.venues (operations.venues.Venues), ctx.config (WorkerConfig), ctx.now()
ctx.load() -> LoadedAggregate of the workflow's aggregate
ctx.execute(command) -> events        (lease + active checked under the row lock, then
                                       aggregate_execute with metadata; commits)
ctx.ensure_active()                   (call right before a side effect outside execute)
ctx.sign_and_record(chain=, build=, command=, label=) -> SignedTx
                                      (nonce allocation + sign + event in ONE transaction)
ctx.tx_resume(chain=, stored=, label=)  -> TxMined | TxPending | TxDead (receipt of the
                                      stored tx or of one it replaced first, recorded in the
                                      operation's own log; else rebroadcast the same bytes;
                                      pending too long -> a bumped-fee replacement, recorded
                                      by the shared `ReplaceTransaction`, then broadcast).
                                      Every signed transaction of every workflow goes through
                                      it, so none can stay stuck.
ctx.tx_probe_all(chain=, tx_hashes=)  -> TxMined | TxPending | None without broadcasting
ctx.nonce_give_back(chain=, raw_tx=)  (abandoned never-broadcast tx: release or fill its nonce)
ctx.chaos("before:request_mint")      (operator drill, see operations.workflows.chaos)
ctx.fail_before_events(reason)        (no aggregate yet: operation_fail, guard released)
ctx.seconds_since(moment)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import rlp
from django.db import transaction
from django.utils import timezone
from eth_utils import keccak

from conf.env import WorkerConfig
from inventory.domain import events as ev
from inventory.domain import onchain_tx
from inventory.domain.aggregate import AggregateSpec
from inventory.domain.events import TxPurpose
from inventory.domain.onchain_tx import StoredTx
from inventory.store import LoadedAggregate, StoredEvent, aggregate_execute, aggregate_load
from operations.models import ACTIVE_STATUSES, Operation
from operations.nonces import nonce_allocate, nonce_fill, nonce_fills_resume
from operations.services import (
    OperationAlreadyFinished,
    OperationCannotFail,
    operation_fail,
    operation_flag,
    operation_force_fail,
)
from operations.venues import Venues
from operations.workflows.base import NotFailable, OperationInactive, Wait
from operations.workflows.chaos import chaos_point
from venues.chain import ChainError, EvmChain, NonceAlreadyUsed, Receipt, SignedTx

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TxMined:
    receipt: Receipt

    @property
    def succeeded(self) -> bool:
        return self.receipt.succeeded


@dataclass(frozen=True)
class TxPending:
    """Broadcast (or re-broadcast) and known to the node, not mined yet."""


@dataclass(frozen=True)
class TxDead:
    """Never mined and can never be: another transaction used its nonce."""

    nonce: int


TxStatus = TxMined | TxPending | TxDead


def decode_signed(raw_tx: bytes) -> tuple[int, int]:
    """(chain_id, nonce) of a signed typed (EIP-2930/1559) or legacy transaction."""
    if raw_tx and raw_tx[0] in (1, 2):
        fields = rlp.decode(raw_tx[1:])
        return int.from_bytes(fields[0], "big"), int.from_bytes(fields[1], "big")
    fields = rlp.decode(raw_tx)
    v = int.from_bytes(fields[6], "big")
    chain_id = (v - 35) // 2 if v >= 35 else 0
    return chain_id, int.from_bytes(fields[0], "big")


def signed_from_raw(raw_tx: bytes, tx_hash: str) -> SignedTx:
    chain_id, nonce = decode_signed(raw_tx)
    return SignedTx(raw=bytes(raw_tx), tx_hash=tx_hash, nonce=nonce, chain_id=chain_id)


class StepContext:
    def __init__(
        self,
        *,
        operation: Operation,
        venues: Venues,
        spec: AggregateSpec,
        lease_token: str,
        lease_s: float,
        actor: str = "worker",
    ) -> None:
        self.operation = operation
        self.venues = venues
        self.spec = spec
        self.lease_token = lease_token
        self.lease_s = lease_s
        self.actor = actor

    # -- identity and time -------------------------------------------------------------------

    @property
    def operation_id(self) -> int:
        return int(self.operation.pk)

    @property
    def aggregate_id(self) -> str:
        return self.operation.aggregate_id

    @property
    def kind(self) -> str:
        return str(self.operation.kind)

    @property
    def config(self) -> WorkerConfig:
        return self.venues.workers

    def now(self) -> datetime:
        return timezone.now()

    def seconds_since(self, moment: datetime) -> float:
        return (self.now() - moment).total_seconds()

    def metadata(self) -> dict[str, Any]:
        return {"operation_id": self.operation_id, "actor": self.actor}

    # -- aggregate ---------------------------------------------------------------------------

    def load(self, spec: AggregateSpec | None = None) -> LoadedAggregate:
        return aggregate_load(spec or self.spec, self.aggregate_id)

    def _lock_and_check(self) -> Operation:
        """Inside a transaction: lock the row, require it active and (if leased) ours; renew."""
        row = Operation.objects.select_for_update().filter(pk=self.operation_id).first()
        if row is None or row.status not in ACTIVE_STATUSES:
            status = "missing" if row is None else row.status
            raise OperationInactive(f"operation {self.operation_id} is {status}")
        if self.lease_token:
            if row.claimed_by != self.lease_token:
                raise OperationInactive(
                    f"operation {self.operation_id}: lease now held by {row.claimed_by!r}"
                )
            row.claimed_until = self.now() + timedelta(seconds=self.lease_s)
            row.save(update_fields=["claimed_until"])
        return row

    def ensure_active(self) -> None:
        """Right before a side effect: the operation is still active and still ours."""
        with transaction.atomic():
            self._lock_and_check()

    def venue_request_sent_at(self) -> datetime | None:
        """When a request without an id of ours was sent and not answered (None: none)."""
        return (
            Operation.objects.filter(pk=self.operation_id)
            .values_list("venue_request_at", flat=True)
            .first()
        )

    def venue_request_sending(self) -> None:
        """Right before a request that carries no id of ours: the operation is active and
        ours, and the moment is committed before the request leaves."""
        with transaction.atomic():
            row = self._lock_and_check()
            row.venue_request_at = self.now()
            row.save(update_fields=["venue_request_at"])

    def venue_request_answered(self) -> None:
        """The venue answered the request (whatever it said): nothing of it is in flight."""
        Operation.objects.filter(pk=self.operation_id).update(venue_request_at=None)

    def execute(self, command: Any, *, spec: AggregateSpec | None = None) -> list[StoredEvent]:
        """Record `command`'s events (commits); then the `after:<Command>` chaos point."""
        spec = spec or self.spec
        with transaction.atomic():
            self._lock_and_check()
            stored = aggregate_execute(
                spec=spec,
                aggregate_id=self.aggregate_id,
                command=command,
                metadata=self.metadata(),
            )
        names = ", ".join(type(s.event).__name__ for s in stored)
        logger.info(
            "operation %s (%s %s): %s -> %s",
            self.operation_id,
            self.kind,
            self.aggregate_id,
            type(command).__name__,
            names or "no event",
        )
        self.chaos(f"after:{type(command).__name__}")
        return stored

    def flag(self, error: str) -> None:
        """Ask for an operator (`needs_attention`), e.g. after a failure that keeps inflight."""
        operation_flag(operation_id=self.operation_id, error=error)

    def tx_not_mined(self, what: str, tx_hash: str, since: datetime) -> Wait:
        """A signed transaction still waiting to be mined: flag the operation once it is older
        than `tx_timeout_s` (it stays inflight: the transaction may still be mined), and wait."""
        if self.seconds_since(since) > self.config.tx_timeout_s:
            self.flag(f"{what} {tx_hash} not mined after {self.config.tx_timeout_s:g}s")
        return Wait(self.config.tx_poll_interval_s, f"{what} not mined yet")

    def force_fail(self, *, reason: str, actor: str) -> None:
        """End the operation through THE per-state failure mapping
        (`operations.services.operation_force_fail`: no events -> `operation_fail`, else the
        aggregate's failure command for its step). Workflows call it after settling what
        only they can check (a stored transaction mined or in the mempool). Raises
        `NotFailable` when the step has no failure command or the operation already ended;
        flags the operation when the failure kept inflight (an operator must reconcile)."""
        from inventory.domain import mint, redemption, usdc

        try:
            operation_force_fail(operation_id=self.operation_id, reason=reason, actor=actor)
        except OperationCannotFail as exc:
            raise NotFailable(exc.step, str(exc)) from exc
        except OperationAlreadyFinished as exc:
            raise NotFailable(exc.status, "already finished") from exc
        module = {ev.MINT: mint, ev.REDEMPTION: redemption, ev.USDC_REBALANCE: usdc}[
            self.operation.aggregate_type
        ]
        if module.can_reconcile(self.load(module.SPEC).state):
            self.flag(f"failed by {actor}, inflight kept until reconciled: {reason}")

    def fail_before_events(self, reason: str) -> None:
        """End the operation with no aggregate events (B4: the guard is released)."""
        logger.error(
            "operation %s (%s): failed before its first event: %s",
            self.operation_id,
            self.kind,
            reason,
        )
        operation_fail(operation_id=self.operation_id, reason=reason, actor=self.actor)

    # -- transactions ------------------------------------------------------------------------

    def sign_and_record(
        self,
        *,
        chain: EvmChain,
        build: Callable[[int], SignedTx],
        command: Callable[[SignedTx], Any],
        label: str,
        spec: AggregateSpec | None = None,
    ) -> SignedTx:
        """Allocate a nonce, sign with it and record the signed tx, in one transaction.

        `build(nonce)` signs (e.g. `lambda n: chain.build_erc20_transfer(..., nonce=n)`), and
        `command(signed)` is the aggregate command that stores `signed.raw`/`signed.tx_hash`.
        A preflight revert or a refused command rolls everything back (no nonce consumed).
        Nothing is broadcast here: call `tx_resume` next (after `before:broadcast:<label>`).
        """
        spec = spec or self.spec
        pending = chain.pending_nonce()  # read before taking the lock
        chain_id = chain.chain_id
        with transaction.atomic():
            self._lock_and_check()
            nonce = nonce_allocate(
                chain_id=chain_id, address=chain.address, chain_pending_nonce=pending
            )
            signed = build(nonce)
            if signed.nonce != nonce or signed.chain_id != chain_id:
                raise ValueError(
                    f"signed nonce/chain {signed.nonce}/{signed.chain_id} != {nonce}/{chain_id}"
                )
            to_record = command(signed)
            aggregate_execute(
                spec=spec,
                aggregate_id=self.aggregate_id,
                command=to_record,
                metadata={**self.metadata(), "nonce": nonce, "chain_id": chain_id},
            )
        logger.info(
            "operation %s (%s): signed %s tx %s nonce %d on %s, recorded",
            self.operation_id,
            self.kind,
            label,
            signed.tx_hash,
            nonce,
            chain.name,
        )
        self.chaos(f"after:{type(to_record).__name__}")
        return signed

    def tx_resume(
        self, *, chain: EvmChain, stored: StoredTx | None, label: str | None = None
    ) -> TxStatus:
        """Where a stored signed transaction stands; broadcasts the same bytes when needed.

        The lifecycle of `inventory.domain.onchain_tx`, the same for every workflow. A receipt
        for it or for one it replaced -> `TxMined` (the receipt, recorded in the operation's
        log first, names the mined one: the workflow records that one). Otherwise broadcast
        (idempotent): accepted -> `TxPending`; its nonce already used by another transaction
        -> `TxDead` (sign anew or fail). A transaction still not mined
        `config.tx_replace_after_s` after it was signed (`stored.signed_at`: a replacement's
        own) is replaced instead of re-sent unchanged: same nonce, fees bumped
        (`chain.build_replacement`), the replacement recorded by `ReplaceTransaction` (committed)
        before it is broadcast; every earlier hash stays watched. A worker that dies in between
        finds the replacement stored and re-sends those bytes. Chaos points
        `before:broadcast:<label>` / `after:broadcast:<label>` (label: the purpose's name).
        """
        if stored is None:
            raise ValueError("tx_resume: no signed transaction is stored for this step")
        label = label or str(stored.purpose)
        hashes = list(stored.all_hashes())
        receipt = self._first_receipt(chain, hashes)
        if receipt is not None:
            return TxMined(receipt)
        signed = signed_from_raw(stored.raw_tx, stored.tx_hash)
        # A filler that takes an abandoned nonce below ours must be out there too (no gap).
        nonce_fills_resume(chain=chain, below_nonce=signed.nonce)
        if self.seconds_since(stored.signed_at) > self.config.tx_replace_after_s:
            signed = self._replace(chain=chain, stuck=signed, purpose=stored.purpose, label=label)
            hashes = [signed.tx_hash, *hashes]
        self.ensure_active()
        self.chaos(f"before:broadcast:{label}")
        try:
            chain.broadcast(signed)
        except NonceAlreadyUsed:
            receipt = self._first_receipt(chain, hashes)
            if receipt is not None:
                return TxMined(receipt)
            logger.warning(
                "operation %s: %s tx %s is dead (nonce %d used by another transaction)",
                self.operation_id,
                label,
                signed.tx_hash,
                signed.nonce,
            )
            return TxDead(signed.nonce)
        self.chaos(f"after:broadcast:{label}")
        receipt = self._first_receipt(chain, hashes)
        if receipt is not None:
            return TxMined(receipt)
        return TxPending()

    def _first_receipt(self, chain: EvmChain, hashes: Sequence[str]) -> Receipt | None:
        for candidate in hashes:
            receipt = chain.receipt(candidate)
            if receipt is not None:
                self.tx_cost_record(chain=chain, receipt=receipt)
                return receipt
        return None

    def tx_cost_record(self, *, chain: EvmChain, receipt: Receipt) -> None:
        """Record the receipt (the lifecycle's last step) in the operation's own log: the
        cost ledger's `TransactionCostRecorded` (issue 24: gas used, effective gas price,
        native fee, exact), valued at the ETH/USD feed's latest round read now, once per
        transaction (`onchain_tx.RecordReceipt`). A ledger failure is logged, never the
        step's."""
        feed = self.config.eth_usd_aggregator
        price = None
        if feed:
            try:
                price = self.venues.base.price_feed_latest(feed=feed)
            except Exception as exc:  # noqa: BLE001 - recorded without a USD value
                logger.warning(
                    "operation %s: ETH/USD not read from %s: %s", self.operation_id, feed, exc
                )
        try:
            aggregate_execute(
                spec=self.spec,
                aggregate_id=self.aggregate_id,
                command=onchain_tx.RecordReceipt(
                    operation_kind=self.kind,
                    pool=self.operation.pool,
                    chain=chain.name,
                    chain_id=chain.chain_id,
                    tx_hash=receipt.tx_hash,
                    gas_used=receipt.gas_used,
                    effective_gas_price_wei=receipt.effective_gas_price,
                    eth_usd=None if price is None else price.price,
                    eth_usd_feed=None if price is None else price.feed,
                    eth_usd_round=None if price is None else price.round_id,
                ),
                metadata=self.metadata(),
            )
        except Exception:  # noqa: BLE001 - the ledger never stops an operation
            logger.exception(
                "operation %s: cost of tx %s not recorded", self.operation_id, receipt.tx_hash
            )

    def _replace(
        self,
        *,
        chain: EvmChain,
        stuck: SignedTx,
        purpose: TxPurpose,
        label: str,
    ) -> SignedTx:
        """Sign `stuck` again with bumped fees and record it (before it is broadcast)."""
        replacement = chain.build_replacement(stuck.raw)
        self.execute(
            onchain_tx.ReplaceTransaction(
                purpose=purpose, raw_tx=replacement.raw, tx_hash=replacement.tx_hash
            )
        )
        logger.warning(
            "operation %s: %s tx %s not mined after %gs; replaced by %s (nonce %d, fees bumped)",
            self.operation_id,
            label,
            stuck.tx_hash,
            self.config.tx_replace_after_s,
            replacement.tx_hash,
            replacement.nonce,
        )
        return replacement

    def tx_probe(self, *, chain: EvmChain, tx_hash: str) -> TxMined | TxPending | None:
        """Without broadcasting: mined, pending (known to the node), or None (unknown)."""
        receipt = chain.receipt(tx_hash)
        if receipt is not None:
            self.tx_cost_record(chain=chain, receipt=receipt)
            return TxMined(receipt)
        if chain.transaction_known(tx_hash):
            return TxPending()
        return None

    def tx_probe_all(
        self, *, chain: EvmChain, tx_hashes: Sequence[str]
    ) -> TxMined | TxPending | None:
        """`tx_probe` over a transaction and the ones it replaced (one nonce: at most one can
        be mined): the mined one's receipt, else pending if any is known, else None."""
        pending = False
        for tx_hash in tx_hashes:
            probe = self.tx_probe(chain=chain, tx_hash=tx_hash)
            if isinstance(probe, TxMined):
                return probe
            pending = pending or isinstance(probe, TxPending)
        return TxPending() if pending else None

    def nonce_give_back(self, *, chain: EvmChain, raw_tx: bytes) -> None:
        """An abandoned, never-broadcast signed tx leaves no nonce gap: its nonce is released
        if it was the last allocated, else taken by a stored zero-value self-transfer."""
        abandoned = signed_from_raw(raw_tx, "0x" + keccak(bytes(raw_tx)).hex())
        try:
            nonce_fill(chain=chain, abandoned=abandoned, operation_id=self.operation_id)
        except ChainError as exc:
            logger.error(
                "operation %s: nonce %d of abandoned tx %s on %s not filled: %s",
                self.operation_id,
                abandoned.nonce,
                abandoned.tx_hash,
                chain.name,
                exc,
            )
            self.flag(
                f"nonce {abandoned.nonce} on {chain.name} (abandoned tx {abandoned.tx_hash}) "
                f"could not be filled, later transactions wait behind it: {exc}"
            )

    # -- drill -------------------------------------------------------------------------------

    def chaos(self, point: str) -> None:
        chaos_point(
            config=self.config, kind=self.kind, point=point, operation_key=self.aggregate_id
        )

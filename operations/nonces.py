"""Nonce allocation for our signer, per (chain id, address), under a database row lock.

    pending = chain.pending_nonce()            # read BEFORE taking the lock
    with transaction.atomic():
        nonce = nonce_allocate(chain_id=..., address=..., chain_pending_nonce=pending)
        signed = chain.build_...(nonce=nonce)
        aggregate_execute(...)                 # the signed tx recorded in an event
    chain.broadcast(signed)                    # after commit

The stored value only ever moves forward, except `nonce_release` of the very last allocation
(a signed transaction abandoned before it was broadcast). An abandoned nonce that was not the
last one is filled instead (`nonce_fill`: a zero-value transfer to ourselves at that nonce,
stored before it is broadcast), so no gap is ever left behind. A filler is broadcast again
until its nonce is used: before a later transaction of ours on that chain is (re)sent
(`nonce_fills_resume(below_nonce=...)`) and by the periodic sweep (`nonce_fills_sweep`), so a
filler lost by the node is sent again even when nothing else is waiting behind it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.db import IntegrityError, transaction
from django.utils import timezone

from inventory.db_errors import unique_violated
from operations.models import ChainNonce, NonceFill
from venues.chain import ChainError, EvmChain, NonceAlreadyUsed, SignedTx

logger = logging.getLogger(__name__)


def _locked_row(*, chain_id: int, address: str) -> ChainNonce:
    row = ChainNonce.objects.select_for_update().filter(chain_id=chain_id, address=address).first()
    if row is not None:
        return row
    try:
        with transaction.atomic():
            ChainNonce.objects.create(chain_id=chain_id, address=address, next_nonce=0)
    except IntegrityError as error:
        if unique_violated(error) != "chain_nonce_unique":
            raise
        # another writer created it first; lock theirs
    return ChainNonce.objects.select_for_update().get(chain_id=chain_id, address=address)


def nonce_allocate(*, chain_id: int, address: str, chain_pending_nonce: int) -> int:
    """The next nonce for (chain_id, address); call inside the transaction that records the tx."""
    if chain_pending_nonce < 0:
        raise ValueError(f"chain_pending_nonce={chain_pending_nonce}: must be >= 0")
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("nonce_allocate must run inside the transaction that records the tx")
    address = address.lower()
    row = _locked_row(chain_id=chain_id, address=address)
    nonce = max(row.next_nonce, chain_pending_nonce)
    row.next_nonce = nonce + 1
    row.updated_at = timezone.now()
    row.save(update_fields=["next_nonce", "updated_at"])
    logger.debug("chain %s %s: allocated nonce %d", chain_id, address, nonce)
    return nonce


def nonce_release(*, chain_id: int, address: str, nonce: int) -> bool:
    """Give back `nonce` if it was the last one allocated (its transaction was never sent)."""
    address = address.lower()
    with transaction.atomic():
        row = (
            ChainNonce.objects.select_for_update()
            .filter(chain_id=chain_id, address=address)
            .first()
        )
        if row is None or row.next_nonce != nonce + 1:
            return False
        row.next_nonce = nonce
        row.updated_at = timezone.now()
        row.save(update_fields=["next_nonce", "updated_at"])
    logger.info("chain %s %s: released unused nonce %d", chain_id, address, nonce)
    return True


def nonce_fill(
    *,
    chain: EvmChain,
    abandoned: SignedTx,
    operation_id: int | None = None,
) -> NonceFill | None:
    """Leave no gap at the nonce of `abandoned` (our signed tx that will never be broadcast).

    The last allocated nonce is released; a nonce already used onchain needs nothing; any
    other is taken by a zero-value transfer to ourselves, outbidding the abandoned one (in
    case some node has it after all), stored before it is broadcast. Returns the filler row
    (None when no filler was needed). A broadcast that fails is retried by `nonce_fills_resume`.
    """
    address = chain.address.lower()
    if nonce_release(chain_id=abandoned.chain_id, address=address, nonce=abandoned.nonce):
        return None
    if chain.mined_nonce() > abandoned.nonce:
        logger.info(
            "chain %s %s: nonce %d of abandoned tx %s already used onchain",
            abandoned.chain_id,
            address,
            abandoned.nonce,
            abandoned.tx_hash,
        )
        return None
    with transaction.atomic():
        row = (
            NonceFill.objects.select_for_update()
            .filter(chain_id=abandoned.chain_id, address=address, nonce=abandoned.nonce)
            .first()
        )
        if row is None:
            signed = chain.build_self_transfer(nonce=abandoned.nonce, replaces=abandoned.raw)
            row = NonceFill.objects.create(
                chain_id=abandoned.chain_id,
                address=address,
                nonce=abandoned.nonce,
                abandoned_tx_hash=abandoned.tx_hash,
                raw_tx=signed.raw,
                tx_hash=signed.tx_hash,
                operation_id=operation_id,
            )
            logger.warning(
                "chain %s %s: nonce %d of abandoned tx %s (operation %s) is filled by "
                "self-transfer %s",
                abandoned.chain_id,
                address,
                abandoned.nonce,
                abandoned.tx_hash,
                operation_id,
                signed.tx_hash,
            )
    _fill_advance(chain, row)
    return row


def _fill_advance(chain: EvmChain, row: NonceFill) -> bool:
    """Settle the filler if its nonce is used, else broadcast it; True once settled."""
    try:
        if chain.mined_nonce() > row.nonce:
            settled = True
        else:
            filler = SignedTx(
                raw=bytes(row.raw_tx), tx_hash=row.tx_hash, nonce=row.nonce, chain_id=row.chain_id
            )
            try:
                chain.broadcast(filler)
                settled = False
            except NonceAlreadyUsed:
                settled = True
    except ChainError as exc:
        logger.warning(
            "chain %s: nonce filler %s (nonce %d) not sent yet: %s",
            row.chain_id,
            row.tx_hash,
            row.nonce,
            exc,
        )
        return False
    if settled:
        NonceFill.objects.filter(pk=row.pk, settled_at__isnull=True).update(
            settled_at=timezone.now()
        )
        logger.info("chain %s: nonce %d filled (filler %s)", row.chain_id, row.nonce, row.tx_hash)
    return settled


def nonce_fills_resume(*, chain: EvmChain, below_nonce: int | None = None) -> int:
    """Broadcast again the unsettled fillers of our signer on `chain` (those under
    `below_nonce` when given: the ones a transaction at that nonce waits for); returns how
    many are still unsettled."""
    rows = NonceFill.objects.filter(
        chain_id=chain.chain_id, address=chain.address.lower(), settled_at__isnull=True
    )
    if below_nonce is not None:
        rows = rows.filter(nonce__lt=below_nonce)
    return sum(0 if _fill_advance(chain, row) else 1 for row in rows.order_by("nonce"))


def nonce_fills_sweep(*, chains: Iterable[EvmChain]) -> int:
    """The periodic sweep of fillers: broadcast again (or settle, once their nonce is mined)
    the unsettled fillers of our signer on each of `chains`; returns how many are still
    unsettled. Asks no chain anything while no filler is unsettled."""
    unsettled = set(
        NonceFill.objects.filter(settled_at__isnull=True).values_list("chain_id", flat=True)
    )
    if not unsettled:
        return 0
    left = 0
    for chain in chains:
        try:
            chain_id = chain.chain_id
        except ChainError as exc:
            logger.warning("nonce filler sweep: %s unreachable: %s", chain.name, exc)
            continue
        if chain_id in unsettled:
            left += nonce_fills_resume(chain=chain)
    if left:
        logger.info("nonce filler sweep: %d filler(s) still waiting to be mined", left)
    return left

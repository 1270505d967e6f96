"""Nonce allocation for our signer, per (chain id, address), under a database row lock.

    pending = chain.pending_nonce()            # read BEFORE taking the lock
    with transaction.atomic():
        nonce = nonce_allocate(chain_id=..., address=..., chain_pending_nonce=pending)
        signed = chain.build_...(nonce=nonce)
        aggregate_execute(...)                 # the signed tx recorded in an event
    chain.broadcast(signed)                    # after commit

The stored value only ever moves forward, except `nonce_release` of the very last allocation
(a signed transaction abandoned before it was broadcast), so no gap is left behind.
"""

from __future__ import annotations

import logging

from django.db import IntegrityError, transaction
from django.utils import timezone

from operations.models import ChainNonce

logger = logging.getLogger(__name__)


def _locked_row(*, chain_id: int, address: str) -> ChainNonce:
    row = ChainNonce.objects.select_for_update().filter(chain_id=chain_id, address=address).first()
    if row is not None:
        return row
    try:
        with transaction.atomic():
            ChainNonce.objects.create(chain_id=chain_id, address=address, next_nonce=0)
    except IntegrityError:
        pass  # another writer created it first; lock theirs
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

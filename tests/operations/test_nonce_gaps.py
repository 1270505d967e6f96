"""Transactions cannot get stuck behind an abandoned nonce (issue 8).

Two operations' nonces interleave: A signs (nonce n, stored, never broadcast), B signs n+1 and
broadcasts it, so B's transfer waits in the node behind n. Force-failing A cannot give n back
(it is not the last allocation); a zero-value self-transfer stored before it is broadcast takes
n instead, and B's transfer is mined. Real anvil chain, real operator service.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from inventory.domain import redemption
from inventory.store import aggregate_load
from operations.models import NonceFill, Operation, OperationKind, OperationStatus
from operations.nonces import nonce_fills_resume
from operations.operator import operator_force_fail
from operations.services import operation_create
from operations.workflows import operation_advance
from operations.workflows.base import Continue
from operations.workflows.context import StepContext, decode_signed
from operations.workflows.redemption import WORKFLOW
from tests.operations.conftest import advance_until_finished, step_events
from tests.operations.test_workers_e2e import fund_equity_vault

pytestmark = [pytest.mark.django_db, pytest.mark.chain]

UNIT = 10**18


def new_redemption(sim_venue, venues, token: str, symbol: str) -> Operation:
    operation = operation_create(
        kind=OperationKind.REDEMPTION, pool=symbol, amount=Decimal(1), token_address=token
    )
    assert operation is not None
    return operation


def sign_only(operation: Operation, venues) -> redemption.VaultWithdrawPending:
    """The worker signs and stores the vault withdrawal, then dies before broadcasting it."""
    ctx = StepContext(
        operation=operation, venues=venues, spec=redemption.SPEC, lease_token="", lease_s=5
    )
    assert isinstance(WORKFLOW.step(ctx), Continue)
    state = aggregate_load(redemption.SPEC, operation.aggregate_id).state.value
    assert isinstance(state, redemption.VaultWithdrawPending)
    return state


def event_types(operation: Operation) -> list[str]:
    return [type(s.event).__name__ for s in step_events(redemption.SPEC, operation.aggregate_id)]


def test_force_failing_a_never_broadcast_transfer_below_another_fills_its_nonce(
    sim_venue, venues, sim_assets
):
    base = venues.base
    wallet = venues.market_maker_wallet
    # Redemptions start from the vaults; fund them first (these sends use the wallet's nonces).
    fund_equity_vault(sim_venue, "MSFT", 10 * UNIT)
    fund_equity_vault(sim_venue, "AAPL", 10 * UNIT)
    stuck = new_redemption(sim_venue, venues, sim_assets["MSFT"], "MSFT")
    stuck_tx = sign_only(stuck, venues)
    _, gap_nonce = decode_signed(stuck_tx.raw_tx)
    assert base.mined_nonce() == gap_nonce

    later = new_redemption(sim_venue, venues, sim_assets["AAPL"], "AAPL")
    result = operation_advance(operation_id=later.pk, venues=venues)
    assert result.outcome == "waiting"  # broadcast, but waiting behind nonce n
    later_tx = aggregate_load(redemption.SPEC, later.aggregate_id).state.value
    assert decode_signed(later_tx.raw_tx)[1] == gap_nonce + 1
    assert base.receipt(later_tx.tx_hash) is None

    failed = operator_force_fail(
        operation_id=stuck.pk, reason="abandoned", actor="alice", venues=venues
    )

    assert failed.status == OperationStatus.FAILED
    assert event_types(stuck) == ["VaultWithdrawSigned", "VaultWithdrawFailed"]
    # The later transfer no longer waits behind nonce n.
    assert base.wait_for_receipt(later_tx.tx_hash, timeout_s=120, poll_s=0.1).succeeded
    fill = NonceFill.objects.get(chain_id=base.chain_id, nonce=gap_nonce)
    assert fill.address == wallet.lower()
    assert fill.abandoned_tx_hash == stuck_tx.tx_hash
    assert fill.operation_id == stuck.pk
    receipt = base.wait_for_receipt(fill.tx_hash, timeout_s=120, poll_s=0.1)
    assert receipt.succeeded
    assert base.receipt(stuck_tx.tx_hash) is None  # the abandoned withdraw never moved tokens

    advance_until_finished(later, venues)
    later.refresh_from_db()
    assert later.status == OperationStatus.COMPLETED, later.failure_reason
    assert nonce_fills_resume(chain=base) == 0
    fill.refresh_from_db()
    assert fill.settled_at is not None


def test_the_periodic_sweep_sends_again_a_filler_the_node_lost_with_nothing_resumed(
    sim_venue, venues, sim_assets
):
    """The filler of an abandoned nonce is dropped by the node (a restart, a full mempool).
    No worker resumes a later transaction on that chain: the periodic sweep alone sends the
    stored filler again, and settles it once its nonce is mined."""
    from operations.sweep import sweep_nonce_fills
    from tests.operations.test_tx_replacement import base_mines_on_demand, rpc

    base = venues.base
    fund_equity_vault(sim_venue, "MSFT", 10 * UNIT)
    fund_equity_vault(sim_venue, "AAPL", 10 * UNIT)
    stuck = new_redemption(sim_venue, venues, sim_assets["MSFT"], "MSFT")
    stuck_tx = sign_only(stuck, venues)
    _, gap_nonce = decode_signed(stuck_tx.raw_tx)
    later = new_redemption(sim_venue, venues, sim_assets["AAPL"], "AAPL")
    later_tx = sign_only(later, venues)  # nonce n+1 stored: n is not the last allocation
    assert decode_signed(later_tx.raw_tx)[1] == gap_nonce + 1

    with base_mines_on_demand(sim_venue):
        operator_force_fail(operation_id=stuck.pk, reason="abandoned", actor="alice", venues=venues)
        fill = NonceFill.objects.get(chain_id=base.chain_id, nonce=gap_nonce)
        assert base.transaction_known(fill.tx_hash)  # stored, then broadcast
        rpc(sim_venue, "anvil_dropTransaction", fill.tx_hash)  # ... and lost by the node
        assert not base.transaction_known(fill.tx_hash)
        rpc(sim_venue, "evm_mine")
        assert base.mined_nonce() == gap_nonce  # the gap is still there

        assert sweep_nonce_fills(venues=venues) == 1  # sent again, not mined yet
        assert base.transaction_known(fill.tx_hash)
        rpc(sim_venue, "evm_mine")

    assert base.receipt(fill.tx_hash).succeeded
    assert base.mined_nonce() == gap_nonce + 1
    assert sweep_nonce_fills(venues=venues) == 0  # settled
    fill.refresh_from_db()
    assert fill.settled_at is not None
    assert base.receipt(stuck_tx.tx_hash) is None

    advance_until_finished(later, venues)  # nothing waits behind the gap any more
    later.refresh_from_db()
    assert later.status == OperationStatus.COMPLETED, later.failure_reason


def test_the_nonce_filler_sweep_asks_no_chain_while_nothing_is_unsettled(db):
    from operations.nonces import nonce_fills_sweep

    class Unreachable:
        name = "nowhere"

        @property
        def chain_id(self) -> int:
            raise AssertionError("the sweep asked a chain with no filler unsettled")

    assert nonce_fills_sweep(chains=[Unreachable()]) == 0

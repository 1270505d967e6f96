"""Transactions cannot get stuck on too low a fee (issue 8), on the real anvil chain.

A signed transfer that stays unmined for `REBALANCER_TX_REPLACE_AFTER_S` is replaced: same
nonce, fees bumped, the replacement stored (TransactionReplaced) before it is broadcast, and every
earlier hash watched until one of them is mined. Base mines only on demand here (automine off)
and its base fee is pushed above the first transfer's fee cap, as on a congested chain.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal

import pytest

from inventory.domain import events as ev
from inventory.domain import onchain_tx, redemption
from inventory.store import aggregate_execute, aggregate_load
from operations.models import Operation, OperationKind, OperationStatus
from operations.services import operation_create
from operations.venues import Venues
from operations.workflows import operation_advance
from tests.operations.conftest import advance_until_finished, step_events
from tests.operations.test_workers_e2e import fund_equity_vault
from venues.chain import signed_fields
from venues.sim.venue import SimVenue

pytestmark = [pytest.mark.django_db, pytest.mark.chain]

UNIT = 10**18


def rpc(sim_venue: SimVenue, method: str, *params: object) -> object:
    web3 = sim_venue.chains.web3(sim_venue.chains.base)
    response = web3.provider.make_request(method, list(params))  # type: ignore[arg-type]
    assert "error" not in response, response
    return response.get("result")


@contextmanager
def base_mines_on_demand(sim_venue: SimVenue) -> Iterator[None]:
    rpc(sim_venue, "evm_setAutomine", False)
    try:
        yield
    finally:
        rpc(sim_venue, "evm_setAutomine", True)


def quick_replacing(venues: Venues, after_s: float) -> Venues:
    workers = dataclasses.replace(venues.config.workers, tx_replace_after_s=after_s)
    return Venues.from_config(dataclasses.replace(venues.config, workers=workers))


def new_redemption(sim_venue, venues, token: str) -> Operation:
    fund_equity_vault(sim_venue, "MSFT", 10 * UNIT)  # a redemption starts from the vault
    operation = operation_create(
        kind=OperationKind.REDEMPTION, pool="MSFT", amount=Decimal(2), token_address=token
    )
    assert operation is not None
    return operation


def events(operation: Operation) -> list:
    return [s.event for s in step_events(redemption.SPEC, operation.aggregate_id)]


def advance_to_a_broadcast_transfer(
    sim_venue: SimVenue, operation: Operation, venues: Venues
) -> None:
    """With Base mining on demand: the vault withdrawal is broadcast, mined, confirmed; then
    the transfer is signed, stored and broadcast, and waits in the mempool."""
    assert operation_advance(operation_id=operation.pk, venues=venues).outcome == "waiting"
    rpc(sim_venue, "evm_mine")
    assert operation_advance(operation_id=operation.pk, venues=venues).outcome == "waiting"


def pending_transfer(operation: Operation) -> redemption.TransferPending:
    state = aggregate_load(redemption.SPEC, operation.aggregate_id).state.value
    assert isinstance(state, redemption.TransferPending)
    return state


def test_a_transfer_underpriced_for_the_chain_is_replaced_with_bumped_fees_and_completes(
    sim_venue, venues, sim_assets
):
    base = venues.base
    quick = quick_replacing(venues, 0.5)
    operation = new_redemption(sim_venue, venues, sim_assets["MSFT"])

    with base_mines_on_demand(sim_venue):
        advance_to_a_broadcast_transfer(sim_venue, operation, venues)  # in the mempool
        first = pending_transfer(operation)
        fee_cap = int(signed_fields(first.raw_tx)["maxFeePerGas"])
        # The chain's base fee jumps above the transfer's fee cap: a block leaves it out.
        rpc(sim_venue, "anvil_setNextBlockBaseFeePerGas", hex(fee_cap * 4))
        rpc(sim_venue, "evm_mine")
        assert base.receipt(first.tx_hash) is None

        deadline = time.monotonic() + 120
        while not any(isinstance(e, ev.RedemptionTransactionReplaced) for e in events(operation)):
            assert time.monotonic() < deadline, "the stuck transfer was never replaced"
            time.sleep(0.2)
            operation_advance(operation_id=operation.pk, venues=quick)
        replaced = one_of(events(operation), replaced_as(ev.TxPurpose.TRANSFER))
        assert replaced.replaces == first.tx_hash
        assert replaced.tx_hash != first.tx_hash
        old, new = signed_fields(first.raw_tx), signed_fields(replaced.raw_tx)
        for same in ("nonce", "to", "data", "value", "gas", "chainId"):
            assert new[same] == old[same], same
        assert new["maxFeePerGas"] > fee_cap * 4  # payable at today's base fee
        assert new["maxPriorityFeePerGas"] >= old["maxPriorityFeePerGas"] * 1.1
        assert base.transaction_known(replaced.tx_hash)  # stored, then broadcast
        rpc(sim_venue, "evm_mine")

    advance_until_finished(operation, venues)

    operation.refresh_from_db()
    assert operation.status == OperationStatus.COMPLETED, operation.failure_reason
    assert [type(e).__name__ for e in events(operation)] == [
        "VaultWithdrawSigned",
        "WithdrawnFromVault",
        "TransferSigned",
        "TransactionReplaced",
        "TokensSent",
        "Detected",
        "Completed",
    ]
    sent = next(e for e in events(operation) if isinstance(e, ev.TokensSent))
    assert sent.tx_hash == replaced.tx_hash
    assert base.receipt(replaced.tx_hash).succeeded
    assert base.receipt(first.tx_hash) is None  # only one of them could ever be mined


def test_the_replaced_transfer_is_still_watched_and_counts_when_it_is_the_one_mined(
    sim_venue, venues, sim_assets
):
    base = venues.base
    operation = new_redemption(sim_venue, venues, sim_assets["MSFT"])

    with base_mines_on_demand(sim_venue):
        advance_to_a_broadcast_transfer(sim_venue, operation, venues)
        first = pending_transfer(operation)
        # A worker stored a replacement and died before broadcasting it.
        replacement = base.build_replacement(first.raw_tx)
        aggregate_execute(
            spec=redemption.SPEC,
            aggregate_id=operation.aggregate_id,
            command=onchain_tx.ReplaceTransaction(
                ev.TxPurpose.TRANSFER, raw_tx=replacement.raw, tx_hash=replacement.tx_hash
            ),
            metadata={"operation_id": operation.pk, "actor": "worker"},
        )
        rpc(sim_venue, "evm_mine")  # the first transfer is the one mined
        assert base.receipt(first.tx_hash) is not None

    advance_until_finished(operation, venues)

    operation.refresh_from_db()
    assert operation.status == OperationStatus.COMPLETED, operation.failure_reason
    sent = next(e for e in events(operation) if isinstance(e, ev.TokensSent))
    assert sent.tx_hash == first.tx_hash
    assert base.receipt(replacement.tx_hash) is None


def test_a_usdc_vault_withdraw_underpriced_for_the_chain_is_replaced_and_the_move_completes(
    sim_venue, venues
):
    from inventory.domain import usdc
    from tests.operations.usdc_support import B2A, fund_vault, new_usdc, usdc_events

    base = venues.base
    quick = quick_replacing(venues, 0.5)
    fund_vault(sim_venue, venues, "120")
    operation = new_usdc(B2A, "120")

    def signed() -> list:
        """The vault withdrawal as signed, then its replacements (TransactionReplaced)."""
        return [
            e
            for e in usdc_events(operation)
            if isinstance(e, ev.TransactionSigned | ev.TxReplacedFields)
            and e.purpose == ev.TxPurpose.VAULT_WITHDRAW
        ]

    with base_mines_on_demand(sim_venue):
        assert operation_advance(operation_id=operation.pk, venues=venues).outcome == "waiting"
        [first] = signed()
        fee_cap = int(signed_fields(first.raw_tx)["maxFeePerGas"])
        rpc(sim_venue, "anvil_setNextBlockBaseFeePerGas", hex(fee_cap * 4))
        rpc(sim_venue, "evm_mine")
        assert base.receipt(first.tx_hash) is None

        deadline = time.monotonic() + 120
        while len(signed()) < 2:
            assert time.monotonic() < deadline, "the stuck vault withdraw was never replaced"
            time.sleep(0.2)
            operation_advance(operation_id=operation.pk, venues=quick)
        replacement = signed()[1]
        assert isinstance(replacement, ev.UsdcTransactionReplaced)
        assert replacement.replaces == first.tx_hash
        assert signed_fields(replacement.raw_tx)["nonce"] == signed_fields(first.raw_tx)["nonce"]
        assert base.transaction_known(replacement.tx_hash)
        rpc(sim_venue, "evm_mine")

    advance_until_finished(operation, venues)

    operation.refresh_from_db()
    assert operation.status == OperationStatus.COMPLETED, operation.failure_reason
    initiated = next(e for e in usdc_events(operation) if isinstance(e, ev.Initiated))
    assert initiated.withdrawal_ref.value.lower() == replacement.tx_hash.lower()
    assert base.receipt(first.tx_hash) is None
    stored = usdc.transaction_for(
        aggregate_load(usdc.SPEC, operation.aggregate_id).state, ev.TxPurpose.VAULT_WITHDRAW
    )
    assert stored.all_hashes() == (replacement.tx_hash, first.tx_hash)


# --- every signed transaction of every workflow: the vault transactions too -------------------


def make_stuck(sim_venue: SimVenue, venues: Venues, raw_tx: bytes, tx_hash: str) -> None:
    """With Base mining on demand and `raw_tx` broadcast: the base fee jumps above its fee cap
    and a block is mined without it, as on a congested chain."""
    assert venues.base.transaction_known(tx_hash)
    fee_cap = int(signed_fields(raw_tx)["maxFeePerGas"])
    rpc(sim_venue, "anvil_setNextBlockBaseFeePerGas", hex(fee_cap * 4))
    rpc(sim_venue, "evm_mine")
    assert venues.base.receipt(tx_hash) is None


def advance_until(operation: Operation, venues: Venues, done, what: str) -> None:
    """Advance (as a worker would, in-process) until `done()`; generous limit, no fixed wait."""
    deadline = time.monotonic() + 120
    while not done():
        assert time.monotonic() < deadline, f"{what}: never happened"
        time.sleep(0.2)
        operation_advance(operation_id=operation.pk, venues=venues)


def same_transaction_bumped(old_raw: bytes, new_raw: bytes) -> None:
    old, new = signed_fields(old_raw), signed_fields(new_raw)
    for same in ("nonce", "to", "data", "value", "gas", "chainId"):
        assert new[same] == old[same], same
    assert new["maxFeePerGas"] > old["maxFeePerGas"] * 4  # payable at the jumped base fee


def replaced_as(purpose: ev.TxPurpose) -> list:
    """The kind `one_of` finds: the shared lifecycle's replacement of `purpose`'s transaction."""
    return [ev.TxReplacedFields, purpose]


def stuck_then_replaced(
    sim_venue: SimVenue, operation: Operation, quick: Venues, signed, replaced: list, log
):
    """`signed` (broadcast, waiting) gets stuck; the worker replaces it with the same
    transaction at a higher fee, stores it, broadcasts it; a block mines it. Returns the
    replacement event. `log()` lists the operation's events."""
    make_stuck(sim_venue, quick, signed.raw_tx, signed.tx_hash)
    advance_until(
        operation,
        quick,
        lambda: any(is_kind(e, replaced) for e in log()),
        f"the stuck transaction replaced ({replaced[1]})",
    )
    replacement = one_of(log(), replaced)
    assert replacement.replaces == signed.tx_hash
    same_transaction_bumped(signed.raw_tx, replacement.raw_tx)
    assert quick.base.transaction_known(replacement.tx_hash)  # stored, then broadcast
    rpc(sim_venue, "evm_mine")
    return replacement


def mint_events(operation: Operation) -> list:
    from inventory.domain import mint

    return [s.event for s in step_events(mint.SPEC, operation.aggregate_id)]


def is_kind(event, kind) -> bool:
    """`kind`: an event class, or [class, purpose] for a transaction lifecycle event."""
    if isinstance(kind, list):
        return isinstance(event, kind[0]) and event.purpose == kind[1]
    return isinstance(event, kind)


def one_of(events_: list, kind):
    [found] = [e for e in events_ if is_kind(e, kind)]
    return found


def revoke_vault_allowance(sim_venue: SimVenue, venues: Venues, token: str) -> None:
    """Our wallet approves the order book for nothing: the next mint signs an approval."""
    chains = sim_venue.chains
    chains.transact(
        chains.base,
        chains.market_maker,
        to=token,
        data=chains.encode("MintableERC20", "approve", venues.config.base_orderbook, 0),
    )


def mint_state(operation: Operation):
    from inventory.domain import mint

    return aggregate_load(mint.SPEC, operation.aggregate_id).state.value


def advance_mint_to_a_broadcast_approval(
    sim_venue: SimVenue, operation: Operation, venues: Venues
) -> None:
    """With Base mining on demand: blocks for the sim's own mint until our approval is signed,
    stored and broadcast; it waits in the mempool."""
    from inventory.domain import mint

    def approval_stored() -> bool:
        state = mint_state(operation)
        return isinstance(state, mint.TokensReceived) and state.approval_tx_hash is not None

    deadline = time.monotonic() + 120
    while True:
        operation_advance(operation_id=operation.pk, venues=venues)
        if approval_stored():
            return
        assert time.monotonic() < deadline, mint_events(operation)
        rpc(sim_venue, "evm_mine")
        time.sleep(0.1)


def test_a_mint_whose_vault_approval_and_deposit_get_stuck_replaces_both_and_completes(
    sim_venue, venues, sim_assets
):
    from inventory.domain import mint
    from tests.operations.test_mint_workflow import vault_balance

    base = venues.base
    quick = quick_replacing(venues, 0.5)
    token = sim_assets["AAPL"]
    revoke_vault_allowance(sim_venue, venues, token)
    chains = sim_venue.chains
    wallet_before = chains.balance(chains.base, token, base.address)
    vault_before = vault_balance(sim_venue, venues, "AAPL")
    nonce_before = base.mined_nonce()
    operation = operation_create(kind=OperationKind.MINT, pool="AAPL", amount=Decimal("1.5"))
    assert operation is not None

    def state():
        return mint_state(operation)

    def log() -> list:
        return mint_events(operation)

    with base_mines_on_demand(sim_venue):
        # Broadcast with the usual patience (a loaded machine may take seconds to get there),
        # then stuck; the worker then replaces after half a second.
        advance_mint_to_a_broadcast_approval(sim_venue, operation, venues)
        approval = one_of(mint_events(operation), ev.VaultApprovalSigned)
        approval_2 = stuck_then_replaced(
            sim_venue, operation, quick, approval, replaced_as(ev.TxPurpose.APPROVE_VAULT), log
        )

        advance_until(
            operation,
            venues,
            lambda: isinstance(state(), mint.VaultDepositSubmitted),
            "the deposit signed once the approval is mined",
        )
        deposit = one_of(mint_events(operation), ev.VaultDepositSubmitted)
        deposit_2 = stuck_then_replaced(
            sim_venue, operation, quick, deposit, replaced_as(ev.TxPurpose.VAULT_DEPOSIT), log
        )

    advance_until_finished(operation, venues)

    operation.refresh_from_db()
    assert operation.status == OperationStatus.COMPLETED, operation.failure_reason
    assert [type(e).__name__ for e in mint_events(operation)] == [
        "MintRequested",
        "MintAccepted",
        "TokensReceived",
        "VaultApprovalSigned",
        "TransactionReplaced",
        "VaultDepositSubmitted",
        "TransactionReplaced",
        "DepositedIntoVault",
    ]
    assert one_of(mint_events(operation), ev.DepositedIntoVault).tx_hash == deposit_2.tx_hash
    # Exactly one of each same-nonce pair was mined: two transactions of ours, not four.
    assert base.receipt(approval.tx_hash) is None and base.receipt(approval_2.tx_hash).succeeded
    assert base.receipt(deposit.tx_hash) is None and base.receipt(deposit_2.tx_hash).succeeded
    assert base.mined_nonce() - nonce_before == 2
    # The tokens moved into the vault once.
    assert vault_balance(sim_venue, venues, "AAPL") - vault_before == 1_500_000_000_000_000_000
    assert chains.balance(chains.base, token, base.address) == wallet_before


def redemption_units_moved(sim_venue, venues, token: str) -> tuple[int, int]:
    from tests.operations.test_workers_e2e import equity_vault_units

    chains = sim_venue.chains
    return (
        equity_vault_units(sim_venue, "MSFT"),
        chains.balance(chains.base, token, venues.redemption_wallet),
    )


def test_a_redemption_whose_vault_withdraw_gets_stuck_replaces_it_and_completes(
    sim_venue, venues, sim_assets
):
    base = venues.base
    quick = quick_replacing(venues, 0.5)
    token = sim_assets["MSFT"]
    operation = new_redemption(sim_venue, venues, token)
    vault_before, redeemed_before = redemption_units_moved(sim_venue, venues, token)
    nonce_before = base.mined_nonce()

    with base_mines_on_demand(sim_venue):
        assert operation_advance(operation_id=operation.pk, venues=venues).outcome == "waiting"
        withdraw = one_of(events(operation), ev.VaultWithdrawSigned)
        withdraw_2 = stuck_then_replaced(
            sim_venue,
            operation,
            quick,
            withdraw,
            replaced_as(ev.TxPurpose.VAULT_WITHDRAW),
            lambda: events(operation),
        )

    advance_until_finished(operation, venues)

    operation.refresh_from_db()
    assert operation.status == OperationStatus.COMPLETED, operation.failure_reason
    assert [type(e).__name__ for e in events(operation)] == [
        "VaultWithdrawSigned",
        "TransactionReplaced",
        "WithdrawnFromVault",
        "TransferSigned",
        "TokensSent",
        "Detected",
        "Completed",
    ]
    assert one_of(events(operation), ev.WithdrawnFromVault).tx_hash == withdraw_2.tx_hash
    assert base.receipt(withdraw.tx_hash) is None and base.receipt(withdraw_2.tx_hash).succeeded
    assert base.mined_nonce() - nonce_before == 2  # the withdrawal once, then the transfer
    vault_after, redeemed_after = redemption_units_moved(sim_venue, venues, token)
    assert (vault_before - vault_after, redeemed_after - redeemed_before) == (2 * UNIT, 2 * UNIT)


def test_a_worker_resuming_after_storing_a_vault_withdraw_replacement_sends_those_bytes(
    sim_venue, venues, sim_assets
):
    """A worker stored the replacement and died before broadcasting it: the next one sends the
    stored replacement (not a third transaction signed with other fees)."""
    base = venues.base
    token = sim_assets["MSFT"]
    operation = new_redemption(sim_venue, venues, token)
    vault_before, redeemed_before = redemption_units_moved(sim_venue, venues, token)

    with base_mines_on_demand(sim_venue):
        assert operation_advance(operation_id=operation.pk, venues=venues).outcome == "waiting"
        withdraw = one_of(events(operation), ev.VaultWithdrawSigned)
        make_stuck(sim_venue, venues, withdraw.raw_tx, withdraw.tx_hash)
        replacement = base.build_replacement(withdraw.raw_tx)
        aggregate_execute(
            spec=redemption.SPEC,
            aggregate_id=operation.aggregate_id,
            command=onchain_tx.ReplaceTransaction(
                ev.TxPurpose.VAULT_WITHDRAW, raw_tx=replacement.raw, tx_hash=replacement.tx_hash
            ),
            metadata={"operation_id": operation.pk, "actor": "worker"},
        )
        assert not base.transaction_known(replacement.tx_hash)  # died before broadcasting

        assert operation_advance(operation_id=operation.pk, venues=venues).outcome == "waiting"
        assert base.transaction_known(replacement.tx_hash)
        rpc(sim_venue, "evm_mine")

    advance_until_finished(operation, venues)

    operation.refresh_from_db()
    assert operation.status == OperationStatus.COMPLETED, operation.failure_reason
    replacements = [e for e in events(operation) if isinstance(e, ev.TxReplacedFields)]
    assert [e.tx_hash for e in replacements] == [replacement.tx_hash]
    assert one_of(events(operation), ev.WithdrawnFromVault).tx_hash == replacement.tx_hash
    assert base.receipt(withdraw.tx_hash) is None
    vault_after, redeemed_after = redemption_units_moved(sim_venue, venues, token)
    assert (vault_before - vault_after, redeemed_after - redeemed_before) == (2 * UNIT, 2 * UNIT)


def test_force_fail_with_the_vault_approval_in_the_mempool_is_refused_then_the_mint_goes_on(
    sim_venue, venues, sim_assets
):
    """Failed and left behind, an approval in the mempool would hold our next nonce, and every
    later transaction behind it, with no worker left to replace it."""
    from operations.operator import OperatorError, operator_force_fail

    revoke_vault_allowance(sim_venue, venues, sim_assets["AAPL"])
    operation = operation_create(kind=OperationKind.MINT, pool="AAPL", amount=Decimal("1"))
    assert operation is not None

    with base_mines_on_demand(sim_venue):
        advance_mint_to_a_broadcast_approval(sim_venue, operation, venues)
        with pytest.raises(OperatorError, match="mempool"):
            operator_force_fail(operation_id=operation.pk, reason="x", actor="alice", venues=venues)
        rpc(sim_venue, "evm_mine")

    advance_until_finished(operation, venues)
    operation.refresh_from_db()
    assert operation.status == OperationStatus.COMPLETED, operation.failure_reason
    assert mint_events(operation)[-1].tx_hash is not None  # DepositedIntoVault names it

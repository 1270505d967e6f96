"""Redemption workflow against the simulated venue (real DB, chains and clients, in-process)."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest
from django.utils import timezone

from inventory.domain import redemption
from inventory.store import aggregate_load
from operations.models import ChainNonce, Operation, OperationKind, OperationStatus
from operations.services import operation_create
from operations.venues import Venues
from operations.workflows import operation_advance
from operations.workflows.context import StepContext, decode_signed
from tests.operations.conftest import (
    FAST_KNOBS,
    advance_until_finished,
    step_events,
    unvalidated_operation,
)
from venues.sim.venue import equity_vault_id

pytestmark = [pytest.mark.django_db, pytest.mark.chain]

UNIT = 10**18


MSFT_VAULT_ID = bytes.fromhex(equity_vault_id("MSFT")[2:])


@pytest.fixture
def funded(sim_venue, venues, sim_assets) -> dict[str, str]:
    """Put MSFT tokens into our MSFT vault (onchain inventory) and some in the wallet for the
    trigger-era paths that start from the wallet."""
    chains = sim_venue.chains
    chains.mint(chains.base, sim_assets["MSFT"], venues.market_maker_wallet, 1_010 * UNIT)
    chains.vault_deposit(chains.market_maker, sim_assets["MSFT"], MSFT_VAULT_ID, 1_000 * UNIT)
    return sim_assets


def msft_vault_units(sim_venue, venues, token: str) -> int:
    return sim_venue.chains.vault_balance(venues.market_maker_wallet, token, MSFT_VAULT_ID)


def new_redemption(token: str, amount: str = "4", symbol: str = "MSFT") -> Operation:
    operation = operation_create(
        kind=OperationKind.REDEMPTION, pool=symbol, amount=Decimal(amount), token_address=token
    )
    assert operation is not None
    return operation


def event_types(operation: Operation) -> list[str]:
    return [type(s.event).__name__ for s in step_events(redemption.SPEC, operation.aggregate_id)]


def transfers_to_redemption(sim_venue, venues, token: str, from_block: int) -> list:
    return venues.base.erc20_transfers(
        token=token,
        from_block=from_block,
        to=venues.redemption_wallet,
        from_=venues.market_maker_wallet,
    )


def test_redemption_completes_with_exactly_one_transfer_matched_by_tx_hash(
    sim_venue, venues, funded
):
    token = funded["MSFT"]
    start = venues.base.block_number()
    vault_before = msft_vault_units(sim_venue, venues, token)
    wallet_before = sim_venue.chains.balance(
        sim_venue.chains.base, token, venues.market_maker_wallet
    )
    operation = new_redemption(token, "4.25")

    advance_until_finished(operation, venues)

    assert operation.status == OperationStatus.COMPLETED
    assert event_types(operation) == [
        "VaultWithdrawSigned",
        "WithdrawnFromVault",
        "TransferSigned",
        "TokensSent",
        "Detected",
        "Completed",
    ]
    transfers = transfers_to_redemption(sim_venue, venues, token, start)
    assert [t.amount_units for t in transfers] == [4_250_000_000_000_000_000]
    # The tokens came out of the vault (onchain inventory), not from the wallet's own balance.
    assert vault_before - msft_vault_units(sim_venue, venues, token) == 4_250_000_000_000_000_000
    assert (
        sim_venue.chains.balance(sim_venue.chains.base, token, venues.market_maker_wallet)
        == wallet_before
    )
    state = aggregate_load(redemption.SPEC, operation.aggregate_id).state.value
    assert state.tx_hash.lower() == transfers[0].tx_hash.lower()


def test_redemption_signed_but_not_broadcast_rebroadcasts_the_same_bytes(sim_venue, venues, funded):
    """A worker died after recording the signed transfer: the resume sends those bytes."""
    token = funded["MSFT"]
    start = venues.base.block_number()
    operation = new_redemption(token, "1")
    ctx = StepContext(
        operation=operation, venues=venues, spec=redemption.SPEC, lease_token="", lease_s=5
    )
    base = venues.base
    signed = ctx.sign_and_record(
        chain=base,
        build=lambda nonce: base.build_erc20_transfer(
            token=token, to=venues.redemption_wallet, amount_units=UNIT, nonce=nonce
        ),
        command=lambda s: redemption.SignTransfer(
            symbol="MSFT",
            quantity=Decimal(1),
            token=token,
            redemption_wallet=venues.redemption_wallet,
            raw_tx=s.raw,
            tx_hash=s.tx_hash,
        ),
        label="transfer",
    )
    assert base.receipt(signed.tx_hash) is None  # nothing left the process

    advance_until_finished(operation, venues)

    assert operation.status == OperationStatus.COMPLETED
    transfers = transfers_to_redemption(sim_venue, venues, token, start)
    assert [t.tx_hash.lower() for t in transfers] == [signed.tx_hash.lower()]


def test_redemption_whose_signed_transfer_died_fails_the_transfer_and_releases_the_guard(
    sim_venue, venues, funded
):
    token = funded["MSFT"]
    start = venues.base.block_number()
    operation = new_redemption(token, "1")
    ctx = StepContext(
        operation=operation, venues=venues, spec=redemption.SPEC, lease_token="", lease_s=5
    )
    base = venues.base
    signed = ctx.sign_and_record(
        chain=base,
        build=lambda nonce: base.build_erc20_transfer(
            token=token, to=venues.redemption_wallet, amount_units=UNIT, nonce=nonce
        ),
        command=lambda s: redemption.SignTransfer(
            symbol="MSFT",
            quantity=Decimal(1),
            token=token,
            redemption_wallet=venues.redemption_wallet,
            raw_tx=s.raw,
            tx_hash=s.tx_hash,
        ),
        label="transfer",
    )
    # Another transaction takes that nonce (e.g. an operator's manual send).
    chains = sim_venue.chains
    chains.transfer(chains.base, token, chains.market_maker, chains.deployer.address, 1)

    advance_until_finished(operation, venues)

    assert operation.status == OperationStatus.FAILED
    assert event_types(operation) == ["TransferSigned", "TransferFailed"]
    assert f"nonce {signed.nonce}" in operation.failure_reason
    assert transfers_to_redemption(sim_venue, venues, token, start) == []
    assert new_redemption(token, "1") is not None  # guard released


def test_nonces_are_allocated_past_both_the_stored_and_the_chain_pending_value(
    sim_venue, venues, funded
):
    base = venues.base
    ChainNonce.objects.create(
        chain_id=base.chain_id, address=base.address.lower(), next_nonce=0
    )  # stale, behind the chain
    operation = new_redemption(funded["MSFT"], "1")
    pending = base.pending_nonce()
    operation_advance(operation_id=operation.pk, venues=venues)
    events = [s.event for s in step_events(redemption.SPEC, operation.aggregate_id)]
    signed = [decode_signed(e.raw_tx) for e in events if hasattr(e, "raw_tx")]
    # The vault withdrawal first, then (if the advance got that far) the transfer.
    assert signed[0] == (base.chain_id, pending)
    assert [nonce for _, nonce in signed] == list(range(pending, pending + len(signed)))
    assert ChainNonce.objects.get(chain_id=base.chain_id).next_nonce == pending + len(signed)


@pytest.mark.parametrize(
    ("amount", "rule"), [("-3", "negative"), ("0.0000000000000000001", "below one unit")]
)
def test_redemption_with_unconvertible_amount_is_logged_and_skipped_others_continue(
    sim_venue, venues, funded, amount, rule, caplog
):
    token = funded["MSFT"]
    bad = unvalidated_operation("redemption", "MSFT", amount, token)  # refused by create
    good = operation_create(kind=OperationKind.MINT, pool="AAPL", amount=Decimal(1))
    assert good is not None

    result = operation_advance(operation_id=bad.pk, venues=venues)
    bad.refresh_from_db()
    assert result.outcome == "done"
    assert bad.status == OperationStatus.FAILED
    assert rule in bad.failure_reason
    assert event_types(bad) == []
    assert any(r.levelname == "ERROR" and str(bad.pk) in r.getMessage() for r in caplog.records)

    advance_until_finished(good, venues)
    assert good.status == OperationStatus.COMPLETED


def test_redemption_of_more_than_the_vault_holds_fails_before_any_event(sim_venue, venues, funded):
    operation = new_redemption(funded["MSFT"], "100000000")  # more than the vault holds
    advance_until_finished(operation, venues)
    assert operation.status == OperationStatus.FAILED
    assert event_types(operation) == []
    assert "less than the 100000000000000000000000000 to redeem" in operation.failure_reason


@pytest.mark.parametrize("refusal", ["rejected", "failed"])
def test_redemption_rejected_by_alpaca_keeps_inflight_for_an_operator(
    sim_venue, venues, funded, refusal
):
    sim_venue.server.set_knobs(redemption_reject_rate=1.0, refusal_status=refusal)
    try:
        operation = new_redemption(funded["MSFT"], "1")
        advance_until_finished(operation, venues)
    finally:
        sim_venue.server.set_knobs(redemption_reject_rate=0.0, refusal_status="rejected")
    assert operation.status == OperationStatus.FAILED
    assert event_types(operation)[-1] == "RedemptionRejected"
    assert operation.failure_reason == "Redemption rejected by Alpaca"
    assert operation.needs_attention
    assert redemption.can_reconcile(aggregate_load(redemption.SPEC, operation.aggregate_id).state)


def test_redemption_not_detected_in_time_fails_detection_keeping_inflight(
    sim_venue, venues, funded
):
    quick = Venues.from_config(
        dataclasses.replace(
            venues.config,
            workers=dataclasses.replace(venues.config.workers, redemption_detection_timeout_s=0.5),
        )
    )
    sim_venue.server.set_knobs(redemption_detect_delay_s=30.0)
    try:
        operation = new_redemption(funded["MSFT"], "1")
        advance_until_finished(operation, quick)
    finally:
        sim_venue.server.set_knobs(redemption_detect_delay_s=FAST_KNOBS.redemption_detect_delay_s)
    assert operation.status == OperationStatus.FAILED
    assert event_types(operation)[-1] == "DetectionFailed"
    assert "Detection polling failed" in operation.failure_reason
    assert redemption.can_reconcile(aggregate_load(redemption.SPEC, operation.aggregate_id).state)


def test_force_fail_after_alpaca_detected_the_transfer_records_the_detection_first(
    sim_venue, venues, funded
):
    """Tokens sent, our worker not yet polled: Alpaca already holds the redeem request. The
    force-fail asks Alpaca first and records it (before, it recorded "not detected")."""
    import time

    from operations.operator import operator_force_fail
    from operations.workflows.redemption import WORKFLOW

    operation = new_redemption(funded["MSFT"], "2")
    ctx = StepContext(
        operation=operation, venues=venues, spec=redemption.SPEC, lease_token="", lease_s=60
    )
    # Alpaca detects the transfer but does not complete the redemption before the operator
    # acts: the sim's fast 0.3 s could pass on a slow machine before the force-fail asks.
    sim_venue.server.set_knobs(redemption_complete_delay_s=3600.0)
    try:
        deadline = time.monotonic() + 180
        state = aggregate_load(redemption.SPEC, operation.aggregate_id).state
        while redemption.step_of(state) != redemption.RedemptionStep.TOKENS_SENT:
            assert time.monotonic() < deadline, event_types(operation)
            WORKFLOW.step(ctx)  # a Wait (transaction not mined yet) is simply stepped again
            state = aggregate_load(redemption.SPEC, operation.aggregate_id).state
        while venues.alpaca.find_redemption_by_tx(state.value.tx_hash) is None:
            assert time.monotonic() < deadline, "the sim never detected the transfer"
            time.sleep(0.1)

        failed = operator_force_fail(
            operation_id=operation.pk, reason="ticket 12", actor="alice", venues=venues
        )
    finally:
        sim_venue.server.set_knobs(
            redemption_complete_delay_s=FAST_KNOBS.redemption_complete_delay_s
        )

    assert failed.status == OperationStatus.FAILED
    assert failed.needs_attention  # the tokens stay inflight until reconciled
    assert event_types(operation)[-3:] == ["TokensSent", "Detected", "RedemptionRejected"]


def test_transfer_dead_after_the_vault_withdrawal_fails_keeping_inflight_for_an_operator(
    sim_venue, venues, funded
):
    """The tokens left the vault into our wallet; their transfer can never be mined (another
    transaction took its nonce): the redemption fails, the amount stays inflight, flagged."""
    from inventory.selectors import pool_inventory
    from inventory.services import snapshot_record

    token = funded["MSFT"]
    chains = sim_venue.chains
    web3 = chains.web3(chains.base)
    snapshot_record(
        fetched_at=timezone.now(),
        onchain_equity={"MSFT": Decimal(900)},
        offchain_equity={"MSFT": Decimal(100)},
    )
    operation = new_redemption(token, "2")
    web3.provider.make_request("evm_setAutomine", [False])
    try:
        assert operation_advance(operation_id=operation.pk, venues=venues).outcome == "waiting"
        web3.provider.make_request("evm_mine", [])  # the vault withdrawal
        assert operation_advance(operation_id=operation.pk, venues=venues).outcome == "waiting"
        state = aggregate_load(redemption.SPEC, operation.aggregate_id).state.value
        assert isinstance(state, redemption.TransferPending) and state.withdrawn_from_vault
        # The transfer leaves the mempool and another transaction takes its nonce.
        web3.provider.make_request("anvil_dropTransaction", [state.tx_hash])
    finally:
        web3.provider.make_request("evm_setAutomine", [True])
    chains.transfer(chains.base, token, chains.market_maker, chains.deployer.address, 1)

    advance_until_finished(operation, venues)

    assert operation.status == OperationStatus.FAILED
    assert event_types(operation)[-2:] == ["TransferSigned", "TransferFailed"]
    assert operation.needs_attention
    assert redemption.can_reconcile(aggregate_load(redemption.SPEC, operation.aggregate_id).state)
    pool = pool_inventory(key="MSFT")
    assert (pool.onchain.available, pool.onchain.inflight) == (Decimal(898), Decimal(2))

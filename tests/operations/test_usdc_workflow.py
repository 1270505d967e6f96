"""USDC workflows (Alpaca -> Base, Base -> Alpaca) against the simulated venue: real DB, real
anvil chains, real HTTP clients, the runner in-process."""

from __future__ import annotations

import dataclasses
import threading
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from inventory.domain import events as ev
from inventory.domain import usdc
from inventory.domain.events import TxPurpose
from inventory.domain.units import usdc_to_units
from inventory.domain.values import RebalanceDirection
from inventory.selectors import pool_inventory
from inventory.store import aggregate_execute
from operations.models import ACTIVE_STATUSES, ChainNonce, Operation, OperationStatus
from operations.operator import OperatorError, operator_force_fail, operator_reconcile
from operations.venues import Venues
from operations.workflows import operation_advance
from operations.workflows.base import Continue, Done
from operations.workflows.context import decode_signed, signed_from_raw
from operations.workflows.usdc import ALPACA_WITHDRAWAL_SETTLE_S, WORKFLOW
from tests.operations.conftest import (
    advance_until_finished,
    config_from_env,
    unvalidated_operation,
)
from tests.operations.usdc_support import (
    A2B,
    B2A,
    EXACTLY_ONCE,
    USDC_UNIT,
    WITHDRAW_POST,
    EffectWatch,
    cctp_received,
    drain_usdc,
    drive_to,
    event_types,
    first_event,
    fund_vault,
    new_usdc,
    next_amount,
    order_of,
    step_context,
    step_once,
    usdc_events,
    usdc_state,
)
from tests.service.flows import observe
from venues.sim.server import FAULT_5XX, FAULT_5XX_AFTER

pytestmark = [pytest.mark.django_db, pytest.mark.chain]

S = usdc.UsdcStep
A2B_EVENTS = [
    "Requested",
    "ConversionInitiated",  # issue 20: USD cash buys USDC before the withdrawal
    "ConversionConfirmed",
    "Initiated",
    "WithdrawalConfirmed",
    "BridgingInitiated",
    "BridgeAttestationReceived",
    "Bridged",
    "DepositInitiated",
    "DepositConfirmed",
]
B2A_EVENTS = [
    "Requested",
    "Initiated",
    "WithdrawalConfirmed",
    "BridgingInitiated",
    "BridgeAttestationReceived",
    "Bridged",
    "DepositInitiated",
    "ConversionInitiated",  # issue 20: the deposited USDC is sold for USD
    "ConversionConfirmed",
    "DepositConfirmed",
]


def business_events(operation) -> list[str]:
    """Event types without the transaction records (TransactionSigned, TransactionReplaced)."""
    return [
        t for t in event_types(operation) if t not in ("TransactionSigned", "TransactionReplaced")
    ]


def signed_purposes(operation) -> list[str]:
    return [str(e.purpose) for e in usdc_events(operation) if isinstance(e, ev.TransactionSigned)]


def with_timeouts(venues: Venues, **changes) -> Venues:
    workers = dataclasses.replace(venues.config.workers, **changes)
    return Venues(config=dataclasses.replace(venues.config, workers=workers))


@pytest.fixture
def knobs(sim_venue):
    """Change sim knobs for one test; restored afterwards."""
    before = sim_venue.server.knobs
    yield sim_venue.server.set_knobs
    sim_venue.server.set_knobs(**dataclasses.asdict(before))


# --- happy paths and inventory (B6) -----------------------------------------------------------


def test_alpaca_to_base_completes_once_each_and_settles_inventory_with_fees(
    sim_venue, venues, knobs
):
    knobs(withdrawal_network_fee_usdc=Decimal("0.5"))
    observe(usdc_onchain="1000", usdc_offchain="1000")
    vault_id = bytes.fromhex(sim_venue.usdc_vault_id[2:])
    chains = sim_venue.chains
    vault_before = chains.vault_balance(venues.market_maker_wallet, chains.base.usdc, vault_id)
    cash_before = sim_venue.server.cash()
    watch = EffectWatch.start(sim_venue, venues)
    operation = new_usdc(A2B, "100")

    advance_until_finished(operation, venues)

    assert operation.status == OperationStatus.COMPLETED, operation.failure_reason
    assert business_events(operation) == A2B_EVENTS
    assert watch.effects(A2B) == EXACTLY_ONCE[A2B]
    state = usdc_state(operation).value
    # Alpaca's 0.5 network fee, then CCTP's 1 bp fast fee on the 99.5 burned.
    assert state.amounts.withdrawal_received == Decimal("99.5")
    assert state.amounts.withdrawal_fee == Decimal("0.5")
    assert state.amounts.burn_amount == Decimal("99.5")
    assert state.amounts.max_fee == Decimal("0.00995")
    assert state.amounts.bridged_received == Decimal("99.49005")
    assert state.amounts.bridge_fee == Decimal("0.00995")
    assert state.amounts.deposited == Decimal("99.49005")
    vault_after = chains.vault_balance(venues.market_maker_wallet, chains.base.usdc, vault_id)
    assert vault_after - vault_before == 99_490_050
    assert cash_before - sim_venue.server.cash() == Decimal(100)
    pool = pool_inventory(key="USDC")
    assert pool.offchain.available == Decimal(900)
    assert pool.offchain.inflight == 0  # the full amount left Alpaca
    assert pool.onchain.available == Decimal("1099.49005")  # credited what arrived
    assert pool.onchain.inflight == 0
    # The burn and the vault deposit needed standing approvals, recorded before broadcast.
    assert set(signed_purposes(operation)) >= {"burn", "mint", "vault_deposit"}


def test_alpaca_to_base_buys_usdc_at_the_spread_and_withdraws_exactly_what_it_bought(
    sim_venue, venues, knobs
):
    """Issue 20: USD cash is not USDC. The move buys USDCUSD for the requested USD (recorded
    before and after), withdraws the USDC received floored to 6 decimals, and the cost lost to
    the spread is on the record; the pool counts what arrived."""
    knobs(usdc_spread_bps=Decimal(20))  # buys at 1.001
    observe(usdc_onchain="1000", usdc_offchain="1000")
    cash_before = sim_venue.server.cash()
    usdc_before = sim_venue.server.usdc_position()
    # 250: an amount no other test withdraws (the withdrawal lookup matches by amount, and the
    # tests share one sim Alpaca whose earlier withdrawals are unclaimed once rolled back).
    operation = new_usdc(A2B, "250")

    advance_until_finished(operation, venues)

    assert operation.status == OperationStatus.COMPLETED, operation.failure_reason
    events = usdc_events(operation)
    started = first_event(events, ev.ConversionInitiated)
    filled = first_event(events, ev.ConversionConfirmed)
    withdrawn = first_event(events, ev.Initiated)
    assert (started.side, started.amount) == ("buy", Decimal(250))
    assert started.client_order_id == f"usdc-buy-{operation.aggregate_id}"
    assert filled.filled_avg_price == Decimal("1.001")
    assert filled.filled_qty == Decimal("249.750249750")
    assert (filled.usdc_amount, filled.usd_amount) == (Decimal("249.750249"), Decimal(250))
    assert filled.cost == Decimal("0.249751")
    assert withdrawn.amount == Decimal("249.750249")
    assert cash_before - sim_venue.server.cash() == Decimal(250)
    # The sub-micro-USDC dust of the fill stays in the position.
    assert sim_venue.server.usdc_position() - usdc_before == Decimal("0.000000750")
    orders = [
        o for o in sim_venue.server.orders() if o["client_order_id"] == started.client_order_id
    ]
    assert len(orders) == 1  # one order, placed once
    pool = pool_inventory(key="USDC")
    assert pool.offchain.available == Decimal(750)
    assert pool.offchain.inflight == 0
    assert pool.onchain.available == Decimal(1000) + usdc_state(operation).value.amounts.deposited


def test_alpaca_to_base_with_a_partial_buy_withdraws_what_it_bought_and_keeps_the_rest_counted(
    sim_venue, venues, knobs
):
    """A USDCUSD buy Alpaca fills only in part (the rest canceled): the move withdraws exactly
    the USDC bought (floored to 6 decimals), records `partial` and the cost, and the USD the
    buy did not spend is still counted at Alpaca: nothing lost, nothing counted twice."""
    knobs(usdc_spread_bps=Decimal(20), usdc_fill_fraction=Decimal("0.5"))  # buys at 1.001
    observe(usdc_onchain="1000", usdc_offchain="1000")
    cash_before = sim_venue.server.cash()
    usdc_before = sim_venue.server.usdc_position()
    # 320: an amount no other test withdraws (the withdrawal lookup matches by amount).
    operation = new_usdc(A2B, "320")

    advance_until_finished(operation, venues)

    assert operation.status == OperationStatus.COMPLETED, operation.failure_reason
    assert business_events(operation) == A2B_EVENTS
    events = usdc_events(operation)
    started = first_event(events, ev.ConversionInitiated)
    filled = first_event(events, ev.ConversionConfirmed)
    withdrawn = first_event(events, ev.Initiated)
    order = order_of(sim_venue, started.client_order_id)
    assert order["status"] == "canceled"
    assert Decimal(order["filled_qty"]) == Decimal("159.840159840")  # $160 at 1.001
    assert filled.partial is True
    assert filled.filled_qty == Decimal("159.840159840")
    assert (filled.usdc_amount, filled.usd_amount) == (Decimal("159.840159"), Decimal(160))
    assert filled.cost == Decimal("0.159841")
    assert withdrawn.amount == Decimal("159.840159")
    assert cash_before - sim_venue.server.cash() == Decimal(160)  # the other $160 stayed
    assert sim_venue.server.usdc_position() - usdc_before == Decimal("0.000000840")
    amounts = usdc_state(operation).value.amounts
    pool = pool_inventory(key="USDC")
    assert pool.offchain.inflight == 0
    assert pool.onchain.inflight == 0
    assert pool.offchain.available == Decimal(840)  # only the USD spent left Alpaca
    assert pool.onchain.available == Decimal(1000) + amounts.deposited
    # Money-exact: the pools lost only the spread and the fees on the way.
    lost = filled.cost + (withdrawn.amount - amounts.deposited)
    assert pool.offchain.available + pool.onchain.available == Decimal(2000) - lost


def test_base_to_alpaca_with_a_partial_sale_keeps_the_unsold_usdc_counted_at_alpaca(
    sim_venue, venues, knobs
):
    """A sale of the deposited USDC Alpaca fills only in part: the move completes, the USD
    received and the USDC left unsold are both counted at Alpaca (the pool's offchain side
    counts cash and the USDC position), exactly what sits there."""
    # Sells at 0.999; 0.4444444444 of the deposit fills, a quantity of 9 decimals.
    knobs(usdc_spread_bps=Decimal(20), usdc_fill_fraction=Decimal("0.4444444444"))
    fund_vault(sim_venue, venues, "200")
    observe(usdc_onchain="1000", usdc_offchain="1000")
    cash_before = sim_venue.server.cash()
    usdc_before = sim_venue.server.usdc_position()
    operation = new_usdc(B2A, "150")

    advance_until_finished(operation, venues)

    assert operation.status == OperationStatus.COMPLETED, operation.failure_reason
    assert business_events(operation) == B2A_EVENTS
    events = usdc_events(operation)
    started = first_event(events, ev.ConversionInitiated)
    filled = first_event(events, ev.ConversionConfirmed)
    confirmed = first_event(events, ev.DepositConfirmed)
    assert (started.side, started.amount) == ("sell", Decimal("149.985"))
    order = order_of(sim_venue, started.client_order_id)
    assert (order["status"], order["qty"]) == ("canceled", "149.985")
    assert filled.partial is True
    assert filled.filled_qty == Decimal("66.659999993")
    # The USDC that left the position, counted up to the micro-USDC: the unsold rest is then
    # never counted above what is left (83.325000007 held, 83.325 counted).
    assert (filled.usdc_amount, filled.usd_amount) == (Decimal("66.66"), Decimal("66.593339"))
    assert filled.cost == Decimal("0.066661")
    cash_gained = sim_venue.server.cash() - cash_before
    usdc_gained = sim_venue.server.usdc_position() - usdc_before
    assert cash_gained == Decimal("66.593339")
    assert usdc_gained == Decimal("83.325000007")  # unsold, still at Alpaca
    assert confirmed.amount_deposited == Decimal("149.918339")  # both, 6 decimals
    pool = pool_inventory(key="USDC")
    assert pool.onchain.available == Decimal(850)
    assert pool.onchain.inflight == 0
    assert pool.offchain.inflight == 0
    assert pool.offchain.available == Decimal("1149.918339")
    assert pool.offchain.available <= Decimal(1000) + cash_gained + usdc_gained
    # Money-exact: the pools lost only the bridge's fee and the recorded conversion cost.
    amounts = usdc_state(operation).value.amounts
    lost = (Decimal(150) - amounts.bridged_received) + filled.cost
    assert pool.offchain.available + pool.onchain.available == Decimal(2000) - lost


def test_a_fill_fraction_outside_zero_to_one_is_refused_by_the_sim(sim_venue):
    for bad in (Decimal(0), Decimal("1.5"), 0.5):
        with pytest.raises(ValueError, match="usdc_fill_fraction"):
            sim_venue.server.set_knobs(usdc_fill_fraction=bad)
    assert sim_venue.server.knobs.usdc_fill_fraction == Decimal(1)


def test_managed_vaults_move_through_the_raindex_inventory_that_owns_them(sim_venue, worker_env):
    """Issue 20 (spec 15.6): with RAINDEX_INVENTORY set, Base-to-Alpaca withdraws from the
    inventory's USDC vault by calling withdraw4 on the inventory as its operator, and
    Alpaca-to-Base deposits back into it the same way."""
    chains = sim_venue.chains
    base = chains.base
    wallet = sim_venue.market_maker.address
    inventory = chains.deploy_inventory(operators=(wallet,))
    managed = Venues.from_config(config_from_env({**worker_env, "RAINDEX_INVENTORY": inventory}))
    vault_id = bytes.fromhex(sim_venue.usdc_vault_id[2:])
    chains.mint_usdc(base, wallet, 200_000_000)
    managed.base.send(
        managed.base.build_erc20_approve(
            token=base.usdc, spender=inventory, amount_units=200_000_000
        )
    )
    managed.base.send(
        managed.base.build_vault_deposit(
            vault=inventory, token=base.usdc, vault_id=vault_id, amount_units=200_000_000
        )
    )
    observe(usdc_onchain="1000", usdc_offchain="1000")

    out = new_usdc(B2A, "150")
    advance_until_finished(out, managed)
    # An amount next_amount() never hands out: the withdrawal lookup matches by amount.
    back = new_usdc(A2B, "55.5")
    advance_until_finished(back, managed)

    assert out.status == OperationStatus.COMPLETED, out.failure_reason
    assert back.status == OperationStatus.COMPLETED, back.failure_reason
    deposited = usdc_state(back).value.amounts.deposited
    held = chains.vault_balance(inventory, base.usdc, vault_id)
    assert held == 50_000_000 + usdc_to_units(deposited)
    withdraw = next(e for e in usdc_events(out) if isinstance(e, ev.TransactionSigned))
    assert withdraw.purpose == TxPurpose.VAULT_WITHDRAW


def test_base_to_alpaca_sends_usdc_to_the_deposit_address_and_sells_it_for_cash(sim_venue, venues):
    fund_vault(sim_venue, venues, "200")
    observe(usdc_onchain="1000", usdc_offchain="1000")
    chains = sim_venue.chains
    deposit_before = chains.balance(
        chains.ethereum, chains.ethereum.usdc, sim_venue.deposit_address
    )
    cash_before = sim_venue.server.cash()
    watch = EffectWatch.start(sim_venue, venues)
    operation = new_usdc(B2A, "150")

    advance_until_finished(operation, venues)

    assert operation.status == OperationStatus.COMPLETED, operation.failure_reason
    assert business_events(operation) == B2A_EVENTS
    assert watch.effects(B2A) == EXACTLY_ONCE[B2A]
    state = usdc_state(operation).value
    assert state.amounts.withdrawal_received == Decimal(150)
    assert state.amounts.bridged_received == Decimal("149.985")  # 1 bp fast fee
    assert state.amounts.deposited == Decimal("149.985")
    # B12: the USDC really went to Alpaca's deposit address, and Alpaca credited it.
    deposit_after = chains.balance(chains.ethereum, chains.ethereum.usdc, sim_venue.deposit_address)
    assert deposit_after - deposit_before == 149_985_000
    assert sim_venue.server.cash() - cash_before == Decimal("149.985")
    deposit_ref = state.deposit_ref if hasattr(state, "deposit_ref") else None
    assert deposit_ref is None  # DepositConfirmed carries no ref; the event has it
    initiated = next(e for e in usdc_events(operation) if isinstance(e, ev.DepositInitiated))
    signed = {
        e.purpose: e.tx_hash for e in usdc_events(operation) if isinstance(e, ev.TransactionSigned)
    }
    assert initiated.deposit_ref.value == signed[TxPurpose.ALPACA_DEPOSIT]
    pool = pool_inventory(key="USDC")
    assert pool.onchain.available == Decimal(850)
    assert pool.onchain.inflight == 0
    assert pool.offchain.available == Decimal("1149.985")


# --- resume -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [A2B, B2A])
def test_a_fresh_worker_at_every_step_repeats_no_effect(sim_venue, venues, kind):
    """Each step runs in a new context (a new worker after a crash at the step boundary), and
    every step is attempted twice; side effects still happen exactly once."""
    if kind == B2A:
        fund_vault(sim_venue, venues, "80")
    watch = EffectWatch.start(sim_venue, venues)
    operation = new_usdc(kind, str(next_amount()))
    seen = []
    for _ in range(40):
        step = usdc.step_of(usdc_state(operation))
        seen.append(step)
        if step in usdc.TERMINAL_STEPS:
            break
        outcome = step_once(operation, venues)
        assert isinstance(outcome, Continue | Done), outcome
    assert usdc.step_of(usdc_state(operation)) == S.DEPOSIT_CONFIRMED, event_types(operation)
    assert watch.effects(kind) == EXACTLY_ONCE[kind]
    assert {S.REQUESTED, S.WITHDRAWAL_COMPLETE, S.BRIDGING, S.ATTESTED, S.BRIDGED} <= set(seen)


@pytest.mark.parametrize("kind", [A2B, B2A])
@pytest.mark.parametrize(
    "stop_at",
    [S.REQUESTED, S.WITHDRAWING, S.WITHDRAWAL_COMPLETE, S.BRIDGING, S.ATTESTED, S.BRIDGED],
)
def test_the_runner_resumes_from_each_state(sim_venue, venues, kind, stop_at):
    if kind == B2A:
        fund_vault(sim_venue, venues, "70")
    if kind == B2A and stop_at == S.WITHDRAWING:
        pytest.skip("Base -> Alpaca confirms the vault withdrawal with its Initiate")
    watch = EffectWatch.start(sim_venue, venues)
    operation = new_usdc(kind, str(next_amount()))
    drive_to(operation, venues, stop_at)
    advance_until_finished(operation, venues)
    assert operation.status == OperationStatus.COMPLETED, operation.failure_reason
    assert watch.effects(kind) == EXACTLY_ONCE[kind]


@pytest.mark.parametrize("kind", [A2B, B2A])
def test_a_burn_broadcast_before_a_crash_is_found_by_its_receipt_not_sent_again(
    sim_venue, venues, kind
):
    if kind == B2A:
        fund_vault(sim_venue, venues, "70")
    watch = EffectWatch.start(sim_venue, venues)
    operation = new_usdc(kind, str(next_amount()))
    drive_to(operation, venues, S.WITHDRAWAL_COMPLETE)
    while usdc.transaction_for(usdc_state(operation), TxPurpose.BURN) is None:
        step_once(operation, venues)
    stored = usdc.transaction_for(usdc_state(operation), TxPurpose.BURN)
    chain = venues.ethereum if kind == A2B else venues.base
    chain.broadcast(signed_from_raw(stored.raw_tx, stored.tx_hash))  # the worker then died
    chain.wait_for_receipt(stored.tx_hash, timeout_s=60, poll_s=0.1)

    advance_until_finished(operation, venues)

    assert operation.status == OperationStatus.COMPLETED
    assert watch.effects(kind) == EXACTLY_ONCE[kind]
    bridging = next(e for e in usdc_events(operation) if isinstance(e, ev.BridgingInitiated))
    assert bridging.burn_tx_hash == stored.tx_hash


def test_a_message_already_received_by_someone_else_is_confirmed_from_the_mint_logs(
    sim_venue, venues
):
    watch = EffectWatch.start(sim_venue, venues)
    operation = new_usdc(A2B, str(amount := next_amount()))
    drive_to(operation, venues, S.ATTESTED)
    attested = usdc_state(operation).value
    # Anyone may relay (destinationCaller is zero): a third party delivers the message first.
    chains = sim_venue.chains
    relayer = chains.new_account()
    chains.transact(
        chains.base,
        relayer,
        to=chains.base.message_transmitter,
        data=chains.encode(
            "MessageTransmitterV2", "receiveMessage", attested.message, attested.attestation
        ),
    )

    advance_until_finished(operation, venues)

    assert operation.status == OperationStatus.COMPLETED, operation.failure_reason
    assert watch.effects(A2B).mints == 1
    state = usdc_state(operation).value
    assert state.amounts.bridged_received == cctp_received(amount)
    assert TxPurpose.MINT not in state.transactions  # we never signed one


# --- unknown outcome of the withdrawal POST ---------------------------------------------------


@pytest.mark.parametrize("fault", [FAULT_5XX, FAULT_5XX_AFTER])
def test_withdrawal_post_with_unknown_outcome_is_found_not_repeated(sim_venue, venues, fault):
    watch = EffectWatch.start(sim_venue, venues)
    posts_before = sim_venue.server.request_count(WITHDRAW_POST)
    sim_venue.server.fail_next(WITHDRAW_POST, fault)
    operation = new_usdc(A2B, str(next_amount()))

    first = operation_advance(operation_id=operation.pk, venues=venues)
    assert first.outcome == "retry"
    operation.refresh_from_db()
    assert "outcome unknown" in operation.last_error
    assert business_events(operation) == [
        "Requested",
        "ConversionInitiated",
        "ConversionConfirmed",
    ]

    advance_until_finished(operation, venues)

    assert operation.status == OperationStatus.COMPLETED, operation.failure_reason
    assert watch.effects(A2B).withdrawals == 1
    posts = sim_venue.server.request_count(WITHDRAW_POST) - posts_before
    assert posts == (1 if fault == FAULT_5XX_AFTER else 2)


def test_a_withdrawal_post_without_answer_gets_time_to_land_before_a_second_post(sim_venue, venues):
    """The POST times out while Alpaca still holds it; it is carried out later. Looking for it
    at once would find nothing and post again (the money moved twice): the next attempt waits
    for it to land first, then adopts it."""
    watch = EffectWatch.start(sim_venue, venues)
    posts_before = sim_venue.server.request_count(WITHDRAW_POST)
    transfers_before = len(sim_venue.server.transfers())
    hold = sim_venue.server.hold_next(WITHDRAW_POST, timeout_s=120)
    operation = new_usdc(A2B, str(next_amount()))

    first = operation_advance(operation_id=operation.pk, venues=venues)  # the client times out
    assert first.outcome == "retry"
    assert first.wait_s is not None and first.wait_s >= ALPACA_WITHDRAWAL_SETTLE_S
    hold.release()  # Alpaca carries out the request it held
    deadline = time.monotonic() + 60
    while len(sim_venue.server.transfers()) == transfers_before:
        assert time.monotonic() < deadline, "the held withdrawal never landed"
        time.sleep(0.05)

    advance_until_finished(operation, venues)
    assert operation.status == OperationStatus.COMPLETED, operation.failure_reason
    assert watch.effects(A2B).withdrawals == 1
    assert sim_venue.server.request_count(WITHDRAW_POST) - posts_before == 1


@pytest.mark.django_db(transaction=True)
def test_a_worker_that_died_mid_withdrawal_post_gets_no_second_post_from_the_next_worker(
    sim_venue, venues
):
    """Chaos day finding: a worker's withdrawal POST was held by Alpaca, the worker was killed
    meanwhile, the sweep gave the operation to another worker, which found nothing at Alpaca
    yet and posted again: the money moved twice. The POST's moment is committed before it
    leaves, so the next worker waits for it to land and adopts it."""
    watch = EffectWatch.start(sim_venue, venues)
    posts_before = sim_venue.server.request_count(WITHDRAW_POST)
    transfers_before = len(sim_venue.server.transfers())
    hold = sim_venue.server.hold_next(WITHDRAW_POST, timeout_s=120)
    operation = new_usdc(A2B, str(next_amount()))
    dying = threading.Thread(
        target=lambda: operation_advance(operation_id=operation.pk, venues=venues), daemon=True
    )
    dying.start()
    assert hold.arrived.wait(60), "the first worker never sent its POST"
    # The first worker is gone: the sweep voids its lease and delivers the task again.
    Operation.objects.filter(pk=operation.pk).update(claimed_by="", claimed_until=None)

    second = operation_advance(operation_id=operation.pk, venues=venues)
    posts_while_held = sim_venue.server.request_count(WITHDRAW_POST) - posts_before
    hold.release()  # Alpaca carries out the request it held
    dying.join(60)
    deadline = time.monotonic() + 60
    while len(sim_venue.server.transfers()) == transfers_before:
        assert time.monotonic() < deadline, "the held withdrawal never landed"
        time.sleep(0.05)
    advance_until_finished(operation, venues)

    assert (second.outcome, posts_while_held) == ("retry", 1)
    assert operation.status == OperationStatus.COMPLETED, operation.failure_reason
    assert watch.effects(A2B).withdrawals == 1
    assert sim_venue.server.request_count(WITHDRAW_POST) - posts_before == 1


def test_the_withdrawal_post_carries_the_operations_idempotency_key(sim_venue, venues):
    # Amounts of these two tests are not whole: `next_amount` never gives them (the fixed
    # "100" of another test stays unique).
    operation = new_usdc(A2B, "57.25")
    advance_until_finished(operation, venues)
    assert operation.status == OperationStatus.COMPLETED, operation.failure_reason
    assert sim_venue.server.idempotency_keys(WITHDRAW_POST)[-1] == (
        f"usdc-withdrawal-{operation.aggregate_id}"
    )


def test_a_withdrawal_post_that_never_landed_is_held_for_an_operator_never_posted_again(
    sim_venue, venues
):
    """Issue 20: a POST that got no answer (its worker died before any answer) and is still
    not at Alpaca once the settle window has passed is not posted again by the service on
    its own: the operation is flagged for an operator with what the look-up found."""
    amount = Decimal("58.75")
    lost = new_usdc(A2B, str(amount))
    aggregate_execute(
        spec=usdc.SPEC,
        aggregate_id=lost.aggregate_id,
        command=usdc.Request(direction=RebalanceDirection.ALPACA_TO_BASE, amount=amount),
        now=timezone.now() - timedelta(seconds=ALPACA_WITHDRAWAL_SETTLE_S + 10),
    )
    # A POST was sent (its moment committed) and never answered nor carried out.
    sent_at = timezone.now() - timedelta(seconds=ALPACA_WITHDRAWAL_SETTLE_S + 5)
    Operation.objects.filter(pk=lost.pk).update(venue_request_at=sent_at)
    posts_before = sim_venue.server.request_count(WITHDRAW_POST)

    held = operation_advance(operation_id=lost.pk, venues=venues)

    lost.refresh_from_db()
    assert held.outcome == "attention", held
    assert lost.needs_attention and lost.status in ACTIVE_STATUSES
    assert "got no answer" in lost.last_error and "not posting again" in lost.last_error
    assert sim_venue.server.request_count(WITHDRAW_POST) == posts_before
    assert business_events(lost) == ["Requested"]


# --- refusals before anything moved (spec 13 test_execute_alpaca_to_base_*) --------------------


@pytest.mark.parametrize(
    ("whitelist", "expected"),
    [
        (None, "entry absent"),
        ("PENDING", "entry PENDING"),
        ("REJECTED", "entry REJECTED"),
    ],
    ids=["not_whitelisted", "pending_whitelist", "rejected_whitelist"],
)
def test_execute_alpaca_to_base_withdrawal_refused_when_address_not_approved(
    sim_venue, venues, whitelist, expected
):
    watch = EffectWatch.start(sim_venue, venues)
    sim_venue.server.whitelist_set(venues.market_maker_wallet, whitelist)
    amount = str(next_amount())  # the lookup matches by amount: one no other test used
    try:
        operation = new_usdc(A2B, amount)
        advance_until_finished(operation, venues)
    finally:
        sim_venue.server.whitelist_set(venues.market_maker_wallet, "APPROVED")
    assert operation.status == OperationStatus.FAILED
    assert business_events(operation) == ["Requested", "RequestFailed"]
    assert "not whitelisted" in operation.failure_reason
    assert expected in operation.failure_reason
    assert watch.effects(A2B).withdrawals == 0
    assert new_usdc(A2B, amount) is not None  # guard released


def test_execute_alpaca_to_base_api_error_fails_the_request(sim_venue, venues):
    cash = sim_venue.server.cash()
    sim_venue.server.set_cash(Decimal(10))  # Alpaca answers 403 insufficient balance
    amount = str(next_amount())  # the lookup matches by amount: one no other test used
    try:
        operation = new_usdc(A2B, amount)
        advance_until_finished(operation, venues)
    finally:
        sim_venue.server.set_cash(cash)
    assert operation.status == OperationStatus.FAILED
    # Issue 20: the USD -> USDC buy is refused (insufficient buying power): nothing moved.
    assert business_events(operation) == [
        "Requested",
        "ConversionInitiated",
        "ConversionFailed",
        "RequestFailed",
    ]
    assert "Alpaca API error: HTTP 403" in operation.failure_reason


def test_alpaca_to_base_under_the_minimum_withdrawal_fails_with_the_reason(sim_venue, venues):
    posts_before = sim_venue.server.request_count(WITHDRAW_POST)
    operation = new_usdc(A2B, "50.99")
    advance_until_finished(operation, venues)
    assert operation.status == OperationStatus.FAILED
    assert "below Alpaca's minimum withdrawal of 51 USDC" in operation.failure_reason
    assert sim_venue.server.request_count(WITHDRAW_POST) == posts_before


@pytest.mark.parametrize("kind", [A2B, B2A])
@pytest.mark.parametrize("amount", ["-5", "0", "0.0000001"])
def test_execute_negative_zero_or_underflowing_amount_fails_before_any_event(
    sim_venue, venues, kind, amount
):
    watch = EffectWatch.start(sim_venue, venues)
    operation = unvalidated_operation(kind, "USDC", amount)  # operation_create refuses it
    advance_until_finished(operation, venues)
    assert operation.status == OperationStatus.FAILED
    assert f"amount={Decimal(amount)}" in operation.failure_reason
    assert event_types(operation) == []
    assert watch.effects(kind) == dataclasses.replace(
        EXACTLY_ONCE[kind],
        withdrawals=0,
        burns=0,
        mints=0,
        vault_deposits=0,
        vault_withdrawals=0,
        alpaca_deposits=0,
    )


def test_base_to_alpaca_with_an_empty_vault_fails_the_request_nothing_inflight(sim_venue, venues):
    observe(usdc_onchain="1000", usdc_offchain="1000")
    chains = sim_venue.chains
    vault_id = bytes.fromhex(sim_venue.usdc_vault_id[2:])
    held = chains.vault_balance(venues.market_maker_wallet, chains.base.usdc, vault_id)
    operation = new_usdc(B2A, str(Decimal(held) / USDC_UNIT + 1000))  # more than the vault holds
    if held:
        # The vault pays min(target, balance): empty it first so nothing can move.
        base = venues.base
        signed = base.build_vault_withdraw(
            vault=sim_venue.vault,
            token=chains.base.usdc,
            vault_id=vault_id,
            target_amount_units=held,
        )
        base.send(signed)
    advance_until_finished(operation, venues)
    assert operation.status == OperationStatus.FAILED
    assert business_events(operation) == ["Requested", "RequestFailed"]
    assert "moved no USDC" in operation.failure_reason
    pool = pool_inventory(key="USDC")
    assert pool.onchain.inflight == 0


# --- failures after money moved (B5: failure events valid where the failure happens) ----------


def test_execute_base_to_alpaca_cctp_burn_fails_with_contract_error(sim_venue, venues):
    fund_vault(sim_venue, venues, "80")
    observe(usdc_onchain="1000", usdc_offchain="1000")
    operation = new_usdc(B2A, str(amount := next_amount()))
    drive_to(operation, venues, S.WITHDRAWAL_COMPLETE)
    drain_usdc(sim_venue, "base", venues.market_maker_wallet)  # the burn's transferFrom reverts

    advance_until_finished(operation, venues)

    assert operation.status == OperationStatus.FAILED
    assert business_events(operation)[-1] == "BridgingFailed"
    failed = usdc_state(operation).value
    assert failed.STEP == S.BRIDGING_FAILED
    assert failed.burn_tx_hash is None
    assert failed.reason.startswith("Burn failed:")
    assert operation.needs_attention
    assert pool_inventory(key="USDC").onchain.inflight == amount  # kept for the operator
    assert new_usdc(B2A, str(next_amount())) is not None  # guard released


def test_attestation_that_never_arrives_times_out_keeping_inflight(sim_venue, venues, knobs):
    knobs(attestation_never=True)
    observe(usdc_onchain="1000", usdc_offchain="1000")
    impatient = with_timeouts(venues, usdc_step_timeout_s=1.0)
    operation = new_usdc(A2B, str(amount := next_amount()))
    # Up to the burn at the usual timeouts: the 1 s one would also cut off the wait for the
    # sim's withdrawal (0.3 s) on a slow machine, a different failure than the one tested.
    drive_to(operation, venues, S.BRIDGING)

    advance_until_finished(operation, impatient)

    assert operation.status == OperationStatus.FAILED
    failed = usdc_state(operation).value
    assert failed.STEP == S.BRIDGING_FAILED
    assert failed.burn_tx_hash is not None  # the burn happened; its data is kept
    assert "Attestation polling failed" in failed.reason
    assert operation.needs_attention
    assert pool_inventory(key="USDC").offchain.inflight == amount
    reconcile = WORKFLOW.reconcile_command(
        step_context(operation, venues), reason="settled by hand", operator="ops"
    )
    assert reconcile == usdc.ReconcileUsdc(reason="settled by hand", operator="ops")


def test_vault_deposit_revert_ends_in_deposit_failed_from_bridged(sim_venue, venues):
    observe(usdc_onchain="1000", usdc_offchain="1000")
    operation = new_usdc(A2B, str(next_amount()))
    drive_to(operation, venues, S.BRIDGED)
    drain_usdc(sim_venue, "base", venues.market_maker_wallet)  # deposit4's transferFrom fails

    advance_until_finished(operation, venues)

    assert operation.status == OperationStatus.FAILED
    failed = usdc_state(operation).value
    assert failed.STEP == S.DEPOSIT_FAILED
    assert failed.deposit_ref is None
    assert failed.reason.startswith("Deposit failed:")
    assert operation.needs_attention
    assert new_usdc(A2B, str(next_amount())) is not None


def test_alpaca_withdrawal_that_fails_at_alpaca_ends_in_withdrawal_failed(sim_venue, venues, knobs):
    knobs(withdrawal_fail_rate=1.0)
    watch = EffectWatch.start(sim_venue, venues)
    operation = new_usdc(A2B, str(next_amount()))
    advance_until_finished(operation, venues)
    assert operation.status == OperationStatus.FAILED
    assert business_events(operation) == [
        "Requested",
        "ConversionInitiated",
        "ConversionConfirmed",
        "Initiated",
        "WithdrawalFailed",
    ]
    assert "FAILED" in operation.failure_reason
    assert watch.effects(A2B).burns == 0


def test_alpaca_deposit_not_credited_in_time_fails_the_deposit_for_an_operator(
    sim_venue, venues, knobs
):
    amount = next_amount()
    fund_vault(sim_venue, venues, str(amount))
    observe(usdc_onchain="1000", usdc_offchain="1000")
    knobs(deposit_credit_delay_s=3600.0)  # Alpaca sees the deposit but never credits it
    operation = new_usdc(B2A, str(amount))
    drive_to(operation, venues, S.DEPOSIT_INITIATED)

    advance_until_finished(operation, with_timeouts(venues, usdc_step_timeout_s=0.5))

    assert operation.status == OperationStatus.FAILED
    failed = usdc_state(operation).value
    assert failed.STEP == S.DEPOSIT_FAILED
    assert failed.deposit_ref is not None  # the transfer to Alpaca is on record
    assert "Deposit polling failed" in failed.reason
    assert operation.needs_attention
    # Issue 8: never credited by Alpaca, so the USDC stays inflight for the operator (the
    # bridge mint used to settle it and count it at Alpaca already).
    pool = pool_inventory(key="USDC")
    assert (pool.onchain.inflight, pool.offchain.available) == (amount, 1000)


# --- operator and give-up paths ---------------------------------------------------------------


def test_fail_in_each_live_state_records_a_valid_failure_event(sim_venue, venues):
    for stop_at, failure in [
        (S.REQUESTED, "RequestFailed"),
        (S.WITHDRAWING, "WithdrawalFailed"),
        (S.WITHDRAWAL_COMPLETE, "BridgingFailed"),
        (S.BRIDGING, "BridgingFailed"),
        (S.ATTESTED, "BridgingFailed"),
        (S.BRIDGED, "DepositFailed"),
    ]:
        operation = new_usdc(A2B, str(next_amount()))
        drive_to(operation, venues, stop_at)
        assert WORKFLOW.fail(step_context(operation, venues), reason="drill", actor="ops")
        operation.refresh_from_db()
        assert operation.status == OperationStatus.FAILED, stop_at
        assert business_events(operation)[-1] == failure, (stop_at, business_events(operation))
        assert "drill" in operation.failure_reason
        assert operation.finished_by == "ops"
        assert operation.needs_attention == (stop_at != S.REQUESTED)


def test_fail_after_an_unknown_withdrawal_outcome_records_the_withdrawal_and_keeps_inflight(
    sim_venue, venues
):
    observe(usdc_onchain="1000", usdc_offchain="1000")
    amount = next_amount()
    operation = new_usdc(A2B, str(amount))
    sim_venue.server.fail_next(WITHDRAW_POST, FAULT_5XX_AFTER)
    assert operation_advance(operation_id=operation.pk, venues=venues).outcome == "retry"

    assert WORKFLOW.fail(step_context(operation, venues), reason="give up", actor="system")

    operation.refresh_from_db()
    assert operation.status == OperationStatus.FAILED
    assert business_events(operation) == [
        "Requested",
        "ConversionInitiated",
        "ConversionConfirmed",
        "Initiated",
        "WithdrawalFailed",
    ]
    assert pool_inventory(key="USDC").offchain.inflight == amount
    assert operation.needs_attention


def test_fail_with_a_mined_but_unrecorded_burn_keeps_its_data(sim_venue, venues):
    operation = new_usdc(A2B, str(next_amount()))
    drive_to(operation, venues, S.WITHDRAWAL_COMPLETE)
    while usdc.transaction_for(usdc_state(operation), TxPurpose.BURN) is None:
        step_once(operation, venues)
    stored = usdc.transaction_for(usdc_state(operation), TxPurpose.BURN)
    venues.ethereum.send(signed_from_raw(stored.raw_tx, stored.tx_hash), timeout_s=60)

    assert WORKFLOW.fail(step_context(operation, venues), reason="give up", actor="system")

    failed = usdc_state(operation).value
    assert failed.STEP == S.BRIDGING_FAILED
    assert failed.burn_tx_hash == stored.tx_hash
    assert business_events(operation)[-2:] == ["BridgingInitiated", "BridgingFailed"]


def test_fail_with_a_never_broadcast_burn_gives_its_nonce_back(sim_venue, venues):
    operation = new_usdc(A2B, str(next_amount()))
    drive_to(operation, venues, S.WITHDRAWAL_COMPLETE)
    while usdc.transaction_for(usdc_state(operation), TxPurpose.BURN) is None:
        step_once(operation, venues)
    stored = usdc.transaction_for(usdc_state(operation), TxPurpose.BURN)
    chain_id, nonce = decode_signed(stored.raw_tx)

    assert WORKFLOW.fail(step_context(operation, venues), reason="give up", actor="ops")

    row = ChainNonce.objects.get(chain_id=chain_id, address=venues.ethereum.address.lower())
    assert row.next_nonce == nonce
    assert usdc_state(operation).value.burn_tx_hash is None
    assert not venues.ethereum.transaction_known(stored.tx_hash)


def test_a_withdrawal_claimed_by_another_rebalance_is_never_adopted(sim_venue, venues):
    """The lookup after an unknown POST outcome matches by amount and time; a withdrawal of
    the same amount made seconds earlier for another (failed) rebalance is not ours."""
    amount = next_amount()
    watch = EffectWatch.start(sim_venue, venues)
    first = new_usdc(A2B, str(amount))
    drive_to(first, venues, S.WITHDRAWING)
    assert WORKFLOW.fail(step_context(first, venues), reason="operator", actor="ops")
    theirs = next(e for e in usdc_events(first) if isinstance(e, ev.Initiated)).withdrawal_ref.value

    second = new_usdc(A2B, str(amount))
    drive_to(second, venues, S.WITHDRAWING)

    ours = usdc_state(second).value.withdrawal_ref.value
    assert ours != theirs
    assert watch.effects(A2B).withdrawals == 2


# --- withdrawal recovery refuses an ambiguous match ------------------------------------------


def hold_usdc_at_alpaca(sim_venue, amount: Decimal) -> None:
    """Add `amount` to Alpaca's USDC position (a USDC withdrawal can only spend it)."""
    sim_venue.server.set_usdc_position(sim_venue.server.usdc_position() + amount)


def requested_a2b(venues, amount: Decimal, *, requested_at=None):
    """An Alpaca -> Base move with its Request recorded (at `requested_at`) and no POST."""
    operation = new_usdc(A2B, str(amount))
    aggregate_execute(
        spec=usdc.SPEC,
        aggregate_id=operation.aggregate_id,
        command=usdc.Request(direction=RebalanceDirection.ALPACA_TO_BASE, amount=amount),
        now=requested_at,
    )
    return operation


def test_a_withdrawal_alpaca_dated_before_our_request_is_flagged_not_posted_again(
    sim_venue, venues
):
    """Our POST reached Alpaca, whose clock runs 5 s behind ours, and the answer was lost:
    matching only transfers created within 2 s of our request missed it and posted again."""
    amount = next_amount()
    hold_usdc_at_alpaca(sim_venue, 2 * amount)  # withdrawals spend USDC, not cash
    posts_before = sim_venue.server.request_count(WITHDRAW_POST)
    ours = venues.alpaca.initiate_withdrawal(amount_usdc=amount, address=venues.market_maker_wallet)
    operation = requested_a2b(venues, amount, requested_at=ours.created_at + timedelta(seconds=5))

    result = operation_advance(operation_id=operation.pk, venues=venues)

    operation.refresh_from_db()
    assert result.outcome == "attention"
    assert operation.is_active and operation.needs_attention
    assert ours.id in operation.last_error
    assert business_events(operation) == ["Requested"]
    assert sim_venue.server.request_count(WITHDRAW_POST) - posts_before == 1


def test_two_withdrawals_that_could_be_ours_are_not_adopted_and_an_operator_reconciles(
    sim_venue, venues
):
    amount = next_amount()
    hold_usdc_at_alpaca(sim_venue, 2 * amount)  # withdrawals spend USDC, not cash
    operation = requested_a2b(venues, amount)
    posts_before = sim_venue.server.request_count(WITHDRAW_POST)
    first = venues.alpaca.initiate_withdrawal(
        amount_usdc=amount, address=venues.market_maker_wallet
    )
    manual = venues.alpaca.initiate_withdrawal(
        amount_usdc=amount, address=venues.market_maker_wallet
    )

    result = operation_advance(operation_id=operation.pk, venues=venues)

    operation.refresh_from_db()
    assert result.outcome == "attention"
    assert first.id in operation.last_error and manual.id in operation.last_error
    assert business_events(operation) == ["Requested"]
    assert sim_venue.server.request_count(WITHDRAW_POST) - posts_before == 2
    with pytest.raises(OperatorError, match="stays active"):
        operator_force_fail(operation_id=operation.pk, reason="x", actor="ops", venues=venues)

    reconciled = operator_reconcile(
        operation_id=operation.pk,
        reason="both withdrawals were manual, ours never arrived",
        actor="ops",
        venues=venues,
    )
    assert reconciled.status == OperationStatus.FAILED
    assert not reconciled.needs_attention
    assert business_events(operation) == ["Requested", "RequestFailed"]


def test_a_single_withdrawal_made_after_our_request_is_adopted(sim_venue, venues):
    amount = next_amount()
    hold_usdc_at_alpaca(sim_venue, 2 * amount)  # withdrawals spend USDC, not cash
    operation = requested_a2b(venues, amount)
    posts_before = sim_venue.server.request_count(WITHDRAW_POST)
    ours = venues.alpaca.initiate_withdrawal(amount_usdc=amount, address=venues.market_maker_wallet)

    step_once(operation, venues)

    assert business_events(operation) == ["Requested", "Initiated"]
    assert usdc_state(operation).value.withdrawal_ref.value == ours.id
    assert sim_venue.server.request_count(WITHDRAW_POST) - posts_before == 1

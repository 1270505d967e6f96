"""UsdcRebalance aggregate (spec 4.4, the 51 section-13 USDC behaviours, and the additions:
Request genesis, stored signed transactions, B5 failure transitions, B6 amounts, reconcile).
Pure, no database."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from inventory.domain import events as ev
from inventory.domain import onchain_tx, usdc
from inventory.domain.events import TxPurpose
from inventory.domain.lifecycle import Lifecycle, LifecycleError, LifecycleErrorKind
from inventory.domain.values import InvalidValue, RebalanceDirection, TransferRef, TransferRefKind

T0 = datetime(2025, 1, 2, 14, 30, tzinfo=UTC)
A2B = RebalanceDirection.ALPACA_TO_BASE
B2A = RebalanceDirection.BASE_TO_ALPACA
AMOUNT = Decimal("1000")
S = usdc.UsdcStep

ALPACA_ID = TransferRef(TransferRefKind.ALPACA_ID, "6f1c1d4e-8a2b-4c3d-9e5f-0a1b2c3d4e5f")
ALPACA_ID_2 = TransferRef(TransferRefKind.ALPACA_ID, "0b7d5c1e-1111-4222-8333-944455556666")


def h(byte: str) -> str:
    return "0x" + byte * 32


BURN_TX, MINT_TX, DEP_TX, VW_TX, AD_TX, OTHER_TX = (
    h("b1"),
    h("c2"),
    h("d3"),
    h("e4"),
    h("f5"),
    h("99"),
)
NONCE = "0x" + "00" * 31 + "2a"
ZERO_NONCE = "0x" + "00" * 32


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def run(state, command, now=T0):
    events = usdc.handle(state, command, now)
    for event in events:
        state = usdc.apply(state, event)
    return state, events


def record(purpose: TxPurpose, tx_hash: str, chain_id: int = 1) -> usdc.RecordTransaction:
    return usdc.RecordTransaction(purpose, chain_id, b"raw-" + tx_hash.encode(), tx_hash)


REQ = usdc.Request(A2B, AMOUNT)
INIT = usdc.Initiate(A2B, AMOUNT, ALPACA_ID)
FAIL_REQ = usdc.FailRequest("alpaca refused the withdrawal")
CONFIRM_W = usdc.ConfirmWithdrawal(Decimal("999"), Decimal("1"))
FAIL_W = usdc.FailWithdrawal("withdrawal failed")
REC_BURN = record(TxPurpose.BURN, BURN_TX)
BRIDGE = usdc.InitiateBridging(BURN_TX, NONCE, Decimal("999"), Decimal("0.5"))
ATTEST = usdc.ReceiveAttestation(b"attestation", b"message")
REC_MINT = record(TxPurpose.MINT, MINT_TX, 8453)
CONFIRM_B = usdc.ConfirmBridging(MINT_TX, Decimal("998.9"), Decimal("0.1"))
FAIL_B = usdc.FailBridging("attestation timed out")
DEPOSIT = usdc.InitiateDeposit(TransferRef(TransferRefKind.ONCHAIN_TX, DEP_TX))
CONFIRM_D = usdc.ConfirmDeposit(Decimal("998.9"))
FAIL_D = usdc.FailDeposit("vault deposit reverted")
RECONCILE = usdc.ReconcileUsdc("funds found in the bridge wallet", "carol")

PATHS = {
    "Uninitialized": [],
    "Requested": [REQ],
    "RequestFailed": [REQ, FAIL_REQ],
    "Withdrawing": [REQ, INIT],
    "WithdrawalComplete": [REQ, INIT, CONFIRM_W],
    "WithdrawalFailed": [INIT, FAIL_W],
    "Bridging": [INIT, CONFIRM_W, REC_BURN, BRIDGE],
    "Attested": [INIT, CONFIRM_W, REC_BURN, BRIDGE, ATTEST],
    "Bridged": [INIT, CONFIRM_W, REC_BURN, BRIDGE, ATTEST, REC_MINT, CONFIRM_B],
    "BridgingFailed": [INIT, CONFIRM_W, BRIDGE, FAIL_B],
    "DepositInitiated": [INIT, CONFIRM_W, BRIDGE, ATTEST, CONFIRM_B, DEPOSIT],
    "DepositConfirmed": [INIT, CONFIRM_W, BRIDGE, ATTEST, CONFIRM_B, DEPOSIT, CONFIRM_D],
    "DepositFailed": [INIT, CONFIRM_W, BRIDGE, ATTEST, CONFIRM_B, DEPOSIT, FAIL_D],
    "Reconciled": [INIT, FAIL_W, RECONCILE],
}


def reach(name: str) -> Lifecycle:
    state = Lifecycle.uninitialized()
    for minute, command in enumerate(PATHS[name]):
        state, _ = run(state, command, at(minute))
    return state


def state_of(name: str):
    return reach(name).live_value()


# --- initiate -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("direction", "ref"),
    [(A2B, ALPACA_ID), (B2A, TransferRef(TransferRefKind.ONCHAIN_TX, VW_TX))],
    ids=["test_initiate_alpaca_to_base", "test_initiate_base_to_alpaca"],
)
def test_initiate_from_uninitialized(direction, ref):
    state, events = run(Lifecycle.uninitialized(), usdc.Initiate(direction, Decimal("500"), ref))
    assert events == [ev.Initiated(direction, Decimal("500"), ref, T0)]
    assert state.live_value() == usdc.Withdrawing(
        direction=direction,
        amount=Decimal("500"),
        initiated_at=T0,
        transactions={},
        amounts=usdc.UsdcAmounts(),
        withdrawal_ref=ref,
    )
    assert usdc.genesis_of(state) == (direction, Decimal("500"))


def test_cannot_initiate_twice():
    with pytest.raises(usdc.AlreadyInitiated):
        usdc.handle(reach("Withdrawing"), INIT, T0)


def test_view_tracks_every_stage():
    """Folding the log after each event reports each stage in order, both directions."""
    commands = [INIT, CONFIRM_W, BRIDGE, ATTEST, CONFIRM_B, DEPOSIT, CONFIRM_D]
    history, steps = [], []
    state = Lifecycle.uninitialized()
    for minute, command in enumerate(commands):
        state, events = run(state, command, at(minute))
        history.extend(events)
        steps.append(usdc.step_of(usdc.SPEC.fold(history)))
    assert steps == [
        S.WITHDRAWING,
        S.WITHDRAWAL_COMPLETE,
        S.BRIDGING,
        S.ATTESTED,
        S.BRIDGED,
        S.DEPOSIT_INITIATED,
        S.DEPOSIT_CONFIRMED,
    ]


# --- withdrawal -----------------------------------------------------------------------------


def test_confirm_withdrawal():
    state, events = run(reach("Withdrawing"), usdc.ConfirmWithdrawal(), at(5))
    assert events == [ev.WithdrawalConfirmed(at(5), None, None)]
    complete = state.live_value()
    assert isinstance(complete, usdc.WithdrawalComplete)
    assert complete.confirmed_at == at(5)
    assert complete.amount == AMOUNT


def test_fail_withdrawal():
    state, events = run(reach("Withdrawing"), FAIL_W, at(5))
    assert events == [ev.WithdrawalFailed("withdrawal failed", at(5))]
    failed = state.live_value()
    assert isinstance(failed, usdc.WithdrawalFailed)
    assert (failed.withdrawal_ref, failed.reason, failed.failed_at) == (
        ALPACA_ID,
        "withdrawal failed",
        at(5),
    )


@pytest.mark.parametrize(
    ("state_name", "command", "error"),
    [
        ("Uninitialized", usdc.ConfirmWithdrawal(), usdc.WithdrawalNotInitiated),
        ("Uninitialized", FAIL_W, usdc.WithdrawalNotInitiated),
        ("WithdrawalComplete", usdc.ConfirmWithdrawal(), usdc.WithdrawalAlreadyCompleted),
        ("WithdrawalComplete", FAIL_W, usdc.WithdrawalAlreadyCompleted),
        ("WithdrawalFailed", usdc.ConfirmWithdrawal(), usdc.WithdrawalAlreadyCompleted),
        ("WithdrawalFailed", FAIL_W, usdc.WithdrawalAlreadyCompleted),
    ],
    ids=[
        "cannot_confirm_withdrawal_before_initiating",
        "cannot_fail_withdrawal_before_initiating",
        "cannot_confirm_withdrawal_twice",
        "cannot_fail_withdrawal_after_confirm",
        "cannot_confirm_withdrawal_after_fail",
        "cannot_fail_withdrawal_twice",
    ],
)
def test_withdrawal_invalid_orders(state_name, command, error):
    with pytest.raises(error):
        usdc.handle(reach(state_name), command, T0)


# --- bridging -------------------------------------------------------------------------------


def test_initiate_bridging_after_withdrawal_confirmed():
    state, events = run(reach("WithdrawalComplete"), usdc.InitiateBridging(BURN_TX, NONCE), at(9))
    assert events == [ev.BridgingInitiated(BURN_TX, NONCE, at(9), None, None)]
    bridging = state.live_value()
    assert isinstance(bridging, usdc.Bridging)
    assert (bridging.burn_tx_hash, bridging.cctp_nonce, bridging.burned_at) == (
        BURN_TX,
        NONCE,
        at(9),
    )


@pytest.mark.parametrize(
    ("state_name", "error"),
    [
        ("Uninitialized", usdc.WithdrawalNotConfirmed),
        ("Withdrawing", usdc.WithdrawalNotConfirmed),
        ("WithdrawalFailed", usdc.WithdrawalNotConfirmed),
        ("Bridging", usdc.InvalidCommand),
    ],
    ids=[
        "cannot_initiate_bridging_before_initiate",
        "cannot_initiate_bridging_while_withdrawing",
        "cannot_initiate_bridging_after_withdrawal_failed",
        "cannot_initiate_bridging_twice",
    ],
)
def test_bridging_initiated_only_after_withdrawal_confirmed(state_name, error):
    with pytest.raises(error):
        usdc.handle(reach(state_name), usdc.InitiateBridging(BURN_TX, NONCE), T0)


def test_receive_attestation_from_bridging():
    state, events = run(reach("Bridging"), usdc.ReceiveAttestation(b"\x01\x02"), at(12))
    assert events == [ev.BridgeAttestationReceived(b"\x01\x02", at(12), None)]
    attested = state.live_value()
    assert isinstance(attested, usdc.Attested)
    assert (attested.burn_tx_hash, attested.cctp_nonce, attested.attestation) == (
        BURN_TX,
        NONCE,
        b"\x01\x02",
    )


@pytest.mark.parametrize(
    ("state_name", "error"),
    [
        ("Uninitialized", usdc.BridgingNotInitiated),
        ("Withdrawing", usdc.BridgingNotInitiated),
        ("WithdrawalComplete", usdc.BridgingNotInitiated),
        ("Attested", usdc.InvalidCommand),
        ("Bridged", usdc.BridgingAlreadyCompleted),
        ("BridgingFailed", usdc.BridgingAlreadyCompleted),
    ],
    ids=[
        "cannot_receive_attestation_before_initiate",
        "cannot_receive_attestation_while_withdrawing",
        "cannot_receive_attestation_before_bridging",
        "cannot_receive_attestation_twice",
        "cannot_receive_attestation_after_bridged",
        "cannot_receive_attestation_after_bridging_failed",
    ],
)
def test_attestation_only_from_bridging(state_name, error):
    with pytest.raises(error):
        usdc.handle(reach(state_name), usdc.ReceiveAttestation(b"a"), T0)


def test_confirm_bridging_after_attestation():
    state, events = run(reach("Attested"), usdc.ConfirmBridging(MINT_TX), at(15))
    assert events == [ev.Bridged(MINT_TX, at(15), None, None)]
    bridged = state.live_value()
    assert isinstance(bridged, usdc.Bridged)
    assert (bridged.burn_tx_hash, bridged.mint_tx_hash, bridged.minted_at) == (
        BURN_TX,
        MINT_TX,
        at(15),
    )


@pytest.mark.parametrize(
    ("state_name", "error"),
    [
        ("Bridging", usdc.AttestationNotReceived),
        ("WithdrawalComplete", usdc.AttestationNotReceived),
        ("Bridged", usdc.BridgingAlreadyCompleted),
    ],
    ids=[
        "cannot_confirm_bridging_before_attestation",
        "cannot_confirm_bridging_before_burn",
        "cannot_confirm_bridging_twice",
    ],
)
def test_confirm_bridging_only_after_attestation(state_name, error):
    with pytest.raises(error):
        usdc.handle(reach(state_name), usdc.ConfirmBridging(MINT_TX), T0)


@pytest.mark.parametrize("state_name", ["Bridging", "Attested"])
def test_fail_bridging_preserves_burn_data(state_name):
    state, events = run(reach(state_name), FAIL_B, at(20))
    assert events == [ev.BridgingFailed(BURN_TX, NONCE, "attestation timed out", at(20))]
    failed = state.live_value()
    assert isinstance(failed, usdc.BridgingFailed)
    assert (failed.burn_tx_hash, failed.cctp_nonce) == (BURN_TX, NONCE)


@pytest.mark.parametrize(
    ("state_name", "command", "error"),
    [
        ("Withdrawing", FAIL_B, usdc.BridgingNotInitiated),
        ("Bridged", FAIL_B, usdc.BridgingAlreadyCompleted),
        ("BridgingFailed", FAIL_B, usdc.BridgingAlreadyCompleted),
        ("BridgingFailed", usdc.ConfirmBridging(MINT_TX), usdc.BridgingAlreadyCompleted),
        ("DepositConfirmed", usdc.ConfirmBridging(MINT_TX), usdc.BridgingAlreadyCompleted),
    ],
    ids=[
        "cannot_fail_bridging_before_initiated",
        "cannot_fail_bridging_after_completed",
        "cannot_fail_bridging_after_failed",
        "cannot_confirm_bridging_after_failed",
        "cannot_confirm_bridging_after_completed",
    ],
)
def test_cannot_confirm_or_fail_bridging_after_completed_or_failed(state_name, command, error):
    with pytest.raises(error):
        usdc.handle(reach(state_name), command, T0)


# --- deposit --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ref",
    [ALPACA_ID_2, TransferRef(TransferRefKind.ONCHAIN_TX, DEP_TX)],
    ids=["test_initiate_deposit_with_alpaca_id", "test_initiate_deposit_with_onchain_tx"],
)
def test_initiate_deposit(ref):
    state, events = run(reach("Bridged"), usdc.InitiateDeposit(ref), at(25))
    assert events == [ev.DepositInitiated(ref, at(25))]
    deposit = state.live_value()
    assert isinstance(deposit, usdc.DepositInitiated)
    assert (deposit.burn_tx_hash, deposit.mint_tx_hash, deposit.deposit_ref) == (
        BURN_TX,
        MINT_TX,
        ref,
    )


@pytest.mark.parametrize("state_name", ["Withdrawing", "Bridging", "Attested", "BridgingFailed"])
def test_cannot_deposit_before_bridged(state_name):
    with pytest.raises(usdc.BridgingNotCompleted):
        usdc.handle(reach(state_name), DEPOSIT, T0)


def test_confirm_deposit():
    state, events = run(reach("DepositInitiated"), usdc.ConfirmDeposit(), at(30))
    assert events == [ev.DepositConfirmed(at(30), None)]
    confirmed = state.live_value()
    assert isinstance(confirmed, usdc.DepositConfirmed)
    assert (confirmed.burn_tx_hash, confirmed.mint_tx_hash, confirmed.deposit_confirmed_at) == (
        BURN_TX,
        MINT_TX,
        at(30),
    )
    assert usdc.is_terminal(state)


def test_fail_deposit_preserves_deposit_ref():
    state, events = run(reach("DepositInitiated"), FAIL_D, at(31))
    assert events == [ev.DepositFailed(DEPOSIT.deposit, "vault deposit reverted", at(31))]
    failed = state.live_value()
    assert isinstance(failed, usdc.DepositFailed)
    assert (failed.deposit_ref, failed.burn_tx_hash, failed.mint_tx_hash) == (
        DEPOSIT.deposit,
        BURN_TX,
        MINT_TX,
    )


@pytest.mark.parametrize(
    ("state_name", "command", "error"),
    [
        ("Bridged", usdc.ConfirmDeposit(), usdc.DepositNotInitiated),
        ("Attested", FAIL_D, usdc.DepositNotInitiated),
        ("DepositConfirmed", usdc.ConfirmDeposit(), usdc.InvalidCommand),
        ("DepositConfirmed", FAIL_D, usdc.InvalidCommand),
        ("DepositFailed", usdc.ConfirmDeposit(), usdc.InvalidCommand),
        ("DepositInitiated", DEPOSIT, usdc.InvalidCommand),
    ],
    ids=[
        "cannot_confirm_deposit_before_initiated",
        "cannot_fail_deposit_before_bridged",
        "cannot_confirm_deposit_twice",
        "cannot_fail_deposit_after_confirmed",
        "cannot_confirm_deposit_after_failed",
        "cannot_initiate_deposit_twice",
    ],
)
def test_deposit_invalid_orders(state_name, command, error):
    with pytest.raises(error):
        usdc.handle(reach(state_name), command, T0)


# --- full flows -----------------------------------------------------------------------------


def test_full_alpaca_to_base_flow():
    commands = [
        usdc.Request(A2B, AMOUNT),
        usdc.Initiate(A2B, AMOUNT, ALPACA_ID),
        usdc.ConfirmWithdrawal(Decimal("999"), Decimal("1")),
        record(TxPurpose.BURN, BURN_TX, 1),
        usdc.InitiateBridging(BURN_TX, NONCE, Decimal("999"), Decimal("0.5")),
        usdc.ReceiveAttestation(b"att", b"msg"),
        record(TxPurpose.MINT, MINT_TX, 8453),
        usdc.ConfirmBridging(MINT_TX, Decimal("998.9"), Decimal("0.1")),
        record(TxPurpose.VAULT_DEPOSIT, DEP_TX, 8453),
        usdc.InitiateDeposit(TransferRef(TransferRefKind.ONCHAIN_TX, DEP_TX)),
        usdc.ConfirmDeposit(Decimal("998.9")),
    ]
    state, history = Lifecycle.uninitialized(), []
    for minute, command in enumerate(commands):
        state, events = run(state, command, at(minute))
        history.extend(events)
    done = state.live_value()
    assert isinstance(done, usdc.DepositConfirmed)
    assert usdc.SPEC.fold(history) == state
    assert set(done.transactions) == {TxPurpose.BURN, TxPurpose.MINT, TxPurpose.VAULT_DEPOSIT}
    assert done.amounts == usdc.UsdcAmounts(
        withdrawal_received=Decimal("999"),
        withdrawal_fee=Decimal("1"),
        burn_amount=Decimal("999"),
        max_fee=Decimal("0.5"),
        bridged_received=Decimal("998.9"),
        bridge_fee=Decimal("0.1"),
        deposited=Decimal("998.9"),
    )
    assert usdc.genesis_of(state) == (A2B, AMOUNT)


def test_full_base_to_alpaca_flow():
    commands = [
        usdc.Request(B2A, AMOUNT),
        record(TxPurpose.VAULT_WITHDRAW, VW_TX, 8453),
        usdc.Initiate(B2A, AMOUNT, TransferRef(TransferRefKind.ONCHAIN_TX, VW_TX)),
        usdc.ConfirmWithdrawal(),
        record(TxPurpose.BURN, BURN_TX, 8453),
        usdc.InitiateBridging(BURN_TX, NONCE),
        usdc.ReceiveAttestation(b"att"),
        record(TxPurpose.MINT, MINT_TX, 1),
        usdc.ConfirmBridging(MINT_TX),
        record(TxPurpose.ALPACA_DEPOSIT, AD_TX, 1),
        usdc.InitiateDeposit(TransferRef(TransferRefKind.ONCHAIN_TX, AD_TX)),
        usdc.ConfirmDeposit(),
    ]
    state = Lifecycle.uninitialized()
    for minute, command in enumerate(commands):
        state, _ = run(state, command, at(minute))
    done = state.live_value()
    assert isinstance(done, usdc.DepositConfirmed)
    assert done.direction is B2A
    assert {p: t.tx_hash for p, t in done.transactions.items()} == {
        TxPurpose.VAULT_WITHDRAW: VW_TX,
        TxPurpose.BURN: BURN_TX,
        TxPurpose.MINT: MINT_TX,
        TxPurpose.ALPACA_DEPOSIT: AD_TX,
    }
    assert usdc.depositable_amount(done) == AMOUNT


# --- every command in every state -----------------------------------------------------------

OK = None
AI, NR, RAF, AR = (
    usdc.AlreadyInitiated,
    usdc.NotRequested,
    usdc.RequestAlreadyFailed,
    usdc.AlreadyReconciled,
)
TERM, IC = usdc.AlreadyTerminal, usdc.InvalidCommand
WNI, WAC, WNC = (
    usdc.WithdrawalNotInitiated,
    usdc.WithdrawalAlreadyCompleted,
    usdc.WithdrawalNotConfirmed,
)
BNI, BAC, ANR = (
    usdc.BridgingNotInitiated,
    usdc.BridgingAlreadyCompleted,
    usdc.AttestationNotReceived,
)
BNC, DNI, NREC = usdc.BridgingNotCompleted, usdc.DepositNotInitiated, usdc.NotReconcilable

TABLE_COMMANDS = [
    REQ,
    INIT,
    FAIL_REQ,
    record(TxPurpose.ALPACA_DEPOSIT, AD_TX),
    usdc.ConfirmWithdrawal(),
    FAIL_W,
    usdc.InitiateBridging(BURN_TX, NONCE),
    usdc.ReceiveAttestation(b"a"),
    usdc.ConfirmBridging(MINT_TX),
    FAIL_B,
    usdc.InitiateDeposit(ALPACA_ID_2),
    usdc.ConfirmDeposit(),
    FAIL_D,
    RECONCILE,
]
STATES = list(PATHS)
# Columns: U Req RF Wd WC WF Br At Bd BF DI DC DF Rc
TABLE = {
    "Request": [OK, AI, RAF, AI, AI, AI, AI, AI, AI, AI, AI, AI, AI, AR],
    "Initiate": [OK, OK, RAF, AI, AI, AI, AI, AI, AI, AI, AI, AI, AI, AR],
    "FailRequest": [NR, OK, RAF, AI, AI, AI, AI, AI, AI, AI, AI, AI, AI, AR],
    "RecordTransaction": [NR, OK, RAF, OK, OK, TERM, OK, OK, OK, TERM, OK, TERM, TERM, AR],
    "ConfirmWithdrawal": [WNI, WNI, RAF, OK, WAC, WAC, WAC, WAC, WAC, WAC, WAC, WAC, WAC, AR],
    "FailWithdrawal": [WNI, WNI, RAF, OK, WAC, WAC, WAC, WAC, WAC, WAC, WAC, WAC, WAC, AR],
    "InitiateBridging": [WNC, WNC, RAF, WNC, OK, WNC, IC, IC, IC, IC, IC, IC, IC, AR],
    "ReceiveAttestation": [BNI, BNI, RAF, BNI, BNI, BNI, OK, IC, BAC, BAC, BAC, BAC, BAC, AR],
    "ConfirmBridging": [ANR, ANR, RAF, ANR, ANR, ANR, ANR, OK, BAC, BAC, BAC, BAC, BAC, AR],
    "FailBridging": [BNI, BNI, RAF, BNI, OK, BNI, OK, OK, BAC, BAC, BAC, BAC, BAC, AR],
    "InitiateDeposit": [BNC, BNC, RAF, BNC, BNC, BNC, BNC, BNC, OK, BNC, IC, IC, IC, AR],
    "ConfirmDeposit": [DNI, DNI, RAF, DNI, DNI, DNI, DNI, DNI, DNI, DNI, OK, IC, IC, AR],
    "FailDeposit": [DNI, DNI, RAF, DNI, DNI, DNI, DNI, DNI, OK, DNI, OK, IC, IC, AR],
    "ReconcileUsdc": [NREC, NREC, NREC, NREC, NREC, OK, NREC, NREC, NREC, OK, NREC, NREC, OK, AR],
}
CASES = [
    (command, state, TABLE[type(command).__name__][index])
    for command in TABLE_COMMANDS
    for index, state in enumerate(STATES)
]


@pytest.mark.parametrize(
    ("command", "state_name", "expected"),
    CASES,
    ids=[f"{type(c).__name__}-in-{s}" for c, s, _ in CASES],
)
def test_command_validation_table(command, state_name, expected):
    state = reach(state_name)
    if expected is None:
        events = usdc.handle(state, command, at(40))
        assert len(events) == 1
        assert not usdc.apply(state, events[0]).is_failed
    else:
        with pytest.raises(expected) as caught:
            usdc.handle(state, command, at(40))
        assert caught.value.command == type(command).__name__
        assert caught.value.state == state_name


@pytest.mark.parametrize(
    "state_name",
    ["WithdrawalFailed", "BridgingFailed", "DepositConfirmed", "DepositFailed"],
    ids=[
        "test_withdrawal_failed_rejects_commands",
        "test_bridging_failed_rejects_commands",
        "test_deposit_confirmed_rejects_commands",
        "test_deposit_failed_rejects_commands",
    ],
)
def test_terminal_state_rejects_commands(state_name):
    state = reach(state_name)
    assert usdc.is_terminal(state)
    for command in TABLE_COMMANDS:
        if command is RECONCILE and state_name != "DepositConfirmed":
            continue  # the operator's way out of a failure that kept funds inflight
        with pytest.raises(usdc.UsdcRebalanceError):
            usdc.handle(state, command, at(40))


@pytest.mark.parametrize("state_name", ["RequestFailed", "Reconciled"])
def test_added_terminal_states_reject_every_command(state_name):
    state = reach(state_name)
    assert usdc.is_terminal(state)
    for command in TABLE_COMMANDS:
        with pytest.raises(usdc.UsdcRebalanceError):
            usdc.handle(state, command, at(40))


# --- Request genesis ------------------------------------------------------------------------


def test_request_from_uninitialized_records_requested():
    state, events = run(Lifecycle.uninitialized(), REQ, at(1))
    assert events == [ev.Requested(A2B, AMOUNT, at(1))]
    assert state.live_value() == usdc.Requested(A2B, AMOUNT, at(1), {})
    assert usdc.step_of(state) is S.REQUESTED
    assert not usdc.is_terminal(state)
    assert usdc.genesis_of(state) == (A2B, AMOUNT)


def test_initiate_from_requested_reaches_withdrawing():
    state, events = run(reach("Requested"), INIT, at(2))
    assert events == [ev.Initiated(A2B, AMOUNT, ALPACA_ID, at(2))]
    assert usdc.step_of(state) is S.WITHDRAWING


@pytest.mark.parametrize(
    ("command", "field"),
    [
        (usdc.Initiate(B2A, AMOUNT, ALPACA_ID), "direction"),
        (usdc.Initiate(A2B, Decimal("999"), ALPACA_ID), "amount"),
    ],
)
def test_initiate_from_requested_must_match_the_request(command, field):
    with pytest.raises(usdc.RequestMismatch) as caught:
        usdc.handle(reach("Requested"), command, T0)
    assert caught.value.field == field
    assert str(caught.value.expected) in str(caught.value)


def test_apply_initiated_with_other_amount_on_requested_corrupts():
    result = usdc.apply(reach("Requested"), ev.Initiated(A2B, Decimal(1), ALPACA_ID, T0))
    assert result.is_failed and result.error.kind is LifecycleErrorKind.MISMATCH


def test_fail_request_from_requested_is_terminal_with_nothing_inflight():
    state, events = run(reach("Requested"), FAIL_REQ, at(3))
    assert events == [ev.RequestFailed("alpaca refused the withdrawal", at(3))]
    assert state.live_value() == usdc.RequestFailed(
        A2B, AMOUNT, at(0), "alpaca refused the withdrawal", at(3), {}
    )
    assert usdc.is_terminal(state)
    assert not usdc.can_reconcile(state)


# --- signed transactions --------------------------------------------------------------------


@pytest.mark.parametrize(
    "state_name",
    [
        "Requested",
        "Withdrawing",
        "WithdrawalComplete",
        "Bridging",
        "Attested",
        "Bridged",
        "DepositInitiated",
    ],
)
def test_record_transaction_valid_in_every_non_terminal_state(state_name):
    before = reach(state_name)
    command = record(TxPurpose.ALPACA_DEPOSIT, AD_TX, 1)
    state, events = run(before, command, at(50))
    assert events == [
        ev.TransactionSigned(TxPurpose.ALPACA_DEPOSIT, 1, command.raw_tx, AD_TX, at(50))
    ]
    assert usdc.step_of(state) is usdc.step_of(before)
    assert usdc.transaction_for(state, TxPurpose.ALPACA_DEPOSIT) == usdc.SignedTx(
        purpose=TxPurpose.ALPACA_DEPOSIT,
        chain_id=1,
        raw_tx=command.raw_tx,
        tx_hash=AD_TX,
        signed_at=at(50),
    )


def test_transaction_signed_is_stored_and_visible_in_later_states():
    state = reach("Requested")
    state, _ = run(state, record(TxPurpose.VAULT_WITHDRAW, VW_TX, 8453), at(1))
    stored = usdc.transaction_for(state, TxPurpose.VAULT_WITHDRAW)
    assert stored is not None and stored.raw_tx == b"raw-" + VW_TX.encode()
    for minute, command in enumerate(
        [INIT, CONFIRM_W, BRIDGE, ATTEST, CONFIRM_B, DEPOSIT, FAIL_D, RECONCILE], 2
    ):
        state, _ = run(state, command, at(minute))
        assert usdc.transaction_for(state, TxPurpose.VAULT_WITHDRAW) == stored, usdc.step_of(state)
    assert usdc.step_of(state) is S.RECONCILED


def test_transactions_survive_into_request_failed():
    state, _ = run(reach("Requested"), record(TxPurpose.VAULT_WITHDRAW, VW_TX, 8453))
    state, _ = run(state, FAIL_REQ)
    assert usdc.transaction_for(state, TxPurpose.VAULT_WITHDRAW).tx_hash == VW_TX


def test_record_identical_transaction_again_is_a_no_op():
    state = reach("Bridging")  # its path recorded REC_BURN
    assert usdc.handle(state, REC_BURN, at(60)) == []


def test_record_different_transaction_for_same_purpose_is_a_conflict():
    state, _ = run(reach("WithdrawalComplete"), REC_BURN)
    with pytest.raises(usdc.TransactionConflict) as caught:
        usdc.handle(state, record(TxPurpose.BURN, OTHER_TX), T0)
    assert (caught.value.purpose, caught.value.recorded, caught.value.actual) == (
        "burn",
        BURN_TX,
        OTHER_TX,
    )
    assert OTHER_TX in str(caught.value)


def test_record_different_transaction_allowed_once_past_that_step():
    state = reach("Attested")  # past the burn step (WithdrawalComplete)
    state, events = run(state, record(TxPurpose.BURN, OTHER_TX), at(61))
    assert len(events) == 1
    assert usdc.transaction_for(state, TxPurpose.BURN).tx_hash == OTHER_TX


@pytest.mark.parametrize(
    ("command", "field"),
    [
        (usdc.RecordTransaction("burn", 1, b"x", BURN_TX), "purpose"),
        (usdc.RecordTransaction(TxPurpose.BURN, 0, b"x", BURN_TX), "chain_id"),
        (usdc.RecordTransaction(TxPurpose.BURN, True, b"x", BURN_TX), "chain_id"),
        (usdc.RecordTransaction(TxPurpose.BURN, 1, b"", BURN_TX), "raw_tx"),
        (usdc.RecordTransaction(TxPurpose.BURN, 1, b"x", "0x1"), "tx_hash"),
    ],
)
def test_record_transaction_rejects_invalid_values(command, field):
    with pytest.raises(InvalidValue) as caught:
        usdc.handle(reach("WithdrawalComplete"), command, T0)
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("path", "command", "purpose"),
    [
        (
            [REQ, record(TxPurpose.VAULT_WITHDRAW, VW_TX)],
            usdc.Initiate(A2B, AMOUNT, TransferRef(TransferRefKind.ONCHAIN_TX, OTHER_TX)),
            "vault_withdraw",
        ),
        ([INIT, CONFIRM_W, REC_BURN], usdc.InitiateBridging(OTHER_TX, NONCE), "burn"),
        ([INIT, CONFIRM_W, BRIDGE, ATTEST, REC_MINT], usdc.ConfirmBridging(OTHER_TX), "mint"),
        (
            [INIT, CONFIRM_W, BRIDGE, ATTEST, CONFIRM_B, record(TxPurpose.VAULT_DEPOSIT, DEP_TX)],
            usdc.InitiateDeposit(TransferRef(TransferRefKind.ONCHAIN_TX, OTHER_TX)),
            "vault_deposit",
        ),
    ],
    ids=["withdraw", "burn", "mint", "deposit"],
)
def test_step_must_name_the_recorded_transaction(path, command, purpose):
    state = Lifecycle.uninitialized()
    for c in path:
        state, _ = run(state, c)
    with pytest.raises(usdc.TransactionMismatch) as caught:
        usdc.handle(state, command, T0)
    assert caught.value.purpose == purpose
    assert caught.value.actual == OTHER_TX


# --- B5: failures valid where they happen ---------------------------------------------------


def test_fail_bridging_from_withdrawal_complete_records_no_burn_data():
    state, events = run(reach("WithdrawalComplete"), FAIL_B, at(9))
    assert events == [ev.BridgingFailed(None, None, "attestation timed out", at(9))]
    failed = state.live_value()
    assert isinstance(failed, usdc.BridgingFailed)
    assert (failed.burn_tx_hash, failed.cctp_nonce) == (None, None)
    assert usdc.is_terminal(state) and usdc.can_reconcile(state)


def test_fail_deposit_from_bridged_records_no_deposit_ref():
    state, events = run(reach("Bridged"), FAIL_D, at(9))
    assert events == [ev.DepositFailed(None, "vault deposit reverted", at(9))]
    failed = state.live_value()
    assert isinstance(failed, usdc.DepositFailed)
    assert failed.deposit_ref is None
    assert (failed.burn_tx_hash, failed.mint_tx_hash) == (BURN_TX, MINT_TX)
    assert usdc.is_terminal(state) and usdc.can_reconcile(state)


# --- B6: amounts and fees -------------------------------------------------------------------


def test_amounts_and_fees_are_carried_into_events_and_states():
    state, events = run(reach("Withdrawing"), usdc.ConfirmWithdrawal(Decimal("999"), Decimal("1")))
    assert events == [ev.WithdrawalConfirmed(T0, Decimal("999"), Decimal("1"))]
    assert usdc.burnable_amount(state.live_value()) == Decimal("999")
    state, events = run(
        state, usdc.InitiateBridging(BURN_TX, NONCE, Decimal("999"), Decimal("0.2"))
    )
    assert events == [ev.BridgingInitiated(BURN_TX, NONCE, T0, Decimal("999"), Decimal("0.2"))]
    state, events = run(state, usdc.ReceiveAttestation(b"att", b"msg"))
    assert events == [ev.BridgeAttestationReceived(b"att", T0, b"msg")]
    assert state.live_value().message == b"msg"
    assert usdc.depositable_amount(state.live_value()) == Decimal("999")
    state, events = run(state, usdc.ConfirmBridging(MINT_TX, Decimal("998.8"), Decimal("0.2")))
    assert events == [ev.Bridged(MINT_TX, T0, Decimal("998.8"), Decimal("0.2"))]
    assert usdc.depositable_amount(state.live_value()) == Decimal("998.8")
    state, _ = run(state, DEPOSIT)
    state, events = run(state, usdc.ConfirmDeposit(Decimal("998.8")))
    assert events == [ev.DepositConfirmed(T0, Decimal("998.8"))]
    assert state.live_value().amounts == usdc.UsdcAmounts(
        Decimal("999"),
        Decimal("1"),
        Decimal("999"),
        Decimal("0.2"),
        Decimal("998.8"),
        Decimal("0.2"),
        Decimal("998.8"),
    )


def test_amounts_default_to_the_requested_amount():
    bridged = state_of("DepositInitiated")
    assert bridged.amounts.bridged_received == Decimal("998.9")
    plain = usdc.Withdrawing(A2B, AMOUNT, T0, {}, usdc.UsdcAmounts(), ALPACA_ID)
    assert usdc.burnable_amount(plain) == AMOUNT
    assert usdc.depositable_amount(plain) == AMOUNT


@pytest.mark.parametrize(
    ("state_name", "command", "field"),
    [
        ("Withdrawing", usdc.ConfirmWithdrawal(Decimal(0)), "amount_received"),
        ("Withdrawing", usdc.ConfirmWithdrawal(Decimal(1), Decimal(-1)), "fee"),
        ("WithdrawalComplete", usdc.InitiateBridging(BURN_TX, NONCE, Decimal(-5)), "burn_amount"),
        (
            "WithdrawalComplete",
            usdc.InitiateBridging(BURN_TX, NONCE, None, Decimal("NaN")),
            "max_fee",
        ),
        ("WithdrawalComplete", usdc.InitiateBridging("0xbad", NONCE), "burn_tx"),
        ("Bridging", usdc.ReceiveAttestation(b""), "attestation"),
        ("Bridging", usdc.ReceiveAttestation(b"a", b""), "message"),
        ("Attested", usdc.ConfirmBridging(MINT_TX, Decimal(0)), "amount_received"),
        ("Attested", usdc.ConfirmBridging("nope"), "mint_tx"),
        ("DepositInitiated", usdc.ConfirmDeposit(Decimal("-1")), "amount_deposited"),
        (
            "Bridged",
            usdc.InitiateDeposit(TransferRef(TransferRefKind.ALPACA_ID, "not-a-uuid")),
            "deposit",
        ),
        ("Uninitialized", usdc.Initiate(A2B, Decimal(0), ALPACA_ID), "amount"),
        ("Uninitialized", usdc.Initiate("AlpacaToBase", AMOUNT, ALPACA_ID), "direction"),
        (
            "Uninitialized",
            usdc.Initiate(A2B, AMOUNT, TransferRef(TransferRefKind.ONCHAIN_TX, "0x12")),
            "withdrawal",
        ),
        ("Uninitialized", usdc.Request(A2B, Decimal("-1")), "amount"),
        ("Uninitialized", usdc.Request(A2B, Decimal("Infinity")), "amount"),
        ("Withdrawing", usdc.FailWithdrawal(""), "reason"),
    ],
)
def test_commands_reject_invalid_values_naming_the_field(state_name, command, field):
    with pytest.raises(InvalidValue) as caught:
        usdc.handle(reach(state_name), command, T0)
    assert caught.value.field == field
    assert field in str(caught.value)


# --- CCTP nonce -----------------------------------------------------------------------------


def test_zero_cctp_nonce_is_rejected():
    with pytest.raises(InvalidValue) as caught:
        usdc.handle(reach("WithdrawalComplete"), usdc.InitiateBridging(BURN_TX, ZERO_NONCE), T0)
    assert caught.value.field == "cctp_nonce"
    assert "zero" in str(caught.value)


@pytest.mark.parametrize("nonce", ["42", "0x2a", "0x" + "00" * 31 + "zz", 42, "0x" + "11" * 33])
def test_malformed_cctp_nonce_is_rejected(nonce):
    with pytest.raises(InvalidValue) as caught:
        usdc.handle(reach("WithdrawalComplete"), usdc.InitiateBridging(BURN_TX, nonce), T0)
    assert caught.value.field == "cctp_nonce"


# --- reconcile ------------------------------------------------------------------------------


@pytest.mark.parametrize("state_name", ["WithdrawalFailed", "BridgingFailed", "DepositFailed"])
def test_reconcile_from_failed_state_with_inflight_reaches_reconciled(state_name):
    before = reach(state_name)
    state, events = run(before, RECONCILE, at(90))
    assert events == [ev.UsdcReconciled("funds found in the bridge wallet", "carol", at(90))]
    reconciled = state.live_value()
    assert isinstance(reconciled, usdc.Reconciled)
    assert reconciled.failed == before.live_value()
    assert (reconciled.reason, reconciled.operator, reconciled.reconciled_at) == (
        "funds found in the bridge wallet",
        "carol",
        at(90),
    )
    assert (reconciled.direction, reconciled.amount) == (A2B, AMOUNT)
    assert usdc.is_terminal(state)
    assert usdc.step_of(state) is S.RECONCILED


@pytest.mark.parametrize(
    "state_name", ["RequestFailed", "DepositConfirmed", "Withdrawing", "Bridged"]
)
def test_reconcile_refused_where_nothing_is_kept_inflight(state_name):
    with pytest.raises(usdc.NotReconcilable):
        usdc.handle(reach(state_name), RECONCILE, T0)


def test_reconcile_twice_is_already_reconciled():
    with pytest.raises(usdc.AlreadyReconciled):
        usdc.handle(reach("Reconciled"), RECONCILE, T0)


def test_apply_reconciled_on_request_failed_corrupts():
    result = usdc.apply(reach("RequestFailed"), ev.UsdcReconciled("r", "op", T0))
    assert result.is_failed and result.error.kind is LifecycleErrorKind.MISMATCH


# --- apply and lifecycle --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "wrong_states"),
    [
        (ev.WithdrawalConfirmed(T0), ["Requested", "WithdrawalComplete", "WithdrawalFailed"]),
        (ev.BridgingInitiated(BURN_TX, NONCE, T0), ["Withdrawing", "Bridging", "BridgingFailed"]),
        (ev.BridgeAttestationReceived(b"a", T0), ["WithdrawalComplete", "Attested", "Bridged"]),
        (ev.Bridged(MINT_TX, T0), ["Bridging", "Bridged", "DepositInitiated"]),
        (ev.BridgingFailed(None, None, "r", T0), ["Withdrawing", "Bridged", "BridgingFailed"]),
        (ev.DepositInitiated(ALPACA_ID, T0), ["Attested", "DepositInitiated", "DepositFailed"]),
        (ev.DepositConfirmed(T0), ["Bridged", "DepositConfirmed", "DepositFailed"]),
        (ev.DepositFailed(None, "r", T0), ["Attested", "DepositConfirmed", "DepositFailed"]),
        (ev.RequestFailed("r", T0), ["Withdrawing", "RequestFailed"]),
        (
            ev.TransactionSigned(TxPurpose.BURN, 1, b"x", BURN_TX, T0),
            ["RequestFailed", "DepositConfirmed", "Reconciled"],
        ),
        (ev.Initiated(A2B, AMOUNT, ALPACA_ID, T0), ["Withdrawing", "DepositConfirmed"]),
        (ev.Requested(A2B, AMOUNT, T0), ["Requested", "Bridged"]),
    ],
    ids=lambda value: type(value).__name__ if not isinstance(value, list) else "",
)
def test_apply_rejects_event_in_wrong_state(event, wrong_states):
    for name in wrong_states:
        state = reach(name)
        result = usdc.apply(state, event)
        assert result.is_failed, name
        assert result.error.kind is LifecycleErrorKind.MISMATCH
        assert result.last_valid_state == state.value


def test_from_event_rejects_non_genesis_events():
    result = usdc.apply(Lifecycle.uninitialized(), ev.WithdrawalConfirmed(T0))
    assert result.is_failed and result.last_valid_state is None
    assert usdc.step_of(result) is S.CORRUPTED
    assert usdc.genesis_of(result) is None


def test_corrupted_rebalance_is_sticky_and_refuses_every_command():
    state = usdc.apply(reach("Bridging"), ev.Bridged(MINT_TX, T0))
    assert usdc.apply(state, ev.BridgeAttestationReceived(b"a", T0)) == state
    for command in TABLE_COMMANDS:
        with pytest.raises(LifecycleError):
            usdc.handle(state, command, T0)
    assert usdc.genesis_of(state) == (A2B, AMOUNT)
    assert not usdc.is_terminal(state)
    assert not usdc.can_reconcile(state)


@pytest.mark.parametrize(
    ("state_name", "step", "terminal"),
    [
        (
            name,
            usdc.UsdcStep(name),
            name
            in {
                "RequestFailed",
                "WithdrawalFailed",
                "BridgingFailed",
                "DepositConfirmed",
                "DepositFailed",
                "Reconciled",
            },
        )
        for name in PATHS
    ],
)
def test_step_of_and_is_terminal(state_name, step, terminal):
    state = reach(state_name)
    assert usdc.step_of(state) is step
    assert usdc.is_terminal(state) is terminal
    assert usdc.is_terminal(state.value) is terminal


# --- a stuck transaction is replaced (issue 8) -------------------------------------------------

REPLACED_BURN_TX = h("0b")


def replace_burn(tx_hash: str = REPLACED_BURN_TX):
    return onchain_tx.ReplaceTransaction(TxPurpose.BURN, b"raw-" + tx_hash.encode(), tx_hash)


def test_recording_a_replacement_keeps_the_replaced_hash_watched():
    state, _ = run(reach("WithdrawalComplete"), REC_BURN, at(5))
    state, events = run(state, replace_burn(), at(6))
    assert [e.replaces for e in events] == [BURN_TX]
    stored = usdc.transaction_for(state, TxPurpose.BURN)
    assert stored.tx_hash == REPLACED_BURN_TX
    assert stored.all_hashes() == (REPLACED_BURN_TX, BURN_TX)
    assert (stored.signed_at, stored.pending_since) == (at(6), at(5))  # time-outs: the first
    assert run(state, replace_burn(), at(7))[1] == []  # the same replacement again: no-op


@pytest.mark.parametrize("mined", [BURN_TX, REPLACED_BURN_TX])
def test_the_outcome_may_name_whichever_transaction_was_mined(mined):
    state, _ = run(reach("WithdrawalComplete"), REC_BURN, at(5))
    state, _ = run(state, replace_burn(), at(6))
    state, events = run(state, usdc.InitiateBridging(mined, NONCE, Decimal("999")), at(7))
    assert events[0].burn_tx_hash == mined


def test_a_replacement_needs_a_stored_transaction_and_must_be_new():
    with pytest.raises(onchain_tx.NothingToReplace):
        run(reach("WithdrawalComplete"), replace_burn(), at(6))  # nothing stored to replace
    state, _ = run(reach("WithdrawalComplete"), REC_BURN, at(5))
    state, _ = run(state, replace_burn(), at(6))
    with pytest.raises(onchain_tx.ReplacementNotNew):  # back to one it already replaced
        run(state, replace_burn(tx_hash=BURN_TX), at(7))


# --- issue 20: USDCUSD conversions at Alpaca (spec 15.5) ---------------------------------------

BUY = usdc.InitiateConversion(client_order_id="usdc-buy-op", side="buy", amount=AMOUNT)
FILLED = usdc.ConfirmConversion(
    order_id="ord-1",
    filled_qty=Decimal("998.999999999"),
    filled_avg_price=Decimal("1.001"),
    usdc_amount=Decimal("998.999999"),
    usd_amount=AMOUNT,
)


def test_alpaca_to_base_buys_usdc_then_withdraws_exactly_what_it_bought():
    state, _ = run(Lifecycle.uninitialized(), REQ)
    state, events = run(state, BUY, at(1))
    assert events == [
        ev.ConversionInitiated(
            client_order_id="usdc-buy-op", side="buy", amount=AMOUNT, initiated_at=at(1)
        )
    ]
    with pytest.raises(usdc.ConversionPending):
        usdc.handle(state, INIT, at(2))  # no withdrawal before the order settled
    state, (confirmed,) = run(state, FILLED, at(2))
    assert confirmed.cost == Decimal("1.000001")  # 1000 USD for 998.999999 USDC
    assert usdc.withdrawal_amount(state.value) == Decimal("998.999999")
    with pytest.raises(usdc.RequestMismatch):
        usdc.handle(state, INIT, at(3))  # the requested amount is no longer what is there
    state, _ = run(state, usdc.Initiate(A2B, Decimal("998.999999"), ALPACA_ID), at(3))
    assert usdc.step_of(state) == S.WITHDRAWING
    assert state.value.amount == Decimal("998.999999")


def test_a_conversion_is_one_buy_per_alpaca_to_base_and_settles_once():
    state, _ = run(Lifecycle.uninitialized(), REQ)
    with pytest.raises(usdc.ConversionNotValid):
        usdc.handle(state, usdc.InitiateConversion("x", "sell", AMOUNT), T0)
    with pytest.raises(usdc.ConversionNotInitiated):
        usdc.handle(state, FILLED, T0)
    state, _ = run(state, BUY)
    with pytest.raises(usdc.ConversionNotValid):
        usdc.handle(state, BUY, T0)
    state, (failed,) = run(state, usdc.FailConversion("order rejected"))
    assert failed.reason == "order rejected"
    with pytest.raises(usdc.ConversionNotInitiated):
        usdc.handle(state, FILLED, T0)
    state, _ = run(state, FAIL_REQ)
    assert usdc.step_of(state) == S.REQUEST_FAILED


def test_base_to_alpaca_sells_the_deposit_before_confirming_it():
    state = Lifecycle.uninitialized()
    for command in (
        usdc.Request(B2A, AMOUNT),
        usdc.Initiate(B2A, AMOUNT, TransferRef(TransferRefKind.ONCHAIN_TX, VW_TX)),
        usdc.ConfirmWithdrawal(),
        usdc.InitiateBridging(BURN_TX, NONCE),
        usdc.ReceiveAttestation(b"att"),
        usdc.ConfirmBridging(MINT_TX),
        usdc.InitiateDeposit(TransferRef(TransferRefKind.ONCHAIN_TX, AD_TX)),
    ):
        state, _ = run(state, command)
    assert usdc.step_of(state) == S.DEPOSIT_INITIATED
    with pytest.raises(usdc.ConversionNotValid):
        usdc.handle(state, BUY, T0)
    state, _ = run(state, usdc.InitiateConversion("usdc-sell-op", "sell", AMOUNT))
    with pytest.raises(usdc.ConversionPending):
        usdc.handle(state, usdc.ConfirmDeposit(AMOUNT), T0)
    sold = usdc.ConfirmConversion("ord-2", AMOUNT, Decimal("0.999"), AMOUNT, Decimal(999))
    state, (confirmed,) = run(state, sold)
    assert confirmed.cost == Decimal(1)
    state, _ = run(state, usdc.ConfirmDeposit(Decimal(999)))
    assert usdc.step_of(state) == S.DEPOSIT_CONFIRMED
    assert state.value.amounts.deposited == Decimal(999)

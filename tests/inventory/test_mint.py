"""TokenizedEquityMint aggregate (spec 4.2 and 15.1: a mint ends in the vault; section-13 Mint
checklist, timeout/reconcile)."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from inventory.domain import events as ev
from inventory.domain import mint, onchain_tx
from inventory.domain.events import TxPurpose
from inventory.domain.lifecycle import Lifecycle, LifecycleError, LifecycleErrorKind
from inventory.domain.values import InvalidValue

T0 = datetime(2025, 1, 2, 14, 30, tzinfo=UTC)
WALLET = "0x" + "11" * 20
TX = "0x" + "cd" * 32
APPROVAL_TX = "0x" + "a1" * 32
DEPOSIT_TX = "0x" + "d1" * 32
VAULT = "0x" + "0b" * 20
VAULT_ID = "0x" + "77" * 32
S = mint.MintStep


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def run(state, command, now=T0):
    events = mint.handle(state, command, now)
    for event in events:
        state = mint.apply(state, event)
    return state, events


REQUEST = mint.RequestMint("AAPL", Decimal("30"), WALLET)
ACK = mint.AcknowledgeAcceptance("iss-1", "tok-1")
RECEIVE = mint.ReceiveTokens(TX, 0, 30 * 10**18)
FINALIZE = mint.Finalize()
APPROVE = mint.RecordVaultApproval(b"\x02approve", APPROVAL_TX)
SUBMIT = mint.SubmitVaultDeposit(VAULT, VAULT_ID, 30 * 10**18, b"\x02deposit", DEPOSIT_TX)
CONFIRM = mint.ConfirmVaultDeposit()
NEW_APPROVAL_TX = "0x" + "a2" * 32
NEW_DEPOSIT_TX = "0x" + "d2" * 32
REPLACE_APPROVAL = onchain_tx.ReplaceTransaction(
    TxPurpose.APPROVE_VAULT, b"\x02approve-bumped", NEW_APPROVAL_TX
)
REPLACE_DEPOSIT = onchain_tx.ReplaceTransaction(
    TxPurpose.VAULT_DEPOSIT, b"\x02deposit-bumped", NEW_DEPOSIT_TX
)
FAIL_DEPOSIT = mint.FailVaultDeposit("vault deposit reverted")
REJECT = mint.RejectMint("insufficient position")
FAIL_ACCEPTANCE = mint.FailAcceptance("alpaca rejected")
TIMEOUT = mint.TimeOutMint("no outcome after 2h")
RECONCILE = mint.ReconcileMint("tokens arrived, checked by hand", "alice")

ALL_COMMANDS = [
    REQUEST,
    REJECT,
    ACK,
    FAIL_ACCEPTANCE,
    RECEIVE,
    FINALIZE,
    APPROVE,
    REPLACE_APPROVAL,
    SUBMIT,
    REPLACE_DEPOSIT,
    CONFIRM,
    FAIL_DEPOSIT,
    TIMEOUT,
    RECONCILE,
]

# How to reach each state from Uninitialized.
PATHS = {
    "Uninitialized": [],
    "MintRequested": [REQUEST],
    "MintAccepted": [REQUEST, ACK],
    "TokensReceived": [REQUEST, ACK, RECEIVE],
    "VaultDepositSubmitted": [REQUEST, ACK, RECEIVE, SUBMIT],
    "Completed": [REQUEST, ACK, RECEIVE, SUBMIT, CONFIRM],
    "Failed(rejected)": [REQUEST, REJECT],
    "Failed(acceptance)": [REQUEST, ACK, FAIL_ACCEPTANCE],
    "Failed(timed out)": [REQUEST, ACK, TIMEOUT],
    "Failed(vault deposit)": [REQUEST, ACK, RECEIVE, SUBMIT, FAIL_DEPOSIT],
    "Reconciled": [REQUEST, ACK, TIMEOUT, RECONCILE],
}


def reach(name: str) -> Lifecycle:
    state = Lifecycle.uninitialized()
    for minute, command in enumerate(PATHS[name]):
        state, _ = run(state, command, at(minute))
    return state


# --- happy path -----------------------------------------------------------------------------


def test_request_mint_from_uninitialized():
    state, events = run(Lifecycle.uninitialized(), REQUEST)
    assert events == [ev.MintRequested("AAPL", Decimal(30), WALLET, T0)]
    assert state.live_value() == mint.MintRequested("AAPL", Decimal(30), WALLET, T0)


def test_acknowledge_acceptance_after_request():
    state, events = run(reach("MintRequested"), ACK, at(5))
    assert events == [ev.MintAccepted("iss-1", "tok-1", at(5))]
    assert state.live_value() == mint.MintAccepted(
        "AAPL", Decimal(30), WALLET, at(0), "iss-1", "tok-1", at(5)
    )


def test_receive_tokens_after_acceptance():
    state, events = run(reach("MintAccepted"), RECEIVE, at(9))
    assert events == [ev.TokensReceived(TX, 0, 30 * 10**18, at(9))]
    received = state.live_value()
    assert isinstance(received, mint.TokensReceived)
    assert (received.tx_hash, received.receipt_id, received.shares_minted) == (TX, 0, 30 * 10**18)
    assert received.tokenization_request_id == "tok-1"


def test_finalize_is_refused_because_a_mint_ends_in_the_vault():
    with pytest.raises(mint.VaultDepositRequired) as caught:
        mint.handle(reach("TokensReceived"), FINALIZE, at(20))
    assert "vault" in str(caught.value)


def test_vault_approval_is_stored_on_tokens_received():
    state, events = run(reach("TokensReceived"), APPROVE, at(10))
    assert events == [ev.VaultApprovalSigned(b"\x02approve", APPROVAL_TX, at(10))]
    received = state.live_value()
    assert isinstance(received, mint.TokensReceived)
    assert (received.approval_raw_tx, received.approval_tx_hash) == (b"\x02approve", APPROVAL_TX)
    assert mint.step_of(state) is S.TOKENS_RECEIVED


def test_submit_vault_deposit_stores_the_signed_deposit():
    state, events = run(reach("TokensReceived"), SUBMIT, at(11))
    assert events == [
        ev.VaultDepositSubmitted(VAULT, VAULT_ID, 30 * 10**18, b"\x02deposit", DEPOSIT_TX, at(11))
    ]
    submitted = state.live_value()
    assert isinstance(submitted, mint.VaultDepositSubmitted)
    assert (submitted.vault, submitted.vault_id, submitted.deposit_units) == (
        VAULT,
        VAULT_ID,
        30 * 10**18,
    )
    assert (submitted.deposit_raw_tx, submitted.deposit_tx_hash) == (b"\x02deposit", DEPOSIT_TX)
    assert not mint.is_terminal(state)


def test_deposited_into_vault_completes_the_mint():
    state, events = run(reach("VaultDepositSubmitted"), CONFIRM, at(20))
    assert events == [ev.DepositedIntoVault(at(20), DEPOSIT_TX)]  # names the mined deposit
    assert state.live_value() == mint.Completed(
        symbol="AAPL",
        quantity=Decimal(30),
        wallet=WALLET,
        issuer_request_id="iss-1",
        tokenization_request_id="tok-1",
        tx_hash=TX,
        receipt_id=0,
        shares_minted=30 * 10**18,
        requested_at=at(0),
        completed_at=at(20),
        deposit_tx_hash=DEPOSIT_TX,
    )
    assert ev.DepositedIntoVault.TERMINAL


@pytest.mark.parametrize("from_state", ["TokensReceived", "VaultDepositSubmitted"])
def test_failed_vault_deposit_keeps_inflight_for_an_operator(from_state):
    state, events = run(reach(from_state), FAIL_DEPOSIT, at(25))
    assert events == [ev.VaultDepositFailed("vault deposit reverted", at(25))]
    failed = state.live_value()
    assert isinstance(failed, mint.Failed)
    assert failed.inflight_kept is True
    assert failed.tokenization_request_id == "tok-1"
    assert mint.is_terminal(state) and mint.can_reconcile(state)
    reconciled, _ = run(state, RECONCILE, at(30))
    assert mint.step_of(reconciled) is S.RECONCILED


def test_trigger_era_log_ending_in_the_wallet_still_replays():
    events = [
        ev.MintRequested("AAPL", Decimal(30), WALLET, at(0)),
        ev.MintAccepted("iss-1", "tok-1", at(1)),
        ev.TokensReceived(TX, 0, 30 * 10**18, at(2)),
        ev.MintCompleted(at(3)),
    ]
    state = mint.SPEC.fold(events)
    completed = state.live_value()
    assert isinstance(completed, mint.Completed)
    assert completed.deposit_tx_hash is None
    assert mint.is_terminal(state)


def test_complete_mint_flow_end_to_end():
    history = []
    state = Lifecycle.uninitialized()
    for minute, command in enumerate([REQUEST, ACK, RECEIVE, APPROVE, SUBMIT, CONFIRM]):
        state, events = run(state, command, at(minute))
        history.extend(events)
    assert [type(e) for e in history] == [
        ev.MintRequested,
        ev.MintAccepted,
        ev.TokensReceived,
        ev.VaultApprovalSigned,
        ev.VaultDepositSubmitted,
        ev.DepositedIntoVault,
    ]
    assert mint.SPEC.fold(history) == state
    assert mint.step_of(state) is S.COMPLETED
    assert mint.is_terminal(state)
    assert mint.genesis_of(state) == ("AAPL", Decimal(30))


# --- refusals named in the checklist --------------------------------------------------------


def test_cannot_acknowledge_before_request():
    with pytest.raises(mint.NotRequested):
        mint.handle(Lifecycle.uninitialized(), ACK, T0)


def test_cannot_receive_tokens_before_acceptance():
    with pytest.raises(mint.NotAccepted):
        mint.handle(reach("MintRequested"), RECEIVE, T0)


def test_cannot_finalize_before_tokens_received():
    with pytest.raises(mint.TokensNotReceived):
        mint.handle(reach("MintAccepted"), FINALIZE, T0)


def test_reject_mint_from_requested_state():
    state, events = run(reach("MintRequested"), REJECT, at(3))
    assert events == [ev.MintRejected("insufficient position", at(3))]
    assert state.live_value() == mint.Failed(
        "AAPL", Decimal(30), "insufficient position", at(0), at(3), None, None, False
    )


def test_fail_acceptance_from_accepted_state():
    state, events = run(reach("MintAccepted"), FAIL_ACCEPTANCE, at(7))
    assert events == [ev.MintAcceptanceFailed("alpaca rejected", at(7))]
    failed = state.live_value()
    assert failed == mint.Failed(
        "AAPL", Decimal(30), "alpaca rejected", at(0), at(7), "iss-1", "tok-1", False
    )


def test_cannot_reject_mint_when_completed():
    with pytest.raises(mint.AlreadyCompleted):
        mint.handle(reach("Completed"), REJECT, T0)


def test_cannot_reject_mint_when_already_failed():
    with pytest.raises(mint.AlreadyFailed):
        mint.handle(reach("Failed(rejected)"), REJECT, T0)


def test_cannot_reject_mint_before_request():
    with pytest.raises(mint.NotRequested):
        mint.handle(Lifecycle.uninitialized(), REJECT, T0)


def test_cannot_fail_acceptance_before_acceptance():
    with pytest.raises(mint.NotAccepted):
        mint.handle(reach("MintRequested"), FAIL_ACCEPTANCE, T0)


# --- the full command validation table (spec 4.2 + additions) -------------------------------

OK = None
AIP, NR, NA = mint.AlreadyInProgress, mint.NotRequested, mint.NotAccepted
TNR, AC, AF = mint.TokensNotReceived, mint.AlreadyCompleted, mint.AlreadyFailed
AR, NREC = mint.AlreadyReconciled, mint.NotReconcilable
VDR, VNS = mint.VaultDepositRequired, mint.VaultDepositNotSubmitted
VANS = mint.VaultApprovalNotSigned

STATES = list(PATHS)
TABLE = {
    #        U     Req   Acc   Recv  Sub   Done  F(rej) F(acc) F(to) F(dep) Reconciled
    "RequestMint": [OK, AIP, AIP, AIP, AIP, AIP, AIP, AIP, AIP, AIP, AR],
    "RejectMint": [NR, OK, AC, AC, AC, AC, AF, AF, AF, AF, AR],
    "AcknowledgeAcceptance": [NR, OK, AC, AC, AC, AC, AF, AF, AF, AF, AR],
    "FailAcceptance": [NA, NA, OK, AC, AC, AC, AF, AF, AF, AF, AR],
    "ReceiveTokens": [NA, NA, OK, AC, AC, AC, AF, AF, AF, AF, AR],
    "Finalize": [TNR, TNR, TNR, VDR, AC, AC, AF, AF, AF, AF, AR],
    "RecordVaultApproval": [TNR, TNR, TNR, OK, AC, AC, AF, AF, AF, AF, AR],
    "ReplaceTransaction:approve_vault": [TNR, TNR, TNR, VANS, AC, AC, AF, AF, AF, AF, AR],
    "SubmitVaultDeposit": [TNR, TNR, TNR, OK, AC, AC, AF, AF, AF, AF, AR],
    "ReplaceTransaction:vault_deposit": [VNS, VNS, VNS, VNS, OK, AC, AF, AF, AF, AF, AR],
    "ConfirmVaultDeposit": [VNS, VNS, VNS, VNS, OK, AC, AF, AF, AF, AF, AR],
    "FailVaultDeposit": [TNR, TNR, TNR, OK, OK, AC, AF, AF, AF, AF, AR],
    "TimeOutMint": [NA, NA, OK, AC, AC, AC, AF, AF, AF, AF, AR],
    "ReconcileMint": [NREC, NREC, NREC, NREC, NREC, NREC, NREC, NREC, OK, OK, AR],
}


def row_of(command):
    """The table's row: the command's name (and purpose, for the shared replacement)."""
    name = type(command).__name__
    purpose = getattr(command, "purpose", None)
    return name if purpose is None else f"{name}:{purpose}"


CASES = [
    (command, state, TABLE[row_of(command)][index])
    for command in ALL_COMMANDS
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
        events = mint.handle(state, command, at(30))
        assert len(events) == 1
        assert not mint.apply(state, events[0]).is_failed
    else:
        with pytest.raises(expected) as caught:
            mint.handle(state, command, at(30))
        assert caught.value.command == type(command).__name__
        assert caught.value.state in str(caught.value)


@pytest.mark.parametrize(
    "state_name",
    [
        "Completed",
        "Failed(rejected)",
        "Failed(acceptance)",
        "Failed(timed out)",
        "Failed(vault deposit)",
        "Reconciled",
    ],
)
def test_terminal_states_reject_every_command_except_reconciling_kept_inflight(state_name):
    state = reach(state_name)
    assert mint.is_terminal(state)
    for command in ALL_COMMANDS:
        if state_name in ("Failed(timed out)", "Failed(vault deposit)") and command is RECONCILE:
            continue
        with pytest.raises(mint.MintError):
            mint.handle(state, command, at(30))


# --- timeout and reconcile ------------------------------------------------------------------


def test_time_out_mint_from_accepted_fails_keeping_inflight():
    state, events = run(reach("MintAccepted"), TIMEOUT, at(120))
    assert events == [ev.MintTimedOut("no outcome after 2h", at(120))]
    failed = state.live_value()
    assert isinstance(failed, mint.Failed)
    assert failed.inflight_kept is True
    assert failed.tokenization_request_id == "tok-1"
    assert mint.is_terminal(state)
    assert mint.can_reconcile(state)


def test_reconcile_mint_after_timeout_reaches_reconciled():
    timed_out = reach("Failed(timed out)")
    state, events = run(timed_out, RECONCILE, at(300))
    assert events == [ev.MintReconciled("tokens arrived, checked by hand", "alice", at(300))]
    reconciled = state.live_value()
    assert reconciled == mint.Reconciled(
        symbol="AAPL",
        quantity=Decimal(30),
        failed=timed_out.live_value(),
        reason="tokens arrived, checked by hand",
        operator="alice",
        reconciled_at=at(300),
    )
    assert mint.step_of(state) is S.RECONCILED
    assert mint.is_terminal(state)
    assert mint.genesis_of(state) == ("AAPL", Decimal(30))


@pytest.mark.parametrize("state_name", ["Failed(rejected)", "Failed(acceptance)"])
def test_reconcile_refused_where_inflight_was_not_kept(state_name):
    state = reach(state_name)
    assert not mint.can_reconcile(state)
    with pytest.raises(mint.NotReconcilable) as caught:
        mint.handle(state, RECONCILE, T0)
    assert caught.value.inflight_kept is False
    assert "AAPL" in str(caught.value)


def test_apply_reconciled_on_failure_without_inflight_corrupts():
    result = mint.apply(reach("Failed(rejected)"), ev.MintReconciled("r", "op", T0))
    assert result.is_failed and result.error.kind is LifecycleErrorKind.MISMATCH


@pytest.mark.parametrize(
    ("command", "field"),
    [
        (mint.ReconcileMint("", "alice"), "reason"),
        (mint.ReconcileMint("why", " "), "operator"),
    ],
)
def test_reconcile_requires_reason_and_operator(command, field):
    with pytest.raises(InvalidValue) as caught:
        mint.handle(reach("Failed(timed out)"), command, T0)
    assert caught.value.field == field


# --- apply rejects events in the wrong state ------------------------------------------------


@pytest.mark.parametrize(
    ("event", "wrong_states"),
    [
        (
            ev.MintAccepted("i", "t", T0),
            ["MintAccepted", "TokensReceived", "Completed", "Failed(rejected)"],
        ),
        (
            ev.MintRejected("r", T0),
            ["MintAccepted", "TokensReceived", "Completed", "Failed(rejected)"],
        ),
        (
            ev.TokensReceived(TX, 0, 1, T0),
            ["MintRequested", "TokensReceived", "Completed", "Failed(timed out)"],
        ),
        (
            ev.MintAcceptanceFailed("r", T0),
            ["MintRequested", "TokensReceived", "Completed", "Failed(timed out)"],
        ),
        (
            ev.MintCompleted(T0),
            ["MintRequested", "MintAccepted", "VaultDepositSubmitted", "Completed"],
        ),
        (
            ev.VaultDepositSubmitted(VAULT, VAULT_ID, 1, b"\x01", DEPOSIT_TX, T0),
            ["MintAccepted", "VaultDepositSubmitted", "Completed", "Failed(timed out)"],
        ),
        (
            ev.DepositedIntoVault(T0),
            ["MintAccepted", "TokensReceived", "Completed", "Failed(vault deposit)"],
        ),
        (
            ev.VaultDepositFailed("r", T0),
            ["MintRequested", "MintAccepted", "Completed", "Failed(vault deposit)"],
        ),
    ],
    ids=[
        "test_apply_mint_accepted_rejects_wrong_state",
        "test_apply_mint_rejected_rejects_wrong_state",
        "test_apply_tokens_received_rejects_wrong_state",
        "test_apply_mint_acceptance_failed_rejects_wrong_state",
        "test_apply_mint_completed_rejects_wrong_state",
        "test_apply_vault_deposit_submitted_rejects_wrong_state",
        "test_apply_deposited_into_vault_rejects_wrong_state",
        "test_apply_vault_deposit_failed_rejects_wrong_state",
    ],
)
def test_apply_rejects_wrong_state(event, wrong_states):
    for name in wrong_states:
        state = reach(name)
        result = mint.apply(state, event)
        assert result.is_failed, name
        assert result.error.kind is LifecycleErrorKind.MISMATCH
        assert result.last_valid_state == state.value


def test_apply_transition_rejects_mint_requested_event():
    state = reach("MintAccepted")
    result = mint.apply(state, ev.MintRequested("AAPL", Decimal(1), WALLET, T0))
    assert result.is_failed
    assert result.error.kind is LifecycleErrorKind.MISMATCH
    assert result.last_valid_state == state.value


def test_apply_non_genesis_event_on_uninitialized_corrupts_without_state():
    result = mint.apply(Lifecycle.uninitialized(), ev.MintCompleted(T0))
    assert result.is_failed and result.last_valid_state is None
    assert mint.step_of(result) is S.CORRUPTED


def test_corrupted_mint_is_sticky_and_refuses_every_command():
    state = mint.apply(reach("MintAccepted"), ev.MintCompleted(T0))
    assert mint.apply(state, ev.TokensReceived(TX, 0, 1, T0)) == state
    for command in ALL_COMMANDS:
        with pytest.raises(LifecycleError):
            mint.handle(state, command, T0)
    assert mint.genesis_of(state) == ("AAPL", Decimal(30))
    assert not mint.is_terminal(state)


# --- values ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "field"),
    [
        (mint.RequestMint("", Decimal(1), WALLET), "symbol"),
        (mint.RequestMint("AAPL", Decimal(0), WALLET), "quantity"),
        (mint.RequestMint("AAPL", Decimal(-3), WALLET), "quantity"),
        (mint.RequestMint("AAPL", Decimal("NaN"), WALLET), "quantity"),
        (mint.RequestMint("AAPL", Decimal(1), "0x1234"), "wallet"),
    ],
)
def test_request_mint_rejects_invalid_values(command, field):
    with pytest.raises(InvalidValue) as caught:
        mint.handle(Lifecycle.uninitialized(), command, T0)
    assert caught.value.field == field
    assert repr(caught.value.value) in str(caught.value)


@pytest.mark.parametrize(
    ("command", "field"),
    [
        (mint.ReceiveTokens("0xabc", 0, 1), "tx_hash"),
        (mint.ReceiveTokens(TX, -1, 1), "receipt_id"),
        (mint.ReceiveTokens(TX, 0, 0), "shares_minted"),
        (mint.ReceiveTokens(TX, 0, 2**256), "shares_minted"),
    ],
)
def test_receive_tokens_rejects_invalid_values(command, field):
    with pytest.raises(InvalidValue) as caught:
        mint.handle(reach("MintAccepted"), command, T0)
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("command", "field"),
    [
        (mint.SubmitVaultDeposit("0x12", VAULT_ID, 1, b"\x01", DEPOSIT_TX), "vault"),
        (mint.SubmitVaultDeposit(VAULT, "0x77", 1, b"\x01", DEPOSIT_TX), "vault_id"),
        (mint.SubmitVaultDeposit(VAULT, VAULT_ID, 0, b"\x01", DEPOSIT_TX), "amount_units"),
        (mint.SubmitVaultDeposit(VAULT, VAULT_ID, 1, b"", DEPOSIT_TX), "raw_tx"),
        (mint.SubmitVaultDeposit(VAULT, VAULT_ID, 1, b"\x01", "0xab"), "tx_hash"),
        (mint.RecordVaultApproval(b"", APPROVAL_TX), "raw_tx"),
        (mint.FailVaultDeposit(" "), "reason"),
    ],
)
def test_vault_deposit_commands_reject_invalid_values(command, field):
    with pytest.raises(InvalidValue) as caught:
        mint.handle(reach("TokensReceived"), command, T0)
    assert caught.value.field == field


def test_acknowledge_acceptance_requires_both_ids():
    with pytest.raises(InvalidValue) as caught:
        mint.handle(reach("MintRequested"), mint.AcknowledgeAcceptance("iss", ""), T0)
    assert caught.value.field == "tokenization_request_id"


# --- helpers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state_name", "step", "terminal"),
    [
        ("Uninitialized", S.UNINITIALIZED, False),
        ("MintRequested", S.REQUESTED, False),
        ("MintAccepted", S.ACCEPTED, False),
        ("TokensReceived", S.TOKENS_RECEIVED, False),
        ("VaultDepositSubmitted", S.VAULT_DEPOSIT_SUBMITTED, False),
        ("Completed", S.COMPLETED, True),
        ("Failed(rejected)", S.FAILED, True),
        ("Failed(timed out)", S.FAILED, True),
        ("Reconciled", S.RECONCILED, True),
    ],
)
def test_step_of_and_is_terminal(state_name, step, terminal):
    state = reach(state_name)
    assert mint.step_of(state) is step
    assert mint.is_terminal(state) is terminal
    assert mint.is_terminal(state.value) is terminal


def test_genesis_of_uninitialized_is_none():
    assert mint.genesis_of(Lifecycle.uninitialized()) is None


# --- a stuck vault transaction is replaced (issue 8) ----------------------------------------


def test_replace_vault_approval_stores_the_replacement_and_keeps_the_old_hash_watched():
    state, _ = run(reach("TokensReceived"), APPROVE, at(3))
    state, events = run(state, REPLACE_APPROVAL, at(5))
    assert events == [
        ev.MintTransactionReplaced(
            TxPurpose.APPROVE_VAULT, REPLACE_APPROVAL.raw_tx, NEW_APPROVAL_TX, APPROVAL_TX, at(5)
        )
    ]
    value = state.live_value()
    assert (value.approval_raw_tx, value.approval_tx_hash) == (
        REPLACE_APPROVAL.raw_tx,
        NEW_APPROVAL_TX,
    )
    assert value.approval_signed_at == at(5)
    assert value.approval_hashes() == (NEW_APPROVAL_TX, APPROVAL_TX)
    assert run(state, REPLACE_APPROVAL, at(6))[1] == []  # the stored one again: a no-op
    with pytest.raises(onchain_tx.ReplacementNotNew):
        mint.handle(state, APPROVE_AGAIN_AS_REPLACEMENT, at(6))


APPROVE_AGAIN_AS_REPLACEMENT = onchain_tx.ReplaceTransaction(
    TxPurpose.APPROVE_VAULT, b"\x02approve", APPROVAL_TX
)


def test_a_new_approval_after_a_dead_one_forgets_the_replaced_hashes():
    state, _ = run(reach("TokensReceived"), APPROVE, at(3))
    state, _ = run(state, REPLACE_APPROVAL, at(5))
    state, _ = run(state, mint.RecordVaultApproval(b"\x02fresh", "0x" + "a3" * 32), at(7))
    assert state.live_value().approval_hashes() == ("0x" + "a3" * 32,)


def test_replace_vault_deposit_keeps_the_first_signing_time_and_every_hash():
    state, events = run(reach("VaultDepositSubmitted"), REPLACE_DEPOSIT, at(5))
    assert events == [
        ev.MintTransactionReplaced(
            TxPurpose.VAULT_DEPOSIT, REPLACE_DEPOSIT.raw_tx, NEW_DEPOSIT_TX, DEPOSIT_TX, at(5)
        )
    ]
    value = state.live_value()
    assert (value.deposit_raw_tx, value.deposit_tx_hash) == (
        REPLACE_DEPOSIT.raw_tx,
        NEW_DEPOSIT_TX,
    )
    assert (value.submitted_at, value.deposit_last_signed_at) == (at(3), at(5))
    assert value.deposit_hashes() == (NEW_DEPOSIT_TX, DEPOSIT_TX)
    with pytest.raises(onchain_tx.ReplacementNotNew):
        again = onchain_tx.ReplaceTransaction(TxPurpose.VAULT_DEPOSIT, b"\x02deposit", DEPOSIT_TX)
        mint.handle(state, again, at(6))


@pytest.mark.parametrize("mined", [DEPOSIT_TX, NEW_DEPOSIT_TX])
def test_confirm_vault_deposit_names_whichever_deposit_was_mined(mined):
    state, _ = run(reach("VaultDepositSubmitted"), REPLACE_DEPOSIT, at(5))
    state, events = run(state, mint.ConfirmVaultDeposit(mined), at(6))
    assert events == [ev.DepositedIntoVault(at(6), mined)]
    assert state.live_value().deposit_tx_hash == mined


def test_confirm_vault_deposit_naming_an_unknown_deposit_is_refused():
    with pytest.raises(mint.DepositMismatch):
        mint.handle(reach("VaultDepositSubmitted"), mint.ConfirmVaultDeposit(TX), at(6))


def test_deposited_into_vault_without_a_hash_replays_as_the_stored_deposit():
    state = mint.apply(reach("VaultDepositSubmitted"), ev.DepositedIntoVault(at(6)))
    assert state.live_value().deposit_tx_hash == DEPOSIT_TX

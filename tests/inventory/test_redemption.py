"""EquityRedemption aggregate (spec 4.3, section-13 Redemption checklist, signed transfer,
transfer failure and operator reconcile). Pure, no database."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from inventory.domain import events as ev
from inventory.domain import onchain_tx
from inventory.domain import redemption as rd
from inventory.domain.events import TxPurpose
from inventory.domain.lifecycle import Lifecycle, LifecycleError, LifecycleErrorKind
from inventory.domain.values import InvalidValue

T0 = datetime(2025, 1, 2, 14, 30, tzinfo=UTC)
TOKEN = "0x" + "22" * 20
WALLET = "0x" + "33" * 20
TX = "0x" + "ef" * 32
OTHER_TX = "0x" + "01" * 32
RAW = b"\x02\xf8signed-transfer"
S = rd.RedemptionStep


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def run(state, command, now=T0):
    events = rd.handle(state, command, now)
    for event in events:
        state = rd.apply(state, event)
    return state, events


SIGN = rd.SignTransfer("AAPL", Decimal("12.5"), TOKEN, WALLET, RAW, TX)
SEND = rd.SendTokens("AAPL", Decimal("12.5"), WALLET, TX)
DETECT = rd.Detect("tok-9")
FAIL_DETECTION = rd.FailDetection("not seen by Alpaca")
COMPLETE = rd.Complete()
REJECT = rd.RejectRedemption("rejected by Alpaca")
FAIL_TRANSFER = rd.FailTransfer("transfer reverted")
RECONCILE = rd.ReconcileRedemption("shares credited by hand", "bob")

ALL_COMMANDS = [SIGN, SEND, FAIL_TRANSFER, DETECT, FAIL_DETECTION, COMPLETE, REJECT, RECONCILE]

PATHS = {
    "Uninitialized": [],
    "TransferPending": [SIGN],
    "TokensSent": [SEND],
    "Pending": [SEND, DETECT],
    "Completed": [SEND, DETECT, COMPLETE],
    "Failed(transfer)": [SIGN, FAIL_TRANSFER],
    "Failed(detection)": [SEND, FAIL_DETECTION],
    "Failed(rejected)": [SEND, DETECT, REJECT],
    "Reconciled": [SEND, FAIL_DETECTION, RECONCILE],
}


def reach(name: str) -> Lifecycle:
    state = Lifecycle.uninitialized()
    for minute, command in enumerate(PATHS[name]):
        state, _ = run(state, command, at(minute))
    return state


# --- happy path -----------------------------------------------------------------------------


def test_send_tokens_from_uninitialized():
    state, events = run(Lifecycle.uninitialized(), SEND)
    assert events == [ev.TokensSent("AAPL", Decimal("12.5"), WALLET, TX, T0)]
    assert state.live_value() == rd.TokensSent("AAPL", Decimal("12.5"), WALLET, TX, T0)


def test_detect_after_tokens_sent():
    state, events = run(reach("TokensSent"), DETECT, at(4))
    assert events == [ev.Detected("tok-9", at(4))]
    assert state.live_value() == rd.Pending("AAPL", Decimal("12.5"), TX, "tok-9", at(0), at(4))


def test_complete_after_pending():
    state, events = run(reach("Pending"), COMPLETE, at(9))
    assert events == [ev.Completed(at(9))]
    assert state.live_value() == rd.Completed("AAPL", Decimal("12.5"), TX, "tok-9", at(9))


def test_complete_redemption_flow_end_to_end():
    history = []
    state = Lifecycle.uninitialized()
    for minute, command in enumerate([SIGN, SEND, DETECT, COMPLETE]):
        state, events = run(state, command, at(minute))
        history.extend(events)
    assert [type(e) for e in history] == [
        ev.TransferSigned,
        ev.TokensSent,
        ev.Detected,
        ev.Completed,
    ]
    assert rd.SPEC.fold(history) == state
    assert rd.step_of(state) is S.COMPLETED
    assert rd.is_terminal(state)
    assert rd.genesis_of(state) == ("AAPL", Decimal("12.5"))


def test_cannot_detect_before_send():
    with pytest.raises(rd.TokensNotSent):
        rd.handle(Lifecycle.uninitialized(), DETECT, T0)


def test_cannot_complete_before_pending():
    with pytest.raises(rd.NotPending):
        rd.handle(reach("TokensSent"), COMPLETE, T0)


def test_fail_detection_from_tokens_sent():
    state, events = run(reach("TokensSent"), FAIL_DETECTION, at(6))
    assert events == [ev.DetectionFailed("not seen by Alpaca", at(6))]
    assert state.live_value() == rd.Failed(
        "AAPL", Decimal("12.5"), TX, None, "not seen by Alpaca", at(0), at(6), True
    )


def test_reject_redemption_from_pending():
    state, events = run(reach("Pending"), REJECT, at(8))
    assert events == [ev.RedemptionRejected("rejected by Alpaca", at(8))]
    assert rd.step_of(state) is S.FAILED


def test_cannot_reject_before_pending():
    with pytest.raises(rd.NotPendingForRejection):
        rd.handle(reach("TokensSent"), REJECT, T0)


def test_redemption_rejected_preserves_context_with_tokenization_id():
    failed = reach("Failed(rejected)").live_value()
    assert failed == rd.Failed(
        symbol="AAPL",
        quantity=Decimal("12.5"),
        tx_hash=TX,
        tokenization_request_id="tok-9",
        reason="rejected by Alpaca",
        sent_at=at(0),
        failed_at=at(2),
        inflight_kept=True,
    )


@pytest.mark.parametrize(
    ("command", "error"),
    [(FAIL_DETECTION, rd.TokensNotSent), (REJECT, rd.NotPendingForRejection)],
    ids=["cannot_fail_detection_before_sending", "cannot_reject_before_sending"],
)
def test_cannot_fail_or_reject_before_sending(command, error):
    with pytest.raises(error):
        rd.handle(Lifecycle.uninitialized(), command, T0)


# --- the full command validation table ------------------------------------------------------

OK = None
AIP, AC, AF, AR = rd.AlreadyInProgress, rd.AlreadyCompleted, rd.AlreadyFailed, rd.AlreadyReconciled
TNS, NP, NPR = rd.TokensNotSent, rd.NotPending, rd.NotPendingForRejection
TNSIG, NREC = rd.TransferNotSigned, rd.NotReconcilable

STATES = list(PATHS)
TABLE = {
    #                 U      TrPend TSent Pend Done  F(tr) F(det) F(rej) Reconciled
    "SignTransfer": [OK, AIP, AIP, AIP, AIP, AIP, AIP, AIP, AR],
    "SendTokens": [OK, OK, AC, AC, AC, AF, AF, AF, AR],
    "FailTransfer": [TNSIG, OK, AC, AC, AC, AF, AF, AF, AR],
    "Detect": [TNS, TNS, OK, AC, AC, AF, AF, AF, AR],
    "FailDetection": [TNS, TNS, OK, AC, AC, AF, AF, AF, AR],
    "Complete": [NP, NP, NP, OK, AC, AF, AF, AF, AR],
    "RejectRedemption": [NPR, NPR, NPR, OK, AC, AF, AF, AF, AR],
    "ReconcileRedemption": [NREC, NREC, NREC, NREC, NREC, NREC, OK, OK, AR],
}
CASES = [
    (command, state, TABLE[type(command).__name__][index])
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
        events = rd.handle(state, command, at(30))
        assert len(events) == 1
        assert not rd.apply(state, events[0]).is_failed
    else:
        with pytest.raises(expected) as caught:
            rd.handle(state, command, at(30))
        assert caught.value.command == type(command).__name__


@pytest.mark.parametrize(
    "state_name",
    ["Completed", "Failed(transfer)", "Failed(detection)", "Failed(rejected)", "Reconciled"],
)
def test_terminal_states_reject_every_command_except_reconcile_with_inflight(state_name):
    state = reach(state_name)
    assert rd.is_terminal(state)
    for command in ALL_COMMANDS:
        if command is RECONCILE and rd.can_reconcile(state):
            continue
        with pytest.raises(rd.RedemptionError):
            rd.handle(state, command, at(30))


# --- signed transfer ------------------------------------------------------------------------


def test_sign_transfer_from_uninitialized_stores_the_signed_bytes():
    state, events = run(Lifecycle.uninitialized(), SIGN, at(1))
    assert events == [ev.TransferSigned("AAPL", Decimal("12.5"), TOKEN, WALLET, RAW, TX, at(1))]
    pending = state.live_value()
    assert pending == rd.TransferPending("AAPL", Decimal("12.5"), TOKEN, WALLET, RAW, TX, at(1))
    assert rd.step_of(state) is S.TRANSFER_PENDING
    assert not rd.is_terminal(state)
    assert not rd.tokens_sent(state)
    assert rd.genesis_of(state) == ("AAPL", Decimal("12.5"))


def test_send_tokens_from_transfer_pending_records_tokens_sent():
    state, events = run(reach("TransferPending"), SEND, at(3))
    assert events == [ev.TokensSent("AAPL", Decimal("12.5"), WALLET, TX, at(3))]
    assert state.live_value() == rd.TokensSent("AAPL", Decimal("12.5"), WALLET, TX, at(3))
    assert rd.tokens_sent(state)


def test_send_tokens_matches_signed_hash_case_insensitively():
    run(
        reach("TransferPending"),
        rd.SendTokens("AAPL", Decimal("12.5"), WALLET, TX.upper().replace("0X", "0x")),
    )


@pytest.mark.parametrize(
    ("command", "field"),
    [
        (rd.SendTokens("AAPL", Decimal("12.5"), WALLET, OTHER_TX), "tx_hash"),
        (rd.SendTokens("MSFT", Decimal("12.5"), WALLET, TX), "symbol"),
        (rd.SendTokens("AAPL", Decimal("12"), WALLET, TX), "quantity"),
        (rd.SendTokens("AAPL", Decimal("12.5"), TOKEN, TX), "redemption_wallet"),
    ],
)
def test_send_tokens_from_transfer_pending_must_name_the_signed_transfer(command, field):
    with pytest.raises(rd.SignedTransferMismatch) as caught:
        rd.handle(reach("TransferPending"), command, T0)
    assert caught.value.field == field
    assert str(caught.value.expected) in str(caught.value)
    assert str(caught.value.actual) in str(caught.value)


def test_apply_tokens_sent_with_other_hash_on_transfer_pending_corrupts():
    result = rd.apply(
        reach("TransferPending"), ev.TokensSent("AAPL", Decimal("12.5"), WALLET, OTHER_TX, T0)
    )
    assert result.is_failed and result.error.kind is LifecycleErrorKind.MISMATCH


def test_fail_transfer_from_transfer_pending_is_terminal_with_nothing_inflight():
    state, events = run(reach("TransferPending"), FAIL_TRANSFER, at(5))
    assert events == [ev.TransferFailed("transfer reverted", at(5))]
    failed = state.live_value()
    assert failed == rd.Failed(
        "AAPL", Decimal("12.5"), TX, None, "transfer reverted", None, at(5), inflight_kept=False
    )
    assert rd.is_terminal(state)
    assert not rd.tokens_sent(state)
    assert not rd.can_reconcile(state)


@pytest.mark.parametrize(
    ("command", "field"),
    [
        (rd.SignTransfer("", Decimal(1), TOKEN, WALLET, RAW, TX), "symbol"),
        (rd.SignTransfer("AAPL", Decimal(0), TOKEN, WALLET, RAW, TX), "quantity"),
        (rd.SignTransfer("AAPL", Decimal("-2"), TOKEN, WALLET, RAW, TX), "quantity"),
        (rd.SignTransfer("AAPL", Decimal(1), "0x12", WALLET, RAW, TX), "token"),
        (rd.SignTransfer("AAPL", Decimal(1), TOKEN, "wallet", RAW, TX), "redemption_wallet"),
        (rd.SignTransfer("AAPL", Decimal(1), TOKEN, WALLET, b"", TX), "raw_tx"),
        (rd.SignTransfer("AAPL", Decimal(1), TOKEN, WALLET, RAW, "0x"), "tx_hash"),
    ],
)
def test_sign_transfer_rejects_invalid_values(command, field):
    with pytest.raises(InvalidValue) as caught:
        rd.handle(Lifecycle.uninitialized(), command, T0)
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("command", "field"),
    [
        (rd.SendTokens("AAPL", Decimal("Inf"), WALLET, TX), "quantity"),
        (rd.SendTokens("AAPL", Decimal(1), WALLET, "0xzz"), "tx_hash"),
    ],
)
def test_send_tokens_rejects_invalid_values(command, field):
    with pytest.raises(InvalidValue) as caught:
        rd.handle(Lifecycle.uninitialized(), command, T0)
    assert caught.value.field == field


# --- reconcile ------------------------------------------------------------------------------


@pytest.mark.parametrize("failed_state", ["Failed(detection)", "Failed(rejected)"])
def test_reconcile_after_tokens_were_sent_reaches_reconciled(failed_state):
    before = reach(failed_state)
    state, events = run(before, RECONCILE, at(60))
    assert events == [ev.RedemptionReconciled("shares credited by hand", "bob", at(60))]
    assert state.live_value() == rd.Reconciled(
        "AAPL", Decimal("12.5"), before.live_value(), "shares credited by hand", "bob", at(60)
    )
    assert rd.step_of(state) is S.RECONCILED
    assert rd.is_terminal(state)


def test_reconcile_refused_after_transfer_failed():
    with pytest.raises(rd.NotReconcilable) as caught:
        rd.handle(reach("Failed(transfer)"), RECONCILE, T0)
    assert caught.value.inflight_kept is False


def test_apply_reconciled_after_transfer_failed_corrupts():
    result = rd.apply(reach("Failed(transfer)"), ev.RedemptionReconciled("r", "op", T0))
    assert result.is_failed


# --- apply rejects events in the wrong state ------------------------------------------------


@pytest.mark.parametrize(
    ("event", "wrong_states"),
    [
        (ev.Detected("t", T0), ["TransferPending", "Pending", "Completed", "Failed(detection)"]),
        (
            ev.DetectionFailed("r", T0),
            ["TransferPending", "Pending", "Completed", "Failed(rejected)"],
        ),
        (ev.Completed(T0), ["TransferPending", "TokensSent", "Completed", "Failed(rejected)"]),
        (
            ev.RedemptionRejected("r", T0),
            ["TransferPending", "TokensSent", "Completed", "Failed(detection)"],
        ),
        (ev.TransferFailed("r", T0), ["TokensSent", "Pending", "Completed", "Failed(transfer)"]),
    ],
    ids=[
        "test_apply_detected_rejects_wrong_state",
        "test_apply_detection_failed_rejects_wrong_state",
        "test_apply_completed_rejects_wrong_state",
        "test_apply_redemption_rejected_rejects_wrong_state",
        "test_apply_transfer_failed_rejects_wrong_state",
    ],
)
def test_apply_rejects_wrong_state(event, wrong_states):
    for name in wrong_states:
        state = reach(name)
        result = rd.apply(state, event)
        assert result.is_failed, name
        assert result.error.kind is LifecycleErrorKind.MISMATCH
        assert result.last_valid_state == state.value


@pytest.mark.parametrize(
    "genesis",
    [
        ev.TokensSent("AAPL", Decimal(1), WALLET, TX, T0),
        ev.TransferSigned("AAPL", Decimal(1), TOKEN, WALLET, RAW, TX, T0),
    ],
)
def test_apply_transition_rejects_tokens_sent_event(genesis):
    state = reach("Pending")
    result = rd.apply(state, genesis)
    assert result.is_failed
    assert result.error.kind is LifecycleErrorKind.MISMATCH
    assert result.last_valid_state == state.value


@pytest.mark.parametrize(
    "event",
    [
        ev.Detected("t", T0),
        ev.DetectionFailed("r", T0),
        ev.Completed(T0),
        ev.RedemptionRejected("r", T0),
        ev.TransferFailed("r", T0),
        ev.RedemptionReconciled("r", "op", T0),
    ],
)
def test_from_event_rejects_non_init_events(event):
    result = rd.apply(Lifecycle.uninitialized(), event)
    assert result.is_failed
    assert result.error.kind is LifecycleErrorKind.MISMATCH
    assert result.last_valid_state is None
    assert rd.step_of(result) is S.CORRUPTED


def test_corrupted_redemption_is_sticky_and_refuses_every_command():
    state = rd.apply(reach("Pending"), ev.Detected("again", T0))
    assert rd.apply(state, ev.Completed(T0)) == state
    for command in ALL_COMMANDS:
        with pytest.raises(LifecycleError):
            rd.handle(state, command, T0)
    assert rd.genesis_of(state) == ("AAPL", Decimal("12.5"))
    assert not rd.is_terminal(state)


# --- helpers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state_name", "step", "terminal", "sent"),
    [
        ("Uninitialized", S.UNINITIALIZED, False, False),
        ("TransferPending", S.TRANSFER_PENDING, False, False),
        ("TokensSent", S.TOKENS_SENT, False, True),
        ("Pending", S.PENDING, False, True),
        ("Completed", S.COMPLETED, True, True),
        ("Failed(transfer)", S.FAILED, True, False),
        ("Failed(detection)", S.FAILED, True, True),
        ("Failed(rejected)", S.FAILED, True, True),
        ("Reconciled", S.RECONCILED, True, True),
    ],
)
def test_step_of_is_terminal_and_tokens_sent(state_name, step, terminal, sent):
    state = reach(state_name)
    assert rd.step_of(state) is step
    assert rd.is_terminal(state) is terminal
    assert rd.tokens_sent(state) is sent


# --- a redemption begins with the vault withdrawal (spec 15.1) ------------------------------

VAULT = "0x" + "0b" * 20
VAULT_ID = "0x" + "77" * 32
WITHDRAW_TX = "0x" + "c1" * 32
UNITS = 125 * 10**17
WITHDRAW = rd.SignVaultWithdraw(
    "AAPL", Decimal("12.5"), TOKEN, VAULT, VAULT_ID, UNITS, b"\x02withdraw", WITHDRAW_TX
)
CONFIRM_WITHDRAW = rd.ConfirmVaultWithdraw(UNITS)
FAIL_WITHDRAW = rd.FailVaultWithdraw("withdraw3 reverted")

VAULT_PATHS = {
    "Uninitialized": [],
    "VaultWithdrawPending": [WITHDRAW],
    "WithdrawnFromVault": [WITHDRAW, CONFIRM_WITHDRAW],
    "TransferPending": [WITHDRAW, CONFIRM_WITHDRAW, SIGN],
    "TokensSent": [WITHDRAW, CONFIRM_WITHDRAW, SIGN, SEND],
    "Completed": [WITHDRAW, CONFIRM_WITHDRAW, SIGN, SEND, DETECT, COMPLETE],
    "Failed(withdraw)": [WITHDRAW, FAIL_WITHDRAW],
    "Failed(transfer)": [WITHDRAW, CONFIRM_WITHDRAW, SIGN, FAIL_TRANSFER],
}


def reach_via_vault(name: str) -> Lifecycle:
    state = Lifecycle.uninitialized()
    for minute, command in enumerate(VAULT_PATHS[name]):
        state, _ = run(state, command, at(minute))
    return state


def test_redemption_through_the_vault_end_to_end():
    history = []
    state = Lifecycle.uninitialized()
    for minute, command in enumerate(VAULT_PATHS["Completed"]):
        state, events = run(state, command, at(minute))
        history.extend(events)
    assert [type(e) for e in history] == [
        ev.VaultWithdrawSigned,
        ev.WithdrawnFromVault,
        ev.TransferSigned,
        ev.TokensSent,
        ev.Detected,
        ev.Completed,
    ]
    assert history[0] == ev.VaultWithdrawSigned(
        "AAPL", Decimal("12.5"), TOKEN, VAULT, VAULT_ID, UNITS, b"\x02withdraw", WITHDRAW_TX, at(0)
    )
    assert history[1] == ev.WithdrawnFromVault(UNITS, at(1), history[0].tx_hash)
    assert rd.SPEC.fold(history) == state
    assert rd.is_terminal(state) and rd.genesis_of(state) == ("AAPL", Decimal("12.5"))


@pytest.mark.parametrize(
    ("state_name", "step", "sent"),
    [
        ("VaultWithdrawPending", S.VAULT_WITHDRAW_PENDING, False),
        ("WithdrawnFromVault", S.WITHDRAWN_FROM_VAULT, False),
        ("TransferPending", S.TRANSFER_PENDING, False),
        ("TokensSent", S.TOKENS_SENT, True),
    ],
)
def test_vault_steps_are_not_terminal_and_send_nothing(state_name, step, sent):
    state = reach_via_vault(state_name)
    assert rd.step_of(state) is step
    assert not rd.is_terminal(state)
    assert rd.tokens_sent(state) is sent


def test_failed_vault_withdrawal_is_terminal_with_nothing_inflight():
    state = reach_via_vault("Failed(withdraw)")
    failed = state.live_value()
    assert isinstance(failed, rd.Failed)
    assert (failed.inflight_kept, failed.sent_at, failed.tx_hash) == (False, None, WITHDRAW_TX)
    assert rd.is_terminal(state) and not rd.can_reconcile(state)


def test_failed_transfer_after_the_vault_withdrawal_keeps_inflight_for_an_operator():
    """The tokens left the vault into our wallet: not tradable, not redeemed."""
    state = reach_via_vault("Failed(transfer)")
    failed = state.live_value()
    assert isinstance(failed, rd.Failed)
    assert failed.inflight_kept is True and failed.sent_at is None
    assert rd.can_reconcile(state)
    reconciled, _ = run(state, RECONCILE, at(30))
    assert rd.step_of(reconciled) is S.RECONCILED


def test_a_withdrawal_that_moved_less_than_the_amount_is_not_confirmed():
    with pytest.raises(rd.WithdrawnAmountShort) as caught:
        rd.handle(reach_via_vault("VaultWithdrawPending"), rd.ConfirmVaultWithdraw(UNITS - 1), T0)
    assert caught.value.moved == UNITS - 1 and caught.value.expected == UNITS


@pytest.mark.parametrize(
    ("command", "field"),
    [
        (rd.SignTransfer("MSFT", Decimal("12.5"), TOKEN, WALLET, RAW, TX), "symbol"),
        (rd.SignTransfer("AAPL", Decimal("12"), TOKEN, WALLET, RAW, TX), "quantity"),
        (rd.SignTransfer("AAPL", Decimal("12.5"), WALLET, WALLET, RAW, TX), "token"),
    ],
)
def test_transfer_after_the_withdrawal_must_redeem_what_was_withdrawn(command, field):
    with pytest.raises(rd.SignedTransferMismatch) as caught:
        rd.handle(reach_via_vault("WithdrawnFromVault"), command, T0)
    assert caught.value.field == field


NEW_WITHDRAW_TX = "0x" + "c2" * 32
REPLACE_WITHDRAW = onchain_tx.ReplaceTransaction(
    TxPurpose.VAULT_WITHDRAW, b"\x02withdraw-bumped", NEW_WITHDRAW_TX
)
VAULT_COMMANDS = [
    WITHDRAW,
    CONFIRM_WITHDRAW,
    REPLACE_WITHDRAW,
    FAIL_WITHDRAW,
    SIGN,
    SEND,
    FAIL_TRANSFER,
    DETECT,
]
VAULT_TABLE = {
    #        U    VWP  WFV  TP   TS   Done F(wd) F(tr)
    "SignVaultWithdraw": ["ok", "AIP", "AIP", "AIP", "AIP", "AIP", "AIP", "AIP"],
    "ConfirmVaultWithdraw": ["VWNS", "ok", "AC", "AC", "AC", "AC", "AF", "AF"],
    "ReplaceTransaction": ["VWNS", "ok", "AC", "AC", "AC", "AC", "AF", "AF"],
    "FailVaultWithdraw": ["VWNS", "ok", "AC", "AC", "AC", "AC", "AF", "AF"],
    "SignTransfer": ["ok", "NWFV", "ok", "AIP", "AIP", "AIP", "AIP", "AIP"],
    "SendTokens": ["ok", "NWFV", "TNS", "ok", "AC", "AC", "AF", "AF"],
    "FailTransfer": ["TNS", "TNS", "TNS", "ok", "AC", "AC", "AF", "AF"],
    "Detect": ["TKNS", "TKNS", "TKNS", "TKNS", "ok", "AC", "AF", "AF"],
}
ERRORS = {
    "ok": None,
    "AIP": rd.AlreadyInProgress,
    "AC": rd.AlreadyCompleted,
    "AF": rd.AlreadyFailed,
    "VWNS": rd.VaultWithdrawNotSigned,
    "NWFV": rd.NotWithdrawnFromVault,
    "TNS": rd.TransferNotSigned,
    "TKNS": rd.TokensNotSent,
}
VAULT_CASES = [
    (command, state, ERRORS[VAULT_TABLE[type(command).__name__][index]])
    for command in VAULT_COMMANDS
    for index, state in enumerate(VAULT_PATHS)
]


@pytest.mark.parametrize(
    ("command", "state_name", "expected"),
    VAULT_CASES,
    ids=[f"{type(c).__name__}-in-{s}" for c, s, _ in VAULT_CASES],
)
def test_vault_command_validation_table(command, state_name, expected):
    state = reach_via_vault(state_name)
    if expected is None:
        events = rd.handle(state, command, at(30))
        assert len(events) == 1
        assert not rd.apply(state, events[0]).is_failed
    else:
        with pytest.raises(expected):
            rd.handle(state, command, at(30))


# --- a stuck transfer is replaced (issue 8) ---------------------------------------------------

REPLACEMENT_TX = "0x" + "02" * 32
REPLACE = onchain_tx.ReplaceTransaction(TxPurpose.TRANSFER, b"\x02\xf8bumped-fees", REPLACEMENT_TX)


def test_replace_transfer_stores_the_replacement_and_keeps_the_old_hash_watched():
    state, events = run(reach("TransferPending"), REPLACE, at(5))
    assert events == [
        ev.RedemptionTransactionReplaced(
            TxPurpose.TRANSFER, REPLACE.raw_tx, REPLACEMENT_TX, TX, at(5)
        )
    ]
    value = state.live_value()
    assert (value.raw_tx, value.tx_hash) == (REPLACE.raw_tx, REPLACEMENT_TX)
    assert (value.signed_at, value.last_signed_at) == (at(0), at(5))  # time-outs: the first
    assert value.earlier_tx_hashes == (TX,)
    assert value.all_tx_hashes() == (REPLACEMENT_TX, TX)


def test_replacing_with_the_stored_transfer_again_records_nothing():
    state, _ = run(reach("TransferPending"), REPLACE, at(5))
    assert run(state, REPLACE, at(6))[1] == []


def test_replacing_with_a_transfer_it_replaced_is_refused():
    state, _ = run(reach("TransferPending"), REPLACE, at(5))
    with pytest.raises(onchain_tx.ReplacementNotNew):
        rd.handle(state, onchain_tx.ReplaceTransaction(TxPurpose.TRANSFER, RAW, TX), at(6))


@pytest.mark.parametrize("mined", [TX, REPLACEMENT_TX])
def test_send_tokens_may_name_whichever_transfer_was_mined(mined):
    state, _ = run(reach("TransferPending"), REPLACE, at(5))
    state, events = run(state, rd.SendTokens("AAPL", Decimal("12.5"), WALLET, mined), at(6))
    assert state.live_value() == rd.TokensSent("AAPL", Decimal("12.5"), WALLET, mined, at(6))


def test_send_tokens_naming_an_unknown_transfer_after_a_replacement_is_refused():
    state, _ = run(reach("TransferPending"), REPLACE, at(5))
    with pytest.raises(rd.SignedTransferMismatch):
        rd.handle(state, rd.SendTokens("AAPL", Decimal("12.5"), WALLET, OTHER_TX), at(6))


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("Uninitialized", rd.TransferNotSigned),
        ("TokensSent", rd.AlreadyCompleted),
        ("Completed", rd.AlreadyCompleted),
        ("Failed(transfer)", rd.AlreadyFailed),
        ("Reconciled", rd.AlreadyReconciled),
    ],
)
def test_replace_transfer_outside_transfer_pending_is_refused(path, error):
    with pytest.raises(error):
        rd.handle(reach(path), REPLACE, at(9))


# --- a stuck vault withdrawal is replaced (issue 8) -------------------------------------------


def test_replace_vault_withdraw_stores_the_replacement_and_keeps_the_old_hash_watched():
    state, events = run(reach_via_vault("VaultWithdrawPending"), REPLACE_WITHDRAW, at(5))
    assert events == [
        ev.RedemptionTransactionReplaced(
            TxPurpose.VAULT_WITHDRAW, REPLACE_WITHDRAW.raw_tx, NEW_WITHDRAW_TX, WITHDRAW_TX, at(5)
        )
    ]
    value = state.live_value()
    assert (value.raw_tx, value.tx_hash) == (REPLACE_WITHDRAW.raw_tx, NEW_WITHDRAW_TX)
    assert (value.signed_at, value.last_signed_at) == (at(0), at(5))
    assert value.all_tx_hashes() == (NEW_WITHDRAW_TX, WITHDRAW_TX)
    assert run(state, REPLACE_WITHDRAW, at(6))[1] == []  # the stored one again: a no-op
    with pytest.raises(onchain_tx.ReplacementNotNew):
        again = onchain_tx.ReplaceTransaction(
            TxPurpose.VAULT_WITHDRAW, b"\x02withdraw", WITHDRAW_TX
        )
        rd.handle(state, again, at(6))


@pytest.mark.parametrize("mined", [WITHDRAW_TX, NEW_WITHDRAW_TX])
def test_confirm_vault_withdraw_names_whichever_withdrawal_was_mined(mined):
    state, _ = run(reach_via_vault("VaultWithdrawPending"), REPLACE_WITHDRAW, at(5))
    state, events = run(state, rd.ConfirmVaultWithdraw(UNITS, mined), at(6))
    assert events == [ev.WithdrawnFromVault(UNITS, at(6), mined)]
    assert state.live_value().withdraw_tx_hash == mined


def test_confirm_vault_withdraw_naming_an_unknown_withdrawal_is_refused():
    with pytest.raises(rd.WithdrawMismatch):
        rd.handle(reach_via_vault("VaultWithdrawPending"), rd.ConfirmVaultWithdraw(UNITS, TX), T0)


def test_withdrawn_from_vault_without_a_hash_replays_as_the_stored_withdrawal():
    state = rd.apply(reach_via_vault("VaultWithdrawPending"), ev.WithdrawnFromVault(UNITS, at(1)))
    assert state.live_value().withdraw_tx_hash == WITHDRAW_TX

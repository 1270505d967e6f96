"""The one onchain transaction lifecycle (issue 21 item 3) and the cost ledger in the operation's
own log (issue 24): logs recorded before them still load and fold to the same state.

The streams below are payloads exactly as the event store held them before the lifecycle was
shared (`VaultApprovalReplaced`, `VaultDepositReplaced`, `VaultWithdrawReplaced`,
`TransferReplaced`, `TransactionSigned(replaces=...)`, the `OperationCost` aggregate). Each is
decoded by the codec and folded; the same facts written by today's commands
(`ReplaceTransaction` -> `TransactionReplaced`) fold to the identical state.
"""

# ruff: noqa: E501 (payloads as the store held them, one per line)
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from inventory.codec import decode_event
from inventory.domain import costs, mint, onchain_tx, redemption, usdc
from inventory.domain import events as ev
from inventory.domain.events import TxPurpose
from inventory.domain.lifecycle import Lifecycle
from inventory.domain.values import RebalanceDirection

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def h(byte: str) -> str:
    return "0x" + byte * 32


# Recorded before the shared lifecycle (payloads as stored, JSON text).
MINT = [
    (
        "TokenizedEquityMintEvent::MintRequested",
        '{"MintRequested": {"symbol": "AAPL", "quantity": "30", "wallet": "0x1111111111111111111111111111111111111111", "requested_at": "2026-03-02T15:00:00+00:00"}}',
    ),
    (
        "TokenizedEquityMintEvent::MintAccepted",
        '{"MintAccepted": {"issuer_request_id": "iss-1", "tokenization_request_id": "tok-1", "accepted_at": "2026-03-02T15:01:00+00:00"}}',
    ),
    (
        "TokenizedEquityMintEvent::TokensReceived",
        '{"TokensReceived": {"tx_hash": "0xaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "receipt_id": "0", "shares_minted": "30000000000000000000", "received_at": "2026-03-02T15:02:00+00:00"}}',
    ),
    (
        "TokenizedEquityMintEvent::VaultApprovalSigned",
        '{"VaultApprovalSigned": {"raw_tx": "0x02617070726f7665", "tx_hash": "0xa1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1", "signed_at": "2026-03-02T15:03:00+00:00"}}',
    ),
    (
        "TokenizedEquityMintEvent::VaultApprovalReplaced",
        '{"VaultApprovalReplaced": {"raw_tx": "0x02617070726f76652d62756d706564", "tx_hash": "0xa2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2", "replaces": "0xa1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1", "replaced_at": "2026-03-02T15:04:00+00:00"}}',
    ),
    (
        "TokenizedEquityMintEvent::VaultDepositSubmitted",
        '{"VaultDepositSubmitted": {"vault": "0x2222222222222222222222222222222222222222", "vault_id": "0x0000000000000000000000000000000000000000000000000000000000000001", "amount_units": "30000000000000000000", "raw_tx": "0x026465706f736974", "tx_hash": "0xd1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1", "submitted_at": "2026-03-02T15:05:00+00:00"}}',
    ),
    (
        "TokenizedEquityMintEvent::VaultDepositReplaced",
        '{"VaultDepositReplaced": {"raw_tx": "0x026465706f7369742d62756d706564", "tx_hash": "0xd2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2", "replaces": "0xd1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1", "replaced_at": "2026-03-02T15:06:00+00:00"}}',
    ),
]
REDEMPTION = [
    (
        "EquityRedemptionEvent::VaultWithdrawSigned",
        '{"VaultWithdrawSigned": {"symbol": "AAPL", "quantity": "12.5", "token": "0x3333333333333333333333333333333333333333", "vault": "0x2222222222222222222222222222222222222222", "vault_id": "0x0000000000000000000000000000000000000000000000000000000000000001", "amount_units": "12500000000000000000", "raw_tx": "0x027769746864726177", "tx_hash": "0xc1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1", "signed_at": "2026-03-02T15:00:00+00:00"}}',
    ),
    (
        "EquityRedemptionEvent::VaultWithdrawReplaced",
        '{"VaultWithdrawReplaced": {"raw_tx": "0x0277697468647261772d62756d706564", "tx_hash": "0xc2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2", "replaces": "0xc1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1", "replaced_at": "2026-03-02T15:01:00+00:00"}}',
    ),
    (
        "EquityRedemptionEvent::WithdrawnFromVault",
        '{"WithdrawnFromVault": {"amount_units": "12500000000000000000", "withdrawn_at": "2026-03-02T15:02:00+00:00", "tx_hash": "0xc2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2"}}',
    ),
    (
        "EquityRedemptionEvent::TransferSigned",
        '{"TransferSigned": {"symbol": "AAPL", "quantity": "12.5", "token": "0x3333333333333333333333333333333333333333", "redemption_wallet": "0x1111111111111111111111111111111111111111", "raw_tx": "0x027472616e73666572", "tx_hash": "0xe1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1", "signed_at": "2026-03-02T15:03:00+00:00"}}',
    ),
    (
        "EquityRedemptionEvent::TransferReplaced",
        '{"TransferReplaced": {"raw_tx": "0x027472616e736665722d62756d706564", "tx_hash": "0xe2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2", "replaces": "0xe1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1", "replaced_at": "2026-03-02T15:04:00+00:00"}}',
    ),
]
USDC = [
    (
        "UsdcRebalanceEvent::Requested",
        '{"Requested": {"direction": "BaseToAlpaca", "amount": "1000", "requested_at": "2026-03-02T15:00:00+00:00"}}',
    ),
    (
        "UsdcRebalanceEvent::TransactionSigned",
        '{"TransactionSigned": {"purpose": "vault_withdraw", "chain_id": "8453", "raw_tx": "0x027677", "tx_hash": "0xf1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1", "signed_at": "2026-03-02T15:01:00+00:00", "replaces": null}}',
    ),
    (
        "UsdcRebalanceEvent::TransactionSigned",
        '{"TransactionSigned": {"purpose": "vault_withdraw", "chain_id": "8453", "raw_tx": "0x0276772d62756d706564", "tx_hash": "0xf2f2f2f2f2f2f2f2f2f2f2f2f2f2f2f2f2f2f2f2f2f2f2f2f2f2f2f2f2f2f2f2", "signed_at": "2026-03-02T15:02:00+00:00", "replaces": "0xf1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1"}}',
    ),
]
COST = [
    (
        "OperationCostEvent::TransactionCostRecorded",
        '{"TransactionCostRecorded": {"operation_kind": "mint", "pool": "AAPL", "chain": "base", "chain_id": "8453", "tx_hash": "0xd2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2", "gas_used": "50000", "effective_gas_price_wei": "1000000000", "native_fee_wei": "50000000000000", "eth_usd": "3000", "eth_usd_feed": "0x4444444444444444444444444444444444444444", "eth_usd_round": "7", "fee_usd": "0.15", "recorded_at": "2026-03-02T15:07:00+00:00"}}',
    ),
]


def fold(spec, stored):
    return spec.fold([decode_event(event_type, json.loads(body)) for event_type, body in stored])


def replay(spec, genesis_stream, commands):
    """The same facts recorded by today's commands: the recorded genesis part, then each
    command at its minute."""
    state = fold(spec, genesis_stream)
    for minute, command in commands:
        for event in spec.handle(state, command, at(minute)):
            state = spec.apply(state, event)
    return state


def test_an_old_mint_log_folds_to_the_state_today_s_commands_reach():
    old = fold(mint.SPEC, MINT)
    value = old.live_value()
    assert isinstance(value, mint.VaultDepositSubmitted)
    assert (value.deposit_tx_hash, value.deposit_hashes()) == (h("d2"), (h("d2"), h("d1")))
    assert (value.submitted_at, value.deposit_last_signed_at) == (at(5), at(6))
    stored = mint.stored_tx(old, TxPurpose.VAULT_DEPOSIT)
    assert stored.raw_tx == b"\x02deposit-bumped" and stored.pending_since == at(5)

    new = replay(
        mint.SPEC,
        MINT[:4],
        [
            (
                4,
                onchain_tx.ReplaceTransaction(
                    TxPurpose.APPROVE_VAULT, b"\x02approve-bumped", h("a2")
                ),
            ),
            (
                5,
                mint.SubmitVaultDeposit(
                    "0x" + "22" * 20, "0x" + "00" * 31 + "01", 30 * 10**18, b"\x02deposit", h("d1")
                ),
            ),
            (
                6,
                onchain_tx.ReplaceTransaction(
                    TxPurpose.VAULT_DEPOSIT, b"\x02deposit-bumped", h("d2")
                ),
            ),
        ],
    )
    assert new == old
    # Both complete by naming the replacement that was mined.
    done = mint.apply(old, ev.DepositedIntoVault(at(7), h("d2")))
    assert done.live_value().deposit_tx_hash == h("d2")


def test_an_old_mint_log_keeps_its_replaced_approval_watched():
    old = fold(mint.SPEC, MINT[:5])
    assert old.live_value().approval_hashes() == (h("a2"), h("a1"))
    with pytest.raises(onchain_tx.ReplacementNotNew):  # the one it replaced is not new
        mint.handle(
            old,
            onchain_tx.ReplaceTransaction(TxPurpose.APPROVE_VAULT, b"\x02approve", h("a1")),
            at(9),
        )


def test_an_old_redemption_log_folds_to_the_state_today_s_commands_reach():
    old = fold(redemption.SPEC, REDEMPTION)
    value = old.live_value()
    assert isinstance(value, redemption.TransferPending)
    assert value.all_tx_hashes() == (h("e2"), h("e1"))
    assert (value.signed_at, value.last_signed_at, value.withdrawn_from_vault) == (
        at(3),
        at(4),
        True,
    )
    new = replay(
        redemption.SPEC,
        REDEMPTION[:1],
        [
            (
                1,
                onchain_tx.ReplaceTransaction(
                    TxPurpose.VAULT_WITHDRAW, b"\x02withdraw-bumped", h("c2")
                ),
            ),
            (2, redemption.ConfirmVaultWithdraw(125 * 10**17, h("c2"))),
            (
                3,
                redemption.SignTransfer(
                    "AAPL",
                    Decimal("12.5"),
                    "0x" + "33" * 20,
                    "0x" + "11" * 20,
                    b"\x02transfer",
                    h("e1"),
                ),
            ),
            (4, onchain_tx.ReplaceTransaction(TxPurpose.TRANSFER, b"\x02transfer-bumped", h("e2"))),
        ],
    )
    assert new == old


def test_an_old_usdc_log_folds_to_the_state_today_s_commands_reach():
    old = fold(usdc.SPEC, USDC)
    stored = usdc.transaction_for(old, TxPurpose.VAULT_WITHDRAW)
    assert stored.all_hashes() == (h("f2"), h("f1"))
    assert (stored.chain_id, stored.signed_at, stored.pending_since) == (8453, at(2), at(1))
    new = replay(
        usdc.SPEC,
        USDC[:2],
        [(2, onchain_tx.ReplaceTransaction(TxPurpose.VAULT_WITHDRAW, b"\x02vw-bumped", h("f2")))],
    )
    assert new == old


def test_an_old_operation_cost_log_still_loads_as_the_ledger_reads_it():
    [event] = [decode_event(t, json.loads(body)) for t, body in COST]
    assert isinstance(event, ev.TransactionCostRecorded)
    assert isinstance(event, ev.TxCostFields) and onchain_tx.is_ledger(event)
    assert (event.native_fee_wei, event.fee_usd) == (50_000 * 10**9, Decimal("0.15"))
    assert costs.SPEC.fold([event]).live_value().keys == {"tx:" + h("d2")}


# --- the lifecycle's last step: the receipt, in the operation's own log ---------------------


def receipt(tx_hash: str = h("d2")) -> onchain_tx.RecordReceipt:
    return onchain_tx.RecordReceipt(
        operation_kind="mint",
        pool="AAPL",
        chain="base",
        chain_id=8453,
        tx_hash=tx_hash,
        gas_used=50_000,
        effective_gas_price_wei=10**9,
        eth_usd=Decimal("3000"),
        eth_usd_feed="0x" + "44" * 20,
        eth_usd_round=7,
    )


def test_a_receipt_is_recorded_once_in_the_operation_s_log_and_moves_no_step():
    state = fold(mint.SPEC, MINT)
    [event] = mint.handle(state, receipt(), at(8))
    assert event.event_type == "TokenizedEquityMintEvent::TransactionCostRecorded"
    assert (event.native_fee_wei, event.fee_usd) == (50_000 * 10**9, Decimal("0.15000000"))
    after = mint.apply(state, event)
    assert after.value == state.value and after.ledger == {"tx:" + h("d2")}
    assert mint.handle(after, receipt(h("d2").upper().replace("0X", "0x")), at(9)) == []
    # The ledger survives the step that ends the operation, and a receipt read after it counts.
    done = mint.apply(after, ev.DepositedIntoVault(at(9), h("d2")))
    assert mint.is_terminal(done) and done.ledger == after.ledger
    assert len(mint.handle(done, receipt(h("a2")), at(10))) == 1


@pytest.mark.parametrize(
    ("spec", "stream", "variant"),
    [
        (mint.SPEC, MINT, ev.MintTransactionCostRecorded),
        (redemption.SPEC, REDEMPTION, ev.RedemptionTransactionCostRecorded),
        (usdc.SPEC, USDC, ev.UsdcTransactionCostRecorded),
    ],
)
def test_every_operation_aggregate_records_its_receipts_alike(spec, stream, variant):
    state = fold(spec, stream)
    [event] = spec.handle(state, receipt(), at(8))
    assert type(event) is variant and spec.aggregate_type == event.AGGREGATE_TYPE
    with pytest.raises(onchain_tx.NotStarted):
        spec.handle(Lifecycle.uninitialized(), receipt(), at(8))


def test_a_replacement_that_is_not_new_is_refused_by_one_rule_for_every_aggregate():
    usdc_state = fold(usdc.SPEC, USDC)
    with pytest.raises(onchain_tx.ReplacementNotNew):
        usdc.handle(
            usdc_state,
            onchain_tx.ReplaceTransaction(TxPurpose.VAULT_WITHDRAW, b"\x02vw", h("f1")),
            at(9),
        )
    red_state = fold(redemption.SPEC, REDEMPTION)
    with pytest.raises(onchain_tx.ReplacementNotNew):
        redemption.handle(
            red_state,
            onchain_tx.ReplaceTransaction(TxPurpose.TRANSFER, b"\x02transfer", h("e1")),
            at(9),
        )
    assert not hasattr(mint, "ReplaceVaultDeposit") and not hasattr(redemption, "ReplaceTransfer")


def test_a_usdc_move_refuses_a_purpose_it_never_sends():
    state = usdc.SPEC.fold([ev.Requested(RebalanceDirection.BASE_TO_ALPACA, Decimal(5), at(0))])
    with pytest.raises(Exception, match="purpose"):
        usdc.handle(
            state, usdc.RecordTransaction(TxPurpose.TRANSFER, 8453, b"\x02x", h("99")), at(1)
        )

"""USD cash and USDC at Alpaca are two balances (spec 15.5, issue 20 item 1).

The USDC pool counts both at Alpaca; an Alpaca-to-Base move plans against what can actually
leave (withdrawable cash plus USDC held, less the cash reserve and what pending hedges may
spend), and a snapshot read mid-conversion or mid-withdrawal never counts an amount both at
Alpaca and inflight, nor loses it."""

from __future__ import annotations

from decimal import Decimal

import pytest

from inventory.domain import events as ev
from inventory.domain.offchain import OffchainLeavable
from inventory.domain.values import TransferRef, TransferRefKind
from inventory.services import hedge_place, snapshot_record
from operations.models import Operation, OperationKind
from tests.service.flows import (
    TX,
    append,
    enable,
    observe,
    onchain_fill,
    pool,
    register,
    tick,
    usdc_initiated,
    usdc_requested,
)

pytestmark = pytest.mark.django_db
D = Decimal


@pytest.fixture
def enabled(settings):
    enable(settings)


def alpaca(
    *, cash: str, usdc: str, withdrawable: str | None = None, usdc_onchain: str | None = None
):
    return snapshot_record(
        fetched_at=tick(),
        onchain_cash=None if usdc_onchain is None else D(usdc_onchain),
        offchain_cash=D(cash),
        offchain_usdc=D(usdc),
        offchain_cash_withdrawable=D(cash if withdrawable is None else withdrawable),
    )


def usdc_operation() -> Operation | None:
    return Operation.objects.filter(pool="USDC").first()


# --- the pool counts cash plus USDC --------------------------------------------------------------


def test_usdc_pool_offchain_is_cash_plus_the_usdc_position(enabled):
    alpaca(cash="300", usdc="200.5", usdc_onchain="500.5")
    assert pool("USDC").offchain_available == D("500.5")
    assert usdc_operation() is None  # 500.5 / 500.5: balanced, nothing to move


def test_a_deposit_credited_as_usdc_is_not_lost(enabled):
    """Base-to-Alpaca lands as a `USDCUSD` position, not cash: still counted at Alpaca."""
    alpaca(cash="500", usdc="0", usdc_onchain="500")
    alpaca(cash="500", usdc="400")  # 400 USDC deposited from the chain
    assert pool("USDC").offchain_available == D(900)


# --- planning against what can leave -------------------------------------------------------------


def test_alpaca_to_base_plans_against_withdrawable_cash_not_cash(enabled):
    # 900 cash of which 150 may leave (the rest is unsettled T+1 proceeds): excess 400.
    alpaca(cash="900", usdc="0", withdrawable="150", usdc_onchain="100")
    operation = usdc_operation()
    assert operation is not None
    assert (operation.kind, operation.amount) == (OperationKind.USDC_ALPACA_TO_BASE, D(150))


def test_usdc_held_counts_toward_what_can_leave(enabled):
    alpaca(cash="500", usdc="400", withdrawable="100", usdc_onchain="100")
    operation = usdc_operation()
    assert (operation.kind, operation.amount) == (OperationKind.USDC_ALPACA_TO_BASE, D(400))


def test_the_cash_reserve_is_never_planned_away(settings):
    enable(settings, offchain_cash_reserve=D(300))
    alpaca(cash="900", usdc="0", withdrawable="500", usdc_onchain="100")
    operation = usdc_operation()
    assert (operation.kind, operation.amount) == (OperationKind.USDC_ALPACA_TO_BASE, D(200))


def test_below_the_minimum_after_the_reserve_nothing_is_planned(settings, caplog):
    enable(settings, offchain_cash_reserve=D(300))
    with caplog.at_level("INFO", logger="service.trigger"):
        alpaca(cash="900", usdc="0", withdrawable="340", usdc_onchain="100")
    assert usdc_operation() is None
    assert "40.000000 can leave Alpaca" in caplog.text
    assert "reserve 300" in caplog.text


def test_pending_buy_hedges_are_kept_back_but_do_not_starve_the_move(enabled):
    register("AAPL")
    observe("AAPL", onchain="100", offchain="100")
    alpaca(cash="500", usdc="0", usdc_onchain="500")
    onchain_fill("AAPL", "40", "Sell", price="10")  # we sold 40 tAAPL onchain for 400 USDC
    hedge_place(symbol="AAPL", execution_id=1, direction="Buy", shares=D(40))
    assert pool("USDC").offchain_hedges_pending == 1
    assert usdc_operation() is None
    observe(usdc_onchain="100")  # the vault now holds 100: 100 / 600, excess 200 offchain
    operation = usdc_operation()
    # 500 can leave, less 40 x 10 the pending buy may spend: 100 (not 200, and not nothing).
    assert (operation.kind, operation.amount) == (OperationKind.USDC_ALPACA_TO_BASE, D(100))


def test_leavable_floors_to_usdc_units_and_never_goes_negative():
    leavable = OffchainLeavable(
        pool_available=D("1000.1234567"),
        cash=D(2000),
        cash_withdrawable=D("700.0000009"),
        usdc=D("300.5"),
        reserve=D(0),
        hedge_spend=D(0),
    )
    assert leavable.amount == D("1000.123456")
    spent = OffchainLeavable(
        pool_available=D(10),
        cash=D(10),
        cash_withdrawable=D(10),
        usdc=D(0),
        reserve=D(20),
        hedge_spend=D(0),
    )
    assert spent.amount == 0
    # A read without `cash_withdrawable` (recorded before it was read) falls back to cash.
    older = OffchainLeavable(
        pool_available=D(900),
        cash=D(600),
        cash_withdrawable=None,
        usdc=D(0),
        reserve=D(0),
        hedge_spend=D(0),
    )
    assert older.amount == D(600)


# --- snapshots mid-conversion and mid-withdrawal --------------------------------------------------


def test_a_snapshot_mid_conversion_or_mid_withdrawal_neither_doubles_nor_loses(enabled):
    alpaca(cash="800", usdc="100", usdc_onchain="100")
    operation = usdc_operation()
    assert operation.amount == D(400)
    aggregate = (ev.USDC_REBALANCE, operation.aggregate_id)
    append(*aggregate, usdc_requested(operation))  # intent: 400 inflight from offchain
    assert (pool("USDC").offchain_available, pool("USDC").offchain_inflight) == (D(500), D(400))

    # Mid-conversion: 400 cash bought ~399.6 USDC; Alpaca still shows it all.
    alpaca(cash="400", usdc="499.6")
    assert (pool("USDC").offchain_available, pool("USDC").offchain_inflight) == (D(500), D(400))
    append(*aggregate, usdc_initiated(operation))
    # Mid-withdrawal: the `USDCUSD` qty still includes the locked USDC until it settles.
    alpaca(cash="400", usdc="499.6")
    assert (pool("USDC").offchain_available, pool("USDC").offchain_inflight) == (D(500), D(400))

    read_before_settling = tick()
    append(
        *aggregate,
        ev.WithdrawalConfirmed(confirmed_at=tick(), amount_received=D("399.6")),
        ev.BridgingInitiated(burn_tx_hash=TX, cctp_nonce="0x" + "01" * 32, burned_at=tick()),
        ev.Bridged(mint_tx_hash=TX, minted_at=tick(), amount_received=D("399.5")),
        ev.DepositInitiated(
            deposit_ref=TransferRef(TransferRefKind.ONCHAIN_TX, TX), deposit_initiated_at=tick()
        ),
        ev.DepositConfirmed(deposit_confirmed_at=tick(), amount_deposited=D("399.5")),
    )
    usdc = pool("USDC")
    assert (usdc.offchain_inflight, usdc.onchain_available) == (D(0), D("499.5"))
    # A read begun before the operation settled may still show the locked USDC: stale.
    snapshot_record(
        fetched_at=read_before_settling,
        offchain_cash=D(400),
        offchain_usdc=D("499.6"),
        offchain_cash_withdrawable=D(400),
    )
    assert pool("USDC").offchain_available == D(500)
    # The next read shows the withdrawal settled: taken, the 0.4 lost to the spread shows.
    alpaca(cash="400", usdc="99.6")
    assert pool("USDC").offchain_available == D("499.6")
    assert pool("USDC").onchain_available + pool("USDC").offchain_available == D("999.1")

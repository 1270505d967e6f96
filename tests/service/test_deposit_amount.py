"""The projection uses the deposited amount on `DepositConfirmed`: the destination holds what
the vault or Alpaca credited, not what the bridge delivered (before, the amount was ignored)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from inventory.domain import events as ev
from inventory.domain.values import TransferRef, TransferRefKind
from inventory.services import inventory_rebuild
from tests.service.flows import (
    TX,
    active,
    append,
    enable,
    observe,
    pool,
    tick,
    usdc_initiated,
    usdc_requested,
)

pytestmark = pytest.mark.django_db


def balances() -> tuple[Decimal, Decimal, Decimal, Decimal]:
    row = pool("USDC")
    return (
        row.onchain_available,
        row.onchain_inflight,
        row.offchain_available,
        row.offchain_inflight,
    )


def bridged_then_deposited(received: str, deposited: str | None) -> None:
    op = active("USDC")
    assert op is not None and op.amount == Decimal("400")  # 100/900 -> Alpaca to Base
    append(ev.USDC_REBALANCE, op.aggregate_id, usdc_requested(op))
    append(ev.USDC_REBALANCE, op.aggregate_id, usdc_initiated(op))
    append(ev.USDC_REBALANCE, op.aggregate_id, ev.WithdrawalConfirmed(confirmed_at=tick()))
    append(
        ev.USDC_REBALANCE,
        op.aggregate_id,
        ev.BridgingInitiated(burn_tx_hash=TX, cctp_nonce="0x" + "01" * 32, burned_at=tick()),
        ev.BridgeAttestationReceived(attestation=b"att", attested_at=tick()),
        ev.Bridged(mint_tx_hash=TX, amount_received=Decimal(received), minted_at=tick()),
        ev.DepositInitiated(
            deposit_ref=TransferRef(TransferRefKind.ONCHAIN_TX, TX), deposit_initiated_at=tick()
        ),
        ev.DepositConfirmed(
            deposit_confirmed_at=tick(),
            amount_deposited=None if deposited is None else Decimal(deposited),
        ),
    )


@pytest.mark.parametrize(
    ("received", "deposited", "onchain"),
    [
        ("399.96", "399.5", "499.5"),  # the vault took less than the bridge delivered
        ("399.96", "399.96", "499.96"),
        ("399.96", None, "499.96"),  # no amount reported: the bridged amount stands
    ],
)
def test_deposit_confirmed_sets_the_destination_to_the_deposited_amount(
    settings, received, deposited, onchain
):
    enable(settings)
    observe(usdc_onchain="100", usdc_offchain="900")

    bridged_then_deposited(received, deposited)

    assert balances() == (Decimal(onchain), 0, Decimal(500), 0)
    assert inventory_rebuild(write=False) == []  # the replay agrees with the projection

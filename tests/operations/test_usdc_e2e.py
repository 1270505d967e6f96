"""USDC end to end with real `manage.py qcluster` workers (and the due loop) against the sim
venue: a cash snapshot out of band -> trigger -> USDC operation -> workers -> withdrawal, CCTP
burn, attestation, mint, deposit; inventory settled; each effect exactly once."""

from __future__ import annotations

from decimal import Decimal

import pytest

from inventory.models import InventoryPool
from inventory.services import snapshot_record
from operations.models import Operation, OperationStatus
from tests.operations.test_workers_e2e import moment, wait_finished
from tests.operations.usdc_support import (
    A2B,
    B2A,
    EXACTLY_ONCE,
    EffectWatch,
    business_types,
    fund_vault,
    usdc_state,
)

pytestmark = [pytest.mark.slow, pytest.mark.chain]

BRIDGE_EVENTS = [
    "Initiated",
    "WithdrawalConfirmed",
    "BridgingInitiated",
    "BridgeAttestationReceived",
    "Bridged",
    "DepositInitiated",
]
CONVERSION = ["ConversionInitiated", "ConversionConfirmed"]
# Alpaca to Base buys USDC with USD before withdrawing; Base to Alpaca sells it once deposited.
A2B_EVENTS = ["Requested", *CONVERSION, *BRIDGE_EVENTS, "DepositConfirmed"]
B2A_EVENTS = ["Requested", *BRIDGE_EVENTS, *CONVERSION, "DepositConfirmed"]


def test_too_much_usdc_at_alpaca_moves_usdc_to_the_base_vault_through_workers(
    settings, venue_config, sim_venue, venues, workers
):
    settings.REBALANCING = venue_config
    watch = EffectWatch.start(sim_venue, venues)
    cluster = workers()
    # 50 onchain / 350 offchain: ratio 0.125 under the 0.2 edge -> Alpaca -> Base 150.
    snapshot_record(fetched_at=moment(), onchain_cash=Decimal(50), offchain_cash=Decimal(350))

    operation = Operation.objects.get(pool="USDC")
    assert operation.kind == A2B
    assert operation.amount == Decimal(150)
    finished = wait_finished(operation.pk, cluster)

    assert finished.status == OperationStatus.COMPLETED, finished.failure_reason + cluster.logs()
    assert business_types(operation) == A2B_EVENTS
    assert watch.effects(A2B) == EXACTLY_ONCE[A2B]
    received = usdc_state(operation).value.amounts.bridged_received
    assert received == Decimal("149.985")  # 1 bp CCTP fast fee (no Alpaca network fee here)
    pool = InventoryPool.objects.get(key="USDC")
    assert pool.offchain_available == Decimal(200)
    assert pool.onchain_available == Decimal(50) + received
    assert pool.onchain_inflight == pool.offchain_inflight == 0


def test_too_much_usdc_onchain_moves_usdc_to_alpaca_through_workers(
    settings, venue_config, sim_venue, venues, workers
):
    settings.REBALANCING = venue_config
    fund_vault(sim_venue, venues, "200")
    cash_before = sim_venue.server.cash()
    watch = EffectWatch.start(sim_venue, venues)
    cluster = workers()
    snapshot_record(fetched_at=moment(), onchain_cash=Decimal(350), offchain_cash=Decimal(50))

    operation = Operation.objects.get(pool="USDC")
    assert operation.kind == B2A
    assert operation.amount == Decimal(150)
    finished = wait_finished(operation.pk, cluster)

    assert finished.status == OperationStatus.COMPLETED, finished.failure_reason + cluster.logs()
    assert business_types(operation) == B2A_EVENTS
    assert watch.effects(B2A) == EXACTLY_ONCE[B2A]
    # B12: Alpaca credited the USDC we actually sent to its deposit address.
    assert sim_venue.server.cash() - cash_before == Decimal("149.985")
    pool = InventoryPool.objects.get(key="USDC")
    assert pool.onchain_available == Decimal(200)
    assert pool.offchain_available == Decimal(50) + Decimal("149.985")
    assert pool.onchain_inflight == pool.offchain_inflight == 0

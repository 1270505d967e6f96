"""Crash safety of the USDC workflows: kill -9 the worker at every step boundary (the
`REBALANCER_CHAOS_KILL_AT` drill) of each direction in turn, restart the cluster, and assert the
operation completes with exactly one withdrawal request at the simulated Alpaca / one vault
withdraw, one burn, one receiveMessage, one vault deposit / one transfer to Alpaca's deposit
address onchain, and exactly one USDCUSD conversion order (a buy before the withdrawal, a sale
after the deposit)."""

from __future__ import annotations

import pytest

from operations.models import OperationStatus
from tests.operations.test_crash_safety import CRASH_ENV, posts_since, wait_for_kill
from tests.operations.test_workers_e2e import wait_finished
from tests.operations.usdc_support import (
    A2B,
    B2A,
    EXACTLY_ONCE,
    WITHDRAW_POST,
    EffectWatch,
    business_types,
    fund_vault,
    new_usdc,
    next_amount,
)
from venues.sim.server import KEY_ORDER_POST

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
# Alpaca to Base buys USDC before the withdrawal; Base to Alpaca sells it once deposited.
USDC_EVENTS = {
    A2B: ["Requested", *CONVERSION, *BRIDGE_EVENTS, "DepositConfirmed"],
    B2A: ["Requested", *BRIDGE_EVENTS, *CONVERSION, "DepositConfirmed"],
}
# Standing approvals are signed once per chain and spender, so their points are reached only
# by the first operation; every other boundary is reached by every operation.
COMMON_POINTS = [
    "after:Request",
    "after:Initiate",
    "after:ConfirmWithdrawal",
    "before:broadcast:burn",
    "after:broadcast:burn",
    "after:InitiateBridging",
    "after:ReceiveAttestation",
    "before:broadcast:mint",
    "after:broadcast:mint",
    "after:ConfirmBridging",
    "after:InitiateDeposit",
    "after:ConfirmDeposit",
    "before:convert",
    "after:convert",
    "after:InitiateConversion",
    "after:ConfirmConversion",
]
POINTS = [
    *((A2B, p) for p in ["before:withdraw", "after:withdraw"]),
    *((A2B, p) for p in COMMON_POINTS),
    *((A2B, p) for p in ["before:broadcast:vault_deposit", "after:broadcast:vault_deposit"]),
    *((B2A, p) for p in ["before:broadcast:vault_withdraw", "after:broadcast:vault_withdraw"]),
    *((B2A, p) for p in COMMON_POINTS),
    *((B2A, p) for p in ["before:broadcast:alpaca_deposit", "after:broadcast:alpaca_deposit"]),
]


@pytest.mark.parametrize(("kind", "point"), POINTS, ids=[f"{k}:{p}" for k, p in POINTS])
def test_usdc_killed_at_each_step_boundary_completes_once_after_restart(
    settings, venue_config, sim_venue, venues, workers, tmp_path, kind, point
):
    settings.REBALANCING = venue_config
    amount = next_amount()
    if kind == B2A:
        fund_vault(sim_venue, venues, str(amount))
    posts_before = sim_venue.server.request_counts()
    watch = EffectWatch.start(sim_venue, venues)
    cluster = workers({**CRASH_ENV, "REBALANCER_CHAOS_KILL_AT": f"{kind}:{point}"})
    operation = new_usdc(kind, str(amount))

    marker = wait_for_kill(tmp_path / "chaos", cluster)
    assert marker.name.startswith(operation.aggregate_id)
    cluster.restart()

    finished = wait_finished(operation.pk, cluster)
    assert finished.status == OperationStatus.COMPLETED, finished.failure_reason + cluster.logs()
    assert business_types(operation) == USDC_EVENTS[kind]
    assert watch.effects(kind) == EXACTLY_ONCE[kind]
    # Every POST at the simulated venue: one conversion order each way, and one withdrawal for
    # Alpaca -> Base.
    expected_posts = {KEY_ORDER_POST: 1, **({WITHDRAW_POST: 1} if kind == A2B else {})}
    assert posts_since(sim_venue, posts_before) == expected_posts
    cluster.kill()  # nothing left to do: skip the graceful stop

"""Executor behaviours of spec section 13: dispatch per kind, several operations at once."""

from __future__ import annotations

import importlib
import time
from decimal import Decimal

import pytest

from operations.models import OperationKind, OperationStatus
from operations.services import operation_create
from operations.workflows import operation_advance
from operations.workflows.mint import WORKFLOW as MINT
from operations.workflows.redemption import WORKFLOW as REDEMPTION
from operations.workflows.registry import NoWorkflow, workflow_for
from tests.operations.test_workers_e2e import fund_equity_vault

pytestmark = [pytest.mark.django_db]


def test_dispatch_mint_and_redemption_to_their_workflows():
    assert workflow_for(OperationKind.MINT) is MINT
    assert workflow_for(OperationKind.REDEMPTION) is REDEMPTION


@pytest.mark.parametrize(
    "kind", [OperationKind.USDC_ALPACA_TO_BASE, OperationKind.USDC_BASE_TO_ALPACA]
)
def test_dispatch_usdc_kinds_to_the_usdc_workflow(kind):
    try:
        module = importlib.import_module("operations.workflows.usdc")
    except ModuleNotFoundError:
        with pytest.raises(NoWorkflow):
            workflow_for(kind)
        return
    assert workflow_for(kind) is module.WORKFLOW


def test_dispatch_of_an_unknown_kind_is_refused():
    with pytest.raises(NoWorkflow, match="unknown kind"):
        workflow_for("teleport")


@pytest.mark.chain
def test_run_processes_multiple_operations_interleaved(sim_venue, venues, sim_assets):
    fund_equity_vault(sim_venue, "MSFT", 10 * 10**18)
    first = operation_create(kind=OperationKind.MINT, pool="AAPL", amount=Decimal("2"))
    second = operation_create(
        kind=OperationKind.REDEMPTION,
        pool="MSFT",
        amount=Decimal("1.5"),
        token_address=sim_assets["MSFT"],
    )
    assert first is not None and second is not None
    deadline = time.monotonic() + 180  # far above what it takes on a loaded machine
    pending = [first, second]
    while pending and time.monotonic() < deadline:
        for operation in list(pending):
            operation_advance(operation_id=operation.pk, venues=venues)
            operation.refresh_from_db()
            if not operation.is_active:
                pending.remove(operation)
        time.sleep(0.1)
    assert first.status == OperationStatus.COMPLETED
    assert second.status == OperationStatus.COMPLETED

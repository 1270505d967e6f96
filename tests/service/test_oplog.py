"""One INFO line per operation state change (id, kind, pool, amount, step), written when the
transaction commits; a rolled-back step writes none."""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest
from django.db import transaction

from operations.models import Operation, OperationKind
from tests.inventory.projection_helpers import append, mint_accepted, mint_requested

pytestmark = pytest.mark.django_db


def lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "rebalancer.operations"]


def test_each_step_logs_one_line_with_id_kind_pool_amount_and_step(
    caplog, django_capture_on_commit_callbacks
):
    operation = Operation.objects.create(
        kind=OperationKind.MINT, pool="AAPL", amount=Decimal(30), aggregate_id="m-1"
    )
    with caplog.at_level(logging.INFO, logger="rebalancer.operations"):
        with django_capture_on_commit_callbacks(execute=True):
            append("m-1", mint_requested("AAPL", "30"))
        with django_capture_on_commit_callbacks(execute=True):
            append("m-1", mint_accepted())
    assert lines(caplog) == [
        f"operation {operation.pk} mint pool=AAPL amount=30 step=MintRequested (m-1)",
        f"operation {operation.pk} mint pool=AAPL amount=30 step=MintAccepted (m-1)",
    ]


def test_a_rolled_back_step_logs_nothing(caplog, django_capture_on_commit_callbacks):
    Operation.objects.create(
        kind=OperationKind.MINT, pool="AAPL", amount=Decimal(30), aggregate_id="m-1"
    )
    with (
        caplog.at_level(logging.INFO, logger="rebalancer.operations"),
        django_capture_on_commit_callbacks(execute=True),
        transaction.atomic(),
    ):
        append("m-1", mint_requested("AAPL", "30"))
        transaction.set_rollback(True)
    assert lines(caplog) == []

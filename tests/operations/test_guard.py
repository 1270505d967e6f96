"""The database guard: one active operation per equity symbol and one for USDC."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction

from inventory.domain import events as ev
from inventory.domain.aggregate import AggregateSpec
from inventory.domain.values import InvalidValue
from inventory.store import events_append
from operations.models import Operation, OperationKind, OperationStatus
from operations.services import (
    OperationAlreadyFinished,
    OperationStarted,
    operation_create,
    operation_fail,
    operation_finish,
    operation_released,
)
from operations.tasks import execute_operation
from tests.service.support import queued_operation_tasks, run_django_child

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
TOKEN = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"

pytestmark = pytest.mark.django_db


def mint(pool: str = "AAPL", amount: str = "10") -> Operation | None:
    return operation_create(kind=OperationKind.MINT, pool=pool, amount=Decimal(amount), now=NOW)


def usdc(amount: str = "100") -> Operation | None:
    return operation_create(
        kind=OperationKind.USDC_ALPACA_TO_BASE, pool="USDC", amount=Decimal(amount), now=NOW
    )


def test_operation_create_stores_the_row_and_queues_its_task():
    operation = mint(amount="12.345678901234567891")
    assert operation is not None
    operation.refresh_from_db()
    assert operation.status == OperationStatus.PENDING
    assert operation.amount == Decimal("12.345678901234567891")
    assert operation.attempts == 0
    assert len(operation.aggregate_id) == 36
    assert queued_operation_tasks() == [operation.pk]


def test_second_active_operation_for_the_same_symbol_is_refused_quietly():
    first = mint()
    second = operation_create(
        kind=OperationKind.REDEMPTION,
        pool="AAPL",
        amount=Decimal("5"),
        token_address=TOKEN,
        now=NOW,
    )
    assert first is not None
    assert second is None
    assert list(Operation.objects.values_list("pk", flat=True)) == [first.pk]
    assert queued_operation_tasks() == [first.pk]


def test_symbols_and_usdc_have_independent_guards():
    assert mint("AAPL") is not None
    assert mint("MSFT") is not None
    assert usdc() is not None
    assert usdc() is None
    assert mint("AAPL") is None
    assert Operation.objects.count() == 3


def test_the_database_refuses_a_second_active_row_even_without_the_service():
    mint()
    with pytest.raises(IntegrityError), transaction.atomic():
        Operation.objects.create(
            kind=OperationKind.MINT, pool="AAPL", amount=Decimal("1"), aggregate_id="x"
        )


def test_refused_create_leaves_the_surrounding_transaction_usable():
    with transaction.atomic():
        mint()
        assert mint() is None
        assert mint("MSFT") is not None
    assert Operation.objects.count() == 2


@pytest.mark.parametrize(
    "status", [OperationStatus.COMPLETED, OperationStatus.FAILED, OperationStatus.CANCELLED]
)
def test_terminal_operation_releases_the_guard(status):
    first = mint()
    assert first is not None
    finished = operation_finish(
        aggregate_id=first.aggregate_id, status=status, reason="r", finished_by="test"
    )
    assert finished is not None
    assert finished.finished_at is not None
    assert mint() is not None


def test_operation_finish_twice_is_idempotent():
    first = mint()
    assert first is not None
    assert operation_finish(
        aggregate_id=first.aggregate_id, status=OperationStatus.COMPLETED, finished_by="t"
    )
    again = operation_finish(
        aggregate_id=first.aggregate_id, status=OperationStatus.FAILED, finished_by="t"
    )
    assert again is None
    first.refresh_from_db()
    assert first.status == OperationStatus.COMPLETED


def test_redemption_without_token_is_refused_before_the_database():
    with pytest.raises(InvalidValue, match="token_address"):  # issue 9: InvalidValue
        operation_create(kind=OperationKind.REDEMPTION, pool="AAPL", amount=Decimal("1"))


def test_kind_and_pool_must_agree_in_the_database():
    with pytest.raises(IntegrityError), transaction.atomic():
        Operation.objects.create(
            kind=OperationKind.USDC_BASE_TO_ALPACA,
            pool="AAPL",
            amount=Decimal("1"),
            aggregate_id="y",
        )


def test_operation_fail_before_any_event_releases_the_guard_and_announces_it():
    released: list[Operation] = []

    def receiver(sender, operation, **kwargs):
        released.append(operation)

    operation_released.connect(receiver, dispatch_uid="test-guard-released")
    try:
        first = mint()
        assert first is not None
        failed = operation_fail(operation_id=first.pk, reason="Alpaca said 500", actor="system")
    finally:
        operation_released.disconnect(dispatch_uid="test-guard-released")
    assert failed.status == OperationStatus.FAILED
    assert failed.failure_reason == "Alpaca said 500"
    assert failed.finished_by == "system"
    assert [op.pk for op in released] == [first.pk]
    assert mint() is not None


def test_operation_fail_of_a_finished_operation_is_refused():
    first = mint()
    assert first is not None
    operation_fail(operation_id=first.pk, reason="x", actor="ops")
    with pytest.raises(OperationAlreadyFinished, match="already failed"):
        operation_fail(operation_id=first.pk, reason="again", actor="ops")


def test_operation_fail_after_the_aggregate_started_must_go_through_the_aggregate():
    first = mint()
    assert first is not None
    spec = AggregateSpec(
        aggregate_type=ev.MINT, apply=lambda s, e: s, handle=lambda s, c, n: [], event_classes=()
    )
    events_append(
        spec=spec,
        aggregate_id=first.aggregate_id,
        events=[
            ev.MintRequested(symbol="AAPL", quantity=Decimal("10"), wallet=TOKEN, requested_at=NOW)
        ],
        expected_sequence=0,
    )
    with pytest.raises(OperationStarted, match="has events"):
        operation_fail(operation_id=first.pk, reason="x", actor="ops")
    first.refresh_from_db()
    assert first.status == OperationStatus.PENDING


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"reason": None}, "reason"),
        ({"reason": "  "}, "reason"),
        ({"actor": ""}, "actor"),
        ({"actor": None}, "actor"),
        ({"reason": "a\x00b"}, "reason"),
    ],
)
def test_operation_fail_refuses_a_bad_reason_or_actor_naming_it(changes, field):
    first = mint()
    assert first is not None
    arguments = {"operation_id": first.pk, "reason": "x", "actor": "ops", **changes}
    with pytest.raises(InvalidValue) as refused:
        operation_fail(**arguments)
    assert refused.value.field == field
    first.refresh_from_db()
    assert first.status == OperationStatus.PENDING


@pytest.mark.parametrize("status", ["bogus", "", None, OperationStatus.PENDING])
def test_operation_finish_refuses_a_status_that_is_not_terminal(status):
    first = mint()
    assert first is not None
    with pytest.raises(InvalidValue) as refused:
        operation_finish(aggregate_id=first.aggregate_id, status=status, finished_by="trigger")
    assert refused.value.field == "status"
    first.refresh_from_db()
    assert first.status == OperationStatus.PENDING


def test_task_for_a_finished_operation_does_nothing():
    first = mint()
    assert first is not None
    operation_fail(operation_id=first.pk, reason="x", actor="ops")
    execute_operation(first.pk)
    first.refresh_from_db()
    assert first.attempts == 0


@pytest.mark.django_db(transaction=True)
def test_guard_survives_a_restart_new_process_cannot_create_a_second_active_operation():
    first = mint()
    assert first is not None
    child = run_django_child(
        textwrap.dedent(
            """
            from decimal import Decimal
            from operations.models import Operation, OperationKind
            from operations.services import operation_create
            created = operation_create(
                kind=OperationKind.MINT, pool="AAPL", amount=Decimal("3")
            )
            other = operation_create(kind=OperationKind.MINT, pool="MSFT", amount=Decimal("3"))
            print("created", created, "other", other.pool)
            print("active", Operation.objects.filter(status="pending").count())
            """
        )
    )
    assert child.returncode == 0, child.stderr
    assert "created None other MSFT" in child.stdout
    assert "active 2" in child.stdout
    assert Operation.objects.filter(pool="AAPL").count() == 1

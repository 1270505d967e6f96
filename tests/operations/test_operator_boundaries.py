"""Issue 9: operators cannot overwrite workers. The operation admin cannot change a row; the
queue's Schedule admin cannot schedule an import path; `operation_create` validates like every
other service; retry refuses a second queued task; fail/reconcile of an operation with no
events need no venue configuration. No chain, no sim venue: none of this should need one."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction
from django.urls import reverse
from django.utils import timezone
from django_q.models import OrmQ, Schedule
from eth_utils import to_checksum_address
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inventory.domain import mint, redemption, usdc
from inventory.domain.lifecycle import Lifecycle
from inventory.domain.values import (
    USDC_POOL,
    InvalidValue,
    RebalanceDirection,
    TransferRef,
    TransferRefKind,
)
from operations.models import Operation, OperationKind, OperationStatus
from operations.operator import OperatorError, operator_force_fail, operator_retry_now
from operations.services import operation_create, operation_fail
from tests.service.support import queued_operation_tasks

pytestmark = pytest.mark.django_db

TOKEN = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
BAD_CHECKSUM = "0xa0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
WALLET = to_checksum_address("0x" + "ab" * 20)
HASH = "0x" + "cd" * 32
T0 = datetime(2026, 3, 2, tzinfo=UTC)


def new_mint(amount: str = "1") -> Operation:
    operation = operation_create(kind=OperationKind.MINT, pool="AAPL", amount=Decimal(amount))
    assert operation is not None
    return operation


# --- the admin ----------------------------------------------------------------------------------


def test_the_operation_admin_cannot_turn_a_finished_operation_back(admin_client):
    operation = new_mint()
    operation_fail(operation_id=operation.pk, reason="drill", actor="alice")
    url = reverse("admin:operations_operation_change", args=[operation.pk])
    response = admin_client.post(url, {"status": "pending", "amount": "9", "kind": "mint"})
    assert response.status_code in (302, 403) or b"errornote" not in response.content
    operation.refresh_from_db()
    assert operation.status == OperationStatus.FAILED and operation.amount == Decimal(1)
    assert not admin_client.get(url).context["has_change_permission"]


def test_the_schedule_admin_is_read_only(admin_client):
    call_command("migrate", verbosity=0)  # the sweep schedule exists (post_migrate)
    schedule = Schedule.objects.first()
    assert schedule is not None
    before = (schedule.func, schedule.args)
    add = admin_client.post(
        reverse("admin:django_q_schedule_add"),
        {"func": "os.system", "args": "'touch /tmp/pwned'", "schedule_type": "O", "repeats": "-1"},
    )
    assert add.status_code == 403
    change_url = reverse("admin:django_q_schedule_change", args=[schedule.pk])
    change = admin_client.post(
        change_url,
        {"func": "os.system", "args": "'id'", "schedule_type": "M", "repeats": "-1"},
    )
    assert change.status_code in (302, 403)
    schedule.refresh_from_db()
    assert (schedule.func, schedule.args) == before
    assert not Schedule.objects.filter(func="os.system").exists()
    assert not admin_client.get(change_url).context["has_change_permission"]


# --- operation_create validates its arguments -------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"kind": "teleport", "pool": "AAPL", "amount": Decimal(1)}, "kind"),
        ({"kind": OperationKind.MINT, "pool": "aapl", "amount": Decimal(1)}, "pool"),
        ({"kind": OperationKind.MINT, "pool": "AAPL\n", "amount": Decimal(1)}, "pool"),
        ({"kind": OperationKind.MINT, "pool": USDC_POOL, "amount": Decimal(1)}, "pool"),
        ({"kind": OperationKind.USDC_ALPACA_TO_BASE, "pool": "AAPL", "amount": Decimal(1)}, "pool"),
        ({"kind": OperationKind.MINT, "pool": "AAPL", "amount": Decimal(0)}, "amount"),
        ({"kind": OperationKind.MINT, "pool": "AAPL", "amount": Decimal(-1)}, "amount"),
        ({"kind": OperationKind.MINT, "pool": "AAPL", "amount": 1.5}, "amount"),
        ({"kind": OperationKind.MINT, "pool": "AAPL", "amount": Decimal("1E-19")}, "amount"),
        ({"kind": OperationKind.MINT, "pool": "AAPL", "amount": Decimal("1E+40")}, "amount"),
        (
            {
                "kind": OperationKind.USDC_BASE_TO_ALPACA,
                "pool": "USDC",
                "amount": Decimal("1.5E-7"),
            },
            "amount",
        ),
        (
            {"kind": OperationKind.REDEMPTION, "pool": "AAPL", "amount": Decimal(1)},
            "token_address",
        ),
        (
            {
                "kind": OperationKind.REDEMPTION,
                "pool": "AAPL",
                "amount": Decimal(1),
                "token_address": BAD_CHECKSUM,
            },
            "token_address",
        ),
        (
            {
                "kind": OperationKind.REDEMPTION,
                "pool": "AAPL",
                "amount": Decimal(1),
                "token_address": TOKEN + "\n",
            },
            "token_address",
        ),
        (
            {
                "kind": OperationKind.MINT,
                "pool": "AAPL",
                "amount": Decimal(1),
                "token_address": TOKEN,
            },
            "token_address",
        ),
    ],
)
def test_operation_create_refuses_bad_arguments_naming_the_field(kwargs, field):
    with pytest.raises(InvalidValue) as caught:
        operation_create(**kwargs)
    assert caught.value.field == field and caught.value.rule
    assert not Operation.objects.exists()
    assert queued_operation_tasks() == []


KINDS = list(OperationKind)
wild_amounts = st.one_of(
    st.builds(
        lambda sign, digits, exponent: Decimal((sign, tuple(digits), exponent)),
        st.integers(0, 1),
        st.lists(st.integers(0, 9), min_size=1, max_size=60),
        st.integers(-40, 40),
    ),
    st.decimals(min_value=Decimal("0.000001"), max_value=Decimal(10**6), places=6),
)


def _genesis_accepts(kind: OperationKind, pool: str, amount: Decimal) -> None:
    """The aggregate the worker starts for this operation accepts the amount."""
    if kind == OperationKind.MINT:
        command = mint.RequestMint(symbol=pool, quantity=amount, wallet=WALLET)
        assert mint.handle(Lifecycle.uninitialized(), command, T0)
    elif kind == OperationKind.REDEMPTION:
        command = redemption.SendTokens(
            symbol=pool, quantity=amount, redemption_wallet=WALLET, tx_hash=HASH
        )
        assert redemption.handle(Lifecycle.uninitialized(), command, T0)
    else:
        direction = (
            RebalanceDirection.ALPACA_TO_BASE
            if kind == OperationKind.USDC_ALPACA_TO_BASE
            else RebalanceDirection.BASE_TO_ALPACA
        )
        command = usdc.Initiate(
            direction=direction,
            amount=amount,
            withdrawal=TransferRef(TransferRefKind.ONCHAIN_TX, HASH),
        )
        assert usdc.handle(Lifecycle.uninitialized(), command, T0)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.tuples(st.sampled_from(KINDS), wild_amounts), min_size=1, max_size=4))
def test_any_accepted_operation_keeps_its_aggregate_and_its_pool_usable(requests):
    with transaction.atomic():
        for kind, amount in requests:
            pool = (
                USDC_POOL if kind not in (OperationKind.MINT, OperationKind.REDEMPTION) else "AAPL"
            )
            token = TOKEN if kind == OperationKind.REDEMPTION else ""
            try:
                operation = operation_create(
                    kind=kind, pool=pool, amount=amount, token_address=token
                )
            except InvalidValue:
                continue
            if operation is None:  # the pool's guard: one active operation at a time
                continue
            _genesis_accepts(kind, pool, operation.amount)
            # The operator can always end it, which frees the pool for the next one.
            operation_fail(operation_id=operation.pk, reason="drill", actor="prop")
        for pool, kind in (("AAPL", OperationKind.MINT), (USDC_POOL, KINDS[2])):
            assert operation_create(kind=kind, pool=pool, amount=Decimal(1)) is not None
        transaction.set_rollback(True)


# --- operator actions ---------------------------------------------------------------------------


def test_retry_refuses_when_a_task_is_already_queued():
    operation = new_mint()
    assert queued_operation_tasks() == [operation.pk]
    with pytest.raises(OperatorError, match="already queued"):
        operator_retry_now(operation_id=operation.pk, actor="alice")
    assert queued_operation_tasks() == [operation.pk]
    # The task was lost and no worker took it in time: the row's queued mark has passed (the
    # row, not the broker, says what is queued); now retry queues one.
    OrmQ.objects.all().delete()
    Operation.objects.filter(pk=operation.pk).update(queued_until=timezone.now())
    operator_retry_now(operation_id=operation.pk, actor="alice")
    assert queued_operation_tasks() == [operation.pk]


def test_fail_of_an_operation_without_events_needs_no_venue_configuration(settings):
    assert not settings.REBALANCING.enabled  # no venues configured in this process
    operation = new_mint()
    failed = operator_force_fail(operation_id=operation.pk, reason="venue down", actor="alice")
    assert failed.status == OperationStatus.FAILED and failed.finished_by == "alice"
    second = new_mint()
    call_command("operation", "fail", str(second.pk), "--reason", "drill", "--actor", "bob")
    second.refresh_from_db()
    assert second.status == OperationStatus.FAILED


def test_reconcile_of_an_operation_without_events_says_nothing_is_inflight(settings):
    assert not settings.REBALANCING.enabled
    operation = new_mint()
    with pytest.raises(CommandError, match="no events, so nothing is inflight.*use fail"):
        call_command("operation", "reconcile", str(operation.pk), "--reason", "x", "--actor", "bob")
    operation.refresh_from_db()
    assert operation.status == OperationStatus.PENDING


def test_an_actor_longer_than_its_column_is_refused_not_a_database_error():
    operation = new_mint()
    with pytest.raises(OperatorError, match="at most 128 characters"):
        operator_force_fail(operation_id=operation.pk, reason="r", actor="a" * 200)
    operation.refresh_from_db()
    assert operation.status == OperationStatus.PENDING


def test_a_changed_by_longer_than_its_column_is_an_invalid_value():
    from inventory.services import setting_change

    with pytest.raises(InvalidValue) as caught:
        setting_change(scope="global", setting="paused", new_value=True, changed_by="b" * 200)
    assert caught.value.field == "changed_by"

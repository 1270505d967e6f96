"""Manual operations (issue 24): an operator starts a mint, redemption or USDC move of a
chosen amount for a pool (service, manage.py, API with the `operate` scope, console) through
the trigger's guard and workflows, and cancels one that has not moved anything yet; both are
audited in the log. Real database, the real trigger and store; no venue is called."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from inventory.domain import events as ev
from inventory.domain.values import InvalidValue
from inventory.models import Event
from inventory.services import api_token_create
from operations.models import Operation, OperationKind, OperationStatus
from operations.operator import OperatorError, operator_cancel, operator_start
from tests.service.flows import (
    TOKENS,
    append,
    enable,
    mint_requested,
    observe,
    register,
)
from tests.service.support import queued_operation_tasks

pytestmark = pytest.mark.django_db


@pytest.fixture
def balanced(settings):
    """REBALANCING_MODE=on; AAPL 50/50 and USDC 500/500: in band, nothing starts by itself."""
    enable(settings)
    register("AAPL")
    observe("AAPL", onchain="50", offchain="50", usdc_onchain="500", usdc_offchain="500")
    assert Operation.objects.count() == 0


def audits(event_class: type) -> list:
    rows = Event.objects.filter(
        aggregate_type=ev.DECISIONS, event_type=event_class.event_type_name()
    ).order_by("id")
    return [row.domain_event() for row in rows]


def start(kind="mint", pool="AAPL", amount="10", reason="desk asked", actor="alice"):
    return operator_start(kind=kind, pool=pool, amount=amount, reason=reason, actor=actor)


# --- start ------------------------------------------------------------------------------------


def test_start_creates_a_queued_operation_through_the_guard_and_audits_it(balanced):
    operation, estimate = start()
    assert (operation.kind, operation.pool, operation.amount, operation.status) == (
        OperationKind.MINT,
        "AAPL",
        Decimal("10"),
        OperationStatus.PENDING,
    )
    assert estimate is None
    assert queued_operation_tasks() == [operation.pk]
    [audit] = audits(ev.OperationStartedByOperator)
    assert (audit.pool, audit.kind, audit.amount, audit.actor, audit.reason) == (
        "AAPL",
        "mint",
        Decimal("10"),
        "alice",
        "desk asked",
    )
    assert (audit.operation_id, audit.operation_aggregate_id) == (
        operation.pk,
        operation.aggregate_id,
    )


def test_start_of_a_redemption_takes_the_token_from_the_asset_and_usdc_moves_usdc(balanced):
    redemption, _ = start(kind="redemption", amount="50")
    assert redemption.token_address == TOKENS["AAPL"]
    usdc, _ = start(kind="usdc_base_to_alpaca", pool="USDC", amount="123.456789")
    assert (usdc.pool, usdc.amount) == ("USDC", Decimal("123.456789"))


def test_a_second_start_for_a_pool_with_an_active_operation_is_refused(balanced):
    first, _ = start()
    with pytest.raises(OperatorError, match=f"already has an active operation #{first.pk}"):
        start(amount="5")
    assert Operation.objects.count() == 1
    assert len(audits(ev.OperationStartedByOperator)) == 1


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"kind": "teleport"}, "kind"),
        ({"amount": "0"}, "amount"),
        ({"amount": "-1"}, "amount"),
        ({"amount": "lots"}, "amount"),
        ({"amount": "50.5"}, "amount"),  # more than the 50 shares offchain
        ({"kind": "usdc_alpaca_to_base", "pool": "AAPL"}, "pool"),
        ({"kind": "mint", "pool": "USDC"}, "pool"),
        ({"pool": "TSLA"}, "pool"),  # no registered asset
        ({"kind": "usdc_base_to_alpaca", "pool": "USDC", "amount": "1.0000001"}, "amount"),
    ],
)
def test_bad_input_names_the_field_and_changes_nothing(balanced, changes, field):
    events_before = Event.objects.count()
    with pytest.raises(InvalidValue) as info:
        start(**changes)
    assert info.value.field == field
    assert Operation.objects.count() == 0
    assert Event.objects.count() == events_before


@pytest.mark.parametrize(("reason", "actor"), [("", "alice"), ("why", "  ")])
def test_start_needs_a_reason_and_an_actor(balanced, reason, actor):
    with pytest.raises(OperatorError):
        start(reason=reason, actor=actor)
    assert Operation.objects.count() == 0


def test_start_is_refused_in_monitor_mode(balanced, settings):
    enable(settings, monitor_only=True)
    with pytest.raises(OperatorError, match="REBALANCING_MODE is monitor"):
        start()
    assert Operation.objects.count() == 0
    assert audits(ev.OperationStartedByOperator) == []


# --- cancel -----------------------------------------------------------------------------------


def test_cancel_before_anything_moved_ends_it_audited_and_frees_the_pool(balanced):
    operation, _ = start()
    cancelled = operator_cancel(operation_id=operation.pk, reason="wrong amount", actor="bob")
    assert cancelled.status == OperationStatus.CANCELLED
    assert cancelled.finished_by == "bob"
    assert cancelled.failure_reason == "cancelled by bob: wrong amount"
    [audit] = audits(ev.OperationCancelledByOperator)
    assert (audit.operation_id, audit.actor, audit.reason, audit.amount) == (
        operation.pk,
        "bob",
        "wrong amount",
        Decimal("10"),
    )
    # The guard is released: the pool takes another operation.
    again, _ = start(amount="7")
    assert again.pk != operation.pk


def test_cancel_after_the_first_recorded_step_is_refused_and_changes_nothing(balanced):
    operation, _ = start()
    append(ev.MINT, operation.aggregate_id, mint_requested(operation))
    with pytest.raises(OperatorError, match="cannot be cancelled, force-fail it instead"):
        operator_cancel(operation_id=operation.pk, reason="too late", actor="bob")
    operation.refresh_from_db()
    assert operation.status == OperationStatus.PENDING
    assert audits(ev.OperationCancelledByOperator) == []


def test_cancel_with_a_venue_request_out_is_refused(balanced):
    from django.utils import timezone

    operation, _ = start(kind="usdc_alpaca_to_base", pool="USDC", amount="100")
    Operation.objects.filter(pk=operation.pk).update(venue_request_at=timezone.now())
    with pytest.raises(OperatorError, match="cannot be cancelled"):
        operator_cancel(operation_id=operation.pk, reason="too late", actor="bob")
    operation.refresh_from_db()
    assert operation.is_active


def test_cancel_of_a_finished_or_unknown_operation_is_refused(balanced):
    operation, _ = start()
    operator_cancel(operation_id=operation.pk, reason="first", actor="bob")
    with pytest.raises(OperatorError, match="already cancelled"):
        operator_cancel(operation_id=operation.pk, reason="twice", actor="bob")
    with pytest.raises(OperatorError, match="no such operation"):
        operator_cancel(operation_id=999999, reason="none", actor="bob")
    assert len(audits(ev.OperationCancelledByOperator)) == 1


# --- manage.py operation start / cancel --------------------------------------------------------


def test_command_starts_and_cancels_and_reports_refusals(balanced, capsys):
    call_command("operation", "start", "mint", "AAPL", "3", "--reason", "test", "--actor", "al")
    out = capsys.readouterr().out
    operation = Operation.objects.get()
    assert f"#{operation.pk} mint AAPL 3" in out
    assert "estimated cost not estimated" in out
    with pytest.raises(CommandError, match="amount"):
        call_command("operation", "start", "mint", "AAPL", "x", "--reason", "r", "--actor", "al")
    call_command("operation", "cancel", str(operation.pk), "--reason", "oops", "--actor", "al")
    operation.refresh_from_db()
    assert operation.status == OperationStatus.CANCELLED
    with pytest.raises(CommandError, match="already cancelled"):
        call_command("operation", "cancel", str(operation.pk), "--reason", "r", "--actor", "al")


# --- POST /api/v1/operations, /operations/{id}/cancel (operate scope) --------------------------


@pytest.fixture
def api(client):
    tokens: dict[tuple[str, ...], str] = {}

    def send(path, body, *, scopes=("operate",)):
        if scopes not in tokens:
            tokens[scopes] = api_token_create(name=f"t{len(tokens)}", scopes=list(scopes))[1]
        token = tokens[scopes]
        return client.post(
            f"/api/v1{path}",
            body,
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {token}",
        )

    return send


def test_api_start_and_cancel_with_the_operate_scope(balanced, api):
    body = {"kind": "mint", "pool": "AAPL", "amount": "4.5", "reason": "desk"}
    response = api("/operations", body)
    assert response.status_code == 201, response.content
    started = response.json()
    assert (started["kind"], started["pool"], started["amount"], started["status"]) == (
        "mint",
        "AAPL",
        "4.5",
        "pending",
    )
    assert started["estimated_cost_usd"] is None
    [audit] = audits(ev.OperationStartedByOperator)
    assert audit.actor.startswith("api:")
    conflict = api("/operations", body)
    assert conflict.status_code == 409
    assert "already has an active operation" in conflict.json()["detail"]
    cancel = api(f"/operations/{started['id']}/cancel", {"reason": "changed my mind"})
    assert cancel.status_code == 200, cancel.content
    assert cancel.json()["status"] == "cancelled"
    again = api(f"/operations/{started['id']}/cancel", {"reason": "again"})
    assert again.status_code == 409
    assert api("/operations/999999/cancel", {"reason": "x"}).status_code == 404


def test_api_operation_says_which_actions_apply(balanced, client):
    token = api_token_create(name="reader", scopes=["read"])[1]

    def actions(operation):
        detail = client.get(
            f"/api/v1/operations/{operation.pk}", HTTP_AUTHORIZATION=f"Bearer {token}"
        )
        assert detail.status_code == 200, detail.content
        return detail.json()["actions"]

    operation, _ = start()
    assert actions(operation) == ["retry", "fail", "reconcile", "cancel"]
    operator_cancel(operation_id=operation.pk, reason="not needed", actor="bob")
    assert actions(operation) == []  # finished: nothing applies
    started, _ = start()
    append(ev.MINT, started.aggregate_id, mint_requested(started))
    assert actions(started) == ["retry", "fail", "reconcile"]  # something moved: no cancel


def test_api_start_needs_the_operate_scope_and_names_bad_fields(balanced, api):
    body = {"kind": "mint", "pool": "AAPL", "amount": "1", "reason": "desk"}
    assert api("/operations", body, scopes=("read", "ingest")).status_code == 403
    bad = api("/operations", {**body, "amount": "999"})
    assert bad.status_code == 400
    assert bad.json()["errors"][0]["field"] == "amount"
    assert Operation.objects.count() == 0


# --- the console ------------------------------------------------------------------------------


@pytest.fixture
def operator_client(db) -> Client:
    from django.contrib.auth.models import Group

    user = User.objects.create_user(username="olivia", password="pw-olivia", is_staff=True)
    user.groups.add(Group.objects.get(name="operators"))
    client = Client()
    client.force_login(user)
    return client


def test_console_start_asks_for_confirmation_then_starts(balanced, operator_client):
    url = reverse("admin:operations_operation_start")
    listing = operator_client.get(reverse("admin:operations_operation_changelist"))
    assert 'id="start-operation"' in listing.content.decode()
    form = {"kind": "mint", "pool": "AAPL", "amount": "2", "reason": "console test"}
    review = operator_client.post(url, form).content.decode()
    assert 'id="start-confirmation"' in review
    assert 'id="estimated-cost"' in review
    assert Operation.objects.count() == 0  # nothing before the confirmation
    done = operator_client.post(url, {**form, "confirm": "yes"})
    operation = Operation.objects.get()
    assert done.status_code == 302
    assert done["Location"] == reverse("admin:operations_operation_change", args=[operation.pk])
    assert audits(ev.OperationStartedByOperator)[0].actor == "olivia"
    refused = operator_client.post(url, {**form, "confirm": "yes"}).content.decode()
    assert 'id="action-error"' in refused
    assert "already has an active operation" in refused


def test_console_offers_cancel_only_before_anything_moved(balanced, operator_client):
    operation, _ = start()
    page = operator_client.get(
        reverse("admin:operations_operation_change", args=[operation.pk])
    ).content.decode()
    assert 'id="action-cancel"' in page
    act = reverse("admin:operations_operation_act", args=[operation.pk, "cancel"])
    response = operator_client.post(act, {"reason": "console cancel"})
    assert response.status_code == 302
    operation.refresh_from_db()
    assert operation.status == OperationStatus.CANCELLED
    page = operator_client.get(
        reverse("admin:operations_operation_change", args=[operation.pk])
    ).content.decode()
    assert 'id="action-cancel"' not in page
    assert "Finished: no action applies." in page
    started, _ = start()
    append(ev.MINT, started.aggregate_id, mint_requested(started))
    page = operator_client.get(
        reverse("admin:operations_operation_change", args=[started.pk])
    ).content.decode()
    assert 'id="action-cancel"' not in page
    assert 'id="action-fail"' in page


@pytest.mark.parametrize("ending", ["completed", "failed", "cancelled"])
def test_console_offers_no_action_on_a_finished_operation_even_by_its_url(
    balanced, operator_client, ending
):
    from operations.services import operation_finish

    operation, _ = start()
    if ending == "cancelled":
        operator_cancel(operation_id=operation.pk, reason="not needed", actor="bob")
    else:
        operation_finish(
            aggregate_id=operation.aggregate_id,
            status=OperationStatus(ending),
            reason="" if ending == "completed" else "venue said no",
            finished_by="test",
        )
    operation.refresh_from_db()
    before = (operation.status, operation.next_run_at, Event.objects.count())
    detail = reverse("admin:operations_operation_change", args=[operation.pk])
    page = operator_client.get(detail).content.decode()
    assert "Finished: no action applies." in page
    for action in ("retry", "fail", "reconcile", "cancel"):
        assert f'id="action-{action}"' not in page
        url = reverse("admin:operations_operation_act", args=[operation.pk, action])
        for response in (operator_client.get(url), operator_client.post(url, {"reason": "x"})):
            # No confirmation page for what is not offered: back to the operation, said why.
            assert response.status_code == 302, action
            assert response["Location"] == detail
        operation.refresh_from_db()
        assert (operation.status, operation.next_run_at, Event.objects.count()) == before
    said = [str(m) for m in operator_client.get(detail).context["messages"]]
    assert any(f"does not apply to operation {operation.pk} ({ending})" in m for m in said)


def test_console_has_no_cancel_confirmation_once_something_moved(balanced, operator_client):
    operation, _ = start()
    append(ev.MINT, operation.aggregate_id, mint_requested(operation))
    url = reverse("admin:operations_operation_act", args=[operation.pk, "cancel"])
    response = operator_client.get(url)
    assert response.status_code == 302
    # Force-fail still applies (and asks first).
    fail = reverse("admin:operations_operation_act", args=[operation.pk, "fail"])
    assert 'id="confirm-action"' in operator_client.get(fail).content.decode()
    operation.refresh_from_db()
    assert operation.status == OperationStatus.PENDING


def test_console_start_is_for_operators_only(balanced, client):
    viewer = User.objects.create_user(username="victor", password="pw-victor", is_staff=True)
    client.force_login(viewer)
    response = client.get(reverse("admin:operations_operation_start"))
    assert response.status_code == 403


def test_start_shows_and_records_the_cost_estimate_without_enforcing_it(balanced, settings):
    from operations.costgate import gas_quote_record

    enable(settings, max_cost_bps=Decimal("0.01"))  # the gate would defer the trigger's
    for chain in ("base", "ethereum"):
        gas_quote_record(chain=chain, gas_price_wei=10**9, eth_usd=Decimal(3000))
    operation, estimate = start(kind="usdc_base_to_alpaca", pool="USDC", amount="400")
    # 550,000 gas at 1 gwei x 3,000 = 1.65 + Circle 1 bp of 400 = 0.04
    assert estimate == Decimal("1.69")
    assert operation.status == OperationStatus.PENDING
    [audit] = audits(ev.OperationStartedByOperator)
    assert audit.estimated_cost_usd == Decimal("1.69")


def test_console_confirmation_shows_the_estimate(balanced, operator_client):
    from operations.costgate import gas_quote_record

    for chain in ("base", "ethereum"):
        gas_quote_record(chain=chain, gas_price_wei=10**9, eth_usd=Decimal(3000))
    form = {"kind": "usdc_base_to_alpaca", "pool": "USDC", "amount": "400", "reason": "r"}
    review = operator_client.post(reverse("admin:operations_operation_start"), form)
    body = review.content.decode()
    assert "1.69000000 USD (gas 1.65000000, circle_fee 0.04000000) on 400 USD" in body

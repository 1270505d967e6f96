"""The trigger through the real store and projection: events in, Operation rows and queued
tasks out (seed plan Tasks 2-3, spec 5 and 13 "Trigger")."""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest
from django_q.models import OrmQ

from inventory.models import Asset
from inventory.services import setting_change
from operations.models import Operation, OperationKind, OperationStatus
from tests.service.flows import (
    TOKENS,
    active,
    enable,
    observe,
    onchain_fill,
    pool,
    register,
)
from tests.service.support import queued_operation_tasks, queued_tasks

pytestmark = pytest.mark.django_db


@pytest.fixture
def enabled(settings):
    enable(settings)


def only_operation() -> Operation:
    operations = list(Operation.objects.all())
    assert len(operations) == 1, operations
    return operations[0]


def test_too_much_offchain_triggers_mint_and_queues_its_task(enabled):
    register("AAPL")
    observe("AAPL", onchain="20", offchain="80")
    operation = only_operation()
    assert (operation.kind, operation.pool, operation.amount, operation.status) == (
        OperationKind.MINT,
        "AAPL",
        Decimal("30"),
        OperationStatus.PENDING,
    )
    assert operation.token_address == ""
    assert queued_tasks() == [("operations.tasks.execute_operation", (operation.pk,))]


def test_too_much_onchain_triggers_redemption_with_token_address_from_asset(enabled):
    register("AAPL")
    observe("AAPL", onchain="80", offchain="20")
    operation = only_operation()
    assert (operation.kind, operation.amount, operation.token_address) == (
        OperationKind.REDEMPTION,
        Decimal("30"),
        TOKENS["AAPL"],
    )
    assert queued_operation_tasks() == [operation.pk]


def test_too_much_onchain_without_token_address_creates_nothing_and_warns(enabled, caplog):
    # The asset service refuses a missing token; a row edited outside it can still lack one.
    Asset.objects.create(
        base_symbol="AAPL", token_address="", token_symbol="tAAPL", vault_id="0x" + "11" * 32
    )
    with caplog.at_level(logging.WARNING, logger="service.trigger"):
        observe("AAPL", onchain="80", offchain="20")
    assert Operation.objects.count() == 0
    assert queued_tasks() == []
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("AAPL" in r.getMessage() and "token" in r.getMessage() for r in warnings)


def test_too_much_offchain_without_token_address_still_mints(enabled):
    Asset.objects.create(
        base_symbol="AAPL", token_address="", token_symbol="tAAPL", vault_id="0x" + "11" * 32
    )
    observe("AAPL", onchain="20", offchain="80")
    assert only_operation().kind == OperationKind.MINT


@pytest.mark.parametrize(("onchain", "offchain"), [("50", "50"), ("70", "30"), ("30", "70")])
def test_balanced_inventory_triggers_nothing(enabled, onchain, offchain):
    register("AAPL")
    observe("AAPL", onchain=onchain, offchain=offchain, usdc_onchain="500", usdc_offchain="500")
    assert Operation.objects.count() == 0
    assert queued_tasks() == []


def test_position_event_updates_inventory_and_keeps_balance(enabled):
    register("AAPL")
    observe("AAPL", onchain="50", offchain="50", usdc_onchain="1000", usdc_offchain="1000")
    onchain_fill("AAPL", "5", "Buy", price="10")  # 55/50 = 52.4%
    assert (pool("AAPL").onchain_available, pool("USDC").onchain_available) == (
        Decimal("55"),
        Decimal("950"),
    )
    assert Operation.objects.count() == 0


def test_position_event_causing_imbalance_triggers_mint(enabled):
    observe("AAPL", onchain="19", offchain="80", usdc_onchain="1000", usdc_offchain="1000")
    onchain_fill("AAPL", "1", "Buy")  # 20/80, AAPL not yet an asset: skipped
    register("AAPL")  # no event touches the pool: nothing is checked
    assert Operation.objects.count() == 0
    onchain_fill("AAPL", "1", "Buy")  # 21/80
    operation = only_operation()
    assert (operation.kind, operation.amount) == (OperationKind.MINT, Decimal("29.5"))
    assert queued_operation_tasks() == [operation.pk]


def test_in_progress_symbol_does_not_create_a_second_operation(enabled):
    register("AAPL")
    observe("AAPL", onchain="20", offchain="80", usdc_onchain="1000", usdc_offchain="1000")
    first = only_operation()
    onchain_fill("AAPL", "1", "Sell")
    observe("AAPL", onchain="10", offchain="90")
    assert only_operation() == first
    assert queued_operation_tasks() == [first.pk]


def test_symbols_and_usdc_are_rebalanced_independently(enabled):
    register("AAPL")
    register("MSFT")
    observe("AAPL", onchain="20", offchain="80")
    observe("MSFT", onchain="80", offchain="20")
    observe(usdc_onchain="900", usdc_offchain="100")
    kinds = {op.pool: op.kind for op in Operation.objects.all()}
    assert kinds == {
        "AAPL": OperationKind.MINT,
        "MSFT": OperationKind.REDEMPTION,
        "USDC": OperationKind.USDC_BASE_TO_ALPACA,
    }
    assert sorted(queued_operation_tasks()) == sorted(
        Operation.objects.values_list("pk", flat=True)
    )


@pytest.mark.parametrize(
    ("usdc_onchain", "usdc_offchain", "kind"),
    [
        ("100", "900", OperationKind.USDC_ALPACA_TO_BASE),
        ("900", "100", OperationKind.USDC_BASE_TO_ALPACA),
    ],
)
def test_usdc_imbalance_triggers_the_matching_direction(enabled, usdc_onchain, usdc_offchain, kind):
    observe(usdc_onchain=usdc_onchain, usdc_offchain=usdc_offchain)
    operation = only_operation()
    assert (operation.kind, operation.pool, operation.amount) == (kind, "USDC", Decimal("400"))
    assert queued_operation_tasks() == [operation.pk]


def test_usdc_in_progress_blocks_concurrent_triggers(enabled):
    observe(usdc_onchain="900", usdc_offchain="100")
    first = only_operation()
    observe(usdc_onchain="950", usdc_offchain="50")
    assert only_operation() == first


def test_usdc_within_band_triggers_nothing(enabled):
    observe(usdc_onchain="800", usdc_offchain="200")  # 0.8 = upper boundary (0.5 + 0.3)
    assert Operation.objects.count() == 0


def test_fill_rechecks_usdc(enabled):
    register("AAPL")
    observe("AAPL", onchain="50", offchain="50", usdc_onchain="500", usdc_offchain="500")
    onchain_fill("AAPL", "40", "Buy", price="10")  # AAPL 90/50 balanced; USDC 100/500
    operation = only_operation()
    assert (operation.kind, operation.amount) == (OperationKind.USDC_ALPACA_TO_BASE, Decimal("200"))


def test_rebalancing_disabled_by_the_environment_creates_nothing():
    register("AAPL")
    observe("AAPL", onchain="20", offchain="80", usdc_onchain="800", usdc_offchain="200")
    assert Operation.objects.count() == 0
    assert pool("AAPL").offchain_available == Decimal("80")


def test_pause_stops_new_operations_and_running_ones_continue(enabled):
    register("AAPL")
    register("MSFT")
    observe("AAPL", onchain="20", offchain="80")
    running = only_operation()
    setting_change(scope="global", setting="paused", new_value=True, changed_by="ops")
    observe("MSFT", onchain="80", offchain="20")
    observe(usdc_onchain="900", usdc_offchain="100")
    assert only_operation() == running
    assert running.status == OperationStatus.PENDING
    setting_change(scope="global", setting="paused", new_value=False, changed_by="ops")
    observe("MSFT", onchain="81", offchain="20")
    assert active("MSFT") is not None


def test_asset_with_rebalancing_disabled_is_skipped(enabled):
    register("AAPL", rebalancing_enabled=False)
    observe("AAPL", onchain="20", offchain="80")
    assert Operation.objects.count() == 0
    setting_change(scope="AAPL", setting="rebalancing_enabled", new_value=True, changed_by="ops")
    observe("AAPL", onchain="20", offchain="81")
    assert only_operation().kind == OperationKind.MINT


def test_symbol_that_is_not_a_configured_asset_is_skipped(enabled, caplog):
    with caplog.at_level(logging.DEBUG, logger="service.trigger"):
        observe("NVDA", onchain="20", offchain="80")
    assert Operation.objects.count() == 0
    assert any("NVDA" in r.getMessage() and r.levelno == logging.DEBUG for r in caplog.records)


@pytest.mark.parametrize(
    ("usdc_onchain", "expected_amount"),
    [("100", None), ("101.99", None), ("102", Decimal("51")), ("200", Decimal("100"))],
)
def test_usdc_below_the_51_minimum_creates_nothing(enabled, usdc_onchain, expected_amount):
    observe(usdc_onchain=usdc_onchain, usdc_offchain="0")
    operation = Operation.objects.first()
    assert (operation.amount if operation else None) == expected_amount


def test_equity_below_the_configured_minimum_creates_nothing(enabled):
    register("AAPL")
    setting_change(
        scope="global", setting="equity_minimum_shares", new_value="31", changed_by="ops"
    )
    observe("AAPL", onchain="20", offchain="80")  # excess 30
    assert Operation.objects.count() == 0
    observe("AAPL", onchain="20", offchain="82")  # excess 31
    assert only_operation().amount == Decimal("31")


def test_amount_is_truncated_to_usdc_precision(enabled):
    observe(usdc_onchain="1000.000001", usdc_offchain="0")  # excess 500.0000005
    assert only_operation().amount == Decimal("500.000000")


def test_cap_limits_the_operation_amount(settings):
    enable(settings, equity_cap_shares=Decimal("10"), usdc_cap=Decimal("60"))
    register("AAPL")
    observe("AAPL", onchain="10", offchain="90", usdc_onchain="1000", usdc_offchain="0")
    amounts = {op.pool: op.amount for op in Operation.objects.all()}
    assert amounts == {"AAPL": Decimal("10"), "USDC": Decimal("60")}


def test_pool_needing_reconciliation_is_skipped_until_a_snapshot_resolves_it(enabled):
    observe("AAPL", onchain="20", offchain="80", usdc_onchain="1000", usdc_offchain="1000")
    onchain_fill("AAPL", "30", "Sell")  # more than the 20 held: recorded, pool flagged
    assert pool("AAPL").needs_reconciliation
    register("AAPL")
    onchain_fill("AAPL", "1", "Buy")
    assert Operation.objects.count() == 0
    observe("AAPL", onchain="20", offchain="80")
    assert not pool("AAPL").needs_reconciliation
    assert only_operation().kind == OperationKind.MINT


def test_a_new_operation_is_queued_in_the_same_transaction_as_its_event(enabled):
    register("AAPL")
    observe("AAPL", onchain="20", offchain="80")
    operation = only_operation()
    row = OrmQ.objects.get()
    assert row.task["args"] == (operation.pk,)
    assert row.task["func"] == "operations.tasks.execute_operation"


def test_with_a_redis_broker_the_task_is_pushed_only_after_commit(
    settings, django_capture_on_commit_callbacks
):
    enable(settings)
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "redis": "redis://127.0.0.1:1/0"}
    settings.Q_CLUSTER.pop("orm", None)
    register("AAPL")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        observe("AAPL", onchain="20", offchain="80")
    assert only_operation().kind == OperationKind.MINT
    assert OrmQ.objects.count() == 0
    assert len(callbacks) == 1


def test_threshold_settings_control_trigger_sensitivity(enabled):
    register("AAPL")
    observe("AAPL", onchain="35", offchain="65")  # inside 0.5 +/- 0.2
    assert Operation.objects.count() == 0
    setting_change(scope="global", setting="equity_deviation", new_value="0.1", changed_by="ops")
    observe("AAPL", onchain="35", offchain="66")  # 0.347 < 0.4 now
    assert only_operation().kind == OperationKind.MINT


def test_per_asset_threshold_override_applies_to_that_symbol_only(enabled):
    register("AAPL")
    register("MSFT")
    setting_change(scope="AAPL", setting="target_ratio", new_value="0.8", changed_by="ops")
    observe("AAPL", onchain="50", offchain="50")  # 0.5 < 0.8 - 0.2
    observe("MSFT", onchain="50", offchain="50")
    operation = only_operation()
    assert (operation.pool, operation.kind, operation.amount) == (
        "AAPL",
        OperationKind.MINT,
        Decimal("30"),
    )

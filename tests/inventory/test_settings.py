"""Global and per-asset rebalancing settings: env defaults, audited changes, thresholds."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from inventory.domain import events as ev
from inventory.domain.inventory import ImbalanceThreshold
from inventory.domain.values import USDC_POOL, InvalidValue
from inventory.models import Asset, Event, RebalancingSettingsRow
from inventory.selectors import rebalancing_settings_get, threshold_for
from inventory.services import asset_register, setting_change

pytestmark = pytest.mark.django_db

D = Decimal
NOW = datetime(2026, 2, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def custom_env(settings):
    settings.REBALANCING = dataclasses.replace(
        settings.REBALANCING,
        enabled=True,
        equity_target_ratio=D("0.6"),
        equity_deviation=D("0.1"),
        usdc_target_ratio=D("0.4"),
        usdc_deviation=D("0.15"),
        equity_minimum_shares=D("2"),
        usdc_minimum=D("51"),
        equity_cap_shares=None,
        usdc_cap=D("5000"),
    )
    return settings.REBALANCING


def audit_events() -> list[ev.SettingChanged]:
    return [row.domain_event() for row in Event.objects.filter(aggregate_type=ev.SETTINGS)]


def register_aapl(**kwargs) -> Asset:
    return asset_register(
        base_symbol="AAPL",
        token_address="0x" + "ab" * 20,
        token_symbol="tAAPL",
        vault_id="0x" + "00" * 32,
        changed_by="ops",
        **kwargs,
    )


def test_first_read_creates_the_row_from_the_environment(custom_env):
    assert not RebalancingSettingsRow.objects.exists()
    current = rebalancing_settings_get()
    assert current.equity_threshold == ImbalanceThreshold(D("0.6"), D("0.1"))
    assert current.usdc_threshold == ImbalanceThreshold(D("0.4"), D("0.15"))
    assert (current.equity_minimum_shares, current.usdc_minimum) == (D(2), D(51))
    assert (current.equity_cap_shares, current.usdc_cap) == (None, D(5000))
    assert (current.enabled, current.paused, current.active) == (True, False, True)
    assert RebalancingSettingsRow.objects.count() == 1
    rebalancing_settings_get()
    assert RebalancingSettingsRow.objects.count() == 1


def test_defaults_without_environment_overrides_are_the_spec_values():
    current = rebalancing_settings_get()
    assert current.equity_threshold == ImbalanceThreshold(D("0.5"), D("0.2"))
    assert current.usdc_threshold == ImbalanceThreshold(D("0.5"), D("0.3"))


def test_settings_object_is_frozen(custom_env):
    current = rebalancing_settings_get()
    with pytest.raises(dataclasses.FrozenInstanceError):
        current.paused = True


def test_change_writes_the_row_and_appends_an_audited_event(custom_env):
    stored = setting_change(
        scope="global", setting="equity_target_ratio", new_value="0.55", changed_by="alice", now=NOW
    )
    row = RebalancingSettingsRow.objects.get()
    assert row.equity_target_ratio == D("0.55")
    assert row.updated_by == "alice"
    event = stored.event
    assert (event.scope, event.setting, event.old_value, event.new_value, event.changed_by) == (
        "global",
        "equity_target_ratio",
        "0.6",
        "0.55",
        "alice",
    )
    assert event.changed_at == NOW
    assert audit_events() == [event]
    assert rebalancing_settings_get().equity_threshold.target == D("0.55")


def test_changes_of_one_scope_form_one_sequence(custom_env):
    setting_change(scope="global", setting="paused", new_value=True, changed_by="a")
    setting_change(scope="global", setting="usdc_cap", new_value=None, changed_by="b")
    rows = Event.objects.filter(aggregate_type=ev.SETTINGS, aggregate_id="global")
    assert list(rows.values_list("sequence", flat=True)) == [1, 2]
    assert [(e.setting, e.old_value, e.new_value) for e in audit_events()] == [
        ("paused", "false", "true"),
        ("usdc_cap", "5000", None),
    ]
    current = rebalancing_settings_get()
    assert current.paused and not current.active
    assert current.usdc_cap is None


def test_unchanged_value_writes_nothing(custom_env):
    assert (
        setting_change(scope="global", setting="usdc_deviation", new_value="0.150", changed_by="a")
        is None
    )
    assert audit_events() == []


@pytest.mark.parametrize(
    ("setting", "value", "field"),
    [
        ("equity_target_ratio", "1.5", "equity_target_ratio"),
        ("usdc_target_ratio", "-0.1", "usdc_target_ratio"),
        ("equity_deviation", "-0.01", "equity_deviation"),
        ("usdc_minimum", "-1", "usdc_minimum"),
        ("equity_minimum_shares", "abc", "equity_minimum_shares"),
        ("usdc_cap", "0", "usdc_cap"),
        ("equity_cap_shares", "-5", "equity_cap_shares"),
        ("equity_target_ratio", 0.5, "equity_target_ratio"),  # float refused
        ("paused", "maybe", "paused"),
        ("no_such_setting", "1", "setting"),
    ],
)
def test_invalid_change_is_refused_and_writes_nothing(custom_env, setting, value, field):
    rebalancing_settings_get()
    before = list(RebalancingSettingsRow.objects.values())
    with pytest.raises(InvalidValue) as error:
        setting_change(scope="global", setting=setting, new_value=value, changed_by="a")
    assert error.value.field == field
    assert list(RebalancingSettingsRow.objects.values()) == before
    assert audit_events() == []


def test_change_without_author_is_refused(custom_env):
    with pytest.raises(InvalidValue) as error:
        setting_change(scope="global", setting="paused", new_value=True, changed_by="")
    assert error.value.field == "changed_by"
    assert audit_events() == []


def test_cap_accepts_a_positive_value(custom_env):
    setting_change(scope="global", setting="equity_cap_shares", new_value="100", changed_by="a")
    assert rebalancing_settings_get().equity_cap_shares == D(100)


def test_threshold_for_usdc_pool_is_the_usdc_threshold(custom_env):
    assert threshold_for(USDC_POOL) == ImbalanceThreshold(D("0.4"), D("0.15"))


def test_threshold_for_unregistered_symbol_is_the_global_equity_threshold(custom_env):
    assert threshold_for("MSFT") == ImbalanceThreshold(D("0.6"), D("0.1"))


def test_per_asset_override_replaces_only_the_given_part(custom_env):
    register_aapl()
    assert threshold_for("AAPL") == ImbalanceThreshold(D("0.6"), D("0.1"))
    setting_change(scope="AAPL", setting="deviation", new_value="0.05", changed_by="a")
    assert threshold_for("AAPL") == ImbalanceThreshold(D("0.6"), D("0.05"))
    setting_change(scope="AAPL", setting="target_ratio", new_value="0.3", changed_by="a")
    assert threshold_for("AAPL") == ImbalanceThreshold(D("0.3"), D("0.05"))
    setting_change(scope="AAPL", setting="target_ratio", new_value=None, changed_by="a")
    assert threshold_for("AAPL") == ImbalanceThreshold(D("0.6"), D("0.05"))
    assert [(e.setting, e.old_value, e.new_value) for e in audit_events()][1:] == [
        ("deviation", None, "0.05"),
        ("target_ratio", None, "0.3"),
        ("target_ratio", "0.3", None),
    ]


def test_asset_switch_controls_asset_enabled(custom_env):
    register_aapl()
    assert rebalancing_settings_get().asset_enabled("AAPL")
    assert not rebalancing_settings_get().asset_enabled("MSFT")
    setting_change(scope="AAPL", setting="rebalancing_enabled", new_value=False, changed_by="a")
    assert not rebalancing_settings_get().asset_enabled("AAPL")
    assert not Asset.objects.get().rebalancing_enabled


@pytest.mark.parametrize(
    ("scope", "setting", "value", "field"),
    [
        ("MSFT", "deviation", "0.1", "scope"),  # not registered
        ("AAPL", "target_ratio", "2", "target_ratio"),
        ("AAPL", "paused", True, "setting"),  # a global setting
        ("global", "target_ratio", "0.5", "setting"),  # an asset setting
    ],
)
def test_invalid_asset_change_is_refused(custom_env, scope, setting, value, field):
    register_aapl()
    with pytest.raises(InvalidValue) as error:
        setting_change(scope=scope, setting=setting, new_value=value, changed_by="a")
    assert error.value.field == field
    assert len(audit_events()) == 1  # only the registration

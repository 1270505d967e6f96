"""A stale console form never undoes another operator's change (issue 19): two operators
through Django's test client, each submitting the form exactly as a browser would (every
input of the rendered page, hidden ones included)."""

from __future__ import annotations

from decimal import Decimal
from html.parser import HTMLParser

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from django.urls import reverse

from inventory.models import Asset, Event, RebalancingSettingsRow
from inventory.services import setting_change, settings_row_ensure

pytestmark = pytest.mark.django_db


class _FormInputs(HTMLParser):
    """The values a browser submits for the page's change form (`<form id=..._form>`)."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, str] = {}
        self._in_form = False
        self._select: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and a.get("id", "").endswith("_form"):
            self._in_form = True
        if not self._in_form or "name" not in a and tag != "option":
            return
        if tag == "input":
            kind = a.get("type", "text")
            if kind in ("submit", "button"):
                return
            if kind == "checkbox":
                if "checked" in a:
                    self.values[a["name"]] = a.get("value") or "on"
                return
            self.values[a["name"]] = a.get("value", "")
        elif tag == "select":
            self._select = a["name"]
        elif tag == "option" and self._select and "selected" in a:
            self.values[self._select] = a.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False
        if tag == "select":
            self._select = None


def opened_form(client: Client, url: str) -> dict[str, str]:
    page = client.get(url)
    assert page.status_code == 200
    parser = _FormInputs()
    parser.feed(page.content.decode())
    assert parser.values, "no change form on the page"
    return parser.values


def _operator(username: str) -> Client:
    user = User.objects.create_user(username=username, password="pw-" + username, is_staff=True)
    user.groups.add(Group.objects.get(name="operators"))
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def olivia() -> Client:
    return _operator("olivia")


@pytest.fixture
def bob() -> Client:
    return _operator("bob")


def _changes(setting: str) -> list:
    return [
        e.domain_event()
        for e in Event.objects.filter(event_type__endswith="::SettingChanged").order_by("id")
        if e.domain_event().setting == setting
    ]


def test_a_stale_settings_form_keeps_the_pause_another_operator_switched_on(olivia, bob):
    row = settings_row_ensure()
    url = reverse("admin:inventory_rebalancingsettingsrow_change", args=[row.pk])
    stale = opened_form(olivia, url)
    assert "paused" not in stale  # rendered unpaused
    # bob pauses rebalancing through the same page
    bob_form = opened_form(bob, url)
    bob_form["paused"] = "on"
    assert bob.post(url, bob_form).status_code == 302
    assert RebalancingSettingsRow.objects.get(pk=row.pk).paused is True
    # olivia saves her stale form with only a deviation edited
    stale["equity_deviation"] = "0.15"
    response = olivia.post(url, stale)
    assert response.status_code == 302, response.content.decode()[:3000]
    row.refresh_from_db()
    assert row.paused is True
    assert row.equity_deviation == Decimal("0.15")
    assert [(c.new_value, c.changed_by) for c in _changes("paused")] == [("true", "bob")]
    assert [(c.new_value, c.changed_by) for c in _changes("equity_deviation")] == [
        ("0.15", "olivia")
    ]


def test_a_field_both_operators_changed_is_refused_with_the_current_value(olivia, bob):
    row = settings_row_ensure()
    url = reverse("admin:inventory_rebalancingsettingsrow_change", args=[row.pk])
    stale = opened_form(olivia, url)
    opened_deviation = row.equity_deviation
    bob_form = opened_form(bob, url)
    bob_form["equity_deviation"] = "0.25"
    bob_form["usdc_minimum"] = "77"
    assert bob.post(url, bob_form).status_code == 302
    before = Event.objects.count()
    stale["equity_deviation"] = "0.15"
    refused = olivia.post(url, stale)
    assert refused.status_code == 200
    page = refused.content.decode()
    assert (
        f"equity_deviation was changed by bob since you opened this form: it was "
        f"{opened_deviation}" in page
    )
    assert "it is now 0.25" in page
    assert Event.objects.count() == before
    row.refresh_from_db()
    assert (row.equity_deviation, row.usdc_minimum) == (Decimal("0.25"), Decimal("77"))
    # the page shows the current values, the operator's edit kept: saving again applies it
    again = _FormInputs()
    again.feed(page)
    assert again.values["equity_deviation"] == "0.15"
    assert Decimal(again.values["usdc_minimum"]) == Decimal("77")
    assert olivia.post(url, again.values).status_code == 302
    row.refresh_from_db()
    assert (row.equity_deviation, row.usdc_minimum) == (Decimal("0.15"), Decimal("77"))


def test_a_stale_asset_form_keeps_rebalancing_disabled(olivia, bob, trading_state):
    asset = Asset.objects.get(base_symbol="AAPL")
    assert asset.rebalancing_enabled is True
    url = reverse("admin:inventory_asset_change", args=[asset.pk])
    stale = opened_form(olivia, url)
    assert stale["rebalancing_enabled"] == "on"
    # bob disables the asset (the list action, as an operator would)
    setting_change(scope="AAPL", setting="rebalancing_enabled", new_value=False, changed_by="bob")
    stale["deviation"] = "0.05"
    response = olivia.post(url, stale)
    assert response.status_code == 302, response.content.decode()[:3000]
    asset.refresh_from_db()
    assert asset.rebalancing_enabled is False
    assert asset.deviation == Decimal("0.05")
    assert [c.changed_by for c in _changes("rebalancing_enabled")] == ["bob"]

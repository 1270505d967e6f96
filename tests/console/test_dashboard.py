"""The dashboard: pools against their bands, operations by urgency, health, the pause switch."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.test import Client
from django.urls import reverse

from console.models import PoolRatioSample
from inventory.models import Event
from inventory.selectors import rebalancing_settings_get

pytestmark = pytest.mark.django_db


def test_anonymous_user_is_sent_to_the_login_page(trading_state):
    response = Client().get(reverse("admin:index"))
    assert response.status_code == 302
    assert reverse("admin:login") in response["Location"]
    fragment = Client().get(reverse("admin:console_fragment"))
    assert fragment.status_code == 302
    assert reverse("admin:login") in fragment["Location"]


def test_dashboard_shows_each_pool_state_against_its_band(viewer_client, trading_state):
    body = viewer_client.get(reverse("admin:index")).content.decode()
    # AAPL: 90 onchain of 100 is above the default 0.5 +/- 0.2 band; nothing is active.
    assert 'data-pool="AAPL" data-state="imbalanced"' in body
    assert 'data-pool="USDC" data-state="operation active"' in body
    assert 'data-ratio="0.9000"' in body
    assert "band 0.3&ndash;0.7" in body


def test_dashboard_lists_attention_first_and_recent_failures(viewer_client, trading_state):
    body = viewer_client.get(reverse("admin:index")).content.decode()
    attention = body.index('id="attention"')
    failures = body.index('id="recent-failures"')
    assert body.index(f'data-operation="{trading_state["attention"].pk}"') > attention
    assert "Alpaca refused: insufficient position" in body[failures:]


def test_a_venue_poll_records_one_ratio_sample_per_pool_it_touched(trading_state):
    samples = {row.pool: row for row in PoolRatioSample.objects.all()}
    assert set(samples) == {"AAPL", "USDC"}
    assert samples["AAPL"].ratio == Decimal("0.900000")
    assert samples["USDC"].onchain_total == Decimal("500.25")


def test_fragment_refreshes_the_body_without_the_page_chrome(viewer_client, trading_state):
    response = viewer_client.get(reverse("admin:console_fragment"))
    assert response.status_code == 200
    body = response.content.decode()
    assert 'id="pools"' in body
    assert "<html" not in body


def test_viewer_sees_no_pause_switch_and_cannot_use_it(viewer_client, trading_state):
    body = viewer_client.get(reverse("admin:index")).content.decode()
    assert 'id="pause-link"' not in body
    response = viewer_client.post(reverse("admin:console_switch", args=["pause"]))
    assert response.status_code == 403
    assert rebalancing_settings_get().paused is False


def test_operator_pauses_after_confirmation_and_the_change_is_audited(
    operator_client, trading_state
):
    confirm = operator_client.get(reverse("admin:console_switch", args=["pause"]))
    assert confirm.status_code == 200
    assert rebalancing_settings_get().paused is False  # asking changes nothing
    response = operator_client.post(reverse("admin:console_switch", args=["pause"]))
    assert response.status_code == 302
    assert rebalancing_settings_get().paused is True
    change = Event.objects.filter(event_type__endswith="::SettingChanged").order_by("-id").first()
    body = change.domain_event()
    assert (body.setting, body.new_value, body.changed_by) == ("paused", "true", "olivia")
    page = operator_client.get(reverse("admin:index")).content.decode()
    assert 'id="resume-link"' in page


def test_a_halted_pool_shows_its_breaker_and_an_operator_resumes_it(
    operator_client, viewer_client, trading_state
):
    from operations.models import PoolBreaker
    from operations.services import pool_failure_record

    for _ in range(10):
        pool_failure_record(operation=trading_state["failed"], reason="Alpaca refused: 403")
        if PoolBreaker.objects.get(pool="TSLA").is_open:
            break
    from inventory.models import InventoryPool

    InventoryPool.objects.get_or_create(key="TSLA", defaults={"kind": "equity"})
    body = operator_client.get(reverse("admin:index")).content.decode()
    assert 'data-pool="TSLA" data-state="halted (circuit breaker)"' in body
    assert 'id="resume-pool-TSLA"' in body
    assert 'id="resume-pool-TSLA"' not in viewer_client.get(reverse("admin:index")).content.decode()
    url = reverse("admin:console_resume_pool", args=["TSLA"])
    assert viewer_client.post(url, {"reason": "x"}).status_code == 403
    refused = operator_client.post(url, {"reason": "  "})
    assert 'id="action-error"' in refused.content.decode()
    assert PoolBreaker.objects.get(pool="TSLA").is_open
    assert operator_client.post(url, {"reason": "Alpaca whitelisted us"}).status_code == 302
    assert not PoolBreaker.objects.get(pool="TSLA").is_open


def test_dashboard_shows_the_service_health_checks(viewer_client, trading_state):
    body = viewer_client.get(reverse("admin:index")).content.decode()
    assert 'id="service-health"' in body
    # No cluster has ever beaten in this test database, and an operation needs attention.
    assert 'class="health-check failing" data-check="cluster_heartbeat"' in body
    assert 'class="health-check failing" data-check="operations_needing_attention"' in body
    assert 'class="health-check ok" data-check="database"' in body


# --- issue 22: the first screen answers "is anything wrong, and what do I do" -----------------


def test_the_dashboard_opens_with_what_is_wrong_and_what_to_do(viewer_client, trading_state):
    body = viewer_client.get(reverse("admin:index")).content.decode()
    triage = body[body.index('id="triage"') : body.index('class="console-pools"')]
    attention = trading_state["attention"]
    assert f"operation #{attention.pk}" in triage and "withdrawal outcome unknown" in triage
    assert "pool AAPL is out of its band: ratio 0.9000, band 0.3-0.7" in triage
    # No worker has run the heartbeat task yet: a failing health check is something wrong too.
    assert "health check cluster_heartbeat fails: never" in triage
    assert triage.count("What to do:") == 3
    assert body.index('id="triage"') < body.index('id="pools"') < body.index('id="console-health"')


def test_a_drift_alert_shows_on_its_pool_and_health_is_not_green_while_it_is_open(
    viewer_client, trading_state
):
    from console.models import AlertState

    Operation = trading_state["attention"].__class__
    Operation.objects.update(needs_attention=False)
    AlertState.objects.create(
        key="drift_report:USDC:alpaca",
        kind="drift_report",
        message="pool USDC at alpaca: projected and observed differ by 12.5 (tolerance 0)",
    )
    body = viewer_client.get(reverse("admin:index")).content.decode()
    assert '<strong class="state-running">healthy</strong>' not in body
    row = body[body.index('class="pool-row" data-pool="USDC"') :]
    row = row[: row.index("</tr>")]
    assert 'data-alert="drift_report:USDC:alpaca"' in row and "differ by 12.5" in row
    assert re.search(r"since \d\d:\d\d:\d\d UTC, \d+s ago", row), row
    triage = body[body.index('id="triage"') : body.index('class="console-pools"')]
    assert 'data-pool="USDC"' in triage and "manage.py reconcile" in triage


def test_nothing_wrong_says_so(viewer_client, db):
    from service.periodic import cluster_heartbeat_record

    cluster_heartbeat_record()
    body = viewer_client.get(reverse("admin:index")).content.decode()
    assert 'id="all-well"' in body and "Nothing needs you" in body


def test_the_history_chart_spans_the_history_there_is_and_switches_range(
    viewer_client, trading_state
):
    sample = PoolRatioSample.objects.order_by("recorded_at").first()
    body = viewer_client.get(reverse("admin:index") + "?range=hour").content.decode()
    assert 'data-range="hour" class="current"' in body
    # The only sample is 30 s old: the chart starts a minute back, not an hour or a day back.
    spans = re.findall(r'class="history-span">from \d\d:\d\d:\d\d UTC \(([^)]*) ago\)', body)
    assert spans and all(re.fullmatch(r"\d+s|1m [01]s", ago) for ago in spans), spans
    assert sample is not None
    assert 'data-fragment-url="/admin/console/fragment/?range=hour"' in body
    week = viewer_client.get(reverse("admin:console_fragment") + "?range=week").content.decode()
    assert 'data-range="week" class="current"' in week

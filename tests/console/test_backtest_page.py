"""The console's backtest page (issue 25): bad input is named and queues nothing; a valid
request queues the backtest as a django-q2 task; its report is the self-contained page."""

from __future__ import annotations

import re

import pytest
from django.urls import resolve, reverse
from django_q.models import OrmQ, Task
from django_q.tasks import async_task

from operations.backtest_console import GROUP, TASK

pytestmark = pytest.mark.django_db
FROM, TO = "2026-03-02T14:00:00+00:00", "2026-03-02T15:00:00+00:00"


def test_the_page_shows_the_form(viewer_client):
    page = viewer_client.get(reverse("admin:console_backtest"))
    assert page.status_code == 200
    assert b'id="backtest-form"' in page.content


def test_the_dashboard_links_to_the_page_and_a_viewer_can_follow_it(viewer_client):
    dashboard = viewer_client.get(reverse("admin:index"))
    assert dashboard.status_code == 200
    found = re.search(r'<a id="backtest-link" href="([^"]+)"', dashboard.content.decode())
    assert found, "the dashboard links to the backtest page"
    href = found.group(1)
    assert resolve(href).url_name == "console_backtest"
    page = viewer_client.get(href)
    assert page.status_code == 200
    assert b'id="backtest-form"' in page.content


def test_bad_input_is_named_and_queues_nothing(viewer_client):
    queued = OrmQ.objects.count()
    page = viewer_client.post(
        reverse("admin:console_backtest"),
        {"start": FROM, "end": TO, "candidates": "wide:equity_deviation=lots"},
    )
    assert page.status_code == 400
    assert b"equity_deviation=&#x27;lots&#x27;: not a decimal number" in page.content
    assert OrmQ.objects.count() == queued


def test_a_valid_request_is_queued_as_a_task_and_its_report_is_the_page(viewer_client):
    queued = OrmQ.objects.count()
    page = viewer_client.post(
        reverse("admin:console_backtest"),
        {"start": FROM, "end": TO, "pools": "USDC", "candidates": "wide:usdc_deviation=0.3"},
    )
    assert page.status_code == 302
    assert OrmQ.objects.count() == queued + 1
    waiting = viewer_client.get(page["Location"])
    assert b'id="backtest-waiting"' in waiting.content
    # The same task run to completion (django-q2's synchronous mode stores its result).
    task_id = async_task(TASK, FROM, TO, "USDC", ["wide:usdc_deviation=0.3"], group=GROUP,
                         sync=True)  # fmt: skip
    assert Task.objects.get(id=task_id).success
    report = viewer_client.get(reverse("admin:console_backtest_run", args=[task_id]))
    assert report.status_code == 200
    assert b"<h1>Backtest" in report.content and b"wide" in report.content
    listing = viewer_client.get(reverse("admin:console_backtest"))
    assert task_id.encode() in listing.content


def test_the_page_needs_the_console_permission(client, django_user_model):
    user = django_user_model.objects.create_user("nobody", password="pw", is_staff=True)
    client.force_login(user)
    assert client.get(reverse("admin:console_backtest")).status_code == 403

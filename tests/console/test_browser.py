"""The console in headless Chromium (Debian's, driven by Python playwright): the dashboard,
the operations list and an operation's detail, as an operator sees them. Screenshots go to
the directory printed in pytest's header (`console screenshots: ...`)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, User

from tests.console.conftest import SCREENSHOT_DIR

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists(),
        reason="Debian's chromium is not installed (.ci/run installs it)",
    ),
]

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def operator_page(browser, live_server, trading_state):
    user = User.objects.create_user("olga", password="olga-pw-123", is_staff=True)
    user.groups.add(Group.objects.get(name="operators"))
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{live_server.url}/admin/")
    page.fill("#id_username", "olga")
    page.fill("#id_password", "olga-pw-123")
    page.click("input[type=submit]")
    page.wait_for_selector("#console-dashboard")
    yield page
    page.close()


def _shot(page, name: str) -> Path:
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOT_DIR / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def test_dashboard_shows_pools_bands_and_operations(operator_page):
    page = operator_page
    aapl = page.locator('tr.pool-row[data-pool="AAPL"]')
    assert aapl.get_attribute("data-state") == "imbalanced"
    assert aapl.locator("circle.ratio-marker").get_attribute("data-ratio") == "0.9000"
    assert page.locator('tr.pool-row[data-pool="USDC"]').get_attribute("data-state") == (
        "operation active"
    )
    assert "withdrawal outcome unknown" in page.locator("#attention").inner_text()
    assert "insufficient position" in page.locator("#recent-failures").inner_text()
    assert page.locator("#pause-link").is_visible()
    assert _shot(page, "dashboard").stat().st_size > 0


def test_dashboard_refreshes_in_place_without_reloading(operator_page):
    page = operator_page
    page.evaluate("window.__marker = 'same page'")
    page.wait_for_function(
        "document.getElementById('console-dashboard').hasAttribute('data-refreshed')",
        timeout=60_000,
    )
    assert page.evaluate("window.__marker") == "same page"
    assert page.locator('tr.pool-row[data-pool="AAPL"]').count() == 1


def test_operations_list_and_detail(operator_page, live_server, trading_state):
    page = operator_page
    page.click("#nav-sidebar a[href$='/operations/operation/'], a[href$='/operations/operation/']")
    page.wait_for_selector("#result_list")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 2
    assert "withdrawal outcome unknown" in page.locator("#result_list").inner_text()
    _shot(page, "operations")
    attention = trading_state["attention"]
    page.click(f"#result_list a[href$='/{attention.pk}/change/']")
    page.wait_for_selector("#operation-events")
    assert page.locator("#action-fail").is_visible()
    assert page.locator("#action-reconcile").is_visible()
    _shot(page, "operation-detail")
    page.click("#action-retry")
    page.wait_for_selector("#confirm-action")
    page.click("#confirm-button")
    page.wait_for_selector("#operation-events")
    assert "Retry now done on operation" in page.locator(".messagelist").inner_text()

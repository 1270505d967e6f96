"""The console in headless Chromium (Debian's, driven by Python playwright): the dashboard,
the operations list and an operation's detail, as an operator sees them. Screenshots go to
the directory printed in pytest's header (`console screenshots: ...`)."""

from __future__ import annotations

import os
import shutil
from decimal import Decimal
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, User

from tests.console.conftest import SCREENSHOT_DIR

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
# Issue 22: a laptop's window. Every page must fit its width.
VIEWPORT = {"width": 1440, "height": 900}
WITHDRAWAL_ID = "35bf992d-c9e9-4616-a12e-7696a6cecc1b"
BURN_TX = "0x" + "e7a26ff6" * 8

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
    page = browser.new_page(viewport=VIEWPORT)
    page.goto(f"{live_server.url}/admin/")
    page.fill("#id_username", "olga")
    page.fill("#id_password", "olga-pw-123")
    page.click("input[type=submit]")
    page.wait_for_selector("#console-dashboard")
    yield page
    page.close()


def _overflow_px(page) -> int:
    """How far the page, or any table or preformatted block in it, is wider than the space it
    has (0 or less: nothing to scroll sideways, not even inside a scrolling box)."""
    return int(
        page.evaluate(
            """() => {
              const root = document.documentElement;
              let worst = Math.max(root.scrollWidth, document.body.scrollWidth) - root.clientWidth;
              for (const el of document.querySelectorAll("table, pre, svg, code")) {
                const parent = el.parentElement;
                if (!parent || parent.closest("svg")) continue;
                worst = Math.max(worst, el.getBoundingClientRect().width - parent.clientWidth);
              }
              return Math.round(worst);
            }"""
        )
    )


def _with_steps(operation) -> None:
    """The USDC operation's first steps, as its workflow records them: the Alpaca withdrawal
    (its id), a signed burn on Ethereum (a long raw transaction), the bridging."""
    from inventory.domain import usdc
    from inventory.domain.events import TxPurpose
    from inventory.domain.values import RebalanceDirection, TransferRef, TransferRefKind
    from inventory.store import aggregate_execute

    for command in (
        usdc.Request(direction=RebalanceDirection.ALPACA_TO_BASE, amount=Decimal("100")),
        usdc.Initiate(
            direction=RebalanceDirection.ALPACA_TO_BASE,
            amount=Decimal("100"),
            withdrawal=TransferRef(TransferRefKind.ALPACA_ID, WITHDRAWAL_ID),
        ),
        usdc.ConfirmWithdrawal(amount_received=Decimal("100"), fee=Decimal("0")),
        usdc.RecordTransaction(
            purpose=TxPurpose.BURN, chain_id=1, raw_tx=bytes(range(256)) * 3, tx_hash=BURN_TX
        ),
        usdc.InitiateBridging(burn_tx=BURN_TX, cctp_nonce="0x" + "35" * 32),
    ):
        aggregate_execute(spec=usdc.SPEC, aggregate_id=operation.aggregate_id, command=command)


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


def test_the_dashboard_fits_a_laptop_window(operator_page):
    page = operator_page
    _shot(page, "dashboard-1440")
    assert _overflow_px(page) <= 0
    # The first screen says what is wrong and what to do, and shows the pools.
    triage = page.locator("#triage")
    assert "What to do:" in triage.inner_text()
    box = page.locator("#pools").bounding_box()
    assert box is not None and box["y"] < VIEWPORT["height"], box


def test_the_operations_list_fits_a_laptop_window(operator_page):
    page = operator_page
    page.click("a[href$='/operations/operation/']")
    page.wait_for_selector("#result_list")
    _shot(page, "operations-1440")
    assert _overflow_px(page) <= 0


def test_the_pools_list_fits_a_laptop_window(operator_page, live_server):
    page = operator_page
    page.goto(f"{live_server.url}/admin/inventory/inventorypool/")
    page.wait_for_selector("#result_list")
    _shot(page, "pools-1440")
    assert _overflow_px(page) <= 0


def test_an_operation_page_fits_names_chains_and_shows_alpaca_ids(
    operator_page, live_server, trading_state
):
    page = operator_page
    attention = trading_state["attention"]
    _with_steps(attention)
    page.goto(f"{live_server.url}/admin/operations/operation/{attention.pk}/change/")
    page.wait_for_selector("#operation-events")
    _shot(page, "operation-detail-1440")
    assert _overflow_px(page) <= 0
    assert WITHDRAWAL_ID in page.locator("#operation-alpaca-ids").inner_text()
    transactions = page.locator("#operation-transactions").inner_text()
    assert "Ethereum" in transactions
    # Hashes are shortened where they are shown and whole on hover and for copying.
    burn = page.locator(f'#operation-transactions [data-full="{BURN_TX}"]').first
    assert burn.get_attribute("title") == BURN_TX
    assert page.locator("#action-retry").is_visible()  # active: the actions apply


def test_a_finished_operation_offers_no_action(operator_page, live_server, trading_state):
    page = operator_page
    failed = trading_state["failed"]
    page.goto(f"{live_server.url}/admin/operations/operation/{failed.pk}/change/")
    page.wait_for_selector("#operation-events")
    for action in ("retry", "fail", "reconcile"):
        assert page.locator(f"#action-{action}").count() == 0


# --- issue 24: manual operations and the cost ledger, as an operator sees them ---------------


def test_an_operator_starts_a_mint_with_a_confirmation_then_cancels_it(
    operator_page, live_server, settings
):
    import dataclasses

    from operations.models import Operation

    settings.REBALANCING = dataclasses.replace(settings.REBALANCING, enabled=True)
    page = operator_page
    page.goto(f"{live_server.url}/admin/operations/operation/")
    page.click("#start-operation")
    page.wait_for_selector("#start-operation-form")
    page.select_option("#id_kind", "mint")
    page.fill("#id_pool", "AAPL")
    page.fill("#id_amount", "2")
    page.fill("#id_reason", "browser test")
    page.click("#review-button")
    page.wait_for_selector("#start-confirmation")
    assert "mint" in page.locator("#start-confirmation").inner_text()
    assert page.locator("#estimated-cost").is_visible()
    _shot(page, "operation-start-confirm-1440")
    assert _overflow_px(page) <= 0
    page.click("#confirm-button")
    page.wait_for_selector("#operation-events")
    started = Operation.objects.filter(pool="AAPL", kind="mint").get()
    assert f"Operation {started.pk} started by olga" in page.locator(".messagelist").inner_text()
    assert page.locator("#operation-costs").is_visible()
    # Nothing has moved yet: Cancel is offered, with a reason, then no action remains.
    page.click("#action-cancel")
    page.wait_for_selector("#confirm-action")
    page.fill("#id_reason", "started by mistake")
    page.click("#confirm-button")
    page.wait_for_selector("#operation-events")
    started.refresh_from_db()
    assert started.status == "cancelled"
    for action in ("retry", "fail", "reconcile", "cancel"):
        assert page.locator(f"#action-{action}").count() == 0
    _shot(page, "operation-cancelled-1440")
    assert _overflow_px(page) <= 0


def test_the_challengers_page_compares_each_pool_and_fits_a_laptop_window(
    operator_page, live_server, settings
):
    """Issue 25: from the dashboard's link, the live challenger's page: per pool the settings
    in force (as-run) and each challenger over a day and a week."""
    import dataclasses

    from django.utils import timezone

    from inventory.domain.candidates import parse_candidate
    from inventory.services import snapshot_record

    settings.REBALANCING = dataclasses.replace(
        settings.REBALANCING,
        enabled=True,
        monitor_only=True,
        challengers=(parse_candidate("wide-equities:equity_deviation=0.45"),),
    )
    # AAPL 91/9: out of the band in force (0.5 +- 0.2), inside the challenger's (0.5 +- 0.45).
    snapshot_record(
        fetched_at=timezone.now(),
        onchain_equity={"AAPL": Decimal("91")},
        offchain_equity={"AAPL": Decimal("9")},
    )
    page = operator_page
    page.reload()
    page.click("#challengers-link")
    page.wait_for_selector("#console-challengers")
    table = page.locator("table[data-pool='AAPL']")
    live = table.locator("tr[data-challenger='as-run'] td.starts[data-window='day']")
    assert live.inner_text().strip() == "1"
    wide = table.locator("tr[data-challenger='wide-equities'] td.starts[data-window='day']")
    assert wide.inner_text().strip() == "0 (-1 vs as-run)"
    _shot(page, "challengers-1440")
    assert _overflow_px(page) <= 0


def test_the_dashboard_shows_a_cost_deferral_beside_its_pool_and_still_fits(operator_page):
    """Issue 24: what the cost gate held back is shown beside the pool (its rule and figures),
    and the long detail still fits a laptop's window."""
    from inventory.domain import costgate
    from service.decisions import deferral_record

    deferral_record(
        pool="AAPL",
        kind="redemption",
        amount=Decimal("40"),
        rule=costgate.RULE_MAX_COST,
        detail="estimated cost 69.47723962 USD is 173.68 bps of 4000.25 USD, above 25 bps",
        estimated_cost_usd=Decimal("69.47723962"),
        value_usd=Decimal("4000.25"),
    )
    page = operator_page
    page.reload()
    page.wait_for_selector("#console-dashboard")
    shown = page.locator('tr.pool-row[data-pool="AAPL"] .deferral')
    assert shown.get_attribute("data-rule") == costgate.RULE_MAX_COST
    text = shown.inner_text()
    assert "Deferred: redemption of 40" in text
    assert "173.68 bps of 4000.25 USD, above 25 bps" in text
    assert page.locator('tr.pool-row[data-pool="USDC"] .deferral').count() == 0
    # The detail wraps in its cell; the pool's key beside it stays on one line.
    lines = page.evaluate(
        """() => [...document.querySelectorAll("tr.pool-row th")].map((th) => {
          const range = document.createRange();
          range.selectNodeContents(th);
          return range.getClientRects().length;
        })"""
    )
    assert lines == [1, 1], lines
    _shot(page, "dashboard-deferral-1440")
    assert _overflow_px(page) <= 0

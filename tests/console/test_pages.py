"""Console pages through Django's test client: operations, actions, event log, thresholds,
assets, and what each role may do."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from inventory.models import Asset, Event, RebalancingSettingsRow
from inventory.services import settings_row_ensure, snapshot_record
from operations.models import Operation, OperationStatus
from tests.console.conftest import VAULT_ID

pytestmark = pytest.mark.django_db

NEW_TOKEN = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359"


def _event_count() -> int:
    return Event.objects.count()


def test_operations_list_shows_step_duration_attempts_and_error(viewer_client, trading_state):
    response = viewer_client.get(reverse("admin:operations_operation_changelist"))
    assert response.status_code == 200
    body = response.content.decode()
    assert "withdrawal outcome unknown" in body
    assert "not started" in body
    filtered = viewer_client.get(
        reverse("admin:operations_operation_changelist"), {"status__exact": "failed"}
    ).content.decode()
    assert "Alpaca refused" in filtered
    assert "withdrawal outcome unknown" not in filtered


def test_operation_detail_lists_its_events_in_order(viewer_client, trading_state):
    from inventory.domain import usdc
    from inventory.domain.values import RebalanceDirection
    from inventory.store import aggregate_execute

    operation = trading_state["attention"]
    for command in (
        usdc.Request(direction=RebalanceDirection.ALPACA_TO_BASE, amount=Decimal("100")),
        usdc.FailRequest(reason="Alpaca refused the withdrawal"),
    ):
        aggregate_execute(spec=usdc.SPEC, aggregate_id=operation.aggregate_id, command=command)
    response = viewer_client.get(reverse("admin:operations_operation_change", args=[operation.pk]))
    assert response.status_code == 200
    body = response.content.decode()
    assert 'id="operation-events"' in body
    events = Event.objects.filter(aggregate_id=operation.aggregate_id).order_by("sequence")
    assert [row.event_type.rsplit("::", 1)[-1] for row in events] == ["Requested", "RequestFailed"]
    table = body[body.index('id="operation-events"') :]
    positions = [table.index(f'<td class="event-type" title="{row.event_type}">') for row in events]
    assert positions == sorted(positions)
    # A viewer gets no action buttons.
    assert 'id="action-fail"' not in body


def test_viewer_cannot_act_on_an_operation(viewer_client, trading_state):
    operation = trading_state["attention"]
    url = reverse("admin:operations_operation_act", args=[operation.pk, "retry"])
    assert viewer_client.get(url).status_code == 403
    assert viewer_client.post(url).status_code == 403
    operation.refresh_from_db()
    assert operation.next_run_at is None


def test_operator_retry_now_asks_first_then_makes_the_operation_due(operator_client, trading_state):
    operation = trading_state["attention"]
    url = reverse("admin:operations_operation_act", args=[operation.pk, "retry"])
    confirm = operator_client.get(url)
    assert confirm.status_code == 200
    assert 'id="confirm-action"' in confirm.content.decode()
    operation.refresh_from_db()
    assert operation.next_run_at is None
    response = operator_client.post(url)
    assert response.status_code == 302
    operation.refresh_from_db()
    assert operation.next_run_at is not None


def test_force_fail_without_reason_is_refused_and_changes_nothing(operator_client, trading_state):
    operation = trading_state["attention"]
    url = reverse("admin:operations_operation_act", args=[operation.pk, "fail"])
    before = _event_count()
    response = operator_client.post(url, {"reason": "   "})
    assert response.status_code == 200
    assert "reason" in response.content.decode()
    assert 'id="action-error"' in response.content.decode()
    operation.refresh_from_db()
    assert operation.status == OperationStatus.WAITING
    assert _event_count() == before


def test_operator_force_fails_an_operation_with_no_events_and_is_recorded(
    operator_client, trading_state
):
    operation = trading_state["attention"]
    url = reverse("admin:operations_operation_act", args=[operation.pk, "fail"])
    response = operator_client.post(url, {"reason": "venue says it never arrived"})
    assert response.status_code == 302, response.content.decode()[:2000]
    operation.refresh_from_db()
    assert operation.status == OperationStatus.FAILED
    assert operation.finished_by == "olivia"
    assert "venue says it never arrived" in operation.failure_reason


def test_event_log_is_read_only_even_for_a_superuser(trading_state):
    admin_user = User.objects.create_superuser("root", password="pw-root-123")
    client = Client()
    client.force_login(admin_user)
    event = Event.objects.order_by("id").first()
    changelist = client.get(reverse("admin:inventory_event_changelist"))
    assert changelist.status_code == 200
    assert "Add event" not in changelist.content.decode()
    detail = client.get(reverse("admin:inventory_event_change", args=[event.pk]))
    assert detail.status_code == 200
    assert '<pre class="payload">' in detail.content.decode()
    assert 'name="_save"' not in detail.content.decode()
    before = _event_count()
    client.post(reverse("admin:inventory_event_change", args=[event.pk]), {"payload": "{}"})
    client.post(reverse("admin:inventory_event_delete", args=[event.pk]), {"post": "yes"})
    assert _event_count() == before
    assert Event.objects.get(pk=event.pk).payload == event.payload


def _results(body: str) -> str:
    start = body.index('id="result_list"')
    return body[start : body.index("</table>", start)]


def test_event_log_filters_by_type_and_searches_aggregate_id(viewer_client, trading_state):
    url = reverse("admin:inventory_event_changelist")
    body = viewer_client.get(url, {"aggregate_type": "RebalancingSettings"}).content.decode()
    results = _results(body)
    assert "AAPL" in results
    assert "InventorySnapshotEvent::OnchainEquity" not in results
    found = viewer_client.get(url, {"q": "venues"}).content.decode()
    results = _results(found)
    assert "InventorySnapshotEvent::OnchainEquity" in results
    assert "RebalancingSettingsEvent::SettingChanged" not in results


def test_operator_changes_a_threshold_through_the_audited_service(operator_client, db):
    row = settings_row_ensure()
    url = reverse("admin:inventory_rebalancingsettingsrow_change", args=[row.pk])
    form = operator_client.get(url)
    assert form.status_code == 200
    data = {
        name: ("" if getattr(row, name) is None else str(getattr(row, name)))
        for name in (
            "equity_target_ratio",
            "equity_deviation",
            "usdc_target_ratio",
            "usdc_deviation",
            "equity_minimum_shares",
            "usdc_minimum",
            "equity_cap_shares",
            "usdc_cap",
        )
    }
    data["equity_deviation"] = "0.15"
    response = operator_client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:3000]
    row.refresh_from_db()
    assert row.equity_deviation == Decimal("0.15")
    change = Event.objects.filter(event_type__endswith="::SettingChanged").order_by("-id")[0]
    body = change.domain_event()
    assert (body.setting, body.new_value, body.changed_by) == ("equity_deviation", "0.15", "olivia")
    page = operator_client.get(url).content.decode()
    assert 'id="setting-history"' in page and "olivia" in page


def test_a_bad_threshold_is_refused_with_the_rule_and_nothing_changes(operator_client, db):
    row = settings_row_ensure()
    url = reverse("admin:inventory_rebalancingsettingsrow_change", args=[row.pk])
    before = _event_count()
    response = operator_client.post(
        url,
        {
            "equity_target_ratio": "1.5",
            "equity_deviation": str(row.equity_deviation),
            "usdc_target_ratio": str(row.usdc_target_ratio),
            "usdc_deviation": str(row.usdc_deviation),
            "equity_minimum_shares": str(row.equity_minimum_shares),
            "usdc_minimum": str(row.usdc_minimum),
        },
    )
    assert response.status_code == 200
    assert "must be between 0 and 1 inclusive" in response.content.decode()
    assert _event_count() == before
    assert RebalancingSettingsRow.objects.get(pk=row.pk).equity_target_ratio == (
        row.equity_target_ratio
    )


def test_viewer_cannot_change_thresholds(viewer_client, db):
    row = settings_row_ensure()
    url = reverse("admin:inventory_rebalancingsettingsrow_change", args=[row.pk])
    before = _event_count()
    response = viewer_client.post(url, {"equity_target_ratio": "0.4"})
    assert response.status_code == 403
    assert _event_count() == before


def test_operator_registers_an_asset_and_a_bad_one_names_the_field(operator_client, db):
    url = reverse("admin:asset_register")
    bad = operator_client.post(
        url,
        {
            "base_symbol": "MSFT",
            "token_symbol": "tAAPL",
            "token_address": NEW_TOKEN,
            "vault_id": VAULT_ID,
            "decimals": 18,
        },
    )
    assert bad.status_code == 200
    assert "differs from base_symbol" in bad.content.decode()
    assert not Asset.objects.exists()
    good = operator_client.post(
        url,
        {
            "base_symbol": "MSFT",
            "token_symbol": "tMSFT",
            "token_address": NEW_TOKEN,
            "vault_id": VAULT_ID,
            "decimals": 18,
            "rebalancing_enabled": "on",
        },
    )
    assert good.status_code == 302
    followed = operator_client.get(good["Location"]).content.decode()
    assert "were not checked against the contract" in followed
    asset = Asset.objects.get(base_symbol="MSFT")
    assert Event.objects.filter(aggregate_id="MSFT").exists()
    # The per-asset switch goes through the audited service too.
    operator_client.post(
        reverse("admin:inventory_asset_changelist"),
        {"action": "disable_rebalancing", "_selected_action": [asset.pk]},
    )
    asset.refresh_from_db()
    assert asset.rebalancing_enabled is False


def test_viewer_can_change_nothing_through_any_console_url(viewer_client, trading_state):
    operation = trading_state["attention"]
    row = settings_row_ensure()
    asset = Asset.objects.get(base_symbol="AAPL")
    before_events = _event_count()
    before_ops = list(Operation.objects.order_by("id").values())
    posts = [
        reverse("admin:console_switch", args=["pause"]),
        reverse("admin:console_switch", args=["resume"]),
        reverse("admin:operations_operation_act", args=[operation.pk, "fail"]),
        reverse("admin:operations_operation_act", args=[operation.pk, "reconcile"]),
        reverse("admin:operations_operation_change", args=[operation.pk]),
        reverse("admin:operations_operation_delete", args=[operation.pk]),
        reverse("admin:inventory_rebalancingsettingsrow_change", args=[row.pk]),
        reverse("admin:inventory_asset_change", args=[asset.pk]),
        reverse("admin:asset_register"),
    ]
    for url in posts:
        response = viewer_client.post(url, {"reason": "x", "equity_target_ratio": "0.1"})
        assert response.status_code in (403, 302, 200), url
    viewer_client.post(
        reverse("admin:inventory_asset_changelist"),
        {"action": "disable_rebalancing", "_selected_action": [asset.pk]},
    )
    assert _event_count() == before_events
    assert list(Operation.objects.order_by("id").values()) == before_ops
    asset.refresh_from_db()
    assert asset.rebalancing_enabled is True


# --- issue 22: lists link to what they refer to; empty pages explain themselves ------------------


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("admin:console_alertstate_changelist", "No alert has been raised."),
        ("admin:operations_poolbreaker_changelist", "No pool has failed"),
        ("admin:operations_operation_changelist", "An operation starts when a pool leaves"),
        ("admin:django_q_failure_changelist", "No task has failed."),
    ],
)
def test_an_empty_list_says_what_it_would_hold(admin_client, url, said):
    body = admin_client.get(reverse(url)).content.decode()
    assert 'id="empty-explained"' in body and said in body


def test_the_event_log_links_an_operations_events_to_it_with_seconds(viewer_client, trading_state):
    from inventory.domain import usdc
    from inventory.domain.values import RebalanceDirection
    from inventory.store import aggregate_execute

    operation = trading_state["attention"]
    aggregate_execute(
        spec=usdc.SPEC,
        aggregate_id=operation.aggregate_id,
        command=usdc.Request(direction=RebalanceDirection.ALPACA_TO_BASE, amount=Decimal("100")),
    )
    body = viewer_client.get(
        reverse("admin:inventory_event_changelist") + f"?q={operation.aggregate_id}"
    ).content.decode()
    link = reverse("admin:operations_operation_change", args=[operation.pk])
    assert f'<a href="{link}">operation #{operation.pk}</a>' in body
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} UTC", _results(body))


def test_the_pools_list_shows_ratio_band_and_state(viewer_client, trading_state):
    body = viewer_client.get(reverse("admin:inventory_inventorypool_changelist")).content.decode()
    results = _results(body)
    assert "0.9000 (0.3-0.7)" in results
    assert "too much onchain" in results
    assert "?pool=AAPL" in results


def _balances(html: str) -> dict[str, str]:
    return dict(re.findall(r'data-balance="(\w+)">([^<]*)<', html))


def test_the_usdc_pool_shows_alpacas_cash_withdrawable_cash_and_usdc(viewer_client, trading_state):
    """Issue 20: USD cash and USDC are two balances at Alpaca; the pools list and the
    dashboard show both, and the withdrawable cash, from the latest read."""
    snapshot_record(
        fetched_at=timezone.now(),
        offchain_cash=Decimal("900.5"),
        offchain_usdc=Decimal("100.25"),
        offchain_cash_withdrawable=Decimal("400"),
    )
    expected = {"cash": "900.5", "cash_withdrawable": "400", "usdc": "100.25"}
    listed = viewer_client.get(reverse("admin:inventory_inventorypool_changelist"))
    rows = re.findall(r"<tr>.*?</tr>", _results(listed.content.decode()), flags=re.S)
    usdc_row = next(row for row in rows if ">USDC<" in row)
    assert _balances(usdc_row) == expected
    assert not any(_balances(row) for row in rows if row is not usdc_row)
    dashboard = viewer_client.get(reverse("admin:index")).content.decode()
    usdc = re.search(r'<tr class="pool-row" data-pool="USDC".*?</tr>', dashboard, flags=re.S)
    assert usdc is not None
    assert _balances(usdc.group(0)) == expected
    assert "Alpaca: cash" not in dashboard.replace(usdc.group(0), "")


def test_alerts_link_to_the_operation_or_pool_they_concern(admin_client, trading_state):
    from console.models import AlertState

    attention = trading_state["attention"]
    AlertState.objects.create(
        key=f"attention:{attention.pk}", kind="attention", message="needs attention"
    )
    AlertState.objects.create(key="drift:USDC", kind="drift", message="pool USDC drifts")
    results = _results(
        admin_client.get(reverse("admin:console_alertstate_changelist")).content.decode()
    )
    assert reverse("admin:operations_operation_change", args=[attention.pk]) in results
    assert reverse("admin:operations_operation_changelist") + "?pool=USDC" in results


def test_references_name_chains_and_read_alpaca_ids_from_transfer_references():
    from types import SimpleNamespace

    from console.selectors import operation_references

    def event(event_type: str, payload: dict) -> dict:
        return {"row": SimpleNamespace(event_type=event_type, payload=payload)}

    usdc = operation_references(
        [
            event(
                "UsdcRebalanceEvent::Initiated",
                {"Initiated": {"withdrawal_ref": {"kind": "AlpacaId", "value": "wd-1"}}},
            ),
            event(
                "UsdcRebalanceEvent::TransactionSigned",
                {"TransactionSigned": {"chain_id": "8453", "tx_hash": "0x" + "ab" * 32}},
            ),
            event(
                "UsdcRebalanceEvent::DepositInitiated",
                {
                    "DepositInitiated": {
                        "deposit_ref": {"kind": "OnchainTx", "value": "0x" + "cd" * 32}
                    }
                },
            ),
        ],
        kind="usdc_alpaca_to_base",
    )
    assert [ref["id"] for ref in usdc["alpaca"]] == ["wd-1"]
    assert [(tx["hash"][:4], tx["chain"]) for tx in usdc["transactions"]] == [
        ("0xab", "Base"),
        ("0xcd", ""),
    ]
    mint = operation_references(
        [
            event(
                "TokenizedEquityMintEvent::TokensReceived",
                {"TokensReceived": {"tx_hash": "0x" + "ef" * 32}},
            )
        ],
        kind="mint",
    )
    assert mint["transactions"][0]["chain"] == "Base"


@pytest.mark.parametrize(
    "url",
    [
        "admin:console_alertstate_changelist",
        "admin:operations_poolbreaker_changelist",
        "admin:operations_operation_changelist",
        "admin:django_q_failure_changelist",
    ],
)
@pytest.mark.parametrize("role", ["viewer_client", "operator_client"])
def test_every_role_reads_the_lists_the_runbook_sends_it_to(request, role, url):
    """Pool breakers and failed tasks are where docs/operations.md sends an operator: both roles
    read them (a 403 there left an operator blind to a halted pool)."""
    client = request.getfixturevalue(role)
    response = client.get(reverse(url))
    assert response.status_code == 200, (role, url, response.status_code)
    assert 'id="empty-explained"' in response.content.decode()

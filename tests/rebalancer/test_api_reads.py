"""HTTP API reads: GET /api/v1/pools and /api/v1/operations[/{id}] (read scope)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from inventory.domain import events as ev
from inventory.services import api_token_create, snapshot_record
from operations.models import Operation
from tests.service.flows import (
    active,
    append,
    enable,
    mint_requested,
    observe,
    register,
    tick,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def get(client):
    token = api_token_create(name="reader", scopes=["read"])[1]

    def send(path, **params):
        return client.get(f"/api/v1{path}", params, HTTP_AUTHORIZATION=f"Bearer {token}")

    return send


@pytest.fixture
def minting(settings):
    """AAPL too much offchain -> a mint operation is active; USDC balanced."""
    enable(settings)
    register("AAPL")
    observe("AAPL", onchain="20", offchain="80.5")
    observe(usdc_onchain="1000", usdc_offchain="1000")
    operation = active("AAPL")
    assert operation is not None
    return operation


def test_pools_list_amounts_ratio_band_state_and_active_operation(get, minting):
    response = get("/pools")
    assert response.status_code == 200
    pools = {pool["key"]: pool for pool in response.json()}
    aapl = pools["AAPL"]
    assert aapl["onchain_available"] == "20"
    assert aapl["offchain_available"] == "80.5"
    assert aapl["onchain_inflight"] == "0"
    assert aapl["offchain_inflight"] == "0"
    assert aapl["ratio"] == "0.19900498"
    assert (aapl["band_lower"], aapl["band_upper"]) == ("0.3", "0.7")
    assert aapl["state"] == "too_much_offchain"
    assert aapl["needs_reconciliation"] is False
    assert aapl["active_operation"] == {
        "id": minting.pk,
        "kind": "mint",
        "status": minting.status,
        "amount": format(minting.amount, "f"),
    }
    usdc = pools["USDC"]
    assert usdc["state"] == "balanced"
    assert usdc["ratio"] == "0.50000000"
    assert usdc["active_operation"] is None


def test_usdc_pool_shows_alpaca_cash_withdrawable_and_usdc(get):
    snapshot_record(
        fetched_at=tick(),
        offchain_cash=Decimal("900.5"),
        offchain_usdc=Decimal("100.25"),
        offchain_cash_withdrawable=Decimal("400"),
    )
    pools = {pool["key"]: pool for pool in get("/pools").json()}
    balances = pools["USDC"]["alpaca_balances"]
    assert (balances["cash"], balances["cash_withdrawable"], balances["usdc"]) == (
        "900.5",
        "400",
        "100.25",
    )
    assert pools["USDC"]["offchain_available"] == "1000.75"


def test_pools_amounts_are_strings_never_numbers(get, minting):
    for pool in get("/pools").json():
        for name in ("onchain_available", "offchain_available", "band_lower", "band_upper"):
            assert isinstance(pool[name], str)


def test_unobserved_pool_says_so(get):
    observe("MSFT", onchain="5")
    (pool,) = [p for p in get("/pools").json() if p["key"] == "MSFT"]
    assert pool["state"] == "unobserved"
    assert pool["ratio"] is None
    assert pool["offchain_observed"] is False


def test_operations_list_filters_by_status_kind_and_pool(get, minting):
    rows = get("/operations").json()
    assert [row["id"] for row in rows] == [minting.pk]
    assert rows[0]["amount"] == format(minting.amount, "f")
    assert rows[0]["created_at"].endswith("+00:00")
    assert get("/operations", kind="mint").json()[0]["id"] == minting.pk
    assert get("/operations", kind="redemption").json() == []
    assert get("/operations", pool="AAPL").json()[0]["id"] == minting.pk
    assert get("/operations", pool="MSFT").json() == []
    assert get("/operations", status=minting.status).json()[0]["id"] == minting.pk
    assert get("/operations", status="completed").json() == []


def test_operations_list_refuses_an_unknown_filter_value(get):
    response = get("/operations", status="exploded")
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "status"


def test_operation_detail_has_its_events_in_sequence_order(get, minting):
    append(ev.MINT, minting.aggregate_id, mint_requested(minting))
    response = get(f"/operations/{minting.pk}")
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == minting.pk
    assert body["kind"] == "mint"
    sequences = [event["sequence"] for event in body["events"]]
    assert sequences == sorted(sequences) and sequences[0] == 1
    first = body["events"][0]
    assert first["event_type"] == ev.MintRequested.event_type_name()
    assert "MintRequested" in first["payload"]


def test_unknown_operation_is_404(get):
    assert not Operation.objects.exists()
    assert get("/operations/999").status_code == 404


def test_reads_without_token_are_401(client):
    assert client.get("/api/v1/operations").status_code == 401
    assert client.get("/api/v1/pools").status_code == 401

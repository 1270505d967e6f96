"""`manage.py inventory`: the pools table and its --json twin of GET /api/v1/pools."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command

from tests.service.flows import active, enable, observe, register

pytestmark = pytest.mark.django_db


def run(*args):
    out = io.StringIO()
    call_command("inventory", *args, stdout=out)
    return out.getvalue()


def test_inventory_without_pools_says_so():
    assert "no inventory pools yet" in run()


def test_inventory_table_shows_each_pool_state_and_active_operation(settings):
    enable(settings)
    register("AAPL")
    observe("AAPL", onchain="20", offchain="80")
    observe(usdc_onchain="500", usdc_offchain="500")
    operation = active("AAPL")
    table = run()
    assert "AAPL" in table and "USDC" in table
    assert "too_much_offchain" in table
    assert "balanced" in table
    assert f"#{operation.pk} mint" in table
    assert "0.3-0.7" in table


def test_inventory_json_matches_the_api_shape(settings):
    observe("AAPL", onchain="1.5", offchain="3")
    (pool,) = json.loads(run("--json"))
    assert pool["key"] == "AAPL"
    assert pool["onchain_available"] == "1.5"
    assert pool["offchain_available"] == "3"
    assert pool["ratio"] == "0.33333333"
    assert pool["state"] == "balanced"
    assert pool["active_operation"] is None

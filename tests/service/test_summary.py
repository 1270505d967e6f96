"""The start-up summary and the checks that need no venue: URLs redacted, assets with their
bands, enabled / disabled / paused; no migration missing on a migrated database."""

from __future__ import annotations

import pytest

from inventory.services import setting_change
from service.supervisor import ServiceOptions, migration_problems, startup_summary
from tests.operations.conftest import config_from_env
from tests.service.flows import register
from tests.service.support import REBALANCING_ENV

pytestmark = pytest.mark.django_db

SECRET_URL = "https://base.example.com/v2/secret-key-777?apikey=also-secret"


def test_summary_names_everything_and_redacts_urls(settings):
    settings.REBALANCING = config_from_env({**REBALANCING_ENV, "BASE_RPC_URL": SECRET_URL})
    register("AAPL")
    text = "\n".join(startup_summary(ServiceOptions(workers=3, http="127.0.0.1:8001")))
    assert "secret-key-777" not in text and "also-secret" not in text
    assert "base https://base.example.com/…" in text
    assert "broker: ORM (the database)" in text
    assert "workers: 3 " in text
    assert "asset AAPL (tAAPL " in text and "target 0.5 ± 0.2, enabled" in text
    assert "USDC: target 0.5 ± 0.3, minimum 51" in text
    assert "rebalancing: enabled" in text
    assert "http: http://127.0.0.1:8001/" in text


def test_summary_says_paused_and_disabled(settings):
    settings.REBALANCING = config_from_env(REBALANCING_ENV)
    setting_change(scope="global", setting="paused", new_value=True, changed_by="ops")
    assert "rebalancing: paused by an operator" in startup_summary(ServiceOptions())
    settings.REBALANCING = config_from_env({})
    lines = startup_summary(ServiceOptions())
    assert "rebalancing: disabled (REBALANCING_MODE=off)" in lines
    assert "venues: none (REBALANCING_MODE is off)" in lines


def test_a_migrated_database_has_no_migration_problem():
    assert migration_problems() == []

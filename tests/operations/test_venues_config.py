"""The venue clients built from the configuration: Alpaca's Broker API needs the account id."""

from __future__ import annotations

import dataclasses

import pytest

from conf.env import EnvReader, load_rebalancing_config
from operations.venues import Venues, VenuesNotConfigured
from tests.service.support import REBALANCING_ENV


def config(**env: str):
    reader = EnvReader({**REBALANCING_ENV, **env})
    loaded = load_rebalancing_config(reader)
    reader.fail_if_problems()
    return loaded


def test_alpaca_client_speaks_to_the_broker_api_of_the_configured_account() -> None:
    venues = Venues.from_config(config())

    assert venues.alpaca.base_url == "https://broker-api.sandbox.alpaca.markets"
    assert venues.alpaca.account_id() == "test-account"


def test_live_mode_uses_the_live_broker_api() -> None:
    venues = Venues.from_config(config(ALPACA_TRADING_MODE="live"))

    assert venues.alpaca.base_url == "https://broker-api.alpaca.markets"


def test_venues_without_an_alpaca_account_id_are_not_configured() -> None:
    missing = dataclasses.replace(config(), alpaca_account_id=None)

    with pytest.raises(VenuesNotConfigured) as caught:
        Venues.from_config(missing)

    assert caught.value.missing == ["ALPACA_ACCOUNT_ID"]

"""Tokenized assets: registration (B8 check) and the reverse lookups (seed Task 1)."""

from __future__ import annotations

import pytest

from inventory.domain import events as ev
from inventory.domain.values import InvalidValue
from inventory.models import Asset, Event
from inventory.selectors import asset_by_address, asset_by_symbol, assets_list
from inventory.services import AssetConflict, asset_register

pytestmark = pytest.mark.django_db

AAPL_TOKEN = "0xabababababababababababababababababababab"
MSFT_TOKEN = "0xcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd"
NVDA_TOKEN = "0x1111111111111111111111111111111111111111"
VAULT = "0x" + "0A" * 32


def register(base="AAPL", token=AAPL_TOKEN, symbol="tAAPL", vault=VAULT, **kwargs) -> Asset:
    return asset_register(
        base_symbol=base,
        token_address=token,
        token_symbol=symbol,
        vault_id=vault,
        changed_by=kwargs.pop("changed_by", "ops@example.com"),
        **kwargs,
    )


def test_register_stores_checksummed_address_and_audits_it():
    asset = register()
    assert asset.token_address == "0xABaBaBaBABabABabAbAbABAbABabababaBaBABaB"
    assert asset.vault_id == "0x" + "0a" * 32
    assert (asset.decimals, asset.rebalancing_enabled) == (18, True)
    event = Event.objects.get(aggregate_type=ev.SETTINGS, aggregate_id="AAPL").domain_event()
    assert isinstance(event, ev.SettingChanged)
    assert (event.scope, event.setting, event.old_value) == ("AAPL", "asset", None)
    assert "tAAPL" in event.new_value and asset.token_address in event.new_value
    assert event.changed_by == "ops@example.com"


@pytest.mark.parametrize("symbol", ["tAAPL", "AAPL0x", "AAPLs1"])
def test_register_accepts_every_marker(symbol):
    assert register(symbol=symbol).token_symbol == symbol


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"symbol": "tMSFT"}, "token_symbol"),  # B8: token of another equity
        ({"symbol": "AAPL"}, "token_symbol"),  # no marker
        ({"symbol": "USDC"}, "token_symbol"),
        ({"base": ""}, "base_symbol"),
        ({"base": "USDC", "symbol": "tUSDC"}, "base_symbol"),
        ({"token": "0x1234"}, "token_address"),
        ({"vault": "0x12"}, "vault_id"),
        ({"decimals": -1}, "decimals"),
        ({"changed_by": " "}, "changed_by"),
    ],
)
def test_register_refuses_invalid_input_and_writes_nothing(kwargs, field):
    with pytest.raises(InvalidValue) as error:
        register(**kwargs)
    assert error.value.field == field
    assert not Asset.objects.exists()
    assert not Event.objects.exists()


def test_register_refuses_a_token_whose_base_differs_with_a_clear_message():
    with pytest.raises(InvalidValue, match=r"base 'MSFT' differs from base_symbol 'AAPL'"):
        register(symbol="tMSFT")


@pytest.mark.parametrize(
    ("second", "field"),
    [
        ({"token": MSFT_TOKEN}, "base_symbol"),
        (
            {"base": "MSFT", "symbol": "tMSFT", "token": AAPL_TOKEN.upper().replace("0X", "0x")},
            "token_address",
        ),
    ],
)
def test_register_refuses_duplicates(second, field):
    register()
    with pytest.raises(AssetConflict) as error:
        register(**second)
    assert error.value.field == field
    assert Asset.objects.count() == 1
    assert Event.objects.count() == 1


def test_get_address_returns_correct_address():
    register()
    assert asset_by_symbol("AAPL").token_address == "0xABaBaBaBABabABabAbAbABAbABabababaBaBABaB"


def test_get_address_returns_none_for_unknown_symbol():
    register()
    assert asset_by_symbol("MSFT") is None
    assert asset_by_symbol("tAAPL") is None  # the base symbol is the key, not the token's


def test_get_address_works_with_multiple_entries():
    register()
    register(base="MSFT", token=MSFT_TOKEN, symbol="MSFT0x")
    register(base="NVDA", token=NVDA_TOKEN, symbol="NVDAs1")
    assert asset_by_symbol("MSFT").token_address.lower() == MSFT_TOKEN
    assert asset_by_symbol("NVDA").token_symbol == "NVDAs1"
    assert [a.base_symbol for a in assets_list()] == ["AAPL", "MSFT", "NVDA"]


@pytest.mark.parametrize("address", [AAPL_TOKEN, AAPL_TOKEN.upper().replace("0X", "0x")])
def test_asset_by_address_ignores_letter_case(address):
    register()
    register(base="MSFT", token=MSFT_TOKEN, symbol="tMSFT")
    assert asset_by_address(address).base_symbol == "AAPL"


def test_asset_by_address_returns_none_for_unknown_address():
    register()
    assert asset_by_address(NVDA_TOKEN) is None

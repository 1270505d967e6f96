"""`Asset.decimals` is what converts an asset's amounts (never a hard-coded 18), and it is read
from the token contract at registration: `decimals()` and `symbol()` must match what the
operator registers (real anvil chain through the sim venue)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from inventory.domain.values import InvalidValue
from inventory.models import Asset, Event
from inventory.services import asset_register
from operations.models import Operation, OperationKind
from tests.service.flows import TOKENS, active, enable, observe

pytestmark = [pytest.mark.django_db]


@pytest.mark.chain
def test_registration_reads_decimals_and_symbol_from_the_token_contract(sim_venue, venues):
    aapl = next(a for a in sim_venue.assets() if a["base_symbol"] == "AAPL")
    asset = asset_register(changed_by="test", token_reader=venues.base, **aapl)
    assert asset.decimals == 18


@pytest.mark.chain
@pytest.mark.parametrize(
    ("change", "field", "rule"),
    [
        ({"decimals": 6}, "decimals", "says decimals()=18"),
        ({"token_symbol": "tMSFT", "base_symbol": "MSFT"}, "token_symbol", "says symbol()="),
    ],
    ids=["decimals", "symbol"],
)
def test_registration_refuses_a_token_contract_that_disagrees(
    sim_venue, venues, change, field, rule
):
    aapl = next(a for a in sim_venue.assets() if a["base_symbol"] == "AAPL")
    events_before = Event.objects.count()
    with pytest.raises(InvalidValue) as raised:
        asset_register(changed_by="test", token_reader=venues.base, **(aapl | change))
    assert raised.value.field == field
    assert rule in raised.value.rule
    assert not Asset.objects.exists()
    assert Event.objects.count() == events_before


def test_the_trigger_sizes_an_operation_in_the_assets_decimals(settings):
    """A 6-decimal token: the planned amount is truncated to 6 places, not 18 (which would
    ask for a quantity the token cannot represent)."""
    enable(settings)
    asset_register(
        base_symbol="AAPL",
        token_address=TOKENS["AAPL"],
        token_symbol="tAAPL",
        vault_id="0x" + "11" * 32,
        decimals=6,
        changed_by="test",
    )
    observe("AAPL", onchain="20", offchain="80.0000001", usdc_onchain="500", usdc_offchain="500")
    operation = active("AAPL")
    assert operation is not None and operation.kind == OperationKind.MINT
    assert operation.amount == Decimal("30.000000")  # excess 30.00000005, 6 decimals
    assert Operation.objects.count() == 1

"""ExactDecimalField on the real database (run on SQLite and on PostgreSQL)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from inventory.models import Asset, InventoryPool

pytestmark = pytest.mark.django_db

SHARES = Decimal("123456789.123456789012345678")
RAW_UNITS = Decimal(2**256 - 1)
USDC = Decimal("12345678901.123456")


@pytest.mark.parametrize(
    "amount",
    [SHARES, RAW_UNITS, USDC, Decimal("0.000000000000000001"), Decimal(0)],
    ids=["shares-18dp", "uint256-max", "usdc-6dp", "one-wei", "zero"],
)
def test_amount_round_trips_unchanged(amount):
    row = InventoryPool.objects.create(key="AAPL", kind="equity", onchain_available=amount)
    fetched = InventoryPool.objects.get(pk=row.pk)
    assert isinstance(fetched.onchain_available, Decimal)
    assert fetched.onchain_available == amount
    assert str(fetched.onchain_available) == str(amount)


def test_all_three_amounts_in_one_row_survive_values_queries():
    InventoryPool.objects.create(
        key="AAPL",
        kind="equity",
        onchain_available=SHARES,
        onchain_inflight=RAW_UNITS,
        offchain_available=USDC,
    )
    values = InventoryPool.objects.values_list(
        "onchain_available", "onchain_inflight", "offchain_available"
    ).get()
    assert values == (SHARES, RAW_UNITS, USDC)
    assert int(values[1]) == 2**256 - 1


def test_exact_amount_is_found_by_equality_filter():
    InventoryPool.objects.create(key="AAPL", kind="equity", onchain_available=SHARES)
    assert InventoryPool.objects.filter(onchain_available=SHARES).count() == 1


def test_nullable_amount_stores_none():
    asset = Asset.objects.create(
        base_symbol="AAPL",
        token_address="0x" + "ab" * 20,
        token_symbol="tAAPL",
        vault_id="0x" + "00" * 32,
        target_ratio=None,
    )
    asset.refresh_from_db()
    assert asset.target_ratio is None


def test_float_is_refused():
    with pytest.raises(ValidationError, match="float"):
        InventoryPool.objects.create(key="AAPL", kind="equity", onchain_available=0.1)

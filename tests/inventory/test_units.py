"""Unit conversion (spec section 1): truncating, never rounding; errors for negative values,
underflow and overflow."""

from decimal import Decimal

import pytest

from inventory.domain import units
from inventory.domain.units import (
    U256_MAX,
    NegativeValue,
    Overflow,
    Underflow,
    UnitConversionError,
    shares_to_units,
    units_to_shares,
    units_to_usdc,
    usdc_to_units,
)
from inventory.domain.values import DomainError


def test_erc20_decimal_scale_equals_1e18():
    assert units.SHARE_DECIMALS == 18
    assert shares_to_units(Decimal(1)) == 10**18


def test_shares_to_u256_whole():
    assert shares_to_units(Decimal("42")) == 42 * 10**18


def test_shares_to_u256_fractional():
    assert shares_to_units(Decimal("100.5")) == 1005 * 10**17


def test_shares_to_u256_zero():
    assert shares_to_units(Decimal(0)) == 0


def test_shares_to_u256_negative():
    with pytest.raises(NegativeValue) as caught:
        shares_to_units(Decimal("-1"))
    assert caught.value.amount == Decimal("-1")
    assert "-1" in str(caught.value)


def test_shares_to_u256_underflow():
    with pytest.raises(Underflow) as caught:
        shares_to_units(Decimal("1e-19"))
    assert caught.value.decimals == 18


def test_shares_to_u256_overflow():
    with pytest.raises(Overflow):
        shares_to_units(Decimal("1e60"))


def test_shares_to_u256_truncates_below_one_wei():
    assert shares_to_units(Decimal("1.0000000000000000019")) == 10**18 + 1


def test_shares_to_u256_keeps_every_wei_of_a_large_amount():
    # 28 significant digits would drop wei here; the conversion must not.
    assert shares_to_units(Decimal("123456789012.123456789012345678")) == (
        123456789012123456789012345678
    )


def test_u256_max_is_the_boundary():
    largest = units_to_shares(U256_MAX)
    assert shares_to_units(largest) == U256_MAX
    with pytest.raises(Overflow):
        shares_to_units(units_to_shares(U256_MAX + 1))


@pytest.mark.parametrize("huge", ["1E+999999", "1e101", "9" * 120])
def test_absurdly_large_amounts_are_our_overflow_error(huge):
    with pytest.raises(Overflow):
        shares_to_units(Decimal(huge))


@pytest.mark.parametrize("bad", [Decimal("NaN"), Decimal("Infinity"), 1.5, 3, "1"])
def test_non_finite_or_non_decimal_amounts_are_rejected(bad):
    with pytest.raises(UnitConversionError):
        shares_to_units(bad)


def test_conversion_errors_are_domain_errors():
    assert issubclass(UnitConversionError, DomainError)


def test_usdc_to_u256_positive():
    assert usdc_to_units(Decimal("1234.56")) == 1_234_560_000


def test_usdc_to_u256_negative():
    with pytest.raises(NegativeValue):
        usdc_to_units(Decimal("-0.01"))


def test_usdc_to_u256_zero():
    assert usdc_to_units(Decimal(0)) == 0


def test_usdc_to_u256_fractional_truncation():
    assert usdc_to_units(Decimal("1.2345678")) == 1_234_567
    assert usdc_to_units(Decimal("0.9999999")) == 999_999


def test_usdc_below_one_unit_is_underflow():
    with pytest.raises(Underflow):
        usdc_to_units(Decimal("0.0000001"))


@pytest.mark.parametrize(
    ("units_value", "convert", "expected"),
    [
        (1, units_to_usdc, Decimal("0.000001")),
        (1_500_000, units_to_usdc, Decimal("1.5")),
        (1, units_to_shares, Decimal("1e-18")),
        (42 * 10**18, units_to_shares, Decimal(42)),
    ],
)
def test_units_back_to_decimal_is_exact(units_value, convert, expected):
    assert convert(units_value) == expected


def test_negative_units_are_rejected():
    with pytest.raises(NegativeValue):
        units_to_usdc(-1)

"""Rain `Float` encoding and exact conversions (venues.rain_float); no chain needed."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from venues.rain_float import (
    COEFFICIENT_MAX,
    COEFFICIENT_MIN,
    EXPONENT_MAX,
    EXPONENT_MIN,
    FLOAT_ZERO,
    FloatConversionError,
    RainFloat,
    float_from_decimal,
    float_from_units,
    float_to_decimal,
    float_to_units,
    float_to_units_floor,
)

coefficients = st.integers(min_value=COEFFICIENT_MIN, max_value=COEFFICIENT_MAX)
exponents = st.integers(min_value=EXPONENT_MIN, max_value=EXPONENT_MAX)
token_decimals = st.sampled_from([0, 6, 8, 18]) | st.integers(min_value=0, max_value=40)
amount_units = st.integers(min_value=0, max_value=COEFFICIENT_MAX)


# -- the encoding, against vectors worked out from LibDecimalFloat.packLossless ----------------


@pytest.mark.parametrize(
    ("coefficient", "exponent", "word"),
    [
        (0, 0, "00" * 32),
        (15, -1, "ffffffff" + "00" * 27 + "0f"),  # 1.5
        (1_500_000, -6, "fffffffa" + "00" * 25 + "16e360"),  # 1.5 with 6 decimals
        (7, 1, "00000001" + "00" * 27 + "07"),  # 70
        (-1, 0, "00000000" + "ff" * 28),  # coefficient sign-extended within 224 bits
        (-1, -1, "ff" * 32),
        (COEFFICIENT_MAX, EXPONENT_MAX, "7fffffff" + "7f" + "ff" * 27),
        (COEFFICIENT_MIN, EXPONENT_MIN, "80000000" + "80" + "00" * 27),
    ],
)
def test_pack_matches_the_onchain_layout(coefficient: int, exponent: int, word: str) -> None:
    packed = RainFloat(coefficient=coefficient, exponent=exponent).pack()
    assert packed.hex() == word
    assert RainFloat.unpack(packed) == RainFloat(coefficient=coefficient, exponent=exponent)


@given(coefficients, exponents)
def test_every_float_round_trips_through_its_32_byte_word(coefficient: int, exponent: int) -> None:
    value = RainFloat(coefficient=coefficient, exponent=exponent)
    packed = value.pack()
    assert len(packed) == 32
    assert RainFloat.unpack(packed) == value


@given(st.binary(min_size=32, max_size=32))
def test_every_32_byte_word_is_a_float_that_packs_back_to_itself(word: bytes) -> None:
    assert RainFloat.unpack(word).pack() == word


@pytest.mark.parametrize(
    ("field", "coefficient", "exponent"),
    [
        ("coefficient", COEFFICIENT_MAX + 1, 0),
        ("coefficient", COEFFICIENT_MIN - 1, 0),
        ("exponent", 1, EXPONENT_MAX + 1),
        ("exponent", 1, EXPONENT_MIN - 1),
    ],
)
def test_a_part_that_does_not_fit_its_bits_is_refused(
    field: str, coefficient: int, exponent: int
) -> None:
    with pytest.raises(FloatConversionError, match=f"^{field}=.*signed bits") as caught:
        RainFloat(coefficient=coefficient, exponent=exponent)
    assert caught.value.field == field


@pytest.mark.parametrize("raw", [b"", b"\x00" * 31, b"\x00" * 33])
def test_unpack_refuses_a_word_that_is_not_32_bytes(raw: bytes) -> None:
    with pytest.raises(FloatConversionError, match="exactly 32 bytes"):
        RainFloat.unpack(raw)


def test_to_decimal_is_exact_beyond_the_default_context_precision() -> None:
    value = RainFloat(coefficient=COEFFICIENT_MAX, exponent=-18)
    digits = str(COEFFICIENT_MAX)
    assert str(value.to_decimal()) == f"{digits[:-18]}.{digits[-18:]}"
    assert RainFloat(coefficient=-15, exponent=-1).to_decimal() == Decimal("-1.5")


# -- units and Decimal amounts with `d` decimals ----------------------------------------------


def test_a_fixed_point_amount_is_coefficient_units_exponent_minus_decimals() -> None:
    assert float_from_units(1_500_000, 6) == RainFloat(coefficient=1_500_000, exponent=-6)
    assert float_from_decimal(Decimal("1.5"), 6) == RainFloat(coefficient=1_500_000, exponent=-6)
    assert float_from_decimal(Decimal("2"), 18) == RainFloat(coefficient=2 * 10**18, exponent=-18)


@given(amount_units, token_decimals)
def test_units_round_trip_through_a_packed_float(units: int, decimals: int) -> None:
    packed = float_from_units(units, decimals).pack()
    assert float_to_units(RainFloat.unpack(packed), decimals) == units


@given(amount_units, token_decimals)
def test_decimal_amounts_round_trip_through_a_packed_float(units: int, decimals: int) -> None:
    amount = _amount(units, decimals)
    value = RainFloat.unpack(float_from_decimal(amount, decimals).pack())
    back = float_to_decimal(value, decimals)
    assert back == amount
    assert back.as_tuple().exponent == -decimals
    assert value.to_decimal() == amount


@given(amount_units, token_decimals, st.integers(min_value=-40, max_value=40))
def test_every_encoding_of_the_same_value_converts_to_the_same_units(
    units: int, decimals: int, shift: int
) -> None:
    """Trailing zeros may sit in the coefficient or the exponent: `7e1` and `70000000e-6` are
    both 70 USDC, and a reader must not care which one the order book returns."""
    coefficient, exponent = units, -decimals
    if shift >= 0:
        coefficient *= 10**shift
        exponent -= shift
    else:
        while shift < 0 and coefficient and coefficient % 10 == 0:
            coefficient //= 10
            exponent += 1
            shift += 1
    if coefficient > COEFFICIENT_MAX:
        return
    assert float_to_units(RainFloat(coefficient=coefficient, exponent=exponent), decimals) == units


def _amount(units: int, decimals: int) -> Decimal:
    return Decimal((0, tuple(int(ch) for ch in str(units)), -decimals))


@given(
    st.integers(min_value=1, max_value=10**30),
    token_decimals,
    st.integers(min_value=1, max_value=9),
)
def test_an_amount_finer_than_the_token_is_refused_both_ways(
    units: int, decimals: int, extra_digit: int
) -> None:
    finer = _amount(units * 10 + extra_digit, decimals + 1)
    with pytest.raises(FloatConversionError, match=f"more than {decimals} decimals"):
        float_from_decimal(finer, decimals)
    value = RainFloat(coefficient=units * 10 + extra_digit, exponent=-(decimals + 1))
    with pytest.raises(FloatConversionError, match=f"more than {decimals} decimals"):
        float_to_units(value, decimals)
    assert float_to_units_floor(value, decimals) == units


def test_trailing_zero_decimals_beyond_the_token_are_not_finer() -> None:
    assert float_from_decimal(Decimal("1.500000000"), 6) == RainFloat(1_500_000, -6)
    assert float_to_units(RainFloat(1_500_000_000, -9), 6) == 1_500_000


@pytest.mark.parametrize(
    ("amount", "rule"),
    [
        (Decimal("-1"), "must be >= 0"),
        (Decimal("NaN"), "must be finite"),
        (Decimal("Infinity"), "must be finite"),
        (Decimal(COEFFICIENT_MAX + 1), "224-bit signed coefficient"),
        (Decimal("1e80"), "does not fit"),
    ],
)
def test_a_decimal_amount_without_a_float_is_refused_naming_field_and_value(
    amount: Decimal, rule: str
) -> None:
    with pytest.raises(FloatConversionError, match=rule) as caught:
        float_from_decimal(amount, 0, field="amount_usdc")
    assert str(caught.value).startswith(f"amount_usdc={amount!r}")


def test_negative_zero_is_zero() -> None:
    # The canonical zero word (was RainFloat(0, -6), a non-canonical zero: issue 20).
    assert float_from_decimal(Decimal("-0.00"), 6) == FLOAT_ZERO


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        (RainFloat(-1, 0), "must not be negative"),
        (RainFloat(1, 100), "does not fit uint256"),
        (RainFloat(2**200, 30), "does not fit uint256"),
    ],
)
def test_a_float_that_is_no_token_amount_is_refused(value: RainFloat, rule: str) -> None:
    with pytest.raises(FloatConversionError, match=rule):
        float_to_units(value, 18, field="vault balance")


@pytest.mark.parametrize(
    ("units", "decimals", "rule"),
    [
        (-1, 6, "must be >= 0"),
        (COEFFICIENT_MAX + 1, 6, "224-bit signed coefficient"),
        (1, -1, "between 0 and 255"),
        (1, 256, "between 0 and 255"),
        (True, 6, "must be an int"),
    ],
)
def test_units_without_a_float_are_refused(units: int, decimals: int, rule: str) -> None:
    with pytest.raises(FloatConversionError, match=rule):
        float_from_units(units, decimals)


def test_zero_and_vanishing_exponents_are_cheap_and_exact() -> None:
    assert float_to_units(RainFloat(0, EXPONENT_MAX), 18) == 0
    assert float_to_units_floor(RainFloat(5, EXPONENT_MIN), 18) == 0
    with pytest.raises(FloatConversionError, match="more than 18 decimals"):
        float_to_units(RainFloat(5, EXPONENT_MIN), 18)


@pytest.mark.parametrize("decimals", [0, 6, 18])
def test_zero_packs_to_the_canonical_all_zero_word_whatever_the_decimals(decimals: int) -> None:
    """Issue 20: Rain's `FLOAT_ZERO` is the all-zero word; `0e-6` is another word."""
    assert float_from_units(0, decimals).pack() == bytes(32)
    assert float_from_decimal(Decimal(0), decimals).pack() == bytes(32)
    assert float_from_decimal(Decimal("0.000"), decimals) == FLOAT_ZERO
    assert float_to_decimal(FLOAT_ZERO, decimals) == 0

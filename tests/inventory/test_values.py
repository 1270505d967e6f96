"""Value types (spec section 1): tokenized symbols, symbols, quantities, enums."""

from decimal import Decimal

import pytest

from inventory.domain.values import (
    USDC_POOL,
    Direction,
    DomainError,
    InvalidValue,
    RebalanceDirection,
    TokenizedEquitySymbol,
    validate_quantity,
    validate_symbol,
)


@pytest.mark.parametrize(
    ("text", "base", "marker", "prefix"),
    [
        ("tAAPL", "AAPL", "t", True),
        ("AAPL0x", "AAPL", "0x", False),
        ("NVDAs1", "NVDA", "s1", False),
        ("tBRK.B", "BRK.B", "t", True),
        # The lowercase t prefix is tried first, then 0x, then s1.
        ("tAAPL0x", "AAPL0x", "t", True),
        ("TSLA0x", "TSLA", "0x", False),
    ],
)
def test_tokenized_symbol_parses_base_and_marker(text, base, marker, prefix):
    parsed = TokenizedEquitySymbol.parse(text)
    assert (parsed.base, parsed.marker, parsed.marker_is_prefix) == (base, marker, prefix)


@pytest.mark.parametrize("text", ["tAAPL", "AAPL0x", "NVDAs1", "tBRK.B"])
def test_tokenized_symbol_display_puts_the_marker_back(text):
    assert str(TokenizedEquitySymbol.parse(text)) == text


@pytest.mark.parametrize("text", ["USDC", "AAPL", "0x", "s1", "t", "", "taapl", "TAAPL"], ids=repr)
def test_tokenized_symbol_without_base_or_marker_is_rejected(text):
    with pytest.raises(InvalidValue) as caught:
        TokenizedEquitySymbol.parse(text)
    assert caught.value.field == "token_symbol"
    assert repr(text) in str(caught.value)


@pytest.mark.parametrize("value", [None, 42, b"tAAPL"])
def test_tokenized_symbol_parse_rejects_non_strings(value):
    with pytest.raises(InvalidValue):
        TokenizedEquitySymbol.parse(value)


def test_tokenized_symbols_compare_by_value():
    assert TokenizedEquitySymbol.parse("tAAPL") == TokenizedEquitySymbol("AAPL", "t", True)
    assert TokenizedEquitySymbol.parse("tAAPL") != TokenizedEquitySymbol.parse("AAPL0x")


@pytest.mark.parametrize("symbol", ["AAPL", "BRK.B", "BRK-B"])
def test_validate_symbol_accepts_upper_case_tickers(symbol):
    assert validate_symbol(symbol) == symbol


@pytest.mark.parametrize(
    ("symbol", "rule"),
    [
        ("", "non-empty"),
        (None, "non-empty"),
        (" AAPL", "whitespace"),
        ("AA PL", "whitespace"),
        (USDC_POOL, "cash pool"),
        ("nvda", "upper-case"),  # issue 9: tickers are upper-case ASCII
    ],
)
def test_validate_symbol_rejects_with_the_rule(symbol, rule):
    with pytest.raises(InvalidValue) as caught:
        validate_symbol(symbol)
    assert caught.value.field == "symbol"
    assert rule in caught.value.rule


@pytest.mark.parametrize(
    ("value", "allow_zero", "ok"),
    [
        (Decimal("1"), False, True),
        (Decimal("0.000001"), False, True),
        (Decimal("0"), False, False),
        (Decimal("0"), True, True),
        (Decimal("-1"), True, False),
        (Decimal("NaN"), True, False),
        (Decimal("Infinity"), False, False),
        (1, False, False),
        (1.5, False, False),
    ],
)
def test_validate_quantity(value, allow_zero, ok):
    if ok:
        assert validate_quantity("quantity", value, allow_zero=allow_zero) == value
    else:
        with pytest.raises(InvalidValue) as caught:
            validate_quantity("quantity", value, allow_zero=allow_zero)
        assert caught.value.field == "quantity"
        assert caught.value.value is value


def test_invalid_value_names_field_value_and_rule():
    error = InvalidValue("amount", Decimal("-3"), "must be positive")
    assert isinstance(error, DomainError)
    assert str(error) == "amount=Decimal('-3'): must be positive"


def test_enum_values_match_the_reference_names():
    assert [d.value for d in Direction] == ["Buy", "Sell"]
    assert [d.value for d in RebalanceDirection] == ["AlpacaToBase", "BaseToAlpaca"]

"""Issue 9: one accepted value never poisons an aggregate; identifiers match exactly; time
cannot freeze a balance. Every refusal is an `InvalidValue` naming field, value and rule, and
writes nothing."""

from __future__ import annotations

import contextlib
import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.conf import settings as django_settings
from django.db import transaction
from django.utils import timezone
from eth_utils import keccak, to_checksum_address
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inventory import codec
from inventory.domain import events as ev
from inventory.domain import mint
from inventory.domain import position as pos
from inventory.domain.checks import validate_address
from inventory.domain.lifecycle import Lifecycle
from inventory.domain.values import (
    Direction,
    InvalidValue,
    TokenizedEquitySymbol,
    validate_quantity,
    validate_symbol,
)
from inventory.models import Event
from inventory.services import asset_register, fill_record_onchain, snapshot_record
from tests.inventory.projection_helpers import pool_read

D = Decimal
HASH = "0x" + "ab" * 32
VAULT = "0x" + "cd" * 32
TOKEN = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"  # valid EIP-55
BAD_CHECKSUM = "0xa0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"  # one letter's case flipped
T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
RECENT = timezone.now() - timedelta(minutes=1)  # one stamp, so a replay is the same fill
DB_SETTINGS = settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def fills_of(symbol: str) -> int:
    return Event.objects.filter(
        aggregate_id=symbol, event_type=ev.OnChainOrderFilled.event_type_name()
    ).count()


def fill(**overrides: object) -> list:
    kwargs: dict[str, object] = {
        "symbol": "AAPL",
        "tx_hash": HASH,
        "log_index": 0,
        "amount": D(1),
        "direction": Direction.BUY,
        "price_usdc": D("100.5"),
        "block_timestamp": RECENT,
    }
    kwargs.update(overrides)
    return fill_record_onchain(**kwargs)  # type: ignore[arg-type]


# Any Decimal a caller could hand us: huge and tiny exponents, up to 100 digits.
wild_decimals = st.builds(
    lambda sign, digits, exponent: Decimal((sign, tuple(digits), exponent)),
    st.integers(0, 1),
    st.lists(st.integers(0, 9), min_size=1, max_size=100),
    st.integers(-120, 120),
)
sane_decimals = st.decimals(
    min_value=D("0.000001"), max_value=D(1000), places=6, allow_nan=False, allow_infinity=False
)
# The shapes that poisoned an aggregate before issue 9, so every run tries them.
edge_decimals = st.sampled_from(
    [D("1E+100"), D("1." + "1" * 89), D("1E-30"), D(10) ** 15, D("0.000000000000000001")]
)
amounts = st.one_of(edge_decimals, wild_decimals, sane_decimals)


# --- one accepted value can never poison an aggregate ----------------------------------------


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        (D("1." + "1" * 89), "18 decimal places"),  # 90 significant digits
        (D("1E+100"), "at most"),
        (D("1E-30"), "18 decimal places"),
        (D(10) ** 15 + 1, "at most"),
    ],
)
def test_amount_beyond_the_domain_bounds_is_refused_with_the_rule(value, rule):
    with pytest.raises(InvalidValue) as caught:
        validate_quantity("amount", value)
    assert caught.value.field == "amount" and caught.value.value == value
    assert rule in caught.value.rule


def test_usdc_amounts_are_bounded_to_six_decimals():
    assert validate_quantity("amount", D("1.000001"), decimals=6) == D("1.000001")
    with pytest.raises(InvalidValue, match="6 decimal places"):
        validate_quantity("amount", D("1.0000001"), decimals=6)


def test_trailing_zeros_beyond_the_decimals_keep_the_value_and_drop_the_zeros():
    value = validate_quantity("amount", D("2.5" + "0" * 40))
    assert value == D("2.5") and -value.as_tuple().exponent <= 18


@pytest.mark.django_db
def test_a_ninety_digit_fill_is_refused_and_the_symbol_keeps_taking_fills():
    with pytest.raises(InvalidValue) as caught:
        fill(amount=D("1." + "1" * 89))
    assert caught.value.field == "amount"
    assert fills_of("AAPL") == 0
    fill(tx_hash="0x" + "01" * 32, amount=D("2.5"))
    fill(tx_hash="0x" + "02" * 32, amount=D("0.5"), direction=Direction.SELL)
    assert fills_of("AAPL") == 2


def _accepted(state, command, now):
    """Events for the command when the aggregate accepts it; None when refused as input."""
    try:
        events = pos.handle(state, command, now)
    except InvalidValue:
        return None
    for event in events:
        state = pos.apply(state, event)
    return state


@SETTINGS
@given(
    st.lists(st.tuples(amounts, amounts, st.sampled_from(list(Direction))), min_size=1, max_size=8)
)
def test_any_accepted_fill_sequence_keeps_the_position_usable(fills):
    now = T0
    state = Lifecycle.uninitialized()
    state = pos.apply(
        state,
        pos.handle(state, pos.Initialize(symbol="AAPL", threshold=pos.shares_threshold(D(1))), now)[
            0
        ],
    )
    for index, (amount, price, direction) in enumerate(fills):
        command = pos.AcknowledgeOnChainFill(
            trade_id=ev.TradeId(tx_hash=HASH, log_index=index),
            amount=amount,
            direction=direction,
            price_usdc=price,
            block_timestamp=now,
        )
        state = _accepted(state, command, now) or state
    # An ordinary fill, then a hedge cycle, still work: the aggregate is not poisoned.
    ordinary = pos.AcknowledgeOnChainFill(
        trade_id=ev.TradeId(tx_hash=HASH, log_index=999),
        amount=D("1.5"),
        direction=Direction.BUY,
        price_usdc=D(100),
        block_timestamp=now,
    )
    state = _accepted(state, ordinary, now)
    assert state is not None and state.is_live
    position = pos.position_of(state)
    assert position is not None
    if abs(position.net) >= 1:
        # the hedge that reduces the net position (the other direction is refused)
        hedge = Direction.SELL if position.net > 0 else Direction.BUY
        placed = pos.handle(
            state,
            pos.PlaceOffChainOrder(execution_id=1, shares=D(1), direction=hedge, broker="alpaca"),
            now,
        )
        state = pos.apply(state, placed[0])
        done = pos.handle(
            state,
            pos.CompleteOffChainOrder(
                execution_id=1,
                shares_filled=D(1),
                direction=hedge,
                broker_order_id="o-1",
                price_cents=10000,
                broker_timestamp=now,
            ),
            now,
        )
        assert pos.apply(state, done[0]).is_live


@pytest.mark.django_db(transaction=False)
@DB_SETTINGS
@given(
    st.lists(
        st.tuples(
            amounts,
            st.one_of(amounts, st.integers(-5, 10**20)),
            st.integers(-3 * 24 * 3600, 3 * 24 * 3600),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_any_accepted_snapshot_sequence_keeps_the_balances_updatable(snapshots):
    now = timezone.now()
    with transaction.atomic():
        for equity, cash, offset_s in snapshots:
            with contextlib.suppress(InvalidValue):
                snapshot_record(
                    fetched_at=now + timedelta(seconds=offset_s),
                    onchain_equity={"AAPL": equity},
                    onchain_cash=cash,
                    now=now,
                )
        # The venues report again once the allowed skew has passed: the balances follow,
        # and a fill on top of them is exact.
        later = now + timedelta(seconds=getattr(django_settings, "OBSERVATION_MAX_SKEW_S", 60) + 1)
        assert snapshot_record(
            fetched_at=later, onchain_equity={"AAPL": D(7)}, onchain_cash=D(500), now=later
        )
        fill_record_onchain(
            symbol="AAPL",
            tx_hash=HASH,
            log_index=1,
            amount=D("0.25"),
            direction=Direction.BUY,
            price_usdc=D(4),
            block_timestamp=later,
            now=later,
        )
        assert pool_read("AAPL").onchain_available == D("7.25")
        assert pool_read("USDC").onchain_available == D(499)
        transaction.set_rollback(True)


# --- identifiers are matched exactly ----------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("suffix", ["\n", " ", "\r\n", "\x00", "\u200b"])
def test_a_trade_hash_with_a_trailing_character_is_refused_not_recorded_twice(suffix):
    fill()
    with pytest.raises(InvalidValue) as caught:
        fill(tx_hash=HASH + suffix)
    assert caught.value.field == "tx_hash"
    assert fills_of("AAPL") == 1


@pytest.mark.django_db(transaction=False)
@DB_SETTINGS
@given(st.lists(st.booleans(), min_size=64, max_size=64))
def test_any_spelling_of_one_trade_hash_records_it_once(upper):
    body = "".join(ch.upper() if up else ch for ch, up in zip("ab" * 32, upper, strict=True))
    with transaction.atomic():
        fill(tx_hash=HASH)
        assert fill(tx_hash="0x" + body) == []
        assert fills_of("AAPL") == 1
        transaction.set_rollback(True)


@pytest.mark.parametrize(
    "symbol",
    [
        "aapl",
        "Aapl",
        "AAPL\n",
        "AA\u200bPL",
        "AAPL\x00",
        "A\tB",
        "ÄAPL",
        "AAPL.",
        "BRK..B",
        "A" * 17,
        "USDC",
        "AAPL\u2028",
    ],
)
def test_symbol_outside_the_ticker_alphabet_is_refused(symbol):
    with pytest.raises(InvalidValue) as caught:
        validate_symbol(symbol)
    assert caught.value.field == "symbol" and caught.value.value == symbol


@pytest.mark.parametrize("symbol", ["AAPL", "BRK.B", "BRK-B", "A", "X" * 16, "T1"])
def test_ticker_symbols_are_accepted(symbol):
    assert validate_symbol(symbol) == symbol


@given(st.text(max_size=20))
def test_every_accepted_symbol_is_upper_case_ascii_ticker_text(text):
    try:
        validate_symbol(text)
    except InvalidValue:
        return
    assert text.isascii() and text == text.upper() and text != "USDC"
    assert all(ch.isalnum() or ch in ".-" for ch in text) and 1 <= len(text) <= 16


@pytest.mark.django_db
def test_a_long_symbol_is_an_invalid_value_not_a_database_error():
    with pytest.raises(InvalidValue) as caught:
        fill(symbol="A" * 200)
    assert caught.value.field == "symbol"
    with pytest.raises(InvalidValue):
        snapshot_record(fetched_at=timezone.now(), onchain_equity={"B" * 200: D(1)})
    assert not Event.objects.exists()


def test_keccak_matches_the_reference_implementation():
    from inventory.domain.keccak import keccak_256

    for data in (b"", b"abc", b"x" * 135, b"x" * 136, b"x" * 137, bytes(range(256))):
        assert keccak_256(data) == keccak(data).hex()


@given(st.binary(min_size=20, max_size=20))
def test_a_checksummed_address_is_accepted_and_any_flipped_letter_is_refused(raw):
    address = to_checksum_address(raw)
    assert validate_address("wallet", address) == address
    letters = [i for i, ch in enumerate(address) if i >= 2 and ch.isalpha()]
    if len(letters) >= 2:  # one flipped letter leaves it mixed case
        i = letters[0]
        flipped = address[:i] + address[i].swapcase() + address[i + 1 :]
        if flipped[2:] not in (flipped[2:].lower(), flipped[2:].upper()):
            with pytest.raises(InvalidValue, match="EIP-55"):
                validate_address("wallet", flipped)


def test_a_wrong_checksum_is_refused_by_the_aggregates_and_the_codec():
    with pytest.raises(InvalidValue) as caught:
        mint.handle(
            Lifecycle.uninitialized(),
            mint.RequestMint(symbol="AAPL", quantity=D(1), wallet=BAD_CHECKSUM),
            T0,
        )
    assert caught.value.field == "wallet"
    with pytest.raises(codec.PayloadError):
        codec.encode_event(
            ev.MintRequested(symbol="AAPL", quantity=D(1), wallet=BAD_CHECKSUM, requested_at=T0)
        )
    with pytest.raises(InvalidValue):
        validate_address("wallet", TOKEN + "\n")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("token_address", BAD_CHECKSUM),
        ("token_address", TOKEN + "\n"),
        ("vault_id", VAULT + "\n"),
        ("token_symbol", "tAAPL\n"),
        ("base_symbol", "aapl"),
    ],
)
def test_asset_registration_matches_identifiers_exactly(field, value):
    kwargs = {
        "base_symbol": "AAPL",
        "token_address": TOKEN,
        "token_symbol": "tAAPL",
        "vault_id": VAULT,
        "changed_by": "alice",
    }
    kwargs[field] = value
    with pytest.raises(InvalidValue) as caught:
        asset_register(**kwargs)
    assert caught.value.field == field
    assert not Event.objects.exists()


def test_token_symbol_base_must_be_ticker_text():
    with pytest.raises(InvalidValue) as caught:
        TokenizedEquitySymbol.parse("tAA\u200bPL")
    assert caught.value.field == "token_symbol"


# --- time cannot freeze a balance --------------------------------------------------------------


@pytest.mark.django_db
def test_a_snapshot_from_the_future_is_refused_and_real_snapshots_keep_applying():
    now = timezone.now()
    with pytest.raises(InvalidValue) as caught:
        snapshot_record(fetched_at=now + timedelta(days=365), onchain_cash=D(1), now=now)
    assert caught.value.field == "fetched_at" and "ahead of now" in caught.value.rule
    assert not Event.objects.exists()
    snapshot_record(fetched_at=now, onchain_cash=D(5), now=now)
    assert pool_read("USDC").onchain_available == D(5)


@pytest.mark.django_db
def test_the_allowed_skew_is_configurable(settings):
    now = timezone.now()
    settings.OBSERVATION_MAX_SKEW_S = 3600
    assert snapshot_record(fetched_at=now + timedelta(minutes=30), onchain_cash=D(1), now=now)
    settings.OBSERVATION_MAX_SKEW_S = 1
    with pytest.raises(InvalidValue, match="OBSERVATION_MAX_SKEW_S"):
        snapshot_record(fetched_at=now + timedelta(minutes=31), onchain_cash=D(1), now=now)


@pytest.mark.django_db
def test_a_fill_stamped_in_the_future_is_refused():
    with pytest.raises(InvalidValue) as caught:
        fill(block_timestamp=timezone.now() + timedelta(hours=2))
    assert caught.value.field == "block_timestamp"
    assert fills_of("AAPL") == 0


@pytest.mark.django_db
def test_a_stale_snapshot_is_logged_at_warning_with_both_stamps(caplog):
    now = timezone.now()
    newer, older = now - timedelta(seconds=10), now - timedelta(seconds=20)
    snapshot_record(fetched_at=newer, onchain_cash=D(5), now=now)
    with caplog.at_level(logging.WARNING, logger="inventory.services"):
        assert snapshot_record(fetched_at=older, onchain_cash=D(1), now=now) == []
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    assert older.isoformat() in text and newer.isoformat() in text and "OnchainCash" in text


@pytest.mark.parametrize(
    "spelling",
    [
        "{12345678-1234-5678-1234-567812345678}",
        "urn:uuid:12345678-1234-5678-1234-567812345678",
        "12345678123456781234567812345678",
        "12345678-1234-5678-1234-567812345678\n",
    ],
)
def test_an_alpaca_transfer_id_is_one_spelling_of_a_uuid(spelling):
    from inventory.domain.checks import validate_transfer_ref
    from inventory.domain.values import TransferRef, TransferRefKind

    canonical = TransferRef(TransferRefKind.ALPACA_ID, "12345678-1234-5678-1234-567812345678")
    assert validate_transfer_ref("withdrawal", canonical) == canonical
    with pytest.raises(InvalidValue) as caught:
        validate_transfer_ref("withdrawal", TransferRef(TransferRefKind.ALPACA_ID, spelling))
    assert caught.value.field == "withdrawal"


@pytest.mark.django_db(transaction=False)
@DB_SETTINGS
@given(
    st.lists(st.tuples(amounts, amounts, st.sampled_from(list(Direction))), min_size=1, max_size=6)
)
def test_any_accepted_fill_sequence_keeps_the_position_service_usable(fills):
    from inventory.services import inventory_rebuild
    from inventory.store import aggregate_load

    now = timezone.now()
    with transaction.atomic():
        snapshot_record(fetched_at=now, onchain_equity={"AAPL": D(10**6)}, onchain_cash=D(10**9))
        for index, (amount, price, direction) in enumerate(fills):
            with contextlib.suppress(InvalidValue):
                fill(log_index=index, amount=amount, price_usdc=price, direction=direction)
        assert fill(log_index=999, amount=D("1.5"), price_usdc=D(100))
        assert fill(log_index=1000, amount=D("0.5"), price_usdc=D(100), direction=Direction.SELL)
        assert aggregate_load(pos.SPEC, "AAPL").state.is_live
        assert inventory_rebuild(write=False) == []
        transaction.set_rollback(True)


def test_a_hedge_price_beyond_the_bounds_is_refused():
    state = Lifecycle.uninitialized()
    for event in pos.handle(
        state, pos.Migrate("AAPL", D(5), D(5), D(0), pos.shares_threshold(D(1))), T0
    ):
        state = pos.apply(state, event)
    placed = pos.handle(
        state,
        pos.PlaceOffChainOrder(execution_id=1, shares=D(5), direction=Direction.SELL, broker="b"),
        T0,
    )
    state = pos.apply(state, placed[0])
    with pytest.raises(InvalidValue) as caught:
        pos.handle(
            state,
            pos.CompleteOffChainOrder(
                execution_id=1,
                shares_filled=D(5),
                direction=Direction.SELL,
                broker_order_id="o",
                price_cents=10**100,
                broker_timestamp=T0,
            ),
            T0,
        )
    assert caught.value.field == "price_cents"

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.db import DatabaseError, connection, transaction

from inventory.codec import PayloadError, decode_event, encode_event
from inventory.domain import events as ev
from inventory.domain.values import TransferRef, TransferRefKind
from inventory.models import Event

NOW = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def _row() -> Event:
    event_type, payload = encode_event(ev.MintCompleted(completed_at=NOW))
    return Event.objects.create(
        aggregate_type=ev.MINT,
        aggregate_id="m-1",
        sequence=1,
        event_type=event_type,
        payload=payload,
    )


@pytest.mark.django_db
def test_raw_sql_update_of_an_event_is_refused_by_the_database():
    row = _row()
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("UPDATE inventory_event SET event_type = 'x' WHERE id = %s", [row.id])
    row.refresh_from_db()
    assert row.event_type == "TokenizedEquityMintEvent::MintCompleted"


@pytest.mark.django_db
def test_raw_sql_delete_of_an_event_is_refused_by_the_database():
    row = _row()
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("DELETE FROM inventory_event WHERE id = %s", [row.id])
    assert Event.objects.filter(id=row.id).exists()


@pytest.mark.django_db
def test_orm_save_of_an_existing_event_is_refused():
    row = _row()
    row.event_type = "changed"
    with pytest.raises(DatabaseError), transaction.atomic():
        row.save()


@pytest.mark.django_db
def test_duplicate_sequence_for_one_aggregate_is_refused():
    _row()
    from django.db import IntegrityError

    with pytest.raises(IntegrityError), transaction.atomic():
        _row()


def test_payload_round_trip_keeps_decimals_datetimes_addresses_and_bytes_exact():
    original = ev.TransferSigned(
        symbol="AAPL",
        quantity=Decimal("123456789.123456789012345678"),
        token="0x" + "ab" * 20,
        redemption_wallet="0x" + "cd" * 20,
        raw_tx=b"\x00\x01\xfe",
        tx_hash="0x" + "AB" * 32,
        signed_at=NOW,
    )
    event_type, payload = encode_event(original)
    assert event_type == "EquityRedemptionEvent::TransferSigned"
    body = payload["TransferSigned"]
    assert body["quantity"] == "123456789.123456789012345678"
    assert body["token"] == "0xABaBaBaBABabABabAbAbABAbABabababaBaBABaB"
    assert body["raw_tx"] == "0x0001fe"
    assert body["signed_at"] == "2026-01-02T03:04:05.678901+00:00"
    decoded = decode_event(event_type, payload)
    assert decoded.quantity == original.quantity
    assert decoded.raw_tx == original.raw_tx
    assert decoded.signed_at == NOW
    assert decoded.tx_hash == "0x" + "ab" * 32


def test_payload_with_bad_decimal_names_event_type_and_field():
    event_type, payload = encode_event(
        ev.MintRequested(
            symbol="AAPL", quantity=Decimal("1"), wallet="0x" + "ab" * 20, requested_at=NOW
        )
    )
    payload["MintRequested"]["quantity"] = "1,5"
    with pytest.raises(PayloadError) as error:
        decode_event(event_type, payload)
    assert error.value.event_type == "TokenizedEquityMintEvent::MintRequested"
    assert error.value.field == "quantity"
    assert "1,5" in str(error.value)


def test_payload_with_naive_datetime_is_refused():
    with pytest.raises(PayloadError, match="requested_at"):
        encode_event(
            ev.MintRequested(
                symbol="AAPL",
                quantity=Decimal("1"),
                wallet="0x" + "ab" * 20,
                requested_at=datetime(2026, 1, 1),  # noqa: DTZ001
            )
        )


def test_payload_with_unknown_field_or_missing_field_is_refused():
    event_type, payload = encode_event(ev.MintCompleted(completed_at=NOW))
    with pytest.raises(PayloadError, match="unknown field"):
        decode_event(event_type, {"MintCompleted": {**payload["MintCompleted"], "x": 1}})
    with pytest.raises(PayloadError, match="missing"):
        decode_event(event_type, {"MintCompleted": {}})


def test_unknown_event_type_is_refused():
    with pytest.raises(PayloadError, match="unknown event type"):
        decode_event("Nope::Nothing", {"Nothing": {}})


def test_nested_and_optional_fields_round_trip():
    original = ev.DepositFailed(
        deposit_ref=TransferRef(TransferRefKind.ONCHAIN_TX, "0x" + "12" * 32),
        reason="vault reverted",
        failed_at=NOW,
    )
    assert decode_event(*encode_event(original)) == original
    without = ev.DepositFailed(deposit_ref=None, reason="r", failed_at=NOW)
    assert decode_event(*encode_event(without)) == without

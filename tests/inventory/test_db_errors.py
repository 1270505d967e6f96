"""Integrity errors are classified by constraint name (PostgreSQL: the error's diagnostics;
SQLite: its one message format, read in `inventory.db_errors` only), the same name on both."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction

from inventory.db_errors import sqlite_unique_constraint, unique_violated
from inventory.models import ApiToken, Event
from operations.models import ChainNonce, Operation, OperationStatus


def violation(create) -> IntegrityError:
    with pytest.raises(IntegrityError) as caught, transaction.atomic():
        create()
    return caught.value


def event(sequence: int = 1) -> Event:
    return Event.objects.create(
        aggregate_type="Test", aggregate_id="a", sequence=sequence, event_type="T", payload={}
    )


@pytest.mark.django_db
def test_a_second_event_at_one_sequence_names_the_sequence_constraint():
    # On SQLite the append-only trigger raises this one, with its reason after the columns.
    event()
    error = violation(event)
    assert unique_violated(error) == "event_unique_aggregate_sequence"


@pytest.mark.django_db
def test_named_constraints_unique_fields_and_conditional_indexes_are_told_apart():
    ChainNonce.objects.create(chain_id=1, address="0xa")
    assert (
        unique_violated(violation(lambda: ChainNonce.objects.create(chain_id=1, address="0xa")))
        == "chain_nonce_unique"
    )
    ApiToken.objects.create(name="n", token_hash="h1", prefix="p", scopes="read")
    by_name = violation(
        lambda: ApiToken.objects.create(name="n", token_hash="h2", prefix="p", scopes="read")
    )
    by_hash = violation(
        lambda: ApiToken.objects.create(name="m", token_hash="h1", prefix="p", scopes="read")
    )
    assert unique_violated(by_name) == "inventory_apitoken_name_key"
    assert unique_violated(by_hash) == "inventory_apitoken_token_hash_key"

    def operation(aggregate_id: str, status: str = OperationStatus.PENDING) -> Operation:
        return Operation.objects.create(
            kind="mint", pool="AAPL", amount=Decimal(1), status=status, aggregate_id=aggregate_id
        )

    operation("one")
    guard = violation(lambda: operation("two"))
    same_id = violation(lambda: operation("one", status=OperationStatus.FAILED))
    assert unique_violated(same_id) == "operations_operation_aggregate_id_key"
    assert unique_violated(guard) == "operation_one_active_per_pool"


@pytest.mark.django_db
def test_other_integrity_errors_are_not_unique_violations():
    error = violation(lambda: event(sequence=0))  # the sequence >= 1 check
    assert unique_violated(error) is None


def test_the_sqlite_message_is_mapped_by_the_tables_constraints():
    assert (
        sqlite_unique_constraint(
            "UNIQUE constraint failed: inventory_eventkey.scope, inventory_eventkey.key"
        )
        == "eventkey_unique_scope_key"
    )
    assert sqlite_unique_constraint("UNIQUE constraint failed: inventory_event.id") == (
        "inventory_event_pkey"
    )
    assert sqlite_unique_constraint("UNIQUE constraint failed: inventory_eventkey.key") is None
    assert sqlite_unique_constraint("UNIQUE constraint failed: nowhere.x") is None
    assert sqlite_unique_constraint("NOT NULL constraint failed: inventory_event.payload") is None


@pytest.mark.django_db
def test_an_asset_conflict_names_the_field_of_the_constraint_the_database_names():
    # `asset_register` maps the violated constraint to the field it names in its conflict
    # (it used to name a field by querying again, and turned any IntegrityError into one).
    from inventory.models import Asset
    from inventory.services import _ASSET_UNIQUE

    def asset(symbol: str, address: str) -> Asset:
        return Asset.objects.create(
            base_symbol=symbol,
            token_address=address,
            token_symbol=f"t{symbol}",
            decimals=18,
            vault_id="0x" + "0" * 64,
        )

    asset("AAPL", "0x" + "a" * 40)
    by_symbol = violation(lambda: asset("AAPL", "0x" + "b" * 40))
    by_address = violation(lambda: asset("MSFT", "0x" + "a" * 40))
    assert _ASSET_UNIQUE[unique_violated(by_symbol)] == "base_symbol"
    assert _ASSET_UNIQUE[unique_violated(by_address)] == "token_address"

"""`inventory.rawsql.prep_save` prepares values exactly as the model fields do (its shortcuts
for JSON on SQLite and repeated datetimes change speed, never the stored value)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from django.db import connection
from hypothesis import given, settings
from hypothesis import strategies as st

from inventory.models import AggregateState, Event, InventoryPool
from inventory.rawsql import prep_save

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
moments = st.datetimes(
    min_value=datetime(1990, 1, 1),  # noqa: DTZ001 - hypothesis bounds are naive
    max_value=datetime(2100, 1, 1),  # noqa: DTZ001
    timezones=st.just(UTC),
).flatmap(
    lambda moment: st.sampled_from(
        [moment, moment.astimezone(timezone(timedelta(hours=5, minutes=30)))]
    )
)
JSON_FIELDS = [
    Event._meta.get_field("payload"),
    Event._meta.get_field("metadata"),
    AggregateState._meta.get_field("state"),
]
DATETIME_FIELDS = [
    Event._meta.get_field("recorded_at"),
    InventoryPool._meta.get_field("updated_at"),
]


@pytest.mark.django_db
@settings(max_examples=200, deadline=None)
@given(value=json_values, index=st.integers(0, len(JSON_FIELDS) - 1))
def test_json_values_are_prepared_as_the_field_prepares_them(value, index):
    field = JSON_FIELDS[index]
    assert plain(prep_save(field, value, connection)) == plain(
        field.get_db_prep_save(value, connection)
    )


def plain(prepared):
    """psycopg's `Jsonb` wrapper (PostgreSQL) compares by identity: compare what it wraps."""
    wrapped = getattr(prepared, "obj", None)
    return prepared if wrapped is None else (type(prepared), wrapped)


@pytest.mark.django_db
@settings(max_examples=200, deadline=None)
@given(first=moments, again=moments, index=st.integers(0, len(DATETIME_FIELDS) - 1))
def test_datetimes_are_prepared_as_the_field_prepares_them_even_when_seen_before(
    first, again, index
):
    field = DATETIME_FIELDS[index]
    # The same instant in another zone is equal (and hashes equal): it must prepare equal.
    for value in (first, again, first.astimezone(UTC), again):
        assert prep_save(field, value, connection) == field.get_db_prep_save(value, connection)

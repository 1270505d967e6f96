"""`in_retried_transaction`: a lost append race is tried again from the start (tenacity), any
other database error goes straight to the caller. The conflicts are real: a second event at
one aggregate sequence (`event_unique_aggregate_sequence`)."""

from __future__ import annotations

import logging

import pytest
from django.db import IntegrityError

from inventory.models import Event
from inventory.store import in_retried_transaction


def event(sequence: int, aggregate_id: str = "a") -> Event:
    return Event.objects.create(
        aggregate_type="Test",
        aggregate_id=aggregate_id,
        sequence=sequence,
        event_type="T",
        payload={},
    )


@pytest.mark.django_db(transaction=True)
def test_a_lost_sequence_race_is_tried_again_until_it_succeeds(caplog):
    event(1)
    calls = []

    def work() -> str:
        calls.append(1)
        # The first two attempts lose the race for sequence 1; the third appends sequence 2.
        event(1 if len(calls) < 3 else 2, aggregate_id="a")
        event(1, aggregate_id=f"b{len(calls)}")  # rolled back with its attempt
        return "done"

    with caplog.at_level(logging.WARNING, logger="inventory.store"):
        assert in_retried_transaction(work, what="Test/a") == "done"
    assert len(calls) == 3
    retries = [m for m in caplog.messages if m.startswith("Test/a: ")]
    assert [m.rsplit("(", 1)[1] for m in retries] == [
        "attempt 1), retrying",
        "attempt 2), retrying",
    ]
    # Only the successful attempt's rows are stored.
    assert list(Event.objects.order_by("id").values_list("aggregate_id", "sequence")) == [
        ("a", 1),
        ("a", 2),
        ("b3", 1),
    ]


@pytest.mark.django_db(transaction=True)
def test_another_integrity_error_is_not_retried():
    calls = []

    def work() -> None:
        calls.append(1)
        event(0)  # the sequence >= 1 check, not a race

    with pytest.raises(IntegrityError):
        in_retried_transaction(work, what="Test/a")
    assert len(calls) == 1
    assert not Event.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_nested_retry_runs_in_a_savepoint_of_the_callers_transaction():
    from django.db import transaction

    event(1)
    calls = []

    def work() -> None:
        calls.append(1)
        event(1 if len(calls) < 2 else 2)

    with transaction.atomic():
        event(1, aggregate_id="outer")
        in_retried_transaction(work, what="Test/a")
    assert len(calls) == 2
    assert Event.objects.filter(aggregate_id="outer").exists()
    assert Event.objects.filter(aggregate_id="a", sequence=2).exists()

"""The aggregate store: load by folding, decide, append with the next sequence, publish."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction

from inventory.domain import events as ev
from inventory.domain import mint
from inventory.domain.checks import CommandRefused
from inventory.models import Event
from inventory.store import aggregate_execute, aggregate_load, events_append, events_appended

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
WALLET = "0x" + "ab" * 20


def _request(aggregate_id: str = "mint-1") -> None:
    aggregate_execute(
        spec=mint.SPEC,
        aggregate_id=aggregate_id,
        command=mint.RequestMint(symbol="AAPL", quantity=Decimal("30"), wallet=WALLET),
        now=NOW,
        metadata={"actor": "test"},
    )


@pytest.mark.django_db
def test_execute_appends_with_next_sequences_and_load_folds_them_back():
    _request()
    aggregate_execute(
        spec=mint.SPEC,
        aggregate_id="mint-1",
        command=mint.AcknowledgeAcceptance(issuer_request_id="mint-1", tokenization_request_id="t"),
        now=NOW,
    )

    rows = list(Event.objects.filter(aggregate_id="mint-1").order_by("sequence"))
    assert [(r.sequence, r.event_type) for r in rows] == [
        (1, "TokenizedEquityMintEvent::MintRequested"),
        (2, "TokenizedEquityMintEvent::MintAccepted"),
    ]
    assert rows[0].metadata == {"actor": "test"}
    loaded = aggregate_load(mint.SPEC, "mint-1")
    assert loaded.sequence == 2
    assert mint.step_of(loaded.state) is mint.MintStep.ACCEPTED


@pytest.mark.django_db
def test_refused_command_writes_nothing():
    _request()
    before = Event.objects.count()

    with pytest.raises(CommandRefused):
        aggregate_execute(spec=mint.SPEC, aggregate_id="mint-1", command=mint.Finalize(), now=NOW)

    assert Event.objects.count() == before


@pytest.mark.django_db
def test_append_after_a_stale_sequence_is_refused_by_the_database():
    _request()
    with pytest.raises(IntegrityError), transaction.atomic():
        events_append(
            spec=mint.SPEC,
            aggregate_id="mint-1",
            events=[ev.MintRejected(reason="late writer", rejected_at=NOW)],
            expected_sequence=0,
            now=NOW,
        )
    assert Event.objects.filter(aggregate_id="mint-1").count() == 1


@pytest.mark.django_db
def test_events_of_another_aggregate_type_are_refused_before_anything_is_written():
    with pytest.raises(TypeError, match="belongs to EquityRedemption"):
        events_append(
            spec=mint.SPEC,
            aggregate_id="mint-1",
            events=[ev.DetectionFailed(reason="x", failed_at=NOW)],
            expected_sequence=0,
            now=NOW,
        )
    assert not Event.objects.exists()


@pytest.mark.django_db
def test_a_receiver_failing_rolls_back_the_appended_events():
    def explode(sender, events, pools, **kwargs):
        raise RuntimeError("receiver failed")

    events_appended.connect(explode, dispatch_uid="test-explode")
    try:
        with pytest.raises(RuntimeError, match="receiver failed"):
            _request()
    finally:
        events_appended.disconnect(dispatch_uid="test-explode")
    assert not Event.objects.exists()


@pytest.mark.django_db
def test_receivers_get_only_the_new_batch():
    seen = []

    def record(sender, events, pools, **kwargs):
        seen.append([s.sequence for s in events])

    _request()
    events_appended.connect(record, dispatch_uid="test-record")
    try:
        aggregate_execute(
            spec=mint.SPEC,
            aggregate_id="mint-1",
            command=mint.RejectMint(reason="no"),
            now=NOW,
        )
    finally:
        events_appended.disconnect(dispatch_uid="test-record")
    assert seen == [[2]]


@pytest.mark.django_db(transaction=True)
def test_concurrent_appends_to_one_aggregate_are_retried_into_one_gapless_sequence():
    """Writers racing on one aggregate: the unique (type, id, sequence) loses one, the store
    reloads and appends again; nothing is lost and no sequence repeats."""
    import threading

    from django.db import connection, connections

    from inventory.domain import settings as settings_domain

    if connection.vendor != "postgresql":
        pytest.skip("SQLite serialises writers with IMMEDIATE transactions: no race to retry")
    writers = 6
    barrier = threading.Barrier(writers)
    errors = []

    def write(index: int) -> None:
        try:
            barrier.wait()
            aggregate_execute(
                spec=settings_domain.SPEC,
                aggregate_id="global",
                command=settings_domain.ChangeSetting(
                    scope="global",
                    setting="usdc_minimum",
                    old_value=None,
                    new_value=str(100 + index),
                    changed_by=f"writer-{index}",
                ),
            )
        except Exception as error:  # noqa: BLE001 - collected and asserted below
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    rows = Event.objects.filter(aggregate_type=ev.SETTINGS, aggregate_id="global")
    assert sorted(rows.values_list("sequence", flat=True)) == list(range(1, writers + 1))
    changed_by = sorted(r.payload["SettingChanged"]["changed_by"] for r in rows)
    assert changed_by == sorted(f"writer-{i}" for i in range(writers))

"""Periodic jobs claimed through the database: one claimant per period, on any number of
hosts (threads here; two processes in tests/service/test_service.py)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from service.periodic import periodic_claim

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


@pytest.mark.django_db
def test_one_claim_per_period():
    assert periodic_claim(name="poll", interval_s=60, now=T0) is True
    assert periodic_claim(name="poll", interval_s=60, now=T0 + timedelta(seconds=59)) is False
    assert periodic_claim(name="poll", interval_s=60, now=T0 + timedelta(seconds=60)) is True


@pytest.mark.django_db
def test_min_gap_claims_early_unless_someone_just_ran():
    assert periodic_claim(name="poll", interval_s=60, now=T0) is True
    # A start-up poll 3 s later: another host just polled, skip.
    soon = periodic_claim(name="poll", interval_s=60, min_gap_s=5, now=T0 + timedelta(seconds=3))
    assert soon is False
    # 10 s later: runs now even though the period is not over.
    later = periodic_claim(name="poll", interval_s=60, min_gap_s=5, now=T0 + timedelta(seconds=10))
    assert later is True
    assert periodic_claim(name="poll", interval_s=60, now=T0 + timedelta(seconds=30)) is False


@pytest.mark.django_db(transaction=True)
def test_concurrent_claimants_get_one_claim():
    barrier = threading.Barrier(4)
    results: list[bool] = []
    errors: list[BaseException] = []

    def claim() -> None:
        try:
            barrier.wait(timeout=10)
            results.append(periodic_claim(name="poll", interval_s=60))
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert sorted(results) == [False, False, False, True]

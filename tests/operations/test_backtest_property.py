"""Property: on random flows, the backtest's as-run replay decides what the live trigger decided.

Each example writes a short random day through the real store, projection and trigger (its
operations played with random times per kind: `tests/operations/backtest_day.py`), then
replays it: every operation the trigger created is the one the replay starts, at the same
moment, of the same kind and amount, in the same order per pool, and nothing else starts."""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import pytest
from django.db import transaction
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from operations.backtest import BacktestRequest, backtest_run
from tests.operations.backtest_day import simulated_day

pytestmark = pytest.mark.django_db


@settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    seed=st.integers(0, 10_000),
    fills=st.integers(4, 10),
    drift=st.sampled_from([0.0, 0.2, -0.2]),
    band_change=st.sampled_from([None, "0.03", "0.2"]),
    seconds=st.fixed_dictionaries(
        {
            kind: st.integers(2, 45)
            for kind in ("mint", "redemption", "usdc_alpaca_to_base", "usdc_base_to_alpaca")
        }
    ),
)
@example(
    # A USDC move completes in the very second of a fill: the completion comes after the fill
    # (the replay completed it before, and started a move the trigger never did).
    seed=653,
    fills=7,
    drift=0.0,
    band_change=None,
    seconds={"mint": 2, "redemption": 2, "usdc_alpaca_to_base": 2, "usdc_base_to_alpaca": 39},
)
def test_the_replay_decides_what_the_trigger_decided(
    django_settings, seed, fills, drift, band_change, seconds
):
    with transaction.atomic():
        day = simulated_day(
            seed=seed,
            fills=fills,
            drift=drift,
            mid_day_deviation=band_change,
            seconds=seconds,
            deviation="0.04",
        )
        real: dict[str, list[tuple]] = defaultdict(list)
        for operation in day.operations:
            real[operation.pool].append(
                (operation.created_at, str(operation.kind), operation.amount)
            )
        report = backtest_run(BacktestRequest(start=day.start, end=day.end, candidates=()))
        [as_run] = [c for c in report["candidates"] if c["name"] == "as-run"]
        replayed = {
            pool: [(s["at"], s["kind"], s["amount"]) for s in figures["started"]]
            for pool, figures in as_run["pools"].items()
            if figures["started"]
        }
        assert replayed == dict(real)
        transaction.set_rollback(True)


@pytest.fixture
def django_settings(settings):
    settings.REBALANCING = dataclasses.replace(settings.REBALANCING, enabled=True)
    return settings

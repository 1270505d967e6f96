"""`manage.py backtest` (issue 25): the as-run candidate replays a simulated day into the same
operations and end balances as the day really had; a wider band starts fewer operations; a
candidate that does not rebalance runs out of stock; the command's table, JSON and page; bad
input is named and changes nothing. The day is written once for the module (through the real
store, projection and trigger: `tests/operations/backtest_day.py`)."""

from __future__ import annotations

import dataclasses
import io
import json
from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from django.conf import settings as django_settings
from django.core.management import CommandError, call_command
from django.db import transaction
from django.test import override_settings

from inventory.domain import market_clock
from inventory.domain.candidates import as_run, parse_candidate
from inventory.models import Event, InventoryPool
from inventory.store import aggregate_execute
from operations.backtest import (
    TIMINGS,
    BacktestRequest,
    _pass,
    backtest_run,
    jsonable,
    model_build,
    settings_at,
)
from tests.operations.backtest_day import DAY, SECONDS, simulated_day

ONE_DAY = timedelta(days=1)

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def day(django_db_setup, django_db_blocker):
    """One simulated day (120 fills, an audited band change half-way), rolled back after."""
    enabled = dataclasses.replace(django_settings.REBALANCING, enabled=True)
    with (
        django_db_blocker.unblock(),
        override_settings(REBALANCING=enabled),
        transaction.atomic(),
    ):
        built = simulated_day(fills=120)
        built.pools = {
            row.key: (
                row.onchain_available,
                row.onchain_inflight,
                row.offchain_available,
                row.offchain_inflight,
            )
            for row in InventoryPool.objects.all()
        }
        yield built
        transaction.set_rollback(True)


def run(day, *candidates: str, pools=None, share_runs=True) -> dict:
    return jsonable(
        backtest_run(
            BacktestRequest(
                start=day.start,
                end=day.end,
                candidates=tuple(parse_candidate(c) for c in candidates),
                pools=pools,
            ),
            share_runs=share_runs,
        )
    )


def entry(report: dict, name: str) -> dict:
    [found] = [c for c in report["candidates"] if c["name"] == name]
    return found


def started(figures: dict) -> list[tuple[str, Decimal]]:
    return [(s["kind"], Decimal(s["amount"])) for s in figures["started"]]


def test_as_run_reproduces_the_days_operations_and_its_end_balances(day):
    real: dict[str, list[tuple[str, Decimal]]] = defaultdict(list)
    for operation in day.operations:
        real[operation.pool].append((str(operation.kind), operation.amount))
    assert {"AAPL", "USDC"} <= real.keys()
    assert len(day.operations) >= 6
    report = run(day)
    as_run = entry(report, "as-run")
    for pool, operations in real.items():
        figures = as_run["pools"][pool]
        # Same kinds, same order, same amounts (the modelled times are the recorded ones).
        assert started(figures) == operations, pool
        assert sum(figures["operations"].values()) == len(operations)
        balances = figures["end_balances"]
        assert (
            Decimal(balances["onchain_available"]),
            Decimal(balances["onchain_inflight"]),
            Decimal(balances["offchain_available"]),
            Decimal(balances["offchain_inflight"]),
        ) == day.pools[pool]
    # The real entry counts what the log shows; its time out of band matches within seconds
    # (the real operations' inflight begins one second after the trigger's decision).
    real_entry = entry(report, "real")
    assert real_entry["real"] is True
    for pool in real:
        modelled, really = as_run["pools"][pool], real_entry["pools"][pool]
        assert modelled["operations"] == really["operations"]
        assert abs(modelled["time_out_of_band_s"] - really["time_out_of_band_s"]) <= 2 * len(
            real[pool]
        )
        assert modelled["largest_deviation"] == really["largest_deviation"]
    # The model is the day's own timing.
    for kind, seconds in SECONDS.items():
        if kind in report["model"] and not report["model"][kind]["assumed"]:
            assert report["model"][kind]["median_s"] == seconds + 1  # plus the queue's second


def test_as_run_follows_the_audited_band_change(day):
    as_run = entry(run(day, pools=frozenset({"AAPL"})), "as-run")
    bands = as_run["pools"]["AAPL"]["chart"]["bands"]
    assert [(lower, upper) for _, lower, upper in bands] == [(0.4, 0.6), (0.42, 0.58)]
    assert set(as_run["pools"]) == {"AAPL"}  # --pools


def test_a_wider_band_starts_fewer_operations(day):
    report = run(
        day,
        "narrow:equity_deviation=0.04,usdc_deviation=0.04",
        "wide:equity_deviation=0.25,usdc_deviation=0.25",
    )
    counts = {
        name: sum(sum(f["operations"].values()) for f in entry(report, name)["pools"].values())
        for name in ("narrow", "as-run", "wide")
    }
    assert counts["narrow"] > counts["as-run"] > counts["wide"]
    # The narrow band moves more.
    narrow, wide = entry(report, "narrow")["pools"]["AAPL"], entry(report, "wide")["pools"]["AAPL"]
    assert Decimal(narrow["volume"]) > Decimal(wide["volume"])


def test_median_and_p90_runs_shared_report_what_they_report_run_apart(day):
    candidates = ("narrow:equity_deviation=0.04,usdc_deviation=0.04", "idle:paused=true")
    shared = run(day, *candidates)
    apart = run(day, *candidates, share_runs=False)
    assert shared["candidates"] == apart["candidates"]
    assert sum(sum(f["operations"].values()) for f in entry(shared, "narrow")["pools"].values())
    # Three candidates: six runs apart; shared, one world each while their runs agree.
    assert apart["worlds_run"] == 6
    assert 3 <= shared["worlds_run"] <= 6


def test_a_worker_process_without_the_real_fold_models_the_same_worlds(day):
    """A worker that does not fold reality skips (undecoded) the events no world needs: the
    day's snapshots and operation events. Its worlds are those of the pass that folds all."""
    candidates = (parse_candidate("narrow:equity_deviation=0.04,usdc_deviation=0.04"), as_run())
    request = BacktestRequest(start=day.start, end=day.end, candidates=candidates)
    base = settings_at(day.start)
    built = model_build(day.end)
    models = {timing: built[timing] for timing in TIMINGS}
    everything = _pass(request, base, models, with_reality=True)
    worker = _pass(request, base, models, with_reality=False)
    assert "reality" not in worker
    assert jsonable(worker["worlds"]) == jsonable(everything["worlds"])
    assert worker["events"] == everything["events"]
    started = entry(run(day), "as-run")["pools"]
    assert any(figures["started"] for figures in started.values())


def test_a_candidate_that_never_rebalances_runs_out_of_stock(settings):
    """A day of mostly onchain buys: paused, the onchain USDC runs out and the fills it could
    not pay are missed (not applied, counted, the pool stocked out until the next fill)."""
    settings.REBALANCING = dataclasses.replace(settings.REBALANCING, enabled=True)
    short = simulated_day(
        fills=40, drift=0.45, mid_day_deviation=None, symbols=("MSFT",), start=DAY + ONE_DAY
    )
    report = run(short, "idle:paused=true", pools=frozenset({"MSFT", "USDC"}))
    idle = entry(report, "idle")["pools"]
    assert all(not f["operations"] for f in idle.values())
    assert idle["USDC"]["missed_fills"] > 0 and idle["USDC"]["stockout_s"] > 0
    # A missed fill moves neither leg: the tokens it would have bought are not credited.
    balances = idle["MSFT"]["end_balances"]
    assert Decimal(balances["onchain_available"]) < 60 + 6 * 40 - 6 * idle["USDC"]["missed_fills"]
    assert Decimal(idle["USDC"]["end_balances"]["onchain_available"]) >= 0


def test_the_command_prints_a_table_json_and_writes_a_self_contained_page(day, tmp_path):
    out = io.StringIO()
    page = tmp_path / "backtest.html"
    arguments = ["--from", day.start.isoformat(), "--to", day.end.isoformat()]
    call_command(
        "backtest",
        *arguments,
        "--candidate",
        "wide:equity_deviation=0.25",
        "--html",
        str(page),
        stdout=out,
    )
    text = out.getvalue()
    assert "as-run" in text and "wide" in text and "real" in text and "AAPL" in text
    html = page.read_text()
    assert html.count("<svg") == 2 and "<polyline" in html  # AAPL and USDC
    assert "<script" not in html and "href=" not in html and "src=" not in html
    out = io.StringIO()
    call_command("backtest", *arguments, "--candidate", "wide:equity_deviation=0.25", "--json",
                 stdout=out)  # fmt: skip
    listed = json.loads(out.getvalue())
    assert [c["name"] for c in listed] == ["as-run", "wide", "real"]
    assert set(listed[0]["pools"]["AAPL"]["operations"]) <= {"mint", "redemption"}
    assert "p90" in listed[0]["pools"]["AAPL"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--candidate", "wide:equity_deviation=-1"], "equity_deviation='-1': must be >= 0"),
        (["--candidate", "wide"], "expected NAME:key=value"),
        (["--candidate", "as-run:usdc_cap=5"], "is the settings in force"),
        (["--pools", "AAPL,usdc"], "pools="),
    ],
)
def test_bad_input_is_named_and_changes_nothing(day, arguments, message):
    before = Event.objects.count()
    with pytest.raises(CommandError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call_command(
            "backtest", "--from", day.start.isoformat(), "--to", day.end.isoformat(), *arguments
        )
    assert Event.objects.count() == before


def test_times_must_be_ordered_and_carry_a_zone(day):
    with pytest.raises(CommandError, match="must be after --from"):
        call_command("backtest", "--from", day.end.isoformat(), "--to", day.start.isoformat())
    with pytest.raises(CommandError, match="time zone"):
        call_command("backtest", "--from", "2026-03-02T14:00", "--to", day.end.isoformat())


def test_equity_operations_wait_for_the_recorded_open_and_usdc_does_not(settings):
    """The log's market clock (`MarketClockRead`): while it says closed, a candidate starts no
    equity operation (as the service's trigger would not); USDC moves go on; at the recorded
    open the held operation starts on the next fill. The day's own trigger ran with no clock
    (always open), so the real operations show what the closed market held back."""
    settings.REBALANCING = dataclasses.replace(settings.REBALANCING, enabled=True)
    start = DAY + 2 * ONE_DAY
    opens = start + timedelta(seconds=200)
    read_at = start - timedelta(hours=2)
    aggregate_execute(
        spec=market_clock.SPEC,
        aggregate_id=market_clock.VENUE,
        command=market_clock.RecordClock(
            is_open=False,
            next_open=opens,
            next_close=opens + timedelta(hours=6, minutes=30),
            fetched_at=read_at,
        ),
        now=read_at,
    )
    day = simulated_day(
        fills=40, drift=0.45, mid_day_deviation=None, symbols=("MSFT",), start=start
    )
    report = run(day, pools=frozenset({"MSFT", "USDC"}))

    def times(name: str, pool: str) -> list[datetime]:
        figures = entry(report, name)["pools"][pool]
        return [datetime.fromisoformat(s["at"]) for s in figures["started"]]

    assert any(at < opens for at in times("real", "MSFT"))  # open all day for the live trigger
    modelled = times("as-run", "MSFT")
    assert modelled and all(at >= opens for at in modelled)
    assert any(at < opens for at in times("as-run", "USDC"))

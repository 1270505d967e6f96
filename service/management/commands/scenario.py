"""A scenario of the simulator's library (`venues/sim/scenarios/`): its flow, or its log."""

from __future__ import annotations

import json
import sqlite3
import sys
from collections.abc import Iterable, Iterator
from contextlib import closing, nullcontext
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from venues.sim.scenarios import (
    DAY_START,
    SCENARIOS,
    Scenario,
    UnknownScenario,
    market_flow,
    opening_balances,
    scenario_get,
)

EVENT_COLUMNS = (
    "id",
    "aggregate_type",
    "aggregate_id",
    "sequence",
    "event_type",
    "event_version",
    "payload",
    "metadata",
    "recorded_at",
)
BATCH = 500


class Command(BaseCommand):
    help = (
        "A scenario of the simulator's library (calm, trending, one-sided, gas-spike, "
        "slow-alpaca; with no NAME: the list). --flow FILE writes its market flow (fills and "
        "hedges, same seed same records) as `manage.py ingest` JSON Lines; --record plays the "
        "flow through the service's ingest into this database (opening balances as a venue "
        "snapshot first; seconds for --short); --simulate runs the simulated day with the desk "
        "playing the flow (chains, venue, service and workers) on a fresh SQLite file (--db). "
        "--out FILE writes the resulting event log as JSON Lines."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", nargs="?", help="the scenario (none: list them)")
        parser.add_argument("--seed", type=int, default=None, help="instead of its own seed")
        parser.add_argument(
            "--short", action="store_true", help="the short variant (a few hundred events)"
        )
        parser.add_argument("--flow", metavar="FILE", help="write the market flow (- : stdout)")
        parser.add_argument(
            "--record", action="store_true", help="play the flow into this database"
        )
        parser.add_argument(
            "--simulate", action="store_true", help="run the simulated day with the flow"
        )
        parser.add_argument("--db", help="--simulate: the fresh SQLite file of the day's log")
        parser.add_argument("--http", default="127.0.0.1:8000", help="--simulate: HOST:PORT")
        parser.add_argument("--out", metavar="FILE", help="write the event log as JSON Lines")
        parser.add_argument("--json", action="store_true", help="print the summary as JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        name = options["name"]
        if name is None:
            self._list(as_json=options["json"])
            return
        try:
            scenario = scenario_get(name, seed=options["seed"])
        except UnknownScenario as error:
            raise CommandError(str(error)) from None
        modes = [m for m in ("record", "simulate") if options[m]]
        if len(modes) > 1:
            raise CommandError("--record and --simulate: choose one")
        if not modes and options["flow"] is None:
            raise CommandError(
                f"scenario {name}: say what to do (--flow FILE, --record or --simulate)"
            )
        if options["out"] and not modes:
            raise CommandError("--out: the log comes from --record or --simulate")
        short = options["short"]
        summary: dict[str, Any] = {
            "scenario": scenario.name,
            "seed": scenario.seed,
            "short": short,
        }
        if options["flow"] is not None:
            records = market_flow(scenario, short=short)
            self._write_lines(options["flow"], records)
            summary["flow_records"] = len(records)
        if options["record"]:
            summary.update(scenario_record(scenario, short=short))
            if options["out"]:
                summary["events_written"] = self._export_database(options["out"])
        if options["simulate"]:
            summary.update(self._simulate(scenario, options))
        if options["json"]:
            self.stdout.write(json.dumps(summary, indent=2, default=str))
        else:
            self.stdout.write(", ".join(f"{key} {value}" for key, value in summary.items()))

    def _list(self, *, as_json: bool) -> None:
        rows = [
            {
                "name": s.name,
                "title": s.title,
                "seed": s.seed,
                "symbols": list(s.symbols),
                "steps": s.steps,
                "short_steps": s.short_steps,
            }
            for s in SCENARIOS.values()
        ]
        if as_json:
            self.stdout.write(json.dumps(rows, indent=2))
            return
        for row in rows:
            self.stdout.write(
                f"{row['name']:<12} seed {row['seed']:<3} {row['steps']} steps "
                f"(--short {row['short_steps']}): {row['title']}"
            )

    def _write_lines(self, target: str, rows: Iterable[dict[str, Any]]) -> int:
        count = 0
        handle: IO[str]
        with (
            nullcontext(sys.stdout) if target == "-" else open(target, "w", encoding="utf-8")
        ) as handle:
            for row in rows:
                handle.write(json.dumps(row, default=str, sort_keys=True) + "\n")
                count += 1
        return count

    def _export_database(self, target: str) -> int:
        from inventory.models import Event

        rows = (
            {column: getattr(event, column) for column in EVENT_COLUMNS}
            for event in Event.objects.order_by("id").iterator(chunk_size=2000)
        )
        return self._write_lines(target, rows)

    def _simulate(self, scenario: Scenario, options: dict[str, Any]) -> dict[str, Any]:
        from venues.sim.day import DayOptions, DayRefused, SimulatedDay

        if not options["db"]:
            raise CommandError("--simulate: name the fresh SQLite file of the day's log (--db)")
        host, _, port = options["http"].rpartition(":")
        if not host or not port.isdigit():
            raise CommandError(f"--http {options['http']!r}: expected HOST:PORT")
        day = SimulatedDay(
            DayOptions(
                symbols=scenario.symbols,
                seed=scenario.seed,
                db_path=options["db"],
                http=options["http"],
                scenario=scenario.name,
                short=options["short"],
            ),
            out=lambda text: (self.stdout.write(text), self.stdout.flush()),
        )
        try:
            code = day.run()
        except DayRefused as error:
            raise CommandError(str(error)) from None
        result: dict[str, Any] = {"db": options["db"], "checks_passed": code == 0}
        if options["out"]:
            result["events_written"] = self._write_lines(
                options["out"], sqlite_events(Path(options["db"]))
            )
        if code != 0:
            self.stderr.write("the simulated day failed an end-of-day check (see above)")
        return result


def sqlite_events(path: Path) -> Iterator[dict[str, Any]]:
    """The events of a simulated day's SQLite file, in id order."""
    with closing(sqlite3.connect(path)) as db:
        cursor = db.execute(
            f"SELECT {', '.join(EVENT_COLUMNS)} FROM inventory_event ORDER BY id"  # noqa: S608
        )
        for row in cursor:
            item = dict(zip(EVENT_COLUMNS, row, strict=True))
            for column in ("payload", "metadata"):
                item[column] = json.loads(item[column])
            yield item


def scenario_record(scenario: Scenario, *, short: bool) -> dict[str, Any]:
    """Play the scenario's flow through the service's ingest into this database: the
    scenario's assets registered when missing, its opening balances as one venue snapshot,
    then the fills and hedges in order, in batches (the trigger runs on every batch as it does
    for the HTTP API). Returns what was recorded."""
    from inventory.ingest import LineRejected, parse_line, refusal_reason
    from inventory.models import Asset, Event
    from inventory.services import asset_register, records_ingest, snapshot_record
    from operations.models import Operation
    from venues.sim.scenarios import scenario_assets

    before_events = Event.objects.count()
    before_operations = Operation.objects.count()
    for asset in scenario_assets(scenario):
        if not Asset.objects.filter(base_symbol=asset["base_symbol"]).exists():
            asset_register(changed_by=f"scenario {scenario.name}", **asset)
    balances = opening_balances(scenario)
    snapshot_record(
        fetched_at=DAY_START - timedelta(seconds=1),
        onchain_equity=balances["onchain_equity"],
        offchain_equity=balances["offchain_equity"],
        onchain_cash=balances["onchain_cash"],
        offchain_cash=balances["offchain_cash"],
        offchain_usdc=balances["offchain_usdc"],
        offchain_cash_withdrawable=balances["offchain_cash"],
        onchain_block=0,
    )
    records = market_flow(scenario, short=short)
    refused: list[str] = []
    for start in range(0, len(records), BATCH):
        batch = records[start : start + BATCH]
        parsed = []
        for number, record in enumerate(batch, start=start + 1):
            try:
                parsed.append(parse_line(json.dumps(record)))
            except LineRejected as error:
                raise CommandError(f"flow record {number}: {error}") from None
        for outcome in records_ingest(records=parsed):
            if outcome.error is not None:
                reason = refusal_reason(outcome.error)
                refused.append(f"record {start + outcome.index + 1}: {reason}")
    if refused:
        raise CommandError(f"{len(refused)} flow record(s) refused: {'; '.join(refused[:5])}")
    return {
        "flow_records": len(records),
        "events_recorded": Event.objects.count() - before_events,
        "operations_started": Operation.objects.count() - before_operations,
    }

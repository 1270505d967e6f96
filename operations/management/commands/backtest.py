"""Replay a period's market flow under candidate settings (issue 25).

manage.py backtest --from 2026-12-01T00:00Z --to 2026-12-02T00:00Z \\
    [--pools AAPL,USDC] --candidate wide:equity_deviation=0.3 ... [--json] [--html FILE]

The settings in force over the period are always one candidate, `as-run`; the figures of what
really happened come last (`real`). See `operations.backtest`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from rich.console import Console

from inventory.domain.values import InvalidValue
from operations.backtest import backtest_request, backtest_run, jsonable
from operations.backtest_render import html_page, table_print


class Command(BaseCommand):
    help = "Replay a period's market flow under candidate settings and compare with reality."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--from", dest="start", required=True, help="ISO-8601 time")
        parser.add_argument("--to", dest="end", required=True, help="ISO-8601 time")
        parser.add_argument("--pools", default=None, help="pool keys, e.g. AAPL,USDC (all)")
        parser.add_argument(
            "--candidate",
            action="append",
            default=[],
            help="NAME:key=value,... (settings in lower case, per pool as AAPL.key=value)",
        )
        parser.add_argument("--json", action="store_true", help="print the report as JSON")
        parser.add_argument("--html", default=None, help="write a self-contained HTML page")
        parser.add_argument(
            "--workers", type=int, default=None, help="processes (default: one per candidate)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            request = backtest_request(
                options["start"], options["end"], options["pools"], options["candidate"]
            )
            if options["workers"] is not None and options["workers"] < 1:
                raise InvalidValue("workers", options["workers"], "must be at least 1")
        except InvalidValue as error:
            raise CommandError(str(error)) from None
        report = jsonable(backtest_run(request, workers=options["workers"]))
        if options["html"]:
            Path(options["html"]).write_text(html_page(report), encoding="utf-8")
        if options["json"]:
            self.stdout.write(json.dumps(report["candidates"], indent=2))
            return
        table_print(report, Console(file=self.stdout, width=200))
        if options["html"]:
            self.stdout.write(f"page written to {options['html']}")

"""Read the venues now, record the snapshots, print the drift per pool and venue."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from rich.console import Console
from rich.table import Table

from service.reconcile import reconcile_run


class Command(BaseCommand):
    help = (
        "Read the venues now (Base vaults pinned to one block, Alpaca positions and cash), "
        "record the balance snapshots and print the drift per pool and venue: projected, "
        "observed, difference. Exit 1 when a venue could not be read."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="print JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.REBALANCING.enabled:
            raise CommandError("rebalancing is not configured (REBALANCING_ENABLED is false)")
        report = reconcile_run()
        block = report.readings.onchain.block_number if report.readings.onchain else None
        if options["json"]:
            data = {
                "fetched_at": report.readings.started_at.isoformat(),
                "block_number": block,
                "drift": [drift.as_dict() for drift in report.drifts],
                "failures": report.failures,
                "events_recorded": report.events_recorded,
            }
            self.stdout.write(json.dumps(data, indent=2))
        else:
            table = Table(title=f"drift (onchain block {block})")
            for column in ("pool", "venue", "projected", "inflight", "observed", "difference"):
                table.add_column(column, justify="left" if column in ("pool", "venue") else "right")
            for drift in report.drifts:
                table.add_row(
                    drift.pool,
                    drift.venue,
                    "never observed" if drift.projected is None else str(drift.projected),
                    str(drift.inflight),
                    str(drift.observed),
                    str(drift.difference),
                )
            Console(file=self.stdout, width=120).print(table)
            self.stdout.write(f"{report.events_recorded} snapshot event(s) recorded")
        if report.failures:
            raise CommandError(
                "; ".join(
                    f"venue {venue} not read: {error}" for venue, error in report.failures.items()
                )
            )

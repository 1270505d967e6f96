"""Replay the event log into the inventory pools and report what differed."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from inventory.models import Event
from inventory.services import inventory_rebuild


class Command(BaseCommand):
    help = (
        "Replay the whole event log with the projection's pure functions, report every "
        "difference from the stored pools (pool, field, stored, rebuilt), then write the "
        "rebuilt rows. With --check only report, and exit 1 on any difference."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--check", action="store_true", help="report only; exit code 1 on difference"
        )
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def handle(self, *args: Any, **options: Any) -> None:
        show_progress = not options["no_progress"]

        def progress(rows: Iterable[Event], total: int) -> Iterable[Event]:
            return tqdm(rows, total=total, unit="event", file=sys.stderr, disable=not show_progress)

        differences = inventory_rebuild(write=not options["check"], progress=progress)
        for difference in differences:
            self.stdout.write(
                f"{difference.pool}\t{difference.field}\t"
                f"stored={difference.stored!s}\trebuilt={difference.rebuilt!s}"
            )
        if not differences:
            self.stdout.write("inventory pools match the event log")
            return
        if options["check"]:
            raise CommandError(
                f"{len(differences)} difference(s) between the pools and the event log",
                returncode=1,
            )
        self.stdout.write(f"rewrote the pools: {len(differences)} difference(s) fixed")

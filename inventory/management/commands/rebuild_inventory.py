"""Replay the event log into the inventory pools and report what differed; `--check` also
checks the log's own integrity (`inventory.rebuild.LogProblem`)."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from inventory.rebuild import LogRow, inventory_rebuild
from inventory.services import aggregate_states_check


class Command(BaseCommand):
    help = (
        "Replay the whole event log, report every difference from the stored pools, their "
        "remembered onchain fill legs and the chain head (pool, field, stored, rebuilt), then "
        "write the rebuilt rows. With --check only report (folding with the pure reference "
        "fold, and checking the log itself: a trade id in two fill events, a fill above the "
        "highest chain head seen), and exit 1 on any difference or problem."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--check", action="store_true", help="report only; exit code 1 on difference"
        )
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")
        parser.add_argument(
            "--states",
            action="store_true",
            help="also fold every aggregate's log and compare (or, without --check, rewrite) "
            "its cached state",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        show_progress = not options["no_progress"]

        def progress(rows: Iterable[LogRow], total: int) -> Iterable[LogRow]:
            return tqdm(rows, total=total, unit="event", file=sys.stderr, disable=not show_progress)

        differences: list[Any] = list(
            inventory_rebuild(write=not options["check"], progress=progress)
        )
        for difference in differences:
            self.stdout.write(
                f"{difference.pool}\t{difference.field}\t"
                f"stored={difference.stored!s}\trebuilt={difference.rebuilt!s}"
            )
        if not differences:
            self.stdout.write("inventory pools match the event log")
        if options["states"]:
            states = aggregate_states_check(write=not options["check"])
            for state in states:
                self.stdout.write(str(state))
            if not states:
                self.stdout.write("cached aggregate states match the event log")
            differences.extend(states)
        if not differences:
            return
        if options["check"]:
            raise CommandError(
                f"{len(differences)} difference(s) between the pools and the event log",
                returncode=1,
            )
        self.stdout.write(f"rewrote the pools: {len(differences)} difference(s) fixed")

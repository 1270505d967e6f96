"""Run the rebalancer: checks, summary, cluster, due loop, venue polls (service.supervisor)."""

from __future__ import annotations

import re
import signal
from argparse import ArgumentTypeError
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from service.supervisor import PreflightFailed, Service, ServiceOptions

_HOST_PORT = re.compile(r"^(?P<host>[^\s:]*|\[[0-9a-fA-F:]+\]):(?P<port>\d{1,5})$")


def _host_port(value: str) -> str:
    match = _HOST_PORT.match(value)
    if match is None or not 0 <= int(match["port"]) <= 65535:
        raise CommandError(f"--http {value!r}: expected HOST:PORT, e.g. 127.0.0.1:8000")
    return value


class Command(BaseCommand):
    help = (
        "Run the rebalancer: pre-start checks, start-up summary, re-enqueue interrupted "
        "operations, then supervise the django-q2 cluster, the due-operations loop and the venue "
        "polls until SIGINT/SIGTERM (running steps finish, exit 0)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--workers", type=int, default=None, help="cluster workers (Q_WORKERS)")
        parser.add_argument(
            "--http", default=None, metavar="HOST:PORT", help="also serve the API and the admin"
        )
        parser.add_argument(
            "--once",
            action="store_true",
            help="one venue poll, one sweep, advance what is due, then exit (for cron)",
        )
        parser.add_argument(
            "--grace-s",
            type=float,
            default=None,
            help="how long running steps may finish at shutdown (SHUTDOWN_GRACE_S)",
        )
        simulate = parser.add_argument_group(
            "a simulated trading day (venues/sim/day.py; no credentials needed)"
        )
        simulate.add_argument(
            "--simulate",
            action="store_true",
            help="start the simulated venue and desk and run the service against them",
        )
        simulate.add_argument("--symbols", default="AAPL,TSLA,NVDA", help="simulated equities")
        simulate.add_argument(
            "--duration", type=float, default=None, help="seconds (default: until Ctrl-C)"
        )
        simulate.add_argument("--seed", type=int, default=1, help="same seed, same day")
        simulate.add_argument(
            "--db", default=None, help="SQLite file (default: a fresh one per run, printed)"
        )
        simulate.add_argument(
            "--chaos", action="store_true", help="kill workers and inject venue faults"
        )
        simulate.add_argument(
            "--until-covered",
            action="store_true",
            help="end the day once each kind of operation completed (monitor mode: was proposed)",
        )
        simulate.add_argument(
            "--gas-spike",
            type=_gwei,
            default=None,
            metavar="GWEI",
            help="Ethereum's base fee until the cost gate defers a USDC move, then 1 gwei",
        )
        simulate.add_argument(
            "--status-every",
            type=float,
            default=30.0,
            metavar="SECONDS",
            help="seconds between the day's status lines (default 30)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["simulate"]:
            self._simulate(options)
            return
        if options["workers"] is not None and options["workers"] < 1:
            raise CommandError(f"--workers {options['workers']}: must be at least 1")
        service = Service(
            ServiceOptions(
                workers=options["workers"],
                http=_host_port(options["http"]) if options["http"] else None,
                once=options["once"],
                grace_s=options["grace_s"],
            ),
            out=self._line,
        )
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: service.request_stop())
        try:
            service.run()
        except PreflightFailed as error:
            raise CommandError(str(error)) from None

    def _simulate(self, options: dict[str, Any]) -> None:
        from venues.sim.day import DayOptions, DayRefused, SimulatedDay

        symbols = tuple(s.strip().upper() for s in options["symbols"].split(",") if s.strip())
        if not symbols:
            raise CommandError(f"--symbols {options['symbols']!r}: name at least one equity")
        if options["duration"] is not None and options["duration"] <= 0:
            raise CommandError(f"--duration {options['duration']}: must be > 0 seconds")
        if options["status_every"] <= 0:
            raise CommandError(f"--status-every {options['status_every']}: must be > 0 seconds")
        day = SimulatedDay(
            DayOptions(
                symbols=symbols,
                duration_s=options["duration"],
                seed=options["seed"],
                db_path=options["db"],
                http=_host_port(options["http"] or "127.0.0.1:8000"),
                chaos=options["chaos"],
                until_covered=options["until_covered"],
                gas_spike_gwei=options["gas_spike"],
                status_every_s=options["status_every"],
            ),
            out=self._line,
        )
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: day.stop())
        try:
            code = day.run()
        except DayRefused as error:
            raise CommandError(str(error)) from None
        if code != 0:
            raise CommandError("the simulated day failed an end-of-day check (see above)")

    def _line(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()


def _gwei(text: str) -> Decimal:
    """--gas-spike: a gas price in gwei, more than 0 and at most 100,000."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        value = None
    if value is None or not value.is_finite() or not 0 < value <= 100_000:
        raise ArgumentTypeError(f"{text!r}: must be a number of gwei above 0, at most 100000")
    return value

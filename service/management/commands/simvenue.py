"""Run the simulated venue (two local chains + Alpaca/Iris HTTP server) until Ctrl-C."""

from __future__ import annotations

import dataclasses
import shlex
import threading
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from venues.sim.venue import SimKnobs, SimVenue


def _parse_knob(text: str) -> tuple[str, Any]:
    name, sep, raw = text.partition("=")
    fields = {f.name: f for f in dataclasses.fields(SimKnobs)}
    if not sep or name not in fields:
        raise CommandError(f"--knob {text!r}: expected NAME=VALUE with NAME in {sorted(fields)}")
    default = getattr(SimKnobs(), name)
    try:
        if name == "whitelist_status":
            return name, None if raw.lower() in ("", "none", "absent") else raw.upper()
        if isinstance(default, str):
            return name, raw
        if isinstance(default, bool):
            return name, raw.lower() in ("1", "true", "yes", "on")
        if isinstance(default, Decimal):
            return name, Decimal(raw)
        if isinstance(default, int):
            return name, int(raw)
        return name, float(raw)
    except (ValueError, InvalidOperation) as exc:
        raise CommandError(f"--knob {text!r}: invalid value for {name}: {exc}") from exc


def _parse_position(text: str, *, option: str = "--position") -> tuple[str, Decimal]:
    symbol, sep, raw = text.partition("=")
    try:
        if not sep or not symbol:
            raise ValueError("expected SYMBOL=DECIMAL")
        return symbol, Decimal(raw)
    except (ValueError, InvalidOperation) as exc:
        raise CommandError(f"{option} {text!r}: {exc}") from exc


class Command(BaseCommand):
    help = (
        "Start the simulated venue (Ethereum-sim and Base-sim anvil chains with CCTP, USDC, "
        "vault and equity tokens, plus the Alpaca and Circle Iris HTTP endpoints) and print the "
        "environment to point the service at it. Runs until Ctrl-C."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=0, help="HTTP port (0: any free port)")
        parser.add_argument(
            "--symbols", default="AAPL", help="comma-separated underlying equities (AAPL,TSLA)"
        )
        parser.add_argument(
            "--position", action="append", default=[], help="brokerage position SYMBOL=QTY"
        )
        parser.add_argument("--cash", default="0", help="brokerage cash in USD")
        parser.add_argument(
            "--price",
            action="append",
            default=[],
            help="price market orders fill at, SYMBOL=USD (default: knob default_price_usd)",
        )
        parser.add_argument(
            "--knob", action="append", default=[], help="SimKnobs field NAME=VALUE (repeatable)"
        )
        parser.add_argument(
            "--run-for-s", type=float, default=0.0, help="stop after this many seconds (0: never)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        knobs = SimKnobs(**dict(_parse_knob(k) for k in options["knob"]))
        symbols = tuple(s.strip() for s in options["symbols"].split(",") if s.strip())
        positions = dict(_parse_position(p) for p in options["position"])
        prices = dict(_parse_position(p, option="--price") for p in options["price"])
        for symbol, price in prices.items():
            if not price.is_finite() or price <= 0:
                raise CommandError(f"--price {symbol}={price}: must be a price > 0")
        try:
            cash = Decimal(options["cash"])
        except InvalidOperation as exc:
            raise CommandError(f"--cash {options['cash']!r}: not a decimal") from exc
        venue = SimVenue(
            knobs=knobs,
            equity_symbols=symbols,
            positions=positions,
            cash_usd=cash,
            host=options["host"],
            port=options["port"],
        )
        with venue:
            for symbol, price in prices.items():
                venue.server.set_price(symbol, price)
            self.stdout.write("# simulated venue is up; export these to run the service:")
            for name, value in sorted(venue.env().items()):
                self.stdout.write(f"export {name}={shlex.quote(value)}")
            self.stdout.write("# Ctrl-C to stop")
            self.stdout.flush()
            stop = threading.Event()
            try:
                if options["run_for_s"] > 0:
                    stop.wait(options["run_for_s"])
                else:
                    while not stop.wait(3600):
                        pass
            except KeyboardInterrupt:
                self.stdout.write("# stopping")

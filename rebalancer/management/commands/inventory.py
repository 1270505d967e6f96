"""The inventory pools at a glance: balances per venue, ratio, band, state, active operation."""

from __future__ import annotations

import io
import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from rich.console import Console
from rich.table import Table

from rebalancer.api import pool_body
from service.selectors import pools_overview


class Command(BaseCommand):
    help = (
        "A table of the inventory pools (each equity and USDC): onchain and offchain "
        "available and inflight, the onchain ratio, its band, the state and the active "
        "operation. --json prints the same data as GET /api/v1/pools."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="print JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        pools = [pool_body(pool) for pool in pools_overview()]
        if options["json"]:
            self.stdout.write(json.dumps(pools, indent=2))
            return
        if not pools:
            self.stdout.write("no inventory pools yet (no fill or balance snapshot recorded)")
            return
        table = Table(
            "pool",
            "onchain avail",
            "onchain inflight",
            "offchain avail",
            "offchain inflight",
            "ratio",
            "band",
            "state",
            "active operation",
        )
        for pool in pools:
            operation = pool["active_operation"]
            table.add_row(
                pool["key"],
                pool["onchain_available"] if pool["onchain_observed"] else "-",
                pool["onchain_inflight"],
                pool["offchain_available"] if pool["offchain_observed"] else "-",
                pool["offchain_inflight"],
                pool["ratio"] or "-",
                f"{pool['band_lower']}-{pool['band_upper']}",
                pool["state"],
                (
                    f"#{operation['id']} {operation['kind']} {operation['amount']} "
                    f"[{operation['status']}]"
                    if operation
                    else ""
                ),
            )
        buffer = io.StringIO()
        Console(file=buffer, width=180).print(table)
        self.stdout.write(buffer.getvalue(), ending="")

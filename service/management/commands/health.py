"""Print the service's health; exit 1 when unhealthy (service.health)."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from service.health import health_report


class Command(BaseCommand):
    help = (
        "Health of the rebalancer: database, cluster heartbeat age, last successful snapshot "
        "age per venue, operations and pools needing attention, market hours. Exit 1 when "
        "unhealthy."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="print JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        report = health_report()
        if options["json"]:
            self.stdout.write(json.dumps(report.as_dict(), indent=2))
        else:
            for check in report.checks:
                mark = "ok  " if check.ok else "FAIL"
                self.stdout.write(f"{mark} {check.name}: {check.detail}")
        if not report.healthy:
            failing = ", ".join(check.name for check in report.checks if not check.ok)
            raise CommandError(f"unhealthy: {failing}")

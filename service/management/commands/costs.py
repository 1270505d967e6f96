"""What rebalancing cost: the ledger summed per UTC day and operation kind."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from operations.costs import costs_report, jsonable


def parse_moment(name: str, text: str | None) -> datetime | None:
    """An ISO-8601 date (00:00 UTC) or datetime with an offset; None when not given."""
    if text is None or text == "":
        return None
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), tzinfo=UTC)
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(
            f"{name}={text!r}: expected a date (2026-03-02) or an ISO-8601 datetime with an offset"
        ) from exc
    if moment.tzinfo is None:
        raise ValueError(f"{name}={text!r}: a datetime needs an offset (e.g. +00:00)")
    return moment


class Command(BaseCommand):
    help = (
        "The realized cost of the operations created in [--from, --to) (dates are 00:00 UTC): "
        "gas (exact native fees, in USD at the price recorded with them), Circle's fee, "
        "Alpaca's withdrawal fee and other venue charges, per UTC day and kind, with the cost "
        "per 10,000 USD moved. --json prints the same data as GET /api/v1/costs."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--from", dest="since", help="date or ISO-8601 datetime")
        parser.add_argument("--to", dest="until", help="date or ISO-8601 datetime (exclusive)")
        parser.add_argument("--json", action="store_true", help="print JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            since = parse_moment("--from", options["since"])
            until = parse_moment("--to", options["until"])
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        if since is not None and until is not None and until <= since:
            raise CommandError(f"--to {until.isoformat()} must be after --from {since.isoformat()}")
        report = costs_report(since=since, until=until)
        if options["json"]:
            self.stdout.write(json.dumps(jsonable(report), indent=2))
            return
        if not report["groups"]:
            self.stdout.write("no operation in that period")
            return
        header = (
            f"{'day':<10} {'kind':<20} {'ops':>4} {'moved USD':>16} {'gas USD':>12} "
            f"{'circle':>10} {'alpaca':>10} {'venue':>10} {'total USD':>12} {'per 10k':>10}"
        )
        self.stdout.write(header)
        for group in [*report["groups"], {"day": "total", "kind": "", **report["total"]}]:
            per = group["cost_per_10k_usd"]
            self.stdout.write(
                f"{group['day']:<10} {group['kind']:<20} {group['operations']:>4} "
                f"{group['moved_usd']:>16.2f} {group['gas_usd']:>12.6f} "
                f"{group['circle_fee_usdc']:>10.6f} {group['alpaca_fee_usdc']:>10.6f} "
                f"{group['venue_costs_usd']:>10.6f} {group['total_usd']:>12.6f} "
                f"{'-' if per is None else f'{per:.4f}':>10}"
            )
        total = report["total"]
        if total["gas_unvalued"] or total["unvalued_moves"]:
            self.stdout.write(
                f"not valued: {total['gas_unvalued']} transaction(s) without an ETH/USD price, "
                f"{total['unvalued_moves']} equity move(s) without a fill price"
            )

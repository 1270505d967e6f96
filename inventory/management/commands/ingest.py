"""Record fills and hedges from a JSON Lines file (or stdin), in batches."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from inventory.ingest import RECORD_TYPES, IngestRecord, LineRejected, parse_line, refusal_reason
from inventory.schemas import MAX_BATCH_FILLS
from inventory.services import records_ingest


@dataclass
class Summary:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)

    def reject(self, line: int, reasons: list[str]) -> None:
        self.rejected.append({"line": line, "reasons": reasons})


class Command(BaseCommand):
    help = (
        "Record the trading side's fills and hedges from JSON Lines (FILE, or - for stdin): "
        f"one record per line with a type ({', '.join(RECORD_TYPES)}) and the HTTP API's "
        "fields. Batches commit in one transaction each; a rejected line changes nothing and "
        "is reported with its number and reasons; exit code 1 when any line was rejected."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="JSON Lines file, or - for standard input")
        parser.add_argument(
            "--batch-size",
            type=int,
            default=MAX_BATCH_FILLS,
            help=f"records per transaction (default {MAX_BATCH_FILLS})",
        )
        parser.add_argument("--json", action="store_true", help="print the summary as JSON")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def handle(self, *args: Any, **options: Any) -> None:
        size = options["batch_size"]
        if not 1 <= size <= 100_000:
            raise CommandError(f"--batch-size {size}: must be between 1 and 100000")
        summary = Summary()
        source, total, owned = self._open(options["file"])
        try:
            lines = tqdm(
                source,
                total=total,
                unit="line",
                file=sys.stderr,
                disable=options["no_progress"],
            )
            batch: list[tuple[int, IngestRecord]] = []
            for number, text in self._numbered(lines):
                try:
                    batch.append((number, parse_line(text)))
                except LineRejected as rejected:
                    summary.reject(number, rejected.reasons)
                if len(batch) >= size:
                    self._record(batch, summary)
                    batch = []
            if batch:
                self._record(batch, summary)
        finally:
            if owned:
                source.close()
        self._report(summary, as_json=options["json"])
        if summary.rejected:
            raise CommandError(f"{len(summary.rejected)} line(s) rejected", returncode=1)

    def _open(self, name: str) -> tuple[IO[Any], int | None, bool]:
        """The lines' source, its line count when known, and whether to close it. Lines are
        read as bytes where possible, so a line that is not UTF-8 is rejected on its own
        (`parse_line` decodes each one) instead of stopping the whole file."""
        if name == "-":
            return getattr(sys.stdin, "buffer", sys.stdin), None, False
        path = Path(name)
        try:
            with path.open("rb") as counting:
                total = sum(1 for _ in counting)
            return path.open("rb"), total, True
        except OSError as error:
            raise CommandError(f"cannot read {name}: {error.strerror}") from None

    @staticmethod
    def _numbered(lines: Any) -> Iterator[tuple[int, str | bytes]]:
        for number, text in enumerate(lines, start=1):
            if text.strip():
                yield number, text

    @staticmethod
    def _record(batch: list[tuple[int, IngestRecord]], summary: Summary) -> None:
        outcomes = records_ingest(records=[record for _, record in batch])
        for (number, _), outcome in zip(batch, outcomes, strict=True):
            if outcome.error is not None:
                summary.reject(number, [refusal_reason(outcome.error)])
            elif outcome.duplicate:
                summary.duplicates += 1
            else:
                summary.accepted += 1

    def _report(self, summary: Summary, *, as_json: bool) -> None:
        rejected = sorted(summary.rejected, key=lambda item: item["line"])
        if as_json:
            body = {
                "accepted": summary.accepted,
                "duplicates": summary.duplicates,
                "rejected": rejected,
            }
            self.stdout.write(json.dumps(body, indent=2))
            return
        self.stdout.write(
            f"accepted {summary.accepted}, duplicates {summary.duplicates}, "
            f"rejected {len(rejected)}"
        )
        for item in rejected:
            self.stdout.write(f"line {item['line']}: {'; '.join(item['reasons'])}")

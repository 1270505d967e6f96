"""What a unique index on trade keys costs as it grows, by the shape of the key (SQLite).

    python bench/key_index.py                          # 1,000,000 keys of history
    python bench/key_index.py --history 2000000 --kinds text,counter

The service's duplicate check is a unique index on (scope, day, key) (`EventKey`). This
measures that index alone, outside the service: a table shaped like `EventKey` with its two
indexes, rows inserted in transactions of `--batch-size` (WAL, synchronous=NORMAL, as the
service runs SQLite), at an empty table and again after `--history` rows. Key shapes:

- `dated`: what the service stores: the day of the trade, then `0x<64 hex>:<log index>` of a
  uniformly random hash; the history is spread over days of `--rows-per-day` and each
  measurement starts a day of its own;
- `text`: the same random text key, every row on one day (the index as it was before days);
- `blob`: the same 32 bytes and log index as a 33-byte blob, one day;
- `int`: the first 8 bytes of the hash as one integer (the shortest possible key), one day;
- `counter`: `0x<64 hex>:0` of a counter (each key lands at the end of the index), one day.

Prints rows per second for each and the ratio after/empty, with the rate of the same rows
into the same table without the unique index (the baseline of this run).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import print_report  # noqa: E402

KINDS = ("dated", "text", "blob", "int", "counter")


def key_of(kind: str) -> Callable[[int], Any]:
    def random_hash(n: int) -> bytes:
        return hashlib.sha256(n.to_bytes(8, "big")).digest()

    if kind in ("dated", "text"):
        return lambda n: "0x" + random_hash(n).hex() + ":0"
    if kind == "blob":
        return lambda n: random_hash(n) + b"\x00"
    if kind == "int":
        return lambda n: int.from_bytes(random_hash(n)[:8], "big", signed=True)
    if kind == "counter":
        return lambda n: "0x" + f"{n:064x}" + ":0"
    raise ValueError(kind)


class KeyTable:
    """A scratch database holding one `EventKey`-shaped table."""

    def __init__(self, directory: Path, kind: str, *, unique: bool, per_day: int) -> None:
        self.path = directory / f"{kind}-{'unique' if unique else 'plain'}.sqlite3"
        self.db = sqlite3.connect(self.path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        column = {"blob": "BLOB", "int": "INTEGER"}.get(kind, "TEXT")
        self.db.execute(
            "CREATE TABLE eventkey (id INTEGER PRIMARY KEY AUTOINCREMENT, scope TEXT, "
            f"day INTEGER, key {column}, event_id INTEGER, aggregate_id TEXT, recorded_at TEXT)"
        )
        if unique:
            self.db.execute("CREATE UNIQUE INDEX eventkey_unique ON eventkey (scope, day, key)")
        self.db.execute("CREATE INDEX eventkey_recorded ON eventkey (scope, recorded_at)")
        self.key = key_of(kind)
        self.rows = 0
        self.per_day = per_day if kind == "dated" else 0
        self.day = 20_000
        self.today = 0  # rows on the current day

    def next_day(self) -> None:
        if self.per_day:
            self.day += 1
            self.today = 0

    def insert(self, count: int) -> None:
        rows = []
        for _ in range(count):
            self.rows += 1
            n = self.rows
            if self.per_day and self.today >= self.per_day:
                self.next_day()
            self.today += 1
            rows.append(
                ("trade", self.day, self.key(n), n, "AAPL", f"2026-01-05T14:30:00.{n:012d}")
            )
        self.db.execute("BEGIN IMMEDIATE")
        self.db.executemany(
            "INSERT INTO eventkey (scope, day, key, event_id, aggregate_id, recorded_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )
        self.db.execute("COMMIT")

    def rate(self, batches: int, size: int) -> float:
        self.next_day()  # a measurement is a day of its own (dated keys)
        started = time.perf_counter()
        for _ in range(batches):
            self.insert(size)
        return batches * size / (time.perf_counter() - started)

    def grow(self, rows: int) -> None:
        while self.rows < rows:
            self.insert(min(10_000, rows - self.rows))

    def close(self) -> None:
        self.db.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)


def measure(directory: Path, kind: str, args: argparse.Namespace, *, unique: bool) -> dict:
    table = KeyTable(directory, kind, unique=unique, per_day=args.rows_per_day)
    try:
        table.insert(args.batch_size)  # the table exists and has a page or two
        empty = table.rate(args.batches, args.batch_size)
        table.grow(args.history)
        later = table.rate(args.batches, args.batch_size)
        return {"empty": empty, "later": later, "rows": table.rows}
    finally:
        table.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", type=int, default=1_000_000, help="rows before measuring")
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument(
        "--rows-per-day", type=int, default=20_000, help="rows a day of `dated` keys"
    )
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated key shapes")
    parser.add_argument(
        "--plain",
        type=int,
        default=None,
        help="accepted as by every benchmark; the baseline here is the same rows and sizes "
        "without the unique index",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.rows_per_day < 1:
        parser.error(f"--rows-per-day: {args.rows_per_day} is not a positive number of rows")
    kinds = [kind for kind in args.kinds.split(",") if kind]
    unknown = [kind for kind in kinds if kind not in KINDS]
    if unknown:
        parser.error(f"--kinds: unknown {unknown}; choose from {', '.join(KINDS)}")
    directory = Path(tempfile.mkdtemp(prefix="rebalancer-keys-"))
    try:
        baseline = measure(directory, "text", args, unique=False)
        results = {kind: measure(directory, kind, args, unique=True) for kind in kinds}
    finally:
        directory.rmdir()
    report: dict[str, Any] = {
        "benchmark": "bench/key_index.py",
        "machine": {
            "cores": os.cpu_count(),
            "cpu": platform.processor() or platform.machine(),
            "system": f"{platform.system()} {platform.release()}",
            "python": platform.python_version(),
            "database": f"SQLite {sqlite3.sqlite_version}",
        },
        "plain inserts (no unique index, random text keys)": (
            f"{baseline['empty']:,.0f} rows/s empty, {baseline['later']:,.0f} after "
            f"{baseline['rows']:,} rows ({baseline['later'] / baseline['empty']:.2f}x)"
        ),
        "unique (scope, day, key)": {
            kind: f"{r['empty']:,.0f} rows/s empty, {r['later']:,.0f} after {r['rows']:,} rows "
            f"({r['later'] / r['empty']:.2f}x; {r['later'] / baseline['later']:.2f}x plain "
            "inserts at the same size)"
            for kind, r in results.items()
        },
        "sizes": f"batches of {args.batch_size}, {args.batches} measured, "
        f"history {args.history:,} rows, dated keys {args.rows_per_day:,} a day",
    }
    title = report.pop("benchmark")
    print_report(title, report, args.json)


if __name__ == "__main__":
    sys.exit(main())

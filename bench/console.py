"""Console pages at scale: server time of each page with N events and M operations.

    python bench/console.py                          # 1,000,000 events, 100,000 operations
    python bench/console.py --events 20000 --operations 2000
    DATABASE_URL=postgres://... python bench/console.py

Builds a fresh database (a temporary SQLite file unless DATABASE_URL is set: that database is
created as `<name>_bench_console`), removed when done, fills it with bulk inserts, then times
each page through Django's test client (the server's work: URL resolution, queries, templates)
as the median of several requests. Prints the figures, the machine and the database. Target:
every page under 300 ms at full size. Not a test: figures only.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_MS = 300.0


def _prepare_database(args: argparse.Namespace) -> str:
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith("postgres"):
        base, _, name = url.rpartition("/")
        bench_url = f"{base}/{name.split('?')[0]}_bench_console"
        os.environ["DATABASE_URL"] = bench_url
        return "postgresql"
    folder = Path(tempfile.mkdtemp(prefix="bench-console-"))
    os.environ["DATABASE_URL"] = f"sqlite:///{folder / 'bench.sqlite3'}"
    return "sqlite"


def _remove_database(vendor: str) -> None:
    """Drop what `_prepare_database` made: the SQLite file (and its WAL files and folder), or
    the PostgreSQL database (at full size, over 600 MB either way)."""
    from django.db import connections

    connections.close_all()
    url = os.environ["DATABASE_URL"]
    if vendor == "postgresql":
        import psycopg

        base, _, name = url.rpartition("/")
        with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        return
    path = Path(url.removeprefix("sqlite:///"))
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.parent.rmdir()


def _setup_django(vendor: str) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rebalancer.settings")
    import django

    if vendor == "postgresql":
        import psycopg

        url = os.environ["DATABASE_URL"]
        base, _, name = url.rpartition("/")
        with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def _fill(events: int, operations: int, progress: bool) -> dict:
    from django.utils import timezone

    from inventory.codec import encode_event
    from inventory.domain import events as ev
    from inventory.models import Event
    from inventory.services import asset_register, snapshot_record
    from operations.models import Operation, OperationKind, OperationStatus

    symbols = ["AAPL", "TSLA", "NVDA"]
    addresses = [
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
        "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
    ]
    for symbol, address in zip(symbols, addresses, strict=True):
        asset_register(
            base_symbol=symbol,
            token_address=address,
            token_symbol="t" + symbol,
            vault_id="0x" + "12" * 32,
            changed_by="bench",
        )
    now = timezone.now()
    snapshot_record(
        fetched_at=now - timedelta(seconds=5),
        onchain_equity={s: Decimal("60") for s in symbols},
        offchain_equity={s: Decimal("40") for s in symbols},
        onchain_cash=Decimal("10000"),
        offchain_cash=Decimal("9000"),
    )
    start = now - timedelta(days=2)
    # The log: fill-shaped events of throwaway aggregates (written in bulk, not through the
    # projection: the pages read the log, they do not replay it).
    sample = ev.OnChainOrderFilled(
        trade_id=ev.TradeId(tx_hash="0x" + "ab" * 32, log_index=1),
        amount=Decimal("1.5"),
        direction=ev.Direction.BUY,
        price_usdc=Decimal("190.25"),
        block_timestamp=now,
        seen_at=now,
    )
    event_type, payload = encode_event(sample)
    batch = 20_000
    written = 0
    began = time.perf_counter()
    while written < events:
        rows = []
        for i in range(written, min(events, written + batch)):
            rows.append(
                Event(
                    aggregate_type="BenchPosition",
                    aggregate_id=f"B{i // 100}",
                    sequence=i % 100 + 1,
                    event_type=event_type,
                    payload=payload,
                    recorded_at=start + timedelta(milliseconds=i),
                )
            )
        Event.objects.bulk_create(rows, batch_size=2000)
        written += len(rows)
        if progress:
            sys.stderr.write(f"\revents {written:,}/{events:,}")
    ops = []
    kinds = list(OperationKind)
    for i in range(operations):
        kind = kinds[i % len(kinds)]
        pool = "USDC" if kind.startswith("usdc") else symbols[i % len(symbols)]
        ops.append(
            Operation(
                kind=kind,
                pool=pool,
                amount=Decimal("10"),
                token_address=addresses[0] if kind == OperationKind.REDEMPTION else "",
                aggregate_id=str(uuid.UUID(int=i + 1, version=4)),
                status=OperationStatus.COMPLETED if i % 20 else OperationStatus.FAILED,
                failure_reason="" if i % 20 else "venue refused",
                created_at=start + timedelta(seconds=i),
                finished_at=start + timedelta(seconds=i + 30),
            )
        )
    Operation.objects.bulk_create(ops, batch_size=2000)
    if progress:
        sys.stderr.write(
            f"\n{operations:,} operations; filled in {time.perf_counter() - began:.1f}s\n"
        )
    last = Operation.objects.order_by("-id").first()
    return {"operation_id": last.pk if last else None}


def _time_pages(repeats: int, ids: dict) -> list[tuple[str, float, int]]:
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.test import Client

    settings.METRICS_TRUST_LOOPBACK = True  # /metrics scraped from loopback, as configured
    user = User.objects.create_superuser("bench", password="bench-pw-123")
    client = Client(REMOTE_ADDR="127.0.0.1", HTTP_HOST="localhost")
    client.force_login(user)
    from inventory.models import Event

    event_id = Event.objects.order_by("-id").values_list("id", flat=True).first()
    pages = [
        ("dashboard", "/admin/"),
        ("dashboard fragment", "/admin/console/fragment/"),
        ("operations list", "/admin/operations/operation/"),
        ("operations: failed", "/admin/operations/operation/?status__exact=failed"),
        ("operations: pool AAPL", "/admin/operations/operation/?pool=AAPL"),
        ("event log", "/admin/inventory/event/"),
        (
            "event log: type filter",
            "/admin/inventory/event/?event_type=PositionEvent%3A%3AOnChainOrderFilled",
        ),
        ("event log: aggregate search", "/admin/inventory/event/?q=B42"),
        ("event detail", f"/admin/inventory/event/{event_id}/change/"),
        ("metrics", "/metrics"),
    ]
    if ids.get("operation_id"):
        pages.append(
            ("operation detail", f"/admin/operations/operation/{ids['operation_id']}/change/")
        )
    results = []
    for name, url in pages:
        timings = []
        status = 0
        for _ in range(repeats):
            began = time.perf_counter()
            response = client.get(url)
            timings.append((time.perf_counter() - began) * 1000)
            status = response.status_code
        results.append((name, statistics.median(timings), status))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--operations", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    args = parser.parse_args(argv)
    vendor = _prepare_database(args)
    try:
        _setup_django(vendor)
        from django.db import connection

        ids = _fill(args.events, args.operations, progress=not args.quiet)
        results = _time_pages(args.repeats, ids)
        with connection.cursor() as cursor:
            version = connection.Database.sqlite_version if vendor == "sqlite" else None
            if version is None:
                cursor.execute("SHOW server_version")
                version = cursor.fetchone()[0]
    finally:
        _remove_database(vendor)
    out = sys.stdout
    out.write(
        f"machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"
        f"; database: {vendor} {version}\n"
    )
    out.write(
        f"size: {args.events:,} events, {args.operations:,} operations; median of {args.repeats}\n"
    )
    out.write(f"{'page':32} {'ms':>9} {'status':>6}  target <{TARGET_MS:.0f} ms\n")
    worst = 0.0
    for name, ms, status in results:
        flag = "ok" if ms < TARGET_MS and status == 200 else "SLOW" if status == 200 else "ERROR"
        out.write(f"{name:32} {ms:9.1f} {status:>6}  {flag}\n")
        worst = max(worst, ms)
    out.write(f"slowest page: {worst:.1f} ms\n")
    return 0 if all(status == 200 for _, _, status in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())

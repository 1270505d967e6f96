"""Shared set-up for the benchmarks: a fresh database, the machine, the plain-insert baseline.

Each benchmark runs against its own new database, created for the run and removed after it:
a temporary SQLite file, or (with `DATABASE_URL=postgres://...`) a new database on that
server named after the one in the URL. The event log is append-only, so a benchmark never
writes into a database that matters.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# A complete rebalancing configuration with nothing real behind it: the trigger runs its whole
# check on every event (the benchmarks keep the pools balanced, so nothing calls a venue).
REBALANCING_ENV = {
    "REBALANCING_ENABLED": "true",
    "REDEMPTION_WALLET": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
    "MARKET_MAKER_WALLET": "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23",
    "ETHEREUM_RPC_URL": "http://127.0.0.1:1",
    "BASE_RPC_URL": "http://127.0.0.1:2",
    "EVM_PRIVATE_KEY": "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318",
    "BASE_ORDERBOOK": "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
    "USDC_VAULT_ID": "0x" + "ab" * 32,
    "ALPACA_API_KEY": "bench-key",
    "ALPACA_API_SECRET": "bench-secret",
    "ALPACA_ACCOUNT_ID": "bench-account",
    "LOG_LEVEL": "WARNING",
    # A throwaway key per run (the development key is refused with rebalancing enabled).
    "SECRET_KEY": secrets.token_urlsafe(50),
}


@dataclass(frozen=True)
class BenchDatabase:
    url: str
    vendor: str
    drop: Any


def _postgres_admin(url: str):
    import psycopg

    parts = urlsplit(url)
    admin = urlunsplit(parts._replace(path="/postgres"))
    return psycopg.connect(admin, autocommit=True)


@contextmanager
def bench_database(keep: bool = False) -> Iterator[BenchDatabase]:
    """A new, empty database for this run (SQLite file or PostgreSQL database); dropped after."""
    base = os.environ.get("DATABASE_URL", "")
    if base.startswith(("postgres://", "postgresql://")):
        parts = urlsplit(base)
        name = f"{parts.path.lstrip('/') or 'rebalancer'}_bench_{uuid.uuid4().hex[:8]}"
        with _postgres_admin(base) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        url = urlunsplit(parts._replace(path=f"/{name}"))

        def drop() -> None:
            with _postgres_admin(base) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

        database = BenchDatabase(url=url, vendor="postgresql", drop=drop)
    else:
        directory = tempfile.mkdtemp(prefix="rebalancer-bench-")
        path = Path(directory) / "bench.sqlite3"

        def drop() -> None:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            Path(directory).rmdir()

        database = BenchDatabase(url=f"sqlite:///{path}", vendor="sqlite", drop=drop)
    try:
        yield database
    finally:
        if not keep:
            from django.db import connections

            connections.close_all()
            database.drop()


def django_setup(database_url: str) -> None:
    """Point Django at the bench database, configure it and migrate it (quietly)."""
    os.environ.update(REBALANCING_ENV)
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rebalancer.settings")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    from django.db import connection

    from inventory import append_only

    append_only.install(connection)


def settle() -> str:
    """Let the database finish the upkeep that writing a long history in a minute leaves
    behind, as a service whose history grew over months has long done: on PostgreSQL VACUUM
    ANALYZE (the autovacuum that a million fresh rows start would otherwise run during the
    next measurement) and a CHECKPOINT; on SQLite a WAL checkpoint. Returns what it did."""
    from django.db import connection

    started = time.perf_counter()
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("VACUUM ANALYZE")
            cursor.execute("CHECKPOINT")
            done = "VACUUM ANALYZE, CHECKPOINT"
        else:
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            done = "WAL checkpoint"
    return f"{done} ({time.perf_counter() - started:.1f} s)"


def machine() -> dict[str, Any]:
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SHOW server_version")
            version = f"PostgreSQL {cursor.fetchone()[0]}"
        else:
            cursor.execute("SELECT sqlite_version()")
            version = f"SQLite {cursor.fetchone()[0]}"
    return {
        "cores": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "database": version,
    }


def plain_insert_rate(payload: dict[str, Any], rows: int) -> float:
    """Rows/s of plain single-row inserts (one per transaction) of `payload` as JSON into a
    scratch table of the same database: the yardstick that makes figures comparable."""
    return plain_insert_rates(payload, rows)[0]


def plain_insert_rates(payload: dict[str, Any], rows: int) -> tuple[float, float]:
    """`plain_insert_rate`, and the rate per CPU-second of this process (on a loaded machine
    the wall clock mostly measures the other processes; SQLite runs inside this one)."""
    from django.db import connection, transaction

    text = json.dumps(payload)
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS bench_plain")
        if connection.vendor == "postgresql":
            cursor.execute("CREATE TABLE bench_plain (id bigserial PRIMARY KEY, payload jsonb)")
        else:
            cursor.execute(
                "CREATE TABLE bench_plain (id integer PRIMARY KEY AUTOINCREMENT, payload text)"
            )
    marker = "%s"
    started, cpu_started = time.perf_counter(), time.process_time()
    for _ in range(rows):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"INSERT INTO bench_plain (payload) VALUES ({marker})", [text])
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE bench_plain")
    return rows / elapsed, rows / cpu if cpu > 0 else float("inf")


def round_trips(call: Any) -> list[str]:
    """The round trips `call()` makes to the database, in order (the statements Django
    captures: BEGIN and COMMIT included; on PostgreSQL one may carry several statements,
    separated by ";" and a newline, sent together). Run outside any transaction."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        call()
    return [query["sql"] for query in captured.captured_queries]


def round_trips_described(trips: list[str]) -> str:
    """'4 (BEGIN; 6 statements; 5 statements; COMMIT)'."""
    parts = []
    for sql in trips:
        count = len(sql.split(";\n"))
        parts.append(sql.split()[0] if count == 1 else f"{count} statements")
    return f"{len(trips)} ({'; '.join(parts)})"


def print_report(title: str, report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps({"benchmark": title, **report}, indent=2, default=str))
        return
    print(f"== {title}")
    for key, value in report.items():
        if isinstance(value, dict):
            print(f"{key}:")
            for inner, figure in value.items():
                print(f"  {inner}: {figure}")
        else:
            print(f"{key}: {value}")


def arguments(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    return parser

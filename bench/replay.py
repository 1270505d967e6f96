"""`rebuild_inventory` over a long log: time and peak memory.

    python bench/replay.py [--events 1000000 --baseline 100000]

Writes the log directly (encoded fills across ten symbols, balance snapshots, no service
path: only the replay is measured), then runs `python manage.py rebuild_inventory` (the
pools are written from the replay) in a fresh process for the baseline size and for the full
size, and reports each one's wall time, CPU time (the process's own, comparable on a
loaded machine) and peak resident memory (targets: under 60 s at
1,000,000 events on SQLite; peak memory within 50 MB of the 100,000-event run). Also times
plain single-row inserts for the ratio.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    REBALANCING_ENV,
    arguments,
    bench_database,
    django_setup,
    machine,
    plain_insert_rate,
    print_report,
)

SYMBOLS = [f"S{n:02d}" for n in range(10)]
T0 = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)

CHILD = """
import io, resource, sys, time
import django
django.setup()
from django.core.management import call_command
started, cpu_started = time.perf_counter(), time.process_time()
call_command("rebuild_inventory", "--no-progress", stdout=io.StringIO())
elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(f"RESULT {elapsed:.3f} {cpu:.3f} {peak_kb}", file=sys.stderr)
"""


def write_log(total: int) -> None:
    """Append raw events (two snapshots, then fills round-robin over the symbols) up to
    `total` events, in chunks; the projection is rebuilt from them by the measured run."""
    from django.db import connection, transaction

    from inventory.codec import encode_event
    from inventory.domain import events as ev
    from inventory.models import Event
    from inventory.store import _EVENT_COLUMNS as EVENT_COLUMNS

    have = Event.objects.count()
    if have == 0:
        # Both venues' balances observed (onchain equity and USDC), so the fills apply.
        snapshots = [
            ev.OnchainEquity(balances={s: Decimal(10**6) for s in SYMBOLS}, fetched_at=T0),
            ev.OnchainCash(usdc_balance=Decimal(10**9), fetched_at=T0),
        ]
        for sequence, snapshot in enumerate(snapshots, 1):
            kind, payload = encode_event(snapshot)
            Event.objects.create(
                aggregate_type=ev.SNAPSHOT,
                aggregate_id="snapshot",
                sequence=sequence,
                event_type=kind,
                payload=payload,
                recorded_at=T0,
            )
        have = len(snapshots)
    sequences = {s: Event.objects.filter(aggregate_id=s).count() for s in SYMBOLS}
    ops = connection.ops
    payload_field = Event._meta.get_field("payload")
    columns = ", ".join(
        ops.quote_name(Event._meta.get_field(name).column) for name in EVENT_COLUMNS
    )
    insert = (
        f"INSERT INTO {ops.quote_name(Event._meta.db_table)} ({columns}) "
        f"VALUES ({', '.join(['%s'] * len(EVENT_COLUMNS))})"
    )
    kind = ev.OnChainOrderFilled.event_type_name()
    chunk = 5000
    n = have
    while n < total:
        rows = []
        for _ in range(min(chunk, total - n)):
            symbol = SYMBOLS[n % len(SYMBOLS)]
            sequences[symbol] += 1
            at = T0 + timedelta(seconds=n)
            payload = _fill_payload(n, at)
            if n == have:  # the template is what the codec writes
                assert payload == encode_event(_fill(n, at))[1], payload
            rows.append(
                (
                    ev.POSITION,
                    symbol,
                    sequences[symbol],
                    kind,
                    ev.EVENT_VERSION,
                    payload_field.get_db_prep_value(payload, connection),
                    payload_field.get_db_prep_value({}, connection),
                    ops.adapt_datetimefield_value(at),
                )
            )
            n += 1
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.executemany(insert, rows)


def _fill(n: int, at: datetime):
    from inventory.domain import events as ev
    from inventory.domain.events import TradeId
    from inventory.domain.values import Direction

    return ev.OnChainOrderFilled(
        trade_id=TradeId("0x" + f"{n:064x}", 0),
        amount=Decimal("0.001"),
        direction=Direction.BUY if n % 2 else Direction.SELL,
        price_usdc=Decimal("187.25"),
        block_timestamp=at,
        seen_at=at,
    )


def _fill_payload(n: int, at: datetime) -> dict:
    """`encode_event(_fill(n, at))`'s payload, built directly (the log is written fast)."""
    moment = at.isoformat()
    return {
        "OnChainOrderFilled": {
            "trade_id": {"tx_hash": "0x" + f"{n:064x}", "log_index": "0"},
            "amount": "0.001",
            "direction": "Buy" if n % 2 else "Sell",
            "price_usdc": "187.25",
            "block_timestamp": moment,
            "seen_at": moment,
            "block_number": None,
        }
    }


def rebuild(database_url: str) -> tuple[float, float, float]:
    env = dict(os.environ, **REBALANCING_ENV, DATABASE_URL=database_url)
    env["DJANGO_SETTINGS_MODULE"] = "rebalancer.settings"
    done = subprocess.run(
        [sys.executable, "-c", CHILD], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"rebuild_inventory failed:\n{done.stderr[-3000:]}")
    line = [ln for ln in done.stderr.splitlines() if ln.startswith("RESULT ")][-1]
    _, elapsed, cpu, peak_kb = line.split()
    return float(elapsed), float(cpu), int(peak_kb) / 1024


def main() -> None:
    parser = arguments(__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--baseline", type=int, default=100_000)
    parser.add_argument("--plain", type=int, default=2000)
    args = parser.parse_args()

    with bench_database() as database:
        django_setup(database.url)
        plain = plain_insert_rate({"OnChainOrderFilled": {"amount": "0.001"}}, args.plain)
        from django.db import connections

        figures = {}
        for size in sorted({args.baseline, args.events}):
            started = time.perf_counter()
            write_log(size)
            written = time.perf_counter() - started
            connections.close_all()
            elapsed, cpu, peak_mb = rebuild(database.url)
            figures[size] = (elapsed, cpu, peak_mb, written)
        small, large = figures[min(figures)], figures[max(figures)]
        report = {
            "machine": machine(),
            "plain single-row inserts": f"{plain:,.0f} rows/s",
            "rebuild_inventory": {
                f"{size:,} events": f"{elapsed:.1f} s wall, {cpu:.1f} s CPU "
                f"({size / elapsed:,.0f} events/s, {size / elapsed / plain:.1f}x plain inserts), "
                f"peak {peak:.0f} MB"
                for size, (elapsed, cpu, peak, _) in sorted(figures.items())
            },
            "peak memory growth": f"{large[2] - small[2]:+.0f} MB from {min(figures):,} "
            f"to {max(figures):,} events",
            "sizes": f"{args.baseline:,} and {args.events:,} events, {args.plain} plain inserts",
        }
        print_report("bench/replay.py", report, args.json)


if __name__ == "__main__":
    main()

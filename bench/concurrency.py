"""Aggregate fill rate of 1, 2 and 4 processes ingesting fills for different symbols at once.

    DATABASE_URL=postgres://user@host/db python bench/concurrency.py [--fills 500]

Each process records `--fills` fills one per transaction (`fill_record_onchain`) for its own
symbol (4 symbols for 4 processes); every fill also moves the shared USDC pool. The figure per
process count is total fills / wall time from a common start, with the ratio to one process,
and the CPU seconds the workers spent per fill (on a 2-core machine, 4 processes that each
need a core for most of a fill cannot reach 4x whatever the locks). Meant for PostgreSQL
(SQLite serialises every writer on its database lock; it runs there too, for the smoke test).
Also times plain single-row inserts for the ratio. At the end the USDC pool (with the fill
deltas not yet folded into its row) is checked against a replay of the log.

With `--block-numbers` (the default) every fill carries a block number above the onchain
snapshot the seed records, as the API sends them (each leaves a remembered leg);
`--no-block-numbers` sends fills without a block (the shape before blocks were carried).

With `--latency-ms X` the workers reach PostgreSQL through a local proxy that delays every
message X ms each way (`bench/latency.py`): a database on its own host, where a writer spends
most of a fill waiting on round trips and a lock held across them serialises the writers
whatever the cores.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
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
from bench.latency import behind_latency  # noqa: E402

# The CPU time of this process's PostgreSQL backend (Linux /proc; 0 elsewhere).
BACKEND_CPU = """
import os
def backend_cpu():
    from django.db import connection
    if connection.vendor != "postgresql":
        return 0.0
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
"""

WORKER = (
    BACKEND_CPU
    + """
import sys, time
from datetime import UTC, datetime
from decimal import Decimal
import django
django.setup()
from inventory.services import fill_record_onchain

worker, round_, count, start_at, block = (int(sys.argv[1]), int(sys.argv[2]),
                                          int(sys.argv[3]), float(sys.argv[4]), sys.argv[5])
symbol = f"C{worker}"
from django.db import connection
connection.ensure_connection()
time.sleep(max(0.0, start_at - time.time()))
started = time.time()
cpu = time.process_time()
backend = backend_cpu()
for i in range(count):
    fill_record_onchain(
        symbol=symbol,
        tx_hash="0x" + f"{round_:08x}{worker:08x}{i:048x}",
        log_index=0,
        amount=Decimal("0.001"),
        direction="Buy" if i % 2 else "Sell",
        price_usdc=Decimal("187.25"),
        block_timestamp=datetime(2026, 1, 5, tzinfo=UTC),
        block_number=None if block == "-" else int(block) + 1 + i % 100,
    )
ended = time.time()
print(f"RESULT {started} {ended} {time.process_time() - cpu} {backend_cpu() - backend}")
"""
)

MAX_PROCESSES = 4
SEED_BLOCK = 1000


def seed(block_numbers: bool) -> None:
    from datetime import UTC, datetime
    from decimal import Decimal

    from inventory.services import snapshot_record

    symbols = [f"C{n}" for n in range(MAX_PROCESSES)]
    at = datetime(2026, 1, 5, tzinfo=UTC)
    snapshot_record(
        fetched_at=at,
        onchain_equity={s: Decimal(10**6) for s in symbols},
        offchain_equity={s: Decimal(10**6) for s in symbols},
        onchain_cash=Decimal(10**9),
        offchain_cash=Decimal(10**9),
        onchain_block=SEED_BLOCK if block_numbers else None,
        now=at,
    )


def usdc_exact() -> str:
    """The pools as readers see them (the USDC row plus its pending fill deltas) against the
    replay of the whole log (`inventory_rebuild` without writing)."""
    from inventory.services import inventory_rebuild

    differences = inventory_rebuild(write=False)
    usdc = [d for d in differences if getattr(d, "pool", None) == "USDC"]
    if not differences:
        return "exact (every pool equals the replay of the log)"
    return f"DIFFERS ({len(usdc)} USDC difference(s)): {differences[:5]}"


PLAIN_WORKER = (
    BACKEND_CPU
    + """
import json, sys, time
import django
django.setup()
from django.db import connection, transaction

worker, round_, count, start_at = (int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]),
                                   float(sys.argv[4]))
text = json.dumps({"OnChainOrderFilled": {"amount": "0.001"}})
connection.ensure_connection()
time.sleep(max(0.0, start_at - time.time()))
started = time.time()
cpu = time.process_time()
backend = backend_cpu()
for i in range(count):
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("INSERT INTO bench_plain_parallel (payload) VALUES (%s)", [text])
ended = time.time()
print(f"RESULT {started} {ended} {time.process_time() - cpu} {backend_cpu() - backend}")
"""
)


def _cpu_times() -> tuple[float, float] | None:
    """(busy, total) jiffies of the whole machine (Linux), or None."""
    try:
        fields = [float(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    except OSError:
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return sum(fields) - idle, sum(fields)


class _Sampler(threading.Thread):
    """Polls the bench database's other backends while a round runs: the share of samples
    in which at least one waits on a lock (a row, advisory or transaction lock)."""

    def __init__(self, database_url: str) -> None:
        super().__init__(daemon=True)
        self.url = database_url
        self.done = threading.Event()
        self.samples = 0
        self.waiting = 0

    def run(self) -> None:
        if not self.url.startswith(("postgres://", "postgresql://")):
            return
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.done.is_set():
                row = conn.execute(
                    "SELECT count(*) FILTER (WHERE wait_event_type = 'Lock') "
                    "FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid() AND state = 'active'"
                ).fetchone()
                self.samples += 1
                self.waiting += 1 if row and row[0] else 0
                self.done.wait(0.02)

    def share(self) -> str:
        if not self.samples:
            return "n/a"
        return f"{100 * self.waiting / self.samples:.0f}% of {self.samples} samples"


@dataclass
class Round:
    rate: float  # rows or fills per second over all processes
    cpu: float  # worker CPU seconds per row
    backend_cpu: float  # the workers' PostgreSQL backends' CPU seconds per row
    machine_busy: str  # the whole machine's CPU busy share during the round
    lock_waits: str  # share of samples with a backend waiting on a lock


def run_round(
    database_url: str,
    processes: int,
    count: int,
    round_: int,
    block: int | None,
    *,
    script: str = WORKER,
) -> Round:
    env = dict(os.environ, **REBALANCING_ENV, DATABASE_URL=database_url)
    env["DJANGO_SETTINGS_MODULE"] = "rebalancer.settings"
    start_at = time.time() + 3.0  # every process imported and connected before the start
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                script,
                str(n),
                str(round_),
                str(count),
                str(start_at),
                "-" if block is None else str(block),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(processes)
    ]
    time.sleep(max(0.0, start_at - time.time()))
    sampler = _Sampler(database_url)
    sampler.start()
    cpu_before = _cpu_times()
    spans = []
    cpu = backend_cpu = 0.0
    for child in children:
        out, err = child.communicate()
        if child.returncode != 0:
            raise SystemExit(f"worker failed:\n{err}")
        retried = err.count("retrying")
        if retried:
            print(f"  ({processes} processes: a worker retried {retried} time(s))", file=sys.stderr)
        line = [ln for ln in out.splitlines() if ln.startswith("RESULT ")][-1]
        _, began, ended, spent, backend_spent = line.split()
        spans.append((float(began), float(ended)))
        cpu += float(spent)
        backend_cpu += float(backend_spent)
    cpu_after = _cpu_times()
    sampler.done.set()
    sampler.join()
    busy = "n/a"
    if cpu_before and cpu_after and cpu_after[1] > cpu_before[1]:
        share = (cpu_after[0] - cpu_before[0]) / (cpu_after[1] - cpu_before[1])
        busy = f"{100 * share:.0f}%"
    wall = max(end for _, end in spans) - min(begin for begin, _ in spans)
    rows = processes * count
    return Round(rows / wall, cpu / rows, backend_cpu / rows, busy, sampler.share())


def plain_rounds(database_url: str, count: int) -> dict[int, Round]:
    """Plain single-row inserts from 1, 2 and 4 processes at once (the machine's ceiling for
    parallel writers: no locks shared, one short transaction per row)."""
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "CREATE TABLE bench_plain_parallel (id bigserial PRIMARY KEY, payload jsonb)"
            )
        else:
            cursor.execute(
                "CREATE TABLE bench_plain_parallel "
                "(id integer PRIMARY KEY AUTOINCREMENT, payload text)"
            )
    connection.close()
    try:
        return {
            n: run_round(database_url, n, count, 100 + n, None, script=PLAIN_WORKER)
            for n in (1, 2, 4)
        }
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE bench_plain_parallel")


def main() -> None:
    parser = arguments(__doc__.splitlines()[0])
    parser.add_argument("--fills", type=int, default=500, help="fills per process")
    parser.add_argument("--plain", type=int, default=2000)
    parser.add_argument(
        "--block-numbers",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fills carry a block number, as the API sends them (default)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="rounds of 1, 2 and 4 processes")
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=0.0,
        help="delay each message to and from PostgreSQL this much each way (a remote database)",
    )
    args = parser.parse_args()
    if args.latency_ms < 0:
        parser.error(f"--latency-ms {args.latency_ms}: must be 0 or more")

    with bench_database() as database:
        django_setup(database.url)
        from django.db import connections

        load = load_average()
        seed(args.block_numbers)
        plain = plain_insert_rate({"OnChainOrderFilled": {"amount": "0.001"}}, args.plain)
        info = machine()
        connections.close_all()
        block = SEED_BLOCK if args.block_numbers else None
        # 1, 2, 4 processes, `--repeat` times in turn (a shared machine's load drifts): the
        # median of each process count is reported.
        runs: dict[int, list[Round]] = {1: [], 2: [], 4: []}
        with behind_latency(database.url, args.latency_ms) as url:
            for repeat in range(args.repeat):
                for n in runs:
                    runs[n].append(run_round(url, n, args.fills, 10 * repeat + n, block))
            plain_parallel = plain_rounds(url, args.fills)
        rounds = {n: statistics_median(found) for n, found in runs.items()}
        cores = os.cpu_count() or 1

        def described(figures: dict[int, Round], unit: str) -> dict[str, str]:
            single = figures[1].rate
            return {
                f"{n} process{'es' if n > 1 else ''}": f"{r.rate:,.0f} {unit}/s "
                f"({r.rate / single:.2f}x one process, {r.rate / plain:.2f}x plain inserts; "
                f"CPU each: {r.cpu * 1000:.2f} ms worker + {r.backend_cpu * 1000:.2f} ms "
                f"database backend; machine CPU busy {r.machine_busy}; a backend waiting on a "
                f"lock in {r.lock_waits})"
                for n, r in figures.items()
            }

        per_fill = rounds[4].cpu + rounds[4].backend_cpu
        ceiling = cores / per_fill if per_fill > 0 else float("inf")
        report = {
            "machine": info,
            "load before the run": load,
            "plain single-row inserts": f"{plain:,.0f} rows/s",
            f"fills (one per transaction, one symbol per process; median of {args.repeat})": (
                described(rounds, "fills")
            ),
            "every run (fills/s)": {
                f"{n} process{'es' if n > 1 else ''}": ", ".join(f"{r.rate:,.0f}" for r in found)
                for n, found in runs.items()
            },
            "ratio 4 processes / 1 (fills)": f"{rounds[4].rate / rounds[1].rate:.2f}x",
            "CPU ceiling": (
                f"{per_fill * 1000:.2f} ms of CPU per fill (worker and backend, 4 processes): "
                f"{cores} cores give at most {ceiling:,.0f} fills/s, "
                f"{ceiling / rounds[1].rate:.2f}x the one-process rate, with the machine to "
                "ourselves"
            ),
            "plain single-row inserts from parallel processes": described(plain_parallel, "rows"),
            "ratio 4 processes / 1 (plain inserts)": (
                f"{plain_parallel[4].rate / plain_parallel[1].rate:.2f}x"
            ),
            "pools": usdc_exact(),
            "sizes": f"{args.fills} fills (and plain rows) per process, {args.plain} plain "
            "inserts, " + ("block numbers" if args.block_numbers else "no block numbers"),
            "latency added": (
                f"{args.latency_ms:g} ms each way to PostgreSQL (a local proxy)"
                if args.latency_ms > 0 and database.vendor == "postgresql"
                else "none"
            ),
        }
        print_report("bench/concurrency.py", report, args.json)


def statistics_median(found: list[Round]) -> Round:
    """The round of median rate (the lower middle one of an even count)."""
    ordered = sorted(found, key=lambda r: r.rate)
    return ordered[(len(ordered) - 1) // 2]


def load_average() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.2f} {five:.2f} {fifteen:.2f} (1, 5, 15 min)"


if __name__ == "__main__":
    main()

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
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
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

WORKER = """
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
print(f"RESULT {started} {time.time()} {time.process_time() - cpu}")
"""

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
    """The USDC pool as readers see it (row plus pending fill deltas) against the replay of
    the whole log (`inventory_rebuild` without writing)."""
    from inventory.services import inventory_rebuild

    differences = [d for d in inventory_rebuild(write=False) if d.pool_key == "USDC"]
    return "exact (equals the replay of the log)" if not differences else f"DIFFERS: {differences}"


def run_round(
    database_url: str, processes: int, fills: int, round_: int, block: int | None
) -> tuple[float, float]:
    """(fills/s over all processes, worker CPU seconds per fill)."""
    env = dict(os.environ, **REBALANCING_ENV, DATABASE_URL=database_url)
    env["DJANGO_SETTINGS_MODULE"] = "rebalancer.settings"
    start_at = time.time() + 3.0  # every process imported and connected before the start
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WORKER,
                str(n),
                str(round_),
                str(fills),
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
    spans = []
    cpu = 0.0
    for child in children:
        out, err = child.communicate()
        if child.returncode != 0:
            raise SystemExit(f"worker failed:\n{err}")
        retried = err.count("retrying")
        if retried:
            print(f"  ({processes} processes: a worker retried {retried} time(s))", file=sys.stderr)
        _, began, ended, spent = [ln for ln in out.splitlines() if ln.startswith("RESULT ")][
            -1
        ].split()
        spans.append((float(began), float(ended)))
        cpu += float(spent)
    wall = max(end for _, end in spans) - min(begin for begin, _ in spans)
    return processes * fills / wall, cpu / (processes * fills)


def main() -> None:
    parser = arguments(__doc__.splitlines()[0])
    parser.add_argument("--fills", type=int, default=500, help="fills per process")
    parser.add_argument("--plain", type=int, default=2000)
    args = parser.parse_args()

    with bench_database() as database:
        django_setup(database.url)
        from django.db import connections

        seed()
        plain = plain_insert_rate({"OnChainOrderFilled": {"amount": "0.001"}}, args.plain)
        info = machine()
        connections.close_all()
        rates = {}
        for round_, processes in enumerate((1, 2, 4), start=1):
            rates[processes] = run_round(database.url, processes, args.fills, round_)
        report = {
            "machine": info,
            "plain single-row inserts": f"{plain:,.0f} rows/s",
            "aggregate rate (one fill per transaction)": {
                f"{n} process{'es' if n > 1 else ''}": f"{rate:,.0f} fills/s "
                f"({rate / rates[1]:.2f}x one process, {rate / plain:.2f}x plain inserts)"
                for n, rate in rates.items()
            },
            "sizes": f"{args.fills} fills per process, {args.plain} plain inserts",
        }
        print_report("bench/concurrency.py", report, args.json)


if __name__ == "__main__":
    main()

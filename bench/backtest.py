"""`manage.py backtest` over a long log: events per second and peak memory.

    python bench/backtest.py [--events 1000000 --baseline 100000] [--candidates 1]

Writes the log directly (ten registered symbols, both venues observed for them and USDC,
then onchain fills round-robin over the symbols: `bench/replay.py`'s writer), then runs
`manage.py backtest` over the whole period in a fresh process, with one worker, for the
baseline size and the full size: the as-run candidate (a median and a p90 run) plus
`--candidates` more with a zero band (every fill reaches the trigger's amount and minimum
checks), and the real fold. Reports each run's wall time, CPU time, events per second and
peak resident memory (targets: 1,000,000 events for one candidate under 30 s; memory flat in
the log's length). Also times plain single-row inserts for the ratio.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta
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
from bench.replay import SYMBOLS, T0, write_log  # noqa: E402

CHILD = """
import io, json, resource, sys, time
import django
django.setup()
from django.core.management import call_command
args = sys.argv[1:]
out = io.StringIO()
started, cpu_started = time.perf_counter(), time.process_time()
call_command("backtest", *args, "--json", "--workers", "1", stdout=out)
elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
report = json.loads(out.getvalue())
operations = sum(sum(p["operations"].values()) for c in report for p in c["pools"].values())
print(f"RESULT {elapsed:.3f} {cpu:.3f} {peak_kb} {len(report)} {operations}", file=sys.stderr)
"""


def observe_both_venues() -> None:
    """Snapshots of both venues for every symbol and USDC, before the fills (a fill only
    applies to an observed venue; a balanced pool still runs the whole decision)."""
    from inventory.codec import encode_event
    from inventory.domain import events as ev
    from inventory.models import Event

    if Event.objects.exists():
        return
    from eth_utils import to_checksum_address

    from inventory.services import asset_register

    for index, symbol in enumerate(SYMBOLS):
        asset_register(
            base_symbol=symbol,
            token_address=to_checksum_address(f"0x{index + 1:040x}"),
            token_symbol=f"t{symbol}",
            vault_id="0x" + "11" * 32,
            changed_by="bench",
            now=T0 - timedelta(seconds=2),
        )
    snapshots = [
        ev.OnchainEquity(balances={s: Decimal(10**6) for s in SYMBOLS}, fetched_at=T0),
        ev.OffchainEquity(positions={s: Decimal(10**6) for s in SYMBOLS}, fetched_at=T0),
        ev.OnchainCash(usdc_balance=Decimal(10**9), fetched_at=T0),
        ev.OffchainCash(cash_balance=Decimal(10**9), fetched_at=T0),
    ]
    for sequence, snapshot in enumerate(
        snapshots,
        1 + Event.objects.filter(aggregate_type=ev.SNAPSHOT, aggregate_id="snapshot").count(),
    ):
        kind, payload = encode_event(snapshot)
        Event.objects.create(
            aggregate_type=ev.SNAPSHOT,
            aggregate_id="snapshot",
            sequence=sequence,
            event_type=kind,
            payload=payload,
            recorded_at=T0 - timedelta(seconds=1),
        )


def backtest(database_url: str, size: int, candidates: int) -> tuple[float, float, float, int]:
    env = dict(os.environ, **REBALANCING_ENV, DATABASE_URL=database_url)
    env["DJANGO_SETTINGS_MODULE"] = "rebalancer.settings"
    arguments = ["--from", T0.isoformat(), "--to", (T0 + timedelta(seconds=size + 1)).isoformat()]
    for n in range(candidates):
        arguments += ["--candidate", f"zero{n}:equity_deviation=0,usdc_deviation=0"]
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *arguments],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"backtest failed:\n{done.stderr[-3000:]}")
    line = [ln for ln in done.stderr.splitlines() if ln.startswith("RESULT ")][-1]
    _, elapsed, cpu, peak_kb, _entries, operations = line.split()
    return float(elapsed), float(cpu), int(peak_kb) / 1024, int(operations)


def main() -> None:
    parser = arguments(__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--baseline", type=int, default=100_000)
    parser.add_argument("--candidates", type=int, default=0, help="besides as-run")
    parser.add_argument("--plain", type=int, default=2000)
    args = parser.parse_args()

    with bench_database() as database:
        django_setup(database.url)
        plain = plain_insert_rate({"OnChainOrderFilled": {"amount": "0.001"}}, args.plain)
        from django.db import connections

        figures = {}
        for size in sorted({args.baseline, args.events}):
            observe_both_venues()
            started = time.perf_counter()
            write_log(size)
            written = time.perf_counter() - started
            connections.close_all()
            figures[size] = (*backtest(database.url, size, args.candidates), written)
        small, large = figures[min(figures)], figures[max(figures)]
        worlds = 2 * (1 + args.candidates)
        report = {
            "machine": machine(),
            "plain single-row inserts": f"{plain:,.0f} rows/s",
            "backtest": {
                f"{size:,} events": f"{elapsed:.1f} s wall, {cpu:.1f} s CPU "
                f"({size / elapsed:,.0f} events/s, {size / elapsed / plain:.2f}x plain "
                f"inserts), peak {peak:.0f} MB, {operations} operations modelled"
                for size, (elapsed, cpu, peak, operations, _) in sorted(figures.items())
            },
            "peak memory growth": f"{large[2] - small[2]:+.0f} MB from {min(figures):,} "
            f"to {max(figures):,} events",
            "sizes": f"{args.baseline:,} and {args.events:,} events, {1 + args.candidates} "
            f"candidate(s) = {worlds} worlds (median and p90 runs) plus the real fold, "
            f"{args.plain} plain inserts",
        }
        print_report("bench/backtest.py", report, args.json)


if __name__ == "__main__":
    main()

"""`manage.py backtest` over a long log: events per second and peak memory.

    python bench/backtest.py [--events 1000000 --baseline 100000] [--candidates 1]
        [--against DIR]

Writes the log directly (ten registered symbols, both venues observed for them and USDC,
then onchain fills round-robin over the symbols: `bench/replay.py`'s writer), then runs
`manage.py backtest` over the whole period in a fresh process for the baseline size and the
full size:

- one candidate: `as-run` (its median and p90 runs) plus the real fold, one process (the
  target: 1,000,000 events under 30 s; memory flat in the log's length);
- with `--candidates N`, at the full size: `as-run` plus N candidates with a zero band (every
  fill reaches the trigger's amount and minimum checks, the worst case), in the default worker
  processes (one per candidate up to the cores): the CPU time of all processes against the
  wall time shows whether they ran in parallel (on an idle box);
- with `--against DIR` (a checkout of an older commit, e.g. `git worktree add DIR main`), the
  one-candidate run again with that code on the same log: the baseline of the same run.

Reports each run's wall time, CPU time (its own and its worker processes'), events per
second and peak resident memory. Also times plain single-row inserts for the ratio.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

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
call_command("backtest", *args, "--json", stdout=out)
elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
children = resource.getrusage(resource.RUSAGE_CHILDREN)
workers_cpu = children.ru_utime + children.ru_stime
peak_kb = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, children.ru_maxrss)
report = json.loads(out.getvalue())
operations = sum(sum(p["operations"].values()) for c in report for p in c["pools"].values())
print(
    f"RESULT {elapsed:.3f} {cpu + workers_cpu:.3f} {workers_cpu:.3f} {peak_kb} {operations}",
    file=sys.stderr,
)
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


@dataclass(frozen=True)
class Run:
    elapsed: float
    cpu: float  # this process's and its worker processes'
    workers_cpu: float  # the worker processes' alone
    peak_mb: float
    operations: int

    def describe(self, size: int, plain: float) -> str:
        return (
            f"{self.elapsed:.1f} s wall, {self.cpu:.1f} s CPU ({size / self.elapsed:,.0f} "
            f"events/s, {size / max(self.cpu, 1e-6):,.0f} per CPU-second, "
            f"{size / self.elapsed / plain:.2f}x plain inserts), peak {self.peak_mb:.0f} MB, "
            f"{self.operations} operations modelled"
        )


def backtest(
    database_url: str, size: int, candidates: int, *, workers: int | None, code: Path = ROOT
) -> Run:
    """`manage.py backtest` over the first `size` seconds of the log, in a fresh process
    running the code at `code`."""
    env = dict(os.environ, **REBALANCING_ENV, DATABASE_URL=database_url)
    env["DJANGO_SETTINGS_MODULE"] = "rebalancer.settings"
    env["PYTHONPATH"] = str(code)
    arguments = ["--from", T0.isoformat(), "--to", (T0 + timedelta(seconds=size + 1)).isoformat()]
    for n in range(candidates):
        arguments += ["--candidate", f"zero{n}:equity_deviation=0,usdc_deviation=0"]
    if workers is not None:
        arguments += ["--workers", str(workers)]
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *arguments],
        cwd=code,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"backtest failed:\n{done.stderr[-3000:]}")
    line = [ln for ln in done.stderr.splitlines() if ln.startswith("RESULT ")][-1]
    _, elapsed, cpu, workers_cpu, peak_kb, operations = line.split()
    return Run(float(elapsed), float(cpu), float(workers_cpu), int(peak_kb) / 1024, int(operations))


def main() -> None:
    parser = arguments(__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--baseline", type=int, default=100_000)
    parser.add_argument("--candidates", type=int, default=0, help="zero-band ones, in parallel")
    parser.add_argument("--against", type=Path, default=None, help="older code to compare")
    parser.add_argument("--plain", type=int, default=2000)
    args = parser.parse_args()

    with bench_database() as database:
        django_setup(database.url)
        plain = plain_insert_rate({"OnChainOrderFilled": {"amount": "0.001"}}, args.plain)
        from django.db import connections

        one: dict[int, Run] = {}
        old: dict[int, Run] = {}
        parallel: dict[int, Run] = {}
        sizes = sorted({args.baseline, args.events})
        for size in sizes:
            observe_both_venues()
            write_log(size)
            connections.close_all()
            one[size] = backtest(database.url, size, 0, workers=1)
            if args.against is not None:
                old[size] = backtest(database.url, size, 0, workers=1, code=args.against)
            if args.candidates and size == sizes[-1]:
                parallel[size] = backtest(database.url, size, args.candidates, workers=None)
        small, large = one[sizes[0]], one[sizes[-1]]
        report: dict[str, Any] = {
            "machine": {**machine(), "load": load()},
            "plain single-row inserts": f"{plain:,.0f} rows/s",
            "one candidate (as-run, median and p90 runs, plus the real fold), one process": {
                f"{size:,} events": run.describe(size, plain) for size, run in one.items()
            },
            "peak memory growth": f"{large.peak_mb - small.peak_mb:+.0f} MB from "
            f"{sizes[0]:,} to {sizes[-1]:,} events",
        }
        if old and args.against is not None:
            report[f"baseline: the same, code at {args.against.name}"] = {
                f"{size:,} events": run.describe(size, plain) for size, run in old.items()
            }
            report["speed-up (CPU)"] = {
                f"{size:,} events": f"{old[size].cpu / one[size].cpu:.1f}x" for size in sizes
            }
        if parallel:
            workers = min(1 + args.candidates, os.cpu_count() or 1)
            report[
                f"as-run plus {args.candidates} zero-band candidate(s), {workers} worker processes"
            ] = {
                f"{size:,} events": run.describe(size, plain)
                + f", {run.workers_cpu:.1f} s of the CPU in the worker processes, CPU / wall "
                f"{run.cpu / run.elapsed:.2f}"
                for size, run in parallel.items()
            }
        report["sizes"] = (
            f"{args.baseline:,} and {args.events:,} events, {args.candidates} zero-band "
            f"candidate(s) in parallel, {args.plain} plain inserts"
        )
        print_report("bench/backtest.py", report, args.json)


def load() -> str:
    """The load averages (1, 5, 15 min) as the run ends: the box is shared."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


if __name__ == "__main__":
    main()

"""A long simulated trading day: operations completed per kind, step durations, chaos figures.

    python bench/simulated_day.py [--duration 600] [--chaos] [--gas-spike GWEI] [--seed 3] [--json]

Runs `manage.py runrebalancer --simulate` (the simulated venue, its desk and the whole service,
on a fresh SQLite file) for `--duration` seconds, then prints the day's figures: operations by
kind and outcome, operations per minute, the mean and max of each step's duration, the
end-of-day checks, what each kind cost (gas, Circle, other, total; USD moved and the cost per
10,000 USD moved, issue 24), with `--chaos` the workers killed and faults served, and with
`--gas-spike` when Ethereum's gas fell and the cost gate's deferrals. The target of the issue
is 10 minutes and 50+ operations with every check holding. Exit 1 when a check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def parse(summary: str) -> dict[str, Any]:
    operations: dict[str, dict[str, int]] = {}
    for kind, status, count in re.findall(r"^\s+(\w+)\s+(completed|failed|\w+)\s+(\d+)$",
                                          summary, re.M):  # fmt: skip
        operations.setdefault(kind, {})[status] = int(count)
    steps = {
        step.strip(): f"mean {mean}s max {peak}s (n={n})"
        for step, mean, peak, n in re.findall(
            r"^\s+(\S+ -> \S+)\s+([\d.]+) /\s+([\d.]+)\s+\(n=(\d+)\)$", summary, re.M
        )
    }
    checks = {
        name.strip(): state == "ok"
        for state, name in re.findall(r"^\s+\[(ok|FAILED)\] ([^:]+):", summary, re.M)
    }
    costs = {
        kind: {
            "gas_usd": gas,
            "circle_usd": circle,
            "other_usd": other,
            "total_usd": total,
            "moved_usd": moved,
            "per_10k_usd_moved": per,
        }
        for kind, gas, circle, other, total, moved, per in re.findall(
            r"^\s+(\w+)\s+gas ([\d.]+), circle ([\d.]+), other ([\d.]+), total ([\d.]+); "
            r"moved ([\d.]+), per 10,000 USD moved ([\d.]+|-)$",
            summary,
            re.M,
        )
    }
    chaos = re.search(r"^chaos: .*$", summary, re.M)
    desk = re.search(r"^desk: .*$", summary, re.M)
    deferrals = re.search(r"^deferrals recorded .*$", summary, re.M)
    gas = re.search(r"^gas spike: .*$", summary, re.M)
    return {
        "operations": operations,
        "steps": steps,
        "checks": checks,
        "costs": costs,
        "desk": desk[0] if desk else None,
        "chaos": chaos[0] if chaos else None,
        "deferrals": deferrals[0] if deferrals else None,
        "gas_spike": gas[0] if gas else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--symbols", default="AAPL,TSLA,NVDA")
    parser.add_argument("--chaos", action="store_true")
    parser.add_argument("--gas-spike", default=None, metavar="GWEI")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    env = dict(os.environ)
    env.pop("DATABASE_URL", None)
    with tempfile.TemporaryDirectory(prefix="simday-bench-") as work:
        argv = [
            sys.executable, "manage.py", "runrebalancer", "--simulate",
            "--symbols", args.symbols, "--seed", str(args.seed),
            "--duration", str(args.duration), "--http", f"127.0.0.1:{free_port()}",
            "--db", str(Path(work) / "day.sqlite3"),
        ]  # fmt: skip
        if args.chaos:
            argv.append("--chaos")
        if args.gas_spike:
            argv += ["--gas-spike", args.gas_spike]
        started = time.monotonic()
        done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True,
                              check=False)  # fmt: skip
        wall = time.monotonic() - started
    output = done.stdout + done.stderr
    summary = output[output.find("== the simulated day ==") :]
    figures = parse(summary)
    total = sum(sum(by_status.values()) for by_status in figures["operations"].values())
    report = {
        "benchmark": "bench/simulated_day.py",
        "machine": {"cores": os.cpu_count(), "database": "SQLite (a fresh file)"},
        "sizes": {
            "duration_s": args.duration,
            "symbols": args.symbols,
            "chaos": args.chaos,
            "gas_spike_gwei": args.gas_spike,
        },
        "wall_s": round(wall, 1),
        "operations_total": total,
        "operations_per_minute": round(total / (args.duration / 60), 2),
        **figures,
        "exit": done.returncode,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(summary or output[-4000:])
        print(
            f"operations: {total} in {args.duration:g}s "
            f"({report['operations_per_minute']}/min), wall {wall:.0f}s, exit {done.returncode}"
        )
    return 0 if done.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

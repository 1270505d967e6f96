"""What the queue machinery costs on a simulated day, read from its service log.

    python bench/queue_log.py LOGS_DIR/service.log [--json]

`manage.py runrebalancer --simulate` prints its logs directory; `service.log` holds the service
and its workers. Printed: operations created, log lines (all, and per operation), WARNING
lines, the "re-enqueued" / "enqueued again" / "delivered again" lines (WARNING and INFO), the
time from a wait's end to the start of the operation's next run (p50, p95, max). A wait's end is the
moment a run logged "waiting S s" (or "retrying in S s") plus S (the log rounds S to 0.1 s,
so each figure is within 0.05 s); the next run's start is its next "attempt N" line.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

STAMP = r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (\w+) (\S+) "
CREATED = re.compile(STAMP + r"operation (\d+) created:")
WAITING = re.compile(STAMP + r"operation (\d+): (?:waiting|.*retrying in) ([\d.]+)s")
ATTEMPT = re.compile(STAMP + r"operation (\d+) \(.*\): attempt \d+$")
LOST = re.compile(r"re-enqueued|enqueued again|delivered again")


def _at(stamp: str) -> datetime:
    # The log's stamps are local and naive; only differences between them are used.
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f")  # noqa: DTZ007


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


def measure(text: str) -> dict[str, Any]:
    lines = text.splitlines()
    created: set[str] = set()
    wait_end: dict[str, datetime] = {}
    latencies: list[float] = []
    warnings = 0
    lost = 0
    routine = 0
    for line in lines:
        if " WARNING " in line:
            warnings += 1
        if LOST.search(line):
            if " WARNING " in line:
                lost += 1
            else:
                routine += 1
        if match := CREATED.match(line):
            created.add(match[4])
        elif match := WAITING.match(line):
            seconds = float(match[5])
            wait_end[match[4]] = _at(match[1]) + timedelta(seconds=seconds)
        elif (match := ATTEMPT.match(line)) and match[4] in wait_end:
            latencies.append((_at(match[1]) - wait_end.pop(match[4])).total_seconds())
    count = len(created)
    return {
        "operations": count,
        "log_lines": len(lines),
        "log_lines_per_operation": round(len(lines) / count, 1) if count else None,
        "warning_lines": warnings,
        "reenqueued_warnings": lost,
        "reenqueued_info": routine,
        "wait_end_to_start_s": {
            "n": len(latencies),
            "p50": round(percentile(latencies, 0.5), 3) if latencies else None,
            "p95": round(percentile(latencies, 0.95), 3) if latencies else None,
            "max": round(max(latencies), 3) if latencies else None,
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", type=Path)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures = measure(args.log.read_text(errors="replace"))
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    latency = figures["wait_end_to_start_s"]
    print(
        f"operations {figures['operations']}; log lines {figures['log_lines']} "
        f"({figures['log_lines_per_operation']} per operation), WARNING {figures['warning_lines']}"
        f", re-enqueued: {figures['reenqueued_warnings']} WARNING + {figures['reenqueued_info']}"
        f" INFO; wait end -> next run: p50 "
        f"{latency['p50']}s p95 {latency['p95']}s max {latency['max']}s (n={latency['n']})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The kill -9 crash matrix and the fault bursts, N runs in a row, optionally beside CPU hogs.

    python bench/crash_campaign.py [--runs 3] [--hog 1] [--workers 2] [-k EXPR] [NODE ...]
    DATABASE_URL=postgres://... python bench/crash_campaign.py ...   # on PostgreSQL

A crash test that fails for timing proves nothing, so the proof must hold on a busy machine:
this runs the mint, redemption and USDC crash matrices and the fault-burst test (or the pytest
node ids given) through pytest in a subprocess, `--runs` times in a row, with `--hog` CPU-bound
processes (pure-Python busy loops, killed at the end) running beside them. It prints, per run,
the tests passed and failed, the duration and the load average, then the machine and a verdict;
the exit code is non-zero if any run failed. Each run's pytest output is kept in a log file
(named in the report) for the failures.

The database is the test suite's own: a test database derived from `DATABASE_URL` (SQLite by
default), created and dropped by pytest-django as in `bin/test`.
"""

from __future__ import annotations

import hashlib
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, _postgres_admin, arguments, print_report  # noqa: E402

MATRIX = [
    "tests/operations/test_crash_safety.py",
    "tests/operations/test_usdc_crash_safety.py",
    "tests/operations/test_fault_bursts.py",
]
HOG_CODE = "while True:\n    pass\n"


@dataclass
class Run:
    number: int
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    exit_code: int = 0
    duration_s: float = 0.0
    load_start: str = ""
    load_end: str = ""
    load_max_1m: float = 0.0
    failures: list[str] = field(default_factory=list)
    log: str = ""
    checkout_changed: bool = False

    @property
    def ok(self) -> bool:
        return (
            self.exit_code == 0
            and self.failed == 0
            and self.errors == 0
            and self.passed > 0
            and not self.checkout_changed
        )


def checkout() -> str:
    """The commit and a digest of the uncommitted changes to tracked files: a run whose code
    changed under it (a merge, an edit) proves nothing, as its processes mixed two versions."""

    def git(*args: str) -> bytes:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, check=False)
        return done.stdout

    head = git("rev-parse", "--short", "HEAD").decode().strip() or "unknown"
    changes = git("diff", "HEAD", "--", ".", ":(exclude)*.md")
    return head + (f"+{hashlib.sha256(changes).hexdigest()[:8]}" if changes else "")


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def load_text(load: tuple[float, float, float]) -> str:
    return " ".join(f"{figure:.2f}" for figure in load)


def database_version() -> str:
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith(("postgres://", "postgresql://")):
        with _postgres_admin(url) as admin:
            return f"PostgreSQL {admin.execute('SHOW server_version').fetchone()[0]}"
    return f"SQLite {sqlite3.sqlite_version}"


def machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "database": database_version(),
        "checkout": checkout(),
    }


def start_hogs(count: int) -> list[subprocess.Popen]:
    """`count` pure-Python busy loops, each in its own process group (killed by `stop_hogs`)."""
    return [
        subprocess.Popen(
            [sys.executable, "-c", HOG_CODE],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for _ in range(count)
    ]


def stop_hogs(hogs: list[subprocess.Popen]) -> None:
    for hog in hogs:
        if hog.poll() is None:
            os.killpg(hog.pid, signal.SIGKILL)
        hog.wait(timeout=60)


class LoadSampler:
    """The highest 1-minute load average seen while a run lasts (sampled every few seconds)."""

    def __init__(self, every_s: float = 5.0) -> None:
        self.every_s = every_s
        self.highest = load_average()[0]
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.wait(self.every_s):
            self.highest = max(self.highest, load_average()[0])

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        self.highest = max(self.highest, load_average()[0])


def junit_counts(path: Path, run: Run) -> None:
    """Fill the counts and failed node ids of `run` from pytest's JUnit XML report."""
    if not path.exists():
        return
    root = ElementTree.parse(path).getroot()
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        if case.find("failure") is not None:
            run.failed += 1
            run.failures.append(name)
        elif case.find("error") is not None:
            run.errors += 1
            run.failures.append(f"{name} (error)")
        elif case.find("skipped") is not None:
            run.skipped += 1
        else:
            run.passed += 1


def pytest_command(options, junit: Path) -> list[str]:
    command = [sys.executable, "-m", "pytest", "-q", f"--junitxml={junit}"]
    if options.workers:
        command += ["-n", str(options.workers), "--dist", "loadgroup"]
    if options.k:
        command += ["-k", options.k]
    return command + (options.nodes or MATRIX)


def run_once(number: int, options, log_dir: Path) -> Run:
    run = Run(number=number)
    junit = log_dir / f"run-{number}.xml"
    log = log_dir / f"run-{number}.log"
    run.log = str(log)
    run.load_start = load_text(load_average())
    code = checkout()
    started = time.monotonic()
    with LoadSampler() as sampler, open(log, "w") as output:
        done = subprocess.run(
            pytest_command(options, junit),
            cwd=ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
            timeout=options.timeout,
            check=False,
        )
    run.duration_s = round(time.monotonic() - started, 1)
    run.load_end = load_text(load_average())
    run.load_max_1m = round(sampler.highest, 2)
    run.exit_code = done.returncode
    run.checkout_changed = checkout() != code
    junit_counts(junit, run)
    return run


def run_line(run: Run) -> str:
    verdict = "ok" if run.ok else "FAILED"
    line = (
        f"{verdict}: {run.passed} passed, {run.failed} failed, {run.errors} errors"
        f" in {run.duration_s:.0f} s; load {run.load_start} -> {run.load_end}"
        f" (highest 1-min {run.load_max_1m:.2f})"
    )
    if run.checkout_changed:
        line += "; the checkout changed during the run: not valid"
    if run.failures:
        line += "; failed: " + ", ".join(run.failures) + f"; log: {run.log}"
    return line


def main() -> None:
    parser = arguments(__doc__.splitlines()[0])
    parser.add_argument("nodes", nargs="*", help="pytest node ids (default: the crash matrix)")
    parser.add_argument("--runs", type=int, default=3, help="runs in a row")
    parser.add_argument("--hog", type=int, default=0, help="CPU-bound processes beside them")
    parser.add_argument("--workers", type=int, default=0, help="pytest -n (0: one process)")
    parser.add_argument("-k", default="", help="pytest -k expression")
    parser.add_argument("--timeout", type=float, default=4 * 3600, help="seconds per run")
    parser.add_argument("--stop-on-failure", action="store_true", help="stop after a failed run")
    parser.add_argument("--log-dir", default="", help="where the runs' logs go (default: temp)")
    options = parser.parse_args()

    log_dir = Path(options.log_dir or tempfile.mkdtemp(prefix="rebalancer-crash-campaign-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    about = machine()
    runs: list[Run] = []
    hogs = start_hogs(options.hog)
    try:
        for number in range(1, options.runs + 1):
            run = run_once(number, options, log_dir)
            runs.append(run)
            if not options.json:
                print(f"run {number}/{options.runs}: {run_line(run)}", flush=True)
            if not run.ok and options.stop_on_failure:
                break
    finally:
        stop_hogs(hogs)

    passed_runs = sum(run.ok for run in runs)
    verdict = (
        f"{passed_runs} of {options.runs} runs in a row passed"
        if passed_runs == options.runs
        else f"FAILED: {passed_runs} of {options.runs} runs passed"
    )
    report: dict[str, Any] = {
        "machine": about,
        "sizes": {
            "runs": options.runs,
            "hog processes": options.hog,
            "pytest workers": options.workers or 1,
            "selection": " ".join(options.nodes or MATRIX)
            + (f" -k {options.k}" if options.k else ""),
        },
        "runs": (
            [asdict(run) | {"ok": run.ok} for run in runs]
            if options.json
            else {f"run {run.number}": run_line(run) for run in runs}
        ),
        "verdict": verdict,
        "logs": str(log_dir),
    }
    print_report("bench/crash_campaign.py", report, options.json)
    sys.exit(0 if passed_runs == options.runs else 1)


if __name__ == "__main__":
    main()

"""`manage.py runrebalancer --simulate`: a short simulated trading day, without and with chaos.

Each day runs as a real process (the simulated venue, the desk, the service with its workers)
and ends as soon as each kind of operation (mint, redemption, USDC both ways) completed once
(`--until-covered`, a condition, not a sleep; `--duration` only bounds a stuck day). The test
asserts the process's own verdict (exit 0) and each of the four end-of-day checks it printed.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import pytest

from tests.rebalancer.support import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.chain]

CHECKS = (
    "1 every operation accounted for",
    "2 effects match operations",
    "3 drift zero after reconcile",
    "4 rebuild_inventory --check clean",
)
KINDS = ("mint", "redemption", "usdc_alpaca_to_base", "usdc_base_to_alpaca")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def simulated_day(tmp_path, *extra: str) -> tuple[int, str]:
    env = dict(os.environ)
    env.pop("DATABASE_URL", None)
    env["DJANGO_SETTINGS_MODULE"] = "rebalancer.settings"
    argv = [
        sys.executable,
        "manage.py",
        "runrebalancer",
        "--simulate",
        "--symbols",
        "AAPL,TSLA",
        "--seed",
        "7",
        "--duration",
        "420",
        "--until-covered",
        "--http",
        f"127.0.0.1:{free_port()}",
        "--db",
        str(tmp_path / "day.sqlite3"),
        *extra,
    ]
    result = subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    return result.returncode, result.stdout + result.stderr


def assert_the_day_holds(code: int, output: str) -> None:
    summary = output[output.find("== the simulated day ==") :]
    assert "== the simulated day ==" in output, output[-6000:]
    for check in CHECKS:
        assert f"[ok] {check}" in summary, summary
    for kind in KINDS:
        assert re.search(rf"^\s+{kind}\s+completed\s+[1-9]", summary, re.M), summary
    assert code == 0, summary


def test_a_simulated_day_completes_every_kind_of_operation_and_the_books_match(tmp_path):
    code, output = simulated_day(tmp_path)
    assert_the_day_holds(code, output)
    # Issue 20: every USDC move converts through USDCUSD, and the summary shows each cost.
    summary = output[output.find("== the simulated day ==") :]
    assert "USDC conversions (USDCUSD at Alpaca)" in summary, summary
    assert re.search(r"usdc_alpaca_to_base\s+buy .* cost ", summary), summary
    assert re.search(r"usdc_base_to_alpaca\s+sell .* cost ", summary), summary


def test_a_day_with_killed_workers_and_venue_faults_still_loses_and_doubles_nothing(tmp_path):
    code, output = simulated_day(tmp_path, "--chaos")
    assert_the_day_holds(code, output)
    chaos = re.search(
        r"chaos: (\d+) process\(es\) SIGKILLed \([^)]*\), \d+ RPC outage\(s\), \d+ "
        r"request\(s\) held past the service's timeout, faults served (\d+)",
        output,
    )
    assert chaos is not None, output[-4000:]
    assert int(chaos[1]) >= 1 and int(chaos[2]) >= 1, chaos[0]


def test_an_existing_database_file_is_refused_and_left_alone(tmp_path):
    existing = tmp_path / "day.sqlite3"
    existing.write_bytes(b"someone's data")
    code, output = simulated_day(tmp_path)
    assert code != 0
    assert "the file exists; a simulated day needs a fresh database" in output
    assert existing.read_bytes() == b"someone's data"

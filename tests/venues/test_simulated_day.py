"""`manage.py runrebalancer --simulate`: a short simulated trading day, without and with chaos.

Each day runs as a real process (the simulated venue, the desk, the service with its workers)
and ends as soon as each kind of operation (mint, redemption, USDC both ways) completed once
(`--until-covered`, a condition, not a sleep; `--duration` only bounds a stuck day). The test
asserts the process's own verdict (exit 0) and each of the four end-of-day checks it printed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.service.support import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.chain]

CHECKS = (
    "1 every operation accounted for",
    "2 effects match operations",
    "3 drift zero after reconcile",
    "4 rebuild_inventory --check clean",
)
LEDGER_CHECK = "cost ledger matches the chains and venues"
KINDS = ("mint", "redemption", "usdc_alpaca_to_base", "usdc_base_to_alpaca")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def day_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("DATABASE_URL", None)
    env["DJANGO_SETTINGS_MODULE"] = "rebalancer.settings"
    return env


def day_argv(tmp_path, *extra: str) -> list[str]:
    return [
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
        "--http",
        f"127.0.0.1:{free_port()}",
        "--db",
        str(tmp_path / "day.sqlite3"),
        *extra,
    ]


def simulated_day(tmp_path, *extra: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    env = day_env() if env is None else env
    argv = day_argv(tmp_path, "--until-covered", *extra)
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
        # Issue 24: what each kind cost, and per 10,000 USD moved.
        assert re.search(
            rf"^\s+{kind}\s+gas \d+\.\d+, circle \d+\.\d+, other \d+\.\d+, total \d+\.\d+; "
            rf"moved \d+\.\d+, per 10,000 USD moved \d+\.\d+$",
            summary,
            re.M,
        ), summary
    assert f"[ok] {LEDGER_CHECK}: " in summary, summary
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


def test_a_monitor_day_records_proposals_and_writes_to_no_venue(tmp_path):
    """REBALANCING_MODE=monitor bin/run: the desk trades, the service reads the venues and
    runs the trigger, and the day ends with proposals recorded, no operation, and the
    end-of-day checks counting zero venue writes. `--until-covered` ends it once each kind was
    proposed."""
    env = day_env() | {"REBALANCING_MODE": "monitor"}
    argv = day_argv(tmp_path, "--until-covered")
    result = subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    output = result.stdout + result.stderr
    summary = output[output.find("== the simulated day ==") :]
    assert "== the simulated day ==" in output, output[-6000:]
    recorded = re.search(
        r"proposals recorded \(REBALANCING_MODE=monitor, nothing started\): (\d+)", summary
    )
    assert recorded is not None and int(recorded[1]) >= 1, summary
    assert "each kind of operation was proposed at least once: ending the day" in output, summary
    for kind in KINDS:
        assert re.search(rf"\b{kind} [1-9]", summary[summary.find("proposals recorded") :]), summary
    assert not re.search(r"^\s+(mint|redemption|usdc_\w+)\s+(completed|failed)", summary, re.M)
    for check in CHECKS:
        assert f"[ok] {check}" in summary, summary
    # Zero venue writes: no Alpaca request, vault move, transfer, burn or deposit counted.
    assert "[ok] 2 effects match operations: no effects" in summary, summary
    assert f"[ok] {LEDGER_CHECK}: 0 transaction(s)" in summary, summary
    assert result.returncode == 0, summary


def test_a_day_of_high_ethereum_gas_defers_usdc_moves_until_gas_falls(tmp_path):
    """Ethereum starts the day at 150 gwei (`--gas-spike`, a real base fee on the simulated
    chain, read by the service as it reads any chain) and the cost gate runs at an ordinary
    REBALANCING_MAX_COST_BPS of 25: the first USDC move is deferred for its cost, recorded
    once per change of state, not once per snapshot; when gas falls to 1 gwei the move starts
    and completes, and the day's checks hold."""
    env = day_env() | {"REBALANCING_MAX_COST_BPS": "25"}
    code, output = simulated_day(tmp_path, "--gas-spike", "150", env=env)
    summary = output[output.find("== the simulated day ==") :]
    assert "== the simulated day ==" in output, output[-6000:]
    assert "the cost gate deferred a USDC move: Ethereum's gas falls to 1 gwei" in output, summary
    fell = re.search(
        r"gas spike: Ethereum at 150 gwei until the cost gate deferred a USDC move \(\d+s\), "
        r"then 1 gwei; USDC moves started after gas fell: (\d+) \(completed (\d+)\)",
        summary,
    )
    assert fell is not None and int(fell[2]) >= 1, summary
    deferred = re.search(
        r"deferrals recorded \(the cost gate held them back\): \d+ \(([^)]*)\)", summary
    )
    assert deferred is not None and re.search(r"usdc_\w+ cost_above_max_bps", deferred[1]), summary
    # Once per change of state: no two USDC deferrals in a row with the same kind and rule
    # and no operation started between them.
    with sqlite3.connect(tmp_path / "day.sqlite3") as db:
        rows = db.execute(
            "SELECT payload FROM inventory_event WHERE aggregate_type = 'RebalanceDecision' "
            "AND aggregate_id = 'USDC' AND event_type LIKE '%::RebalanceDeferred' ORDER BY id"
        ).fetchall()
    states = [
        (body["kind"], body["rule"], body["last_operation_id"])
        for body in (json.loads(payload)["RebalanceDeferred"] for (payload,) in rows)
    ]
    assert states, summary
    assert all(a != b for a, b in zip(states, states[1:], strict=False)), states
    for check in CHECKS:
        assert f"[ok] {check}" in summary, summary
    assert f"[ok] {LEDGER_CHECK}: " in summary, summary
    assert code == 0, summary


def test_an_existing_database_file_is_refused_and_left_alone(tmp_path):
    existing = tmp_path / "day.sqlite3"
    existing.write_bytes(b"someone's data")
    code, output = simulated_day(tmp_path)
    assert code != 0
    assert "the file exists; a simulated day needs a fresh database" in output
    assert existing.read_bytes() == b"someone's data"


class RunningDay:
    """A day started as a terminal would start it: its own process group (the test is not in
    it), output read line by line as it comes."""

    def __init__(self, tmp_path, *extra: str) -> None:
        self.process = subprocess.Popen(
            day_argv(tmp_path, *extra),
            cwd=ROOT,
            env=day_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout_s: float = 300) -> re.Match[str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            match = re.search(pattern, self.output, re.M)
            if match:
                return match
            assert self.process.poll() is None, self.output[-4000:]
            time.sleep(0.2)
        raise AssertionError(f"{pattern!r} not printed in {timeout_s} s: {self.output[-4000:]}")

    def wait_for_a_completed_operation(self, timeout_s: float = 300) -> None:
        url = self.wait_for(r"operator console: (http://\S+)/admin/")[1]
        token = self.wait_for(r"desk API token \(ingest, read\): (\S+)")[1]
        self.wait_for(r"the desk starts trading")
        request = urllib.request.Request(
            f"{url}/api/v1/operations?status=completed&limit=1",
            headers={"Authorization": f"Bearer {token}"},
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.output[-4000:]
            try:
                with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                    if json.loads(response.read()):
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"no operation completed in {timeout_s} s: {self.output[-4000:]}")

    def finish(self, timeout_s: float = 400) -> int:
        try:
            code = self.process.wait(timeout=timeout_s)
        finally:
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
        self._reader.join(timeout=30)
        return code

    def children(self, name: str) -> list[int]:
        """Pids of the day's direct children whose command is `name` (e.g. anvil)."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            command = stat[stat.find("(") + 1 : stat.rfind(")")]
            parent = int(stat[stat.rfind(")") + 2 :].split()[1])
            if parent == self.process.pid and command == name:
                found.append(int(entry.name))
        return found


def test_ctrl_c_in_a_terminal_ends_the_day_with_its_summary_and_checks(tmp_path):
    """Issue 22: a terminal's Ctrl-C sends SIGINT to the whole foreground process group. The
    chains and the venue must outlive the service (they stop last), so the day ends as if only
    the main process had been told: the summary, the four checks held, exit 0."""
    day = RunningDay(tmp_path, "--status-every", "5")
    try:
        day.wait_for_a_completed_operation()
        # The periodic status line: operations by state, pools out of band.
        day.wait_for(r"^\[\d\d:\d\d:\d\d UTC\] operations: .*completed [1-9].*; out of band: ")
        os.killpg(day.process.pid, signal.SIGINT)
    finally:
        code = day.finish()
    output = day.output
    assert "a simulated chain stopped" not in output, output[-6000:]
    assert "Traceback" not in output, output[-6000:]
    summary = output[output.find("== the simulated day ==") :]
    assert "== the simulated day ==" in output, output[-6000:]
    for check in CHECKS:
        assert f"[ok] {check}" in summary, summary
    assert re.search(r"^\s+\S+\s+completed\s+[1-9]", summary, re.M), summary
    assert "the day holds" in summary
    assert code == 0, summary
    # The terminal is for the day's own lines: the desk's and the venue's routine lines are in
    # the logs directory, and the login is printed again with the summary.
    logs = Path(re.search(r"^logs: (\S+) \(", output, re.M)[1])
    assert "submitting market order" not in output
    assert "submitting market order" in (logs / "venues.log").read_text()
    login = re.search(r"^operator login: operator / \S+$", output, re.M)[0]
    assert login in summary and "operator console: http://" in summary, summary
    # No start-up ERROR for the day's own probe of a server not yet up or not yet healthy.
    assert "Service Unavailable: /api/v1/health" not in (logs / "service.log").read_text()


def test_a_chain_that_dies_is_reported_once_and_the_day_still_ends_with_its_checks(tmp_path):
    """A chain that stops mid-day ends the day: said once, no traceback stream, no wait on
    operations that cannot finish, the summary and the four checks printed, exit 1."""
    day = RunningDay(tmp_path)
    try:
        day.wait_for_a_completed_operation()
        anvils = day.children("anvil")
        assert len(anvils) == 2, anvils
        os.kill(max(anvils), signal.SIGKILL)  # the second started: Base
    finally:
        code = day.finish()
    output = day.output
    assert output.count("a simulated chain stopped") == 1, output[-6000:]
    summary = output[output.find("== the simulated day ==") :]
    assert "== the simulated day ==" in output, output[-6000:]
    for check in CHECKS:
        assert re.search(rf"\[(ok|FAILED)\] {re.escape(check)}: ", summary), summary
    assert re.search(r"\[FAILED\] chains up all day: \w+ \(anvil pid", summary), summary
    assert "the day FAILED a check" in summary
    # The venue's settlement thread says so once (in the logs directory), not at every tick.
    assert "Traceback" not in output, output[-6000:]
    logs = Path(re.search(r"^logs: (\S+) \(", output, re.M)[1])
    assert (logs / "venues.log").read_text().count("settlement step failed") == 1
    assert code == 1, summary

"""`manage.py runrebalancer` as a real process against the simulated venue: pre-start checks,
summary, venue polls, the cluster heartbeat, a dead cluster restarted, SIGTERM during a running
step then a restart (nothing repeated), `--once`, `--http`, and two hosts on one PostgreSQL
database sharing the work (each effect once, polls not doubled).

Every wait polls for a condition (loaded 2-core CI); nothing relies on a sleep's length.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pytest
from django.db import connection, connections

from inventory.domain import events as ev
from inventory.models import Event, InventoryPool
from inventory.services import asset_register
from operations.models import ACTIVE_STATUSES, Operation, OperationKind, OperationStatus
from service.models import Heartbeat
from tests.service.support import REBALANCING_ENV, ROOT, database_url
from venues.sim.server import KEY_MINT

pytestmark = [pytest.mark.slow, pytest.mark.chain]

SERVICE_ENV = {
    "Q_WORKERS": "2",
    "Q_TIMEOUT_S": "20",
    "Q_RETRY_S": "25",
    "Q_POLL_S": "0.2",
    "SNAPSHOT_INTERVAL_S": "2",
    "HEARTBEAT_INTERVAL_S": "1",
    "SHUTDOWN_GRACE_S": "20",
    "LOG_LEVEL": "INFO",
}


def wait_until(
    condition: Callable[[], object], what: str, *, timeout_s: float = 180, logs=None
) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    detail = "" if logs is None else "\n" + logs()
    raise AssertionError(f"timed out waiting for {what}{detail}")


@dataclass
class Rebalancer:
    """One `runrebalancer` process (its own process group) and its log."""

    argv: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen | None = None
    history: list[str] = field(default_factory=list)

    def start(self) -> Rebalancer:
        connections.close_all()
        log = open(self.log_path, "a")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            self.argv,
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout_s: float = 60) -> int:
        assert self.process is not None
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"runrebalancer did not exit\n{self.logs()[-8000:]}") from None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        # The cluster runs in a session of its own: kill it by the pid the log names.
        for pid in re.findall(r"cluster started \(pid (\d+)", self.logs()):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(int(pid), signal.SIGKILL)


@pytest.fixture
def rebalancers(worker_env, tmp_path, transactional_db) -> Iterator[Callable[..., Rebalancer]]:
    started: list[Rebalancer] = []

    def start(*args: str, extra_env: dict[str, str] | None = None, name: str = "r") -> Rebalancer:
        env = dict(os.environ)
        env.update(worker_env)
        env.update(SERVICE_ENV)
        env.update(
            {"DATABASE_URL": database_url(), "DJANGO_SETTINGS_MODULE": "rebalancer.settings"}
        )
        env.update(extra_env or {})
        argv = [sys.executable, "manage.py", "runrebalancer", *args]
        rebalancer = Rebalancer(argv, env, tmp_path / f"{name}-{len(started)}.log").start()
        started.append(rebalancer)
        return rebalancer

    yield start
    for rebalancer in started:
        if rebalancer.process is not None and rebalancer.process.poll() is None:
            rebalancer.signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                rebalancer.process.wait(timeout=30)
        rebalancer.kill()


def register_sim_assets(sim_venue, *symbols: str) -> None:
    """Register the sim's equities (only `symbols` when given)."""
    for asset in sim_venue.assets():
        if not symbols or asset["base_symbol"] in symbols:
            asset_register(changed_by="test", **asset)


def offchain_heavy(sim_venue, symbol: str) -> None:
    """Make `symbol` too heavy offchain whatever earlier tests left in its vault (the venue is
    shared by the module): offchain four times the vault plus a million shares."""
    from venues.sim.venue import equity_vault_id

    chains = sim_venue.chains
    units = chains.vault_balance(
        sim_venue.market_maker.address,
        sim_venue.equity_tokens[symbol],
        bytes.fromhex(equity_vault_id(symbol).removeprefix("0x")),
    )
    sim_venue.server.set_position(symbol, Decimal(units) / Decimal(10**18) * 4 + 1_000_000)


def heartbeat_after(name: str, moment: float) -> bool:
    from datetime import UTC, datetime

    beat = Heartbeat.objects.filter(name=name).first()
    return beat is not None and beat.at.timestamp() > moment and beat.at <= datetime.now(UTC)


def mint_requests_for(sim_venue, aggregate_id: str) -> int:
    return sum(
        1
        for request in sim_venue.server.tokenization_requests()
        if request.get("issuer_request_id") == aggregate_id
    )


# --- pre-start checks ---------------------------------------------------------------------------


def test_preflight_reports_every_problem_in_one_message_without_secrets(tmp_path):
    env = dict(os.environ)
    env.update(REBALANCING_ENV)
    env.update(
        {
            "DATABASE_URL": f"sqlite:///{tmp_path / 'fresh.sqlite3'}",
            "DJANGO_SETTINGS_MODULE": "rebalancer.settings",
            "BASE_RPC_URL": "http://127.0.0.1:9/v2/secret-rpc-key-42",
            "ALPACA_BASE_URL": "http://127.0.0.1:9",
        }
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "runrebalancer", "--once"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    message = result.stderr
    assert "runrebalancer cannot start" in message
    assert "migration(s) not applied" in message
    assert "admin.0001_initial" in message
    assert "more): run" in message  # a long list is cut, with its count
    assert "python manage.py migrate" in message
    assert "venue base (http://127.0.0.1:9/…) unreachable" in message
    assert "venue ethereum (http://127.0.0.1:1) unreachable" in message
    assert "venue alpaca (http://127.0.0.1:9) unreachable" in message
    assert "secret-rpc-key-42" not in message + result.stdout
    assert "Traceback" not in message


# --- running ------------------------------------------------------------------------------------


def test_runs_polls_beats_and_stops_on_sigterm_with_exit_0(sim_venue, rebalancers):
    register_sim_assets(sim_venue)
    offchain_heavy(sim_venue, "MSFT")
    started = time.time()
    service = rebalancers("--workers", "2")
    wait_until(
        lambda: heartbeat_after("cluster", started), "a cluster heartbeat", logs=service.logs
    )
    wait_until(
        lambda: heartbeat_after("venue:base", started) and heartbeat_after("venue:alpaca", started),
        "both venues read",
        logs=service.logs,
    )
    pool = InventoryPool.objects.get(key="MSFT")
    assert pool.offchain_observed and pool.onchain_observed
    logs = service.logs()
    for line in (
        "runrebalancer starting",
        "database: ",
        "broker: ORM",
        "workers: 2",
        "venues: base http://127.0.0.1:",
        "asset AAPL (tAAPL",
        "rebalancing: enabled",
        "runrebalancer running",
    ):
        assert line in logs, line
    # The health check passes while it runs.
    health = subprocess.run(
        [sys.executable, "manage.py", "health", "--json"],
        cwd=ROOT,
        env=service.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert health.returncode == 0, health.stdout + health.stderr
    assert json.loads(health.stdout)["healthy"] is True

    service.signal(signal.SIGTERM)
    assert service.wait() == 0
    assert "runrebalancer stopped" in service.logs()


def test_a_dead_cluster_is_restarted(sim_venue, rebalancers):
    register_sim_assets(sim_venue)
    service = rebalancers()

    def started() -> list[str]:
        return re.findall(r"cluster started \(pid (\d+)", service.logs())

    def more_than(count: int) -> Callable[[], bool]:
        return lambda: len(started()) > count

    wait_until(started, "the cluster to start", logs=service.logs)
    wait_until(lambda: Heartbeat.objects.filter(name="cluster").exists(), "a heartbeat")
    while True:
        before = started()
        try:
            # The newest cluster: on a loaded machine the supervisor may already have replaced
            # the first one (its log says why); kill whichever runs now.
            os.killpg(int(before[-1]), signal.SIGKILL)
            break
        except ProcessLookupError:
            wait_until(more_than(len(before)), "the replacement", logs=service.logs)
    killed_at = time.time()
    wait_until(
        lambda: "cluster died: restarting it" in service.logs() and len(started()) > len(before),
        "the supervisor to notice and start another cluster",
        logs=service.logs,
    )
    wait_until(
        lambda: heartbeat_after("cluster", killed_at + 0.5),
        "a heartbeat from the restarted cluster",
        logs=service.logs,
    )
    assert started()[len(before)] != before[-1]


def test_a_worker_killed_mid_step_loses_nothing_and_doubles_nothing(sim_venue, rebalancers):
    """SIGKILL the worker running a mint's Alpaca request: the supervisor replaces the cluster
    and delivers the lost task again at once (a task timeout and retry of minutes would hold
    the operation until the poll below gives up); the mint completes with one request."""
    register_sim_assets(sim_venue, "AAPL")
    hold = sim_venue.server.hold_next(KEY_MINT)
    posts_before = sim_venue.server.request_count(KEY_MINT)
    offchain_heavy(sim_venue, "AAPL")
    service = rebalancers(extra_env={"Q_TIMEOUT_S": "600", "Q_RETRY_S": "900"})
    wait_until(lambda: hold.arrived.is_set(), "the mint request in flight", logs=service.logs)
    operation = Operation.objects.get(kind=OperationKind.MINT, pool="AAPL")
    worker = int(operation.claimed_by.split(":")[1])
    # Kill only once the supervisor watches every process of the cluster: a worker killed
    # before the supervisor first looked is recovered by the sweep alone (a loaded CI box did
    # that: the mint completed, but no supervisor saw the worker go).
    watched = wait_until(
        lambda: re.search(r"cluster ready: processes \[([\d, ]+)\] watched", service.logs()),
        "the supervisor to watch the whole cluster",
        logs=service.logs,
    )
    assert worker in {int(pid) for pid in watched[1].split(",")}
    os.kill(worker, signal.SIGKILL)
    hold.release()  # the request arrived: the venue records it, its answer finds no one
    operation = wait_until(
        lambda: (op := Operation.objects.get(pk=operation.pk)).status not in ACTIVE_STATUSES and op,
        "the mint to finish after its worker was killed",
        timeout_s=240,
        logs=service.logs,
    )
    assert operation.status == OperationStatus.COMPLETED, operation.failure_reason
    # The supervisor sees the watched worker gone at its next look, which a loaded machine may
    # delay past the mint's completion (the sweep delivered the task again meanwhile).
    wait_until(
        lambda: f"cluster unhealthy (cluster process(es) [{worker}] ended" in service.logs(),
        "the supervisor to see the killed worker gone",
        logs=service.logs,
    )
    assert mint_requests_for(sim_venue, operation.aggregate_id) == 1
    assert sim_venue.server.request_count(KEY_MINT) == posts_before + 1
    deposits = Event.objects.filter(
        aggregate_id=operation.aggregate_id,
        event_type=ev.DepositedIntoVault.event_type_name(),
    )
    assert deposits.count() == 1
    service.signal(signal.SIGTERM)
    assert service.wait() == 0


def test_a_frozen_cluster_is_replaced(sim_venue, rebalancers):
    """Every process under the sentinel stopped (SIGSTOP: alive, but no task runs): once no
    heartbeat ran for the stall limit, the supervisor replaces the cluster."""
    from service.supervisor import cluster_members

    register_sim_assets(sim_venue)
    service = rebalancers(extra_env={"Q_TIMEOUT_S": "5", "Q_RETRY_S": "8"})
    leader = int(
        wait_until(
            lambda: (m := re.search(r"cluster started \(pid (\d+)", service.logs())) and m[1],
            "the cluster to start",
            logs=service.logs,
        )
    )
    wait_until(lambda: Heartbeat.objects.filter(name="cluster").exists(), "a heartbeat")
    members = cluster_members(leader)
    assert members, "no cluster processes found under /proc"
    for pid in members:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    frozen_at = time.time()
    wait_until(
        lambda: "cluster unhealthy (no heartbeat task ran" in service.logs(),
        "the supervisor to judge the cluster stalled",
        timeout_s=180,
        logs=service.logs,
    )
    wait_until(
        lambda: heartbeat_after("cluster", frozen_at + 1),
        "a heartbeat from the new cluster",
        timeout_s=120,
        logs=service.logs,
    )


def test_sigterm_during_a_running_step_finishes_it_and_restart_repeats_nothing(
    sim_venue, rebalancers
):
    register_sim_assets(sim_venue, "AAPL")
    sim_venue.server.set_knobs(hang_s=3.0)
    sim_venue.server.fail_next(KEY_MINT, "hang")
    requests_before = sim_venue.server.request_count(KEY_MINT)
    # Too much AAPL offchain: the first poll triggers a mint.
    offchain_heavy(sim_venue, "AAPL")
    service = rebalancers()
    wait_until(
        lambda: sim_venue.server.request_count(KEY_MINT) > requests_before,
        "the mint request to be in flight",
        logs=service.logs,
    )
    service.signal(signal.SIGTERM)
    assert service.wait() == 0
    operation = Operation.objects.get(kind=OperationKind.MINT, pool="AAPL")
    # The step that was running finished: its outcome is recorded.
    accepted = Event.objects.filter(
        aggregate_id=operation.aggregate_id, event_type=ev.MintAccepted.event_type_name()
    )
    assert accepted.exists(), service.logs()[-6000:]

    again = rebalancers(name="restart")
    operation = wait_until(
        lambda: (op := Operation.objects.get(pk=operation.pk)).status not in ACTIVE_STATUSES and op,
        "the mint to finish after the restart",
        timeout_s=90,
        logs=again.logs,
    )
    assert operation.status == OperationStatus.COMPLETED, operation.failure_reason
    assert mint_requests_for(sim_venue, operation.aggregate_id) == 1
    assert sim_venue.server.request_count(KEY_MINT) == requests_before + 1
    again.signal(signal.SIGTERM)
    assert again.wait() == 0


def test_once_polls_sweeps_runs_what_is_due_and_exits(sim_venue, rebalancers):
    register_sim_assets(sim_venue, "MSFT")
    offchain_heavy(sim_venue, "MSFT")
    service = rebalancers("--once")
    assert service.wait(timeout_s=120) == 0, service.logs()
    assert "runrebalancer --once: done" in service.logs()
    assert Event.objects.filter(event_type=ev.OffchainEquity.event_type_name()).exists()
    operation = Operation.objects.get(kind=OperationKind.MINT, pool="MSFT")
    # Advanced in this process as far as it could go (the mint was requested).
    assert Event.objects.filter(
        aggregate_id=operation.aggregate_id, event_type=ev.MintRequested.event_type_name()
    ).exists()
    assert "cluster started" not in service.logs()


def test_http_serves_health_and_the_admin_with_static_files(sim_venue, rebalancers):
    register_sim_assets(sim_venue)
    with socket_port() as port:
        pass
    service = rebalancers("--http", f"127.0.0.1:{port}")
    base = f"http://127.0.0.1:{port}"

    def get(path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(base + path, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()
        except OSError:
            return 0, b""

    wait_until(lambda: get("/api/v1/health")[0] in (200, 503), "the http server", logs=service.logs)
    status, body = wait_until(
        lambda: (r := get("/api/v1/health"))[0] == 200 and r,
        "a healthy answer",
        logs=service.logs,
    )
    # without a token only the overall status (issue 19): healthy covers the database check
    assert json.loads(body) == {"healthy": True}
    assert get("/admin/login/")[0] == 200
    status, css = get("/static/admin/css/base.css")
    assert status == 200 and b"{" in css
    assert "waitress" in service.logs() or "http: serving on" in service.logs()


class socket_port:
    """A free TCP port (bound then released)."""

    def __enter__(self) -> int:
        import socket

        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        return self._socket.getsockname()[1]

    def __exit__(self, *exc: object) -> None:
        self._socket.close()


# --- several hosts ------------------------------------------------------------------------------


def test_two_hosts_on_postgresql_share_the_work_each_effect_once(sim_venue, rebalancers):
    if connection.vendor != "postgresql":
        pytest.skip("several hosts share one PostgreSQL database (DATABASE_URL=postgres://...)")
    register_sim_assets(sim_venue)
    mints_before = sim_venue.server.request_count(KEY_MINT)
    offchain_heavy(sim_venue, "AAPL")
    offchain_heavy(sim_venue, "MSFT")
    # One mint per symbol: after it, whatever the next polls see is below the minimum.
    env = {"SNAPSHOT_INTERVAL_S": "3", "EQUITY_MINIMUM_SHARES": "300000"}
    first = rebalancers(name="host-a", extra_env=env)
    second = rebalancers(name="host-b", extra_env=env)

    def both_logs() -> str:
        def interesting(text: str) -> str:
            lines = [line for line in text.splitlines() if "heartbeat" not in line]
            return "\n".join(lines[-60:])

        rows = "\n".join(str(o) + " " + o.last_error[:200] for o in Operation.objects.all())
        return f"{rows}\n=== host-a\n{interesting(first.logs())}\n=== host-b\n" + interesting(
            second.logs()
        )

    def finished() -> list[Operation] | None:
        operations = list(Operation.objects.filter(kind=OperationKind.MINT).order_by("pool"))
        if {o.pool for o in operations} == {"AAPL", "MSFT"} and all(
            o.status not in ACTIVE_STATUSES for o in operations
        ):
            return operations
        return None

    operations = wait_until(finished, "both mints to finish", timeout_s=150, logs=both_logs)
    for operation in operations:
        assert operation.status == OperationStatus.COMPLETED, operation.failure_reason
        assert mint_requests_for(sim_venue, operation.aggregate_id) == 1
    assert sim_venue.server.request_count(KEY_MINT) == mints_before + len(operations)
    # Both hosts ran (each started its cluster) ...
    assert "cluster started" in first.logs() and "cluster started" in second.logs()

    # ... and polls were never doubled: consecutive polls at least one interval apart.
    # The mints can finish before a second poll is due: wait for polls, never assume them.
    def polls_recorded() -> list | None:
        fetched = sorted(
            row.domain_event().fetched_at
            for row in Event.objects.filter(event_type=ev.OnchainEquity.event_type_name())
        )
        return fetched if len(fetched) >= 3 else None

    polls = wait_until(polls_recorded, "three onchain polls", timeout_s=120, logs=both_logs)
    gaps = [(b - a).total_seconds() for a, b in zip(polls, polls[1:], strict=False)]
    assert min(gaps) >= 2.9, gaps
    for service in (first, second):
        service.signal(signal.SIGTERM)
    assert first.wait() == 0 and second.wait() == 0


@pytest.mark.parametrize("given", ["0", "-1"])
def test_a_simulated_day_refuses_a_status_interval_that_is_not_positive(given, tmp_path):
    from django.core.management import CommandError, call_command

    db = tmp_path / "day.sqlite3"
    with pytest.raises(CommandError, match=f"--status-every {float(given)}: must be > 0 seconds"):
        call_command("runrebalancer", "--simulate", "--status-every", given, "--db", str(db))
    assert not db.exists()  # refused before anything starts

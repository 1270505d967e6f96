"""Workflow test harness: one simulated venue per test module, its config and venue clients,
and (for the end-to-end tests) real `qcluster` worker processes plus the due loop.

Fixtures (reuse from another conftest with
`from tests.operations.conftest import sim_venue, worker_env, venue_config, venues, sim_assets,
workers`):

- `sim_venue` (module): `venues.sim.venue.SimVenue` (two anvils + Alpaca/Iris server), AAPL and
  MSFT tokens, large brokerage positions and cash, fast knobs. Tests share it: assert on
  records of their own operation (issuer_request_id, tx hash) or on deltas.
- `worker_env` (module): the sim's env plus fast worker settings (polls, backoff) as strings.
- `venue_config` (module): `RebalancingConfig` parsed from `worker_env` (what settings would
  hold in a worker process); `venues`: `operations.venues.Venues` built from it.
- `sim_assets` (function, db): the sim's equities registered in the Asset table.
- `workers` (function, transactional db): a factory `workers(extra_env=None) -> WorkerCluster`
  starting `manage.py qcluster` + `manage.py operation due-loop` on the file test database;
  `.stop()` / `.kill()` / `.restart()`; killed at teardown.
Helpers: `advance_until_finished(operation, venues)` runs the runner in-process until the
operation is terminal.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pytest
from django.db import connections

from conf.env import EnvReader, RebalancingConfig, load_rebalancing_config
from inventory.domain import onchain_tx
from inventory.domain.aggregate import AggregateSpec
from inventory.services import asset_register
from inventory.store import StoredEvent, aggregate_load
from operations.models import Operation
from operations.venues import Venues
from operations.workflows import AdvanceResult, operation_advance
from tests.service.support import ROOT, database_url
from venues.sim.venue import SimKnobs, SimVenue

FAST_WORKER_ENV = {
    "REBALANCER_POLL_INTERVAL_S": "0.3",
    "REBALANCER_TX_POLL_INTERVAL_S": "0.2",
    "REBALANCER_BACKOFF_BASE_S": "0.2",
    "REBALANCER_BACKOFF_MAX_S": "2",
    "REBALANCER_DUE_INTERVAL_S": "0.3",
}
FAST_KNOBS = SimKnobs(
    tick_s=0.05,
    mint_delay_s=0.3,
    redemption_detect_delay_s=0.1,
    redemption_complete_delay_s=0.3,
)


def step_events(spec: AggregateSpec, aggregate_id: str) -> list[StoredEvent]:
    """An operation's stored events without its cost ledger (`TransactionCostRecorded` and
    `VenueCostRecorded` are part of the same log but record receipts, not steps: the ledger's
    own tests read them)."""
    loaded = aggregate_load(spec, aggregate_id)
    return [s for s in loaded.events if not onchain_tx.is_ledger(s.event)]


def unvalidated_operation(kind: str, pool: str, amount: str, token_address: str = "") -> Operation:
    """An active row with an amount `operation_create` refuses (issue 9), as a row written
    before that validation or by hand would be: the worker must still fail it before any
    event."""
    import uuid

    return Operation.objects.create(
        kind=kind,
        pool=pool,
        amount=Decimal(amount),
        token_address=token_address,
        aggregate_id=str(uuid.uuid4()),
    )


@pytest.fixture(scope="module")
def sim_venue() -> Iterator[SimVenue]:
    venue = SimVenue(
        knobs=FAST_KNOBS,
        equity_symbols=("AAPL", "MSFT"),
        positions={"AAPL": Decimal(1_000_000), "MSFT": Decimal(1_000_000)},
        cash_usd=Decimal(10_000_000),
    )
    with venue:
        yield venue
        assert venue.server.errors() == []


@pytest.fixture(scope="module")
def worker_env(sim_venue: SimVenue) -> dict[str, str]:
    return {**sim_venue.env(), **FAST_WORKER_ENV}


def config_from_env(env: dict[str, str]) -> RebalancingConfig:
    reader = EnvReader(env)
    config = load_rebalancing_config(reader)
    reader.fail_if_problems()
    return config


@pytest.fixture(scope="module")
def venue_config(worker_env: dict[str, str]) -> RebalancingConfig:
    return config_from_env(worker_env)


@pytest.fixture(scope="module")
def venues(venue_config: RebalancingConfig) -> Venues:
    return Venues.from_config(venue_config)


@pytest.fixture
def sim_assets(sim_venue: SimVenue, db) -> dict[str, str]:
    """Register the sim's equities; returns symbol -> token address."""
    for asset in sim_venue.assets():
        asset_register(changed_by="test", **asset)
    return dict(sim_venue.equity_tokens)


def advance_until_finished(
    operation: Operation, venues: Venues, *, timeout_s: float = 180.0
) -> list[AdvanceResult]:
    """Run the runner in-process (as a worker would) until the operation is terminal."""
    results: list[AdvanceResult] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = operation_advance(operation_id=operation.pk, venues=venues)
        results.append(result)
        operation.refresh_from_db()
        if not operation.is_active:
            return results
        time.sleep(min(result.wait_s or 0.05, 0.3))
    raise AssertionError(f"operation {operation.pk} still {operation.status}: {results[-5:]}")


# --- real worker processes --------------------------------------------------------------------


def release_dead_tasks() -> int:
    """Once every worker is dead: forget the rows' queued marks, as runrebalancer's supervisor
    does when it replaces its cluster (`operations.due.queued_marks_release`: the tasks the
    dead cluster held are gone), so the next due loop enqueues those operations at once. The
    leases of the dead workers are voided by the due loop itself (their processes are gone)."""
    from operations.due import queued_marks_release

    return queued_marks_release()


@dataclass
class WorkerCluster:
    env: dict[str, str]
    log_dir: Path
    processes: list[subprocess.Popen] = field(default_factory=list)
    generation: int = 0

    def start(self) -> WorkerCluster:
        connections.close_all()
        self.generation += 1
        for name, argv in (
            ("qcluster", [sys.executable, "manage.py", "qcluster"]),
            ("due", [sys.executable, "manage.py", "operation", "due-loop"]),
        ):
            log = open(self.log_dir / f"{name}-{self.generation}.log", "w")  # noqa: SIM115
            self.processes.append(
                subprocess.Popen(
                    argv,
                    cwd=ROOT,
                    env=self.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        return self

    def kill(self) -> None:
        """kill -9 every process of the cluster (workers included: whole process groups),
        then release what the dead cluster held (`release_dead_tasks`)."""
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=60)
        self.processes.clear()
        release_dead_tasks()

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=60)
        self.processes.clear()

    def restart(self) -> WorkerCluster:
        self.kill()
        return self.start()

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-6000:]}"
            for path in sorted(self.log_dir.glob("*.log"))
        )


@pytest.fixture
def workers(worker_env: dict[str, str], tmp_path: Path, transactional_db):
    started: list[WorkerCluster] = []

    def start(extra_env: dict[str, str] | None = None) -> WorkerCluster:
        env = dict(os.environ)
        env.update(worker_env)
        env.update(
            {
                "DATABASE_URL": database_url(),
                "DJANGO_SETTINGS_MODULE": "rebalancer.settings",
                "Q_WORKERS": "2",
                # Far above what one task takes on a loaded 2-core machine: a worker step cut
                # off by the task timeout would fail the proof for timing, not for a defect.
                "Q_TIMEOUT_S": "120",
                "Q_RETRY_S": "150",
                "Q_POLL_S": "0.2",
                "REBALANCER_CHAOS_DIR": str(tmp_path / "chaos"),
                "LOG_LEVEL": "INFO",
            }
        )
        env.update(extra_env or {})
        cluster = WorkerCluster(env=env, log_dir=tmp_path).start()
        started.append(cluster)
        return cluster

    yield start
    # The test is over: nothing needs a graceful shutdown (which waited up to 30 s per test for
    # the cluster's workers), so the whole process groups are killed, as after a crash.
    for cluster in started:
        cluster.kill()

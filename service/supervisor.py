"""The service process behind `python manage.py runrebalancer`.

`Service(options).run()`:
1. pre-start checks, all reported together (`PreflightFailed`): migrations applied, database
   reachable, every venue reachable (named, with what failed; URLs and keys redacted);
2. a start-up summary (database, broker, workers, venues, assets and thresholds, enabled or
   paused);
3. the market clock, the sweep (re-enqueue interrupted operations), the first venue poll;
4. then supervises, until `request_stop()` (SIGINT/SIGTERM in the command):
   - the django-q2 cluster (`manage.py qcluster`: workers and scheduler) as a child process,
   - the due-operations loop and the ticker (venue polls every SNAPSHOT_INTERVAL_S, the
     cluster heartbeat task, the market clock, the nonce filler sweep every
     REBALANCER_TX_POLL_INTERVAL_S), as threads,
   - with `--http`, a waitress WSGI server for the API and the admin,
   restarting whichever dies. The cluster is watched part by part (`ClusterProcess.problem`):
   when any of its processes ends (a worker, the monitor, the pusher or the sentinel, e.g.
   SIGKILLed or OOM-killed) or its heartbeat task stops running, the whole cluster is killed
   and started afresh, and the operations it held are due again at once (their leases and
   queued marks released in the database: `operations.due`). django-q2's sentinel respawns a
   dead worker, monitor or pusher by itself, but its processes share multiprocessing queues
   whose locks die with their holder: a worker killed while it waits on the task queue holds
   that queue's read lock for good (no worker gets a task again). Respawning cannot free it;
   only a new cluster (new queues) can;
5. on stop: no new work is taken (the ticker and due loop stop, the cluster gets SIGTERM and
   lets running steps finish), bounded by SHUTDOWN_GRACE_S, then exit 0. Every step is
   durable, so the next start resumes what was interrupted.

`--once` (for cron) does 1 and 3, advances every due operation in this process, and returns.

Several hosts may run it on one PostgreSQL database: operations are claimed with a lease by
the runner (one host advances an operation at a time) and periodic jobs are claimed through
`service.periodic` (a poll is never doubled).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from django.conf import settings
from django.db import close_old_connections, connection, connections
from django.db.migrations.executor import MigrationExecutor

logger = logging.getLogger(__name__)

SUPERVISE_INTERVAL_S = 0.5
TICK_INTERVAL_S = 1.0
RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)
POLL_SCHEDULE_NAME = "rebalancer.poll"


class PreflightFailed(Exception):
    """One or more pre-start checks failed; `problems` lists every one."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(f"runrebalancer cannot start ({len(problems)} problem(s)):\n{lines}")


@dataclass(frozen=True)
class ServiceOptions:
    workers: int | None = None
    http: str | None = None  # HOST:PORT
    once: bool = False
    grace_s: float | None = None
    check_venues: bool = True


# --- pre-start checks ---------------------------------------------------------------------


def _database_label() -> str:
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite {db['NAME']}"
    host = db.get("HOST") or "localhost"
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"{connection.vendor} {db.get('NAME')} at {host}{port}"


def _redacted_url(url: Any) -> str:
    from venues.chain import redact_url

    raw = url.reveal() if hasattr(url, "reveal") else str(url)
    return redact_url(raw)


def database_problems() -> list[str]:
    try:
        connection.ensure_connection()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as error:  # noqa: BLE001 - reported with the others
        # Driver messages can carry the DSN; name the database by its redacted label only.
        return [f"database ({_database_label()}) unreachable: {type(error).__name__}"]
    return []


def migration_problems() -> list[str]:
    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if not plan:
        return []
    names = [f"{migration.app_label}.{migration.name}" for migration, _ in plan]
    shown = ", ".join(names[:12]) + (f", and {len(names) - 12} more" if len(names) > 12 else "")
    return [f"{len(names)} migration(s) not applied ({shown}): run `python manage.py migrate`"]


def venue_problems() -> list[str]:
    """Reach each venue once (reads only); each failure names the venue and what failed."""
    from operations.venues import Venues, VenuesNotConfigured

    config = settings.REBALANCING
    try:
        venues = Venues.from_config(config)
    except VenuesNotConfigured as error:
        return [str(error)]
    problems = []
    checks: list[tuple[str, Callable[[], object]]] = [
        (f"base ({_redacted_url(config.base_rpc_url)})", lambda: venues.base.block_number()),
        (
            f"ethereum ({_redacted_url(config.ethereum_rpc_url)})",
            lambda: venues.ethereum.block_number(),
        ),
        (f"alpaca ({_redacted_url(venues.alpaca.base_url)})", lambda: venues.alpaca.account()),
    ]
    for label, check in checks:
        try:
            check()
        except Exception as error:  # noqa: BLE001 - reported with the others
            problems.append(f"venue {label} unreachable: {type(error).__name__}: {error}")
    if config.raindex_inventory and not problems:
        problems += inventory_role_problems(venues)
    return problems


def inventory_role_problems(venues: Any) -> list[str]:
    """Managed vaults (spec 15.6): our wallet must hold the `RaindexInventory`'s
    OPERATOR_ROLE, or every vault deposit and withdrawal would revert."""
    inventory = venues.config.raindex_inventory
    wallet = venues.market_maker_wallet
    try:
        granted = venues.base.has_operator_role(inventory=inventory, account=wallet)
    except Exception as error:  # noqa: BLE001 - reported with the others
        return [
            f"RAINDEX_INVENTORY {inventory}: cannot read its OPERATOR_ROLE (is it a "
            f"RaindexInventory on Base?): {type(error).__name__}: {error}"
        ]
    if granted:
        return []
    return [
        f"RAINDEX_INVENTORY {inventory}: MARKET_MAKER_WALLET {wallet} does not hold its "
        "OPERATOR_ROLE, so every vault deposit and withdrawal would revert: grant the role, "
        "or unset RAINDEX_INVENTORY if our wallet owns the vaults on the order book"
    ]


def preflight_problems(*, check_venues: bool = True) -> list[str]:
    problems = database_problems()
    if not problems:
        problems += migration_problems()
    if check_venues and settings.REBALANCING.enabled:
        problems += venue_problems()
    return problems


# --- start-up summary ---------------------------------------------------------------------


def startup_summary(options: ServiceOptions) -> list[str]:
    from inventory.selectors import rebalancing_settings_get
    from inventory.services import settings_row_ensure

    config = settings.REBALANCING
    q = settings.Q_CLUSTER
    broker = f"redis {_redacted_url(q['redis'])}" if q.get("redis") else "ORM (the database)"
    lines = [
        f"database: {_database_label()}",
        f"broker: {broker}",
        f"workers: {options.workers or q['workers']} "
        f"(task timeout {q['timeout']}s, retry {q['retry']}s)",
    ]
    if config.enabled:
        lines.append(
            "venues: "
            + ", ".join(
                [
                    f"base {_redacted_url(config.base_rpc_url)}",
                    f"ethereum {_redacted_url(config.ethereum_rpc_url)}",
                    f"alpaca {_redacted_url(config.alpaca_base_url or 'default')}",
                    f"circle iris {_redacted_url(config.circle_iris_url)}",
                ]
            )
        )
        owner = (
            f"vaults owned by RaindexInventory {config.raindex_inventory}, operated by "
            f"{config.market_maker_wallet}"
            if config.raindex_inventory
            else f"owner {config.market_maker_wallet}"
        )
        lines.append(f"order book: {config.base_orderbook} ({owner})")
    else:
        lines.append("venues: none (REBALANCING_MODE is off)")
    settings_row_ensure()
    current = rebalancing_settings_get()
    usdc = current.threshold_for("USDC")
    lines.append(
        f"USDC: target {usdc.target} ± {usdc.deviation}, minimum {current.usdc_minimum}"
        + (f", cap {current.usdc_cap}" if current.usdc_cap is not None else "")
    )
    from inventory.models import Asset

    assets = list(Asset.objects.order_by("base_symbol"))
    if not assets:
        lines.append("assets: none registered")
    for asset in assets:
        band = current.threshold_for(asset.base_symbol)
        state = "enabled" if asset.rebalancing_enabled else "disabled"
        lines.append(
            f"asset {asset.base_symbol} ({asset.token_symbol} {asset.token_address}): "
            f"target {band.target} ± {band.deviation}, {state}"
        )
    if not config.enabled:
        state = "disabled (REBALANCING_MODE=off)"
    elif config.monitor_only:
        state = "monitor only (REBALANCING_MODE=monitor): proposals recorded, no venue write"
    elif current.paused:
        state = "paused by an operator"
    else:
        state = "enabled"
    lines.append(f"rebalancing: {state}")
    lines.append(f"venue poll: every {settings.SERVICE.snapshot_interval_s:g}s")
    if options.http:
        lines.append(f"http: http://{options.http}/ (API /api/v1/, admin /admin/)")
    return lines


# --- start-up work ------------------------------------------------------------------------


def service_schedules_ensure() -> None:
    """The django-q schedules runrebalancer relies on (idempotent): the sweep, the venue poll
    as a backstop for hosts without a ticker (claimed, so never doubled) and the hourly
    reconcile."""
    from django_q.models import Schedule

    from operations.sweep import sweep_schedule_ensure
    from service.poller import POLL_TASK
    from service.reconcile import RECONCILE_FUNC, RECONCILE_SCHEDULE_NAME

    sweep_schedule_ensure()
    minutes = max(1, round(settings.SERVICE.snapshot_interval_s / 60))
    Schedule.objects.update_or_create(
        name=POLL_SCHEDULE_NAME,
        defaults={
            "func": POLL_TASK,
            "schedule_type": Schedule.MINUTES,
            "minutes": minutes,
            "repeats": -1,
        },
    )
    Schedule.objects.update_or_create(
        name=RECONCILE_SCHEDULE_NAME,
        defaults={"func": RECONCILE_FUNC, "schedule_type": Schedule.HOURLY, "repeats": -1},
    )


def startup_work(*, once: bool = False) -> None:
    """Market clock, sweep and the first venue poll (each failure logged, never fatal)."""
    from operations.due import queued_marks_release
    from operations.sweep import sweep_nonce_fills, sweep_operations
    from service.market import market_clock_refresh
    from service.poller import venue_balances_poll, venue_poll_if_due

    if settings.REBALANCING.enabled:
        market_clock_refresh(force=True)
    # Tasks a previous run held in its cluster's buffer died with it (one still in the broker
    # is delivered twice; the runner's lease makes that harmless).
    queued_marks_release()
    enqueued = sweep_operations()
    logger.info(
        "start-up sweep: %d interrupted operation(s) re-enqueued %s", len(enqueued), enqueued
    )
    if not settings.REBALANCING.enabled:
        return
    try:
        if settings.REBALANCING.writes:  # the filler sends transactions: not in monitor mode
            sweep_nonce_fills()
    except Exception:
        logger.exception("start-up nonce filler sweep failed; the ticker tries again")
    try:
        # The cost gate's gas prices, before the first poll runs the trigger (issue 24).
        from operations.costgate import gas_quotes_refresh

        gas_quotes_refresh()
    except Exception:
        logger.exception("start-up gas quotes failed; the ticker tries again")
    if once:
        venue_balances_poll()
    elif venue_poll_if_due() is None:
        logger.info("start-up venue poll skipped: another host polled in this period")


def run_due_operations() -> int:
    """`--once`: advance every due operation in this process; returns how many ran."""
    from django.db.models import Q
    from django.utils import timezone

    from operations.models import ACTIVE_STATUSES, Operation, OperationStatus
    from operations.workflows import operation_advance

    now = timezone.now()
    due = (
        Operation.objects.filter(status__in=ACTIVE_STATUSES)
        .filter(
            ~Q(status=OperationStatus.WAITING)
            | Q(next_run_at__isnull=True)
            | Q(next_run_at__lte=now)
        )
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    count = 0
    for operation_id in list(due):
        result = operation_advance(operation_id=operation_id)
        logger.info("once: operation %s %s %s", operation_id, result.outcome, result.detail)
        count += 1
    return count


# --- supervised children ------------------------------------------------------------------


class Child:
    """Something the supervisor starts, watches and restarts."""

    name: str

    def start(self) -> None:
        raise NotImplementedError

    def alive(self) -> bool:
        raise NotImplementedError

    def stop(self, deadline: float) -> None:
        raise NotImplementedError

    def problem(self) -> str | None:
        """Why a child that is alive must be replaced (None: it is fine)."""
        return None

    def kill(self) -> None:
        """End a child that `problem()` condemned (then restarted like a dead one)."""
        self.stop(time.monotonic() + 5)


@dataclass
class ClusterProcess(Child):
    """`manage.py qcluster` in its own process group (workers and scheduler).

    `problem()` says why a running cluster must be replaced: one of its processes (the
    sentinel or one of the sentinel's children: workers, monitor, pusher) ended, or, once all
    of them are up, the heartbeat task has not run for `stall_s` (a wedged queue; a cluster
    still booting on a loaded host is not judged). A worker django-q2 recycles or
    replaces after a task timeout counts as ended too: the cluster is replaced, which costs a
    second and loses nothing (steps are durable, the rows say what is due). Before each
    start the leases and queued marks of the previous cluster are released (`operations.due`)."""

    env: dict[str, str]
    log: TextIO | None = None
    name: str = "cluster"
    process: subprocess.Popen[bytes] | None = None
    stall_s: float | None = None
    members: set[int] = field(default_factory=set)
    ready_at: float | None = None  # wall time at which all its processes were up

    def start(self) -> None:
        from operations.due import dead_leases_release, queued_marks_release

        if self.process is not None:
            # What the previous cluster held is lost with it: its workers' leases and the tasks
            # in its buffer. The group goes first, even when its leader is already gone (a
            # sentinel or worker may outlive it); then the rows say so, and the due loop
            # enqueues those operations again at once.
            self.kill()
            try:
                dead_leases_release()
                queued_marks_release()
            except Exception:
                logger.exception("could not release the lost leases (they expire later)")
        self.members = set()
        self.ready_at = None
        connections.close_all()
        manage = Path(settings.BASE_DIR) / "manage.py"
        self.process = subprocess.Popen(
            [sys.executable, str(manage), "qcluster"],
            cwd=str(settings.BASE_DIR),
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT if self.log is not None else None,
            start_new_session=True,
        )
        logger.info(
            "cluster started (pid %s, %s worker(s))", self.process.pid, self.env["Q_WORKERS"]
        )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def problem(self) -> str | None:
        """Why this running cluster must be replaced, or None."""
        if self.process is None or not self.alive():
            return None
        current = cluster_members(self.process.pid)
        if current is None:
            self.ready_at = self.ready_at or time.time()
        else:
            gone = self.members - current
            self.members |= current
            if gone:
                return f"cluster process(es) {sorted(gone)} ended"
            # Sentinel, workers, monitor and pusher all up: from now on it must beat.
            if self.ready_at is None and len(current) >= int(self.env["Q_WORKERS"]) + 3:
                self.ready_at = time.time()
                # From here on every process of the cluster is watched (one that came and went
                # between two looks before this point is caught by the due loop's lease check).
                logger.info("cluster ready: processes %s watched", sorted(self.members))
        if self.stall_s is None or self.ready_at is None:
            return None
        if time.time() - self.ready_at <= self.stall_s:
            return None
        from service.periodic import CLUSTER_HEARTBEAT, heartbeat_get

        try:
            beat = heartbeat_get(CLUSTER_HEARTBEAT)
        except Exception:  # noqa: BLE001 - the database is busy: judge next time
            return None
        finally:
            close_old_connections()
        last = max(self.ready_at, beat.at.timestamp() if beat is not None else 0.0)
        if time.time() - last > self.stall_s:
            return f"no heartbeat task ran for {self.stall_s:g}s"
        return None

    def signal(self, signum: int) -> None:
        if self.alive():
            assert self.process is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signum)

    def stop(self, deadline: float) -> None:
        if self.process is None:
            return
        # SIGTERM to qcluster itself (not its group): it stops pulling tasks and waits for its
        # workers to finish the steps they run. Workers signalled directly would not.
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            logger.warning(
                "cluster did not stop within the grace period: killed (its steps resume at "
                "the next start)"
            )
            self.signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        # Whatever is left of the group (a worker the sentinel lost) goes too.
        self.signal(signal.SIGKILL)

    def kill(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time) of a process from /proc, or None when gone (or no /proc)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[19])


def cluster_members(leader: int) -> set[int] | None:
    """The live processes of the qcluster `leader`: its sentinel and the sentinel's children
    (workers, monitor, pusher), read from /proc (None where there is no /proc). Zombies (dead,
    not yet reaped by the sentinel) do not count."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    children: dict[int, list[int]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        stat = _proc_stat(int(entry.name))
        if stat is None or stat[0] in ("Z", "X"):
            continue
        children.setdefault(stat[1], []).append(int(entry.name))
    members = set()
    for sentinel in children.get(leader, []):
        members.add(sentinel)
        members.update(children.get(sentinel, []))
    return members


@dataclass
class LoopThread(Child):
    """A thread running `target(stop_event)` until the event is set."""

    name: str
    target: Callable[[threading.Event], None]
    stop_event: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.stop_event = threading.Event()

        def run() -> None:
            try:
                self.target(self.stop_event)
            except Exception:
                logger.exception("%s crashed", self.name)
            finally:
                connections.close_all()

        self.thread = threading.Thread(target=run, name=f"rebalancer-{self.name}", daemon=True)
        self.thread.start()

    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def stop(self, deadline: float) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(timeout=max(0.1, deadline - time.monotonic()))


@dataclass
class HttpServer(Child):
    """waitress serving the WSGI application (API, admin; static files by whitenoise)."""

    host: str
    port: int
    name: str = "http"
    server: Any = None
    thread: threading.Thread | None = None

    def start(self) -> None:
        from django.core.servers.basehttp import get_internal_wsgi_application
        from waitress.server import create_server

        # The project's WSGI application (settings.WSGI_APPLICATION), read by name as Django's
        # runserver does, so the service never imports the project package above it.
        application = get_internal_wsgi_application()

        # A body above DATA_UPLOAD_MAX_MEMORY_SIZE is refused (413) by waitress before it is
        # read, not buffered up to waitress's default of 1 GB first.
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        self.server = create_server(
            application,
            host=self.host,
            port=self.port,
            threads=4,
            **({} if limit is None else {"max_request_body_size": limit}),
        )
        self.port = int(self.server.effective_port)
        self.thread = threading.Thread(target=self.server.run, name="rebalancer-http", daemon=True)
        self.thread.start()
        logger.info("http: serving on http://%s:%s/", self.host, self.port)

    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def stop(self, deadline: float) -> None:
        if self.server is not None:
            self.server.close()
        if self.thread is not None:
            self.thread.join(timeout=max(0.1, deadline - time.monotonic()))


class HeartbeatSender:
    """Enqueues the cluster heartbeat task every HEARTBEAT_INTERVAL_S (claimed across hosts),
    but never piles them up: a new one only once the last one ran (or is long overdue)."""

    def __init__(self) -> None:
        self._enqueued_at: float | None = None

    def __call__(self) -> None:
        from django_q.tasks import async_task

        from service.periodic import (
            CLUSTER_HEARTBEAT,
            CLUSTER_HEARTBEAT_TASK,
            HEARTBEAT_ENQUEUE_JOB,
            heartbeat_get,
            periodic_claim,
        )

        service = settings.SERVICE
        if self._enqueued_at is not None:
            beat = heartbeat_get(CLUSTER_HEARTBEAT)
            ran = beat is not None and beat.at.timestamp() >= self._enqueued_at
            overdue = time.time() - self._enqueued_at > service.health_heartbeat_max_age_s
            if not ran and not overdue:
                return
        if periodic_claim(name=HEARTBEAT_ENQUEUE_JOB, interval_s=service.heartbeat_interval_s):
            self._enqueued_at = time.time()
            async_task(CLUSTER_HEARTBEAT_TASK, q_options={"task_name": "cluster heartbeat"})


NONCE_FILLS_JOB = "nonce_fills"


def nonce_fills_sweep_if_due() -> int | None:
    """The nonce filler sweep (`operations.sweep.sweep_nonce_fills`), claimed across hosts
    every REBALANCER_TX_POLL_INTERVAL_S; None when another host has this period."""
    from operations.sweep import sweep_nonce_fills
    from service.periodic import periodic_claim

    if not settings.REBALANCING.writes:
        return None  # REBALANCING_MODE=monitor: no transaction is sent
    interval_s = settings.REBALANCING.workers.tx_poll_interval_s
    if not periodic_claim(name=NONCE_FILLS_JOB, interval_s=interval_s):
        return None
    return sweep_nonce_fills()


GAS_QUOTES_JOB = "gas_quotes"


def gas_quotes_refresh_if_due() -> int | None:
    """The cost gate's gas prices and ETH/USD (`operations.costgate.gas_quotes_refresh`),
    claimed across hosts every SNAPSHOT_INTERVAL_S; None when another host has this period."""
    from operations.costgate import gas_quotes_refresh
    from service.periodic import periodic_claim

    if not periodic_claim(name=GAS_QUOTES_JOB, interval_s=settings.SERVICE.snapshot_interval_s):
        return None
    return gas_quotes_refresh()


def ticker(stop: threading.Event) -> None:
    """Periodic jobs, each claimed so that several hosts never double one: the venue poll,
    the cluster heartbeat task, the market clock and the nonce filler sweep."""
    from service.market import market_clock_refresh
    from service.poller import venue_poll_if_due

    jobs: list[tuple[str, Callable[[], object]]] = [("heartbeat", HeartbeatSender())]
    if settings.REBALANCING.enabled:
        jobs += [
            ("market clock", market_clock_refresh),
            ("venue poll", venue_poll_if_due),
            ("nonce fillers", nonce_fills_sweep_if_due),
            ("gas quotes", gas_quotes_refresh_if_due),
        ]
    while not stop.is_set():
        close_old_connections()
        for name, job in jobs:
            if stop.is_set():
                break
            try:
                job()
            except Exception:
                logger.exception("ticker: %s failed, trying again next tick", name)
        stop.wait(TICK_INTERVAL_S)


def cluster_stall_s() -> float:
    """How long a complete cluster may go without running a heartbeat task before it counts
    as wedged: the heartbeat's own health limit plus two task timeouts (every worker may be
    busy with a long step, and the heartbeat may queue behind another one)."""
    return settings.SERVICE.health_heartbeat_max_age_s + 2 * float(settings.Q_CLUSTER["timeout"])


def due_loop_target(stop: threading.Event) -> None:
    from operations.due import due_loop

    due_loop(interval_s=settings.REBALANCING.workers.due_interval_s, stop=stop)


# --- the supervisor -----------------------------------------------------------------------


class Service:
    def __init__(
        self,
        options: ServiceOptions,
        *,
        out: Callable[[str], None] | None = None,
        cluster_log: TextIO | None = None,
    ) -> None:
        self.options = options
        self._out = out or (lambda line: logger.info("%s", line))
        self._cluster_log = cluster_log
        self._stop = threading.Event()
        self._children: list[Child] = []
        self._restarts: dict[str, int] = {}
        self._next_start: dict[str, float] = {}
        self.http: HttpServer | None = None
        self.started = threading.Event()

    def request_stop(self) -> None:
        """Stop taking new work and shut down (safe from a signal handler)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _cluster_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["Q_WORKERS"] = str(self.options.workers or settings.Q_CLUSTER["workers"])
        env.setdefault("DJANGO_SETTINGS_MODULE", "rebalancer.settings")
        return env

    def prepare(self) -> None:
        problems = preflight_problems(check_venues=self.options.check_venues)
        if problems:
            raise PreflightFailed(problems)
        self._out("runrebalancer starting")
        for line in startup_summary(self.options):
            self._out(f"  {line}")
        service_schedules_ensure()

    def run(self) -> int:
        self.prepare()
        if self.options.once:
            startup_work(once=True)
            ran = run_due_operations()
            self._out(f"runrebalancer --once: done ({ran} operation(s) advanced)")
            return 0
        startup_work()
        self._children = [
            ClusterProcess(
                env=self._cluster_env(), log=self._cluster_log, stall_s=cluster_stall_s()
            ),
            LoopThread(name="due-loop", target=due_loop_target),
            LoopThread(name="ticker", target=ticker),
        ]
        if self.options.http:
            host, _, port = self.options.http.rpartition(":")
            self.http = HttpServer(host=host or "127.0.0.1", port=int(port))
            self._children.append(self.http)
        for child in self._children:
            if not self._stop.is_set():
                child.start()
        self.started.set()
        self._out("runrebalancer running (SIGINT/SIGTERM to stop)")
        try:
            while not self._stop.wait(SUPERVISE_INTERVAL_S):
                self._supervise()
        finally:
            self._shutdown()
        return 0

    def _supervise(self) -> None:
        now = time.monotonic()
        for child in self._children:
            if self._stop.is_set():
                continue
            if child.alive():
                problem = child.problem()
                if problem is None:
                    continue
                logger.error("%s unhealthy (%s): killing it", child.name, problem)
                child.kill()
            if now < self._next_start.get(child.name, 0.0):
                continue
            count = self._restarts.get(child.name, 0)
            self._restarts[child.name] = count + 1
            backoff = RESTART_BACKOFF_S[min(count, len(RESTART_BACKOFF_S) - 1)]
            self._next_start[child.name] = now + backoff
            logger.error("%s died: restarting it (restart #%d)", child.name, count + 1)
            try:
                child.start()
            except Exception:
                logger.exception("%s failed to restart; trying again in %.0fs", child.name, backoff)

    def _shutdown(self) -> None:
        grace = self.options.grace_s
        if grace is None:
            grace = settings.SERVICE.shutdown_grace_s
        self._out(f"runrebalancer stopping: no new work taken; running steps get up to {grace:g}s")
        deadline = time.monotonic() + grace
        # Stop taking work first (ticker, due loop), then let the cluster finish its steps.
        for child in reversed(self._children):
            if not isinstance(child, HttpServer):
                child.stop(deadline)
        if self.http is not None:
            self.http.stop(time.monotonic() + 5)
        connections.close_all()
        self._out("runrebalancer stopped")

    def restarts(self) -> dict[str, int]:
        return dict(self._restarts)

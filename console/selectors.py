"""Reads for the operator console: pools against their bands, operations, step timings,
ratio history and the service's health. Every query is bounded (indexes, limits); nothing
counts a whole table."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings as django_settings
from django.db.models import OuterRef, QuerySet, Subquery
from django.utils import timezone

from console.models import AlertState, PoolRatioSample
from inventory.domain.events import (
    OPERATION_EVENT_TYPES,
    SNAPSHOT,
    OffchainCash,
    OffchainEquity,
    OnchainCash,
    OnchainEquity,
)
from inventory.domain.inventory import ImbalanceThreshold
from inventory.domain.values import USDC_POOL
from inventory.models import Event
from inventory.selectors import (
    RebalancingSettings,
    offchain_cash_latest,
    rebalancing_settings_get,
)
from operations.models import ACTIVE_STATUSES, Operation, OperationStatus, PoolBreaker
from service.selectors import PoolOverview, pools_overview

# Pool states, in the order an operator cares about them.
STATE_HALTED = "halted (circuit breaker)"
STATE_COOLING = "cooling down"
STATE_RECONCILE = "needs reconciliation"
STATE_ACTIVE = "operation active"
STATE_IMBALANCED = "imbalanced"
STATE_BALANCED = "balanced"
STATE_DISABLED = "disabled"
STATE_UNOBSERVED = "unobserved"

ONCHAIN_SNAPSHOTS = (OnchainEquity.event_type_name(), OnchainCash.event_type_name())
OFFCHAIN_SNAPSHOTS = (OffchainEquity.event_type_name(), OffchainCash.event_type_name())
VENUE_SNAPSHOT_TYPES = {"Base (order book)": ONCHAIN_SNAPSHOTS, "Alpaca": OFFCHAIN_SNAPSHOTS}

RECENT_FAILURES = 20
# Step timings read the events of at most this many of the day's newest operations.
TIMING_SAMPLE_OPERATIONS = 1000
HISTORY_POINTS = 288  # one point every 5 minutes over a day


def current_step_subquery() -> Subquery:
    """The operation's latest event type (its current step), one index lookup per row."""
    latest = Event.objects.filter(aggregate_id=OuterRef("aggregate_id")).order_by("-sequence")
    return Subquery(latest.values("event_type")[:1])


def operations_with_step(queryset: QuerySet[Operation]) -> QuerySet[Operation]:
    return queryset.annotate(current_step=current_step_subquery())


@dataclass(frozen=True)
class PoolView:
    """A pool as the console shows it: the shared overview (amounts, ratio, band, active
    operation; `service.selectors`) plus the console's state, breaker and history."""

    overview: PoolOverview
    threshold: ImbalanceThreshold
    state: str
    last_observed_at: datetime | None
    history: list[tuple[datetime, Decimal]] = field(default_factory=list)
    breaker: PoolBreaker | None = None
    active_step: str | None = None
    # The USDC pool: Alpaca's latest read of USD cash, withdrawable cash and USDC held.
    alpaca_balances: OffchainCash | None = None

    def __getattr__(self, name: str) -> Any:
        # Only reached for names not defined here: the overview's fields (key, ratio, ...).
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.overview, name)

    @property
    def observation_age_s(self) -> int | None:
        if self.last_observed_at is None:
            return None
        return max(0, int((timezone.now() - self.last_observed_at).total_seconds()))


def _pool_state(
    pool: PoolOverview,
    settings: RebalancingSettings,
    breaker: PoolBreaker | None,
    now: datetime,
) -> str:
    if pool.needs_reconciliation:
        return STATE_RECONCILE
    if pool.active_operation is not None:
        return STATE_ACTIVE
    if breaker is not None and breaker.is_open:
        return STATE_HALTED
    if breaker is not None and breaker.cooldown_until is not None and breaker.cooldown_until > now:
        return STATE_COOLING
    if pool.kind == "equity" and not settings.asset_enabled(pool.key):
        return STATE_DISABLED
    if pool.state == "unobserved":
        return STATE_UNOBSERVED
    if pool.state in ("too_much_onchain", "too_much_offchain"):
        return STATE_IMBALANCED
    return STATE_BALANCED


def pool_history(*, key: str, since: datetime, points: int = HISTORY_POINTS) -> list:
    """Ratio samples of one pool since `since`, thinned to at most `points` (oldest first)."""
    samples = list(
        PoolRatioSample.objects.filter(pool=key, recorded_at__gte=since, ratio__isnull=False)
        .order_by("-recorded_at")
        .values_list("recorded_at", "ratio")[: points * 20]
    )
    samples.reverse()
    if len(samples) > points:
        step = len(samples) / points
        samples = [samples[int(i * step)] for i in range(points)] + [samples[-1]]
    return samples


def pool_views(
    *, with_history: bool = True, now: datetime | None = None, history_s: float = 86400
) -> list[PoolView]:
    """The dashboard's pools: `pools_overview` with breakers, steps and ratio history."""
    moment = now or timezone.now()
    settings = rebalancing_settings_get()
    breakers = {breaker.pool: breaker for breaker in PoolBreaker.objects.all()}
    steps = {
        op.pool: op.current_step
        for op in operations_with_step(Operation.objects.filter(status__in=ACTIVE_STATUSES))
    }
    views = []
    overviews = pools_overview()
    alpaca = offchain_cash_latest() if any(p.key == USDC_POOL for p in overviews) else None
    for pool in overviews:
        last = (
            PoolRatioSample.objects.filter(pool=pool.key)
            .order_by("-recorded_at")
            .values_list("recorded_at", flat=True)
            .first()
        )
        views.append(
            PoolView(
                overview=pool,
                threshold=settings.threshold_for(pool.key),
                state=_pool_state(pool, settings, breakers.get(pool.key), moment),
                last_observed_at=last,
                history=(
                    pool_history(key=pool.key, since=moment - timedelta(seconds=history_s))
                    if with_history
                    else []
                ),
                breaker=breakers.get(pool.key),
                active_step=steps.get(pool.key),
                alpaca_balances=alpaca if pool.key == USDC_POOL else None,
            )
        )
    return views


def operations_active_first() -> list[Operation]:
    """Active operations, those needing attention first, oldest first within each."""
    rows = operations_with_step(Operation.objects.filter(status__in=ACTIVE_STATUSES))
    return list(rows.order_by("-needs_attention", "created_at")[:100])


def operations_attention_queue() -> list[Operation]:
    """The operations a human must look at, oldest first (at most 100), with their step; the
    dashboard's list (`operations.selectors.operations_needing_attention` is the query)."""
    rows = operations_with_step(Operation.objects.filter(needs_attention=True))
    return list(rows.order_by("created_at")[:100])


def operations_recent_failures(*, limit: int = RECENT_FAILURES) -> list[Operation]:
    rows = Operation.objects.filter(
        status__in=(OperationStatus.FAILED, OperationStatus.CANCELLED)
    ).order_by("-finished_at", "-id")
    return list(operations_with_step(rows)[:limit])


@dataclass(frozen=True)
class StepTiming:
    kind: str
    step: str
    count: int
    p50_s: float
    p95_s: float


def _percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return 0.0
    rank = max(1, -(-int(fraction * 1000) * len(sorted_values) // 1000))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def step_durations(*, since: datetime) -> dict[tuple[str, str], list[float]]:
    """Seconds from each operation event to the next one of the same operation, labelled by
    the step that ended (the later event's type), for the newest operations created since
    `since` (at most TIMING_SAMPLE_OPERATIONS of them, so the cost does not grow with volume)."""
    kinds = dict(
        Operation.objects.filter(created_at__gte=since)
        .order_by("-id")
        .values_list("aggregate_id", "kind")[:TIMING_SAMPLE_OPERATIONS]
    )
    durations: dict[tuple[str, str], list[float]] = defaultdict(list)
    if not kinds:
        return durations
    ids = list(kinds)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        previous: dict[str, datetime] = {}
        rows = (
            Event.objects.filter(aggregate_type__in=OPERATION_EVENT_TYPES, aggregate_id__in=chunk)
            .order_by("aggregate_id", "sequence")
            .values_list("aggregate_id", "event_type", "recorded_at")
        )
        for aggregate_id, event_type, recorded_at in rows:
            before = previous.get(aggregate_id)
            if before is not None:
                durations[(kinds[aggregate_id], event_type)].append(
                    (recorded_at - before).total_seconds()
                )
            previous[aggregate_id] = recorded_at
    return durations


def step_timings(*, since: datetime | None = None) -> list[StepTiming]:
    """p50 and p95 of each step's duration per operation kind over the last day."""
    start = since or timezone.now() - timedelta(days=1)
    timings = []
    for (kind, step), values in sorted(step_durations(since=start).items()):
        values.sort()
        timings.append(
            StepTiming(
                kind=kind,
                step=step,
                count=len(values),
                p50_s=_percentile(values, 0.50),
                p95_s=_percentile(values, 0.95),
            )
        )
    return timings


def last_snapshot_per_venue() -> dict[str, datetime | None]:
    """When each venue was last observed (its latest balance snapshot event)."""
    latest: dict[str, datetime | None] = {}
    for venue, types in VENUE_SNAPSHOT_TYPES.items():
        latest[venue] = (
            Event.objects.filter(aggregate_type=SNAPSHOT, event_type__in=types)
            .order_by("-id")
            .values_list("recorded_at", flat=True)
            .first()
        )
    return latest


def workers_last_task_at() -> datetime | None:
    """The last time a django-q worker finished a task (success or failure); not the cluster
    heartbeat (`service.periodic.cluster_heartbeat_record`, read by the health check
    `cluster_heartbeat`)."""
    from django_q.models import Task

    return Task.objects.order_by("-stopped").values_list("stopped", flat=True).first()


@dataclass(frozen=True)
class Health:
    paused: bool
    enabled: bool
    heartbeat_at: datetime | None
    snapshots: dict[str, datetime | None]
    attention: int
    open_alerts: list[AlertState]
    report: Any = None  # service.health.HealthReport: the same checks as /api/v1/health
    # REBALANCING_MODE=monitor: proposals are recorded, nothing is moved.
    monitor: bool = False

    @staticmethod
    def age_s(moment: datetime | None) -> int | None:
        if moment is None:
            return None
        return max(0, int((timezone.now() - moment).total_seconds()))

    @property
    def snapshot_ages(self) -> list[tuple[str, datetime | None, int | None]]:
        return [(venue, at, self.age_s(at)) for venue, at in self.snapshots.items()]

    @property
    def heartbeat_age_s(self) -> int | None:
        return self.age_s(self.heartbeat_at)

    @property
    def green(self) -> bool:
        """Healthy only when every check holds and no alert is open (an open alert is something
        wrong, whatever the checks say)."""
        return bool(self.report is not None and self.report.healthy and not self.open_alerts)


def console_health() -> Health:
    from service.health import health_report

    settings = rebalancing_settings_get()
    return Health(
        report=health_report(),
        paused=settings.paused,
        enabled=settings.enabled,
        heartbeat_at=workers_last_task_at(),
        monitor=bool(django_settings.REBALANCING.monitor_only),
        snapshots=last_snapshot_per_venue(),
        attention=Operation.objects.filter(needs_attention=True).count(),
        open_alerts=list(AlertState.objects.filter(resolved_at__isnull=True)[:50]),
    )


def operation_timeline(operation: Operation) -> list[dict[str, Any]]:
    """Every event of the operation's aggregate in order, with the time since the previous."""
    rows = Event.objects.filter(
        aggregate_type=operation.aggregate_type, aggregate_id=operation.aggregate_id
    ).order_by("sequence")
    events = []
    previous: datetime | None = None
    for row in rows:
        events.append(
            {
                "row": row,
                "since_previous_s": (
                    (row.recorded_at - previous).total_seconds() if previous else None
                ),
            }
        )
        previous = row.recorded_at
    return events


_TX_KEYS = ("tx_hash", "hash", "transaction_hash", "burn_tx_hash", "mint_tx_hash")
# Chains by id, as an operator names them (the simulated venue's chains included).
CHAIN_NAMES = {
    "1": "Ethereum",
    "8453": "Base",
    "11155111": "Ethereum Sepolia",
    "84532": "Base Sepolia",
    "900001": "Ethereum (simulated)",
    "908453": "Base (simulated)",
}


def chain_name(chain: str) -> str:
    """ "8453" -> "Base"; an unknown id stays a number ("chain 42")."""
    if not chain:
        return ""
    return CHAIN_NAMES.get(chain, chain if not chain.isdigit() else f"chain {chain}")


_ALPACA_KEYS = ("issuer_request_id", "tokenization_request_id", "transfer_id", "order_id")


def _walk(value: Any, path: str = ""):
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _walk(inner, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield from _walk(inner, f"{path}[{index}]")
    else:
        yield path, value


def operation_references(
    events: list[dict[str, Any]], *, kind: str = ""
) -> dict[str, list[dict[str, str]]]:
    """Onchain transactions (hash, chain, status = the event that reported it) and Alpaca ids
    found in the operation's events. A transaction whose event names no chain is placed by the
    operation's kind: a mint's and a redemption's all run on Base."""
    txs: list[dict[str, str]] = []
    alpaca: list[dict[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for item in events:
        row = item["row"]
        leaves = list(_walk(row.payload))
        chain = next(
            (
                str(value)
                for path, value in leaves
                if path.rsplit(".", 1)[-1] in ("chain_id", "chain", "network")
            ),
            "",
        )
        chain = chain_name(chain)
        # A transfer reference ({"kind": "AlpacaId" | "OnchainTx", "value": ...}) is an Alpaca
        # id or a transaction hash according to its kind.
        ref_kinds = {
            path.rsplit(".", 1)[0]: value
            for path, value in leaves
            if path.endswith(".kind") and value in ("AlpacaId", "OnchainTx")
        }
        for path, value in leaves:
            if not isinstance(value, str) or not value:
                continue
            leaf = path.rsplit(".", 1)[-1]
            ref_kind = ref_kinds.get(path.rsplit(".", 1)[0]) if leaf == "value" else None
            if ref_kind == "AlpacaId":
                if ("alpaca", value) not in seen:
                    seen.add(("alpaca", value))
                    alpaca.append({"id": value, "field": path, "event": row.event_type})
                continue
            if (
                leaf in _TX_KEYS or leaf.endswith("_tx_hash") or ref_kind == "OnchainTx"
            ) and value.startswith("0x"):
                if ("tx", value) not in seen:
                    seen.add(("tx", value))
                    txs.append(
                        {"hash": value, "field": path, "chain": chain, "status": row.event_type}
                    )
                else:
                    for tx in txs:
                        if tx["hash"] == value:
                            tx["status"] = row.event_type
            elif (leaf in _ALPACA_KEYS or leaf.endswith("request_id")) and (
                "alpaca",
                value,
            ) not in seen:
                seen.add(("alpaca", value))
                alpaca.append({"id": value, "field": path, "event": row.event_type})
    if kind in ("mint", "redemption"):
        for tx in txs:
            tx["chain"] = tx["chain"] or "Base"
    return {"transactions": txs, "alpaca": alpaca}


# What to do, per alert kind (docs/operations.md says more).
ALERT_ACTIONS = {
    "attention": "open the operation: Retry once the venue is back, Reconcile inflight if the "
    "effect happened outside the system, Force-fail if it did not",
    "overdue": "open the operation: its current step says what it waits for; check that venue",
    "venue_poll": "check the venue's URL and credentials (manage.py health names the failure) "
    "and that the service runs",
    "drift": "run manage.py reconcile and find the movement the books do not explain (a manual "
    "transfer, a fill not reported)",
    "drift_report": "run manage.py reconcile and find the movement the books do not explain",
    "gas": "send ETH to the signer on that chain",
}


# What to do when a health check fails, by the check's first word.
HEALTH_ACTIONS = {
    "database": "check that the database answers (DATABASE_URL)",
    "cluster": "check that runrebalancer runs: its workers run the heartbeat task",
    "snapshot": "check the venue's URL and credentials; manage.py health names the failure",
    "market": "nothing: the market clock is read again",
}


def alert_pool(alert: AlertState) -> str:
    """The pool an alert concerns (`drift:USDC`, `drift_report:USDC:alpaca`), else ""."""
    if alert.kind in ("drift", "drift_report"):
        parts = alert.key.split(":")
        return parts[1] if len(parts) > 1 else ""
    return ""


def triage(pools: list[PoolView], health: Health) -> list[dict[str, Any]]:
    """What is wrong now and what to do, most urgent first: operations needing attention, pools
    out of band or stopped, open alerts (each tied to its pool when it has one)."""
    items: list[dict[str, Any]] = []
    for op in Operation.objects.filter(needs_attention=True).order_by("created_at")[:20]:
        items.append(
            {
                "kind": "attention",
                "what": f"operation #{op.pk} ({op.kind} {op.pool} {op.amount}) needs attention: "
                f"{op.last_error or op.failure_reason or 'a human must look'}",
                "do": ALERT_ACTIONS["attention"],
                "operation": op.pk,
                "since": op.updated_at,
            }
        )
    for pool in pools:
        if pool.state == STATE_IMBALANCED:
            what = (
                f"pool {pool.key} is out of its band: ratio {pool.ratio:.4f}, band "
                f"{pool.threshold.lower}-{pool.threshold.upper}"
            )
            do = (
                "an operation starts on its own; if none does, look for a pause, a closed "
                "market or a disabled asset"
            )
        elif pool.state == STATE_HALTED:
            what = f"pool {pool.key}: rebalancing stopped by its circuit breaker"
            do = "fix the cause of the failures, then Resume pool"
        elif pool.state == STATE_RECONCILE:
            what = f"pool {pool.key} needs reconciliation: {pool.reconciliation_reason}"
            do = ALERT_ACTIONS["drift"]
        else:
            continue
        items.append({"kind": "pool", "what": what, "do": do, "pool": pool.key, "since": None})
    covered = {"operations_needing_attention", "pools_needing_reconciliation"}
    for check in getattr(health.report, "checks", []):
        if not check.ok and check.name not in covered:
            items.append(
                {
                    "kind": "health",
                    "what": f"health check {check.name} fails: {check.detail}",
                    "do": HEALTH_ACTIONS.get(check.name.split("_", 1)[0], "see docs/operations.md"),
                    "since": None,
                }
            )
    for alert in health.open_alerts:
        if alert.kind == "attention":
            continue  # listed above with its operation
        items.append(
            {
                "kind": alert.kind,
                "what": alert.message,
                "do": ALERT_ACTIONS.get(alert.kind, "see docs/operations.md"),
                "pool": alert_pool(alert),
                "since": alert.first_seen_at,
            }
        )
    return items

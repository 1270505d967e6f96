"""The live challenger (issue 25): candidate settings evaluated in shadow, never acted on.

`REBALANCING_CHALLENGERS` (`conf.env`) names candidates (`NAME:key=value,...`, the
backtest's syntax, `inventory.domain.candidates`). On every pool the trigger checks,
`challengers_evaluate` runs the trigger's own pure decision (`inventory.domain.plan.plan_pool`)
with each candidate's settings over the live pool state and the trigger's facts (hold, market
hours, active operation, what can leave Alpaca), and records the decision as a
`ChallengerDecided` event of the `CHALLENGER:POOL` aggregate, once per change
(`inventory.domain.challengers`), with the cost gate's estimate of the operation it would
start (`operations.costgate.estimate_cost`). The settings in force are evaluated the same way
under the name `as-run`, so the console compares like with like. Nothing here creates an
operation or calls a venue; a failure is logged and never reaches the trigger.

`challenger_comparison` reads the recorded decisions back for the console: per pool and
challenger, over the last day and the last week, the operations it would have started (by
kind), the amount and the modelled cost.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings as django_settings
from django.db import transaction
from django.utils import timezone

from inventory.domain import challengers as challengers_domain
from inventory.domain import events as ev
from inventory.domain.candidates import AS_RUN, Candidate, as_run, candidate_settings
from inventory.domain.inventory import PoolInventory
from inventory.domain.plan import PlanFacts, Planned, plan_pool
from inventory.domain.settings import RebalancingSettings
from inventory.domain.values import USDC_POOL
from inventory.models import Event
from inventory.store import StoredEvent, aggregate_execute, aggregate_state
from operations.costgate import estimate_cost

logger = logging.getLogger(__name__)

WINDOWS: dict[str, timedelta] = {"day": timedelta(days=1), "week": timedelta(days=7)}


def challengers_configured() -> tuple[Candidate, ...]:
    """The candidates of REBALANCING_CHALLENGERS (parsed and checked at start)."""
    return tuple(getattr(django_settings.REBALANCING, "challengers", ()) or ())


def challengers_evaluate(
    *,
    key: str,
    pool: PoolInventory,
    settings: RebalancingSettings,
    facts: PlanFacts,
    now: datetime | None = None,
) -> list[StoredEvent]:
    """Evaluate every challenger (and `as-run`) for pool `key`; record the decisions that
    changed. Returns the recorded events (none when no challenger is configured). Never
    raises: a failure is logged and rolled back to a savepoint, the trigger goes on."""
    candidates = challengers_configured()
    if not candidates:
        return []
    try:
        with transaction.atomic():
            return _evaluate(key, pool, settings, facts, (as_run(), *candidates), now)
    except Exception:  # noqa: BLE001 - the shadow never stops the live decision
        logger.exception("challengers not evaluated for %s", key)
        return []


def _evaluate(
    key: str,
    pool: PoolInventory,
    settings: RebalancingSettings,
    facts: PlanFacts,
    candidates: Sequence[Candidate],
    now: datetime | None,
) -> list[StoredEvent]:
    recorded: list[StoredEvent] = []
    for candidate in candidates:
        effective = candidate_settings(settings, candidate)
        plan = plan_pool(key=key, pool=pool, settings=effective, facts=facts)
        minimum = effective.usdc_minimum if key == USDC_POOL else effective.equity_minimum_shares
        if isinstance(plan, Planned):
            kind, amount, reason = plan.kind, plan.amount, ""
        else:
            kind, amount, reason = "", Decimal(0), plan.code
        command = challengers_domain.Decide(
            challenger=candidate.name,
            spec=candidate.spec,
            pool=key,
            kind=kind,
            amount=amount,
            reason=reason,
            estimated_cost_usd=None,
            significant_change=minimum,
        )
        aggregate_id = challengers_domain.aggregate_id(candidate.name, key)
        current = aggregate_state(challengers_domain.SPEC, aggregate_id).state.current()
        if not challengers_domain.decision_is_new(current, command):
            continue
        if kind:
            # Only for a decision that is recorded: the estimate reads the ledger.
            command = replace(command, estimated_cost_usd=estimate_cost(kind, key, amount).usd)
        stored = aggregate_execute(
            spec=challengers_domain.SPEC, aggregate_id=aggregate_id, command=command, now=now
        )
        if stored:
            logger.info(
                "challenger %s on %s: %s (shadow, not acted on)",
                candidate.name,
                key,
                f"{kind} of {amount}" if kind else f"no operation ({reason})",
            )
        recorded.extend(stored)
    return recorded


# --- what the console shows ----------------------------------------------------------------


@dataclass
class Figures:
    """A challenger's decisions to start an operation over a window."""

    starts: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    amount: Decimal = Decimal(0)
    cost_usd: Decimal = Decimal(0)
    unpriced: int = 0  # starts without an estimate (no gas quote at the time)

    def add(self, event: ev.ChallengerDecided) -> None:
        self.starts += 1
        self.by_kind[event.kind] = self.by_kind.get(event.kind, 0) + 1
        self.amount += event.amount
        if event.estimated_cost_usd is None:
            self.unpriced += 1
        else:
            self.cost_usd += event.estimated_cost_usd


@dataclass
class ChallengerRow:
    name: str
    spec: str
    windows: dict[str, Figures]
    # Against `as-run` over the same window: starts and modelled cost, challenger minus live.
    starts_delta: dict[str, int] = field(default_factory=dict)
    cost_delta: dict[str, Decimal] = field(default_factory=dict)
    latest: ev.ChallengerDecided | None = None

    @property
    def is_live(self) -> bool:
        return self.name == AS_RUN


@dataclass
class PoolComparison:
    pool: str
    rows: list[ChallengerRow]


def challenger_comparison(*, now: datetime | None = None) -> list[PoolComparison]:
    """Per pool, the live settings (`as-run`) and each challenger over the last day and
    week: decisions to start (by kind), amount and modelled cost, and each challenger's
    difference from the live settings. Pools sorted, `as-run` first, then by name."""
    moment = now or timezone.now()
    since = moment - max(WINDOWS.values())
    configured = {c.name: c.spec for c in challengers_configured()}
    rows: dict[tuple[str, str], ChallengerRow] = {}
    if configured:
        # Every configured challenger shows on every pool, decisions or not.
        for pool in _pools():
            for name, spec in [(AS_RUN, f"{AS_RUN}:"), *configured.items()]:
                rows[(pool, name)] = ChallengerRow(name, spec, {w: Figures() for w in WINDOWS})
    decided = Event.objects.filter(
        aggregate_type=ev.CHALLENGERS,
        event_type=ev.ChallengerDecided.event_type_name(),
        recorded_at__gte=since,
    ).order_by("id")
    for stored in decided.iterator(chunk_size=2000):
        event = stored.domain_event()
        assert isinstance(event, ev.ChallengerDecided)
        row = rows.setdefault(
            (event.pool, event.challenger),
            ChallengerRow(event.challenger, event.spec, {w: Figures() for w in WINDOWS}),
        )
        row.latest = event
        if not event.kind:
            continue
        for window, span in WINDOWS.items():
            if event.decided_at >= moment - span:
                row.windows[window].add(event)
    by_pool: dict[str, list[ChallengerRow]] = {}
    for (pool, _name), row in sorted(rows.items()):
        by_pool.setdefault(pool, []).append(row)
    comparisons = []
    for pool, pool_rows in sorted(by_pool.items()):
        pool_rows.sort(key=lambda r: (not r.is_live, r.name))
        live = pool_rows[0] if pool_rows and pool_rows[0].is_live else None
        if live is not None:
            for row in pool_rows[1:]:
                for window in WINDOWS:
                    mine, theirs = row.windows[window], live.windows[window]
                    row.starts_delta[window] = mine.starts - theirs.starts
                    row.cost_delta[window] = mine.cost_usd - theirs.cost_usd
        comparisons.append(PoolComparison(pool, pool_rows))
    return comparisons


def _pools() -> Iterable[str]:
    from inventory.models import InventoryPool

    return InventoryPool.objects.order_by("key").values_list("key", flat=True)

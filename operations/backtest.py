"""`manage.py backtest`: replay a period's market flow under candidate settings (issue 25).

`backtest_run(start=, end=, candidates=, pools=)`:

1. the settings in force at `start` are today's settings with every audited change recorded
   since rolled back (`SettingChanged.old_value`, newest first); changes inside the period
   apply as the log reaches them (`inventory.domain.replay.settings_with_change`). That is
   the `as-run` candidate; each other candidate overrides it
   (`inventory.domain.candidates.candidate_settings`) at every moment;
2. each kind's modelled duration and cost come from the operations recorded before `end`
   (`operations.costs.operation_costs`, the cost ledger): the median and the p90 of the time
   each took (from its creation by the trigger to its last event) make the "median" and
   "p90" runs; the cost is the
   median gas per operation plus the median of the other charges (Circle's and Alpaca's fees,
   conversion spreads, venue charges) per USD moved;
3. the log is read once per process, in id order, in chunks (`inventory.rebuild.log_rows`):
   before `start` it is folded into the real pools (the balances the log shows at `start`),
   from `start` to `end` every world (candidate x run) takes the market's flow and the real
   fold takes everything (`inventory.domain.replay`). Candidates are split over processes
   (`workers`); each process reads the log itself, so memory stays flat in its length.

The report (`jsonable`) is a list: one entry per candidate (`as-run` first) with its figures
per pool for the median run and, under `p90`, for the p90 run, then the entry `real` (what
really happened, `"real": true`, the costs as recorded in the ledger).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings as django_settings
from django.db import connection, connections
from django.db.models import Max, Min

from inventory.codec import decode_event
from inventory.domain import events as ev
from inventory.domain import plan as plan_domain
from inventory.domain.candidates import AS_RUN, Candidate, as_run, parse_candidates
from inventory.domain.replay import (
    FLOW_EVENTS,
    KindModel,
    Market,
    Model,
    PoolStats,
    Reality,
    Started,
    World,
    median_decimal,
    percentile,
    settings_with_change,
)
from inventory.domain.settings import AssetOverride, RebalancingSettings
from inventory.domain.values import USDC_POOL, InvalidValue, validate_symbol
from inventory.models import Asset, Event
from inventory.rebuild import log_rows
from inventory.selectors import rebalancing_settings_load
from operations.costs import operation_costs
from operations.models import Operation, OperationStatus

logger = logging.getLogger(__name__)

TIMINGS = ("median", "p90")
PER = Decimal(10_000)
USD_PLACES = Decimal("0.01")
# When no operation of a kind was ever recorded: a modelled duration, said in the report.
ASSUMED_SECONDS = {
    plan_domain.MINT: 900.0,
    plan_domain.REDEMPTION: 900.0,
    plan_domain.USDC_ALPACA_TO_BASE: 1200.0,
    plan_domain.USDC_BASE_TO_ALPACA: 1200.0,
}
# Operations per kind the model reads (the newest before the period's end).
MODEL_SAMPLE = 200
SETTING_CHANGED = ev.SettingChanged.event_type_name()
# What a process without the real fold reads in the period: the market's flow, the settings'
# changes and what `Market` keeps (fill prices, hedge placements, Alpaca's cash, its clock).
WORLD_EVENT_TYPES = frozenset(
    cls.event_type_name()
    for cls in (*FLOW_EVENTS, ev.SettingChanged, ev.OffchainCash, ev.MarketClockRead)
)


@dataclass(frozen=True)
class BacktestRequest:
    start: datetime
    end: datetime
    candidates: tuple[Candidate, ...]
    pools: frozenset[str] | None = None

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            if not isinstance(value, datetime) or value.tzinfo is None:
                raise InvalidValue(name, value, "must be an ISO-8601 time with a time zone")
        if self.end <= self.start:
            raise InvalidValue("to", self.end.isoformat(), "must be after --from")
        names = [c.name for c in self.candidates]
        if len(set(names)) != len(names):
            raise InvalidValue("candidate name", names, "given twice")


def parse_time(field: str, text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidValue(field, text, "not an ISO-8601 time") from None
    if moment.tzinfo is None:
        raise InvalidValue(field, text, "must name its time zone (e.g. 2026-12-01T00:00Z)")
    return moment


def backtest_request(
    start: str, end: str, pools: str | None, candidates: Iterable[str]
) -> BacktestRequest:
    """The command's and the console's input, validated (raises `InvalidValue`)."""
    return BacktestRequest(
        start=parse_time("from", start),
        end=parse_time("to", end),
        candidates=tuple(parse_candidates(candidates)),
        pools=parse_pools(pools),
    )


def parse_pools(text: str | None) -> frozenset[str] | None:
    """`AAPL,USDC` -> the pool keys; None (every pool) when empty."""
    if text is None or not text.strip():
        return None
    keys = set()
    for part in text.split(","):
        key = part.strip()
        if key == USDC_POOL:
            keys.add(key)
            continue
        try:
            keys.add(validate_symbol(key))
        except InvalidValue as error:
            raise InvalidValue("pools", text, f"{key!r}: {error.rule}") from None
    return frozenset(keys)


# --- the settings in force -----------------------------------------------------------------------


def _registered(symbol: str) -> AssetOverride:
    asset = Asset.objects.filter(base_symbol=symbol).first()
    if asset is None:
        return AssetOverride(True, None, None)
    return AssetOverride(
        rebalancing_enabled=asset.rebalancing_enabled,
        target_ratio=asset.target_ratio,
        deviation=asset.deviation,
        decimals=asset.decimals,
    )


def settings_at(start: datetime) -> RebalancingSettings:
    """The settings in force at `start`: today's, every change recorded since rolled back.
    The deployment switch counts as on (the backtest asks what the settings would do)."""
    current = replace(rebalancing_settings_load(), enabled=True)
    later = Event.objects.filter(event_type=SETTING_CHANGED, recorded_at__gte=start).order_by("-id")
    for row in later.iterator():
        event = row.domain_event()
        current = settings_with_change(
            current, event.scope, event.setting, event.old_value, registered=_registered
        )
    return current


# --- the model of an operation -------------------------------------------------------------------


def model_build(end: datetime) -> dict[str, dict[str, Any]]:
    """Per kind: the durations and costs of the operations recorded before `end` (the newest
    `MODEL_SAMPLE` completed ones); -> {"median": Model, "p90": Model, "basis": {...}}."""
    median: dict[str, KindModel] = {}
    p90: dict[str, KindModel] = {}
    basis: dict[str, Any] = {}
    for kind in plan_domain.KINDS:
        rows = Operation.objects.filter(
            kind=kind, status=OperationStatus.COMPLETED, created_at__lt=end
        ).order_by("-created_at")[:MODEL_SAMPLE]
        seconds: list[float] = []
        gas: list[Decimal] = []
        rates: list[Decimal] = []
        for operation in rows:
            costs = operation_costs(operation)
            taken = _time_taken(operation)
            if taken is not None and taken > 0:
                seconds.append(taken)
            gas.append(costs.gas_usd)
            if costs.moved_usd:
                other = costs.circle_fee_usdc + costs.alpaca_fee_usdc + costs.venue_costs_usd
                rates.append(other / costs.moved_usd)
        fixed = median_decimal(gas) or Decimal(0)
        rate = median_decimal(rates) or Decimal(0)
        p50, p9 = percentile(seconds, 0.5), percentile(seconds, 0.9)
        if p50 is None or p9 is None:
            assumed = ASSUMED_SECONDS[kind]
            text = f"no recorded {kind}: duration assumed {assumed:.0f} s, cost 0"
            median[kind] = p90[kind] = KindModel(assumed, fixed, rate, text)
            basis[kind] = {"operations": 0, "assumed": True, "seconds": assumed}
            continue
        text = f"{len(seconds)} recorded"
        median[kind] = KindModel(p50, fixed, rate, text)
        p90[kind] = KindModel(p9, fixed, rate, text)
        basis[kind] = {
            "operations": len(seconds),
            "assumed": False,
            "median_s": round(p50, 3),
            "p90_s": round(p9, 3),
            "gas_usd_per_operation": fixed,
            "other_costs_per_usd": rate,
        }
    return {"median": Model(median), "p90": Model(p90), "basis": basis}


def _time_taken(operation: Operation) -> float | None:
    """From the trigger's decision (the operation's creation) to its last event: the queue's
    wait counts, as it delays the effect (the first event's time when created later)."""
    times = Event.objects.filter(
        aggregate_type=operation.aggregate_type, aggregate_id=operation.aggregate_id
    ).aggregate(first=Min("recorded_at"), last=Max("recorded_at"))
    if times["first"] is None:
        return None
    began = min(operation.created_at, times["first"])
    return float((times["last"] - began).total_seconds())


# --- one pass over the log -----------------------------------------------------------------------


def _pass(
    request: BacktestRequest,
    base: RebalancingSettings,
    models: Mapping[str, Model],
    *,
    with_reality: bool,
    share_runs: bool = True,
) -> dict[str, Any]:
    """Read the log once: the real fold up to the start, then every world and (with
    `with_reality`) the real figures over the period. -> figures (jsonable).

    With `share_runs`, a candidate's median and p90 runs are one world until an operation
    completes at different times in them (`World.advance`): the same figures as two worlds
    (`share_runs=False`), for half the work while they agree."""
    market = Market(reserve=django_settings.REBALANCING.offchain_cash_reserve)
    reality = Reality()
    worlds: list[World] = []
    start, end = request.start, request.end
    measuring = False
    events = 0
    split: list[World] = []
    for _id, aggregate_type, aggregate_id, event_type, payload, moment in log_rows():
        if moment >= end:
            break
        if measuring and not with_reality and event_type not in WORLD_EVENT_TYPES:
            events += 1  # an event no world and no market fact needs: not even decoded
            continue
        event = decode_event(event_type, payload)
        if not measuring and moment >= start:
            measuring = True
            worlds = _worlds(request, base, models, reality, market, share_runs)
            reality.begin(start=start, end=end, settings=base, keys=request.pools)
        market.see(aggregate_id, event)
        if measuring:
            events += 1
            kind = type(event)
            if kind in FLOW_EVENTS:
                for world in worlds:
                    forks = world.flow(aggregate_id, event, moment)
                    if forks:
                        split.extend(forks)
            elif kind is ev.SettingChanged:
                base = settings_with_change(
                    base, event.scope, event.setting, event.new_value, registered=_registered
                )
                for world in worlds:
                    split.extend(world.base_changed(base, moment))
                reality.settings_changed(base, moment)
            if split:
                worlds.extend(split)
                split.clear()
            if with_reality:
                reality.apply(aggregate_type, aggregate_id, event, moment, market)
        else:
            reality.apply(aggregate_type, aggregate_id, event, moment, market)
    if not measuring:
        worlds = _worlds(request, base, models, reality, market, share_runs)
        reality.begin(start=start, end=end, settings=base, keys=request.pools)
    for world in list(worlds):
        worlds.extend(world.finish())
    reality.finish()
    result: dict[str, Any] = {"events": events, "worlds": {}, "worlds_run": len(worlds)}
    for world in worlds:
        figures = _figures(world.stats, world.started, world.pools, start, end)
        for timing in world.timings:
            result["worlds"].setdefault(world.candidate.name, {})[timing] = figures
    if with_reality:
        result["reality"] = _figures(reality.stats, reality.started, reality.pools, start, end)
        result["reality_started"] = [(s.aggregate_id, s.pool) for s in reality.started]
    return result


def _worlds(
    request: BacktestRequest,
    base: RebalancingSettings,
    models: Mapping[str, Model],
    reality: Reality,
    market: Market,
    share_runs: bool = True,
) -> list[World]:
    pools = reality.domains()
    groups = [TIMINGS] if share_runs else [(timing,) for timing in TIMINGS]
    return [
        World(
            candidate=candidate,
            runs={timing: models[timing] for timing in group},
            base=base,
            pools=pools,
            start=request.start,
            end=request.end,
            market=market,
            keys=request.pools,
        )
        for candidate in request.candidates
        for group in groups
    ]


def _figures(
    stats: Mapping[str, PoolStats],
    started: Iterable[Started],
    pools: Mapping[str, Any],
    start: datetime,
    end: datetime,
) -> dict[str, Any]:
    span = (end - start).total_seconds()
    by_pool: dict[str, list[Started]] = {}
    for operation in started:
        by_pool.setdefault(operation.pool, []).append(operation)
    figures: dict[str, Any] = {}
    for key in sorted(set(stats) | set(by_pool)):
        pool_stats = stats.get(key)
        ops = by_pool.get(key, [])
        moved = [o.moved_usd for o in ops if o.moved_usd is not None]
        costs = [o.cost_usd for o in ops if o.cost_usd is not None]
        moved_usd = sum(moved, Decimal(0))
        cost = sum(costs, Decimal(0))
        pool = pools.get(key)
        end_balances = None
        if pool is not None and pool.on is not None and pool.off is not None:
            end_balances = {
                "onchain_available": pool.on[0],
                "onchain_inflight": pool.on[1],
                "offchain_available": pool.off[0],
                "offchain_inflight": pool.off[1],
            }
        figures[key] = {
            "operations": dict(sorted(Counter(o.kind for o in ops).items())),
            "volume": sum((o.amount for o in ops), Decimal(0)),
            "volume_usd": moved_usd.quantize(USD_PLACES),
            "unvalued_operations": len(ops) - len(moved),
            "estimated_cost_usd": cost.quantize(USD_PLACES),
            "cost_per_10k_usd": (cost / moved_usd * PER).quantize(USD_PLACES)
            if moved_usd > 0
            else None,
            "time_out_of_band_s": round(pool_stats.out_s, 3) if pool_stats else 0.0,
            "time_out_of_band_pct": round(100 * pool_stats.out_s / span, 3) if pool_stats else 0.0,
            "largest_deviation": (
                pool_stats.largest.quantize(Decimal("1e-6"))
                if pool_stats and pool_stats.largest is not None
                else None
            ),
            "stockout_s": round(pool_stats.short_s, 3) if pool_stats else 0.0,
            "missed_fills": pool_stats.missed if pool_stats else 0,
            "end_balances": end_balances,
            "started": [
                {"at": o.at, "kind": o.kind, "amount": o.amount, "ends_at": o.ends_at} for o in ops
            ],
            "chart": {
                "ratio": [None if v is None else float(v) for v in pool_stats.samples]
                if pool_stats
                else [],
                "bands": [[i, float(lo), float(hi)] for i, lo, hi in pool_stats.bands]
                if pool_stats
                else [],
            },
        }
    return figures


def _child(
    args: tuple[BacktestRequest, RebalancingSettings, Mapping[str, Model], bool, bool],
) -> Any:
    request, base, models, with_reality, share_runs = args
    try:
        return _pass(request, base, models, with_reality=with_reality, share_runs=share_runs)
    finally:
        connections.close_all()


def _separate_processes_see_it() -> bool:
    """Would a forked process with its own connection see what this one sees? Not inside a
    transaction (uncommitted rows), nor for an in-memory SQLite database."""
    if connection.in_atomic_block:
        return False
    return not (connection.vendor == "sqlite" and bool(connection.is_in_memory_db()))


def worker_count(requested: int | None, candidates: int) -> int:
    """How many processes run the candidates: `requested` (default one per candidate, up to
    the cores), at most one per candidate; one when other processes would not see this one's
    data (`_separate_processes_see_it`) or when this process may not start any: a daemonic
    process, such as a django-q2 worker running the console's backtest task."""
    if requested is None:
        requested = min(candidates, os.cpu_count() or 1)
    if multiprocessing.current_process().daemon or not _separate_processes_see_it():
        return 1
    return max(1, min(requested, candidates))


def backtest_run(
    request: BacktestRequest, *, workers: int | None = None, share_runs: bool = True
) -> dict[str, Any]:
    """Run the backtest; -> {"from", "to", "pools", "model", "events", "candidates": [...]}.
    `share_runs=False` runs each candidate's median and p90 as two worlds from the start
    (the same figures, slower: `_pass`)."""
    base = settings_at(request.start)
    built = model_build(request.end)
    models = {timing: built[timing] for timing in TIMINGS}
    candidates = (as_run(), *[c for c in request.candidates if c.name != AS_RUN])
    workers = worker_count(workers, len(candidates))
    groups = [candidates[i::workers] for i in range(workers)]
    jobs = [
        (replace(request, candidates=tuple(group)), base, models, index == 0, share_runs)
        for index, group in enumerate(groups)
    ]
    if workers == 1:
        results = [_pass(jobs[0][0], base, models, with_reality=True, share_runs=share_runs)]
    else:
        connections.close_all()
        context = multiprocessing.get_context("fork")
        with context.Pool(workers) as pool:
            results = pool.map(_child, jobs)
    worlds: dict[str, Any] = {}
    for result in results:
        worlds.update(result["worlds"])
    reality = results[0]["reality"]
    _real_costs(reality, results[0]["reality_started"])
    entries = []
    for candidate in candidates:
        runs = worlds[candidate.name]
        pools = {}
        for key, figures in runs["median"].items():
            pools[key] = {**figures, "p90": runs["p90"].get(key)}
        entries.append({"name": candidate.name, "spec": candidate.spec, "pools": pools})
    entries.append({"name": "real", "real": True, "pools": reality})
    return {
        "from": request.start,
        "to": request.end,
        "pools": sorted(request.pools) if request.pools else None,
        "events": results[0]["events"],
        "workers": workers,
        "worlds_run": sum(result["worlds_run"] for result in results),
        "model": built["basis"],
        "candidates": entries,
    }


def _real_costs(reality: dict[str, Any], started: list[tuple[str, str]]) -> None:
    """What the real operations cost, as the ledger recorded it (`operation_costs`)."""
    operations = {
        operation.aggregate_id: operation
        for operation in Operation.objects.filter(aggregate_id__in=[a for a, _ in started])
    }
    totals: dict[str, Decimal] = {}
    moved: dict[str, Decimal] = {}
    for aggregate_id, pool in started:
        operation = operations.get(aggregate_id)
        if operation is None:
            continue
        costs = operation_costs(operation)
        totals[pool] = totals.get(pool, Decimal(0)) + costs.total_usd
        if costs.moved_usd is not None:
            moved[pool] = moved.get(pool, Decimal(0)) + costs.moved_usd
    for key, figures in reality.items():
        cost = totals.get(key, Decimal(0))
        figures["estimated_cost_usd"] = cost.quantize(USD_PLACES)
        if key in moved:
            figures["volume_usd"] = moved[key].quantize(USD_PLACES)
        volume = figures["volume_usd"]
        figures["cost_per_10k_usd"] = (
            (cost / volume * PER).quantize(USD_PLACES) if volume > 0 else None
        )


def jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value

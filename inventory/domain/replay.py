"""Replaying the market's flow under candidate settings (the backtest, issue 25). Pure.

A `World` is one candidate's inventory over the period: it starts from the pools the log shows
at the period's start, takes the market's flow (onchain fills and hedges: `FLOW_EVENTS`)
through the same fold the projection runs (`inventory.domain.inventory.fold_stored`), and after
each event asks the trigger's own decision (`inventory.domain.plan.plan_pool`) for each pool
the event touched. An operation it starts is modelled: its amount goes inflight at once, it
completes after the kind's modelled duration (`Model.seconds`), its effect (the amount
credited at the destination) applies at completion, then the pool and USDC are checked
again, as the trigger re-checks after a terminal event. At most one operation is active per
pool. Venue snapshots and the real operations' events are not applied to a world.

A fill a world's balances cannot cover (a venue side short) is a fill the desk could not have
made: neither of its legs is applied, it is counted (`missed_fills`) and the pool is stocked
out until its next fill applies. `Reality` folds every event (snapshots and the real
operations too) and measures what really happened with the same figures.

Time is the events' `recorded_at`. Figures per pool (`PoolStats`): time out of band (ratio
outside the band in force), the largest deviation from the target, the time stocked out (a
venue side with nothing available, or the last fill missed), and ratio samples for a chart
(one per time bucket: memory stays flat in the log's length).
"""

from __future__ import annotations

import copy
import heapq
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from inventory.domain import events as ev
from inventory.domain import market_clock
from inventory.domain import plan as plan_domain
from inventory.domain.candidates import Candidate, candidate_settings
from inventory.domain.inventory import (
    _EXACT,
    _RATIO,
    InventoryError,
    InventoryFold,
    MutablePool,
    PoolInventory,
    _mul,
    fold_stored,
)
from inventory.domain.offchain import OffchainLeavable
from inventory.domain.settings import (
    ASSET_REGISTERED,
    BREAKER_OPEN,
    CIRCUIT_BREAKER_PREFIX,
    GLOBAL_SCOPE,
    AssetOverride,
    RebalancingSettings,
    parse_setting,
)
from inventory.domain.values import USDC_POOL, Direction, RebalanceDirection

FLOW_EVENTS = (
    ev.OnChainOrderFilled,
    ev.OffChainOrderFilled,
    ev.OffChainOrderPlaced,
    ev.OffChainOrderFailed,
)
ZERO = Decimal(0)
_EXACT_ADD = _EXACT.add
_RATIO_DIVIDE = _RATIO.divide
SAMPLES = 240  # ratio samples per pool for the chart
SAMPLES_LAST = SAMPLES - 1
_FILLS = (ev.OnChainOrderFilled, ev.OffChainOrderFilled)


# --- the settings in force over time (the log's audited changes) -----------------------------


def settings_with_change(
    settings: RebalancingSettings,
    scope: str,
    setting: str,
    value: str | None,
    *,
    registered: Callable[[str], AssetOverride] | None = None,
) -> RebalancingSettings:
    """`settings` with one audited value set (a `SettingChanged`'s new value going forward,
    its old value going back). Registration (`asset`) adds or removes the asset (`registered`
    gives its override); breakers and unknown settings change nothing here."""
    if setting.startswith(CIRCUIT_BREAKER_PREFIX):
        return settings
    if setting == ASSET_REGISTERED:
        assets = dict(settings.assets)
        if value is None:
            assets.pop(scope, None)
        elif scope not in assets:
            assets[scope] = (
                registered(scope) if registered is not None else AssetOverride(True, None, None)
            )
        return replace(settings, assets=assets)
    try:
        parsed = parse_setting(scope, setting, value)
    except Exception:  # noqa: BLE001 - a value the settings refuse now is left out
        return settings
    if scope == GLOBAL_SCOPE:
        part: dict[str, Any] = {"target" if setting.endswith("ratio") else "deviation": parsed}
        if setting in ("equity_target_ratio", "equity_deviation"):
            return replace(settings, equity_threshold=replace(settings.equity_threshold, **part))
        if setting in ("usdc_target_ratio", "usdc_deviation"):
            return replace(settings, usdc_threshold=replace(settings.usdc_threshold, **part))
        changes: dict[str, Any] = {setting: parsed}
        return replace(settings, **changes)
    asset = settings.assets.get(scope)
    if asset is None:
        return settings
    fields: dict[str, Any] = {setting: parsed}
    return replace(settings, assets={**settings.assets, scope: replace(asset, **fields)})


def breaker_pool(setting: str) -> str | None:
    if setting.startswith(CIRCUIT_BREAKER_PREFIX):
        return setting[len(CIRCUIT_BREAKER_PREFIX) :]
    return None


# --- what a modelled operation takes and costs -------------------------------------------------


@dataclass(frozen=True)
class KindModel:
    """One kind's modelled duration (seconds) and cost: `fixed_usd` per operation plus `rate`
    times the USD moved. `basis` says where the figures came from."""

    seconds: float
    fixed_usd: Decimal = ZERO
    rate: Decimal = ZERO
    basis: str = "assumed"

    def cost(self, moved_usd: Decimal | None) -> Decimal:
        return self.fixed_usd + (self.rate * moved_usd if moved_usd is not None else ZERO)


@dataclass(frozen=True)
class Model:
    kinds: Mapping[str, KindModel]


def percentile(values: Iterable[float], fraction: float) -> float | None:
    """Nearest-rank percentile (0 < fraction <= 1) of the values; None when there are none."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, -(-int(fraction * 1000) * len(ordered) // 1000))
    return ordered[min(rank, len(ordered)) - 1]


def median_decimal(values: Iterable[Decimal]) -> Decimal | None:
    ordered = sorted(values)
    if not ordered:
        return None
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


# --- shared facts of the market (the same for every world) ------------------------------------


@dataclass
class Market:
    """What the log says about the market, for every world: the latest onchain fill price per
    symbol, the latest hedge placement per symbol (direction, shares), the Alpaca cash not
    yet withdrawable and whether Alpaca was read at all, the breakers open, the cash reserve."""

    prices: dict[str, Decimal] = field(default_factory=dict)
    placed: dict[str, tuple[Direction, Decimal]] = field(default_factory=dict)
    alpaca_read: bool = False
    unsettled: Decimal = ZERO
    breakers: set[str] = field(default_factory=set)
    reserve: Decimal = ZERO
    # Alpaca's clock as last recorded (`MarketClockRead`); None: never read, never paused.
    clock: market_clock.ClockState | None = None

    def open_at(self, moment: datetime) -> bool:
        """Whether equity operations could start at `moment`, as the service's market clock
        would have said (`service.market.equity_market_open`, the same rule)."""
        return self.clock is None or self.clock.open_at(moment)

    def see(self, aggregate_id: str, event: Any) -> None:
        kind = type(event)
        if kind is ev.OnChainOrderFilled:
            self.prices[aggregate_id] = event.price_usdc
        elif kind is ev.OffChainOrderPlaced:
            self.placed[aggregate_id] = (event.direction, event.shares)
        elif kind is ev.OffchainCash:
            self.alpaca_read = True
            withdrawable = event.cash_withdrawable
            self.unsettled = (
                ZERO if withdrawable is None else max(ZERO, event.cash_balance - withdrawable)
            )
        elif kind is ev.MarketClockRead:
            self.clock = market_clock.ClockState(
                is_open=event.is_open, next_open=event.next_open, next_close=event.next_close
            )
        elif kind is ev.SettingChanged:
            pool = breaker_pool(event.setting)
            if pool is not None:
                if event.new_value == BREAKER_OPEN:
                    self.breakers.add(pool)
                else:
                    self.breakers.discard(pool)

    def usd(self, pool: str, amount: Decimal) -> Decimal | None:
        if pool == USDC_POOL:
            return amount
        price = self.prices.get(pool)
        return None if price is None else amount * price


# --- figures per pool --------------------------------------------------------------------------


_last_moment: datetime | None = None
_last_ts = 0.0


def _ts(moment: datetime) -> float:
    """`moment` in seconds (one entry cached: every world sees the same event's moment)."""
    global _last_moment, _last_ts
    if moment is not _last_moment:
        _last_moment, _last_ts = moment, moment.timestamp()
    return _last_ts


class PoolStats:
    """Time out of band, largest deviation, time stocked out and ratio samples of one pool."""

    __slots__ = (
        "start",
        "scale",
        "last",
        "out",
        "short",
        "out_s",
        "short_s",
        "largest",
        "missed",
        "missed_fill",
        "samples",
        "bands",
    )

    def __init__(self, start: datetime, end: datetime) -> None:
        self.start = start.timestamp()
        self.scale = SAMPLES / max((end - start).total_seconds(), 1e-9)
        self.last = self.start
        self.out = False
        self.short = False
        self.out_s = 0.0
        self.short_s = 0.0
        self.largest: Decimal | None = None
        self.missed = 0
        self.missed_fill = False
        self.samples: list[Decimal | None] = [None] * SAMPLES
        # (sample index, lower, upper) whenever the band changes.
        self.bands: list[tuple[int, Decimal, Decimal]] = []

    def advance(self, moment: datetime) -> None:
        self._advance(_ts(moment))

    def _advance(self, ts: float) -> None:
        if ts <= self.last:
            return
        elapsed = ts - self.last
        if self.out:
            self.out_s += elapsed
        if self.short:
            self.short_s += elapsed
        self.last = ts

    def _index(self, ts: float) -> int:
        at = int((ts - self.start) * self.scale)
        return 0 if at < 0 else (SAMPLES - 1 if at >= SAMPLES else at)

    def update(self, moment: datetime, pool: MutablePool, band: tuple[Decimal, ...]) -> None:
        """The time up to `moment` counted in the old state, then the pool's state from it.
        (The hot path of the replay: `_ts` and `_advance` written out.)"""
        global _last_moment, _last_ts
        if moment is _last_moment:
            ts = _last_ts
        else:
            ts = _last_ts = moment.timestamp()
            _last_moment = moment
        last = self.last
        if ts > last:
            if self.out:
                self.out_s += ts - last
            if self.short:
                self.short_s += ts - last
            self.last = ts
        target, lower, upper = band
        bands = self.bands
        if not bands or bands[-1][1] != lower or bands[-1][2] != upper:
            bands.append((self._index(ts), lower, upper))
        on, off = pool.on, pool.off
        if on is None or off is None:
            self.short = True
            self.out = False
            return
        self.short = on[0] <= 0 or off[0] <= 0 or self.missed_fill
        add = _EXACT_ADD
        on_total = add(on[0], on[1])
        total = add(add(on_total, off[0]), off[1])
        if not total:
            self.out = False
            return
        # Exactly `detect_imbalance`'s comparison (products, strict edges).
        self.out = on_total < _mul(total, lower) or on_total > _mul(total, upper)
        value = _RATIO_DIVIDE(on_total, total)
        deviation = abs(value - target)
        largest = self.largest
        if largest is None or deviation > largest:
            self.largest = deviation
        at = int((ts - self.start) * self.scale)
        self.samples[0 if at < 0 else (SAMPLES_LAST if at >= SAMPLES else at)] = value

    def finish(self, end: datetime) -> None:
        self.advance(end)

    def copy(self) -> PoolStats:
        copied = PoolStats.__new__(PoolStats)
        for name in PoolStats.__slots__:
            setattr(copied, name, getattr(self, name))
        copied.samples = list(self.samples)
        copied.bands = list(self.bands)
        return copied


@dataclass
class Started:
    """An operation a world started (or that really started): when, what, how much."""

    at: datetime
    kind: str
    pool: str
    amount: Decimal
    moved_usd: Decimal | None
    cost_usd: Decimal | None
    ends_at: datetime | None = None
    aggregate_id: str = ""


# --- a candidate's world -------------------------------------------------------------------------


def _band(settings: RebalancingSettings, key: str) -> tuple[Decimal, Decimal, Decimal]:
    threshold = settings.threshold_for(key)
    return threshold.target, threshold.lower, threshold.upper


class World:
    """One candidate under one timing ("median" or "p90") over the period."""

    def __init__(
        self,
        *,
        candidate: Candidate,
        runs: Mapping[str, Model],
        base: RebalancingSettings,
        pools: Mapping[str, PoolInventory],
        start: datetime,
        end: datetime,
        market: Market,
        keys: frozenset[str] | None = None,
    ) -> None:
        self.candidate = candidate
        if not runs:
            raise ValueError("a world stands for at least one run")
        # The timings this world stands for (timing -> model), while they agree.
        self.runs: dict[str, Model] = dict(runs)
        self.model = next(iter(self.runs.values()))
        # Per started operation (its index in `started`), while the runs are shared: each
        # run's (end, cost) when they differ.
        self._variants: dict[int, dict[str, tuple[datetime, Decimal | None]]] = {}
        self._active_index: dict[str, int] = {}
        self.market = market
        self.keys = keys
        self.end = end
        self.pools: dict[str, MutablePool] = {}
        for key, pool in pools.items():
            # No snapshot is applied here: the remembered fill legs are not needed.
            self.pools[key] = MutablePool(replace(pool, onchain_fills_after=()))
        self._fold = InventoryFold()
        self.active: dict[str, Started] = {}
        self._due: list[tuple[datetime, str]] = []
        self.started: list[Started] = []
        self.stats: dict[str, PoolStats] = {}
        self._start = start
        self.settings = candidate_settings(base, candidate)
        self._bands: dict[str, tuple[Decimal, Decimal, Decimal]] = {}
        for key in sorted(self.pools):
            if self._wanted(key):
                self._observe(key, start)

    # -- settings ---------------------------------------------------------------------------

    @property
    def timings(self) -> tuple[str, ...]:
        return tuple(self.runs)

    def base_changed(self, base: RebalancingSettings, moment: datetime) -> list[World]:
        """The settings in force changed at `moment`; -> the worlds split off (see `advance`),
        which took the change too."""
        forks = self.advance(moment)
        for world in (self, *forks):
            world._base_changed(base, moment)
        return forks

    def _base_changed(self, base: RebalancingSettings, moment: datetime) -> None:
        self.settings = candidate_settings(base, self.candidate)
        self._bands.clear()
        for key in sorted(self.stats):
            self._observe(key, moment)
        # A settings change touches no pool: the trigger checks on the pools' next events.

    def band(self, key: str) -> tuple[Decimal, Decimal, Decimal]:
        band = self._bands.get(key)
        if band is None:
            band = self._bands[key] = _band(self.settings, key)
        return band

    # -- the flow -----------------------------------------------------------------------------

    def _wanted(self, key: str) -> bool:
        return self.keys is None or key in self.keys

    def advance(self, moment: datetime, *, before: bool = False) -> list[World]:
        """Complete the modelled operations due by `moment` (with `before`, only those due
        before it), in time order.

        A world shared by several runs (`runs`) is one world until an operation completes at
        a different time in one run than in another: there it splits, before that completion,
        into one world per run (each completing its operations at its own times). -> the
        worlds split off (this one keeps the first run)."""
        due = self._due
        forks: list[World] = []
        while due and (due[0][0] < moment if before else due[0][0] <= moment):
            at, key = due[0]
            if self._variants and self._ends_differ(key):
                forks = self._split()
                for world in (self, *forks):
                    world.advance(moment, before=before)
                return forks
            heapq.heappop(due)
            self._complete(key, at)
        return forks

    def flow(self, aggregate_id: str, event: Any, moment: datetime) -> list[World]:
        """One market event (fill or hedge) at `moment` (its `recorded_at`). -> the worlds
        split off before it (`advance`), which took it too.

        An operation due at the very moment of a market event completes after it (and after
        any other market event at that moment), as the days the replay is held to the trigger
        on record it (`tests/operations/backtest_day.py`: a completion after the fills of its
        second); the log alone cannot order a tie."""
        due = self._due
        forks = self.advance(moment, before=True) if due and due[0][0] < moment else []
        self._flow(aggregate_id, event, moment)
        for world in forks:
            world._flow(aggregate_id, event, moment)
        return forks

    def _flow(self, aggregate_id: str, event: Any, moment: datetime) -> None:
        pools = self.pools
        keys = _PAIRS.get(aggregate_id)
        if keys is None:
            keys = _PAIRS[aggregate_id] = tuple(sorted({aggregate_id, USDC_POOL}))
        kept = [(key, pools.get(key)) for key in keys]
        saved = [_saved(pool) for _, pool in kept]
        fold_stored(pools, self._fold, ev.POSITION, aggregate_id, event, moment)
        missed = False
        for key in keys:
            pool = pools[key]
            if pool.reason is not None:
                missed = True
            if pool.fills:
                pool.fills = []  # no snapshot comes: no leg needs remembering
        if missed:
            for (key, before), state in zip(kept, saved, strict=True):
                if before is None:
                    pools[key].reason = None
                    pools[key].on = pools[key].off = None
                else:
                    _restore(before, state)
        fill = type(event) in _FILLS
        wanted = self.keys
        stats_of = self.stats
        for key in keys:
            if wanted is not None and key not in wanted:
                continue
            stats = stats_of.get(key)
            if stats is None:
                self._observe(key, moment)
                continue
            if fill:
                if missed:
                    stats.missed += 1
                stats.missed_fill = missed
            band = self._bands.get(key)
            stats.update(moment, pools[key], band if band is not None else self.band(key))
        self._check(keys, moment)

    # -- decisions and modelled operations --------------------------------------------------

    def _observe(self, key: str, moment: datetime) -> None:
        stats = self.stats.get(key)
        if stats is None:
            stats = self.stats[key] = PoolStats(self._start, self.end)
        pool = self.pools.get(key)
        if pool is not None:
            stats.update(moment, pool, self.band(key))
        else:
            stats.advance(moment)

    def _check(self, keys: tuple[str, ...], moment: datetime) -> None:
        """The trigger's decision for each pool (`keys` sorted). A pool within its band is never
        asked: inside it `plan_pool` plans nothing whatever the other facts (`stats.out` is
        `detect_imbalance`'s own comparison, made when the pool was last observed)."""
        for key in keys:
            if not self._wanted(key):
                continue
            mutable = self.pools.get(key)
            stats = self.stats.get(key)
            if mutable is None or stats is None or not stats.out:
                continue
            pool = mutable.domain()
            plan = plan_domain.plan_pool(
                key=key, pool=pool, settings=self.settings, facts=self._facts(key, pool, moment)
            )
            if isinstance(plan, plan_domain.Planned):
                self._start_operation(plan, pool, moment)

    def _facts(self, key: str, pool: PoolInventory, moment: datetime) -> plan_domain.PlanFacts:
        active = self.active.get(key)
        market = self.market
        return plan_domain.PlanFacts(
            hold_reason="circuit breaker open" if key in market.breakers else None,
            market_open=lambda: market.open_at(moment),
            active_operation=None if active is None else f"{active.kind} since {active.at}",
            leavable=lambda: self._leavable(pool),
        )

    def _leavable(self, pool: PoolInventory) -> OffchainLeavable | None:
        """`inventory.selectors.offchain_leavable` on this world's balances: the Alpaca cash
        not yet withdrawable is the log's; the pending buy hedges at their fill prices."""
        market = self.market
        if not market.alpaca_read or pool.offchain is None:
            return None
        spend = ZERO
        if pool.offchain_hedges_pending > 0:
            for symbol, mutable in self.pools.items():
                if symbol == USDC_POOL or mutable.hedges <= 0:
                    continue
                placed = market.placed.get(symbol)
                if placed is None or placed[0] != Direction.BUY:
                    continue
                price = market.prices.get(symbol)
                if price is None:
                    return None
                spend += placed[1] * price
        available = pool.offchain.available
        return OffchainLeavable(
            pool_available=available,
            cash=available,
            cash_withdrawable=max(ZERO, available - market.unsettled),
            usdc=ZERO,
            reserve=market.reserve,
            hedge_spend=spend,
        )

    def _start_operation(
        self, plan: plan_domain.Planned, pool: PoolInventory, moment: datetime
    ) -> None:
        try:
            if plan.kind in (plan_domain.MINT, plan_domain.USDC_ALPACA_TO_BASE):
                moved = pool.move_offchain_to_inflight(plan.amount)
            else:
                moved = pool.move_onchain_to_inflight(plan.amount)
        except InventoryError:  # pragma: no cover - the plan never asks for more than there is
            return
        self.pools[plan.pool].load(moved)
        usd = self.market.usd(plan.pool, plan.amount)
        variants: dict[str, tuple[datetime, Decimal | None]] = {}
        for timing, model in self.runs.items():
            kind = model.kinds[plan.kind]
            variants[timing] = (moment + _seconds(kind.seconds), kind.cost(usd))
        ends, cost = next(iter(variants.values()))
        if len(set(variants.values())) > 1:
            self._variants[len(self.started)] = variants
            ends = min(end for end, _ in variants.values())
        started = Started(
            at=moment,
            kind=plan.kind,
            pool=plan.pool,
            amount=plan.amount,
            moved_usd=usd,
            cost_usd=cost,
            ends_at=ends,
        )
        self.active[plan.pool] = started
        self._active_index[plan.pool] = len(self.started)
        self.started.append(started)
        heapq.heappush(self._due, (ends, plan.pool))
        self._observe(plan.pool, moment)

    def _complete(self, key: str, moment: datetime) -> None:
        started = self.active.pop(key)
        self._active_index.pop(key, None)
        pool = self.pools[key].domain()
        if started.kind in (plan_domain.MINT, plan_domain.USDC_ALPACA_TO_BASE):
            done = pool.transfer_offchain_inflight_to_onchain(started.amount)
        else:
            done = pool.transfer_onchain_inflight_to_offchain(started.amount)
        self.pools[key].load(done.with_last_rebalancing(moment))
        if self._wanted(key):
            self._observe(key, moment)
        self._check(tuple(sorted({key, USDC_POOL})), moment)

    def finish(self) -> list[World]:
        """Complete what is due by the end (later ones stay inflight) and close the figures.
        A world still shared by runs whose operations differ (end or cost) splits, so each
        run reports its own; -> the worlds split off, finished too."""
        forks = self.advance(self.end)
        if self._variants:
            forks += self._split()
        for world in (self, *forks):
            for stats in world.stats.values():
                stats.finish(world.end)
        return forks

    # -- runs shared until they differ ------------------------------------------------------

    def _ends_differ(self, key: str) -> bool:
        index = self._active_index.get(key)
        variants = None if index is None else self._variants.get(index)
        return variants is not None and len({end for end, _ in variants.values()}) > 1

    def _split(self) -> list[World]:
        """One world per run: this one keeps the first, a copy takes each other one."""
        first, *others = self.runs
        forks = [self._copy() for _ in others]
        for world, timing in zip((self, *forks), (first, *others), strict=True):
            world._settle(timing)
        return forks

    def _copy(self) -> World:
        world = copy.copy(self)
        world.pools = {key: _pool_copy(pool) for key, pool in self.pools.items()}
        world.stats = {key: stats.copy() for key, stats in self.stats.items()}
        world._fold = InventoryFold()
        world.active = dict(self.active)
        world._active_index = dict(self._active_index)
        world._due = list(self._due)
        world.started = list(self.started)
        world._bands = dict(self._bands)
        world._variants = dict(self._variants)
        world.runs = dict(self.runs)
        return world

    def _settle(self, timing: str) -> None:
        """From now on this world is run `timing` alone: its operations' ends and costs."""
        model = self.runs[timing]
        self.runs = {timing: model}
        self.model = model
        for index, variants in self._variants.items():
            old = self.started[index]
            ends, cost = variants[timing]
            new = replace(old, ends_at=ends, cost_usd=cost)
            self.started[index] = new
            if self.active.get(old.pool) is old:
                self.active[old.pool] = new
        self._variants = {}
        self._due = [
            (started.ends_at, key)
            for key, started in self.active.items()
            if started.ends_at is not None
        ]
        heapq.heapify(self._due)


def _seconds(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


# A position event's pools, in the trigger's (sorted) order: the symbol and USDC.
_PAIRS: dict[str, tuple[str, ...]] = {}


def _pool_copy(pool: MutablePool) -> MutablePool:
    copied = MutablePool.__new__(MutablePool)
    for name in MutablePool.__slots__:
        value = getattr(pool, name)
        setattr(copied, name, list(value) if type(value) is list else value)
    return copied


def _saved(pool: MutablePool | None) -> tuple[Any, ...] | None:
    """What a fill's legs change: the venues' available amounts (inflight never), the
    reason and the time."""
    if pool is None:
        return None
    on, off = pool.on, pool.off
    return (
        None if on is None else on[0],
        None if off is None else off[0],
        pool.reason,
        pool.last_updated,
    )


def _restore(pool: MutablePool, saved: tuple[Any, ...] | None) -> None:
    """Undo a fill's legs (the hedge tracking keeps its advance, as the fold keeps it)."""
    assert saved is not None
    on, off, pool.reason, pool.last_updated = saved
    if on is not None and pool.on is not None:
        pool.on[0] = on
    if off is not None and pool.off is not None:
        pool.off[0] = off


# --- what really happened ----------------------------------------------------------------------


_KIND_OF = {ev.MINT: plan_domain.MINT, ev.REDEMPTION: plan_domain.REDEMPTION}


def operation_kind(aggregate_type: str, direction: RebalanceDirection) -> str:
    if aggregate_type in _KIND_OF:
        return _KIND_OF[aggregate_type]
    if direction is RebalanceDirection.ALPACA_TO_BASE:
        return plan_domain.USDC_ALPACA_TO_BASE
    return plan_domain.USDC_BASE_TO_ALPACA


class Reality:
    """Every event folded as the projection folds it; figures against the as-run band."""

    def __init__(self) -> None:
        self.pools: dict[str, MutablePool] = {}
        self.fold = InventoryFold()
        self.stats: dict[str, PoolStats] = {}
        self.started: list[Started] = []
        self.settings: RebalancingSettings | None = None
        self._bands: dict[str, tuple[Decimal, Decimal, Decimal]] = {}
        self.keys: frozenset[str] | None = None
        self._measuring = False
        self._end: datetime | None = None
        self._start: datetime | None = None

    def begin(
        self,
        *,
        start: datetime,
        end: datetime,
        settings: RebalancingSettings,
        keys: frozenset[str] | None,
    ) -> None:
        """From here on, measure."""
        self._measuring = True
        self._start, self._end = start, end
        self.settings = settings
        self._bands.clear()
        self.keys = keys
        for key in sorted(self.pools):
            self._observe(key, start)

    def domains(self) -> dict[str, PoolInventory]:
        return {key: pool.domain() for key, pool in self.pools.items()}

    def apply(
        self, aggregate_type: str, aggregate_id: str, event: Any, moment: datetime, market: Market
    ) -> tuple[str, ...]:
        genesis = (
            aggregate_type in ev.OPERATION_EVENT_TYPES
            and (aggregate_type, aggregate_id) not in self.fold.tracks
        )
        keys = fold_stored(self.pools, self.fold, aggregate_type, aggregate_id, event, moment)
        if not self._measuring:
            return keys
        if genesis:
            track = self.fold.tracks.get((aggregate_type, aggregate_id))
            if track is not None:
                g = track.genesis
                if self.keys is None or g.pool_key in self.keys:
                    self.started.append(
                        Started(
                            at=moment,
                            kind=operation_kind(aggregate_type, g.direction),
                            pool=g.pool_key,
                            amount=g.amount,
                            moved_usd=market.usd(g.pool_key, g.amount),
                            cost_usd=None,
                            aggregate_id=aggregate_id,
                        )
                    )
        fill = type(event) in _FILLS
        wanted = self.keys
        for key in keys:
            if wanted is not None and key not in wanted:
                continue
            pool = self.pools[key]
            stats = self.stats.get(key)
            if stats is None:
                self._observe(key, moment)
                continue
            if fill:
                stats.missed_fill = pool.reason is not None
                stats.missed += pool.reason is not None
            band = self._bands.get(key)
            if band is None:
                self._observe(key, moment)
            else:
                stats.update(moment, pool, band)
        return keys

    def settings_changed(self, settings: RebalancingSettings, moment: datetime) -> None:
        self.settings = settings
        self._bands.clear()
        if self._measuring:
            for key in sorted(self.stats):
                self._observe(key, moment)

    def _observe(self, key: str, moment: datetime) -> None:
        assert self._start is not None and self._end is not None and self.settings is not None
        if self.keys is not None and key not in self.keys:
            return
        stats = self.stats.get(key)
        if stats is None:
            stats = self.stats[key] = PoolStats(self._start, self._end)
        band = self._bands.get(key)
        if band is None:
            band = self._bands[key] = _band(self.settings, key)
        stats.update(moment, self.pools[key], band)

    def finish(self) -> None:
        assert self._end is not None
        for stats in self.stats.values():
            stats.finish(self._end)

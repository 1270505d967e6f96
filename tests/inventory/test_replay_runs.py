"""A candidate's median and p90 runs share one world until they differ
(`inventory.domain.replay.World`): on random flows, the shared world reports exactly what two
separate worlds report, run by run, and it does split when an operation completes at a
different time in each run."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from inventory.domain import events as ev
from inventory.domain import plan as p
from inventory.domain.candidates import as_run
from inventory.domain.events import TradeId
from inventory.domain.inventory import ImbalanceThreshold, PoolInventory, VenueBalance
from inventory.domain.replay import KindModel, Market, Model, World
from inventory.domain.settings import AssetOverride, RebalancingSettings
from inventory.domain.values import USDC_POOL, Direction

D = Decimal
T0 = datetime(2026, 12, 1, 14, 30, tzinfo=UTC)
SYMBOLS = ("AAPL", "MSFT")


def settings() -> RebalancingSettings:
    return RebalancingSettings(
        enabled=True,
        paused=False,
        equity_threshold=ImbalanceThreshold(D("0.5"), D("0.05")),
        usdc_threshold=ImbalanceThreshold(D("0.5"), D("0.1")),
        equity_minimum_shares=D(1),
        usdc_minimum=D(10),
        equity_cap_shares=None,
        usdc_cap=None,
        assets={symbol: AssetOverride(True, None, None) for symbol in SYMBOLS},
    )


def model(seconds: dict[str, float], fixed: str = "1") -> Model:
    return Model({kind: KindModel(seconds[kind], D(fixed), D("0.001")) for kind in p.KINDS})


MEDIAN = {p.MINT: 60, p.REDEMPTION: 90, p.USDC_ALPACA_TO_BASE: 120, p.USDC_BASE_TO_ALPACA: 120}
SLOW = {kind: 3 * value for kind, value in MEDIAN.items()}


def flow(seed: int, count: int) -> list[tuple[str, ev.OnChainOrderFilled, datetime]]:
    rng = random.Random(seed)
    events = []
    at = T0
    for n in range(count):
        at += timedelta(seconds=rng.randint(1, 40))
        events.append(
            (
                rng.choice(SYMBOLS),
                ev.OnChainOrderFilled(
                    trade_id=TradeId("0x" + f"{n:064x}", 0),
                    amount=D(rng.randint(1, 12)),
                    direction=Direction.BUY if rng.random() < 0.5 else Direction.SELL,
                    price_usdc=D("10"),
                    block_timestamp=at,
                    seen_at=at,
                ),
                at,
            )
        )
    return events


def replay(runs_in_worlds: list[dict[str, Model]], events, end: datetime) -> dict[str, dict]:
    """Every world over the flow; -> per run: the operations started and the figures."""
    pools = {symbol: PoolInventory(VenueBalance(D(50)), VenueBalance(D(50))) for symbol in SYMBOLS}
    pools[USDC_POOL] = PoolInventory(VenueBalance(D(2000)), VenueBalance(D(2000)))
    market = Market()
    worlds = [
        World(
            candidate=as_run(),
            runs=runs,
            base=settings(),
            pools=pools,
            start=T0,
            end=end,
            market=market,
        )
        for runs in runs_in_worlds
    ]
    for symbol, event, at in events:
        market.see(symbol, event)
        for world in list(worlds):
            worlds.extend(world.flow(symbol, event, at))
    for world in list(worlds):
        worlds.extend(world.finish())
    seen: dict[str, dict] = {}
    for world in worlds:
        for timing in world.timings:
            assert timing not in seen
            seen[timing] = {
                "started": [
                    (s.at, s.kind, s.pool, s.amount, s.ends_at, s.cost_usd) for s in world.started
                ],
                "figures": {
                    key: (st.out_s, st.short_s, st.largest, st.missed, st.samples, st.bands)
                    for key, st in world.stats.items()
                },
                "balances": {key: (pool.on, pool.off) for key, pool in world.pools.items()},
            }
    return seen


@pytest.mark.parametrize("seed", range(6))
def test_a_shared_world_reports_what_separate_worlds_report(seed):
    events = flow(seed, 150)
    end = events[-1][2] + timedelta(seconds=200)
    runs = {"median": model(MEDIAN), "p90": model(SLOW, fixed="2")}
    shared = replay([runs], events, end)
    separate = replay([{timing: m} for timing, m in runs.items()], events, end)
    assert set(shared) == {"median", "p90"}
    assert shared == separate
    assert shared["median"]["started"], "the flow starts operations"
    # The runs did differ: the p90 run completes later (and was charged its own cost).
    assert shared["median"]["started"] != shared["p90"]["started"]


def test_runs_that_agree_stay_one_world_and_split_at_the_first_different_completion():
    events = flow(3, 150)
    end = events[-1][2] + timedelta(seconds=200)
    same = replay([{"median": model(MEDIAN), "p90": model(MEDIAN)}], events, end)
    assert same["median"] == same["p90"]

    runs = {"median": model(MEDIAN), "p90": model(SLOW)}
    pools = {symbol: PoolInventory(VenueBalance(D(50)), VenueBalance(D(50))) for symbol in SYMBOLS}
    pools[USDC_POOL] = PoolInventory(VenueBalance(D(2000)), VenueBalance(D(2000)))
    market = Market()
    world = World(
        candidate=as_run(),
        runs=runs,
        base=settings(),
        pools=pools,
        start=T0,
        end=end,
        market=market,
    )
    forks: list[World] = []
    first_start = None
    for symbol, event, at in events:
        market.see(symbol, event)
        forks = world.flow(symbol, event, at)
        if first_start is None and world.started:
            first_start = world.started[0]
        if forks:
            assert first_start is not None and first_start.ends_at is not None
            # Not before the first operation's median end, at the first event from it.
            assert at >= first_start.ends_at
            break
    assert len(forks) == 1
    assert world.timings == ("median",) and forks[0].timings == ("p90",)
    assert world.started[0].ends_at < forks[0].started[0].ends_at

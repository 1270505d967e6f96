"""The scenario library of the simulator: market days with fixed seeds (issue 25).

A `Scenario` is a seeded market day: the symbols, how the takers lean (the drift phases), how
prices move (a random walk with a trend), and what the venues do (Base's gas price, Alpaca's
delays). `market_flow(scenario)` is its market flow, a pure function of the scenario and the
seed: the same seed gives the same fills and hedges, record for record. A flow is played two
ways (`manage.py scenario`):

- `--simulate`: the simulated day (`venues.sim.day`) with the desk playing the flow against
  the simulated venue and the whole service (chains, workers, operations), so the log holds
  the operations the service really started, their step timings and their costs;
- `--record`: the flow's records through the service's own ingest in this process (opening
  balances as a venue snapshot, then the fills and hedges in order): quick (seconds for a
  short scenario), for tests and backtests that need the flow and not the operations.

`short=True` plays the first `short_steps` steps (a few hundred events). Nothing here imports
the product.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import Any

from eth_utils import keccak

CENT = Decimal("0.01")
SHARE_STEP = Decimal("0.01")
USDC_STEP = Decimal("0.000001")
# The flow's clock: a Monday's regular session (the block and broker timestamps of --record).
DAY_START = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
START_PRICES = {"AAPL": Decimal(190), "TSLA": Decimal(250), "NVDA": Decimal(120)}


@dataclass(frozen=True)
class Phase:
    """From `start` (a fraction of the day, 0..1) on: each symbol's taker drift in [-1, 1]
    (positive: takers buy our tokens, the vault drains and a mint follows), Base's gas price
    as a multiple of the chain's normal base fee, and the venue's knobs."""

    start: float
    drift: dict[str, float]
    gas_multiplier: int = 1
    knobs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    seed: int
    symbols: tuple[str, ...]
    phases: tuple[Phase, ...]
    steps: int = 600
    short_steps: int = 120
    step_s: int = 30  # the flow's seconds between trades (--record's timestamps)
    # When > 0 a symbol's drift flips sign each time the vault's shares moved this far from
    # the opening balance by trades alone (rebalancing aside): the ratio swings around the
    # target between two bounds instead of running away.
    swing_shares: Decimal = Decimal(0)
    min_trade_shares: Decimal = Decimal("0.5")
    max_trade_shares: Decimal = Decimal(2)
    # The price walk: each step moves by one of -2..2 tenths of a percent plus `trend_bp`
    # basis points.
    trend_bp: int = 0
    # Opening balances: shares in each vault and at Alpaca, USDC in the vault, USD at Alpaca.
    vault_shares: Decimal = Decimal(40)
    offchain_shares: Decimal = Decimal(40)
    vault_usdc: Decimal = Decimal(10000)
    brokerage_cash: Decimal = Decimal(10000)
    # The simulated day's environment on top of its own (venues.sim.day.DAY_ENV).
    env: dict[str, str] = field(default_factory=dict)
    # SimKnobs the whole day runs with.
    knobs: dict[str, Any] = field(default_factory=dict)

    def with_seed(self, seed: int | None) -> Scenario:
        return self if seed is None else replace(self, seed=seed)

    def step_count(self, *, short: bool) -> int:
        return self.short_steps if short else self.steps

    def phase_at(self, step: int, *, short: bool) -> Phase:
        fraction = step / self.step_count(short=short)
        current = self.phases[0]
        for phase in self.phases:
            if phase.start <= fraction:
                current = phase
        return current


PAIR = ("AAPL", "TSLA")
SCENARIOS: dict[str, Scenario] = {
    # Takers lean one way, then the other, in short swings: the ratio swings about 0.15 around
    # the target. A band of 0.1 is crossed on every swing; a band of 0.3 never is: a wider band
    # starts fewer operations.
    "calm": Scenario(
        name="calm",
        title="a calm day: short swings around the target",
        seed=11,
        symbols=PAIR,
        phases=(Phase(0.0, {"AAPL": 0.8, "TSLA": -0.8}),),
        swing_shares=Decimal(14),
        short_steps=100,
    ),
    # Prices rise all day (+5 bp a step on top of the walk) while takers alternate long
    # phases: the USDC pool moves with the value of the shares traded.
    "trending": Scenario(
        name="trending",
        title="a trending day: prices climb, long one-way phases",
        seed=12,
        symbols=PAIR,
        phases=(
            Phase(0.0, {"AAPL": 0.8, "TSLA": -0.8}),
            Phase(1 / 3, {"AAPL": 0.8, "TSLA": 0.8}),
            Phase(2 / 3, {"AAPL": -0.8, "TSLA": -0.8}),
        ),
        trend_bp=5,
    ),
    # Takers buy AAPL all day (the vault drains again and again: mint after mint) while TSLA
    # trades both ways.
    "one-sided": Scenario(
        name="one-sided",
        title="a one-sided run: takers buy AAPL all day",
        seed=13,
        symbols=PAIR,
        phases=(Phase(0.0, {"AAPL": 0.9, "TSLA": 0.0}),),
    ),
    # Base's gas price is 200 times its normal level through the middle third of the day.
    "gas-spike": Scenario(
        name="gas-spike",
        title="a gas spike: Base gas 200x through the middle third",
        seed=14,
        symbols=PAIR,
        phases=(
            Phase(0.0, {"AAPL": 0.8, "TSLA": -0.8}),
            Phase(1 / 3, {"AAPL": -0.8, "TSLA": 0.8}, gas_multiplier=200),
            Phase(2 / 3, {"AAPL": 0.8, "TSLA": -0.8}),
        ),
    ),
    # Alpaca is slow all day: mints and redemptions take seconds, orders fill late.
    "slow-alpaca": Scenario(
        name="slow-alpaca",
        title="a slow Alpaca: mints, redemptions, transfers and orders take seconds",
        seed=15,
        symbols=PAIR,
        phases=(
            Phase(0.0, {"AAPL": 0.8, "TSLA": -0.8}),
            Phase(0.5, {"AAPL": -0.8, "TSLA": 0.8}),
        ),
        knobs={
            "mint_delay_s": 4.0,
            "redemption_detect_delay_s": 2.0,
            "redemption_complete_delay_s": 4.0,
            "withdrawal_processing_delay_s": 2.0,
            "withdrawal_complete_delay_s": 3.0,
            "deposit_credit_delay_s": 2.0,
            "order_fill_delay_s": 0.5,
        },
    ),
}


class UnknownScenario(KeyError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"scenario {self.name!r}: not one of {', '.join(sorted(SCENARIOS))}"


def scenario_get(name: str, *, seed: int | None = None) -> Scenario:
    try:
        return SCENARIOS[name].with_seed(seed)
    except KeyError:
        raise UnknownScenario(name) from None


@dataclass(frozen=True)
class Trade:
    """One step of the flow: the prices after the walk's step and one taker trade."""

    step: int
    at: datetime
    prices: dict[str, Decimal]
    symbol: str
    taker_buys: bool  # the taker buys our tokens: we sell onchain
    shares: Decimal
    phase: Phase

    @property
    def direction(self) -> str:
        """Our side of the fill (the API's `direction`)."""
        return "sell" if self.taker_buys else "buy"

    @property
    def usdc(self) -> Decimal:
        return (self.shares * self.prices[self.symbol]).quantize(USDC_STEP, rounding=ROUND_DOWN)


def trades(scenario: Scenario, *, short: bool = False) -> list[Trade]:
    """The scenario's trades, a pure function of the scenario (and its seed)."""
    rng = random.Random(scenario.seed)
    prices = {s: START_PRICES.get(s, Decimal(100)) for s in scenario.symbols}
    low = int(scenario.min_trade_shares * 100)
    high = int(scenario.max_trade_shares * 100)
    trend = Decimal(scenario.trend_bp) / Decimal(10000)
    out = []
    moved = {s: Decimal(0) for s in scenario.symbols}  # the vault's shares, by trades alone
    flipped = {s: False for s in scenario.symbols}
    for step in range(scenario.step_count(short=short)):
        for symbol, price in prices.items():
            move = Decimal(rng.choice((-2, -1, 0, 1, 2))) / Decimal(1000) + trend
            prices[symbol] = max(CENT, (price * (1 + move)).quantize(CENT))
        phase = scenario.phase_at(step, short=short)
        symbol = rng.choice(sorted(scenario.symbols))
        drift = phase.drift.get(symbol, 0.0)
        bound = scenario.swing_shares
        if bound > 0:
            # A positive drift drains the vault: flip at -bound, and back at +bound.
            lean = -drift if flipped[symbol] else drift
            if (lean > 0 and moved[symbol] <= -bound) or (lean < 0 and moved[symbol] >= bound):
                flipped[symbol] = not flipped[symbol]
            drift = -drift if flipped[symbol] else drift
            phase = replace(phase, drift={**phase.drift, symbol: drift})
        taker_buys = rng.random() < (1 + drift) / 2
        shares = (Decimal(rng.randint(low, high)) / 100).quantize(SHARE_STEP)
        moved[symbol] += -shares if taker_buys else shares
        out.append(
            Trade(
                step=step,
                at=DAY_START + timedelta(seconds=step * scenario.step_s),
                prices=dict(prices),
                symbol=symbol,
                taker_buys=taker_buys,
                shares=shares,
                phase=phase,
            )
        )
    return out


def hedge_for(net: Decimal) -> tuple[str, Decimal] | None:
    """The desk's hedging rule (spec 4.1): |net| >= 1 -> hedge floor(|net|) shares, a positive
    net (bought onchain) sells."""
    if abs(net) < 1:
        return None
    return ("sell" if net > 0 else "buy"), abs(net).to_integral_value(rounding=ROUND_DOWN)


def market_flow(scenario: Scenario, *, short: bool = False) -> list[dict[str, Any]]:
    """The scenario's market flow as ingest records (`manage.py ingest`'s JSON Lines: the HTTP
    API's fields and a `type`), in order: each trade's onchain fill, then each hedge the desk
    places and its fill at the step's price. Transaction hashes and broker order ids are
    derived from the scenario's name, seed and step, so the same seed gives the same records."""
    records: list[dict[str, Any]] = []
    net = {s: Decimal(0) for s in scenario.symbols}
    execution_id = 0
    label = f"{scenario.name}:{scenario.seed}"
    for trade in trades(scenario, short=short):
        moment = trade.at.isoformat()
        records.append(
            {
                "type": "onchain_fill",
                "tx_hash": "0x" + keccak(text=f"{label}:{trade.step}").hex(),
                "log_index": 1,
                "block_number": trade.step + 1,
                "symbol": trade.symbol,
                "direction": trade.direction,
                "quantity": str(trade.shares),
                "price_usdc": str(trade.prices[trade.symbol]),
                "block_timestamp": moment,
            }
        )
        net[trade.symbol] += trade.shares if trade.direction == "buy" else -trade.shares
        for symbol in sorted(scenario.symbols):
            hedge = hedge_for(net[symbol])
            if hedge is None:
                continue
            side, shares = hedge
            execution_id += 1
            records.append(
                {
                    "type": "hedge_placed",
                    "symbol": symbol,
                    "execution_id": execution_id,
                    "direction": side,
                    "shares": str(shares),
                }
            )
            records.append(
                {
                    "type": "hedge_filled",
                    "execution_id": execution_id,
                    "symbol": symbol,
                    "shares_filled": str(shares),
                    "direction": side,
                    "broker_order_id": f"{label}:order:{execution_id}",
                    "price_cents": int(trade.prices[symbol] * 100),
                    "broker_timestamp": moment,
                }
            )
            net[symbol] += -shares if side == "sell" else shares
    return records


def opening_balances(scenario: Scenario) -> dict[str, Any]:
    """The venues' balances at the start of the day (shares per symbol, USDC and USD)."""
    return {
        "onchain_equity": {s: scenario.vault_shares for s in scenario.symbols},
        "offchain_equity": {s: scenario.offchain_shares for s in scenario.symbols},
        "onchain_cash": scenario.vault_usdc,
        "offchain_cash": scenario.brokerage_cash,
        "offchain_usdc": Decimal(0),
    }


def scenario_assets(scenario: Scenario) -> list[dict[str, Any]]:
    """What `asset_register` needs for each symbol when the flow is recorded without the
    simulated venue (`--record`): token addresses derived from the symbol."""
    from eth_utils import to_checksum_address

    from venues.sim.venue import equity_vault_id, token_symbol_for

    return [
        {
            "base_symbol": symbol,
            "token_address": to_checksum_address(keccak(text=f"scenario token {symbol}")[-20:]),
            "token_symbol": token_symbol_for(symbol),
            "vault_id": equity_vault_id(symbol),
            "decimals": 18,
        }
        for symbol in scenario.symbols
    ]


def flow_signature(records: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    """What makes two flows the same market: each fill's and hedge's symbol, side, amount and
    price, in order (not the transaction hashes, blocks or timestamps a live run assigns)."""
    out: list[tuple[str, ...]] = []
    for record in records:
        if record["type"] == "onchain_fill":
            out.append(
                (
                    "fill",
                    record["symbol"],
                    record["direction"],
                    str(Decimal(record["quantity"])),
                    str(Decimal(record["price_usdc"])),
                )
            )
        elif record["type"] == "hedge_filled":
            out.append(
                (
                    "hedge",
                    record["symbol"],
                    record["direction"],
                    str(Decimal(record["shares_filled"])),
                )
            )
    return out

"""The simulated market and trading desk (part of the simulation, never of the product).

- `Market`: a seeded random walk per symbol; every step sets the simulated Alpaca's price, so
  market orders fill at the walk's current price.
- `Desk`: takers fill our orders onchain (`simulateTake` against our vaults, with a per-symbol
  drift so inventory leaves its band) and a hedger places and fills Alpaca market orders for
  the net position (spec 4.1 hedging rule: when |net| >= 1 share hedge floor(|net|), a positive
  net sells, the fractional remainder is carried). Both report to the service through its real
  HTTP API with a bearer token (`ServiceClient`), exactly as a trading bot would.

A trade is two simulated takes, one per vault (the equity vault and the USDC vault have their
own ids); the fill is reported with the equity leg's transaction and log.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_DOWN, Decimal
from typing import Any

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_incrementing

from venues.alpaca import (
    AlpacaApiError,
    AlpacaClient,
    AlpacaError,
    AlpacaRateLimited,
    InvalidParameters,
    Order,
)
from venues.http import RetryPolicy
from venues.sim.venue import SimVenue, equity_vault_id

logger = logging.getLogger(__name__)

SHARE_UNITS = Decimal(10) ** 18
USDC_UNITS = Decimal(10) ** 6
CENT = Decimal("0.01")
SHARE_STEP = Decimal("0.01")

START_PRICES = {"AAPL": Decimal(190), "TSLA": Decimal(250), "NVDA": Decimal(120)}


def _worth_retrying(error: BaseException) -> bool:
    """A connection failure, a 5xx or a 429 (the service is busy)."""
    if isinstance(error, ServiceError):
        return error.status >= 500 or error.status == 429
    return isinstance(error, OSError)


class ServiceError(Exception):
    """The service answered an error (status and body kept)."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:300]}")
        self.status = status
        self.body = body


class ServiceClient:
    """The rebalancer's HTTP API (`/api/v1/`) with a bearer token."""

    def __init__(self, base_url: str, token: str, *, timeout_s: float = 20.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._timeout_s = timeout_s

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.base_url}/api/v1{path}",
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:  # noqa: S310
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            raise ServiceError(error.code, error.read().decode(errors="replace")) from None

    def post(self, path: str, body: dict[str, Any]) -> Any:
        """POST with retries on a connection failure or a 5xx (the records are idempotent:
        a replay answers 200 duplicate)."""
        retrying = Retrying(
            retry=retry_if_exception(_worth_retrying),
            stop=stop_after_attempt(31),
            wait=wait_incrementing(start=0.2, increment=0.2, max=2.0),
            reraise=True,
        )
        return retrying(self.request, "POST", path, body)

    def get(self, path: str) -> Any:
        return self.request("GET", path)


class Market:
    """A seeded random walk per symbol (0.2% steps), pushed to the simulated Alpaca."""

    def __init__(self, venue: SimVenue, symbols: tuple[str, ...], rng: random.Random) -> None:
        self._venue = venue
        self._rng = rng
        self._lock = threading.Lock()
        self.prices = {s: START_PRICES.get(s, Decimal(100)) for s in symbols}
        for symbol, price in self.prices.items():
            venue.server.set_price(symbol, price)

    def step(self) -> None:
        with self._lock:
            for symbol, price in self.prices.items():
                move = Decimal(self._rng.choice((-2, -1, 0, 1, 2))) / Decimal(1000)
                new = max(CENT, (price * (1 + move)).quantize(CENT))
                self.prices[symbol] = new
                self._venue.server.set_price(symbol, new)

    def prices_set(self, prices: dict[str, Decimal]) -> None:
        """Set the prices (a scenario's scripted walk) instead of stepping."""
        with self._lock:
            for symbol, price in prices.items():
                self.prices[symbol] = price
                self._venue.server.set_price(symbol, price)

    def price(self, symbol: str) -> Decimal:
        with self._lock:
            return self.prices[symbol]


@dataclass
class DeskStats:
    trades: Counter[str] = field(default_factory=Counter)
    trades_refused: int = 0
    hedges_placed: int = 0
    hedges_filled: int = 0
    hedges_failed: int = 0
    hedges_unresolved: int = 0
    report_errors: list[str] = field(default_factory=list)


@dataclass
class OpenHedge:
    """A hedge reported to the service whose order's outcome Alpaca has not told yet."""

    execution_id: int
    symbol: str
    side: str
    shares: Decimal
    client_order_id: str
    order_id: str | None = None
    submitted: bool = False


class Desk:
    """Takers and a hedger. `drift[symbol]` in [-1, 1]: the chance bias of the takers buying
    our tokens (positive: inventory leaves the vault, so a mint follows) or selling us tokens
    (negative: the vault fills up, so a redemption follows)."""

    def __init__(
        self,
        *,
        venue: SimVenue,
        market: Market,
        service: ServiceClient,
        rng: random.Random,
        drift: dict[str, float],
        max_trade_shares: Decimal = Decimal(4),
        alpaca_timeout_s: float = 10.0,
    ) -> None:
        self._venue = venue
        self._market = market
        self._service = service
        self._rng = rng
        self.drift = dict(drift)
        self._max_trade = max_trade_shares
        self.net: dict[str, Decimal] = {s: Decimal(0) for s in drift}
        self.stats = DeskStats()
        self._execution_ids = iter(range(1, 10**9))
        self._lock = threading.Lock()
        self._open: dict[str, OpenHedge] = {}
        self._alpaca = AlpacaClient(
            base_url=venue.alpaca_url,
            api_key=venue.api_key,
            api_secret=venue.api_secret,
            account_id=venue.account_id,
            retry=RetryPolicy(attempts=3, min_delay_s=0.1, max_delay_s=0.5),
            timeout_s=alpaca_timeout_s,
        )

    # -- takers ----------------------------------------------------------------------------

    def trade_once(self, scripted: tuple[str, bool, Decimal] | None = None) -> bool:
        """One taker trade on a random symbol (or the `scripted` symbol, side and shares of a
        scenario's flow), reported to the service. False when it could not be made."""
        if scripted is not None:
            symbol, buys_from_us, shares = scripted
        else:
            symbol = self._rng.choice(sorted(self.drift))
            buys_from_us = self._rng.random() < (1 + self.drift[symbol]) / 2
            shares = (Decimal(self._rng.randint(50, int(self._max_trade * 100))) / 100).quantize(
                SHARE_STEP
            )
        price = self._market.price(symbol)
        usdc = (shares * price).quantize(Decimal("0.000001"), rounding=ROUND_DOWN)
        chains = self._venue.chains
        owner = self._venue.market_maker.address
        token = self._venue.equity_tokens[symbol]
        usdc_token = chains.base.usdc
        equity_vault = bytes.fromhex(equity_vault_id(symbol).removeprefix("0x"))
        usdc_vault = bytes.fromhex(self._venue.usdc_vault_id.removeprefix("0x"))
        share_units = int(shares * SHARE_UNITS)
        usdc_units = int(usdc * USDC_UNITS)
        try:
            if buys_from_us:
                # The taker pays USDC into our USDC vault and takes tokens out of the equity
                # vault: we Sell (spec 4.1: receive USDC, give tokens).
                if chains.vault_balance(owner, token, equity_vault) < share_units:
                    self.stats.trades_refused += 1
                    return False
                chains.simulate_take(
                    owner=owner,
                    vault_id=usdc_vault,
                    input_token=usdc_token,
                    input_units=usdc_units,
                    output_token=token,
                    output_units=0,
                )
                receipt = chains.simulate_take(
                    owner=owner,
                    vault_id=equity_vault,
                    input_token=token,
                    input_units=0,
                    output_token=token,
                    output_units=share_units,
                )
                direction = "sell"
            else:
                if chains.vault_balance(owner, usdc_token, usdc_vault) < usdc_units:
                    self.stats.trades_refused += 1
                    return False
                receipt = chains.simulate_take(
                    owner=owner,
                    vault_id=equity_vault,
                    input_token=token,
                    input_units=share_units,
                    output_token=token,
                    output_units=0,
                )
                chains.simulate_take(
                    owner=owner,
                    vault_id=usdc_vault,
                    input_token=usdc_token,
                    input_units=0,
                    output_token=usdc_token,
                    output_units=usdc_units,
                )
                direction = "buy"
        except Exception as error:  # noqa: BLE001 - an RPC outage: the trade did not happen
            logger.info("desk: taker trade on %s not done: %s", symbol, error)
            self.stats.trades_refused += 1
            return False
        log = receipt.logs[-1]
        block = chains.web3(chains.base).eth.get_block(receipt.block_number)
        moment = datetime.fromtimestamp(int(block["timestamp"]), UTC)
        self._report(
            "/fills/onchain",
            {
                "tx_hash": receipt.tx_hash,
                "log_index": log.log_index,
                "block_number": receipt.block_number,
                "symbol": symbol,
                "direction": direction,
                "quantity": str(shares),
                "price_usdc": str(price),
                "block_timestamp": moment.isoformat(),
            },
        )
        with self._lock:
            self.net[symbol] += shares if direction == "buy" else -shares
        self.stats.trades[direction] += 1
        return True

    # -- the hedger ------------------------------------------------------------------------

    def hedge_once(self, symbol: str, *, wait_s: float = 30.0) -> None:
        """Spec 4.1: |net| >= 1 -> hedge floor(|net|) shares (positive net sells).

        A hedge whose outcome Alpaca has not told yet stays open: the next call for the
        symbol keeps asking instead of placing another (a hedge is reported failed only
        when Alpaca refused the order or ended it unfilled, never because an answer was
        slow: a market order whose POST timed out may still fill)."""
        hedge = self._open.get(symbol)
        if hedge is None:
            with self._lock:
                net = self.net[symbol]
            if abs(net) < 1:
                return
            shares = abs(net).to_integral_value(rounding=ROUND_DOWN)
            side = "sell" if net > 0 else "buy"
            execution_id = next(self._execution_ids)
            if not self._report(
                "/hedges",
                {
                    "symbol": symbol,
                    "execution_id": execution_id,
                    "direction": side,
                    "shares": str(shares),
                },
            ):
                return
            self.stats.hedges_placed += 1
            hedge = OpenHedge(execution_id, symbol, side, shares, f"sim-desk-{execution_id}")
            self._open[symbol] = hedge
        self._drive(hedge, time.monotonic() + wait_s)

    def settle_hedges(self, *, timeout_s: float = 120.0) -> None:
        """Drive every open hedge to Alpaca's outcome (the end of the day); those still
        unknown after `timeout_s` are counted as unresolved, never reported failed."""
        deadline = time.monotonic() + timeout_s
        for hedge in list(self._open.values()):
            self._drive(hedge, deadline)
        self.stats.hedges_unresolved = len(self._open)

    @property
    def open_hedges(self) -> int:
        return len(self._open)

    def _drive(self, hedge: OpenHedge, deadline: float) -> None:
        while True:
            outcome = self._ask(hedge)
            if isinstance(outcome, Order):
                self._filled(hedge, outcome)
                return
            if isinstance(outcome, str):
                self._report(
                    f"/hedges/{hedge.execution_id}/fail",
                    {"symbol": hedge.symbol, "error": outcome[:200]},
                )
                self.stats.hedges_failed += 1
                del self._open[hedge.symbol]
                return
            if time.monotonic() >= deadline:
                return
            time.sleep(0.1)

    def _ask(self, hedge: OpenHedge) -> Order | str | None:
        """One step: the filled order, a refusal (str), or None (not known yet)."""
        alpaca = self._alpaca
        try:
            if hedge.order_id is None:
                order = None
                if hedge.submitted:
                    order = alpaca.find_order_by_client_order_id(hedge.client_order_id)
                if order is None:
                    hedge.submitted = True
                    order = alpaca.submit_market_order(
                        symbol=hedge.symbol,
                        qty=hedge.shares,
                        side=hedge.side,
                        client_order_id=hedge.client_order_id,
                    )
                hedge.order_id = order.id
            else:
                order = alpaca.get_order(hedge.order_id)
        except InvalidParameters as error:
            if "client_order_id" in error.message:
                return None  # an earlier attempt got through: look it up next
            return f"order refused: {error}"
        except AlpacaRateLimited:
            return None
        except AlpacaApiError as error:
            if error.status >= 500:
                return None
            return f"order refused: {error}"
        except AlpacaError as error:  # outcome unknown, no answer, unreadable: ask again
            logger.debug("desk: hedge %s not known yet: %s", hedge.execution_id, error)
            return None
        if order.status == "filled":
            return order
        if order.is_terminal:
            return f"order not filled: {order.status}"
        return None

    def _filled(self, hedge: OpenHedge, order: Order) -> None:
        price = order.filled_avg_price
        assert price is not None
        self._report(
            f"/hedges/{hedge.execution_id}/fill",
            {
                "symbol": hedge.symbol,
                "shares_filled": str(order.filled_qty),
                "direction": hedge.side,
                "broker_order_id": order.id,
                "price_cents": int((price * 100).to_integral_value()),
                "broker_timestamp": (order.filled_at or datetime.now(UTC)).isoformat(),
            },
        )
        with self._lock:
            self.net[hedge.symbol] += (
                -order.filled_qty if hedge.side == "sell" else order.filled_qty
            )
        self.stats.hedges_filled += 1
        del self._open[hedge.symbol]

    def _report(self, path: str, body: dict[str, Any]) -> bool:
        try:
            self._service.post(path, body)
        except Exception as error:  # noqa: BLE001 - counted and shown in the summary
            logger.warning("desk: %s refused: %s", path, error)
            self.stats.report_errors.append(f"{path}: {error}")
            return False
        return True

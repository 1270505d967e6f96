"""A simulated trading day (`python manage.py runrebalancer --simulate`).

`SimulatedDay(options).run()`:
1. starts the simulated venue in this process (two anvil chains, contracts, the HTTP venue),
   funds our vaults and the brokerage, seeds the price walk;
2. prepares a fresh database through the real commands (`migrate`, `asset add`,
   `createsuperuser`, `api_token create`) with thresholds tuned by the simulation's
   environment (not the product defaults) and prints the console URL, login and token;
3. runs the whole service as a child (`manage.py runrebalancer --http`) plus the desk
   (`venues.sim.desk`), which reports through the service's real HTTP API; with `chaos` it also
   SIGKILLs worker processes at random moments and turns on venue faults;
4. at the end quiesces (desk stopped, operations left to finish, faults off), runs
   `manage.py reconcile --json` and `manage.py rebuild_inventory --check`, reads the operations
   through the API, stops the service and prints the summary and the end-of-day checks:
   (1) every operation completed, failed with a reason, or running with its current step;
   (2) effects match operations one for one (venue request counts and chain logs against the
       operations' events); (3) drift zero after the final reconcile; (4) rebuild clean.
   `run()` returns 0 only when all four hold.

With `gas_spike_gwei` (`--gas-spike GWEI`) Ethereum starts the day busy: its base fee is held
at that price until the cost gate defers a USDC move for its cost, then falls to 1 gwei
(`GasSpike`); with `until_covered` such a day ends once a USDC move started after the fall
completed.

Nothing here imports the product: it speaks to the service by HTTP and its commands.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from venues.sim.chain import load_artifact
from venues.sim.desk import SHARE_UNITS, USDC_UNITS, Desk, Market, ServiceClient
from venues.sim.scenarios import Scenario, scenario_get, trades
from venues.sim.server import FAULT_5XX_AFTER, FAULT_HANG, KEY_MINT, KEY_WITHDRAW, SimKnobs
from venues.sim.venue import SimVenue, equity_vault_id

ROOT = Path(__file__).resolve().parents[2]
KINDS = ("mint", "redemption", "usdc_alpaca_to_base", "usdc_base_to_alpaca")
CHECKS = (
    "1 every operation accounted for",
    "2 effects match operations",
    "3 drift zero after reconcile",
    "4 rebuild_inventory --check clean",
)
# Issue 24: the cost ledger against the chains' receipts and the venue's own counters.
LEDGER_CHECK = "cost ledger matches the chains and venues"

# Thresholds of the simulated day (the sim's environment, not the product defaults): bands
# narrow enough that the desk's drift crosses them within a minute, and again soon after each
# rebalance (a 10-minute day runs 50+ operations).
DAY_ENV = {
    "EQUITY_TARGET_RATIO": "0.5",
    "EQUITY_DEVIATION": "0.1",
    "USDC_TARGET_RATIO": "0.5",
    "USDC_DEVIATION": "0.1",
    "EQUITY_MINIMUM_SHARES": "1",
    "USDC_MINIMUM": "51",
    "Q_WORKERS": "2",
    "Q_TIMEOUT_S": "30",
    "Q_RETRY_S": "35",
    "Q_POLL_S": "0.2",
    "SNAPSHOT_INTERVAL_S": "2",
    "HEARTBEAT_INTERVAL_S": "2",
    "SHUTDOWN_GRACE_S": "15",
    "REBALANCER_POLL_INTERVAL_S": "0.3",
    "REBALANCER_TX_POLL_INTERVAL_S": "0.2",
    "REBALANCER_BACKOFF_BASE_S": "0.2",
    "REBALANCER_BACKOFF_MAX_S": "2",
    "REBALANCER_DUE_INTERVAL_S": "0.3",
    "LOG_LEVEL": "INFO",
}
VAULT_SHARES = Decimal(40)
OFFCHAIN_SHARES = Decimal(40)
VAULT_USDC = Decimal(6000)
BROKERAGE_CASH = Decimal(14000)  # USDC starts heavy offchain: an Alpaca -> Base comes first


SETUP_SCRIPT = """
import json, os
from django.contrib.auth.models import User
from inventory.services import api_token_create, asset_register
for asset in json.loads(os.environ["SIM_DAY_ASSETS"]):
    asset_register(changed_by="simulated day", **asset)
password = os.environ["SIM_DAY_PASSWORD"]
User.objects.create_superuser("operator", "operator@example.invalid", password)
print(api_token_create(name="sim-desk", scopes=["ingest", "read"], created_by="simulated day")[1])
"""


class DayRefused(Exception):
    """The day cannot start as asked (the message says why and what to do)."""


@dataclass(frozen=True)
class DayOptions:
    symbols: tuple[str, ...] = ("AAPL", "TSLA", "NVDA")
    duration_s: float | None = None  # None: until Ctrl-C (or `stop()`)
    seed: int = 1
    db_path: str | None = None
    http: str = "127.0.0.1:8000"
    chaos: bool = False
    # Stop as soon as each kind of operation completed once (REBALANCING_MODE=monitor: as soon
    # as each kind was proposed once, since nothing starts).
    until_covered: bool = False
    settle_s: float = 90.0  # how long operations may take to finish at the end
    log_dir: str | None = None
    status_every_s: float = 30.0  # a one-line status while the day runs
    # A scenario of `venues.sim.scenarios` (its seed is `seed`): the desk plays its flow (the
    # whole flow, or its short variant), then the day ends; its knobs, gas and balances apply.
    scenario: str | None = None
    short: bool = False
    # Ethereum's base fee (gwei) until the cost gate defers a USDC move, then 1 gwei.
    gas_spike_gwei: Decimal | None = None


@dataclass
class DayReport:
    operations: list[dict[str, Any]] = field(default_factory=list)
    checks: dict[str, tuple[bool, str]] = field(default_factory=dict)
    pools: list[dict[str, Any]] = field(default_factory=list)
    kills: dict[str, int] = field(default_factory=dict)  # processes SIGKILLed, by role
    faults: dict[str, int] = field(default_factory=dict)
    outages: int = 0
    timeouts: int = 0  # requests held past the service's HTTP timeout, then carried out

    @property
    def ok(self) -> bool:
        return all(name in self.checks for name in CHECKS) and all(
            ok for ok, _ in self.checks.values()
        )


class SimulatedDay:
    def __init__(self, options: DayOptions, *, out: Callable[[str], None] = print) -> None:
        self.options = options
        self._out = out
        self._stop = threading.Event()
        self._rng = random.Random(options.seed)
        self.report = DayReport()
        self._work = Path(options.log_dir or tempfile.mkdtemp(prefix="simday-"))
        self._work.mkdir(parents=True, exist_ok=True)
        self.db_path = options.db_path or str(self._work / "day.sqlite3")
        self.venue: SimVenue | None = None
        self.service: subprocess.Popen[bytes] | None = None
        self.client: ServiceClient | None = None
        self.login: tuple[str, str] | None = None
        self.started = threading.Event()
        self._funding_block = 0
        self._hurry = threading.Event()
        self._chain_down: str | None = None
        self.scenario: Scenario | None = (
            None if options.scenario is None else scenario_get(options.scenario, seed=options.seed)
        )
        self.gas: GasSpike | None = None

    def stop(self) -> None:
        """End the day (safe from a signal handler): the summary and checks follow. A second
        call also stops waiting for running operations to finish."""
        if self._stop.is_set():
            self._hurry.set()
        self._stop.set()

    def _chains_alive(self) -> bool:
        """False once a chain's process has ended; said once (the service's and the venue's
        logs say more)."""
        if self._chain_down is not None:
            return False
        exited = self.venue.chains.exited() if self.venue is not None else []
        if not exited:
            return True
        self._chain_down = ", ".join(exited)
        self._out(
            f"a simulated chain stopped: {self._chain_down}; the day ends "
            f"(operations cannot finish; logs in {self._work})"
        )
        return False

    # -- the day -------------------------------------------------------------------------------

    def run(self) -> int:
        # The simulated venue and the desk (and the Alpaca client it uses) log every order and
        # request: those lines go to venues.log in the logs directory, as the service's go to
        # service.log; the terminal shows the day's own lines, its status and the summary.
        venues_log = logging.getLogger("venues")
        handler = logging.FileHandler(self._work / "venues.log", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        saved = (venues_log.level, venues_log.propagate)
        venues_log.addHandler(handler)
        venues_log.setLevel(logging.INFO)
        venues_log.propagate = False
        try:
            return self._run()
        finally:
            venues_log.removeHandler(handler)
            venues_log.setLevel(saved[0])
            venues_log.propagate = saved[1]
            handler.close()

    def _run(self) -> int:
        if Path(self.db_path).exists() and Path(self.db_path).stat().st_size > 0:
            # The venue is new each day, so the books must be too; never delete a user's file.
            raise DayRefused(
                f"--db {self.db_path}: the file exists; a simulated day needs a fresh database "
                "(remove it or name another path)"
            )
        # USD and USDC are two balances at Alpaca: every USDC move converts through USDCUSD,
        # at a seeded price near 1 with a 10 bp spread.
        knobs = SimKnobs(
            seed=self.options.seed,
            history_malformed_rows=0,
            usdc_spread_bps=Decimal(10),
            usdc_price_jitter_bps=Decimal(3),
        )
        symbols = self.options.symbols
        offchain_shares, cash = OFFCHAIN_SHARES, BROKERAGE_CASH
        if self.scenario is not None:
            knobs = dataclasses.replace(knobs, **self.scenario.knobs)
            symbols = self.scenario.symbols
            offchain_shares, cash = self.scenario.offchain_shares, self.scenario.brokerage_cash
        self.venue = SimVenue(
            knobs=knobs,
            equity_symbols=symbols,
            positions={s: offchain_shares for s in symbols},
            cash_usd=cash,
        )
        # The venue (its chains, its HTTP server) stops after the service: the `with` ends
        # after `_stop_service`.
        with self.venue:
            self._fund()
            if self.options.gas_spike_gwei is not None:
                self.gas = GasSpike(self, self.options.gas_spike_gwei)
            env = self._env()
            self._prepare(env)
            try:
                self._start_service(env)
                try:
                    self._trade()
                    self._quiesce()
                except Exception as error:  # noqa: BLE001 - the checks say what it left
                    self._out(f"the day was cut short: {type(error).__name__}: {error}")
                self._checks(env)
            finally:
                self._stop_service()
            self._summary()
        return 0 if self.report.ok else 1

    def _fund(self) -> None:
        venue = self.venue
        assert venue is not None
        chains = venue.chains
        mm = venue.market_maker
        shares, usdc = VAULT_SHARES, VAULT_USDC
        if self.scenario is not None:
            shares, usdc = self.scenario.vault_shares, self.scenario.vault_usdc
        for symbol, token in venue.equity_tokens.items():
            units = int(shares * SHARE_UNITS)
            chains.mint(chains.base, token, mm.address, units)
            vault_id = bytes.fromhex(equity_vault_id(symbol).removeprefix("0x"))
            chains.vault_deposit(mm, token, vault_id, units)
        usdc_units = int(usdc * USDC_UNITS)
        chains.mint_usdc(chains.base, mm.address, usdc_units)
        receipt = chains.vault_deposit(
            mm, chains.base.usdc, bytes.fromhex(venue.usdc_vault_id.removeprefix("0x")), usdc_units
        )
        self._funding_block = receipt.block_number

    def _env(self) -> dict[str, str]:
        assert self.venue is not None
        env = dict(os.environ)
        env.update(self.venue.env())
        env.update(DAY_ENV)
        if self.scenario is not None:
            env.update(self.scenario.env)
        # REBALANCING_MODE=monitor bin/run: a day of proposals and no venue write (issue 24).
        # (manage.py moves it to SIM_REBALANCING_MODE for this process, which has no venue.)
        env["REBALANCING_MODE"] = (
            os.environ.get("SIM_REBALANCING_MODE") or os.environ.get("REBALANCING_MODE") or "on"
        )
        env["DATABASE_URL"] = f"sqlite:///{self.db_path}"
        env["DJANGO_SETTINGS_MODULE"] = "rebalancer.settings"
        env.setdefault("SECRET_KEY", secrets.token_urlsafe(40))
        return env

    def _manage(self, env: dict[str, str], *args: str, check: bool = True) -> str:
        result = subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            # Out of the terminal's process group: a Ctrl-C is the day's to handle.
            start_new_session=True,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"manage.py {' '.join(args)} exited {result.returncode}: {result.stderr[-2000:]}"
            )
        return result.stdout

    def _prepare(self, env: dict[str, str]) -> None:
        assert self.venue is not None
        self._manage(env, "migrate", "--no-input", "-v", "0")
        # One process for the setup (each `manage.py` start costs seconds on a loaded box):
        # the same services `manage.py asset add`, `createsuperuser` and `api_token create`
        # call, fed the venue's assets as JSON.
        password = secrets.token_urlsafe(12)
        token = (
            self._manage(
                {
                    **env,
                    "SIM_DAY_ASSETS": json.dumps(self.venue.assets()),
                    "SIM_DAY_PASSWORD": password,
                },
                "shell",
                "-v",
                "0",
                "-c",
                SETUP_SCRIPT,
            )
            .strip()
            .splitlines()[-1]
        )
        self.login = ("operator", password)
        self.client = ServiceClient(f"http://{self.options.http}", token)
        self._out(f"database: {self.db_path}")
        self._out(f"operator console: http://{self.options.http}/admin/")
        self._out(f"operator login: operator / {password}")
        self._out(f"desk API token (ingest, read): {token}")
        self._out(
            f"logs: {self._work} (service.log: the service and its workers; venues.log: the "
            "simulated venue and desk)"
        )

    def _start_service(self, env: dict[str, str]) -> None:
        log = open(self._work / "service.log", "ab")  # noqa: SIM115 - closed with the process
        self.service = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "runrebalancer", "--http", self.options.http],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        # The login page answers once the server is up. (Not the health endpoint: it answers
        # 503 until the first heartbeat, which the service logs as an ERROR.)
        url = f"http://{self.options.http}/admin/login/"
        while time.monotonic() < deadline:
            if self.service.poll() is not None:
                raise RuntimeError(f"the service exited at start: see {self._work}/service.log")
            try:
                with urllib.request.urlopen(url, timeout=2):  # noqa: S310
                    break
            except OSError:
                pass
            time.sleep(0.3)
        else:
            raise RuntimeError(f"the service did not answer: see {self._work}/service.log")
        self._out(f"service running (pid {self.service.pid}); the desk starts trading")
        self.started.set()

    # -- trading -------------------------------------------------------------------------------

    def _trade(self) -> None:
        if self.scenario is not None:
            self._play(self.scenario)
            return
        assert self.venue is not None and self.client is not None
        market = Market(self.venue, self.options.symbols, self._rng)
        # The drift runs in phases: symbols drifting opposite ways (a mint and a redemption),
        # then every vault drained (USDC piles up onchain: Base -> Alpaca), then every vault
        # filled (USDC leaves the vault: Alpaca -> Base); and again.
        symbols = self.options.symbols
        phases = [
            {s: (0.8 if i % 2 == 0 else -0.8) for i, s in enumerate(symbols)},
            {s: 0.8 for s in symbols},
            {s: -0.8 for s in symbols},
        ]
        drift = phases[0]
        desk = Desk(
            venue=self.venue,
            market=market,
            service=self.client,
            rng=self._rng,
            drift=drift,
            max_trade_shares=Decimal(10),
        )
        self.desk = desk
        chaos = Chaos(self) if self.options.chaos else None
        started = time.monotonic()
        self.trading_started_at = datetime.now(UTC)
        phase_s = 20.0
        phase = 0
        next_phase = started + phase_s
        next_check = started + 5
        next_status = started + self.options.status_every_s
        while not self._stop.is_set():
            now = time.monotonic()
            if self.options.duration_s is not None and now - started >= self.options.duration_s:
                break
            if not self._chains_alive():
                break
            if now >= next_phase:
                phase += 1
                desk.drift = dict(phases[phase % len(phases)])
                next_phase = now + phase_s
            if self.gas is not None:
                self.gas.step()
            market.step()
            desk.trade_once()
            for symbol in self.options.symbols:
                desk.hedge_once(symbol)
            if chaos is not None:
                chaos.maybe_act()
            if now >= next_status:
                next_status = now + self.options.status_every_s
                self._status()
            if self.options.until_covered and now >= next_check:
                next_check = now + 3
                if self.gas is not None:
                    if self.gas.covered():
                        self._out("a USDC move started after gas fell completed: ending the day")
                        break
                elif self._monitoring():
                    if set(self._proposals_recorded()) >= set(KINDS):
                        self._out(
                            "each kind of operation was proposed at least once: ending the day"
                        )
                        break
                elif self._covered():
                    self._out("each kind of operation completed at least once: ending the day")
                    break
            self._stop.wait(0.3)
        if chaos is not None:
            chaos.end()
            self.report.kills = dict(chaos.kills)
            self.report.outages = chaos.outages
            self.report.timeouts = chaos.timeouts
        # Hedges whose orders Alpaca has not answered for yet are followed to their outcome.
        if self._chains_alive() and not self._hurry.is_set():
            desk.settle_hedges()

    def _play(self, scenario: Scenario) -> None:
        """The desk plays the scenario's flow: each step sets the prices, makes the scripted
        trade and hedges; Base's base fee follows the phase's gas multiplier and the venue its
        knobs. The day ends after the last step."""
        assert self.venue is not None and self.client is not None
        venue = self.venue
        market = Market(venue, scenario.symbols, self._rng)
        desk = Desk(
            venue=venue,
            market=market,
            service=self.client,
            rng=self._rng,
            drift={s: 0.0 for s in scenario.symbols},
        )
        self.desk = desk
        self.trading_started_at = datetime.now(UTC)
        started = time.monotonic()
        next_status = started + self.options.status_every_s
        normal_fee = int(venue.chains.web3(venue.chains.base).eth.get_block("latest")
                         .get("baseFeePerGas") or 10**9)  # fmt: skip
        spiking = False
        knobs: dict[str, Any] = {}
        played = trades(scenario, short=self.options.short)
        self._out(f"scenario {scenario.name} (seed {scenario.seed}): {len(played)} trades")
        for trade in played:
            if self._stop.is_set() or not self._chains_alive():
                break
            limit = self.options.duration_s
            if limit is not None and time.monotonic() - started >= limit:
                break
            phase = trade.phase
            if phase.knobs != knobs:
                knobs = dict(phase.knobs)
                if knobs:
                    venue.server.set_knobs(**knobs)
            if phase.gas_multiplier > 1:
                venue.chains.next_base_fee_set(venue.chains.base, normal_fee * phase.gas_multiplier)
                spiking = True
            elif spiking:
                venue.chains.next_base_fee_set(venue.chains.base, normal_fee)
                spiking = False
            market.prices_set(trade.prices)
            desk.trade_once((trade.symbol, trade.taker_buys, trade.shares))
            for symbol in scenario.symbols:
                desk.hedge_once(symbol)
            if time.monotonic() >= next_status:
                next_status = time.monotonic() + self.options.status_every_s
                self._status()
            self._stop.wait(0.05)
        if self._chains_alive() and not self._hurry.is_set():
            desk.settle_hedges()

    def _status(self) -> None:
        """One line: operations by state, pools out of band."""
        assert self.client is not None
        try:
            operations = self.client.get("/operations?limit=500")
            pools = self.client.get("/pools")
        except Exception as error:  # noqa: BLE001 - said, and the day goes on
            self._out(f"[{_clock()}] status not read: {_said(error)}")
            return
        states = Counter(row["status"] for row in operations)
        by_state = ", ".join(f"{state} {n}" for state, n in sorted(states.items())) or "none"
        out_of_band = [
            f"{pool['key']} {pool['state'].replace('_', ' ')} (ratio {pool['ratio']}, band "
            f"{pool['band_lower']}-{pool['band_upper']})"
            for pool in pools
            if pool["state"] in ("too_much_onchain", "too_much_offchain")
        ]
        attention = [pool["key"] for pool in pools if pool["needs_reconciliation"]]
        line = (
            f"[{_clock()}] operations: {by_state}; out of band: {'; '.join(out_of_band) or 'none'}"
        )
        if attention:
            line += f"; needs reconciliation: {', '.join(attention)}"
        self._out(line)

    @staticmethod
    def _monitoring() -> bool:
        """REBALANCING_MODE=monitor for this day's service (see `_env`)."""
        mode = os.environ.get("SIM_REBALANCING_MODE") or os.environ.get("REBALANCING_MODE")
        return mode == "monitor"

    def _covered(self) -> bool:
        assert self.client is not None
        try:
            rows = self.client.get("/operations?status=completed&limit=500")
        except Exception:  # noqa: BLE001 - the service may be busy; ask again later
            return False
        return {row["kind"] for row in rows} >= set(KINDS)

    def _quiesce(self) -> None:
        """Let what runs finish (no new trades: pools settle and no new operation starts
        unless an imbalance remains; those started finish)."""
        assert self.client is not None
        deadline = time.monotonic() + self.options.settle_s
        while time.monotonic() < deadline:
            if self._hurry.is_set() or not self._chains_alive():
                self._out("not waiting for running operations to finish")
                return
            try:
                active = [
                    row
                    for row in self.client.get("/operations?limit=500")
                    if row["status"] not in ("completed", "failed")
                ]
            except Exception:  # noqa: BLE001 - busy; ask again
                active = [None]
            if not active:
                return
            self._hurry.wait(0.5)
        self._out("some operations are still running at the end of the day")

    # -- the end of the day --------------------------------------------------------------------

    def _checks(self, env: dict[str, str]) -> None:
        """The four end-of-day checks; one that cannot be made (a venue or the service not
        answering) fails with the reason, and the others are still made."""
        assert self.client is not None
        checks = self.report.checks
        operations: list[dict[str, Any]] | None = None
        try:
            operations = []
            for row in self.client.get("/operations?limit=500"):
                operations.append(self.client.get(f"/operations/{row['id']}"))
            operations.sort(key=lambda row: row["id"])
            self.report.operations = operations
        except Exception as error:  # noqa: BLE001 - reported as the check's failure
            operations = None
            checks[CHECKS[0]] = (False, f"operations not read: {_said(error)}")
        if operations is not None:
            checks[CHECKS[0]] = _check_outcomes(operations)
        if self._chain_down is not None:
            checks[CHECKS[1]] = (False, f"not checked: {self._chain_down} stopped")
        elif operations is None:
            checks[CHECKS[1]] = (False, "not checked: the operations were not read")
        else:
            try:
                checks[CHECKS[1]] = self._check_effects(operations)
            except Exception as error:  # noqa: BLE001
                checks[CHECKS[1]] = (False, f"venues not read: {_said(error)}")
            try:
                checks[LEDGER_CHECK] = self._check_ledger(operations)
            except Exception as error:  # noqa: BLE001
                checks[LEDGER_CHECK] = (False, f"ledger not checked: {_said(error)}")
        try:
            reconcile = self._manage(env, "reconcile", "--json", check=False)
            checks[CHECKS[2]] = _check_drift(reconcile)
        except Exception as error:  # noqa: BLE001
            checks[CHECKS[2]] = (False, f"reconcile did not run: {_said(error)}")
        try:
            result = subprocess.run(
                [sys.executable, str(ROOT / "manage.py"), "rebuild_inventory", "--check",
                 "--no-progress"],
                cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
                start_new_session=True,
            )  # fmt: skip
            lines = (result.stdout + result.stderr).strip().splitlines()
            said = [line for line in lines if "difference" in line] or lines or [""]
            checks[CHECKS[3]] = (
                result.returncode == 0,
                # "2026-... INFO <logger> inventory rebuild: ..." -> from "inventory rebuild:" on
                said[-1][said[-1].find("inventory rebuild:") :]
                if "inventory rebuild:" in said[-1]
                else said[-1] or f"exit {result.returncode}",
            )
        except Exception as error:  # noqa: BLE001
            checks[CHECKS[3]] = (False, f"rebuild_inventory did not run: {_said(error)}")
        try:
            self.report.pools = self.client.get("/pools")
        except Exception:  # noqa: BLE001 - the summary shows none
            self.report.pools = []
        assert self.venue is not None
        self.report.faults = {
            f"{key} {fault}": count
            for (key, fault), count in self.venue.server.faults_served().items()
        }
        if self._chain_down is not None:
            # A check that passed on what could be read still leaves the day broken.
            checks.setdefault("chains up all day", (False, f"{self._chain_down} stopped"))

    def _proposals_recorded(self, variant: str = "RebalanceProposed") -> Counter[str]:
        """`RebalanceProposed` (REBALANCING_MODE=monitor) or `RebalanceDeferred` (the cost
        gate) events in the day's log, by kind."""
        import sqlite3

        counted: Counter[str] = Counter()
        try:
            with contextlib.closing(sqlite3.connect(self.db_path)) as db:
                rows = db.execute(
                    "SELECT payload FROM inventory_event WHERE aggregate_type = ? "
                    "AND event_type LIKE ?",
                    ("RebalanceDecision", f"%::{variant}"),
                ).fetchall()
        except sqlite3.Error:
            return counted
        for (payload,) in rows:
            body = next(iter(json.loads(payload).values()))
            key = (
                body["kind"] if variant == "RebalanceProposed" else f"{body['kind']} {body['rule']}"
            )
            counted[key] += 1
        return counted

    def _check_ledger(self, operations: list[dict[str, Any]]) -> tuple[bool, str]:
        """The cost ledger against the chains and the venue's own counters, exactly: every
        recorded transaction's gas used, effective gas price and native fee against its
        receipt; Circle's fees against what the CCTP fee recipient was minted (it holds only
        fees); Alpaca's withdrawal fees against the simulated Alpaca's transfers."""
        assert self.venue is not None
        chains = self.venue.chains
        problems: list[str] = []
        transactions = 0
        circle = Decimal(0)
        alpaca = Decimal(0)
        for op in operations:
            costs = op.get("costs") or {}
            circle += Decimal(costs.get("circle_fee_usdc", "0"))
            alpaca += Decimal(costs.get("alpaca_fee_usdc", "0"))
            for tx in costs.get("transactions", []):
                transactions += 1
                raw = chains.web3(chains.chain(tx["chain"])).eth.get_transaction_receipt(
                    tx["tx_hash"]
                )
                figures = (
                    int(raw["gasUsed"]),
                    int(raw["effectiveGasPrice"]),
                    int(raw["gasUsed"]) * int(raw["effectiveGasPrice"]),
                )
                recorded = (
                    int(tx["gas_used"]),
                    int(tx["effective_gas_price_wei"]),
                    int(tx["native_fee_wei"]),
                )
                if figures != recorded:
                    problems.append(f"#{op['id']} {tx['tx_hash']}: {recorded} != {figures}")
        minted = sum(
            chains.balance(chain, chain.usdc, chains.fee_recipient.address)
            for chain in (chains.ethereum, chains.base)
        )
        if Decimal(minted).scaleb(-6) != circle:
            problems.append(f"Circle fees {circle} != {Decimal(minted).scaleb(-6)} minted")
        charged = sum(
            (Decimal(t["network_fee"]) for t in self.venue.server.transfers()
             if t["direction"] == "OUTGOING" and t["status"] == "COMPLETE"),
            Decimal(0),
        )  # fmt: skip
        if charged != alpaca:
            problems.append(f"Alpaca fees {alpaca} != {charged} charged")
        if problems:
            return False, "; ".join(problems[:5])
        return True, (
            f"{transactions} transaction(s) match their receipts; Circle fees {circle} USDC "
            f"as minted to its fee recipient; Alpaca fees {alpaca} USDC as charged"
        )

    def _check_effects(self, operations: list[dict[str, Any]]) -> tuple[bool, str]:
        assert self.venue is not None
        expected: Counter[str] = Counter()
        problems: list[str] = []
        requests_by_id: Counter[str] = Counter(
            str(r.get("issuer_request_id"))
            for r in self.venue.server.tokenization_requests()
            if str(r.get("type", "mint")).lower() == "mint"
        )
        for op in operations:
            types = {_short(event["event_type"]) for event in op["events"]}
            kind = op["kind"]
            if kind == "mint":
                made = requests_by_id.get(op["aggregate_id"], 0)
                if made > 1 or ("MintAccepted" in types and made != 1):
                    problems.append(f"mint {op['id']}: {made} Alpaca mint request(s)")
                expected["alpaca mint request"] += made
                expected["vault deposit"] += "DepositedIntoVault" in types
            elif kind == "redemption":
                expected["vault withdrawal"] += "WithdrawnFromVault" in types
                expected["redemption transfer"] += "TokensSent" in types
            else:
                if kind == "usdc_alpaca_to_base":
                    expected["alpaca withdrawal"] += "Initiated" in types
                    expected["usdc vault deposit"] += "DepositConfirmed" in types
                    expected["burn on ethereum"] += "BridgingInitiated" in types
                    expected["receiveMessage on base"] += "Bridged" in types
                else:
                    expected["usdc vault withdrawal"] += "WithdrawalConfirmed" in types
                    expected["alpaca deposit transfer"] += "DepositConfirmed" in types
                    expected["burn on base"] += "BridgingInitiated" in types
                    expected["receiveMessage on ethereum"] += "Bridged" in types
        observed = self._observed_effects()
        observed["alpaca mint request"] = sum(requests_by_id.values())
        for name in sorted(set(expected) | set(observed)):
            if expected[name] != observed[name]:
                problems.append(
                    f"{name}: {observed[name]} at the venues, operations explain {expected[name]}"
                )
        if problems:
            return False, "; ".join(problems)
        shown = ", ".join(f"{name} {count}" for name, count in sorted(observed.items()) if count)
        return True, shown or "no effects"

    def _observed_effects(self) -> Counter[str]:
        assert self.venue is not None
        venue = self.venue
        chains = venue.chains
        mm = venue.market_maker.address.lower()
        start = self._funding_block + 1
        counts: Counter[str] = Counter()
        equity_tokens = {a.lower() for a in venue.equity_tokens.values()}
        usdc_base = chains.base.usdc.lower()
        for entry in _events(
            chains, chains.base, "OrderBookVault", venue.vault, "DepositV2", start
        ):
            if str(entry["sender"]).lower() != mm:
                continue
            token = str(entry["token"]).lower()
            counts["vault deposit" if token in equity_tokens else "usdc vault deposit"] += 1
        for entry in _events(
            chains, chains.base, "OrderBookVault", venue.vault, "WithdrawV2", start
        ):
            if str(entry["sender"]).lower() != mm:
                continue
            token = str(entry["token"]).lower()
            counts["vault withdrawal" if token in equity_tokens else "usdc vault withdrawal"] += 1
        redemption_wallet = venue.redemption_wallet.lower()
        for token in equity_tokens:
            for entry in _events(chains, chains.base, "MintableERC20", token, "Transfer", 0):
                if (str(entry["from"]).lower(), str(entry["to"]).lower()) == (
                    mm,
                    redemption_wallet,
                ):
                    counts["redemption transfer"] += 1
        deposit = venue.deposit_address.lower()
        for entry in _events(
            chains, chains.ethereum, "MintableERC20", chains.ethereum.usdc, "Transfer", 0
        ):
            if (str(entry["from"]).lower(), str(entry["to"]).lower()) == (mm, deposit):
                counts["alpaca deposit transfer"] += 1
        for side, name in ((chains.ethereum, "ethereum"), (chains.base, "base")):
            counts[f"burn on {name}"] += len(
                _events(chains, side, "TokenMessengerV2", side.token_messenger, "DepositForBurn", 0)
            )
            counts[f"receiveMessage on {name}"] += len(
                _events(
                    chains,
                    side,
                    "MessageTransmitterV2",
                    side.message_transmitter,
                    "MessageReceived",
                    0,
                )
            )
        counts["alpaca withdrawal"] = sum(
            1 for t in venue.server.transfers() if str(t.get("direction")).upper() == "OUTGOING"
        )
        del usdc_base
        return counts

    def _stop_service(self) -> None:
        if self.service is None or self.service.poll() is not None:
            return
        self.service.send_signal(signal.SIGTERM)
        try:
            self.service.wait(timeout=60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.service.pid, signal.SIGKILL)
            self.service.wait(timeout=10)
        for pid in _cluster_pids(self._work / "service.log"):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)

    def _summary(self) -> None:
        out = self._out
        report = self.report
        out("")
        out("== the simulated day ==")
        outcomes: Counter[tuple[str, str]] = Counter()
        durations: dict[str, list[float]] = defaultdict(list)
        for op in report.operations:
            outcomes[(op["kind"], op["status"])] += 1
            events = op["events"]
            for before, after in zip(events, events[1:], strict=False):
                seconds = (
                    datetime.fromisoformat(after["recorded_at"])
                    - datetime.fromisoformat(before["recorded_at"])
                ).total_seconds()
                durations[f"{op['kind']} -> {_short(after['event_type'])}"].append(seconds)
        out("operations by kind and outcome:")
        for (kind, status), count in sorted(outcomes.items()):
            out(f"  {kind:<20} {status:<10} {count}")
        for op in report.operations:
            if op["status"] == "failed":
                out(f"  failed #{op['id']} {op['kind']} {op['pool']}: {op['failure_reason']}")
        began = getattr(self, "trading_started_at", None)
        if began is not None:
            firsts = []
            for kind in KINDS:
                done = [
                    datetime.fromisoformat(op["finished_at"])
                    for op in report.operations
                    if op["kind"] == kind and op["status"] == "completed" and op["finished_at"]
                ]
                first = f"{(min(done) - began).total_seconds():.0f}s" if done else "never"
                firsts.append(f"{kind} {first}")
            out("first completed, after the desk's first trade: " + ", ".join(firsts))
        out("step durations (seconds, mean / max):")
        for step, values in sorted(durations.items()):
            out(
                f"  {step:<44} {sum(values) / len(values):6.2f} / {max(values):6.2f}  "
                f"(n={len(values)})"
            )
        conversions = _conversion_costs(report.operations)
        if conversions:
            total = sum((cost for *_, cost in conversions), Decimal(0))
            out(f"USDC conversions (USDCUSD at Alpaca), cost lost to the spread: {total} USD")
            for op_id, kind, side, usd, usdc_amount, cost in conversions:
                out(
                    f"  #{op_id} {kind:<20} {side:<4} {usd} USD <-> {usdc_amount} USDC, cost {cost}"
                )
        costs_by_kind: dict[str, list[Decimal]] = defaultdict(lambda: [Decimal(0)] * 5)
        for op in report.operations:
            costs = op.get("costs") or {}
            if not costs:
                continue
            row = costs_by_kind[op["kind"]]
            row[0] += Decimal(costs["gas_usd"])
            row[1] += Decimal(costs["circle_fee_usdc"])
            row[2] += Decimal(costs["alpaca_fee_usdc"]) + Decimal(costs["venue_costs_usd"])
            row[3] += Decimal(costs["total_usd"])
            if op["status"] == "completed" and costs.get("moved_usd") is not None:
                row[4] += Decimal(costs["moved_usd"])
        if costs_by_kind:
            out("costs by kind (USD; gas at the ETH/USD price recorded, fees in USDC at par):")
            for kind, (gas, circle, other, total, moved) in sorted(costs_by_kind.items()):
                per = f"{total / moved * 10_000:.4f}" if moved > 0 else "-"
                out(
                    f"  {kind:<20} gas {gas:.6f}, circle {circle:.6f}, other {other:.6f}, "
                    f"total {total:.6f}; moved {moved:.2f}, per 10,000 USD moved {per}"
                )
        deferred = self._proposals_recorded("RebalanceDeferred")
        if deferred:
            out(
                f"deferrals recorded (the cost gate held them back): {sum(deferred.values())} ("
                + ", ".join(f"{kind} {n}" for kind, n in sorted(deferred.items()))
                + ")"
            )
        if self.gas is not None:
            for line in self.gas.summary():
                out(line)
        recorded = self._proposals_recorded()
        if recorded:
            out(
                f"proposals recorded (REBALANCING_MODE=monitor, nothing started): "
                f"{sum(recorded.values())} ("
                + ", ".join(f"{kind} {n}" for kind, n in sorted(recorded.items()))
                + ")"
            )
        for pool in report.pools:
            proposal = pool.get("proposal")
            if proposal:
                out(f"  {pool['key']:<6} would start {proposal['kind']} of {proposal['amount']}")
        out("final pools:")
        for pool in report.pools:
            out(
                f"  {pool['key']:<6} onchain {pool['onchain_available']} "
                f"(+{pool['onchain_inflight']} inflight), offchain {pool['offchain_available']} "
                f"(+{pool['offchain_inflight']} inflight), ratio {pool['ratio']}"
            )
        desk = getattr(self, "desk", None)
        if desk is not None:
            stats = desk.stats
            out(
                f"desk: trades {dict(stats.trades)}, hedges placed {stats.hedges_placed}, "
                f"filled {stats.hedges_filled}, failed {stats.hedges_failed}, unresolved "
                f"{stats.hedges_unresolved}, report errors {len(stats.report_errors)}"
            )
        if self.options.chaos:
            kills = ", ".join(f"{role} {n}" for role, n in sorted(report.kills.items()))
            out(
                f"chaos: {sum(report.kills.values())} process(es) SIGKILLed ({kills or 'none'}), "
                f"{report.outages} RPC outage(s), {report.timeouts} request(s) held past the "
                f"service's timeout, faults served {sum(report.faults.values())} "
                f"{report.faults}"
            )
        out(f"operator console: http://{self.options.http}/admin/ (stopped with the day)")
        if self.login is not None:
            out(f"operator login: {self.login[0]} / {self.login[1]}")
        out(f"database: {self.db_path}")
        out(f"logs: {self._work}")
        out("end-of-day checks:")
        for name in [*CHECKS, *(name for name in report.checks if name not in CHECKS)]:
            ok, detail = report.checks.get(name, (False, "not made"))
            out(f"  [{'ok' if ok else 'FAILED'}] {name}: {detail}")
        out("the day " + ("holds: every check passed" if report.ok else "FAILED a check"))


class GasSpike:
    """Ethereum on a busy day (`--gas-spike GWEI`): its base fee is set to GWEI before the
    service starts and held there (raised again whenever a mined block lowered it, as EIP-1559
    does below a block's gas target) until the day's log holds a `RebalanceDeferred` of a USDC
    move for its cost (rule cost_above_max_bps); then gas falls to CALM_WEI and is left to the
    chain. The service reads it as it reads any chain (`eth_getBlockByNumber` base fee plus
    the priority fee)."""

    CALM_WEI = 10**9
    CHECK_EVERY_S = 1.0

    def __init__(self, day: SimulatedDay, gwei: Decimal) -> None:
        assert day.venue is not None
        self._day = day
        self._chains = day.venue.chains
        self.spike_wei = int(gwei * 10**9)
        self.started = time.monotonic()
        self.fell_at: datetime | None = None
        self.fell_after_s: float | None = None
        self._next_check = 0.0
        self._chains.base_fee_set(self._chains.ethereum, self.spike_wei)
        day._out(
            f"gas spike: Ethereum's base fee is {gwei} gwei until the cost gate defers a USDC move"
        )

    def step(self) -> None:
        now = time.monotonic()
        if self.fell_at is not None or now < self._next_check:
            return
        self._next_check = now + self.CHECK_EVERY_S
        ethereum = self._chains.ethereum
        if self._cost_deferrals():
            self._chains.base_fee_set(ethereum, self.CALM_WEI)
            self.fell_at = datetime.now(UTC)
            self.fell_after_s = now - self.started
            self._day._out(
                f"[{_clock()}] the cost gate deferred a USDC move: Ethereum's gas falls to "
                f"{self.CALM_WEI // 10**9} gwei"
            )
        elif self._chains.base_fee(ethereum) < self.spike_wei:
            self._chains.base_fee_set(ethereum, self.spike_wei)

    def _cost_deferrals(self) -> int:
        counted = self._day._proposals_recorded("RebalanceDeferred")
        return sum(n for key, n in counted.items() if key.startswith("usdc_") and "cost" in key)

    def _moves_after_fall(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if self.fell_at is None:
            return []
        return [
            row
            for row in rows
            if row["kind"].startswith("usdc_")
            and datetime.fromisoformat(row["created_at"]) >= self.fell_at
        ]

    def covered(self) -> bool:
        """A USDC move started after gas fell has completed."""
        assert self._day.client is not None
        if self.fell_at is None:
            return False
        try:
            rows = self._day.client.get("/operations?status=completed&limit=500")
        except Exception:  # noqa: BLE001 - the service may be busy; ask again later
            return False
        return bool(self._moves_after_fall(rows))

    def summary(self) -> list[str]:
        spike = f"{Decimal(self.spike_wei) / 10**9} gwei"
        if self.fell_at is None:
            return [f"gas spike: Ethereum at {spike} all day; no USDC move deferred for its cost"]
        moves = self._moves_after_fall(self._day.report.operations)
        done = sum(1 for row in moves if row["status"] == "completed")
        return [
            f"gas spike: Ethereum at {spike} until the cost gate deferred a USDC move "
            f"({self.fell_after_s:.0f}s), then {self.CALM_WEI // 10**9} gwei; USDC moves "
            f"started after gas fell: {len(moves)} (completed {done})"
        ]


class Chaos:
    """SIGKILLs parts of the worker cluster at random moments (a worker most often, sometimes
    the monitor, the pusher, the sentinel or the whole cluster: the service's supervisor must
    notice and recover), venue faults (5xx, latency, outcome-unknown POSTs) and a short chain
    RPC outage (the Base anvil is stopped with SIGSTOP for a few seconds)."""

    TARGETS = (("worker", 0.6), ("monitor", 0.1), ("pusher", 0.1), ("sentinel", 0.05))
    # Latency: 5% of requests answer a second late. Timeouts: once in the day the next mint
    # request and the next USDC withdrawal hang past the service's HTTP timeout (15 s) and are
    # then carried out (their outcome unknown to the service); random latency is off meanwhile,
    # so that only those two time out.
    LATENCY = {"hang_rate": 0.05, "hang_s": 1.0}
    TIMEOUT_HANG_S = 17.0
    TIMEOUT_WINDOW_S = 120.0
    # A kill every KILL_MEAN_S seconds on average (exponential gaps: at random moments, and as
    # often on a slow box as on a fast one).
    KILL_MEAN_S = 30.0

    def __init__(self, day: SimulatedDay) -> None:
        self._day = day
        self._rng = random.Random(day.options.seed + 1)
        self.kills: Counter[str] = Counter()
        self.outages = 0
        self.timeouts = 0
        self._timeouts_since: float | None = None
        self._timeouts_done = False
        self._started = time.monotonic()
        self._next_kill = self._started + self._rng.expovariate(1 / self.KILL_MEAN_S)
        assert day.venue is not None
        server = day.venue.server
        server.set_knobs(error_5xx_rate=0.2, **self.LATENCY)
        # Outcome-unknown POSTs: the mint request and the USDC withdrawal are done, then
        # answered 500 (the service must find them rather than post again).
        server.fail_next(KEY_MINT, FAULT_5XX_AFTER)
        server.fail_next(KEY_WITHDRAW, FAULT_5XX_AFTER)

    def maybe_act(self) -> None:
        self._timeouts_tick()
        if time.monotonic() >= self._next_kill:
            self._kill()
            self._next_kill = time.monotonic() + self._rng.expovariate(1 / self.KILL_MEAN_S)
        elif self._rng.random() < 0.03 and self.outages < 2:
            self._outage()

    def _long_hangs_served(self) -> int:
        assert self._day.venue is not None
        served = self._day.venue.server.faults_served()
        return sum(served.get((key, FAULT_HANG), 0) for key in (KEY_MINT, KEY_WITHDRAW))

    def _timeouts_tick(self) -> None:
        """Start the timeout window 20 s into the day; end it once both long hangs were served
        (or after TIMEOUT_WINDOW_S)."""
        assert self._day.venue is not None
        server = self._day.venue.server
        now = time.monotonic()
        if self._timeouts_since is None:
            if not self._timeouts_done and now - self._started > 20:
                self._timeouts_since = now
                self._hangs_before = self._long_hangs_served()
                server.set_knobs(hang_rate=0.0, hang_s=self.TIMEOUT_HANG_S)
                server.fail_next(KEY_MINT, FAULT_HANG)
                server.fail_next(KEY_WITHDRAW, FAULT_HANG)
            return
        self.timeouts = self._long_hangs_served() - self._hangs_before
        if self.timeouts >= 2 or now - self._timeouts_since > self.TIMEOUT_WINDOW_S:
            self._timeouts_end()

    def _timeouts_end(self) -> None:
        if self._timeouts_since is None:
            return
        assert self._day.venue is not None
        server = self._day.venue.server
        # A long hang in progress sleeps on (it read the knob when it began).
        server.set_knobs(**self.LATENCY)
        self._timeouts_since = None
        self._timeouts_done = True

    def _kill(self) -> None:
        """SIGKILL one part of the newest cluster (its processes read from /proc), or the whole
        cluster (qcluster and all its processes: its own process group)."""
        clusters = _cluster_pids(self._day._work / "service.log")
        if not clusters:
            return
        leader = clusters[-1]
        roll = self._rng.random()
        role = "cluster"
        for name, share in self.TARGETS:
            if roll < share:
                role = name
                break
            roll -= share
        try:
            if role == "cluster":
                os.killpg(leader, signal.SIGKILL)
            else:
                parts = _cluster_parts(leader)
                if parts is None:
                    return  # the cluster is starting (or gone): another moment
                pids = parts[role]
                os.kill(self._rng.choice(pids), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return
        self.kills[role] += 1

    def _outage(self) -> None:
        venue = self._day.venue
        assert venue is not None
        process = _anvil_process(venue)
        if process is None:
            return
        self.outages += 1
        os.kill(process, signal.SIGSTOP)
        try:
            time.sleep(self._rng.uniform(2.0, 4.0))
        finally:
            os.kill(process, signal.SIGCONT)

    def end(self) -> None:
        venue = self._day.venue
        assert venue is not None
        if self._timeouts_since is not None:
            self.timeouts = self._long_hangs_served() - self._hangs_before
        self._timeouts_since = None
        venue.server.set_knobs(error_5xx_rate=0.0, hang_rate=0.0)


# --- helpers ----------------------------------------------------------------------------------


def _events(
    chains: Any, side: Any, contract: str, address: str, name: str, start: int
) -> list[dict[str, Any]]:
    w3 = chains.web3(side)
    abi = load_artifact(contract)["abi"]
    instance = w3.eth.contract(address=w3.to_checksum_address(address), abi=abi)
    event = getattr(instance.events, name)()
    return [dict(entry["args"]) for entry in event.get_logs(from_block=start)]


def _cluster_pids(log: Path) -> list[int]:
    import re

    text = log.read_text(errors="replace") if log.exists() else ""
    return [int(pid) for pid in re.findall(r"cluster started \(pid (\d+)", text)]


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[19])


def _cluster_parts(leader: int) -> dict[str, list[int]] | None:
    """The processes of the django-q2 cluster led by qcluster `leader`, by role: its sentinel,
    and the sentinel's children in the order it spawns them (workers, then the monitor, then
    the pusher). None unless the cluster is complete (at least one worker) and alive."""
    children: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat is not None and stat[0] not in ("Z", "X"):
                children[stat[1]].append((stat[2], int(entry.name)))
    sentinels = children.get(leader, [])
    if len(sentinels) != 1:
        return None
    sentinel = sentinels[0][1]
    spawned = [pid for _, pid in sorted(children.get(sentinel, []))]
    if len(spawned) < 3:
        return None
    return {
        "sentinel": [sentinel],
        "worker": spawned[:-2],
        "monitor": [spawned[-2]],
        "pusher": [spawned[-1]],
    }


def _anvil_process(venue: SimVenue) -> int | None:
    chains = venue.chains
    port = int(chains.base.rpc_url.rsplit(":", 1)[1].strip("/"))
    for process in getattr(chains, "_processes", []):
        if process.port == port:
            return int(process.process.pid)
    return None


def _short(event_type: str) -> str:
    """`TokenizedEquityMintEvent::MintAccepted` -> `MintAccepted`."""
    return event_type.rsplit("::", 1)[-1]


def _clock() -> str:
    return datetime.now(UTC).strftime("%H:%M:%S UTC")


def _said(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error)[:300]}"


def _conversion_costs(
    operations: list[dict[str, Any]],
) -> list[tuple[int, str, str, str, str, Decimal]]:
    """Each operation's confirmed USDCUSD conversion: (id, kind, side, USD, USDC, cost)."""
    rows = []
    for op in operations:
        side = ""
        for event in op["events"]:
            name = _short(event["event_type"])
            # The stored payload is keyed by the event's name: {"ConversionConfirmed": {...}}.
            payload = (event.get("payload") or {}).get(name) or {}
            if name == "ConversionInitiated":
                side = str(payload.get("side", ""))
            elif name == "ConversionConfirmed":
                rows.append(
                    (
                        op["id"],
                        op["kind"],
                        side,
                        str(payload.get("usd_amount")),
                        str(payload.get("usdc_amount")),
                        Decimal(str(payload.get("cost", "0"))),
                    )
                )
    return rows


def _check_outcomes(operations: list[dict[str, Any]]) -> tuple[bool, str]:
    problems = []
    counts: Counter[str] = Counter()
    for op in operations:
        counts[op["status"]] += 1
        if op["status"] == "failed" and not op["failure_reason"]:
            problems.append(f"#{op['id']} failed without a reason")
        if op["status"] not in ("completed", "failed") and not op["events"]:
            problems.append(f"#{op['id']} {op['status']} with no step recorded")
    if problems:
        return False, "; ".join(problems)
    return True, ", ".join(f"{status} {n}" for status, n in sorted(counts.items())) or "none"


def _check_drift(text: str) -> tuple[bool, str]:
    try:
        data = json.loads(text)
    except ValueError:
        return False, f"reconcile printed no report: {text[-300:]}"
    if data.get("failures"):
        return False, f"venues not read: {data['failures']}"
    off = [d for d in data["drift"] if Decimal(d["difference"]) != 0]
    if off:
        return False, "; ".join(
            f"{d['pool']} {d['venue']}: projected {d['projected']} observed {d['observed']}"
            for d in off
        )
    return True, f"{len(data['drift'])} pool/venue balance(s) equal"


def day_options(**changes: Any) -> DayOptions:
    return dataclasses.replace(DayOptions(), **changes)

"""The simulated venue's HTTP server: Alpaca (tokenization, account, wallet) and Circle Iris.

State lives in memory behind one lock and stays consistent with the two local chains:

- a mint debits the brokerage position at once (403 when short), stays `pending` for
  `mint_delay_s`, then mints the equity token onchain (Base) to the requested wallet and turns
  `completed` with that tx hash (or `rejected`, position restored);
- a token transfer to the redemption wallet (seen in Base `Transfer` logs) becomes a `redeem`
  request carrying that tx hash, `completed` after a delay, crediting the shares;
- a wallet withdrawal debits cash, goes PENDING -> PROCESSING (USDC sent onchain on Ethereum
  from the venue's hot wallet, minus the network fee) -> COMPLETE;
- USDC sent to the deposit address (Ethereum `Transfer` logs) appears as an INCOMING transfer,
  COMPLETE after a delay, crediting cash;
- Iris watches `MessageSent` on both chains and, after `attestation_delay_s`, serves the message
  with `finalityThresholdExecuted` and `feeExecuted` filled in, signed by the attester key.

Faults: seeded random 5xx and hangs per request, scripted one-shot faults per endpoint
(`fail_next`), rejection rates, attestations that never arrive. Every request is counted per
endpoint (`request_count`) so tests can assert "exactly one mint request".
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import re
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_DOWN, Context, Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from eth_account import Account
from eth_utils import is_address, keccak, to_checksum_address
from web3 import Web3
from web3.types import RPCEndpoint

from venues import cctp

logger = logging.getLogger(__name__)

USDC_DECIMALS = 6
SHARE_DECIMALS = 18
_CONTEXT = Context(prec=200, rounding=ROUND_DOWN)

TRANSFER_TOPIC = "0x" + keccak(text="Transfer(address,address,uint256)").hex()
MESSAGE_SENT_TOPIC = "0x" + keccak(text="MessageSent(bytes)").hex()

_TOKEN_ABI: list[dict[str, Any]] = [
    {
        "type": "function",
        "name": "mint",
        "stateMutability": "nonpayable",
        "inputs": [{"name": "to", "type": "address"}, {"name": "value", "type": "uint256"}],
        "outputs": [],
    },
    {
        "type": "function",
        "name": "transfer",
        "stateMutability": "nonpayable",
        "inputs": [{"name": "to", "type": "address"}, {"name": "value", "type": "uint256"}],
        "outputs": [{"name": "", "type": "bool"}],
    },
    {
        "type": "function",
        "name": "balanceOf",
        "stateMutability": "view",
        "inputs": [{"name": "owner", "type": "address"}],
        "outputs": [{"name": "", "type": "uint256"}],
    },
    {
        "type": "function",
        "name": "symbol",
        "stateMutability": "view",
        "inputs": [],
        "outputs": [{"name": "", "type": "string"}],
    },
]


# ---------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class SimKnobs:
    """Delays (seconds), fault rates (0..1, drawn from a seeded RNG) and fees."""

    seed: int = 0
    tick_s: float = 0.05
    mint_delay_s: float = 0.3
    redemption_detect_delay_s: float = 0.1
    redemption_complete_delay_s: float = 0.3
    withdrawal_processing_delay_s: float = 0.1
    withdrawal_complete_delay_s: float = 0.2
    deposit_credit_delay_s: float = 0.1
    attestation_delay_s: float = 0.2
    fast_fee_bps: Decimal = Decimal(1)
    withdrawal_network_fee_usdc: Decimal = Decimal(0)
    # Whitelist status seeded for the market-maker wallet: APPROVED, PENDING, REJECTED or None.
    whitelist_status: str | None = "APPROVED"
    error_5xx_rate: float = 0.0
    hang_rate: float = 0.0
    hang_s: float = 2.0
    mint_reject_rate: float = 0.0
    redemption_reject_rate: float = 0.0
    withdrawal_fail_rate: float = 0.0
    attestation_never: bool = False


@dataclass(frozen=True)
class ChainSide:
    """One simulated chain as the server sees it."""

    name: str
    rpc_url: str
    domain: int
    usdc: str
    message_transmitter: str


@dataclass(frozen=True)
class SimWorld:
    """Addresses and keys the server acts with (built by `SimVenue` from the chains)."""

    ethereum: ChainSide
    base: ChainSide
    equity_tokens: dict[str, str]  # underlying symbol -> token address on Base
    minter_key: str  # may mint the equity tokens on Base
    usdc_funder_key: str  # may mint USDC on Ethereum (to fund the hot wallet)
    attester_key: str
    hot_wallet_key: str  # Alpaca's Ethereum hot wallet, sends withdrawals
    deposit_address: str  # Alpaca's USDC deposit address on Ethereum
    redemption_wallet: str  # Alpaca's redemption wallet on Base
    market_maker_wallet: str
    api_key: str
    api_secret: str
    account_id: str
    issuer: str = "st0x"
    hot_wallet_float_usdc: Decimal = Decimal(10_000_000)


# ---------------------------------------------------------------------------------------------
# Records


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def _plain(value: Decimal) -> str:
    return format(value.normalize(), "f") if value != 0 else "0"


def _units(amount: Decimal, decimals: int) -> int:
    return int(_CONTEXT.multiply(amount, Decimal(10) ** decimals).to_integral_value(ROUND_DOWN))


def _amount(units: int, decimals: int) -> Decimal:
    return _CONTEXT.divide(Decimal(units), Decimal(10) ** decimals)


@dataclass
class TokenizationRecord:
    id: str
    type: str
    status: str
    underlying_symbol: str
    token_symbol: str
    qty: Decimal
    wallet_address: str
    issuer: str
    issuer_request_id: str | None
    tx_hash: str | None
    created_at: datetime
    updated_at: datetime | None = None
    visible_at: float = 0.0
    due_at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "tokenization_request_id": self.id,
            "type": self.type,
            "status": self.status,
            "underlying_symbol": self.underlying_symbol,
            "token_symbol": self.token_symbol,
            "qty": _plain(self.qty),
            "issuer": self.issuer,
            "network": "base",
            "wallet_address": self.wallet_address,
            "issuer_request_id": self.issuer_request_id,
            "tx_hash": self.tx_hash,
            "fees": "0",
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
        }


@dataclass
class TransferRecord:
    id: str
    relationship: str
    amount: Decimal
    from_address: str | None
    to_address: str
    status: str
    tx_hash: str | None
    created_at: datetime
    network_fee_amount: Decimal
    due_at: float = 0.0
    asset: str = "USDC"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "relationship": self.relationship,
            "amount": _plain(self.amount),
            "asset": self.asset,
            "from_address": self.from_address,
            "to_address": self.to_address,
            "status": self.status,
            "tx_hash": self.tx_hash,
            "created_at": _iso(self.created_at),
            "network_fee_amount": _plain(self.network_fee_amount),
            "network": "ethereum",
        }


@dataclass
class IrisRecord:
    source_domain: int
    tx_hash: str
    message: bytes
    nonce: str
    seen_at: float
    attested_message: bytes | None = None
    attestation: bytes | None = None


@dataclass
class WhitelistRecord:
    id: str
    address: str
    status: str
    created_at: datetime
    asset: str = "USDC"
    chain: str = "ETHEREUM"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "address": self.address,
            "asset": self.asset,
            "chain": self.chain,
            "status": self.status,
            "created_at": _iso(self.created_at),
        }


# Scripted faults for `fail_next`.
FAULT_5XX = "5xx"  # answer 503 without doing anything
FAULT_5XX_AFTER = "5xx_after"  # do the work, then answer 500 (a write's outcome is unknown)
FAULT_HANG = "hang"  # sleep `hang_s`, then do the work and answer (the client times out)
FAULTS = (FAULT_5XX, FAULT_5XX_AFTER, FAULT_HANG)


class _Reply(Exception):
    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body


@dataclass(frozen=True)
class _Route:
    method: str
    pattern: re.Pattern[str]
    key: str
    handler: Callable[..., Any]
    alpaca: bool


# ---------------------------------------------------------------------------------------------
# Server


class SimVenueServer:
    """Alpaca and Iris endpoints on one threaded HTTP server, plus a settlement thread."""

    def __init__(
        self,
        world: SimWorld,
        *,
        knobs: SimKnobs | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        positions: dict[str, Decimal] | None = None,
        cash_usd: Decimal = Decimal(0),
    ) -> None:
        self.world = world
        self._knobs = knobs or SimKnobs()
        # Two streams from one seed: faults drawn per request (their order follows the
        # client's requests) never share draws with the settle thread's ids and rejections
        # (whose order follows chain activity), so a seed replays the same faults.
        self._rng = random.Random(self._knobs.seed)
        self._fault_rng = random.Random(f"faults-{self._knobs.seed}")
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._host = host
        self._port = port
        self._positions: dict[str, Decimal] = dict(positions or {})
        self._cash = cash_usd
        self._tokenization: list[TokenizationRecord] = []
        self._transfers: list[TransferRecord] = []
        self._iris: dict[tuple[int, str], list[IrisRecord]] = {}
        self._whitelist: list[WhitelistRecord] = []
        self._seen_logs: set[tuple[str, str, int]] = set()
        self._counts: Counter[str] = Counter()
        self._faults_served: Counter[tuple[str, str]] = Counter()
        self._faults: dict[str, deque[str]] = {}
        self._errors: list[str] = []
        self._token_symbols: dict[str, str] = {}
        self._token_by_address: dict[str, str] = {}
        self._next_block: dict[str, int] = {}
        self._w3 = {
            side.name: Web3(Web3.HTTPProvider(side.rpc_url, request_kwargs={"timeout": 30}))
            for side in (world.ethereum, world.base)
        }
        self._attester = Account.from_key(world.attester_key)
        self._minter = Account.from_key(world.minter_key)
        self._funder = Account.from_key(world.usdc_funder_key)
        self._hot_wallet = Account.from_key(world.hot_wallet_key)
        self._httpd: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._routes = self._build_routes()
        if self._knobs.whitelist_status is not None:
            self.whitelist_set(world.market_maker_wallet, self._knobs.whitelist_status)

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("server not started")
        host, port = self._httpd.server_address[:2]
        host_text = host.decode() if isinstance(host, bytes) else str(host)
        return f"http://{host_text}:{port}"

    def start(self) -> None:
        for symbol, address in self.world.equity_tokens.items():
            token = self._token(self.world.base, address)
            self._token_symbols[symbol] = str(token.functions.symbol().call())
            self._token_by_address[to_checksum_address(address)] = symbol
        # Watch only blocks mined after start: a transfer already in the latest block happened
        # before this venue existed (another venue's redemption on shared chains, say).
        for side in (self.world.ethereum, self.world.base):
            self._next_block[side.name] = int(self._w3[side.name].eth.block_number) + 1
        self._fund_hot_wallet()
        server = self

        class Handler(_Handler):
            venue = server

        self._httpd = ThreadingHTTPServer((self._host, self._port), Handler)
        self._httpd.daemon_threads = True
        self._threads = [
            threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="simvenue-http",
                daemon=True,
            ),
            threading.Thread(target=self._settle_loop, name="simvenue-settle", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        logger.info("simulated venue listening on %s", self.url)

    def stop(self) -> None:
        self._stop.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads = []

    # -- knobs, seeding and inspection (tests and the operator command) --------------------

    @property
    def knobs(self) -> SimKnobs:
        return self._knobs

    def set_knobs(self, **changes: Any) -> None:
        with self._lock:
            self._knobs = dataclasses.replace(self._knobs, **changes)

    def fail_next(self, key: str, fault: str = FAULT_5XX, times: int = 1) -> None:
        """The next `times` requests to endpoint `key` (see `request_count`) get `fault`."""
        if fault not in FAULTS:
            raise ValueError(f"fault={fault!r}: must be one of {', '.join(FAULTS)}")
        with self._lock:
            self._faults.setdefault(key, deque()).extend([fault] * times)

    def request_count(self, key: str) -> int:
        """Requests seen for an endpoint key such as `POST /v2/tokenization/mint`,
        `GET /v2/tokenization/requests`, `POST /v1/accounts/{acct}/wallets/transfers`,
        `GET /v2/messages/{src}`, `GET /v2/burn/USDC/fees/{src}/{dst}`."""
        with self._lock:
            return self._counts[key]

    def request_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def faults_served(self) -> dict[tuple[str, str], int]:
        """Faults answered so far, by (endpoint key, fault), scripted and random alike."""
        with self._lock:
            return dict(self._faults_served)

    def errors(self) -> list[str]:
        """Failures of the settlement thread (a test asserts this stays empty)."""
        with self._lock:
            return list(self._errors)

    def position(self, symbol: str) -> Decimal:
        with self._lock:
            return self._positions.get(symbol, Decimal(0))

    def set_position(self, symbol: str, qty: Decimal) -> None:
        with self._lock:
            self._positions[symbol] = qty

    def cash(self) -> Decimal:
        with self._lock:
            return self._cash

    def set_cash(self, amount_usd: Decimal) -> None:
        with self._lock:
            self._cash = amount_usd

    def whitelist_set(self, address: str, status: str | None) -> None:
        """Set (or with None remove) the USDC/ethereum whitelist entry of `address`."""
        with self._lock:
            self._whitelist = [w for w in self._whitelist if w.address.lower() != address.lower()]
            if status is not None:
                self._whitelist.append(
                    WhitelistRecord(
                        id=self._new_id(),
                        address=address,
                        status=status,
                        created_at=_now(),
                    )
                )

    def tokenization_requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r.to_json() for r in self._tokenization]

    def transfers(self) -> list[dict[str, Any]]:
        with self._lock:
            return [t.to_json() for t in self._transfers]

    # -- HTTP dispatch ----------------------------------------------------------------------

    def _build_routes(self) -> list[_Route]:
        acct = r"/v1/accounts/(?P<acct>[^/]+)/wallets"
        table: list[tuple[str, str, str, Callable[..., Any], bool]] = [
            ("POST", r"/v2/tokenization/mint", "POST /v2/tokenization/mint", self._mint, True),
            (
                "GET",
                r"/v2/tokenization/requests",
                "GET /v2/tokenization/requests",
                self._list_requests,
                True,
            ),
            ("GET", r"/v2/account", "GET /v2/account", self._account, True),
            ("GET", r"/v2/positions", "GET /v2/positions", self._positions_json, True),
            (
                "GET",
                acct + "/whitelists",
                "GET /v1/accounts/{acct}/wallets/whitelists",
                self._whitelists,
                True,
            ),
            (
                "POST",
                acct + "/transfers",
                "POST /v1/accounts/{acct}/wallets/transfers",
                self._withdraw,
                True,
            ),
            (
                "GET",
                acct + "/transfers",
                "GET /v1/accounts/{acct}/wallets/transfers",
                self._list_transfers,
                True,
            ),
            ("GET", acct, "GET /v1/accounts/{acct}/wallets", self._wallet, True),
            (
                "GET",
                r"/v2/burn/USDC/fees/(?P<src>\d+)/(?P<dst>\d+)",
                "GET /v2/burn/USDC/fees/{src}/{dst}",
                self._fees,
                False,
            ),
            ("GET", r"/v2/messages/(?P<src>\d+)", "GET /v2/messages/{src}", self._messages, False),
        ]
        return [
            _Route(method, re.compile(pattern + r"/?"), key, handler, alpaca)
            for method, pattern, key, handler, alpaca in table
        ]

    def handle(
        self, method: str, raw_path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, str]:
        parts = urlsplit(raw_path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        for route in self._routes:
            match = route.pattern.fullmatch(parts.path)
            if match is None or route.method != method:
                continue
            fault = self._draw_fault(route.key)
            if fault == FAULT_5XX:
                return 503, json.dumps({"message": "simulated outage"})
            if fault == FAULT_HANG:
                time.sleep(self._knobs.hang_s)
            try:
                if route.alpaca:
                    self._authenticate(headers, match.groupdict().get("acct"))
                result = route.handler(query=query, body=body, **match.groupdict())
                status, payload = 200, result
            except _Reply as reply:
                status, payload = reply.status, reply.body
            if fault == FAULT_5XX_AFTER:
                return 500, json.dumps({"message": "simulated failure after commit"})
            text = payload if isinstance(payload, str) else json.dumps(payload)
            return status, text
        return 404, json.dumps({"message": f"no route for {method} {parts.path}"})

    def _draw_fault(self, key: str) -> str | None:
        with self._lock:
            self._counts[key] += 1
            fault = self._next_fault(key)
            if fault is not None:
                self._faults_served[(key, fault)] += 1
            return fault

    def _next_fault(self, key: str) -> str | None:
        queue = self._faults.get(key)
        if queue:
            return queue.popleft()
        knobs = self._knobs
        if knobs.error_5xx_rate and self._fault_rng.random() < knobs.error_5xx_rate:
            return FAULT_5XX
        if knobs.hang_rate and self._fault_rng.random() < knobs.hang_rate:
            return FAULT_HANG
        return None

    def _authenticate(self, headers: dict[str, str], acct: str | None) -> None:
        lowered = {k.lower(): v for k, v in headers.items()}
        if (
            lowered.get("apca-api-key-id") != self.world.api_key
            or lowered.get("apca-api-secret-key") != self.world.api_secret
        ):
            raise _Reply(401, {"message": "request is not authorized"})
        if acct is not None and acct != self.world.account_id:
            raise _Reply(404, {"message": f"account {acct} not found"})

    # -- Alpaca: account --------------------------------------------------------------------

    def _account(self, **_: Any) -> Any:
        with self._lock:
            return {
                "id": self.world.account_id,
                "cash": _plain(self._cash),
                "currency": "USD",
                "status": "ACTIVE",
            }

    def _positions_json(self, **_: Any) -> Any:
        with self._lock:
            return [
                {"symbol": symbol, "qty": _plain(qty), "side": "long"}
                for symbol, qty in sorted(self._positions.items())
                if qty != 0
            ]

    # -- Alpaca: tokenization ---------------------------------------------------------------

    def _mint(self, *, body: bytes, **_: Any) -> Any:
        data = _json_object(body)
        symbol = data.get("underlying_symbol")
        qty = _decimal(data.get("qty"))
        wallet = data.get("wallet_address")
        issuer_request_id = data.get("issuer_request_id")
        problems = []
        if symbol not in self.world.equity_tokens:
            problems.append(f"underlying_symbol={symbol!r}: not a tokenizable asset")
        if qty is None or qty <= 0:
            problems.append(f"qty={data.get('qty')!r}: must be a decimal string > 0")
        if not isinstance(wallet, str) or not is_address(wallet):
            problems.append(f"wallet_address={wallet!r}: must be an EVM address")
        if data.get("network") != "base":
            problems.append(f"network={data.get('network')!r}: only 'base' is supported")
        if issuer_request_id is not None and not isinstance(issuer_request_id, str):
            problems.append("issuer_request_id: must be a string")
        if problems:
            raise _Reply(422, {"message": "; ".join(problems)})
        assert qty is not None and isinstance(symbol, str) and isinstance(wallet, str)
        with self._lock:
            if issuer_request_id:
                for existing in self._tokenization:
                    if existing.issuer_request_id == issuer_request_id:
                        return existing.to_json()
            held = self._positions.get(symbol, Decimal(0))
            if held < qty:
                raise _Reply(
                    403,
                    {"message": f"insufficient position: {symbol} has {held}, requested {qty}"},
                )
            self._positions[symbol] = held - qty
            now = time.monotonic()
            record = TokenizationRecord(
                id=self._new_id(),
                type="mint",
                status="pending",
                underlying_symbol=symbol,
                token_symbol=self._token_symbols[symbol],
                qty=qty,
                wallet_address=to_checksum_address(wallet),
                issuer=str(data.get("issuer") or self.world.issuer),
                issuer_request_id=issuer_request_id,
                tx_hash=None,
                created_at=_now(),
                visible_at=now,
                due_at=now + self._knobs.mint_delay_s,
            )
            self._tokenization.append(record)
            logger.info("sim: mint %s of %s %s accepted", record.id, qty, symbol)
            return record.to_json()

    def _list_requests(self, *, query: dict[str, str], **_: Any) -> Any:
        now = time.monotonic()
        with self._lock:
            return [
                r.to_json()
                for r in self._tokenization
                if r.visible_at <= now
                and all(
                    query.get(name) in (None, value)
                    for name, value in (
                        ("type", r.type),
                        ("status", r.status),
                        ("underlying_symbol", r.underlying_symbol),
                    )
                )
            ]

    # -- Alpaca: wallet ---------------------------------------------------------------------

    def _whitelists(self, **_: Any) -> Any:
        with self._lock:
            return [w.to_json() for w in self._whitelist]

    def _wallet(self, *, query: dict[str, str], **_: Any) -> Any:
        asset = query.get("asset", "USDC")
        network = query.get("network", "ethereum").lower()
        if asset != "USDC" or network != "ethereum":
            raise _Reply(422, {"message": f"asset={asset!r} network={network!r}: unsupported"})
        return {"address": self.world.deposit_address, "asset": "USDC", "network": "ethereum"}

    def _withdraw(self, *, body: bytes, **_: Any) -> Any:
        data = _json_object(body)
        amount = _decimal(data.get("amount"))
        address = data.get("address")
        if amount is None or amount <= 0:
            raise _Reply(422, {"message": f"amount={data.get('amount')!r}: must be > 0"})
        if data.get("asset") != "USDC":
            raise _Reply(422, {"message": f"asset={data.get('asset')!r}: only USDC"})
        if not isinstance(address, str) or not is_address(address):
            raise _Reply(422, {"message": f"address={address!r}: must be an EVM address"})
        with self._lock:
            approved = any(
                w.address.lower() == address.lower() and w.status == "APPROVED"
                for w in self._whitelist
            )
            if not approved:
                raise _Reply(403, {"message": f"address {address} is not an approved whitelist"})
            if self._cash < amount:
                raise _Reply(
                    403, {"message": f"insufficient balance: cash {self._cash}, requested {amount}"}
                )
            self._cash -= amount
            record = TransferRecord(
                id=self._new_id(),
                relationship="OUTGOING",
                amount=amount,
                from_address=self._hot_wallet.address,
                to_address=to_checksum_address(address),
                status="PENDING",
                tx_hash=None,
                created_at=_now(),
                network_fee_amount=self._knobs.withdrawal_network_fee_usdc,
                due_at=time.monotonic() + self._knobs.withdrawal_processing_delay_s,
            )
            self._transfers.append(record)
            logger.info("sim: withdrawal %s of %s USDC to %s", record.id, amount, address)
            return record.to_json()

    def _list_transfers(self, *, query: dict[str, str], **_: Any) -> Any:
        wanted = query.get("transfer_id")
        with self._lock:
            return [t.to_json() for t in self._transfers if wanted in (None, t.id)]

    # -- Iris -------------------------------------------------------------------------------

    def _fees(self, *, src: str, dst: str, **_: Any) -> Any:
        domains = {self.world.ethereum.domain, self.world.base.domain}
        if int(src) not in domains or int(dst) not in domains or src == dst:
            raise _Reply(400, {"message": f"unsupported route {src} -> {dst}"})
        fee = self._knobs.fast_fee_bps
        # A JSON number written from the Decimal, never through float.
        return (
            f'[{{"finalityThreshold": {cctp.FINALITY_THRESHOLD_FAST}, "minimumFee": {fee}}}, '
            f'{{"finalityThreshold": {cctp.FINALITY_THRESHOLD_STANDARD}, "minimumFee": 0}}]'
        )

    def _messages(self, *, src: str, query: dict[str, str], **_: Any) -> Any:
        tx_hash = (query.get("transactionHash") or "").lower()
        with self._lock:
            records = self._iris.get((int(src), tx_hash))
            if not records:
                raise _Reply(404, {"error": "Message not found"})
            messages = []
            for record in records:
                if record.attestation is None or record.attested_message is None:
                    messages.append(
                        {
                            "message": "0x",
                            "eventNonce": record.nonce,
                            "attestation": "PENDING",
                            "cctpVersion": 2,
                            "status": "pending_confirmations",
                        }
                    )
                else:
                    messages.append(
                        {
                            "message": "0x" + record.attested_message.hex(),
                            "eventNonce": record.nonce,
                            "attestation": "0x" + record.attestation.hex(),
                            "cctpVersion": 2,
                            "status": "complete",
                        }
                    )
            return {"messages": messages}

    # -- settlement thread ------------------------------------------------------------------

    def _settle_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._settle_once()
            except Exception as exc:
                logger.exception("sim: settlement step failed")
                with self._lock:
                    self._errors.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(self._knobs.tick_s)

    def _settle_once(self) -> None:
        self._scan_chains()
        now = time.monotonic()
        with self._lock:
            mints = [
                r
                for r in self._tokenization
                if r.type == "mint" and r.status == "pending" and r.due_at <= now
            ]
            redemptions = [
                r
                for r in self._tokenization
                if r.type == "redeem" and r.status == "pending" and r.due_at <= now
            ]
            transfers = [
                t
                for t in self._transfers
                if t.status in ("PENDING", "PROCESSING") and t.due_at <= now
            ]
            attest = [
                rec
                for recs in self._iris.values()
                for rec in recs
                if rec.attestation is None
                and not self._knobs.attestation_never
                and rec.seen_at + self._knobs.attestation_delay_s <= now
            ]
        for record in mints:
            self._complete_mint(record)
        for record in redemptions:
            self._complete_redemption(record)
        for transfer in transfers:
            self._advance_transfer(transfer)
        for iris in attest:
            self._attest(iris)

    def _new_id(self) -> str:
        with self._lock:
            return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def _chance(self, rate: float) -> bool:
        with self._lock:
            return bool(rate) and self._rng.random() < rate

    def _complete_mint(self, record: TokenizationRecord) -> None:
        if self._chance(self._knobs.mint_reject_rate):
            with self._lock:
                record.status = "rejected"
                record.updated_at = _now()
                self._positions[record.underlying_symbol] = (
                    self._positions.get(record.underlying_symbol, Decimal(0)) + record.qty
                )
            logger.info("sim: mint %s rejected", record.id)
            return
        token = self._token(self.world.base, self.world.equity_tokens[record.underlying_symbol])
        tx_hash = self._send(
            self.world.base,
            self._minter,
            token.functions.mint(record.wallet_address, _units(record.qty, SHARE_DECIMALS)),
        )
        with self._lock:
            record.tx_hash = tx_hash
            record.status = "completed"
            record.updated_at = _now()
        logger.info("sim: mint %s completed in tx %s", record.id, tx_hash)

    def _complete_redemption(self, record: TokenizationRecord) -> None:
        rejected = self._chance(self._knobs.redemption_reject_rate)
        with self._lock:
            record.updated_at = _now()
            if rejected:
                record.status = "rejected"
            else:
                record.status = "completed"
                self._positions[record.underlying_symbol] = (
                    self._positions.get(record.underlying_symbol, Decimal(0)) + record.qty
                )
        logger.info("sim: redemption %s %s", record.id, record.status)

    def _advance_transfer(self, transfer: TransferRecord) -> None:
        knobs = self._knobs
        if transfer.relationship == "INCOMING":
            with self._lock:
                transfer.status = "COMPLETE"
                self._cash += transfer.amount
            logger.info("sim: deposit %s of %s USDC credited", transfer.id, transfer.amount)
            return
        if transfer.status == "PENDING":
            if self._chance(knobs.withdrawal_fail_rate):
                with self._lock:
                    transfer.status = "FAILED"
                    self._cash += transfer.amount
                logger.info("sim: withdrawal %s failed", transfer.id)
                return
            net = transfer.amount - transfer.network_fee_amount
            tx_hash = None
            if net > 0:
                usdc = self._token(self.world.ethereum, self.world.ethereum.usdc)
                tx_hash = self._send(
                    self.world.ethereum,
                    self._hot_wallet,
                    usdc.functions.transfer(transfer.to_address, _units(net, USDC_DECIMALS)),
                )
            with self._lock:
                transfer.status = "PROCESSING"
                transfer.tx_hash = tx_hash
                transfer.due_at = time.monotonic() + knobs.withdrawal_complete_delay_s
            logger.info("sim: withdrawal %s processing, tx %s", transfer.id, tx_hash)
        else:
            with self._lock:
                transfer.status = "COMPLETE"
            logger.info("sim: withdrawal %s complete", transfer.id)

    def _attest(self, record: IrisRecord) -> None:
        parsed = cctp.parse_message(record.message)
        fee = min(
            parsed.body.max_fee_units,
            cctp.max_fee(parsed.body.amount_units, self._knobs.fast_fee_bps),
        )
        fee = min(fee, parsed.body.amount_units - 1) if parsed.body.amount_units > 0 else 0
        attested = cctp.with_attested_fields(record.message, fee_executed_units=fee)
        signed = Account.unsafe_sign_hash(keccak(attested), self._attester.key)
        signature = signed.r.to_bytes(32, "big") + signed.s.to_bytes(32, "big") + bytes([signed.v])
        with self._lock:
            record.attested_message = attested
            record.attestation = signature
        logger.info("sim: attested message of tx %s (fee %d units)", record.tx_hash, fee)

    # -- chain watching ---------------------------------------------------------------------

    def _scan_chains(self) -> None:
        world = self.world
        for side in (world.ethereum, world.base):
            w3 = self._w3[side.name]
            latest = int(w3.eth.block_number)
            start = self._next_block[side.name]
            if latest < start:
                continue
            self._scan_messages(side, start, latest)
            if side is world.base and self._token_by_address:
                self._scan_redemptions(side, start, latest)
            if side is world.ethereum:
                self._scan_deposits(side, start, latest)
            self._next_block[side.name] = latest + 1

    def _logs(self, side: ChainSide, params: dict[str, Any]) -> list[Any]:
        return list(self._w3[side.name].eth.get_logs(params))  # type: ignore[arg-type]

    def _first_seen(self, side: ChainSide, entry: Any) -> bool:
        key = (side.name, "0x" + bytes(entry["transactionHash"]).hex(), int(entry["logIndex"]))
        with self._lock:
            if key in self._seen_logs:
                return False
            self._seen_logs.add(key)
            return True

    def _scan_messages(self, side: ChainSide, start: int, end: int) -> None:
        logs = self._logs(
            side,
            {
                "address": side.message_transmitter,
                "fromBlock": start,
                "toBlock": end,
                "topics": [MESSAGE_SENT_TOPIC],
            },
        )
        for entry in logs:
            if not self._first_seen(side, entry):
                continue
            data = bytes(entry["data"])
            offset = int.from_bytes(data[0:32], "big")
            length = int.from_bytes(data[offset : offset + 32], "big")
            message = data[offset + 32 : offset + 32 + length]
            tx_hash = "0x" + bytes(entry["transactionHash"]).hex()
            parsed = cctp.parse_message(message)
            record = IrisRecord(
                source_domain=side.domain,
                tx_hash=tx_hash,
                message=message,
                nonce=parsed.nonce,
                seen_at=time.monotonic(),
            )
            with self._lock:
                self._iris.setdefault((side.domain, tx_hash.lower()), []).append(record)
            logger.info("sim: saw MessageSent on %s in tx %s", side.name, tx_hash)

    def _transfer_logs(
        self, side: ChainSide, tokens: list[str], to: str, start: int, end: int
    ) -> list[Any]:
        topic_to = "0x" + "00" * 12 + to_checksum_address(to)[2:].lower()
        return self._logs(
            side,
            {
                "address": tokens,
                "fromBlock": start,
                "toBlock": end,
                "topics": [TRANSFER_TOPIC, None, topic_to],
            },
        )

    def _scan_redemptions(self, side: ChainSide, start: int, end: int) -> None:
        tokens = list(self._token_by_address)
        for entry in self._transfer_logs(side, tokens, self.world.redemption_wallet, start, end):
            if not self._first_seen(side, entry):
                continue
            symbol = self._token_by_address[to_checksum_address(entry["address"])]
            sender = to_checksum_address(bytes(entry["topics"][1])[12:])
            units = int.from_bytes(bytes(entry["data"]), "big")
            now = time.monotonic()
            visible = now + self._knobs.redemption_detect_delay_s
            record = TokenizationRecord(
                id=self._new_id(),
                type="redeem",
                status="pending",
                underlying_symbol=symbol,
                token_symbol=self._token_symbols[symbol],
                qty=_amount(units, SHARE_DECIMALS),
                wallet_address=sender,
                issuer=self.world.issuer,
                issuer_request_id=None,
                tx_hash="0x" + bytes(entry["transactionHash"]).hex(),
                created_at=_now(),
                visible_at=visible,
                due_at=visible + self._knobs.redemption_complete_delay_s,
            )
            with self._lock:
                self._tokenization.append(record)
            logger.info(
                "sim: redemption of %s %s detected in tx %s", record.qty, symbol, record.tx_hash
            )

    def _scan_deposits(self, side: ChainSide, start: int, end: int) -> None:
        logs = self._transfer_logs(side, [side.usdc], self.world.deposit_address, start, end)
        for entry in logs:
            if not self._first_seen(side, entry):
                continue
            units = int.from_bytes(bytes(entry["data"]), "big")
            record = TransferRecord(
                id=self._new_id(),
                relationship="INCOMING",
                amount=_amount(units, USDC_DECIMALS),
                from_address=to_checksum_address(bytes(entry["topics"][1])[12:]),
                to_address=to_checksum_address(self.world.deposit_address),
                status="PENDING",
                tx_hash="0x" + bytes(entry["transactionHash"]).hex(),
                created_at=_now(),
                network_fee_amount=Decimal(0),
                due_at=time.monotonic() + self._knobs.deposit_credit_delay_s,
            )
            with self._lock:
                self._transfers.append(record)
            logger.info("sim: deposit of %s USDC seen in tx %s", record.amount, record.tx_hash)

    # -- chain writes (settlement thread only) ------------------------------------------------

    def _token(self, side: ChainSide, address: str) -> Any:
        return self._w3[side.name].eth.contract(
            address=to_checksum_address(address), abi=_TOKEN_ABI
        )

    def _send(self, side: ChainSide, account: Any, call: Any) -> str:
        w3 = self._w3[side.name]
        tx = call.build_transaction(
            {
                "from": account.address,
                "nonce": w3.eth.get_transaction_count(account.address, "pending"),
                "chainId": w3.eth.chain_id,
            }
        )
        signed = account.sign_transaction(tx)
        tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=60, poll_latency=0.05)
        if int(receipt["status"]) != 1:
            raise RuntimeError(f"{side.name}: sim transaction {tx_hash.hex()} reverted")
        return "0x" + bytes(tx_hash).hex()

    def _fund_hot_wallet(self) -> None:
        """Give Alpaca's hot wallet an ETH and USDC float on Ethereum for withdrawals."""
        side = self.world.ethereum
        w3 = self._w3[side.name]
        usdc = self._token(side, side.usdc)
        target = _units(self.world.hot_wallet_float_usdc, USDC_DECIMALS)
        held = int(usdc.functions.balanceOf(self._hot_wallet.address).call())
        if held < target:
            self._send(
                side, self._funder, usdc.functions.mint(self._hot_wallet.address, target - held)
            )
        if int(w3.eth.get_balance(self._hot_wallet.address)) < 10**18:
            w3.provider.make_request(  # type: ignore[attr-defined]
                RPCEndpoint("anvil_setBalance"), [self._hot_wallet.address, hex(100 * 10**18)]
            )
        for account in (self._minter, self._funder):
            if int(w3.eth.get_balance(account.address)) < 10**18:
                w3.provider.make_request(  # type: ignore[attr-defined]
                    RPCEndpoint("anvil_setBalance"), [account.address, hex(100 * 10**18)]
                )


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        raise _Reply(400, {"message": "body is not JSON"}) from None
    if not isinstance(data, dict):
        raise _Reply(422, {"message": "body must be a JSON object"})
    return data


def _decimal(value: object) -> Decimal | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = Decimal(value)
    except InvalidOperation:
        return None
    return parsed if parsed.is_finite() else None


class _Handler(BaseHTTPRequestHandler):
    venue: SimVenueServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            status, text = self.venue.handle(self.command, self.path, dict(self.headers), body)
        except Exception:  # the venue must answer, like a real one, with a 500
            logger.exception("sim: %s %s failed", self.command, self.path)
            status, text = 500, json.dumps({"message": "internal error"})
        payload = text.encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
            pass

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        self._serve()

    def do_POST(self) -> None:  # noqa: N802
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        logger.debug("sim http: %s", format % args)

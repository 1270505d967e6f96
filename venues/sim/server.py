"""The simulated venue's HTTP server: Alpaca's Broker API and Circle Iris.

The Alpaca side speaks the Broker API shapes the production client parses (domain spec 15.4;
the contract tests in tests/venues check the two against recorded bodies): every route has the
account id in its path, wallet routes refuse a request without HTTP Basic auth, an unknown
route is a 404, a list filter Alpaca does not support (`transfer_id`) is ignored, and the
tokenization and transfer lists carry a history this client did not create: entries of unknown
shape and chains spelled as seen in the wild ("ETH", "Ethereum"), plus `history_rows`
well-formed entries of other days (a long-lived account). As documented, the tokenization list
filters by `type`, `status`, `underlying_symbol`, `issuer`, `network`, `after` and `before`,
the transfer list takes no parameter, and neither paginates.

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
- a market order fills (when the simulated clock says the market is open) at the symbol's
  simulated price, moving the position and cash;
- Iris watches `MessageSent` on both chains and, after `attestation_delay_s`, serves the message
  with `finalityThresholdExecuted` and `feeExecuted` filled in, signed by the attester key.

Faults: seeded random 5xx and hangs per request, scripted one-shot faults per endpoint
(`fail_next`), rejection rates, attestations that never arrive. Every request is counted per
endpoint (`request_count`) so tests can assert "exactly one mint request".
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import logging
import random
import re
import threading
import time
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, ROUND_UP, Context, Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from eth_account import Account
from eth_utils import is_address, keccak, to_checksum_address
from web3 import Web3
from web3.types import RPCEndpoint

from venues import cctp
from venues.sim.chain import loopback_session

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
    # The status a refused mint or redemption ends in: "rejected" or "failed" (both seen).
    refusal_status: str = "rejected"
    redemption_reject_rate: float = 0.0
    withdrawal_fail_rate: float = 0.0
    attestation_never: bool = False
    # The `Retry-After` (seconds) of a 429 answer (`fail_next(key, FAULT_429)`).
    retry_after_s: int = 2
    # Brokerage: the market clock, order fills and prices, Alpaca's USDC crypto position.
    market_open: bool = True
    order_fill_delay_s: float = 0.05
    default_price_usd: Decimal = Decimal(100)
    usdc_crypto_position: Decimal = Decimal("0.5")
    # USDCUSD conversions: a seeded mid price within `usdc_price_jitter_bps` of 1, buys at
    # mid + half the spread, sells at mid - half the spread (0: exactly 1 both ways).
    usdc_spread_bps: Decimal = Decimal(0)
    usdc_price_jitter_bps: Decimal = Decimal(0)
    # The fraction (0 < f <= 1) of its amount each USDCUSD order accepted while it is set
    # fills (a buy: of its USD notional or qty; a sell: of its qty), quantities floored to
    # Alpaca's 9 crypto decimals. Below 1 the order ends `canceled` with `filled_qty` the part
    # filled, as Alpaca reports a market order whose rest the book could not take (an ioc's
    # rest is canceled); the rest of the cash or the USDC is left where it was.
    usdc_fill_fraction: Decimal = Decimal(1)
    # How the whitelist spells the market maker entry's chain ("ETH" or "Ethereum").
    whitelist_chain: str = "ETH"
    # Rows of unknown shape in the tokenization history (the reference tests 128).
    history_malformed_rows: int = 128
    # Well-formed past entries added to both histories (tokenization requests and wallet
    # transfers of other days, one an hour going back from 2025-06-01): a long-lived account.
    history_rows: int = 0

    def __post_init__(self) -> None:
        fraction = self.usdc_fill_fraction
        if not isinstance(fraction, Decimal) or not Decimal(0) < fraction <= 1:
            raise ValueError(
                f"usdc_fill_fraction={fraction!r}: must be a Decimal above 0 and at most 1"
            )


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


def _query_time(query: dict[str, str], name: str) -> datetime | None:
    """A time query parameter (RFC 3339); 422 when it does not parse."""
    value = query.get(name)
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        message = f"{name}={value!r}: not a date-time"
        raise _Reply(422, {"code": 42210000, "message": message}) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _row_time(row: Any) -> datetime | None:
    """A listed entry's `created_at`, or None when it has none that reads as a time."""
    created = row.get("created_at") if isinstance(row, dict) else None
    if not isinstance(created, str):
        return None
    try:
        moment = datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", created))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


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
    direction: str
    amount: Decimal
    from_address: str | None
    to_address: str
    status: str
    tx_hash: str | None
    created_at: datetime
    network_fee: Decimal
    due_at: float = 0.0
    asset: str = "USDC"
    chain: str = "ETH"

    def to_json(self) -> dict[str, Any]:
        """Broker API crypto transfer: `direction`, `chain` "ETH", decimal strings."""
        return {
            "id": self.id,
            "tx_hash": self.tx_hash,
            "direction": self.direction,
            "status": self.status,
            "amount": _plain(self.amount),
            "usd_value": _plain(self.amount),  # USDC at par in the simulation
            "network_fee": _plain(self.network_fee),
            "fees": "0",
            "chain": self.chain,
            "asset": self.asset,
            "from_address": self.from_address,
            "to_address": self.to_address,
            "created_at": _iso(self.created_at),
        }


@dataclass
class OrderRecord:
    id: str
    client_order_id: str
    symbol: str
    side: str
    qty: Decimal
    status: str
    created_at: datetime
    due_at: float
    filled_qty: Decimal = Decimal(0)
    filled_avg_price: Decimal | None = None
    filled_at: datetime | None = None
    updated_at: datetime | None = None
    notional: Decimal | None = None
    time_in_force: str = "day"
    fill_fraction: Decimal = Decimal(1)  # USDCUSD: `SimKnobs.usdc_fill_fraction` at submit
    canceled_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        """Broker API order (the fields this project reads plus Alpaca's usual companions)."""
        return {
            "id": self.id,
            "client_order_id": self.client_order_id,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at or self.created_at),
            "submitted_at": _iso(self.created_at),
            "filled_at": _iso(self.filled_at),
            "expired_at": None,
            "canceled_at": _iso(self.canceled_at),
            "failed_at": None,
            "asset_class": "crypto" if self.symbol == USDC_SYMBOL else "us_equity",
            "symbol": self.symbol,
            "notional": None if self.notional is None else _plain(self.notional),
            "qty": None if self.notional is not None and self.filled_qty == 0 else _plain(self.qty),
            "filled_qty": _plain(self.filled_qty),
            "filled_avg_price": (
                None if self.filled_avg_price is None else _plain(self.filled_avg_price)
            ),
            "order_class": "",
            "order_type": "market",
            "type": "market",
            "side": self.side,
            "time_in_force": self.time_in_force,
            "limit_price": None,
            "stop_price": None,
            "status": self.status,
            "extended_hours": False,
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
    chain: str = "ETH"

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
FAULT_429 = "429"  # answer 429 with `Retry-After` (knob retry_after_s) and do nothing
FAULTS = (FAULT_5XX, FAULT_5XX_AFTER, FAULT_HANG, FAULT_429)

# Endpoint keys (for `request_count` and `fail_next`).
USDC_SYMBOL = "USDCUSD"  # Alpaca's USDC crypto position and its USD pair
USD_UNIT = Decimal("0.000001")  # cash credited or debited by a conversion, 6 decimals
CRYPTO_QTY_UNIT = Decimal("0.000000001")  # Alpaca's crypto quantities: 9 decimals
KEY_MINT = "POST /v1/accounts/{acct}/tokenization/mint"
KEY_TOKENIZATION_LIST = "GET /v1/accounts/{acct}/tokenization/requests"
KEY_TOKENIZATION_GET = "GET /v1/accounts/{acct}/tokenization/requests/{id}"
KEY_ACCOUNT = "GET /v1/trading/accounts/{acct}/account"
KEY_POSITIONS = "GET /v1/trading/accounts/{acct}/positions"
KEY_ORDER_POST = "POST /v1/trading/accounts/{acct}/orders"
KEY_ORDER_GET = "GET /v1/trading/accounts/{acct}/orders/{id}"
KEY_ORDER_BY_CLIENT_ID = "GET /v1/trading/accounts/{acct}/orders:by_client_order_id"
KEY_CLOCK = "GET /v1/clock"
KEY_WALLET = "GET /v1/accounts/{acct}/wallets"
KEY_WHITELISTS = "GET /v1/accounts/{acct}/wallets/whitelists"
KEY_WITHDRAW = "POST /v1/accounts/{acct}/wallets/transfers"
KEY_TRANSFER_LIST = "GET /v1/accounts/{acct}/wallets/transfers"
KEY_TRANSFER_GET = "GET /v1/accounts/{acct}/wallets/transfers/{id}"

# Route authentication: Iris needs none; Alpaca routes take Basic auth or the APCA headers;
# wallet routes need Basic auth (and the APCA headers), as the Broker API's crypto funding does.
AUTH_NONE = "none"
AUTH_ALPACA = "alpaca"
AUTH_WALLET = "wallet"


class _Reply(Exception):
    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.body = body
        self.headers = dict(headers or {})


@dataclass(frozen=True)
class _Route:
    method: str
    pattern: re.Pattern[str]
    key: str
    handler: Callable[..., Any]
    auth: str


def _history_id(label: str) -> str:
    return str(uuid.UUID(bytes=keccak(text=f"sim history {label}")[:16], version=4))


def tokenization_history(*, malformed_rows: int, wallet: str) -> list[Any]:
    """Tokenization requests this client never made, as Alpaca's list carries them: other
    issuers and networks, a `failed` one, and `malformed_rows` entries of unknown shape."""
    past = "2025-06-02T14:30:00.123456789Z"
    rows: list[Any] = [
        {
            "tokenization_request_id": _history_id("mint xstocks"),
            "type": "mint",
            "status": "completed",
            "underlying_symbol": "TSLA",
            "token_symbol": "TSLAx",
            "qty": "3",
            "issuer": "xstocks",
            "network": "solana",
            "wallet_address": "7xKXtg2CW87d97TXJSDpbD5jBkheTqA83TZRuJosgAsU",
            "issuer_request_id": None,
            "tx_hash": None,
            "fees": "0.01",
            "created_at": past,
            "updated_at": past,
        },
        {
            "tokenization_request_id": _history_id("failed mint"),
            "type": "mint",
            "status": "failed",
            "underlying_symbol": "AAPL",
            "token_symbol": "tAAPL",
            "qty": "1.5",
            "issuer": "st0x",
            "network": "Base",
            "wallet_address": wallet,
            "issuer_request_id": _history_id("someone else's key"),
            "tx_hash": None,
            "fees": None,
            "created_at": past,
            "updated_at": None,
        },
    ]
    shapes: list[Callable[[int], Any]] = [
        lambda i: {"tokenization_request_id": _history_id(f"bad {i}"), "type": "mint"},
        lambda i: {**rows[1], "tokenization_request_id": _history_id(f"bad {i}"), "qty": None},
        lambda i: {**rows[1], "tokenization_request_id": _history_id(f"bad {i}"), "type": "split"},
        lambda i: {**rows[1], "tokenization_request_id": _history_id(f"bad {i}"), "status": "held"},
        lambda i: {**rows[0], "tokenization_request_id": _history_id(f"bad {i}"), "qty": "n/a"},
        lambda i: {**rows[0], "tokenization_request_id": _history_id(f"bad {i}"), "created_at": 7},
        lambda i: {**rows[0], "tokenization_request_id": None, "type": "redeem"},
        lambda i: f"row {i}",
    ]
    rows.extend(shapes[i % len(shapes)](i) for i in range(malformed_rows))
    return rows


# The past entries of `history_rows`: one an hour, going back from here.
_HISTORY_END = datetime(2025, 6, 1, tzinfo=UTC)


def long_tokenization_history(count: int, wallet: str) -> list[Any]:
    """`count` completed mints and redemptions of other days (a long-lived account)."""
    rows = []
    for i in range(count):
        at = _iso(_HISTORY_END - timedelta(hours=i + 1))
        kind = "mint" if i % 2 else "redeem"
        rows.append(
            {
                "tokenization_request_id": _history_id(f"long {i}"),
                "type": kind,
                "status": "completed",
                "underlying_symbol": "AAPL",
                "token_symbol": "tAAPL",
                "qty": "1",
                "issuer": "st0x",
                "network": "base",
                "wallet_address": wallet,
                "issuer_request_id": _history_id(f"long key {i}") if kind == "mint" else None,
                "tx_hash": "0x" + keccak(text=f"sim long history {i}").hex(),
                "fees": "0",
                "created_at": at,
                "updated_at": at,
            }
        )
    return rows


def long_transfer_history(count: int) -> list[Any]:
    """`count` completed USDC deposits and withdrawals of other days, newest first."""
    rows = []
    for i in range(count):
        incoming = i % 2 == 0
        rows.append(
            {
                "id": _history_id(f"long transfer {i}"),
                "tx_hash": "0x" + keccak(text=f"sim long transfer {i}").hex(),
                "direction": "INCOMING" if incoming else "OUTGOING",
                "status": "COMPLETE",
                "amount": "100",
                "usd_value": "100",
                "network_fee": "0",
                "fees": "0",
                "chain": "ETH",
                "asset": "USDC",
                "from_address": "0x" + "ab" * 20,
                "to_address": "0x" + "cd" * 20,
                "created_at": _iso(_HISTORY_END - timedelta(hours=i + 1)),
            }
        )
    return rows


def transfer_history() -> list[Any]:
    """Transfers of the account this client did not make: an older USDC deposit, a BTC
    withdrawal (not an EVM address), and an entry of unknown shape."""
    past = "2025-06-01T09:00:00Z"
    return [
        {
            "id": _history_id("old deposit"),
            "tx_hash": "0x" + keccak(text="sim history old deposit tx").hex(),
            "direction": "INCOMING",
            "status": "COMPLETE",
            "amount": "250",
            "usd_value": "250",
            "network_fee": "0",
            "fees": "0",
            "chain": "ETH",
            "asset": "USDC",
            "from_address": "0x" + "ab" * 20,
            "to_address": "0x" + "cd" * 20,
            "created_at": past,
        },
        {
            "id": _history_id("btc withdrawal"),
            "tx_hash": None,
            "direction": "OUTGOING",
            "status": "FAILED",
            "amount": "0.01",
            "usd_value": "650.12",
            "network_fee": "0.0001",
            "fees": "0",
            "chain": "BTC",
            "asset": "BTC",
            "from_address": None,
            "to_address": "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq",
            "created_at": past,
        },
        {"id": _history_id("odd transfer"), "direction": "SIDEWAYS", "amount": "1"},
    ]


# ---------------------------------------------------------------------------------------------
# Server


@dataclass
class RequestHold:
    """One held request (`SimVenueServer.hold_next`)."""

    timeout_s: float
    arrived: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)

    def release(self) -> None:
        self.released.set()


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
        # The clock's current session (open?, next open, next close), as Alpaca's: fixed times
        # that change only at the bell (or when a test turns the `market_open` knob).
        self._session: tuple[bool, datetime, datetime] | None = None
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
        # USDC at Alpaca is a crypto position (`USDCUSD`), not cash (spec 15.5).
        self._usdc = self._knobs.usdc_crypto_position
        # USDC locked by pending withdrawals: still in the position's `qty` until they
        # complete, not in `qty_available`.
        self._usdc_locked = Decimal(0)
        self._usdc_mid = Decimal(1) + (
            Decimal(random.Random(f"usdc-{self._knobs.seed}").randint(-1000, 1000))
            / 1000
            * self._knobs.usdc_price_jitter_bps
            / 10000
        ).quantize(Decimal("0.000001"), rounding=ROUND_DOWN)
        self._tokenization: list[TokenizationRecord] = []
        self._transfers: list[TransferRecord] = []
        self._iris: dict[tuple[int, str], list[IrisRecord]] = {}
        self._whitelist: list[WhitelistRecord] = []
        self._orders: list[OrderRecord] = []
        self._held: dict[str, Decimal] = {}  # shares held by unfilled sell orders
        self._prices: dict[str, Decimal] = {}
        self._tokenization_history = tokenization_history(
            malformed_rows=self._knobs.history_malformed_rows, wallet=world.market_maker_wallet
        ) + long_tokenization_history(self._knobs.history_rows, world.market_maker_wallet)
        self._transfer_history = transfer_history() + long_transfer_history(
            self._knobs.history_rows
        )
        # Entries answered by each list endpoint, summed over its requests (`rows_served`).
        self._rows_served: Counter[str] = Counter()
        self._seen_logs: set[tuple[str, str, int]] = set()
        self._counts: Counter[str] = Counter()
        self._faults_served: Counter[tuple[str, str]] = Counter()
        self._idempotency_seen: defaultdict[str, list[str]] = defaultdict(list)
        self._idempotency_answers: dict[tuple[str, str], tuple[bytes, int, Any]] = {}
        self._faults: dict[str, deque[str]] = {}
        self._holds: dict[str, deque[RequestHold]] = {}
        self._errors: list[str] = []
        self._token_symbols: dict[str, str] = {}
        self._token_by_address: dict[str, str] = {}
        self._next_block: dict[str, int] = {}
        self._w3 = {
            side.name: Web3(
                Web3.HTTPProvider(
                    side.rpc_url, request_kwargs={"timeout": 30}, session=loopback_session()
                )
            )
            for side in (world.ethereum, world.base)
        }
        self._attester = Account.from_key(world.attester_key)
        self._minter = Account.from_key(world.minter_key)
        self._funder = Account.from_key(world.usdc_funder_key)
        self._hot_wallet = Account.from_key(world.hot_wallet_key)
        self._httpd: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._routes = self._build_routes()
        # Other whitelist entries of the account, with the chain spellings seen in the wild.
        for label, chain, status in (
            ("old wallet", "Ethereum", "REJECTED"),
            ("sol wallet", "SOL", "APPROVED"),
        ):
            self._whitelist.append(
                WhitelistRecord(
                    id=_history_id(label),
                    address="0x" + keccak(text=f"sim {label}").hex()[-40:]
                    if chain != "SOL"
                    else "7xKXtg2CW87d97TXJSDpbD5jBkheTqA83TZRuJosgAsU",
                    status=status,
                    created_at=datetime(2025, 5, 1, tzinfo=UTC),
                    chain=chain,
                )
            )
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
        keys = [route.key for route in self._routes]
        if key not in keys:
            raise ValueError(f"key={key!r}: not an endpoint of the simulated venue ({keys})")
        with self._lock:
            self._faults.setdefault(key, deque()).extend([fault] * times)

    def hold_next(self, key: str, *, timeout_s: float = 120.0) -> RequestHold:
        """Hold the next request to endpoint `key` before it has any effect, until the test
        calls `hold.release()` (or `timeout_s` passes): `hold.arrived` is set when the request
        is held. Interleaves a caller deterministically with what happens meanwhile."""
        hold = RequestHold(timeout_s=timeout_s)
        with self._lock:
            self._holds.setdefault(key, deque()).append(hold)
        return hold

    def settle_now(self) -> None:
        """End every delay already scheduled: pending mints and redemptions become visible and
        due, pending withdrawals, deposits and orders due; the next settlement tick moves them
        on. A test holds a venue-side step with a long delay knob (`mint_delay_s=3600`), checks
        the state in between, then restores the knob and lets the step go with this (a short
        knob alone is a race: a slow machine can pass it before the test's next step)."""
        now = time.monotonic()
        with self._lock:
            for record in self._tokenization:
                if record.status == "pending":
                    record.visible_at = min(record.visible_at, now)
                    record.due_at = min(record.due_at, now)
            for transfer in self._transfers:
                if transfer.status in ("PENDING", "PROCESSING"):
                    transfer.due_at = min(transfer.due_at, now)
            for order in self._orders:
                if order.status == "accepted":
                    order.due_at = min(order.due_at, now)

    def request_count(self, key: str) -> int:
        """Requests seen for an endpoint key: one of the `KEY_*` constants (such as
        `POST /v1/accounts/{acct}/tokenization/mint`), `GET /v2/messages/{src}` or
        `GET /v2/burn/USDC/fees/{src}/{dst}`."""
        with self._lock:
            return self._counts[key]

    def rows_served(self, key: str) -> int:
        """Entries the list endpoint `key` (`KEY_TOKENIZATION_LIST`, `KEY_TRANSFER_LIST`) has
        answered with, summed over its requests: what the client's lookups downloaded."""
        with self._lock:
            return self._rows_served[key]

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

    def usdc_position(self) -> Decimal:
        """The `USDCUSD` crypto position's quantity (USDC held at Alpaca)."""
        with self._lock:
            return self._usdc

    def set_usdc_position(self, qty: Decimal) -> None:
        with self._lock:
            self._usdc = qty

    def whitelist_set(self, address: str, status: str | None, *, chain: str | None = None) -> None:
        """Set (or with None remove) the USDC/ethereum whitelist entry of `address`; its chain
        is spelled `chain` (default the `whitelist_chain` knob, "ETH")."""
        with self._lock:
            self._whitelist = [w for w in self._whitelist if w.address.lower() != address.lower()]
            if status is not None:
                self._whitelist.append(
                    WhitelistRecord(
                        id=self._new_id(),
                        address=address,
                        status=status,
                        created_at=_now(),
                        chain=chain or self._knobs.whitelist_chain,
                    )
                )

    def price(self, symbol: str) -> Decimal:
        """The simulated price market orders of `symbol` fill at."""
        with self._lock:
            return self._prices.get(symbol, self._knobs.default_price_usd)

    def set_price(self, symbol: str, price_usd: Decimal) -> None:
        if not price_usd.is_finite() or price_usd <= 0:
            raise ValueError(f"price_usd={price_usd}: must be a finite price > 0")
        with self._lock:
            self._prices[symbol] = price_usd

    def orders(self) -> list[dict[str, Any]]:
        with self._lock:
            return [o.to_json() for o in self._orders]

    def tokenization_requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r.to_json() for r in self._tokenization]

    def transfers(self) -> list[dict[str, Any]]:
        with self._lock:
            return [t.to_json() for t in self._transfers]

    # -- HTTP dispatch ----------------------------------------------------------------------

    def _build_routes(self) -> list[_Route]:
        acct = r"/v1/accounts/(?P<acct>[^/]+)"
        trading = r"/v1/trading/accounts/(?P<acct>[^/]+)"
        item = r"/(?P<item>[^/]+)"
        table: list[tuple[str, str, str, Callable[..., Any], str]] = [
            ("POST", acct + "/tokenization/mint", KEY_MINT, self._mint, AUTH_ALPACA),
            (
                "GET",
                acct + "/tokenization/requests",
                KEY_TOKENIZATION_LIST,
                self._list_requests,
                AUTH_ALPACA,
            ),
            (
                "GET",
                acct + "/tokenization/requests" + item,
                KEY_TOKENIZATION_GET,
                self._get_request,
                AUTH_ALPACA,
            ),
            ("GET", trading + "/account", KEY_ACCOUNT, self._account, AUTH_ALPACA),
            ("GET", trading + "/positions", KEY_POSITIONS, self._positions_json, AUTH_ALPACA),
            ("POST", trading + "/orders", KEY_ORDER_POST, self._submit_order, AUTH_ALPACA),
            ("GET", trading + "/orders" + item, KEY_ORDER_GET, self._get_order, AUTH_ALPACA),
            (
                "GET",
                trading + "/orders:by_client_order_id",
                KEY_ORDER_BY_CLIENT_ID,
                self._order_by_client_id,
                AUTH_ALPACA,
            ),
            ("GET", r"/v1/clock", KEY_CLOCK, self._clock, AUTH_ALPACA),
            ("GET", acct + "/wallets/whitelists", KEY_WHITELISTS, self._whitelists, AUTH_WALLET),
            ("POST", acct + "/wallets/transfers", KEY_WITHDRAW, self._withdraw, AUTH_WALLET),
            (
                "GET",
                acct + "/wallets/transfers",
                KEY_TRANSFER_LIST,
                self._list_transfers,
                AUTH_WALLET,
            ),
            (
                "GET",
                acct + "/wallets/transfers" + item,
                KEY_TRANSFER_GET,
                self._get_transfer,
                AUTH_WALLET,
            ),
            ("GET", acct + "/wallets", KEY_WALLET, self._wallet, AUTH_WALLET),
            (
                "GET",
                r"/v2/burn/USDC/fees/(?P<src>\d+)/(?P<dst>\d+)",
                "GET /v2/burn/USDC/fees/{src}/{dst}",
                self._fees,
                AUTH_NONE,
            ),
            (
                "GET",
                r"/v2/messages/(?P<src>\d+)",
                "GET /v2/messages/{src}",
                self._messages,
                AUTH_NONE,
            ),
        ]
        return [
            _Route(method, re.compile(pattern + r"/?"), key, handler, auth)
            for method, pattern, key, handler, auth in table
        ]

    def handle(
        self, method: str, raw_path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, str, dict[str, str]]:
        """One request: (status, JSON text, extra response headers)."""
        parts = urlsplit(raw_path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        for route in self._routes:
            match = route.pattern.fullmatch(parts.path)
            if match is None or route.method != method:
                continue
            fault = self._draw_fault(route.key)
            self._wait_if_held(route.key)
            if fault == FAULT_5XX:
                return 503, json.dumps({"message": "simulated outage"}), {}
            if fault == FAULT_429:
                retry_after = str(self._knobs.retry_after_s)
                return (
                    429,
                    json.dumps({"message": "too many requests"}),
                    {"Retry-After": retry_after},
                )
            if fault == FAULT_HANG:
                time.sleep(self._knobs.hang_s)
            extra: dict[str, str] = {}
            idempotency_key = _header(headers, "Idempotency-Key") if method == "POST" else None
            try:
                self._authenticate(headers, route.auth, match.groupdict().get("acct"))
                replayed = self._idempotent_replay(route.key, idempotency_key, body)
                if replayed is not None:
                    status, payload = replayed
                else:
                    result = route.handler(query=query, body=body, **match.groupdict())
                    status, payload = 200, result
                    self._idempotent_remember(route.key, idempotency_key, body, status, payload)
            except _Reply as reply:
                status, payload, extra = reply.status, reply.body, reply.headers
            if fault == FAULT_5XX_AFTER:
                return 500, json.dumps({"message": "simulated failure after commit"}), {}
            text = payload if isinstance(payload, str) else json.dumps(payload)
            return status, text, extra
        return 404, json.dumps({"code": 40410000, "message": "endpoint not found"}), {}

    def _idempotent_replay(
        self, key: str, idempotency_key: str | None, body: bytes
    ) -> tuple[int, Any] | None:
        """Alpaca answers a create request re-sent with the same `Idempotency-Key` with the
        first one's answer, acting once; the same key with another body is refused (422)."""
        if idempotency_key is None:
            return None
        with self._lock:
            self._idempotency_seen[key].append(idempotency_key)
            known = self._idempotency_answers.get((key, idempotency_key))
        if known is None:
            return None
        first_body, status, payload = known
        if _json_object(body) != _json_object(first_body):
            raise _Reply(
                422,
                {"code": 40010001, "message": "Idempotency-Key reused with a different request"},
            )
        return status, payload

    def _idempotent_remember(
        self, key: str, idempotency_key: str | None, body: bytes, status: int, payload: Any
    ) -> None:
        if idempotency_key is not None:
            with self._lock:
                self._idempotency_answers[(key, idempotency_key)] = (body, status, payload)

    def idempotency_keys(self, key: str) -> list[str]:
        """The `Idempotency-Key` headers of the POSTs to route `key`, in order."""
        with self._lock:
            return list(self._idempotency_seen[key])

    def _draw_fault(self, key: str) -> str | None:
        with self._lock:
            self._counts[key] += 1
            fault = self._next_fault(key)
            if fault is not None:
                self._faults_served[(key, fault)] += 1
            return fault

    def _wait_if_held(self, key: str) -> None:
        with self._lock:
            queue = self._holds.get(key)
            hold = queue.popleft() if queue else None
        if hold is not None:
            hold.arrived.set()
            hold.released.wait(hold.timeout_s)

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

    def _authenticate(self, headers: dict[str, str], auth: str, acct: str | None) -> None:
        if auth == AUTH_NONE:
            return
        lowered = {k.lower(): v for k, v in headers.items()}
        apca = (
            lowered.get("apca-api-key-id") == self.world.api_key
            and lowered.get("apca-api-secret-key") == self.world.api_secret
        )
        basic = _basic_credentials(lowered.get("authorization")) == (
            self.world.api_key,
            self.world.api_secret,
        )
        unauthorized = _Reply(401, {"code": 40110000, "message": "request is not authorized"})
        if auth == AUTH_WALLET and not (basic and apca):
            raise unauthorized
        if not (basic or apca):
            raise unauthorized
        if acct is not None and acct != self.world.account_id:
            raise _Reply(404, {"code": 40410000, "message": f"account {acct} not found"})

    # -- Alpaca: account, positions, clock, orders -------------------------------------------

    def _account(self, **_: Any) -> Any:
        """The Broker API trading account with every field alpaca-py's `TradeAccount`
        requires (decimal strings, as Alpaca sends them)."""
        with self._lock:
            cash = _plain(self._cash)
            equity = self._cash + sum(
                (qty * self.price(symbol) for symbol, qty in self._positions.items()),
                Decimal(0),
            )
            equity += self._usdc
            long_value = _plain(equity - self._cash)
            return {
                "id": self.world.account_id,
                "account_number": "SIM" + self.world.account_id[-6:].upper(),
                "status": "ACTIVE",
                "crypto_status": "ACTIVE",
                "currency": "USD",
                "cash": cash,
                # No unsettled proceeds in the simulation: all cash may leave.
                "cash_withdrawable": cash,
                "cash_transferable": cash,
                "buying_power": cash,
                "regt_buying_power": cash,
                "daytrading_buying_power": "0",
                "non_marginable_buying_power": cash,
                "accrued_fees": "0",
                "pending_transfer_in": "0",
                "pending_transfer_out": "0",
                "portfolio_value": _plain(equity),
                "equity": _plain(equity),
                "last_equity": _plain(equity),
                "long_market_value": long_value,
                "short_market_value": "0",
                "initial_margin": "0",
                "maintenance_margin": "0",
                "last_maintenance_margin": "0",
                "sma": "0",
                "daytrade_count": 0,
                "multiplier": "1",
                "pattern_day_trader": False,
                "trading_blocked": False,
                "transfers_blocked": False,
                "account_blocked": False,
                "trade_suspended_by_user": False,
                "shorting_enabled": False,
                "previous_close": _iso(_now().replace(hour=20, minute=0, second=0, microsecond=0)),
                "last_long_market_value": long_value,
                "last_short_market_value": "0",
                "last_cash": cash,
                "last_initial_margin": "0",
                "last_regt_buying_power": cash,
                "last_daytrading_buying_power": "0",
                "last_daytrade_count": 0,
                "last_buying_power": cash,
                "clearing_broker": "APEX",
                "created_at": "2025-01-02T15:04:05.123456Z",
            }

    def _positions_json(self, **_: Any) -> Any:
        with self._lock:
            rows = [
                self._position_row(symbol, qty, "us_equity", self.price(symbol))
                for symbol, qty in sorted(self._positions.items())
                if qty != 0
            ]
            usdc = self._usdc
            if usdc != 0:
                row = self._position_row(USDC_SYMBOL, usdc, "crypto", self._usdc_mid)
                held = self._held.get(USDC_SYMBOL, Decimal(0))
                row["qty_available"] = _plain(usdc - self._usdc_locked - held)
                rows.append(row)
            return rows

    def _position_row(
        self, symbol: str, qty: Decimal, asset_class: str, price: Decimal
    ) -> dict[str, Any]:
        available = qty - self._held.get(symbol, Decimal(0))
        return {
            "asset_id": _history_id(f"asset {symbol}"),
            "symbol": symbol,
            "exchange": "CRYPTO" if asset_class == "crypto" else "NASDAQ",
            "asset_class": asset_class,
            "avg_entry_price": _plain(price),
            "qty": _plain(qty),
            "qty_available": _plain(available),
            "side": "long" if qty > 0 else "short",
            "market_value": _plain(qty * price),
            "cost_basis": _plain(qty * price),
            "unrealized_pl": "0",
            "unrealized_plpc": "0",
            "unrealized_intraday_pl": "0",
            "unrealized_intraday_plpc": "0",
            "current_price": _plain(price),
            "lastday_price": _plain(price),
            "change_today": "0",
            "asset_marginable": asset_class != "crypto",
        }

    def _clock(self, **_: Any) -> Any:
        """Alpaca's `GET /v1/clock`: the session's open and close are fixed times, the same on
        every read until the bell (a regular session is 6.5 hours, the night 17.5). The knob
        `market_open` says which side of the bell it is; turning it starts a new session."""
        now = _now().replace(microsecond=0)
        is_open = self._knobs.market_open
        with self._lock:
            session = self._session
            # The next bell: the close while open, the open while closed.
            bell = None if session is None else session[2] if is_open else session[1]
            if session is None or session[0] != is_open or (bell is not None and now >= bell):
                if is_open:
                    next_close = now + timedelta(hours=6, minutes=30)
                    next_open = next_close + timedelta(hours=17, minutes=30)
                else:
                    next_open = now + timedelta(hours=1)
                    next_close = next_open + timedelta(hours=6, minutes=30)
                session = self._session = (is_open, next_open, next_close)
        next_open, next_close = session[1], session[2]
        return {
            "timestamp": _iso(now),
            "is_open": is_open,
            "next_open": _iso(next_open),
            "next_close": _iso(next_close),
        }

    def _submit_order(self, *, body: bytes, **_: Any) -> Any:
        data = _json_object(body)
        if data.get("symbol") in (USDC_SYMBOL, "USDC/USD"):
            return self._submit_usdc_order(data)
        symbol = data.get("symbol")
        qty = _decimal(data.get("qty"))
        side = data.get("side")
        client_order_id = data.get("client_order_id") or self._new_id()
        problems = []
        if not isinstance(symbol, str) or not symbol:
            problems.append(f"symbol={symbol!r}: required")
        if qty is None or qty <= 0:
            problems.append(f"qty={data.get('qty')!r}: must be a decimal string > 0")
        if side not in ("buy", "sell"):
            problems.append(f"side={side!r}: must be buy or sell")
        if data.get("type") != "market":
            problems.append(f"type={data.get('type')!r}: the simulation fills market orders only")
        if data.get("time_in_force") not in ("day", "gtc", "ioc", "fok"):
            problems.append(f"time_in_force={data.get('time_in_force')!r}: invalid")
        if not isinstance(client_order_id, str) or len(client_order_id) > 128:
            problems.append("client_order_id: must be a string of at most 128 characters")
        if problems:
            raise _Reply(422, {"code": 40010001, "message": "; ".join(problems)})
        assert qty is not None and isinstance(symbol, str) and isinstance(side, str)
        with self._lock:
            if any(o.client_order_id == client_order_id for o in self._orders):
                raise _Reply(422, {"code": 40010001, "message": "client_order_id must be unique"})
            if side == "sell":
                held = self._positions.get(symbol, Decimal(0))
                available = held - self._held.get(symbol, Decimal(0))
                if available < qty:
                    raise _Reply(
                        403,
                        {
                            "code": 40310000,
                            "message": f"insufficient qty available for order "
                            f"(requested: {qty}, available: {available})",
                        },
                    )
                self._held[symbol] = self._held.get(symbol, Decimal(0)) + qty
            else:
                cost = qty * self.price(symbol)
                if self._cash < cost:
                    raise _Reply(
                        403,
                        {
                            "code": 40310000,
                            "message": f"insufficient buying power (cost {cost}, "
                            f"cash {self._cash})",
                        },
                    )
            record = OrderRecord(
                id=self._new_id(),
                client_order_id=client_order_id,
                symbol=symbol,
                side=side,
                qty=qty,
                status="accepted",
                created_at=_now(),
                due_at=time.monotonic() + self._knobs.order_fill_delay_s,
            )
            self._orders.append(record)
            logger.info("sim: order %s %s %s %s accepted", record.id, side, qty, symbol)
            return record.to_json()

    def usdc_prices(self) -> tuple[Decimal, Decimal]:
        """(buy price, sell price) of USDC in USD: the seeded mid and the spread."""
        half = self._usdc_mid * self._knobs.usdc_spread_bps / 20000
        half = half.quantize(Decimal("0.000001"), rounding=ROUND_DOWN)
        return self._usdc_mid + half, self._usdc_mid - half

    def _submit_usdc_order(self, data: dict[str, Any]) -> Any:
        """A `USDCUSD` market order (crypto: `gtc` or `ioc`): a buy by `notional` (USD) or
        `qty` (USDC), a sell by `qty`; it fills at `usdc_prices`."""
        side = data.get("side")
        qty = _decimal(data.get("qty")) if data.get("qty") is not None else None
        notional = _decimal(data.get("notional")) if data.get("notional") is not None else None
        client_order_id = data.get("client_order_id") or self._new_id()
        problems = []
        if side not in ("buy", "sell"):
            problems.append(f"side={side!r}: must be buy or sell")
        if (qty is None) == (notional is None):
            problems.append("exactly one of qty and notional is required")
        if qty is not None and qty <= 0:
            problems.append(f"qty={data.get('qty')!r}: must be > 0")
        if notional is not None and (notional <= 0 or side != "buy"):
            problems.append(f"notional={data.get('notional')!r}: a buy's USD amount > 0")
        if data.get("type") != "market":
            problems.append(f"type={data.get('type')!r}: the simulation fills market orders only")
        if data.get("time_in_force") not in ("gtc", "ioc"):
            problems.append(
                f"time_in_force={data.get('time_in_force')!r}: crypto orders take gtc or ioc"
            )
        if not isinstance(client_order_id, str) or len(client_order_id) > 128:
            problems.append("client_order_id: must be a string of at most 128 characters")
        if problems:
            raise _Reply(422, {"code": 40010001, "message": "; ".join(problems)})
        assert isinstance(side, str) and isinstance(client_order_id, str)
        with self._lock:
            if any(o.client_order_id == client_order_id for o in self._orders):
                raise _Reply(422, {"code": 40010001, "message": "client_order_id must be unique"})
            buy_price, _ = self.usdc_prices()
            if side == "sell":
                assert qty is not None
                held = self._held.get(USDC_SYMBOL, Decimal(0))
                available = self._usdc - self._usdc_locked - held
                if available < qty:
                    raise _Reply(
                        403,
                        {
                            "code": 40310000,
                            "message": f"insufficient balance for USDC (requested: {qty}, "
                            f"available: {available})",
                        },
                    )
                self._held[USDC_SYMBOL] = held + qty
            else:
                cost = notional if notional is not None else (qty or Decimal(0)) * buy_price
                if self._cash < cost:
                    raise _Reply(
                        403,
                        {
                            "code": 40310000,
                            "message": f"insufficient buying power (cost {cost}, "
                            f"cash {self._cash})",
                        },
                    )
            record = OrderRecord(
                id=self._new_id(),
                client_order_id=client_order_id,
                symbol=USDC_SYMBOL,
                side=side,
                qty=qty if qty is not None else Decimal(0),
                status="accepted",
                created_at=_now(),
                due_at=time.monotonic() + self._knobs.order_fill_delay_s,
                notional=notional,
                time_in_force=str(data.get("time_in_force")),
                fill_fraction=self._knobs.usdc_fill_fraction,
            )
            self._orders.append(record)
            logger.info(
                "sim: order %s %s %s USDCUSD accepted",
                record.id,
                side,
                f"${notional}" if notional is not None else qty,
            )
            return record.to_json()

    def _fill_usdc_order(self, order: OrderRecord) -> None:
        fraction = order.fill_fraction
        partial = fraction < 1
        with self._lock:
            buy_price, sell_price = self.usdc_prices()
            if order.side == "buy":
                price = buy_price
                if order.notional is not None:
                    spend = order.notional * fraction
                    qty = (spend / price).quantize(CRYPTO_QTY_UNIT, rounding=ROUND_DOWN)
                    cost = (
                        order.notional
                        if not partial
                        else (qty * price).quantize(USD_UNIT, rounding=ROUND_UP)
                    )
                else:
                    qty = (order.qty * fraction).quantize(CRYPTO_QTY_UNIT, rounding=ROUND_DOWN)
                    cost = (qty * price).quantize(USD_UNIT, rounding=ROUND_UP)
                self._cash -= cost
                self._usdc += qty
            else:
                price = sell_price
                qty = (order.qty * fraction).quantize(CRYPTO_QTY_UNIT, rounding=ROUND_DOWN)
                # The whole order's hold is released: what did not sell is available again.
                self._held[USDC_SYMBOL] = self._held.get(USDC_SYMBOL, Decimal(0)) - order.qty
                self._usdc -= qty
                self._cash += (qty * price).quantize(USD_UNIT, rounding=ROUND_DOWN)
            if order.notional is not None:
                order.qty = qty  # a notional order's qty is what it bought
            order.filled_qty = qty
            order.filled_avg_price = price
            order.updated_at = _now()
            if partial:
                order.status = "canceled"
                order.canceled_at = order.updated_at
            else:
                order.status = "filled"
                order.filled_at = order.updated_at
        logger.info(
            "sim: USDCUSD order %s %s: %s %s at %s",
            order.id,
            order.status,
            order.side,
            qty,
            price,
        )

    def _order_by_client_id(self, *, query: dict[str, str], **_: Any) -> Any:
        wanted = query.get("client_order_id")
        if not wanted:
            raise _Reply(422, {"code": 40010001, "message": "client_order_id is required"})
        with self._lock:
            for order in self._orders:
                if order.client_order_id == wanted:
                    return order.to_json()
        raise _Reply(404, {"code": 40410000, "message": "order not found"})

    def _get_order(self, *, item: str, **_: Any) -> Any:
        with self._lock:
            for order in self._orders:
                if order.id == item:
                    return order.to_json()
        raise _Reply(404, {"code": 40410000, "message": "order not found"})

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
        """Ours (once visible) after the history, filtered by the documented query parameters:
        `type`, `status`, `underlying_symbol`, `issuer`, `network` (equal), `after` and `before`
        (created strictly after / before that time; an entry whose time cannot be read does not
        match either). Any other parameter is ignored. No pagination, as documented."""
        now = time.monotonic()
        after = _query_time(query, "after")
        before = _query_time(query, "before")
        with self._lock:
            rows: list[Any] = list(self._tokenization_history)
            rows.extend(r.to_json() for r in self._tokenization if r.visible_at <= now)

        def wanted(row: Any) -> bool:
            for name in ("type", "status", "underlying_symbol", "issuer", "network"):
                value = query.get(name)
                if value is not None and not (isinstance(row, dict) and row.get(name) == value):
                    return False
            if after is None and before is None:
                return True
            created = _row_time(row)
            if created is None:
                return False
            return (after is None or created > after) and (before is None or created < before)

        answer = [row for row in rows if wanted(row)]
        with self._lock:
            self._rows_served[KEY_TOKENIZATION_LIST] += len(answer)
        return answer

    def _get_request(self, *, item: str, **_: Any) -> Any:
        now = time.monotonic()
        with self._lock:
            for record in self._tokenization:
                if record.id == item and record.visible_at <= now:
                    return record.to_json()
            for row in self._tokenization_history:
                if isinstance(row, dict) and row.get("tokenization_request_id") == item:
                    return row
        raise _Reply(404, {"code": 40410000, "message": "tokenization request not found"})

    # -- Alpaca: wallet ---------------------------------------------------------------------

    def _whitelists(self, **_: Any) -> Any:
        with self._lock:
            return [w.to_json() for w in self._whitelist]

    def _wallet(self, *, query: dict[str, str], **_: Any) -> Any:
        asset = query.get("asset")
        if asset != "USDC":
            raise _Reply(422, {"code": 40010001, "message": f"asset={asset!r}: unsupported"})
        return {
            "chain": "ETH",
            "address": self.world.deposit_address,
            "created_at": "2025-01-02T15:04:05Z",
        }

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
                w.address.lower() == address.lower()
                and w.status == "APPROVED"
                and w.chain.lower() in ("eth", "ethereum")
                for w in self._whitelist
            )
            if not approved:
                raise _Reply(403, {"message": f"address {address} is not an approved whitelist"})
            # A USDC withdrawal spends the USDCUSD position (never USD cash): Alpaca refuses
            # one larger than what is free of earlier pending withdrawals and sell orders.
            free = self._usdc - self._usdc_locked - self._held.get(USDC_SYMBOL, Decimal(0))
            if free < amount:
                raise _Reply(
                    422,
                    {
                        "code": 42210000,
                        "message": f"insufficient balance: USDC available {free}, "
                        f"requested {amount}",
                    },
                )
            self._usdc_locked += amount
            record = TransferRecord(
                id=self._new_id(),
                direction="OUTGOING",
                amount=amount,
                from_address=self._hot_wallet.address,
                to_address=to_checksum_address(address),
                status="PENDING",
                tx_hash=None,
                created_at=_now(),
                network_fee=self._knobs.withdrawal_network_fee_usdc,
                due_at=time.monotonic() + self._knobs.withdrawal_processing_delay_s,
            )
            self._transfers.append(record)
            logger.info("sim: withdrawal %s of %s USDC to %s", record.id, amount, address)
            return record.to_json()

    def _list_transfers(self, **_: Any) -> Any:
        """Every transfer of the account, newest first; the Broker API documents no
        `transfer_id` filter, so one is ignored like any other parameter."""
        with self._lock:
            ours = [t.to_json() for t in reversed(self._transfers)]
            answer = ours + list(self._transfer_history)
            self._rows_served[KEY_TRANSFER_LIST] += len(answer)
        return answer

    def _get_transfer(self, *, item: str, **_: Any) -> Any:
        with self._lock:
            for transfer in self._transfers:
                if transfer.id == item:
                    return transfer.to_json()
        for row in self._transfer_history:
            if isinstance(row, dict) and row.get("id") == item:
                return row
        raise _Reply(404, {"code": 40410000, "message": "transfer not found"})

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
        # A failure is logged when it starts (with its traceback) and when it ends, not at every
        # tick: a chain that stops answering would otherwise log a traceback every tick.
        failing: str | None = None
        while not self._stop.is_set():
            try:
                self._settle_once()
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                if error != failing:
                    logger.exception("sim: settlement step failed (repeats are not logged)")
                    with self._lock:
                        self._errors.append(error)
                failing = error
            else:
                if failing is not None:
                    logger.warning("sim: settlement steps succeed again after: %s", failing)
                failing = None
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
            orders = (
                [o for o in self._orders if o.status == "accepted" and o.due_at <= now]
                if self._knobs.market_open
                else []
            )
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
        for order in orders:
            self._fill_order(order)
        for iris in attest:
            self._attest(iris)

    def _fill_order(self, order: OrderRecord) -> None:
        if order.symbol == USDC_SYMBOL:
            self._fill_usdc_order(order)
            return
        with self._lock:
            price = self.price(order.symbol)
            amount = order.qty * price
            held = self._positions.get(order.symbol, Decimal(0))
            if order.side == "buy":
                self._positions[order.symbol] = held + order.qty
                self._cash -= amount
            else:
                self._positions[order.symbol] = held - order.qty
                self._held[order.symbol] = self._held.get(order.symbol, Decimal(0)) - order.qty
                self._cash += amount
            order.status = "filled"
            order.filled_qty = order.qty
            order.filled_avg_price = price
            order.filled_at = order.updated_at = _now()
        logger.info(
            "sim: order %s filled: %s %s %s at %s",
            order.id,
            order.side,
            order.qty,
            order.symbol,
            price,
        )

    def _new_id(self) -> str:
        with self._lock:
            return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def _chance(self, rate: float) -> bool:
        with self._lock:
            return bool(rate) and self._rng.random() < rate

    def _complete_mint(self, record: TokenizationRecord) -> None:
        if self._chance(self._knobs.mint_reject_rate):
            with self._lock:
                record.status = self._knobs.refusal_status
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
                record.status = self._knobs.refusal_status
            else:
                record.status = "completed"
                self._positions[record.underlying_symbol] = (
                    self._positions.get(record.underlying_symbol, Decimal(0)) + record.qty
                )
        logger.info("sim: redemption %s %s", record.id, record.status)

    def _advance_transfer(self, transfer: TransferRecord) -> None:
        knobs = self._knobs
        if transfer.direction == "INCOMING":
            with self._lock:
                transfer.status = "COMPLETE"
                self._usdc += transfer.amount  # credited as the USDCUSD position
            logger.info("sim: deposit %s of %s USDC credited", transfer.id, transfer.amount)
            return
        if transfer.status == "PENDING":
            if self._chance(knobs.withdrawal_fail_rate):
                with self._lock:
                    transfer.status = "FAILED"
                    self._usdc_locked -= transfer.amount
                logger.info("sim: withdrawal %s failed", transfer.id)
                return
            net = transfer.amount - transfer.network_fee
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
                self._usdc_locked -= transfer.amount
                self._usdc -= transfer.amount
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
                direction="INCOMING",
                amount=_amount(units, USDC_DECIMALS),
                from_address=to_checksum_address(bytes(entry["topics"][1])[12:]),
                to_address=to_checksum_address(self.world.deposit_address),
                status="PENDING",
                tx_hash="0x" + bytes(entry["transactionHash"]).hex(),
                created_at=_now(),
                network_fee=Decimal(0),
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


def _basic_credentials(header: str | None) -> tuple[str, str] | None:
    """(key, secret) from an `Authorization: Basic ...` header, or None."""
    if header is None or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    key, sep, secret = decoded.partition(":")
    return (key, secret) if sep else None


def _header(headers: dict[str, str], name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        # JSON numbers are read exactly: Alpaca (and alpaca-py) send `qty` as a number too.
        data = json.loads(body or b"{}", parse_float=Decimal)
    except ValueError:
        raise _Reply(400, {"message": "body is not JSON"}) from None
    if not isinstance(data, dict):
        raise _Reply(422, {"message": "body must be a JSON object"})
    return data


def _decimal(value: object) -> Decimal | None:
    """A decimal string or a JSON number (read exactly), as Alpaca accepts both."""
    if isinstance(value, bool):
        return None
    if isinstance(value, Decimal | int):
        value = str(value)
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
            status, text, extra = self.venue.handle(
                self.command, self.path, dict(self.headers), body
            )
        except Exception:  # the venue must answer, like a real one, with a 500
            logger.exception("sim: %s %s failed", self.command, self.path)
            status, text, extra = 500, json.dumps({"message": "internal error"}), {}
        payload = text.encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            for name, value in extra.items():
                self.send_header(name, value)
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

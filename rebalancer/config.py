"""Environment -> typed configuration.

Parsing collects every problem before failing, so an operator fixes a bad deployment in one
pass: `ConfigError` names each variable, the reason, and never echoes a secret.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TypeVar

import environ

T = TypeVar("T")

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ConfigError(Exception):
    """One or more environment variables are missing or invalid."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        lines = "\n".join(f"  {name}: {reason}" for name, reason in problems)
        super().__init__(f"invalid configuration ({len(problems)} problem(s)):\n{lines}")


@dataclass
class EnvReader:
    """Reads variables from a mapping and records every problem instead of raising at once."""

    env: Mapping[str, str]
    problems: list[tuple[str, str]] = field(default_factory=list)

    def raw(self, name: str) -> str | None:
        value = self.env.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def get(
        self,
        name: str,
        parse: Callable[[str], T],
        *,
        default: T | None = None,
        required: bool = False,
        secret: bool = False,
    ) -> T | None:
        value = self.raw(name)
        if value is None:
            if required:
                self.problems.append((name, "is required but not set"))
            return default
        try:
            return parse(value)
        except (ValueError, TypeError, ArithmeticError) as exc:
            shown = "<redacted>" if secret else repr(value)
            self.problems.append((name, f"invalid value {shown}: {exc}"))
            return default

    def fail_if_problems(self) -> None:
        if self.problems:
            raise ConfigError(self.problems)


def parse_bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected one of true/false, 1/0, yes/no, on/off")


def parse_positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError("must be a positive integer")
    return number


def parse_log_level(value: str) -> str:
    upper = value.upper()
    if upper not in LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}")
    return upper


def parse_database_url(value: str) -> dict[str, Any]:
    config = environ.Env.db_url_config(value)
    if not config.get("ENGINE"):
        raise ValueError("unsupported database URL scheme")
    return config


def sqlite_database(path: str | Path) -> dict[str, Any]:
    """The embedded default: WAL, IMMEDIATE transactions and a busy timeout (DESIGN.md)."""
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(path),
        "OPTIONS": {
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
        # A file (real worker processes must open it), unique per test run so that several
        # runs on one machine never share it.
        "TEST": {
            "NAME": str(Path(tempfile.gettempdir()) / f"rebalancer-test-{os.getpid()}.sqlite3")
        },
    }


def finish_database(config: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    if config["ENGINE"] == "django.db.backends.sqlite3":
        name = config.get("NAME") or str(base_dir / "db.sqlite3")
        return sqlite_database(name)
    config.setdefault("CONN_MAX_AGE", 0)
    return config


@dataclass(frozen=True)
class SettingsEnv:
    secret_key: str
    debug: bool
    allowed_hosts: list[str]
    database: dict[str, Any]
    log_level: str
    q_cluster: dict[str, Any]
    rebalancing: RebalancingConfig


def load_settings_env(*, base_dir: Path, env: Mapping[str, str] | None = None) -> SettingsEnv:
    reader = EnvReader(os.environ if env is None else env)
    database_url = reader.get("DATABASE_URL", parse_database_url)
    database = finish_database(
        database_url or {"ENGINE": "django.db.backends.sqlite3", "NAME": ""}, base_dir
    )
    workers = reader.get("Q_WORKERS", parse_positive_int, default=2)
    timeout_s = reader.get("Q_TIMEOUT_S", parse_positive_int, default=120)
    retry_s = reader.get("Q_RETRY_S", parse_positive_int, default=180)
    poll_s = reader.get("Q_POLL_S", float, default=0.5)
    redis_url = reader.get("Q_REDIS_URL", str)
    if timeout_s is not None and retry_s is not None and timeout_s >= retry_s:
        reader.problems.append(
            ("Q_TIMEOUT_S", f"must be less than Q_RETRY_S ({timeout_s} >= {retry_s})")
        )
    settings_env = SettingsEnv(
        secret_key=reader.get(
            "SECRET_KEY", str, default="insecure-local-only-key-change-me", secret=True
        )
        or "",
        debug=bool(reader.get("DEBUG", parse_bool, default=False)),
        allowed_hosts=reader.get(
            "ALLOWED_HOSTS",
            lambda v: [h.strip() for h in v.split(",") if h.strip()],
            default=["localhost", "127.0.0.1"],
        )
        or [],
        database=database,
        log_level=reader.get("LOG_LEVEL", parse_log_level, default="INFO") or "INFO",
        q_cluster=q_cluster_config(
            workers=workers or 2,
            timeout_s=timeout_s or 120,
            retry_s=retry_s or 180,
            poll_s=poll_s or 0.5,
            redis_url=redis_url,
        ),
        rebalancing=load_rebalancing_config(reader),
    )
    reader.fail_if_problems()
    return settings_env


def parse_decimal(value: str) -> Decimal:
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise ValueError("not a decimal number") from None
    if not number.is_finite():
        raise ValueError("must be finite")
    return number


def parse_ratio(value: str) -> Decimal:
    number = parse_decimal(value)
    if not Decimal(0) <= number <= Decimal(1):
        raise ValueError("must be between 0 and 1 inclusive")
    return number


def parse_non_negative(value: str) -> Decimal:
    number = parse_decimal(value)
    if number < 0:
        raise ValueError("must be >= 0")
    return number


SECP256K1_ORDER = int("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141", 16)
TRADING_MODES = ("paper", "live")
DEFAULT_CIRCLE_IRIS_URL = "https://iris-api.circle.com"


class Secret:
    """A value that never shows itself in a repr, str, log line or error message.

    `reveal()` is the one way to read it, so every use of a key or an RPC URL is greppable.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('<redacted>')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def _hex_body(value: str, *, length_bytes: int) -> str:
    if not value.startswith(("0x", "0X")):
        raise ValueError("must start with 0x")
    body = value[2:]
    if len(body) != 2 * length_bytes:
        raise ValueError(f"must be 0x followed by {2 * length_bytes} hex digits")
    try:
        int(body, 16)
    except ValueError:
        raise ValueError("must be hexadecimal") from None
    return body


def parse_address(value: str) -> str:
    """A 20-byte 0x address; mixed case must be a valid EIP-55 checksum. Returns it checksummed."""
    from eth_utils import is_checksum_address, to_checksum_address

    body = _hex_body(value, length_bytes=20)
    mixed_case = body != body.lower() and body != body.upper()
    if mixed_case and not is_checksum_address(value):
        raise ValueError("mixed-case address with an invalid EIP-55 checksum")
    return str(to_checksum_address("0x" + body.lower()))


def parse_bytes32(value: str) -> str:
    """A 32-byte 0x hex value (vault id), returned lower-case."""
    return "0x" + _hex_body(value, length_bytes=32).lower()


def parse_private_key(value: str) -> Secret:
    """A 0x 32-byte hex secp256k1 private key (1 <= k < n). The message never echoes it."""
    body = _hex_body(value, length_bytes=32)
    if not 1 <= int(body, 16) < SECP256K1_ORDER:
        raise ValueError("not a valid secp256k1 private key (must be 1 <= k < curve order)")
    return Secret("0x" + body.lower())


def parse_url(value: str, *, schemes: tuple[str, ...] = ("http", "https")) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(value)
    if parts.scheme not in schemes:
        raise ValueError(f"scheme must be one of {', '.join(schemes)}")
    if not parts.netloc:
        raise ValueError("must include a host")
    return value.rstrip("/")


def parse_rpc_url(value: str) -> Secret:
    """An RPC URL (http, https, ws, wss); it often embeds an API key, so it is a Secret."""
    return Secret(parse_url(value, schemes=("http", "https", "ws", "wss")))


def parse_trading_mode(value: str) -> str:
    lowered = value.lower()
    if lowered not in TRADING_MODES:
        raise ValueError(f"expected one of {', '.join(TRADING_MODES)}")
    return lowered


def parse_positive(value: str) -> Decimal:
    number = parse_decimal(value)
    if number <= 0:
        raise ValueError("must be > 0")
    return number


# Mainnet contracts (Circle's published addresses; CCTP V2 uses the same ones on every chain).
MAINNET_USDC_ETHEREUM = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
MAINNET_USDC_BASE = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
MAINNET_CCTP_TOKEN_MESSENGER = "0x28b5a0e9C621a5BadaA536219b3a228C8168cf5d"
MAINNET_CCTP_MESSAGE_TRANSMITTER = "0x81D40F21F12A8F0E3252Bccb954D722d4c464B64"


def parse_positive_seconds(value: str) -> float:
    number = float(value)
    if not number > 0 or number != number or number == float("inf"):
        raise ValueError("must be a positive number of seconds")
    return number


def parse_chaos_point(value: str) -> str:
    """`<kind>:<point>`, e.g. `mint:before:request_mint` (operator drill, see operations.chaos)."""
    kind, _, point = value.partition(":")
    if not kind or not point:
        raise ValueError("expected <kind>:<point>, e.g. mint:before:request_mint")
    return value


@dataclass(frozen=True)
class WorkerConfig:
    """How the operation workers run (spec 8 defaults: 10 s polls, 30 min timeouts).

    Environment: USDC_ETHEREUM, USDC_BASE, CCTP_TOKEN_MESSENGER, CCTP_MESSAGE_TRANSMITTER
    (mainnet defaults), REBALANCER_POLL_INTERVAL_S, REBALANCER_TX_POLL_INTERVAL_S,
    REBALANCER_MINT_TIMEOUT_S, REBALANCER_REDEMPTION_DETECTION_TIMEOUT_S,
    REBALANCER_REDEMPTION_COMPLETION_TIMEOUT_S, REBALANCER_TX_TIMEOUT_S,
    REBALANCER_USDC_STEP_TIMEOUT_S, REBALANCER_LEASE_S (default: the queue's task timeout),
    REBALANCER_MAX_ATTEMPTS, REBALANCER_BACKOFF_BASE_S, REBALANCER_BACKOFF_MAX_S,
    REBALANCER_DUE_INTERVAL_S, REBALANCER_CHAOS_KILL_AT, REBALANCER_CHAOS_DIR.
    """

    usdc_ethereum: str = MAINNET_USDC_ETHEREUM
    usdc_base: str = MAINNET_USDC_BASE
    cctp_token_messenger: str = MAINNET_CCTP_TOKEN_MESSENGER
    cctp_message_transmitter: str = MAINNET_CCTP_MESSAGE_TRANSMITTER
    poll_interval_s: float = 10.0
    tx_poll_interval_s: float = 2.0
    mint_timeout_s: float = 1800.0
    redemption_detection_timeout_s: float = 1800.0
    redemption_completion_timeout_s: float = 1800.0
    tx_timeout_s: float = 900.0
    usdc_step_timeout_s: float = 1800.0
    lease_s: float | None = None
    max_attempts: int = 10
    backoff_base_s: float = 2.0
    backoff_max_s: float = 60.0
    due_interval_s: float = 2.0
    # Operator drill: kill the worker (SIGKILL) once at this point, see operations.chaos.
    chaos_kill_at: str | None = None
    chaos_dir: str | None = None


def load_worker_config(reader: EnvReader) -> WorkerConfig:
    d = WorkerConfig()

    def seconds(name: str, default: float) -> float:
        return reader.get(name, parse_positive_seconds, default=default) or default

    return WorkerConfig(
        usdc_ethereum=reader.get("USDC_ETHEREUM", parse_address, default=d.usdc_ethereum)
        or d.usdc_ethereum,
        usdc_base=reader.get("USDC_BASE", parse_address, default=d.usdc_base) or d.usdc_base,
        cctp_token_messenger=reader.get(
            "CCTP_TOKEN_MESSENGER", parse_address, default=d.cctp_token_messenger
        )
        or d.cctp_token_messenger,
        cctp_message_transmitter=reader.get(
            "CCTP_MESSAGE_TRANSMITTER", parse_address, default=d.cctp_message_transmitter
        )
        or d.cctp_message_transmitter,
        poll_interval_s=seconds("REBALANCER_POLL_INTERVAL_S", d.poll_interval_s),
        tx_poll_interval_s=seconds("REBALANCER_TX_POLL_INTERVAL_S", d.tx_poll_interval_s),
        mint_timeout_s=seconds("REBALANCER_MINT_TIMEOUT_S", d.mint_timeout_s),
        redemption_detection_timeout_s=seconds(
            "REBALANCER_REDEMPTION_DETECTION_TIMEOUT_S", d.redemption_detection_timeout_s
        ),
        redemption_completion_timeout_s=seconds(
            "REBALANCER_REDEMPTION_COMPLETION_TIMEOUT_S", d.redemption_completion_timeout_s
        ),
        tx_timeout_s=seconds("REBALANCER_TX_TIMEOUT_S", d.tx_timeout_s),
        usdc_step_timeout_s=seconds("REBALANCER_USDC_STEP_TIMEOUT_S", d.usdc_step_timeout_s),
        lease_s=reader.get("REBALANCER_LEASE_S", parse_positive_seconds),
        max_attempts=reader.get("REBALANCER_MAX_ATTEMPTS", parse_positive_int, default=10) or 10,
        backoff_base_s=seconds("REBALANCER_BACKOFF_BASE_S", d.backoff_base_s),
        backoff_max_s=seconds("REBALANCER_BACKOFF_MAX_S", d.backoff_max_s),
        due_interval_s=seconds("REBALANCER_DUE_INTERVAL_S", d.due_interval_s),
        chaos_kill_at=reader.get("REBALANCER_CHAOS_KILL_AT", parse_chaos_point),
        chaos_dir=reader.get("REBALANCER_CHAOS_DIR", str),
    )


@dataclass(frozen=True)
class RebalancingConfig:
    """Rebalancing settings from the environment. The thresholds, minimums and caps are the
    defaults for the database settings rows, which operators edit afterwards.

    Venue fields are None when rebalancing is disabled and they are not set; when
    `enabled` is true every required one is present (checked by `load_rebalancing_config`).
    Secrets (`evm_private_key`, the RPC URLs, Alpaca credentials) are `Secret` values.
    """

    enabled: bool
    equity_target_ratio: Decimal
    equity_deviation: Decimal
    usdc_target_ratio: Decimal
    usdc_deviation: Decimal
    equity_minimum_shares: Decimal
    usdc_minimum: Decimal
    equity_cap_shares: Decimal | None
    usdc_cap: Decimal | None
    redemption_wallet: str | None = None
    market_maker_wallet: str | None = None
    ethereum_rpc_url: Secret | None = None
    base_rpc_url: Secret | None = None
    evm_private_key: Secret | None = None
    base_orderbook: str | None = None
    usdc_vault_id: str | None = None
    alpaca_api_key: Secret | None = None
    alpaca_api_secret: Secret | None = None
    alpaca_account_id: str | None = None
    alpaca_trading_mode: str = "paper"
    alpaca_base_url: str | None = None
    circle_iris_url: str = DEFAULT_CIRCLE_IRIS_URL
    # Workers (issue #5): token contracts, step timeouts, poll intervals, leases, attempts.
    workers: WorkerConfig = field(default_factory=lambda: WorkerConfig())


def load_rebalancing_config(reader: EnvReader) -> RebalancingConfig:
    enabled = bool(reader.get("REBALANCING_ENABLED", parse_bool, default=False))

    def required(name: str, parse: Callable[[str], T], *, secret: bool = False) -> T | None:
        return reader.get(name, parse, required=enabled, secret=secret)

    # EVM_PRIVATE_KEY is the name; ETHEREUM_PRIVATE_KEY (the trigger-era name) is accepted too.
    key_name = (
        "ETHEREUM_PRIVATE_KEY"
        if reader.raw("EVM_PRIVATE_KEY") is None and reader.raw("ETHEREUM_PRIVATE_KEY")
        else "EVM_PRIVATE_KEY"
    )
    return RebalancingConfig(
        enabled=enabled,
        equity_target_ratio=reader.get("EQUITY_TARGET_RATIO", parse_ratio, default=Decimal("0.5")),
        equity_deviation=reader.get("EQUITY_DEVIATION", parse_non_negative, default=Decimal("0.2")),
        usdc_target_ratio=reader.get("USDC_TARGET_RATIO", parse_ratio, default=Decimal("0.5")),
        usdc_deviation=reader.get("USDC_DEVIATION", parse_non_negative, default=Decimal("0.3")),
        equity_minimum_shares=reader.get(
            "EQUITY_MINIMUM_SHARES", parse_non_negative, default=Decimal("1")
        ),
        usdc_minimum=reader.get("USDC_MINIMUM", parse_non_negative, default=Decimal("51")),
        equity_cap_shares=reader.get("EQUITY_CAP_SHARES", parse_positive),
        usdc_cap=reader.get("USDC_CAP", parse_positive),
        redemption_wallet=required("REDEMPTION_WALLET", parse_address),
        market_maker_wallet=required("MARKET_MAKER_WALLET", parse_address),
        ethereum_rpc_url=required("ETHEREUM_RPC_URL", parse_rpc_url, secret=True),
        base_rpc_url=required("BASE_RPC_URL", parse_rpc_url, secret=True),
        evm_private_key=required(key_name, parse_private_key, secret=True),
        base_orderbook=required("BASE_ORDERBOOK", parse_address),
        usdc_vault_id=required("USDC_VAULT_ID", parse_bytes32),
        alpaca_api_key=required("ALPACA_API_KEY", Secret, secret=True),
        alpaca_api_secret=required("ALPACA_API_SECRET", Secret, secret=True),
        alpaca_account_id=required("ALPACA_ACCOUNT_ID", str),
        alpaca_trading_mode=reader.get("ALPACA_TRADING_MODE", parse_trading_mode, default="paper")
        or "paper",
        alpaca_base_url=reader.get("ALPACA_BASE_URL", parse_url),
        circle_iris_url=reader.get("CIRCLE_IRIS_URL", parse_url, default=DEFAULT_CIRCLE_IRIS_URL)
        or DEFAULT_CIRCLE_IRIS_URL,
        workers=load_worker_config(reader),
    )


def q_cluster_config(
    *, workers: int, timeout_s: int, retry_s: int, poll_s: float, redis_url: str | None
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "name": "rebalancer",
        "workers": workers,
        "timeout": timeout_s,
        "retry": retry_s,
        "max_attempts": 5,
        "poll": poll_s,
        "save_limit": 1000,
        "ack_failures": True,
        "catch_up": False,
        "label": "Task queue",
    }
    if redis_url:
        config["redis"] = redis_url
    else:
        config["orm"] = "default"
    return config

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


@dataclass(frozen=True)
class RebalancingConfig:
    """Rebalancing settings from the environment. The thresholds, minimums and caps are the
    defaults for the database settings rows, which operators edit afterwards."""

    enabled: bool
    equity_target_ratio: Decimal
    equity_deviation: Decimal
    usdc_target_ratio: Decimal
    usdc_deviation: Decimal
    equity_minimum_shares: Decimal
    usdc_minimum: Decimal
    equity_cap_shares: Decimal | None
    usdc_cap: Decimal | None


def load_rebalancing_config(reader: EnvReader) -> RebalancingConfig:
    return RebalancingConfig(
        enabled=bool(reader.get("REBALANCING_ENABLED", parse_bool, default=False)),
        equity_target_ratio=reader.get("EQUITY_TARGET_RATIO", parse_ratio, default=Decimal("0.5")),
        equity_deviation=reader.get("EQUITY_DEVIATION", parse_non_negative, default=Decimal("0.2")),
        usdc_target_ratio=reader.get("USDC_TARGET_RATIO", parse_ratio, default=Decimal("0.5")),
        usdc_deviation=reader.get("USDC_DEVIATION", parse_non_negative, default=Decimal("0.3")),
        equity_minimum_shares=reader.get(
            "EQUITY_MINIMUM_SHARES", parse_non_negative, default=Decimal("1")
        ),
        usdc_minimum=reader.get("USDC_MINIMUM", parse_non_negative, default=Decimal("51")),
        equity_cap_shares=reader.get("EQUITY_CAP_SHARES", parse_non_negative),
        usdc_cap=reader.get("USDC_CAP", parse_non_negative),
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

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
from typing import Any, TypeVar, overload

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
    """Reads variables from a mapping and records every problem instead of raising at once.

    The values are cast by django-environ (`environ.Env.parse_value`: integers, booleans,
    lists, and `Env.db_url_config` for DATABASE_URL); the parsers below add the checks it
    does not make (bounds, unknown booleans, schemes, ports). Two of its behaviours are
    avoided on purpose: its float cast drops every character that is not a digit, comma or
    dot ("1e12" reads as 112.0), so seconds are cast by `strict_float`; and `Env.get_value`
    reads a value starting with "$" as the name of another variable, so the raw value is
    read from the mapping (a secret may start with "$").
    """

    env: Mapping[str, str]
    problems: list[tuple[str, str]] = field(default_factory=list)

    def raw(self, name: str) -> str | None:
        value = self.env.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    @overload
    def get(
        self,
        name: str,
        parse: Callable[[str], T],
        *,
        default: T,
        required: bool = False,
        secret: bool = False,
    ) -> T: ...

    @overload
    def get(
        self,
        name: str,
        parse: Callable[[str], T],
        *,
        default: None = None,
        required: bool = False,
        secret: bool = False,
    ) -> T | None: ...

    def get(
        self,
        name: str,
        parse: Callable[[str], T],
        *,
        default: T | None = None,
        required: bool = False,
        secret: bool = False,
    ) -> T | None:
        """The parsed value; `default` when unset, or (recording the problem) when invalid."""
        value = self.raw(name)
        if value is None:
            if required:
                self.problems.append((name, "is required but not set"))
            return default
        try:
            return parse(value)
        except (ValueError, TypeError, ArithmeticError) as exc:
            shown = "<redacted>" if secret else repr(value)
            reason = str(exc)
            if secret:  # a parser's message may quote the value (or a part of it)
                reason = redact(reason, secret_parts(value))
            self.problems.append((name, f"invalid value {shown}: {reason}"))
            return default

    def fail_if_problems(self) -> None:
        if self.problems:
            raise ConfigError(self.problems)


# --- Parsers: django-environ casts the value, these add the bounds and the refusals. -------

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def parse_bool(value: str) -> bool:
    """django-environ's bool cast, refusing what it would silently read as false."""
    if value.lower() not in _TRUE + _FALSE:
        raise ValueError("expected one of true/false, 1/0, yes/no, on/off")
    return bool(environ.Env.parse_value(value, bool))


def parse_list(value: str) -> list[str]:
    """Comma-separated, items stripped, empty items dropped."""
    items = environ.Env.parse_value(value, [str])
    return [item.strip() for item in items if item.strip()]


def strict_float(value: str) -> float:
    """A finite float (not django-environ's float cast, which reads "1e12" as 112.0)."""
    number = float(value)
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError("must be a finite number")
    return number


def bounded(
    cast: Callable[[str], Any],
    *,
    minimum: Any,
    above_minimum: bool = False,
    maximum: Any = None,
    why: str = "",
    unit: str = "",
    describe: str = "",
) -> Callable[[str], Any]:
    """A number cast by `cast` that is >= `minimum` (> with `above_minimum`) and at most
    `maximum` (`why` says what a larger one would break; `unit` follows the bound)."""

    def parse(value: str) -> Any:
        try:
            number = cast(value)
        except (ValueError, ArithmeticError) as exc:
            raise ValueError(describe or str(exc)) from None
        if number < minimum or (above_minimum and number == minimum):
            raise ValueError(describe or f"must be {'>' if above_minimum else '>='} {minimum}")
        if maximum is not None and number > maximum:
            because = f" ({why})" if why else ""
            raise ValueError(f"must be at most {maximum:,}{unit}{because}")
        return number

    return parse


def choice(options: tuple[str, ...], normalise: Callable[[str], str]) -> Callable[[str], str]:
    def parse(value: str) -> str:
        normalised = normalise(value)
        if normalised not in options:
            raise ValueError(f"expected one of {', '.join(options)}")
        return normalised

    return parse


def _env_int(value: str) -> int:
    return int(environ.Env.parse_value(value, int))


def bounded_int(maximum: int, why: str) -> Callable[[str], int]:
    """A positive integer of at most `maximum` (`why` says what a larger one would break)."""
    return bounded(
        _env_int, minimum=1, maximum=maximum, why=why, describe="must be a positive integer"
    )


parse_positive_int: Callable[[str], int] = bounded(
    _env_int, minimum=1, describe="must be a positive integer"
)

# Every duration read from the environment is at most this: a cool-down, timeout or interval
# longer than a week is a typo (1e12 would overflow the date arithmetic at the first failure).
MAX_DURATION_S = 7 * 24 * 3600
_DURATION_WHY = "a week; longer is a typo, and would overflow the date arithmetic later"


def seconds_parser(
    maximum: float = MAX_DURATION_S, why: str = _DURATION_WHY, *, zero: bool = False
) -> Callable[[str], float]:
    """A finite number of seconds, > 0 (>= 0 with `zero`), at most `maximum`."""
    return bounded(
        strict_float,
        minimum=0.0,
        above_minimum=not zero,
        maximum=maximum,
        why=why,
        unit=" seconds",
        describe="must be a number of seconds >= 0"
        if zero
        else "must be a positive number of seconds",
    )


# A positive whole number of seconds, at most MAX_DURATION_S (django-q's timeouts).
parse_duration_int: Callable[[str], int] = bounded(
    _env_int,
    minimum=1,
    maximum=MAX_DURATION_S,
    why=_DURATION_WHY,
    unit=" seconds",
    describe="must be a positive integer",
)
parse_positive_seconds = seconds_parser()
parse_non_negative_seconds = seconds_parser(zero=True)
parse_skew_seconds = seconds_parser(3600, "a clock that far off is the problem")
parse_poll_seconds = seconds_parser(60, "workers would sit idle")
parse_webhook_timeout = seconds_parser(60, "the alert check runs every minute")


def check_url_authority(parts: Any) -> None:
    """The host is present and the port, when given, is a number in 1..65535 (urllib only
    checks the port when it is read, so `redis://h:notaport/0` would pass until first use)."""
    if not parts.hostname:
        raise ValueError("must include a host")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("the port must be a number between 1 and 65535") from None
    if port is not None and not 1 <= port <= 65535:
        raise ValueError("the port must be a number between 1 and 65535")


parse_log_level = choice(LOG_LEVELS, str.upper)


DATABASE_SCHEMES = ("sqlite", "postgres", "postgresql", "pgsql")


def parse_database_url(value: str) -> dict[str, Any]:
    """sqlite:////absolute/path.sqlite3 or postgres://user:password@host:port/name. Never an
    in-memory SQLite database (every process would see its own, lost at exit)."""
    scheme = value.partition("://")[0].lower() if "://" in value else ""
    if scheme not in DATABASE_SCHEMES:
        raise ValueError(f"the scheme must be one of {', '.join(DATABASE_SCHEMES)}://")
    if scheme != "sqlite":
        from urllib.parse import urlsplit

        check_url_authority(urlsplit(value))
    config = environ.Env.db_url_config(value)
    name = str(config.get("NAME") or "")
    if config.get("ENGINE") == "django.db.backends.sqlite3":
        if name in ("", ":memory:") or "mode=memory" in value:
            raise ValueError(
                "names no database file (an in-memory SQLite database is lost at exit and "
                "not shared between processes): use sqlite:////absolute/path.sqlite3, or "
                "leave DATABASE_URL unset for db.sqlite3"
            )
    elif not name:
        raise ValueError("names no database (postgres://user:password@host:port/name)")
    return config


def parse_redis_url(value: str) -> str:
    """redis://[:password@]host[:port][/db], rediss:// (TLS) or unix:///path."""
    from urllib.parse import urlsplit

    parts = urlsplit(value)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError("the scheme must be redis://, rediss:// or unix://")
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError("must include the socket path")
        return value
    check_url_authority(parts)
    database = parts.path.strip("/")
    if database and not (database.isdigit() and int(database) <= 1_000_000):
        raise ValueError(f"the database number must be a whole number, not {database!r}")
    return value


# Before issue 9 this key was used whenever SECRET_KEY was unset; it is public (in the
# repository), so it is refused wherever a known key would matter.
DEVELOPMENT_SECRET_KEY = "insecure-local-only-key-change-me"
SECRET_KEY_MIN_LENGTH = 32
_KEY_HELP = "python -c 'import secrets; print(secrets.token_urlsafe(50))'"


def check_secret_key(key: str, *, debug: bool, rebalancing_enabled: bool) -> str | None:
    """Why this SECRET_KEY is refused, or None. django-q signs the pickled task payloads with
    it: with a known key whoever can write to the broker runs code in the workers."""
    if debug and not rebalancing_enabled:
        return None
    when = "REBALANCING_ENABLED=true" if rebalancing_enabled else "DEBUG=false"
    if key == DEVELOPMENT_SECRET_KEY or key.startswith("django-insecure"):
        return (
            f"the built-in development key is refused with {when}: django-q signs the pickled "
            "task payloads with SECRET_KEY, so with a known key whoever can write to the "
            f"broker runs code in the workers; set a random one ({_KEY_HELP})"
        )
    if len(key) < SECRET_KEY_MIN_LENGTH:
        return (
            f"must be at least {SECRET_KEY_MIN_LENGTH} characters with {when} (it signs the "
            f"queue's task payloads and the sessions); set a random one ({_KEY_HELP})"
        )
    return None


def local_secret_key(base_dir: Path) -> str:
    """The key of this checkout when SECRET_KEY is unset: random, created once in
    var/secret_key (mode 0600) and shared by every process started from here (web, workers,
    tests). Several hosts must set the same SECRET_KEY instead."""
    import secrets

    path = base_dir / "var" / "secret_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".secret_key.{os.getpid()}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(50))
        try:
            os.link(temporary, path)  # atomic: the first process to get here wins
        except FileExistsError:
            pass
        finally:
            temporary.unlink()
    return path.read_text().strip()


def secret_parts(value: str) -> list[str]:
    """The value and the parts of it that are secret on their own (a URL's password, its
    path and query, which often carry an API key), longest first."""
    from urllib.parse import unquote, urlsplit

    parts = {value, value.strip(), value.rstrip("/")}
    try:
        url = urlsplit(value)
    except ValueError:
        url = None
    if url is not None and url.scheme and url.netloc:
        if url.password:
            parts |= {url.password, unquote(url.password)}
        for piece in (url.path, url.query):
            if len(piece.strip("/")) >= 8:
                parts |= {piece, piece.strip("/"), unquote(piece.strip("/"))}
    return sorted((p for p in parts if len(p) >= 4), key=len, reverse=True)


def redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "<redacted>")
    return text


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


def finish_database(
    config: dict[str, Any], base_dir: Path, *, conn_max_age: int = 600
) -> dict[str, Any]:
    """`conn_max_age`: seconds a request thread keeps its connection (0: one per request,
    which costs about 3 ms each); health checks make a dropped connection reopen instead of
    failing the next request."""
    if config["ENGINE"] == "django.db.backends.sqlite3":
        name = config.get("NAME") or str(base_dir / "db.sqlite3")
        config = sqlite_database(name)
    config.setdefault("CONN_MAX_AGE", conn_max_age)
    config.setdefault("CONN_HEALTH_CHECKS", True)
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
    # How far ahead of our clock an observation (fill, balance poll) may be stamped.
    observation_max_skew_s: float = 60.0
    alerts: AlertConfig = field(default_factory=lambda: AlertConfig())
    service: ServiceConfig = field(default_factory=lambda: ServiceConfig())
    # How far beyond the absolute net position a hedge placement may go, in shares.
    hedge_placement_tolerance_shares: Decimal = Decimal(1)
    # A fill's block may be at most this many blocks above the chain head last seen.
    fill_block_margin: int = 300
    # Django's own security settings, by their Django names (`load_security_settings`).
    security: dict[str, Any] = field(default_factory=dict)
    # /metrics answers loopback callers without a token only when this is true.
    metrics_trust_loopback: bool = False
    # Console login throttling (django-axes): failures before a lock-out, and its length.
    login_failure_limit: int = 5
    login_cooloff_s: float = 900.0


def load_settings_env(
    *,
    base_dir: Path,
    env: Mapping[str, str] | None = None,
    parse_candidate: Callable[[str], Any] | None = None,
) -> SettingsEnv:
    reader = EnvReader(os.environ if env is None else env)
    database_url = reader.get("DATABASE_URL", parse_database_url, secret=True)
    database = finish_database(
        database_url or {"ENGINE": "django.db.backends.sqlite3", "NAME": ""},
        base_dir,
        conn_max_age=reader.get(
            "CONN_MAX_AGE",
            bounded(
                _env_int,
                minimum=0,
                maximum=MAX_DURATION_S,
                why=_DURATION_WHY,
                describe="must be a whole number of seconds >= 0 (0: a connection per request)",
            ),
            default=600,
        ),
    )
    workers = reader.get(
        "Q_WORKERS", bounded_int(256, "one process each; more is a typo"), default=2
    )
    timeout_s = reader.get("Q_TIMEOUT_S", parse_duration_int, default=120)
    retry_s = reader.get("Q_RETRY_S", parse_duration_int, default=180)
    poll_s = reader.get("Q_POLL_S", parse_poll_seconds, default=0.5)
    redis_url = reader.get("Q_REDIS_URL", parse_redis_url, secret=True)
    if timeout_s >= retry_s:
        reader.problems.append(
            ("Q_TIMEOUT_S", f"must be less than Q_RETRY_S ({timeout_s} >= {retry_s})")
        )
    debug = reader.get("DEBUG", parse_bool, default=False)
    rebalancing = load_rebalancing_config(reader, parse_candidate=parse_candidate)
    secret_key = reader.get("SECRET_KEY", str, secret=True)
    if secret_key is None:
        try:
            secret_key = local_secret_key(base_dir)
        except OSError as exc:
            reader.problems.append(
                ("SECRET_KEY", f"is not set, and var/secret_key cannot be created ({exc})")
            )
            secret_key = ""
    else:
        refused = check_secret_key(secret_key, debug=debug, rebalancing_enabled=rebalancing.enabled)
        if refused:
            reader.problems.append(("SECRET_KEY", refused))
    settings_env = SettingsEnv(
        secret_key=secret_key,
        debug=debug,
        allowed_hosts=reader.get(
            "ALLOWED_HOSTS",
            parse_list,
            default=["localhost", "127.0.0.1"],
        ),
        database=database,
        log_level=reader.get("LOG_LEVEL", parse_log_level, default="INFO"),
        q_cluster=q_cluster_config(
            workers=workers,
            timeout_s=timeout_s,
            retry_s=retry_s,
            poll_s=poll_s,
            redis_url=redis_url,
        ),
        rebalancing=rebalancing,
        observation_max_skew_s=reader.get(
            "OBSERVATION_MAX_SKEW_S", parse_skew_seconds, default=60.0
        ),
        alerts=load_alert_config(reader),
        service=load_service_config(reader, task_timeout_s=timeout_s),
        hedge_placement_tolerance_shares=reader.get(
            "HEDGE_PLACEMENT_TOLERANCE_SHARES",
            setting_parser("equity_minimum_shares"),  # >= 0, 18 decimals, bounded
            default=Decimal(1),
        ),
        fill_block_margin=reader.get(
            "FILL_BLOCK_MARGIN",
            bounded(
                _env_int,
                minimum=0,
                maximum=1_000_000,
                why="a fill that far beyond the chain head is not a fill",
                describe="must be a whole number of blocks >= 0",
            ),
            default=300,
        ),
        security=load_security_settings(reader),
        metrics_trust_loopback=reader.get("METRICS_TRUST_LOOPBACK", parse_bool, default=False),
        login_failure_limit=reader.get(
            "LOGIN_FAILURE_LIMIT", bounded_int(100, "no throttle at all"), default=5
        ),
        login_cooloff_s=reader.get("LOGIN_COOLOFF_S", parse_positive_seconds, default=900.0),
    )
    reader.fail_if_problems()
    return settings_env


MAX_HSTS_SECONDS = 2 * 365 * 24 * 3600
parse_hsts_seconds: Callable[[str], int] = bounded(
    _env_int, minimum=0, maximum=MAX_HSTS_SECONDS, why="two years"
)


def parse_origins(value: str) -> list[str]:
    """Comma-separated origins with their scheme (https://console.example.com[:port])."""
    from urllib.parse import urlsplit

    origins = parse_list(value)
    for origin in origins:
        parts = urlsplit(origin)
        if parts.scheme not in ("https", "http") or not parts.netloc:
            raise ValueError(f"{origin!r} is not an origin like https://console.example.com")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"{origin!r} must be scheme://host[:port] only (no path)")
        check_url_authority(urlsplit(origin.replace("*.", "wildcard.", 1)))
    return [origin.rstrip("/") for origin in origins]


def parse_proxy_ssl_header(value: str) -> tuple[str, str]:
    """`HTTP_X_FORWARDED_PROTO,https`: the request header (as Django's META names it) the
    TLS proxy sets, and the value that means https. Set it only behind a proxy that always
    sets (or strips) that header."""
    header, _, expected = (part.strip() for part in value.partition(","))
    if not header.startswith("HTTP_") or not expected:
        raise ValueError("expected HTTP_<HEADER>,<value>, e.g. HTTP_X_FORWARDED_PROTO,https")
    if not all(ch.isupper() or ch.isdigit() or ch == "_" for ch in header):
        raise ValueError(f"{header!r}: upper case letters, digits and _ only (HTTP_X_...)")
    return (header, expected)


# Django's security settings read from the environment under their own names, with Django's
# defaults (`manage.py check --deploy` lists what production needs; docs/deploy.md).
SECURITY_SETTINGS: dict[str, tuple[Callable[[str], Any], Any]] = {
    "SECURE_SSL_REDIRECT": (parse_bool, False),
    "SECURE_HSTS_SECONDS": (parse_hsts_seconds, 0),
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": (parse_bool, False),
    "SECURE_HSTS_PRELOAD": (parse_bool, False),
    "SESSION_COOKIE_SECURE": (parse_bool, False),
    "CSRF_COOKIE_SECURE": (parse_bool, False),
    "CSRF_TRUSTED_ORIGINS": (parse_origins, []),
    "SECURE_PROXY_SSL_HEADER": (parse_proxy_ssl_header, None),
    "DATA_UPLOAD_MAX_MEMORY_SIZE": (
        bounded_int(100 * 1024 * 1024, "a request body buffered in memory"),
        2_621_440,
    ),
}


def load_security_settings(reader: EnvReader) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for name, (parse, default) in SECURITY_SETTINGS.items():
        value = reader.get(name, parse)
        settings[name] = default if value is None else value
    return settings


@dataclass(frozen=True)
class ServiceConfig:
    """How `runrebalancer` runs its periodic work and judges its health.

    Environment: SNAPSHOT_INTERVAL_S (venue balance polls, default 60), MARKET_CLOCK_CACHE_S
    (how long Alpaca's clock is trusted, 60), HEARTBEAT_INTERVAL_S (the cluster heartbeat task,
    10), HEALTH_SNAPSHOT_MAX_AGE_S (default 3 polls), HEALTH_HEARTBEAT_MAX_AGE_S (default 6
    heartbeats), SHUTDOWN_GRACE_S (how long running steps may finish at SIGTERM; default the
    queue's task timeout).
    """

    snapshot_interval_s: float = 60.0
    market_clock_cache_s: float = 60.0
    heartbeat_interval_s: float = 10.0
    health_snapshot_max_age_s: float = 180.0
    health_heartbeat_max_age_s: float = 60.0
    shutdown_grace_s: float = 120.0


def load_service_config(reader: EnvReader, *, task_timeout_s: float = 120.0) -> ServiceConfig:
    def seconds(name: str, default: float) -> float:
        return reader.get(name, parse_positive_seconds, default=default)

    interval = seconds("SNAPSHOT_INTERVAL_S", 60.0)
    heartbeat = seconds("HEARTBEAT_INTERVAL_S", 10.0)
    return ServiceConfig(
        snapshot_interval_s=interval,
        market_clock_cache_s=seconds("MARKET_CLOCK_CACHE_S", 60.0),
        heartbeat_interval_s=heartbeat,
        health_snapshot_max_age_s=seconds("HEALTH_SNAPSHOT_MAX_AGE_S", 3 * interval),
        health_heartbeat_max_age_s=seconds("HEALTH_HEARTBEAT_MAX_AGE_S", 6 * heartbeat),
        shutdown_grace_s=seconds("SHUTDOWN_GRACE_S", float(task_timeout_s)),
    )


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


parse_non_negative: Callable[[str], Decimal] = bounded(parse_decimal, minimum=Decimal(0))
parse_positive: Callable[[str], Decimal] = bounded(
    parse_decimal, minimum=Decimal(0), above_minimum=True
)


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
    if not all(ch in "0123456789abcdefABCDEF" for ch in body):  # int() takes "_" and spaces
        raise ValueError("must be hexadecimal")
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
    check_url_authority(parts)
    return value.rstrip("/")


def parse_rpc_url(value: str) -> Secret:
    """An RPC URL (http, https, ws, wss); it often embeds an API key, so it is a Secret."""
    return Secret(parse_url(value, schemes=("http", "https", "ws", "wss")))


# REBALANCING_MODE (issue 24): off (no venue configured or read), monitor (venues read, fills
# ingested, the trigger runs and records `RebalanceProposed`, no venue write) or on.
REBALANCING_MODES = ("off", "monitor", "on")


def parse_rebalancing_mode(value: str) -> str:
    lowered = value.strip().lower()
    if lowered not in REBALANCING_MODES:
        raise ValueError(f"expected one of {', '.join(REBALANCING_MODES)}")
    return lowered


def rebalancing_mode_read(reader: EnvReader) -> str:
    """REBALANCING_MODE, else the boolean it replaces (REBALANCING_ENABLED true -> on, false ->
    off: existing deployments keep their behaviour), else off. With both set, the mode wins."""
    if reader.raw("REBALANCING_MODE") is not None:
        return reader.get("REBALANCING_MODE", parse_rebalancing_mode, default="off") or "off"
    enabled = bool(reader.get("REBALANCING_ENABLED", parse_bool, default=False))
    return "on" if enabled else "off"


parse_trading_mode = choice(TRADING_MODES, str.lower)


# The settings row's bounds (inventory.domain.values: at most 1e15, 18 decimals for shares
# and ratios, 6 for USDC). Repeated here: this module imports no app.
MAX_AMOUNT = Decimal(10) ** 15
_SETTING_RULES: dict[str, tuple[str, int]] = {
    "equity_target_ratio": ("ratio", 18),
    "equity_deviation": ("non_negative", 18),
    "usdc_target_ratio": ("ratio", 18),
    "usdc_deviation": ("non_negative", 18),
    "equity_minimum_shares": ("non_negative", 18),
    "usdc_minimum": ("non_negative", 6),
    "equity_cap_shares": ("positive", 18),
    "usdc_cap": ("positive", 6),
}


def setting_parser(setting: str) -> Callable[[str], Decimal]:
    """The settings row's rule for `setting` (the environment gives its default), so a value
    the row would refuse, or one beyond the column's bounds, is refused at start."""
    kind, decimals = _SETTING_RULES[setting]
    base = {"ratio": parse_ratio, "non_negative": parse_non_negative, "positive": parse_positive}

    def parse(value: str) -> Decimal:
        number = base[kind](value)
        if abs(number) > MAX_AMOUNT:
            raise ValueError(f"must be at most {MAX_AMOUNT:,}")
        exponent = number.as_tuple().exponent
        assert isinstance(exponent, int)
        if exponent < -decimals and number != number.quantize(Decimal(1).scaleb(-decimals)):
            raise ValueError(f"must have at most {decimals} decimal places")
        return number

    return parse


# Mainnet contracts (Circle's published addresses; CCTP V2 uses the same ones on every chain).
MAINNET_USDC_ETHEREUM = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
MAINNET_USDC_BASE = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
MAINNET_CCTP_TOKEN_MESSENGER = "0x28b5a0e9C621a5BadaA536219b3a228C8168cf5d"
MAINNET_CCTP_MESSAGE_TRANSMITTER = "0x81D40F21F12A8F0E3252Bccb954D722d4c464B64"


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
    REBALANCER_TX_REPLACE_AFTER_S (a signed tx pending that long is replaced with bumped fees),
    REBALANCER_USDC_STEP_TIMEOUT_S, REBALANCER_LEASE_S (default: the queue's task timeout),
    REBALANCER_MAX_ATTEMPTS, REBALANCER_BACKOFF_BASE_S, REBALANCER_BACKOFF_MAX_S,
    REBALANCER_DUE_INTERVAL_S, REBALANCER_CHAOS_KILL_AT, REBALANCER_CHAOS_DIR.

    Failures do not loop: after a pool's operation fails, that pool cools down for
    REBALANCER_COOLDOWN_BASE_S doubled per consecutive failure (at most
    REBALANCER_COOLDOWN_MAX_S); after REBALANCER_BREAKER_FAILURES failures in a row its
    circuit breaker opens and it is not rebalanced until an operator resumes it.
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
    tx_replace_after_s: float = 120.0
    usdc_step_timeout_s: float = 1800.0
    lease_s: float | None = None
    max_attempts: int = 10
    backoff_base_s: float = 2.0
    backoff_max_s: float = 60.0
    due_interval_s: float = 2.0
    cooldown_base_s: float = 60.0
    cooldown_max_s: float = 3600.0
    breaker_failures: int = 5
    # Operator drill: kill the worker (SIGKILL) once at this point, see operations.chaos.
    chaos_kill_at: str | None = None
    chaos_dir: str | None = None
    # ETH_USD_AGGREGATOR (issue 24): a Chainlink-style ETH/USD feed on Base (`latestRoundData`)
    # that values each transaction's native fee in USD when it is recorded; unset: not valued.
    eth_usd_aggregator: str | None = None


def load_worker_config(reader: EnvReader) -> WorkerConfig:
    d = WorkerConfig()

    def seconds(name: str, default: float) -> float:
        return reader.get(name, parse_positive_seconds, default=default)

    def non_negative_seconds(name: str, default: float) -> float:
        return reader.get(name, parse_non_negative_seconds, default=default)

    return WorkerConfig(
        eth_usd_aggregator=reader.get("ETH_USD_AGGREGATOR", parse_address),
        usdc_ethereum=reader.get("USDC_ETHEREUM", parse_address, default=d.usdc_ethereum),
        usdc_base=reader.get("USDC_BASE", parse_address, default=d.usdc_base) or d.usdc_base,
        cctp_token_messenger=reader.get(
            "CCTP_TOKEN_MESSENGER", parse_address, default=d.cctp_token_messenger
        ),
        cctp_message_transmitter=reader.get(
            "CCTP_MESSAGE_TRANSMITTER", parse_address, default=d.cctp_message_transmitter
        ),
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
        tx_replace_after_s=seconds("REBALANCER_TX_REPLACE_AFTER_S", d.tx_replace_after_s),
        usdc_step_timeout_s=seconds("REBALANCER_USDC_STEP_TIMEOUT_S", d.usdc_step_timeout_s),
        lease_s=reader.get("REBALANCER_LEASE_S", parse_positive_seconds),
        max_attempts=reader.get(
            "REBALANCER_MAX_ATTEMPTS", bounded_int(1000, "retries that never end"), default=10
        ),
        backoff_base_s=seconds("REBALANCER_BACKOFF_BASE_S", d.backoff_base_s),
        backoff_max_s=seconds("REBALANCER_BACKOFF_MAX_S", d.backoff_max_s),
        due_interval_s=seconds("REBALANCER_DUE_INTERVAL_S", d.due_interval_s),
        cooldown_base_s=non_negative_seconds("REBALANCER_COOLDOWN_BASE_S", d.cooldown_base_s),
        cooldown_max_s=non_negative_seconds("REBALANCER_COOLDOWN_MAX_S", d.cooldown_max_s),
        breaker_failures=reader.get(
            "REBALANCER_BREAKER_FAILURES",
            bounded_int(1000, "a breaker that never opens"),
            default=d.breaker_failures,
        ),
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
    # Who owns the vaults (spec 15.6): None, our wallet on the order book; an address, a
    # shared `RaindexInventory` we operate with its OPERATOR_ROLE (writes to it, reads from
    # the order book under its address as owner).
    raindex_inventory: str | None = None
    usdc_vault_id: str | None = None
    alpaca_api_key: Secret | None = None
    alpaca_api_secret: Secret | None = None
    alpaca_account_id: str | None = None
    alpaca_trading_mode: str = "paper"
    alpaca_base_url: str | None = None
    circle_iris_url: str = DEFAULT_CIRCLE_IRIS_URL
    # USD kept at Alpaca: an Alpaca-to-Base USDC move never plans it away (spec 15.5).
    offchain_cash_reserve: Decimal = Decimal(0)
    # Workers (issue #5): token contracts, step timeouts, poll intervals, leases, attempts.
    workers: WorkerConfig = field(default_factory=lambda: WorkerConfig())
    # REBALANCING_MODE=monitor: venues are configured and read (`enabled` is true) but
    # nothing is written to them; the trigger records proposals instead of operations.
    monitor_only: bool = False
    # The cost gate (issue 24): an operation starts only when its estimated cost is at most
    # this many basis points of the amount's value (None: not gated); the daily volume cap
    # of each pool (USDC, and shares per equity pool; None: no cap).
    max_cost_bps: Decimal | None = None
    usdc_daily_cap: Decimal | None = None
    equity_daily_cap_shares: Decimal | None = None
    # The live challenger (issue 25): candidate settings evaluated in shadow on every event
    # (REBALANCING_CHALLENGERS), as parsed by the `parse_candidate` given at load.
    challengers: tuple[Any, ...] = ()

    @property
    def mode(self) -> str:
        """off, monitor or on (REBALANCING_MODE)."""
        if not self.enabled:
            return "off"
        return "monitor" if self.monitor_only else "on"

    @property
    def writes(self) -> bool:
        """Operations may write to the venues (REBALANCING_MODE=on)."""
        return self.enabled and not self.monitor_only


# REBALANCING_CHALLENGERS (issue 25): `NAME:key=value,...` candidates separated by ";".
MAX_CHALLENGERS = 8
MAX_CHALLENGER_CHARS = 2000


def challengers_parser(parse_candidate: Callable[[str], Any] | None) -> Callable[[str], tuple]:
    """REBALANCING_CHALLENGERS: django-environ reads the `;`-separated list; each item is one
    candidate, checked by `parse_candidate` (the domain's parser, handed in by the settings so
    this module imports no app; without it only the shape is checked and the text is kept).
    At most MAX_CHALLENGERS, names unique."""

    def parse(value: str) -> tuple[Any, ...]:
        if len(value) > MAX_CHALLENGER_CHARS:
            raise ValueError(f"must be at most {MAX_CHALLENGER_CHARS} characters")
        items = [str(item).strip() for item in environ.Env.parse_value(value, str).split(";")]
        items = [item for item in items if item]
        if len(items) > MAX_CHALLENGERS:
            raise ValueError(f"at most {MAX_CHALLENGERS} challengers ({len(items)} given)")
        found: list[Any] = []
        names: set[str] = set()
        for number, item in enumerate(items, start=1):
            name, colon, _body = item.partition(":")
            if not colon:
                raise ValueError(f"challenger {number} {item!r}: expected NAME:key=value,...")
            if parse_candidate is not None:
                try:
                    candidate = parse_candidate(item)
                except Exception as exc:  # noqa: BLE001 - the domain's InvalidValue
                    raise ValueError(f"challenger {number} ({name.strip()}): {exc}") from None
                name = candidate.name
            else:
                candidate = item
            if name.strip() in names:
                raise ValueError(f"challenger {number}: the name {name.strip()!r} is given twice")
            names.add(name.strip())
            found.append(candidate)
        return tuple(found)

    return parse


def load_rebalancing_config(
    reader: EnvReader, *, parse_candidate: Callable[[str], Any] | None = None
) -> RebalancingConfig:
    mode = rebalancing_mode_read(reader)
    enabled = mode != "off"

    def required(name: str, parse: Callable[[str], T], *, secret: bool = False) -> T | None:
        return reader.get(name, parse, required=enabled, secret=secret)

    # EVM_PRIVATE_KEY is the name; ETHEREUM_PRIVATE_KEY (the trigger-era name) is accepted too.
    key_name = (
        "ETHEREUM_PRIVATE_KEY"
        if reader.raw("EVM_PRIVATE_KEY") is None and reader.raw("ETHEREUM_PRIVATE_KEY")
        else "EVM_PRIVATE_KEY"
    )
    config = RebalancingConfig(
        enabled=enabled,
        equity_target_ratio=reader.get(
            "EQUITY_TARGET_RATIO", setting_parser("equity_target_ratio"), default=Decimal("0.5")
        ),
        equity_deviation=reader.get(
            "EQUITY_DEVIATION", setting_parser("equity_deviation"), default=Decimal("0.2")
        ),
        usdc_target_ratio=reader.get(
            "USDC_TARGET_RATIO", setting_parser("usdc_target_ratio"), default=Decimal("0.5")
        ),
        usdc_deviation=reader.get(
            "USDC_DEVIATION", setting_parser("usdc_deviation"), default=Decimal("0.3")
        ),
        equity_minimum_shares=reader.get(
            "EQUITY_MINIMUM_SHARES", setting_parser("equity_minimum_shares"), default=Decimal("1")
        ),
        usdc_minimum=reader.get(
            "USDC_MINIMUM", setting_parser("usdc_minimum"), default=Decimal("51")
        ),
        equity_cap_shares=reader.get("EQUITY_CAP_SHARES", setting_parser("equity_cap_shares")),
        usdc_cap=reader.get("USDC_CAP", setting_parser("usdc_cap")),
        redemption_wallet=required("REDEMPTION_WALLET", parse_address),
        market_maker_wallet=required("MARKET_MAKER_WALLET", parse_address),
        ethereum_rpc_url=required("ETHEREUM_RPC_URL", parse_rpc_url, secret=True),
        base_rpc_url=required("BASE_RPC_URL", parse_rpc_url, secret=True),
        evm_private_key=required(key_name, parse_private_key, secret=True),
        base_orderbook=required("BASE_ORDERBOOK", parse_address),
        raindex_inventory=reader.get("RAINDEX_INVENTORY", parse_address),
        usdc_vault_id=required("USDC_VAULT_ID", parse_bytes32),
        alpaca_api_key=required("ALPACA_API_KEY", Secret, secret=True),
        alpaca_api_secret=required("ALPACA_API_SECRET", Secret, secret=True),
        alpaca_account_id=required("ALPACA_ACCOUNT_ID", str),
        alpaca_trading_mode=reader.get("ALPACA_TRADING_MODE", parse_trading_mode, default="paper"),
        alpaca_base_url=reader.get("ALPACA_BASE_URL", parse_url),
        circle_iris_url=reader.get("CIRCLE_IRIS_URL", parse_url, default=DEFAULT_CIRCLE_IRIS_URL),
        offchain_cash_reserve=reader.get(
            "OFFCHAIN_CASH_RESERVE", setting_parser("usdc_minimum"), default=Decimal(0)
        ),
        workers=load_worker_config(reader),
        monitor_only=mode == "monitor",
        max_cost_bps=reader.get("REBALANCING_MAX_COST_BPS", parse_bounded_amount),
        usdc_daily_cap=reader.get("USDC_DAILY_CAP", parse_bounded_amount),
        equity_daily_cap_shares=reader.get("EQUITY_DAILY_CAP_SHARES", parse_bounded_amount),
        challengers=reader.get(
            "REBALANCING_CHALLENGERS", challengers_parser(parse_candidate), default=()
        ),
    )
    signer_check(reader, key_name=key_name, config=config)
    return config


def signer_check(reader: EnvReader, *, key_name: str, config: RebalancingConfig) -> None:
    """The key signs for MARKET_MAKER_WALLET: every mint is sent to that wallet and every
    transaction is signed with that key, so another key would move money from a wallet the
    inventory does not count (the key itself is never echoed, only its address)."""
    if config.evm_private_key is None or config.market_maker_wallet is None:
        return
    from eth_account import Account

    address = Account.from_key(config.evm_private_key.reveal()).address
    if address.lower() != config.market_maker_wallet.lower():
        reader.problems.append(
            (
                key_name,
                f"its address {address} is not MARKET_MAKER_WALLET "
                f"{config.market_maker_wallet}: the signing key must be the market maker "
                "wallet's",
            )
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


@dataclass(frozen=True)
class AlertConfig:
    """When the console raises an alert, and where it posts it (`console.alerts`).

    `webhook_url` (ALERT_WEBHOOK_URL, a secret: it carries the channel's token) receives
    Slack-compatible JSON once per condition, then every `repeat_s` while it holds.
    """

    webhook_url: Secret | None = None
    # https only unless allow_http; public addresses only unless allow_private (loopback,
    # private, link-local); one deadline for the whole call (ALERT_WEBHOOK_TIMEOUT_S).
    webhook_allow_http: bool = False
    webhook_allow_private: bool = False
    webhook_timeout_s: float = 10.0
    repeat_s: float = 3600.0
    poll_stale_s: float = 600.0
    drift_tolerance: Decimal = Decimal("0")
    gas_minimum_eth: Decimal = Decimal("0.005")
    expected_s: dict[str, float] = field(
        default_factory=lambda: {
            "mint": 3600.0,
            "redemption": 3600.0,
            "usdc_alpaca_to_base": 7200.0,
            "usdc_base_to_alpaca": 7200.0,
        }
    )


# >= 0 and at most MAX_AMOUNT (1e999999 is finite, but overflows once scaled to wei).
parse_bounded_amount: Callable[[str], Decimal] = bounded(
    parse_decimal, minimum=Decimal(0), maximum=MAX_AMOUNT
)


def load_alert_config(reader: EnvReader) -> AlertConfig:
    defaults = AlertConfig()
    expected = dict(defaults.expected_s)
    for kind in expected:
        value = reader.get(f"ALERT_EXPECTED_{kind.upper()}_S", parse_positive_seconds)
        if value is not None:
            expected[kind] = value
    allow_http = reader.get("ALERT_WEBHOOK_ALLOW_HTTP", parse_bool, default=False)

    def parse_webhook_url(value: str) -> Secret:
        if not allow_http and value.lower().startswith("http://"):
            raise ValueError("must be https (http only with ALERT_WEBHOOK_ALLOW_HTTP=true)")
        return Secret(parse_url(value, schemes=("https", "http") if allow_http else ("https",)))

    webhook_url = reader.get("ALERT_WEBHOOK_URL", parse_webhook_url, secret=True)
    return AlertConfig(
        webhook_url=webhook_url,
        webhook_allow_http=allow_http,
        webhook_allow_private=reader.get("ALERT_WEBHOOK_ALLOW_PRIVATE", parse_bool, default=False),
        webhook_timeout_s=reader.get(
            "ALERT_WEBHOOK_TIMEOUT_S", parse_webhook_timeout, default=defaults.webhook_timeout_s
        ),
        repeat_s=reader.get("ALERT_REPEAT_S", parse_positive_seconds, default=defaults.repeat_s),
        poll_stale_s=reader.get(
            "ALERT_POLL_STALE_S", parse_positive_seconds, default=defaults.poll_stale_s
        ),
        drift_tolerance=reader.get(
            "ALERT_DRIFT_TOLERANCE", parse_bounded_amount, default=defaults.drift_tolerance
        ),
        gas_minimum_eth=reader.get(
            "ALERT_GAS_MINIMUM_ETH", parse_bounded_amount, default=defaults.gas_minimum_eth
        )
        or defaults.gas_minimum_eth,
        expected_s=expected,
    )

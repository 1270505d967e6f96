"""Rebalancing configuration from the environment (seed plan Task 8, spec 9.1 and 13)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from conf.env import (
    ConfigError,
    EnvReader,
    RebalancingConfig,
    Secret,
    load_rebalancing_config,
    load_settings_env,
)

PRIVATE_KEY = "0x" + "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
ETH_RPC = "https://eth.example.invalid/v2/rpc-key-eth-123"
BASE_RPC = "wss://base.example.invalid/v2/rpc-key-base-456"
REDEMPTION_WALLET = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
MARKET_MAKER_WALLET = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23"
ORDERBOOK = "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB"
VAULT_ID = "0x" + "ab" * 32

ALL_REQUIRED = {
    "REBALANCING_ENABLED": "true",
    "REDEMPTION_WALLET": REDEMPTION_WALLET,
    "MARKET_MAKER_WALLET": MARKET_MAKER_WALLET,
    "ETHEREUM_RPC_URL": ETH_RPC,
    "BASE_RPC_URL": BASE_RPC,
    "EVM_PRIVATE_KEY": PRIVATE_KEY,
    "BASE_ORDERBOOK": ORDERBOOK,
    "USDC_VAULT_ID": VAULT_ID,
    "ALPACA_API_KEY": "alpaca-key-id",
    "ALPACA_API_SECRET": "alpaca-very-secret",
    "ALPACA_ACCOUNT_ID": "acct-123",
}
SECRET_TEXTS = [PRIVATE_KEY, PRIVATE_KEY[2:], ETH_RPC, BASE_RPC, "alpaca-very-secret"]


def load(env: dict[str, str]) -> RebalancingConfig:
    reader = EnvReader(env)
    config = load_rebalancing_config(reader)
    reader.fail_if_problems()
    return config


def problems_of(env: dict[str, str]) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        load(env)
    return dict(info.value.problems)


def test_rebalancing_disabled_by_default():
    config = load({})
    assert config.enabled is False
    assert config.redemption_wallet is None
    assert config.evm_private_key is None


def test_from_env_with_all_required_fields_succeeds():
    config = load(ALL_REQUIRED)
    assert config.enabled is True
    assert (
        config.equity_target_ratio,
        config.equity_deviation,
        config.usdc_target_ratio,
        config.usdc_deviation,
    ) == (Decimal("0.5"), Decimal("0.2"), Decimal("0.5"), Decimal("0.3"))
    assert config.redemption_wallet == REDEMPTION_WALLET
    assert config.market_maker_wallet == MARKET_MAKER_WALLET
    assert config.base_orderbook == ORDERBOOK
    assert config.usdc_vault_id == VAULT_ID
    assert config.evm_private_key is not None
    assert config.evm_private_key.reveal() == PRIVATE_KEY
    assert config.ethereum_rpc_url is not None
    assert config.ethereum_rpc_url.reveal() == ETH_RPC
    assert config.base_rpc_url is not None
    assert config.base_rpc_url.reveal() == BASE_RPC
    assert config.alpaca_account_id == "acct-123"
    assert config.alpaca_trading_mode == "paper"
    assert config.alpaca_base_url is None
    assert config.circle_iris_url == "https://iris-api.circle.com"


def test_rebalancing_uses_default_minimums_and_no_caps():
    config = load(ALL_REQUIRED)
    assert config.usdc_minimum == Decimal("51")
    assert config.equity_minimum_shares == Decimal("1")
    assert config.equity_cap_shares is None
    assert config.usdc_cap is None


def test_from_env_with_custom_thresholds():
    config = load(
        ALL_REQUIRED
        | {
            "EQUITY_TARGET_RATIO": "0.6",
            "EQUITY_DEVIATION": "0.1",
            "USDC_TARGET_RATIO": "0.4",
            "USDC_DEVIATION": "0.15",
            "USDC_MINIMUM": "75.5",
            "EQUITY_CAP_SHARES": "10",
            "USDC_CAP": "1000",
            "ALPACA_TRADING_MODE": "LIVE",
            "ALPACA_BASE_URL": "http://127.0.0.1:8765/",
            "CIRCLE_IRIS_URL": "http://127.0.0.1:8766",
        }
    )
    assert (
        config.equity_target_ratio,
        config.equity_deviation,
        config.usdc_target_ratio,
        config.usdc_deviation,
    ) == (Decimal("0.6"), Decimal("0.1"), Decimal("0.4"), Decimal("0.15"))
    assert config.usdc_minimum == Decimal("75.5")
    assert config.equity_cap_shares == Decimal("10")
    assert config.usdc_cap == Decimal("1000")
    assert config.alpaca_trading_mode == "live"
    assert config.alpaca_base_url == "http://127.0.0.1:8765"
    assert config.circle_iris_url == "http://127.0.0.1:8766"


@pytest.mark.parametrize(
    "missing",
    [
        "REDEMPTION_WALLET",
        "MARKET_MAKER_WALLET",
        "ETHEREUM_RPC_URL",
        "BASE_RPC_URL",
        "EVM_PRIVATE_KEY",
        "BASE_ORDERBOOK",
        "USDC_VAULT_ID",
        "ALPACA_API_KEY",
        "ALPACA_API_SECRET",
        "ALPACA_ACCOUNT_ID",
    ],
)
def test_from_env_missing_required_field_fails_when_enabled(missing):
    env = {k: v for k, v in ALL_REQUIRED.items() if k != missing}
    assert problems_of(env) == {missing: "is required but not set"}


def test_rebalancing_missing_fields_are_all_reported_at_once():
    problems = problems_of({"REBALANCING_ENABLED": "true"})
    assert set(problems) == set(ALL_REQUIRED) - {"REBALANCING_ENABLED"}


def test_required_fields_are_not_required_when_disabled():
    assert load({"REBALANCING_ENABLED": "false"}).enabled is False


def test_legacy_ethereum_private_key_name_is_accepted():
    env = {k: v for k, v in ALL_REQUIRED.items() if k != "EVM_PRIVATE_KEY"}
    config = load(env | {"ETHEREUM_PRIVATE_KEY": PRIVATE_KEY})
    assert config.evm_private_key == Secret(PRIVATE_KEY)


def test_lowercase_address_is_accepted_and_checksummed():
    config = load(ALL_REQUIRED | {"REDEMPTION_WALLET": REDEMPTION_WALLET.lower()})
    assert config.redemption_wallet == REDEMPTION_WALLET


@pytest.mark.parametrize(
    ("name", "value", "reason_part"),
    [
        ("REDEMPTION_WALLET", "0x1234", "40 hex digits"),
        ("REDEMPTION_WALLET", "5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "must start with 0x"),
        ("MARKET_MAKER_WALLET", "0xzzAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "hexadecimal"),
        # One letter's case flipped: a broken EIP-55 checksum.
        ("BASE_ORDERBOOK", "0xDbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB", "checksum"),
        ("USDC_VAULT_ID", "0xabcd", "64 hex digits"),
        ("ETHEREUM_RPC_URL", "ftp://eth.example.invalid", "scheme"),
        ("BASE_RPC_URL", "https://", "host"),
        ("ALPACA_TRADING_MODE", "yolo", "paper, live"),
        ("USDC_CAP", "0", "> 0"),
        ("EQUITY_TARGET_RATIO", "1.5", "between 0 and 1"),
        ("USDC_DEVIATION", "-0.1", ">= 0"),
    ],
)
def test_from_env_invalid_format_fails(name, value, reason_part):
    problems = problems_of(ALL_REQUIRED | {name: value})
    assert list(problems) == [name]
    assert reason_part in problems[name]


@pytest.mark.parametrize(
    "key",
    [
        "0x1234",
        PRIVATE_KEY[2:],
        "0x" + "g" * 64,
        "0x" + "00" * 32,  # zero is not a key
        "0x" + "ff" * 32,  # above the secp256k1 curve order
    ],
)
def test_from_env_invalid_private_key_format_fails(key):
    problems = problems_of(ALL_REQUIRED | {"EVM_PRIVATE_KEY": key})
    assert list(problems) == ["EVM_PRIVATE_KEY"]
    assert key not in problems["EVM_PRIVATE_KEY"]
    assert "<redacted>" in problems["EVM_PRIVATE_KEY"]


def test_invalid_values_are_reported_even_when_disabled():
    problems = problems_of({"REDEMPTION_WALLET": "0x12"})
    assert list(problems) == ["REDEMPTION_WALLET"]


def test_secrets_never_appear_in_repr_or_str():
    config = load(ALL_REQUIRED)
    for text in (repr(config), str(config), f"{config.evm_private_key}", repr(config.base_rpc_url)):
        for secret in SECRET_TEXTS:
            assert secret not in text


def test_secrets_never_appear_in_config_error_messages():
    env = ALL_REQUIRED | {
        "EVM_PRIVATE_KEY": PRIVATE_KEY + "00",
        "ETHEREUM_RPC_URL": "ftp://user:rpc-key-eth-123@eth.example.invalid",
        "BASE_RPC_URL": "notaurl-rpc-key-base-456",
        "REDEMPTION_WALLET": "0x12",
    }
    with pytest.raises(ConfigError) as info:
        load(env)
    message = str(info.value)
    assert set(dict(info.value.problems)) == {
        "EVM_PRIVATE_KEY",
        "ETHEREUM_RPC_URL",
        "BASE_RPC_URL",
        "REDEMPTION_WALLET",
    }
    for secret in ("rpc-key-eth-123", "rpc-key-base-456", PRIVATE_KEY[2:]):
        assert secret not in message


def test_settings_env_carries_the_rebalancing_config(tmp_path: Path):
    settings_env = load_settings_env(base_dir=tmp_path, env=ALL_REQUIRED)
    assert settings_env.rebalancing.enabled is True
    assert settings_env.rebalancing.market_maker_wallet == MARKET_MAKER_WALLET


def test_settings_env_reports_rebalancing_and_other_problems_together(tmp_path: Path):
    with pytest.raises(ConfigError) as info:
        load_settings_env(
            base_dir=tmp_path, env={"REBALANCING_ENABLED": "true", "Q_WORKERS": "zero"}
        )
    names = {name for name, _ in info.value.problems}
    assert "Q_WORKERS" in names
    assert "EVM_PRIVATE_KEY" in names


def test_a_private_key_whose_address_is_not_the_market_maker_wallet_is_refused():
    other_wallet = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
    problems = problems_of(ALL_REQUIRED | {"MARKET_MAKER_WALLET": other_wallet})
    assert list(problems) == ["EVM_PRIVATE_KEY"]
    message = problems["EVM_PRIVATE_KEY"]
    assert "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23" in message  # the key's address
    assert other_wallet in message
    assert PRIVATE_KEY not in message and PRIVATE_KEY[2:] not in message


def test_the_key_check_follows_the_legacy_key_name():
    env = {k: v for k, v in ALL_REQUIRED.items() if k != "EVM_PRIVATE_KEY"}
    env |= {"ETHEREUM_PRIVATE_KEY": PRIVATE_KEY}
    env["MARKET_MAKER_WALLET"] = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
    assert list(problems_of(env)) == ["ETHEREUM_PRIVATE_KEY"]


def test_cooldown_and_breaker_settings_are_read_and_checked():
    workers = load(
        ALL_REQUIRED
        | {
            "REBALANCER_COOLDOWN_BASE_S": "0",
            "REBALANCER_COOLDOWN_MAX_S": "900",
            "REBALANCER_BREAKER_FAILURES": "3",
        }
    ).workers
    assert (workers.cooldown_base_s, workers.cooldown_max_s, workers.breaker_failures) == (
        0.0,
        900.0,
        3,
    )
    problems = problems_of(
        ALL_REQUIRED | {"REBALANCER_COOLDOWN_BASE_S": "-1", "REBALANCER_BREAKER_FAILURES": "0"}
    )
    assert sorted(problems) == ["REBALANCER_BREAKER_FAILURES", "REBALANCER_COOLDOWN_BASE_S"]


def settings_problems(tmp_path: Path, env: dict[str, str]) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        load_settings_env(base_dir=tmp_path, env=env)
    return dict(info.value.problems)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Q_REDIS_URL", "redis://h:notaport/0"),
        ("Q_REDIS_URL", "redis://h:70000/0"),
        ("Q_REDIS_URL", "redis://h:0/0"),
        ("Q_REDIS_URL", "redis://h:6379/zero"),
        ("DATABASE_URL", "postgres://u:p@db:notaport/name"),
        ("ALERT_WEBHOOK_URL", "https://hooks.example.invalid:99999/x"),
        ("CIRCLE_IRIS_URL", "https://iris.example.invalid:port"),
    ],
)
def test_urls_with_a_bad_port_or_database_are_refused_at_start(tmp_path: Path, name, value):
    problems = settings_problems(tmp_path, {name: value})
    assert list(problems) == [name]
    assert "port" in problems[name] or "database number" in problems[name]


@pytest.mark.parametrize(
    "name",
    [
        "REBALANCER_COOLDOWN_BASE_S",
        "REBALANCER_COOLDOWN_MAX_S",
        "REBALANCER_MINT_TIMEOUT_S",
        "REBALANCER_BACKOFF_MAX_S",
        "ALERT_REPEAT_S",
        "SNAPSHOT_INTERVAL_S",
        "Q_RETRY_S",
    ],
)
def test_durations_beyond_a_week_are_refused_at_start(tmp_path: Path, name):
    value = "1e12" if name != "Q_RETRY_S" else "1000000000000"
    problems = settings_problems(tmp_path, {name: value})
    assert list(problems) == [name]
    assert "at most 604,800 seconds" in problems[name]


def test_counts_are_bounded_and_every_bad_variable_is_reported(tmp_path: Path):
    problems = settings_problems(
        tmp_path,
        {
            "Q_WORKERS": "100000",
            "REBALANCER_MAX_ATTEMPTS": "9" * 30,
            "REBALANCER_BREAKER_FAILURES": "1000001",
            "REBALANCER_COOLDOWN_BASE_S": "1e12",
            "Q_REDIS_URL": "redis://h:notaport/0",
        },
    )
    assert sorted(problems) == [
        "Q_REDIS_URL",
        "Q_WORKERS",
        "REBALANCER_BREAKER_FAILURES",
        "REBALANCER_COOLDOWN_BASE_S",
        "REBALANCER_MAX_ATTEMPTS",
    ]


def test_sane_bounded_values_still_load(tmp_path: Path):
    env = load_settings_env(
        base_dir=tmp_path,
        env={
            "Q_REDIS_URL": "redis://cache:6379/2",
            "REBALANCER_COOLDOWN_BASE_S": "604800",
            "REBALANCER_COOLDOWN_MAX_S": "604800",
            "Q_WORKERS": "8",
        },
    )
    assert env.q_cluster["redis"] == "redis://cache:6379/2"
    assert env.rebalancing.workers.cooldown_base_s == 604800.0


def test_the_hedge_placement_tolerance_is_read_and_checked(tmp_path: Path):
    env = load_settings_env(base_dir=tmp_path, env={"HEDGE_PLACEMENT_TOLERANCE_SHARES": "0.25"})
    assert env.hedge_placement_tolerance_shares == Decimal("0.25")
    assert load_settings_env(base_dir=tmp_path, env={}).hedge_placement_tolerance_shares == 1
    assert list(settings_problems(tmp_path, {"HEDGE_PLACEMENT_TOLERANCE_SHARES": "-1"})) == [
        "HEDGE_PLACEMENT_TOLERANCE_SHARES"
    ]


def test_the_fill_block_margin_is_read_and_checked(tmp_path: Path):
    assert (
        load_settings_env(base_dir=tmp_path, env={"FILL_BLOCK_MARGIN": "0"}).fill_block_margin == 0
    )
    assert load_settings_env(base_dir=tmp_path, env={}).fill_block_margin == 300
    for bad in ("-1", "1e12", "ten", "2000000"):
        assert list(settings_problems(tmp_path, {"FILL_BLOCK_MARGIN": bad})) == [
            "FILL_BLOCK_MARGIN"
        ], bad


def test_database_connections_persist_for_conn_max_age(tmp_path: Path):
    default = load_settings_env(base_dir=tmp_path, env={}).database
    assert default["CONN_MAX_AGE"] == 600 and default["CONN_HEALTH_CHECKS"] is True
    postgres = load_settings_env(
        base_dir=tmp_path,
        env={"DATABASE_URL": "postgres://u:p@127.0.0.1:5432/x", "CONN_MAX_AGE": "0"},
    ).database
    assert postgres["CONN_MAX_AGE"] == 0 and postgres["CONN_HEALTH_CHECKS"] is True
    for bad in ("-1", "ten", "1e12", str(8 * 24 * 3600)):
        assert list(settings_problems(tmp_path, {"CONN_MAX_AGE": bad})) == ["CONN_MAX_AGE"], bad


def test_security_settings_are_read_under_their_django_names(tmp_path: Path):
    env = load_settings_env(
        base_dir=tmp_path,
        env={
            "SECURE_HSTS_SECONDS": "31536000",
            "SECURE_SSL_REDIRECT": "true",
            "CSRF_TRUSTED_ORIGINS": "https://console.example.com, https://*.example.org:8443",
            "SECURE_PROXY_SSL_HEADER": "HTTP_X_FORWARDED_PROTO,https",
        },
    )
    assert env.security["SECURE_HSTS_SECONDS"] == 31536000
    assert env.security["SECURE_SSL_REDIRECT"] is True
    assert env.security["SESSION_COOKIE_SECURE"] is False
    assert env.security["CSRF_TRUSTED_ORIGINS"] == [
        "https://console.example.com",
        "https://*.example.org:8443",
    ]
    assert env.security["SECURE_PROXY_SSL_HEADER"] == ("HTTP_X_FORWARDED_PROTO", "https")


def test_bad_security_settings_are_all_reported_at_start(tmp_path: Path):
    problems = settings_problems(
        tmp_path,
        {
            "SECURE_HSTS_SECONDS": "-1",
            "SESSION_COOKIE_SECURE": "maybe",
            "CSRF_TRUSTED_ORIGINS": "console.example.com",
            "SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto: https",
            "DATA_UPLOAD_MAX_MEMORY_SIZE": "1e12",
            "LOGIN_FAILURE_LIMIT": "0",
            "METRICS_TRUST_LOOPBACK": "sometimes",
        },
    )
    assert sorted(problems) == [
        "CSRF_TRUSTED_ORIGINS",
        "DATA_UPLOAD_MAX_MEMORY_SIZE",
        "LOGIN_FAILURE_LIMIT",
        "METRICS_TRUST_LOOPBACK",
        "SECURE_HSTS_SECONDS",
        "SECURE_PROXY_SSL_HEADER",
        "SESSION_COOKIE_SECURE",
    ]
    assert "https://console.example.com" in problems["CSRF_TRUSTED_ORIGINS"]


def test_alert_amounts_are_bounded_at_start(tmp_path: Path):
    problems = settings_problems(
        tmp_path, {"ALERT_GAS_MINIMUM_ETH": "1e999999", "ALERT_DRIFT_TOLERANCE": "1e16"}
    )
    assert sorted(problems) == ["ALERT_DRIFT_TOLERANCE", "ALERT_GAS_MINIMUM_ETH"]


@pytest.mark.parametrize("value", ["ok", "y", "nope", "2x"])
def test_booleans_django_environ_would_guess_are_refused(tmp_path: Path, value: str):
    # django-environ's bool cast reads "ok"/"y" as true and any other text as false.
    problems = settings_problems(tmp_path, {"DEBUG": value, "METRICS_TRUST_LOOPBACK": value})
    assert sorted(problems) == ["DEBUG", "METRICS_TRUST_LOOPBACK"]
    assert repr(value) in problems["DEBUG"] and "true/false" in problems["DEBUG"]


def test_values_are_read_as_written_not_as_django_environ_proxies(tmp_path: Path):
    # django-environ's Env.get_value reads "$NAME" as another variable's value.
    key = "$" + "k" * 40
    env = load_settings_env(base_dir=tmp_path, env={"SECRET_KEY": key, "k": "other"})
    assert env.secret_key == key
    assert load_settings_env(base_dir=tmp_path, env={"Q_POLL_S": "1.5"}).q_cluster["poll"] == 1.5
    assert list(settings_problems(tmp_path, {"Q_POLL_S": "1,5"})) == ["Q_POLL_S"]


# --- REBALANCING_MODE (issue 24) ---------------------------------------------------------------

VENUES = {k: v for k, v in ALL_REQUIRED.items() if k != "REBALANCING_ENABLED"}


def test_rebalancing_mode_off_by_default():
    config = load({})
    assert (config.mode, config.enabled, config.writes) == ("off", False, False)


@pytest.mark.parametrize(
    ("mode", "enabled", "writes"),
    [("on", True, True), ("monitor", True, False), ("MONITOR", True, False)],
)
def test_rebalancing_mode_monitor_and_on_read_the_venues(mode, enabled, writes):
    config = load(VENUES | {"REBALANCING_MODE": mode})
    assert config.mode == mode.lower()
    assert (config.enabled, config.writes) == (enabled, writes)
    assert config.base_orderbook == ORDERBOOK


def test_rebalancing_mode_monitor_requires_the_venue_settings():
    # monitor reads the venues: every venue variable is required, as with on.
    problems = problems_of({"REBALANCING_MODE": "monitor"})
    assert set(problems) == set(VENUES)


def test_rebalancing_mode_refuses_an_unknown_value_naming_it():
    problems = problems_of({"REBALANCING_MODE": "yes"})
    assert "REBALANCING_MODE" in problems
    assert "off, monitor, on" in problems["REBALANCING_MODE"]


@pytest.mark.parametrize(("legacy", "mode"), [("true", "on"), ("false", "off")])
def test_rebalancing_enabled_is_migrated_to_a_mode(legacy, mode):
    # Existing deployments keep their behaviour: the boolean maps to on / off.
    env = (VENUES if legacy == "true" else {}) | {"REBALANCING_ENABLED": legacy}
    assert load(env).mode == mode


def test_rebalancing_mode_wins_over_the_legacy_boolean():
    config = load(VENUES | {"REBALANCING_ENABLED": "true", "REBALANCING_MODE": "monitor"})
    assert config.mode == "monitor"
    assert load({"REBALANCING_ENABLED": "true", "REBALANCING_MODE": "off"}).mode == "off"

"""Issue 9, configuration and secrets: the development key is refused where a known key runs
code in the workers; every variable is validated together; no secret is ever echoed (start-up
errors, diffsettings, the debug page, logs)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import RequestFactory
from django.views.debug import technical_500_response

from conf.env import (
    DEVELOPMENT_SECRET_KEY,
    ConfigError,
    Secret,
    load_settings_env,
)
from tests.service.support import REBALANCING_ENV, ROOT

DB_PASSWORD = "db-pass-Zq81x"
REDIS_PASSWORD = "redis-pass-Yw42v"
RPC_KEY = "rpc-key-Xk93mN"
API_SECRET = "alpaca-secret-Vb57"
GOOD_KEY = "k" * 10 + "-a-long-random-production-key-0123456789"
SECRETS = [DB_PASSWORD, REDIS_PASSWORD, RPC_KEY, API_SECRET, GOOD_KEY]

SECRET_ENV = REBALANCING_ENV | {
    "SECRET_KEY": GOOD_KEY,
    "DATABASE_URL": f"postgres://app:{DB_PASSWORD}@127.0.0.1:1/rebalancer",
    "Q_REDIS_URL": f"redis://:{REDIS_PASSWORD}@127.0.0.1:1/0",
    "ETHEREUM_RPC_URL": f"https://eth.example.invalid/v2/{RPC_KEY}",
    "BASE_RPC_URL": f"https://base.example.invalid/v2/{RPC_KEY}",
    "ALPACA_API_SECRET": API_SECRET,
}


def problems(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        load_settings_env(base_dir=tmp_path, env=env)
    return dict(caught.value.problems)


# --- the secret key ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "env",
    [
        {"SECRET_KEY": DEVELOPMENT_SECRET_KEY},
        {"SECRET_KEY": DEVELOPMENT_SECRET_KEY, "DEBUG": "false"},
        {"SECRET_KEY": DEVELOPMENT_SECRET_KEY, "DEBUG": "true"} | REBALANCING_ENV,
        {"SECRET_KEY": "django-insecure-abc" + "x" * 40},
    ],
)
def test_the_development_key_is_refused_and_the_error_says_why(env, tmp_path):
    reason = problems(env, tmp_path)["SECRET_KEY"]
    assert "django-q signs the pickled task payloads" in reason
    assert "runs code in the workers" in reason
    assert DEVELOPMENT_SECRET_KEY not in reason


def test_a_short_key_is_refused_in_production(tmp_path):
    assert "at least 32 characters" in problems({"SECRET_KEY": "short"}, tmp_path)["SECRET_KEY"]


def test_the_development_key_is_allowed_for_local_debugging_without_rebalancing(tmp_path):
    env = {"SECRET_KEY": DEVELOPMENT_SECRET_KEY, "DEBUG": "true"}
    assert load_settings_env(base_dir=tmp_path, env=env).secret_key == DEVELOPMENT_SECRET_KEY


def test_an_unset_key_is_random_per_checkout_and_shared_by_its_processes(tmp_path):
    first = load_settings_env(base_dir=tmp_path, env={}).secret_key
    again = load_settings_env(base_dir=tmp_path, env={}).secret_key
    other = load_settings_env(base_dir=tmp_path / "other", env={}).secret_key
    assert first == again != other
    assert len(first) >= 50 and first != DEVELOPMENT_SECRET_KEY
    mode = stat.S_IMODE(os.stat(tmp_path / "var" / "secret_key").st_mode)
    assert mode == 0o600


# --- every variable, together -----------------------------------------------------------------


def test_every_bad_variable_is_reported_in_one_message_without_its_secret(tmp_path):
    env = {
        "SECRET_KEY": DEVELOPMENT_SECRET_KEY,
        "DATABASE_URL": f"mysql://app:{DB_PASSWORD}@db/rebalancer",
        "Q_POLL_S": "nan",
        "Q_REDIS_URL": f"http://:{REDIS_PASSWORD}@cache:6379",
        "ETHEREUM_RPC_URL": f"ftp://eth.example.invalid/{RPC_KEY}",
        "USDC_MINIMUM": "1e30",
        "EQUITY_CAP_SHARES": "0." + "1" * 30,
        "USDC_CAP": "10.1234567",
        "EQUITY_TARGET_RATIO": "1.5",
    }
    with pytest.raises(ConfigError) as caught:
        load_settings_env(base_dir=tmp_path, env=env)
    found = dict(caught.value.problems)
    assert set(env) - {"EQUITY_TARGET_RATIO"} <= set(found) and "EQUITY_TARGET_RATIO" in found
    assert "6 decimal places" in found["USDC_CAP"] and "at most" in found["USDC_MINIMUM"]
    message = str(caught.value)
    for secret in (DB_PASSWORD, REDIS_PASSWORD, RPC_KEY):
        assert secret not in message


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "sqlite://:memory:"])
def test_an_in_memory_sqlite_database_is_refused(url, tmp_path):
    assert "in-memory" in problems({"DATABASE_URL": url}, tmp_path)["DATABASE_URL"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATABASE_URL", "foo://u@h/db"),
        ("DATABASE_URL", "postgres://u@h"),
        ("Q_POLL_S", "-1"),
        ("Q_POLL_S", "inf"),
        ("Q_POLL_S", "3600"),
        ("Q_REDIS_URL", "redis://"),
        ("BASE_RPC_URL", "file:///etc/passwd"),
        ("OBSERVATION_MAX_SKEW_S", "86400"),
        ("USDC_VAULT_ID", "0x" + "1_" * 31 + "11"),  # int(..., 16) accepts underscores
        ("BASE_ORDERBOOK", "0x" + "a_" * 19 + "aa"),
        ("OBSERVATION_MAX_SKEW_S", "0"),
    ],
)
def test_database_queue_and_rpc_urls_are_checked(name, value, tmp_path):
    assert name in problems({name: value}, tmp_path)


# --- no secret is ever echoed -----------------------------------------------------------------


def _manage(*args: str, env: dict[str, str], code: str | None = None):
    full = dict(os.environ) | env
    full.pop("DJANGO_SETTINGS_MODULE", None)
    argv = [sys.executable, "manage.py", *args] if code is None else [sys.executable, "-c", code]
    full["DJANGO_SETTINGS_MODULE"] = "rebalancer.settings"
    return subprocess.run(
        argv, cwd=ROOT, env=full, capture_output=True, text=True, timeout=120, check=False
    )


def test_a_start_up_error_never_shows_a_secret():
    env = SECRET_ENV | {
        "DATABASE_URL": f"mysql://app:{DB_PASSWORD}@db/x",
        "Q_REDIS_URL": f"http://:{REDIS_PASSWORD}@cache",
        "ETHEREUM_RPC_URL": f"ftp://eth.example.invalid/v2/{RPC_KEY}",
        "SECRET_KEY": "short-" + API_SECRET,
    }
    done = _manage("check", env=env)
    assert done.returncode != 0
    output = done.stdout + done.stderr
    for name in ("DATABASE_URL", "Q_REDIS_URL", "ETHEREUM_RPC_URL", "SECRET_KEY"):
        assert name in output
    for secret in SECRETS:
        assert secret not in output


def test_diffsettings_never_shows_a_secret():
    done = _manage("diffsettings", "--all", env=SECRET_ENV)
    assert done.returncode == 0, done.stderr
    assert "Q_CLUSTER" in done.stdout and "<redacted>" in done.stdout
    for secret in SECRETS:
        assert secret not in done.stdout + done.stderr


def test_log_lines_never_show_a_secret():
    code = f"""
import django, logging
django.setup()
from django.conf import settings
log = logging.getLogger("rebalancer.test")
url = settings.REBALANCING.ethereum_rpc_url.reveal()
log.warning("calling %s (redis %s)", url, settings.Q_CLUSTER["redis"])
log.warning("normalised https://ETH.example.invalid:443/v2/{RPC_KEY}/ key %s", settings.SECRET_KEY)
try:
    raise RuntimeError("failed with " + url + " and {API_SECRET}")
except RuntimeError:
    log.exception("venue error")
"""
    done = _manage(env=SECRET_ENV, code=code)
    assert done.returncode == 0, done.stderr
    assert "venue error" in done.stderr and "<redacted>" in done.stderr
    for secret in SECRETS:
        assert secret not in done.stderr


def test_the_debug_page_never_shows_a_secret(settings):
    settings.DEBUG = True
    settings.Q_CLUSTER = dict(settings.Q_CLUSTER, redis=SECRET_ENV["Q_REDIS_URL"])
    settings.DATABASE_PASSWORD_FOR_TEST = DB_PASSWORD  # any *PASS* setting
    settings.RPC = Secret(SECRET_ENV["ETHEREUM_RPC_URL"])
    request = RequestFactory().get(
        "/boom",
        HTTP_AUTHORIZATION=f"Bearer {API_SECRET}",
        ETHEREUM_RPC_URL=SECRET_ENV["ETHEREUM_RPC_URL"],
        DATABASE_URL=SECRET_ENV["DATABASE_URL"],
        SECRET_KEY=GOOD_KEY,
    )
    rpc_url = SECRET_ENV["ETHEREUM_RPC_URL"]  # a local variable on the page's frames
    try:
        raise ConnectionError(f"cannot reach {rpc_url} with {REDIS_PASSWORD}")
    except ConnectionError:
        response = technical_500_response(request, *sys.exc_info())
    page = response.content.decode()
    assert "ConnectionError" in page and "rpc_url" in page
    for secret in SECRETS:
        assert secret not in page

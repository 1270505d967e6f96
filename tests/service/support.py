"""Shared test helpers: the queued django-q tasks, and a DATABASE_URL for child processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


def queued_tasks() -> list[tuple[str, tuple[Any, ...]]]:
    """(function name, args) of every task in the ORM broker's queue, oldest first."""
    from django_q.models import OrmQ

    return [(row.task["func"], tuple(row.task["args"])) for row in OrmQ.objects.order_by("id")]


def queued_operation_tasks() -> list[int]:
    return [
        args[0] for func, args in queued_tasks() if func == "operations.tasks.execute_operation"
    ]


def database_url() -> str:
    """The URL of the database this test runs against (the test database)."""
    settings = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{settings['NAME']}"
    user = quote(settings.get("USER") or "")
    password = quote(settings.get("PASSWORD") or "")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = settings.get("HOST") or "127.0.0.1"
    port = settings.get("PORT") or 5432
    return f"postgres://{auth}{host}:{port}/{settings['NAME']}"


# A complete, valid rebalancing environment (nothing real behind it) for child processes.
REBALANCING_ENV = {
    "REBALANCING_ENABLED": "true",
    "REDEMPTION_WALLET": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
    "MARKET_MAKER_WALLET": "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23",
    "ETHEREUM_RPC_URL": "http://127.0.0.1:1",
    "BASE_RPC_URL": "http://127.0.0.1:2",
    "EVM_PRIVATE_KEY": "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318",
    "BASE_ORDERBOOK": "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
    "USDC_VAULT_ID": "0x" + "ab" * 32,
    "ALPACA_API_KEY": "test-key",
    "ALPACA_API_SECRET": "test-secret",
    "ALPACA_ACCOUNT_ID": "test-account",
}


def child_command(code: str, *, extra_env: dict[str, str] | None = None):
    """argv and env for a fresh Python process with Django set up against the test database."""
    env = dict(os.environ)
    env.update(extra_env or {})
    env["DATABASE_URL"] = database_url()
    env["DJANGO_SETTINGS_MODULE"] = "rebalancer.settings"
    prelude = "import django\ndjango.setup()\n"
    return [sys.executable, "-c", prelude + code], env


def run_django_child(
    code: str, *, timeout_s: float = 60, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh Python process with Django set up against the test database."""
    argv, env = child_command(code, extra_env=extra_env)
    return subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
    )

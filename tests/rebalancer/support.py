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


def run_django_child(code: str, *, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh Python process with Django set up against the test database."""
    env = dict(os.environ)
    env["DATABASE_URL"] = database_url()
    env["DJANGO_SETTINGS_MODULE"] = "rebalancer.settings"
    prelude = "import django\ndjango.setup()\n"
    return subprocess.run(
        [sys.executable, "-c", prelude + code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )

"""docs/deploy.md's production example passes `manage.py check --deploy` with no issue
(issue 19), and without the security settings the check warns. Real subprocesses."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def production_example() -> dict[str, str]:
    text = (ROOT / "docs" / "deploy.md").read_text()
    section = text.split("## Production settings", 1)[1]
    block = re.search(r"```env\n(.*?)```", section, re.S)
    assert block, "docs/deploy.md has no env example under 'Production settings'"
    env = {}
    for line in block.group(1).splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            env[name] = value
    return env


def check_deploy(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=base | env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_production_example_passes_check_deploy_without_a_warning(tmp_path):
    env = production_example()
    assert env["SECRET_KEY"] == "REPLACE_ME"  # the placeholder is refused at start ...
    refused = check_deploy(env, tmp_path)
    assert refused.returncode != 0 and "SECRET_KEY" in refused.stderr
    env["SECRET_KEY"] = secrets.token_urlsafe(50)  # ... and the operator's own key passes
    result = check_deploy(env, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout, result.stdout + result.stderr


def test_without_the_security_settings_check_deploy_warns(tmp_path):
    env = {
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "rebalancer.example.com",
    }
    result = check_deploy(env, tmp_path)
    assert result.returncode != 0
    for warning in ("W004", "W008", "W012", "W016"):
        assert f"security.{warning}" in result.stderr + result.stdout


def test_manage_py_check_refuses_values_that_would_break_later(tmp_path):
    """Q_REDIS_URL=redis://h:notaport/0 and REBALANCER_COOLDOWN_BASE_S=1e12 passed
    `manage.py check` (issue 19); the start-up report names both."""
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "check"],
        cwd=ROOT,
        env=base | {"Q_REDIS_URL": "redis://h:notaport/0", "REBALANCER_COOLDOWN_BASE_S": "1e12"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "Q_REDIS_URL" in result.stderr and "port" in result.stderr
    assert "REBALANCER_COOLDOWN_BASE_S" in result.stderr

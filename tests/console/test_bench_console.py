"""Smoke test of bench/console.py: it runs at a tiny size and prints each page's figure."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_console_benchmark_runs_at_a_tiny_size_and_prints_every_page(tmp_path):
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "TMPDIR": str(temporary),  # where its SQLite database is made
        "LOG_LEVEL": "WARNING",
    }
    result = subprocess.run(
        [
            sys.executable,
            "bench/console.py",
            "--events",
            "300",
            "--operations",
            "40",
            "--repeats",
            "1",
            "--quiet",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("machine: ")
    assert "300 events, 40 operations" in lines[1]
    for page in ("dashboard", "operations list", "event log", "operation detail", "metrics"):
        row = next(line for line in lines if line.startswith(page + " "))
        assert row.split()[-2] == "200", row
    assert lines[-1].startswith("slowest page: ")
    assert list(temporary.iterdir()) == []  # its database is removed

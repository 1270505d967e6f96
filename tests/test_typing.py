"""The pure domain and the venue clients type-check (STYLE.md: mypy over domain and venues)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_domain_and_venues_type_check_with_mypy():
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "inventory/domain", "venues"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr

"""Each benchmark runs end to end with tiny sizes and prints its figures (no timing asserted).

They run against a database of their own (a temporary SQLite file, or a new database on the
PostgreSQL server the suite uses), created and dropped by the benchmark itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.db import connection

from tests.service.support import ROOT, database_url

TINY = {
    "ingest.py": ["--fills", "5", "--batches", "2", "--batch-size", "10", "--history", "60"]
    + ["--fills-per-day", "25"],
    "trigger.py": ["--events", "20"],
    "replay.py": ["--events", "120", "--baseline", "40"],
    "concurrency.py": ["--fills", "3"],
    "key_index.py": ["--history", "300", "--batches", "2", "--batch-size", "50"],
}


def run_bench(name: str) -> dict:
    env = dict(os.environ)
    env.pop("DATABASE_URL", None)
    if connection.vendor == "postgresql":
        env["DATABASE_URL"] = database_url()
    done = subprocess.run(
        [sys.executable, f"bench/{name}", *TINY[name], "--plain", "5", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.mark.parametrize("name", sorted(TINY))
def test_the_benchmark_runs_and_prints_its_figures_the_machine_and_the_baseline(name):
    report = run_bench(name)
    assert report["benchmark"] == f"bench/{name}"
    assert report["machine"]["cores"] >= 1
    assert report["machine"]["database"].split()[0] in {"SQLite", "PostgreSQL"}
    text = json.dumps(report)
    assert "plain" in text and ("x plain" in text or "/ plain" in text)
    assert "sizes" in report


def test_the_http_benchmark_serves_posts_compares_with_the_service_and_cleans_up():
    env = dict(os.environ)
    env.pop("DATABASE_URL", None)
    if connection.vendor == "postgresql":
        env["DATABASE_URL"] = database_url()
    done = subprocess.run(
        [sys.executable, "bench/http_ingest.py", "--singles", "3", "--batches", "1"]
        + ["--batch-size", "5", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["benchmark"] == "bench/http_ingest.py"
    rates = report["fills_per_s"]
    assert set(rates) == {"http_single", "service_single", "http_batch", "service_batch"}
    assert all(rate > 0 for rate in rates.values())
    assert set(report["ratio_http_to_service"]) == {"single", "batch"}
    if "database_file" in report:  # SQLite: the file is gone, and its directory
        assert not os.path.exists(report["database_file"])
        assert not os.path.exists(os.path.dirname(report["database_file"]))


@pytest.mark.slow
@pytest.mark.chain
def test_the_crash_campaign_runs_a_matrix_point_and_prints_its_verdict():
    """One crash-matrix point, one run, no hog: the campaign script keeps working."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
    url = env.pop("DATABASE_URL", "")
    if url.startswith(("postgres://", "postgresql://")):
        # The campaign's pytest creates (and drops) a test database named after this one.
        parts = urlsplit(url)
        name = f"{parts.path.lstrip('/') or 'rebalancer'}_campaign_{uuid.uuid4().hex[:8]}"
        env["DATABASE_URL"] = urlunsplit(parts._replace(path=f"/{name}"))
    point = (
        "tests/operations/test_crash_safety.py::"
        "test_mint_killed_at_each_step_boundary_completes_once_after_restart[after:request_mint]"
    )
    done = subprocess.run(
        [sys.executable, "bench/crash_campaign.py", "--runs", "1", "--json", point],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["benchmark"] == "bench/crash_campaign.py"
    assert report["machine"]["cores"] >= 1
    assert report["machine"]["database"].split()[0] in {"SQLite", "PostgreSQL"}
    assert report["machine"]["checkout"]  # the commit the runs ran
    assert report["verdict"] == "1 of 1 runs in a row passed"
    [run] = report["runs"]
    assert (run["passed"], run["failed"], run["errors"], run["ok"]) == (1, 0, 0, True)

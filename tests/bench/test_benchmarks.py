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
    "backtest.py": ["--events", "120", "--baseline", "40", "--candidates", "1"],
    "concurrency.py": ["--fills", "3", "--repeat", "1", "--latency-ms", "1"],
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


def test_the_simulated_day_benchmark_reads_each_kind_s_costs_and_the_gas_spike():
    """Issue 24: bench/simulated_day.py's figures carry the summary's cost per kind and per
    10,000 USD moved, the cost gate's deferrals and the gas spike, as the day prints them."""
    from bench.simulated_day import parse

    summary = "\n".join(
        [
            "== the simulated day ==",
            "costs by kind (USD; gas at the ETH/USD price recorded, fees in USDC at par):",
            "  mint                 gas 0.002394, circle 0.000000, other 0.000000, "
            "total 0.002394; moved 2741.50, per 10,000 USD moved 0.0087",
            "  usdc_alpaca_to_base  gas 0.004811, circle 0.415510, other 4.150915, "
            "total 4.571236; moved 4155.10, per 10,000 USD moved 11.0015",
            "  redemption           gas 0.000000, circle 0.000000, other 0.000000, "
            "total 0.000000; moved 0.00, per 10,000 USD moved -",
            "deferrals recorded (the cost gate held them back): 1 "
            "(usdc_alpaca_to_base cost_above_max_bps 1)",
            "gas spike: Ethereum at 150 gwei until the cost gate deferred a USDC move (9s), "
            "then 1 gwei; USDC moves started after gas fell: 2 (completed 2)",
        ]
    )
    figures = parse(summary)
    assert figures["costs"]["usdc_alpaca_to_base"] == {
        "gas_usd": "0.004811",
        "circle_usd": "0.415510",
        "other_usd": "4.150915",
        "total_usd": "4.571236",
        "moved_usd": "4155.10",
        "per_10k_usd_moved": "11.0015",
    }
    assert figures["costs"]["redemption"]["per_10k_usd_moved"] == "-"
    assert set(figures["costs"]) == {"mint", "usdc_alpaca_to_base", "redemption"}
    assert "cost_above_max_bps 1" in figures["deferrals"]
    assert figures["gas_spike"].endswith("USDC moves started after gas fell: 2 (completed 2)")


def test_the_latency_proxy_delays_each_way_and_passes_the_bytes_unchanged():
    """`bench/latency.py` (the remote database of `concurrency.py --latency-ms`): a round trip
    through it takes at least twice the delay, and what goes through comes back whole."""
    import socket
    import socketserver
    import threading
    import time

    from bench.latency import LatencyProxy

    class Echo(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            while data := self.request.recv(65536):
                self.request.sendall(data)

    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        proxy = LatencyProxy("127.0.0.1", server.server_address[1], delay_ms=50).start()
        try:
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as client:
                payload = bytes(range(256)) * 1000
                began = time.monotonic()
                client.sendall(payload)
                received = b""
                while len(received) < len(payload):
                    received += client.recv(65536)
                elapsed = time.monotonic() - began
        finally:
            proxy.stop()
            server.shutdown()
    assert received == payload
    assert elapsed >= 0.1

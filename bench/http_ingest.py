"""Fills per second through the HTTP API, against the service path in the same run.

    python bench/http_ingest.py                                  # SQLite (a temporary file)
    DATABASE_URL=postgres://user@host/db python bench/http_ingest.py
    python bench/http_ingest.py --singles 1000 --batches 5 --conn-max-age 0 --no-token-cache

Serves the real WSGI application with waitress on a free loopback port (in this process, a
thread per request as `runrebalancer --http` does), creates an ingest token, and posts
`--singles` fills one per request (POST /api/v1/fills/onchain, from a client process of its
own, as the trading side is) and `--batches` batches of
`--batch-size` fills (POST /api/v1/fills/onchain/batch) over one keep-alive connection. The
same numbers of fills then go through the service functions directly (`fill_record_onchain`,
`fills_record_batch`): the ratios HTTP / service are what the HTTP layer costs (targets:
singles >= 0.6x, batches >= 0.8x). Fills carry block numbers, and an onchain snapshot is
recorded before each phase (untimed), as `bench/ingest.py` does.

`--conn-max-age 0` and `--no-token-cache` measure the server as it was before persistent
connections and the token cache (one connection and one token query per request). The
database is created for the run and removed after it.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import ingest  # noqa: E402
from bench.common import arguments, bench_database, django_setup, machine, print_report  # noqa: E402

WARM_UP_REQUESTS = 20


def _body(fill) -> dict:
    return {
        "tx_hash": fill.tx_hash,
        "log_index": fill.log_index,
        "block_number": fill.block_number,
        "symbol": fill.symbol,
        "direction": fill.direction.lower(),
        "quantity": str(fill.amount),
        "price_usdc": str(fill.price_usdc),
        "block_timestamp": fill.block_timestamp.isoformat(),
    }


class Client:
    """One keep-alive HTTP/1.1 connection to the server, with the bearer token."""

    def __init__(self, port: int, token: str) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def post(self, path: str, body: dict) -> dict:
        self.connection.request("POST", path, body=json.dumps(body), headers=self.headers)
        response = self.connection.getresponse()
        data = response.read()
        if response.status not in (200, 201):
            raise SystemExit(f"POST {path} answered {response.status}: {data[:500]!r}")
        return json.loads(data)

    def warm_up(self, requests: int) -> None:
        """Untimed reads, so the first timed request does not pay for imports and URL
        resolution done once per process."""
        for _ in range(requests):
            self.connection.request("GET", "/api/v1/pools", headers=self.headers)
            response = self.connection.getresponse()
            response.read()
            if response.status != 200:
                raise SystemExit(f"GET /api/v1/pools answered {response.status}")

    def close(self) -> None:
        self.connection.close()


def serve():
    """The WSGI application on a free loopback port; returns the server and its thread."""
    from waitress.server import create_server

    from rebalancer.wsgi import application

    server = create_server(application, host="127.0.0.1", port=0, threads=2)
    thread = threading.Thread(target=server.run, name="bench-http", daemon=True)
    thread.start()
    return server, thread


# The single fills' client: a process of its own, as the trading side is (in this process its
# thread would compete with the server's threads for the interpreter lock). Reads one JSON body
# a line, posts each over one keep-alive connection, prints the seconds they took.
SINGLES_CLIENT = """
import http.client, sys, time
port, token = int(sys.argv[1]), sys.argv[2]
bodies = sys.stdin.read().splitlines()
connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
headers = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}
started = time.perf_counter()
for body in bodies:
    connection.request("POST", "/api/v1/fills/onchain", body=body, headers=headers)
    response = connection.getresponse()
    data = response.read()
    if response.status not in (200, 201):
        sys.exit(f"POST answered {response.status}: {data[:500]!r}")
print(time.perf_counter() - started)
"""


def http_singles(port: int, token: str, count: int) -> float:
    batch = ingest.fills(count)
    ingest.onchain_poll(batch[0].block_number - 1)
    bodies = "\n".join(json.dumps(_body(fill)) for fill in batch)
    done = subprocess.run(
        [sys.executable, "-c", SINGLES_CLIENT, str(port), token],
        input=bodies,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"the singles client failed: {done.stderr[-2000:]}")
    return count / float(done.stdout.strip())


def http_batches(client: Client, batches: int, size: int) -> float:
    wall = 0.0
    for _ in range(batches):
        batch = ingest.fills(size)
        ingest.onchain_poll(batch[0].block_number - 1)
        body = {"fills": [_body(fill) for fill in batch]}
        started = time.perf_counter()
        answer = client.post("/api/v1/fills/onchain/batch", body)
        wall += time.perf_counter() - started
        assert answer["recorded"] == size, answer
    return batches * size / wall


def service_singles(count: int) -> float:
    ingest.onchain_poll(ingest.current_block())
    return float(ingest.one_per_transaction(count))


def main() -> None:
    parser = arguments(__doc__.splitlines()[0])
    parser.add_argument("--singles", type=int, default=1000, help="fills one per request")
    parser.add_argument("--batches", type=int, default=5, help="batch requests")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument(
        "--conn-max-age",
        type=int,
        default=600,
        help="CONN_MAX_AGE of the server (0: a new database connection per request)",
    )
    parser.add_argument(
        "--token-cache",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="--no-token-cache: read the token from the database on every request",
    )
    args = parser.parse_args()
    if args.singles < 1 or args.batches < 1 or args.batch_size < 1:
        parser.error("--singles, --batches and --batch-size must be at least 1")
    os.environ["CONN_MAX_AGE"] = str(args.conn_max_age)
    ingest.CALENDAR = ingest.Calendar(0, 0)

    with bench_database() as database:
        django_setup(database.url)
        from inventory import auth
        from inventory.services import api_token_create

        if not args.token_cache:
            auth.token_cache.ttl_s = 0.0
        ingest.seed()
        _, token = api_token_create(name="bench", scopes=["ingest", "read"])
        server, thread = serve()
        client = Client(server.effective_port, token)
        try:
            client.warm_up(WARM_UP_REQUESTS)
            http_single = http_singles(server.effective_port, token, args.singles)
            http_batch = http_batches(client, args.batches, args.batch_size)
        finally:
            client.close()
            server.task_dispatcher.shutdown(timeout=10)  # the request threads end first
            server.close()
            thread.join(timeout=10)
        service_single = service_singles(args.singles)
        service_batch = float(ingest.batched(args.batches, args.batch_size))
        report = {
            "database": database.vendor,
            "machine": machine(),
            "server": {
                "conn_max_age_s": args.conn_max_age,
                "token_cache": args.token_cache,
            },
            "fills_per_s": {
                "http_single": round(http_single, 1),
                "service_single": round(service_single, 1),
                "http_batch": round(http_batch, 1),
                "service_batch": round(service_batch, 1),
            },
            "ratio_http_to_service": {
                "single": round(http_single / service_single, 3),
                "batch": round(http_batch / service_batch, 3),
            },
            "targets": {"single": 0.6, "batch": 0.8},
            "sizes": {
                "singles": args.singles,
                "batches": args.batches,
                "batch_size": args.batch_size,
            },
            "load_average": [round(load, 2) for load in os.getloadavg()],
        }
        if database.vendor == "sqlite":
            report["database_file"] = database.url.removeprefix("sqlite:///")
    print_report("bench/http_ingest.py", report, args.json)


if __name__ == "__main__":
    main()

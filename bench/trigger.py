"""p50 and p99 of the trigger's decision per event (target: p99 under 1 ms).

    python bench/trigger.py [--events 5000]      # DATABASE_URL=postgres://... for PostgreSQL

Times `service.trigger.trigger_events` for one appended fill (the symbol and USDC checked,
rebalancing enabled, the asset registered, pools balanced so the decision is "nothing to do"),
inside the appending transaction with the pool rows already locked, as the store calls it.
Also times the decision alone (`pool_plan` on the locked rows with the settings already read:
no query), and a plain single-row insert of the same payload, for the ratio.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    arguments,
    bench_database,
    django_setup,
    machine,
    plain_insert_rate,
    print_report,
)
from bench.ingest import SYMBOL, fills, seed  # noqa: E402


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = arguments(__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000, help="decisions timed")
    parser.add_argument("--plain", type=int, default=2000)
    args = parser.parse_args()

    with bench_database() as database:
        django_setup(database.url)
        from django.db import transaction

        from inventory.domain.values import USDC_POOL
        from inventory.projection import pools_lock
        from inventory.selectors import rebalancing_settings_get
        from inventory.services import fills_record_batch
        from operations.services import pool_breakers
        from service.trigger import pool_plan, trigger_events

        seed()
        [result] = fills_record_batch(fills=fills(1))
        stored = result.events
        plain = plain_insert_rate({"OnChainOrderFilled": {"amount": "0.001"}}, args.plain)
        samples: list[float] = []
        cpu_samples: list[float] = []
        with transaction.atomic():
            rows = pools_lock({SYMBOL, USDC_POOL})
            for _ in range(args.events):
                started, cpu = time.perf_counter(), time.thread_time()
                created = trigger_events(events=stored, pools={SYMBOL, USDC_POOL}, rows=rows)
                samples.append(time.perf_counter() - started)
                cpu_samples.append(time.thread_time() - cpu)
                assert created == []
            settings = rebalancing_settings_get(symbols=[SYMBOL])
            breakers = pool_breakers([SYMBOL, USDC_POOL])
            pure: list[float] = []
            for _ in range(args.events):
                started = time.perf_counter()
                for key in (SYMBOL, USDC_POOL):
                    assert pool_plan(row=rows[key], settings=settings, breakers=breakers) is None
                pure.append(time.perf_counter() - started)
            transaction.set_rollback(True)
        p50, p99 = percentile(samples, 0.50), percentile(samples, 0.99)
        report = {
            "machine": machine(),
            "trigger per event (2 pools: settings read + decision)": {
                "p50": f"{p50 * 1000:.3f} ms",
                "p99": f"{p99 * 1000:.3f} ms",
                "mean": f"{statistics.fmean(samples) * 1000:.3f} ms",
            },
            "the same, CPU time of this thread (what a loaded machine does not inflate)": {
                "p50": f"{percentile(cpu_samples, 0.50) * 1000:.3f} ms",
                "p99": f"{percentile(cpu_samples, 0.99) * 1000:.3f} ms",
            },
            "load average (1 min) at the end": f"{os.getloadavg()[0]:.2f}",
            "decision alone, settings already read (2 pools, no query)": {
                "p50": f"{percentile(pure, 0.50) * 1000:.3f} ms",
                "p99": f"{percentile(pure, 0.99) * 1000:.3f} ms",
            },
            "plain single-row insert": f"{1000 / plain:.3f} ms ({plain:,.0f} rows/s)",
            "p99 / plain insert": f"{p99 * plain:.2f}x",
            "sizes": f"{args.events} decisions, {args.plain} plain inserts",
        }
        print_report("bench/trigger.py", report, args.json)


if __name__ == "__main__":
    main()

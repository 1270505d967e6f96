"""Fills per second through the service path, at an empty log and after a long history.

    python bench/ingest.py                       # SQLite (a temporary file)
    DATABASE_URL=postgres://user@host/db python bench/ingest.py   # a new database on that server
    python bench/ingest.py --history 1000000 --fills 5000 --batches 20

One fill per transaction (`fill_record_onchain`) and batches of `--batch-size` fills in one
transaction (`fills_record_batch`), with rebalancing enabled (the trigger checks every touched
pool), then again once the log holds `--history` events of the same symbol (a comma-separated
list measures at each: `--history 100000,1000000,2000000` shows where a cost stops growing).
Fills are spread over trading days of `--fills-per-day` (block timestamps; trade keys are
indexed by day), each measurement on a day of its own after the history; `--fills-per-day 0`
puts everything on one day. Prints the rates, the machine, and the ratio to plain single-row
inserts of the same payload into the same database measured in the same run. Targets
(SQLite): >= 1,000 fills/s one per transaction, >= 10,000 fills/s batched, and the rate
after 1,000,000 events >= 0.8x the empty-log rate.

With `--block-numbers` (the default) every fill carries the block it landed in
(`FILLS_PER_BLOCK` fills a block) and, as the venue poller does, an onchain snapshot pinned to
the current block is recorded after every history batch and before each measurement, so the
measured single fills are all above the pool's snapshot block (each leaves a remembered leg);
the rate of the first 100 and of the last 300 single fills of a measurement shows whether a
fill's cost grows with the legs above the snapshot. `--no-block-numbers` sends fills without
a block (the shape before blocks were carried).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    arguments,
    bench_database,
    django_setup,
    machine,
    plain_insert_rates,
    print_report,
    round_trips,
    round_trips_described,
    settle,
)

SYMBOL = "AAPL"
TOKEN = "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB"
_numbers = itertools.count(1)


TRADE_IDS = "random"
BLOCK_NUMBERS = True
FIRST_BLOCK = 1_000_000
FILLS_PER_BLOCK = 10


class Calendar:
    """The block timestamps of the fills: `per_day` fills a trading day, then the next day
    (0: every fill on the first day, as if the whole history were traded in one day). Trade
    keys are indexed by day, so a day's fills are what an insert works against."""

    def __init__(self, per_day: int, days: int) -> None:
        today = datetime.now(UTC).replace(hour=14, minute=30, second=0, microsecond=0)
        self.first = today - timedelta(days=days + 1)  # every stamp is in the past
        self.per_day = per_day
        self.day = 0
        self.used = 0

    def next_day(self) -> None:
        if self.per_day:
            self.day += 1
            self.used = 0

    def stamp(self) -> datetime:
        if self.per_day and self.used >= self.per_day:
            self.next_day()
        self.used += 1
        return self.first + timedelta(days=self.day)


CALENDAR = Calendar(0, 0)


def _tx_hash(n: int) -> str:
    """Real transaction hashes are uniformly random, so are these by default; `counter` ids
    insert every trade key at the end of its index (a best case, shown for comparison)."""
    if TRADE_IDS == "counter":
        return "0x" + f"{n:064x}"
    return "0x" + hashlib.sha256(n.to_bytes(8, "big")).hexdigest()


_last_number = 0


def current_block() -> int:
    """The block of the latest fill made (the chain's head as the bench plays it)."""
    return FIRST_BLOCK + _last_number // FILLS_PER_BLOCK


def fills(count: int) -> list:
    from inventory.services import OnchainFill

    global _last_number
    result = []
    for _ in range(count):
        n = next(_numbers)
        _last_number = n
        result.append(
            OnchainFill(
                symbol=SYMBOL,
                tx_hash=_tx_hash(n),
                log_index=0,
                amount=Decimal("0.001"),
                direction="Buy" if n % 2 else "Sell",  # the pools stay balanced
                price_usdc=Decimal("187.25"),
                block_timestamp=CALENDAR.stamp(),
                block_number=current_block() if BLOCK_NUMBERS else None,
            )
        )
    return result


def onchain_poll(block: int | None = None) -> None:
    """What the venue poller records: the onchain balances pinned to `block` (default: the
    current one; the pools' own values, so nothing drifts). Only with block numbers."""
    if not BLOCK_NUMBERS:
        return
    from inventory.models import InventoryPool
    from inventory.services import snapshot_record

    pools = {row.key: row for row in InventoryPool.objects.filter(key__in=[SYMBOL, "USDC"])}
    snapshot_record(
        fetched_at=datetime.now(UTC),
        onchain_equity={SYMBOL: pools[SYMBOL].onchain_available},
        onchain_cash=pools["USDC"].onchain_available,
        onchain_block=current_block() if block is None else block,
    )


def seed() -> None:
    from inventory.services import asset_register, snapshot_record

    asset_register(
        base_symbol=SYMBOL,
        token_address=TOKEN,
        token_symbol=f"t{SYMBOL}",
        vault_id="0x" + "11" * 32,
        changed_by="bench",
    )
    start = CALENDAR.first
    snapshot_record(
        fetched_at=start,
        onchain_equity={SYMBOL: Decimal(1_000_000)},
        offchain_equity={SYMBOL: Decimal(1_000_000)},
        onchain_cash=Decimal(10**9),
        offchain_cash=Decimal(10**9),
        onchain_block=FIRST_BLOCK if BLOCK_NUMBERS else None,
        now=start,
    )


class Rate(float):
    """Fills per wall-clock second, carrying `cpu`: fills per CPU-second of this process,
    and (single fills) `first` / `last`: the rates of the first 100 and the last 300."""

    cpu: float
    first: float | None = None
    last: float | None = None
    first_cpu: float | None = None
    last_cpu: float | None = None

    def __new__(cls, count: int, wall: float, cpu: float) -> Rate:
        rate = super().__new__(cls, count / wall if wall > 0 else 0.0)
        rate.cpu = count / cpu if cpu > 0 else float("inf")
        return rate


def _clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def one_per_transaction(count: int) -> Rate:
    from inventory.services import fill_record_onchain

    batch = fills(count)
    started, cpu = _clocks()
    stamps = [started]
    cpus = [cpu]
    for f in batch:
        fill_record_onchain(
            symbol=f.symbol,
            tx_hash=f.tx_hash,
            log_index=f.log_index,
            amount=f.amount,
            direction=f.direction,
            price_usdc=f.price_usdc,
            block_timestamp=f.block_timestamp,
            block_number=f.block_number,
        )
        stamps.append(time.perf_counter())
        cpus.append(time.process_time())
    rate = Rate(count, stamps[-1] - started, time.process_time() - cpu)
    if count >= 400:
        rate.first = 100 / (stamps[100] - stamps[0])
        rate.last = 300 / (stamps[-1] - stamps[-301])
        rate.first_cpu = 100 / max(cpus[100] - cpus[0], 1e-9)
        rate.last_cpu = 300 / max(cpus[-1] - cpus[-301], 1e-9)
    return rate


def batched(batches: int, size: int) -> Rate:
    from inventory.services import fills_record_batch

    prepared = [fills(size) for _ in range(batches)]
    wall = cpu = 0.0
    for batch in prepared:
        if batch[0].block_number is not None:
            # The poller keeps up between batches (untimed): the head stays within reach.
            onchain_poll(batch[0].block_number - 1)
        started, cpu_started = _clocks()
        fills_record_batch(fills=batch)
        wall += time.perf_counter() - started
        cpu += time.process_time() - cpu_started
    return Rate(batches * size, wall, cpu)


def grow_history(target_events: int, size: int, progress: bool) -> float:
    """Append batches of fills until the log holds `target_events`; returns the rate."""
    from inventory.models import Event
    from inventory.services import fills_record_batch

    have = Event.objects.count()
    missing = max(0, target_events - have)
    started = time.perf_counter()
    done = 0
    while done < missing:
        step = min(size, missing - done)
        fills_record_batch(fills=fills(step))
        onchain_poll()
        done += step
        if progress and done % (size * 100) == 0:
            print(f"  history: {have + done} events", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - started
    return done / elapsed if elapsed > 0 else 0.0


class Rounds:
    """Rates of repeated rounds: the median is the figure; the best and the worst show the
    spread (a shared machine's CPU speed varies from one second to the next)."""

    def __init__(self, rates: list[Rate]) -> None:
        ordered = sorted(rates)
        self.rates = ordered
        self.median = ordered[len(ordered) // 2]

    def __str__(self) -> str:
        median = self.median
        text = f"{median:,.0f} fills/s ({median.cpu:,.0f} per CPU-second)"
        if len(self.rates) > 1:
            text += (
                f", median of {len(self.rates)} rounds (slowest {self.rates[0]:,.0f}, "
                f"fastest {self.rates[-1]:,.0f})"
            )
        return text


def measure(args, label: str) -> dict[str, object]:
    settled = settle() if args.settle else "not settled (--no-settle)"
    CALENDAR.next_day()  # measured on a day of its own, after the history
    singles, batches = [], []
    for _ in range(args.rounds):
        onchain_poll()  # the singles all land above the snapshot's block
        singles.append(one_per_transaction(args.fills))
        onchain_poll()
        batches.append(batched(args.batches, args.batch_size))
    single, batch = Rounds(singles), Rounds(batches)
    ends = ""
    if single.median.first is not None:
        ends = (
            f"; first 100 {single.median.first:,.0f} fills/s, last 300 "
            f"{single.median.last:,.0f} fills/s ({single.median.last / single.median.first:.2f}x; "
            f"per CPU-second {single.median.first_cpu:,.0f} and {single.median.last_cpu:,.0f}, "
            f"{single.median.last_cpu / single.median.first_cpu:.2f}x)"
        )
    return {
        "one per transaction": str(single) + ends,
        f"batches of {args.batch_size}": str(batch),
        "_single": single.median,
        "_batch": batch.median,
        "_settled": settled,
    }


def _sizes(text: str) -> list[int]:
    """`--history`: one size or several, comma-separated and increasing."""
    try:
        sizes = [int(part.replace("_", "")) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: whole numbers, comma-separated") from None
    if any(size < 0 for size in sizes) or sizes != sorted(sizes):
        raise argparse.ArgumentTypeError(f"{text!r}: sizes must be non-negative and increasing")
    return sizes


def main() -> None:
    parser = arguments(__doc__.splitlines()[0])
    parser.add_argument("--fills", type=int, default=2000, help="fills one per transaction")
    parser.add_argument("--batches", type=int, default=10, help="batches measured")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument(
        "--history",
        type=_sizes,
        default=[1_000_000],
        help="events of history, or several (comma-separated, increasing): measured at each",
    )
    parser.add_argument("--plain", type=int, default=2000, help="plain inserts for the baseline")
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of each measurement (the median is shown)"
    )
    parser.add_argument(
        "--trade-ids",
        choices=("random", "counter"),
        default="random",
        help="transaction hashes of the fills: random (as real ones) or a counter (best case)",
    )
    parser.add_argument(
        "--fills-per-day",
        type=int,
        default=20_000,
        help="fills a trading day (block timestamps); 0 puts the whole history on the day "
        "measured (a worst case: a million fills in one day)",
    )
    parser.add_argument(
        "--settle",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="before each measurement, let the database finish its upkeep (PostgreSQL VACUUM "
        "ANALYZE and CHECKPOINT, SQLite WAL checkpoint), as after months of history",
    )
    parser.add_argument(
        "--block-numbers",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fills carry their block number and onchain snapshots are pinned to blocks "
        "(--no-block-numbers: fills without a block, the shape before blocks were carried)",
    )
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()
    if args.fills_per_day < 0:
        parser.error(f"--fills-per-day: {args.fills_per_day} is negative")
    global TRADE_IDS, CALENDAR, BLOCK_NUMBERS
    TRADE_IDS = args.trade_ids
    BLOCK_NUMBERS = args.block_numbers
    measured = args.rounds * (args.fills + args.batches * args.batch_size)
    total = max(args.history) + (len(args.history) + 1) * measured
    days = -(-total // args.fills_per_day) + 2 * len(args.history) + 2 if args.fills_per_day else 0
    CALENDAR = Calendar(args.fills_per_day, days)

    with bench_database() as database:
        django_setup(database.url)
        from inventory.models import Event

        seed()
        plain, plain_cpu = plain_insert_rates(
            {"OnChainOrderFilled": {"amount": "0.001"}}, args.plain
        )
        one_per_transaction(1)  # the position's first fill (it initializes it), untimed
        trips = round_trips(lambda: one_per_transaction(1))
        empty = measure(args, "empty log")
        report: dict[str, object] = {
            "machine": machine(),
            "plain single-row inserts": f"{plain:,.0f} rows/s ({plain_cpu:,.0f} per CPU-second)",
            "round trips of one single fill": round_trips_described(trips),
            "empty log": {
                "one per transaction": empty["one per transaction"]
                + f" ({empty['_single'] / plain:.2f}x plain inserts; per CPU-second "
                f"{empty['_single'].cpu / plain_cpu:.2f}x)",
                f"batches of {args.batch_size}": empty[f"batches of {args.batch_size}"]
                + f" ({empty['_batch'] / plain:.2f}x plain inserts; per CPU-second "
                f"{empty['_batch'].cpu / plain_cpu:.2f}x)",
                "settled before": empty["_settled"],
            },
        }
        for target in args.history:
            history_rate = grow_history(target, args.batch_size, args.progress)
            events = Event.objects.count()
            late = measure(args, "history")
            report[f"after {events:,} events"] = {
                "one per transaction": late["one per transaction"]
                + f" ({late['_single'] / empty['_single']:.2f}x the empty-log rate; per "
                f"CPU-second {late['_single'].cpu / empty['_single'].cpu:.2f}x)",
                f"batches of {args.batch_size}": late[f"batches of {args.batch_size}"]
                + f" ({late['_batch'] / empty['_batch']:.2f}x the empty-log rate; per "
                f"CPU-second {late['_batch'].cpu / empty['_batch'].cpu:.2f}x)",
                "history written at": f"{history_rate:,.0f} fills/s (batched)",
                "settled before": late["_settled"],
            }
        history = ", ".join(f"{size:,}" for size in args.history)
        report["load average (1 min) at the end"] = f"{os.getloadavg()[0]:.2f}"
        report["sizes"] = (
            f"{args.rounds} rounds of {args.fills} single fills and "
            f"{args.batches}x{args.batch_size} batched, history {history} events, "
            f"{args.plain} plain inserts, {args.trade_ids} trade ids, "
            + ("block numbers, " if args.block_numbers else "no block numbers, ")
            + (
                f"{args.fills_per_day:,} fills a day ({CALENDAR.day + 1} days)"
                if args.fills_per_day
                else "every fill on one day"
            )
        )
        print_report("bench/ingest.py", report, args.json)


if __name__ == "__main__":
    main()

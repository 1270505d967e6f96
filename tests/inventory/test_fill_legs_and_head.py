"""Issue 19: remembered fill legs are rows without a count limit (#4), a fill's block is
bounded by the chain head the service has seen (#3), and `rebuild_inventory --check` checks
the log independently of the live path (#5)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

from inventory.chain_head import DEFAULT_FILL_BLOCK_MARGIN, FillBeyondChainHead, head_read
from inventory.codec import encode_event
from inventory.domain import events as ev
from inventory.domain.values import USDC_POOL, Direction
from inventory.models import ChainHead, Event, OnchainFillLeg, UsdcFillDelta
from inventory.rebuild import LogProblem
from inventory.services import (
    OnchainFill,
    api_token_create,
    fill_record_onchain,
    fills_record_batch,
    inventory_rebuild,
    snapshot_record,
)
from tests.inventory.projection_helpers import pool_read, usdc_folded

pytestmark = pytest.mark.django_db

D = Decimal
T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=2)


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def tx(n: int) -> str:
    return "0x" + f"{n:064x}"


def onchain(key: str) -> Decimal:
    return pool_read(key).onchain_available


def snapshot(*, block: int | None, aapl: str, usdc: str, fetched: int) -> None:
    snapshot_record(
        fetched_at=at(fetched),
        onchain_equity={"AAPL": D(aapl)},
        onchain_cash=D(usdc),
        onchain_block=block,
        now=at(fetched),
    )


def buy(n: int, block: int | None, amount: str = "1", price: str = "1") -> OnchainFill:
    return OnchainFill(
        symbol="AAPL",
        tx_hash=tx(n),
        log_index=0,
        amount=D(amount),
        direction=Direction.BUY,
        price_usdc=D(price),
        block_timestamp=at(10),
        block_number=block,
    )


def record(f: OnchainFill) -> list:
    return fill_record_onchain(
        symbol=f.symbol,
        tx_hash=f.tx_hash,
        log_index=f.log_index,
        amount=f.amount,
        direction=f.direction,
        price_usdc=f.price_usdc,
        block_timestamp=f.block_timestamp,
        block_number=f.block_number,
        now=NOW,
    )


def fills_recorded() -> int:
    return Event.objects.filter(event_type__endswith="::OnChainOrderFilled").count()


# --- #4: every leg above a snapshot is remembered ----------------------------------------------


@pytest.mark.parametrize("batched", [True, False])
def test_a_lagging_snapshot_re_applies_every_fill_above_it_however_many(batched):
    """300 fills of 1 AAPL above the snapshot at block 100 (the pool shows 1,300), then a
    poll pinned at block 100 that read 1,000: all 300 legs are re-applied (1,300; it was
    1,256 when only the last 256 legs were remembered)."""
    snapshot(block=100, aapl="1000", usdc="100000", fetched=0)
    fills = [buy(n, 100 + n) for n in range(1, 301)]
    if batched:
        fills_record_batch(fills=fills, now=NOW)
    else:
        for f in fills:
            record(f)
    assert onchain("AAPL") == D(1300)
    assert OnchainFillLeg.objects.filter(pool_key="AAPL").count() == 300
    # USDC's legs are written when its pending fill deltas are folded (`usdc_deltas`).
    pending = UsdcFillDelta.objects.count()
    assert OnchainFillLeg.objects.filter(pool_key=USDC_POOL).count() + pending == 300
    usdc_folded()
    assert OnchainFillLeg.objects.filter(pool_key=USDC_POOL).count() == 300
    assert not UsdcFillDelta.objects.exists()

    snapshot(block=100, aapl="1000", usdc="100000", fetched=20)  # the lagging poll

    assert onchain("AAPL") == D(1300)
    assert onchain(USDC_POOL) == D(100000 - 300)
    assert not pool_read("AAPL").needs_reconciliation
    assert inventory_rebuild(write=False) == []

    # A poll pinned at block 350 covers the legs at or below it: they are released.
    snapshot(block=350, aapl="1250", usdc="99750", fetched=30)
    assert onchain("AAPL") == D(1300)
    legs = OnchainFillLeg.objects.filter(pool_key="AAPL")
    assert sorted(legs.values_list("block_number", flat=True)) == list(range(351, 401))
    assert inventory_rebuild(write=False) == []
    snapshot(block=400, aapl="1300", usdc="99700", fetched=40)
    assert not OnchainFillLeg.objects.exists()
    assert inventory_rebuild(write=False) == []


def test_a_fill_costs_one_leg_row_per_pool_whatever_is_remembered():
    """O(1) per fill: a fill inserts its legs and never reads or rewrites the earlier ones."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    snapshot(block=100, aapl="1000", usdc="100000", fetched=0)
    fills_record_batch(fills=[buy(n, 101) for n in range(1, 400)], now=NOW)
    usdc_folded()  # USDC's legs are rows once its pending deltas are folded
    with CaptureQueriesContext(connection) as queries:
        record(buy(1000, 102))
    touching = [q["sql"] for q in queries if "inventory_onchainfillleg" in q["sql"]]
    assert len(touching) == 1 and touching[0].startswith("INSERT"), touching
    assert OnchainFillLeg.objects.filter(event_id__isnull=False).count() == 799
    assert UsdcFillDelta.objects.count() == 1  # the fill's USDC leg, until the next fold


# --- #3: a fill's block is bounded by the chain head -------------------------------------------


def test_a_fill_from_beyond_the_chain_head_is_refused_and_counts_nothing():
    snapshot(block=100, aapl="100", usdc="100000", fetched=0)
    assert head_read() == 100
    with pytest.raises(FillBeyondChainHead) as caught:
        record(buy(1, 10**12, amount="5"))
    assert caught.value.field == "block_number"
    assert caught.value.value == 10**12
    assert "chain head" in str(caught.value) and "100" in str(caught.value)
    with pytest.raises(FillBeyondChainHead):
        fills_record_batch(fills=[buy(2, 101), buy(3, 10**12)], now=NOW)
    assert fills_recorded() == 0
    assert onchain("AAPL") == D(100)
    # Later polls: the vault holds 100, the pool shows 100 (never 105).
    snapshot(block=150, aapl="100", usdc="100000", fetched=30)
    assert onchain("AAPL") == D(100)
    assert not OnchainFillLeg.objects.exists()


@override_settings(FILL_BLOCK_MARGIN=5)
def test_the_bound_is_the_head_plus_the_margin_and_the_head_only_rises():
    snapshot(block=100, aapl="100", usdc="100000", fetched=0)
    record(buy(1, 105))
    with pytest.raises(FillBeyondChainHead, match=r"plus a margin of 5 blocks"):
        record(buy(2, 106))
    snapshot(block=90, aapl="100", usdc="100000", fetched=10)  # a lagging poll
    assert head_read() == 100
    snapshot(block=101, aapl="101", usdc="99999", fetched=20)
    assert head_read() == 101
    record(buy(2, 106))
    assert fills_recorded() == 2
    assert inventory_rebuild(write=False) == []


def test_the_default_margin_covers_polls_between_fills():
    assert DEFAULT_FILL_BLOCK_MARGIN >= 60  # two minutes of Base blocks at least


def test_before_any_head_is_seen_a_fill_with_a_block_is_accepted():
    """Documented choice: no head, nothing to bound by (the poller records one at start)."""
    snapshot(block=None, aapl="100", usdc="100000", fetched=0)
    assert head_read() is None
    record(buy(1, 7))
    assert onchain("AAPL") == D(101)


def test_the_api_refuses_a_fill_beyond_the_head_with_400_naming_block_number(client):
    snapshot(block=100, aapl="100", usdc="100000", fetched=0)
    token = api_token_create(name="desk", scopes=["ingest"])[1]
    body = {
        "tx_hash": tx(9),
        "log_index": 0,
        "block_number": 10**12,
        "symbol": "AAPL",
        "direction": "buy",
        "quantity": "5",
        "price_usdc": "1",
        "block_timestamp": at(10).isoformat(),
    }
    response = client.post(
        "/api/v1/fills/onchain",
        data=json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert response.status_code == 400, response.content
    assert "block_number" in response.content.decode()
    assert fills_recorded() == 0


# --- #5: rebuild_inventory --check is independent of the live path ----------------------------


def _raw_fill(n: int, block: int) -> Event:
    """A fill event written straight into the log, bypassing the store (as a defect of the
    live path, or a log from before a check existed, would leave it)."""
    event = ev.OnChainOrderFilled(
        trade_id=ev.TradeId(tx(n), 0),
        amount=D(5),
        direction=Direction.BUY,
        price_usdc=D(1),
        block_timestamp=at(10),
        seen_at=at(10),
        block_number=block,
    )
    event_type, payload = encode_event(event)
    last = Event.objects.filter(aggregate_type=ev.POSITION, aggregate_id="AAPL").count()
    return Event.objects.create(
        aggregate_type=ev.POSITION,
        aggregate_id="AAPL",
        sequence=last + 1,
        event_type=event_type,
        payload=payload,
    )


def _check() -> tuple[int, str]:
    out = io.StringIO()
    try:
        call_command("rebuild_inventory", "--check", "--no-progress", stdout=out)
    except CommandError as error:
        return error.returncode, out.getvalue()
    return 0, out.getvalue()


def test_check_names_a_trade_recorded_twice_and_a_fill_above_the_head():
    snapshot(block=100, aapl="100", usdc="100000", fetched=0)
    record(buy(1, 101))
    assert _check()[0] == 0
    twice = _raw_fill(1, 101)
    beyond = _raw_fill(2, 10**12)

    problems = [d for d in inventory_rebuild(write=False) if isinstance(d, LogProblem)]
    assert [p.field for p in problems] == [
        "trade key missing",
        "trade recorded twice",
        "fill above the chain head",
    ]
    assert f"#{beyond.id}" in str(problems[0].stored)  # written past the store: no key
    assert f"#{twice.id}" in str(problems[1].stored)
    assert f"#{beyond.id}" in str(problems[2].stored)
    code, out = _check()
    assert code == 1
    assert "trade recorded twice" in out and "fill above the chain head" in out


def test_check_compares_the_remembered_legs_and_the_head_and_write_restores_them():
    snapshot(block=100, aapl="100", usdc="100000", fetched=0)
    fills_record_batch(fills=[buy(n, 100 + n) for n in range(1, 4)], now=NOW)
    usdc_folded()
    legs = list(OnchainFillLeg.objects.order_by("id").values_list("pool_key", "block_number"))
    OnchainFillLeg.objects.filter(block_number=102).delete()  # derived state, deletable
    ChainHead.objects.filter(id=1).update(block=10**12)

    found = {(d.pool, d.field) for d in inventory_rebuild(write=False)}
    assert found == {
        ("AAPL", "onchain_fill_legs"),
        (USDC_POOL, "onchain_fill_legs"),
        ("(chain)", "head"),
    }
    inventory_rebuild(write=True)
    assert inventory_rebuild(write=False) == []
    assert sorted(OnchainFillLeg.objects.values_list("pool_key", "block_number")) == sorted(legs)
    assert head_read() == 100


# --- migrations 0012 and 0013 ------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_migrations_move_the_legs_find_the_head_and_refile_keys_recorded_twice():
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    from inventory import append_only
    from inventory.models import EventKey

    snapshot(block=100, aapl="100", usdc="100000", fetched=0)
    record(buy(1, 101))
    executor = MigrationExecutor(connection)
    latest = executor.loader.graph.leaf_nodes("inventory")
    try:
        executor.migrate([("inventory", "0011_eventkey_day")])
        with connection.cursor() as cursor:
            # What 0011 allowed: the pool's list of legs, and one trade id filed under two
            # days (the replay recorded as a second fill).
            cursor.execute(
                'UPDATE "inventory_inventorypool" SET "onchain_fills_after" = %s WHERE "key" = %s',
                [json.dumps([[101, "1"], [105, "2.5"]]), "AAPL"],
            )
            cursor.execute(
                'INSERT INTO "inventory_eventkey" ("scope", "day", "key", "event_id", '
                '"aggregate_type", "aggregate_id", "recorded_at") '
                "SELECT scope, day + 3, key, event_id + 1000, aggregate_type, aggregate_id, "
                'recorded_at FROM "inventory_eventkey" WHERE "scope" = %s',
                ["trade"],
            )
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(latest)
        append_only.install(connection)

    legs = OnchainFillLeg.objects.filter(pool_key="AAPL").order_by("id")
    assert [(leg.block_number, leg.delta, leg.event_id) for leg in legs] == [
        (101, D(1), None),
        (105, D("2.5"), None),
    ]
    assert head_read() == 100
    trade = EventKey.objects.get(scope="trade")
    duplicate = EventKey.objects.get(scope="trade_duplicate")
    assert duplicate.key == f"{trade.key}@{trade.event_id + 1000}"
    # The moved list is not what the log says (no event ids, an extra leg): the check names
    # it and a rebuild restores the legs from the log.
    assert ("AAPL", "onchain_fill_legs") in {
        (d.pool, d.field) for d in inventory_rebuild(write=False)
    }
    inventory_rebuild(write=True)
    assert list(
        OnchainFillLeg.objects.filter(pool_key="AAPL").values_list("block_number", "event_id")
    ) == [(101, Event.objects.get(event_type__endswith="::OnChainOrderFilled").id)]

"""Concurrent writers on PostgreSQL: the database guard lets exactly one operation through."""

from __future__ import annotations

import subprocess
import textwrap
import time

import pytest
from django.db import connection

from inventory.services import inventory_rebuild
from operations.models import ACTIVE_STATUSES, Operation, OperationKind
from tests.service.flows import enable, observe, onchain_fill, pool, register
from tests.service.support import REBALANCING_ENV, ROOT, child_command, queued_operation_tasks

FILLS_PER_PROCESS = 6

CHILD = """
import sys, time
from datetime import UTC, datetime
from decimal import Decimal
from inventory.services import fill_record_onchain

process, start_at = int(sys.argv[1]), float(sys.argv[2])
time.sleep(max(0.0, start_at - time.time()))
for i in range({fills}):
    fill_record_onchain(
        symbol="AAPL",
        tx_hash="0x" + f"{{process:02x}}" * 32,
        log_index=i,
        amount=Decimal("1"),
        direction="Buy",
        price_usdc=Decimal("1"),
        block_timestamp=datetime.now(UTC),
    )
print("done", process)
"""


@pytest.mark.django_db(transaction=True)
def test_two_processes_filling_one_symbol_at_once_create_exactly_one_operation(settings):
    if connection.vendor != "postgresql":
        pytest.skip("row locks and concurrent writers: PostgreSQL only (SQLite serialises)")
    enable(settings)
    register("AAPL")
    observe("AAPL", onchain="115", offchain="50", usdc_onchain="100000", usdc_offchain="100000")
    onchain_fill("AAPL", "1")  # 116/50 = 0.6988: one more share crosses the 0.7 band
    assert Operation.objects.count() == 0

    start_at = time.time() + 2.5
    argv, env = child_command(
        textwrap.dedent(CHILD.format(fills=FILLS_PER_PROCESS)), extra_env=REBALANCING_ENV
    )
    children = [
        subprocess.Popen(
            [*argv, str(n), str(start_at)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in (1, 2)
    ]
    outputs = [child.communicate(timeout=60) for child in children]
    for child, (_, err) in zip(children, outputs, strict=True):
        assert child.returncode == 0, err

    operations = list(Operation.objects.filter(pool="AAPL"))
    assert len(operations) == 1
    assert operations[0].status in ACTIVE_STATUSES
    assert operations[0].kind == OperationKind.REDEMPTION
    assert queued_operation_tasks() == [operations[0].pk]
    assert pool("AAPL").onchain_available == 116 + 2 * FILLS_PER_PROCESS
    assert inventory_rebuild(write=False) == []


CREATE_CHILD = """
import sys, time
from decimal import Decimal
from django.db import transaction
from operations.models import OperationKind
from operations.services import operation_create

process, start_at = int(sys.argv[1]), float(sys.argv[2])
time.sleep(max(0.0, start_at - time.time()))
with transaction.atomic():
    created = operation_create(kind=OperationKind.MINT, pool="AAPL", amount=Decimal(process))
    time.sleep(0.5)  # hold the uncommitted row while the other process inserts
print("created" if created is not None else "refused")
"""


@pytest.mark.django_db(transaction=True)
def test_two_processes_creating_for_one_pool_at_once_get_one_operation():
    if connection.vendor != "postgresql":
        pytest.skip("concurrent writers: PostgreSQL only (SQLite serialises)")
    start_at = time.time() + 2.5
    argv, env = child_command(textwrap.dedent(CREATE_CHILD))
    children = [
        subprocess.Popen(
            [*argv, str(n), str(start_at)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in (1, 2)
    ]
    outputs = [child.communicate(timeout=60) for child in children]
    for child, (_, err) in zip(children, outputs, strict=True):
        assert child.returncode == 0, err
    assert sorted(out.strip() for out, _ in outputs) == ["created", "refused"]
    assert Operation.objects.filter(pool="AAPL").count() == 1
    assert queued_operation_tasks() == [Operation.objects.get().pk]

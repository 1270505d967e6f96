"""Console fixtures: users in the migration-made roles, and a small trading state."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from django.utils import timezone

from inventory.services import asset_register, snapshot_record
from operations.models import Operation, OperationKind, OperationStatus

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT_DIR = ROOT / "var" / "screenshots" / "console"
TOKEN_ADDRESS = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
VAULT_ID = "0x" + "11" * 32


def _user(username: str, group: str | None, *, superuser: bool = False) -> User:
    user = User.objects.create_user(username=username, password="pw-" + username, is_staff=True)
    if superuser:
        user.is_superuser = True
        user.save(update_fields=["is_superuser"])
    if group:
        user.groups.add(Group.objects.get(name=group))
    return user


@pytest.fixture
def operator(db) -> User:
    return _user("olivia", "operators")


@pytest.fixture
def viewer(db) -> User:
    return _user("victor", "viewers")


@pytest.fixture
def operator_client(operator) -> Client:
    client = Client()
    client.force_login(operator)
    return client


@pytest.fixture
def viewer_client(viewer) -> Client:
    client = Client()
    client.force_login(viewer)
    return client


@pytest.fixture
def trading_state(db) -> dict:
    """AAPL registered and observed out of band (too much onchain), USDC balanced, and one
    operation of each interesting kind: active, needing attention, failed."""
    asset_register(
        base_symbol="AAPL",
        token_address=TOKEN_ADDRESS,
        token_symbol="tAAPL",
        vault_id=VAULT_ID,
        changed_by="setup",
    )
    now = timezone.now()
    snapshot_record(
        fetched_at=now - timedelta(seconds=30),
        onchain_equity={"AAPL": Decimal("90")},
        offchain_equity={"AAPL": Decimal("10")},
        onchain_cash=Decimal("500.25"),
        offchain_cash=Decimal("499.75"),
    )
    failed = Operation.objects.create(
        kind=OperationKind.MINT,
        pool="TSLA",
        amount=Decimal("3"),
        aggregate_id="00000000-0000-4000-8000-000000000001",
        status=OperationStatus.FAILED,
        failure_reason="Alpaca refused: insufficient position",
        finished_at=now,
    )
    attention = Operation.objects.create(
        kind=OperationKind.USDC_ALPACA_TO_BASE,
        pool="USDC",
        amount=Decimal("100"),
        aggregate_id="00000000-0000-4000-8000-000000000002",
        status=OperationStatus.WAITING,
        needs_attention=True,
        last_error="withdrawal outcome unknown",
    )
    return {"failed": failed, "attention": attention}

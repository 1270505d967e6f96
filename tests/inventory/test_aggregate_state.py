"""Cached aggregate states: snapshot + tail == full fold, for every aggregate type.

Event histories come from the aggregates themselves: a random walk over each aggregate's
commands, keeping the events of the commands it accepts. For every cut of a history, the state
folded up to the cut goes through the JSON codec of `AggregateState` and the rest is folded on
top: the result must be exactly (field by field, Decimal exponents included) the full fold.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from hypothesis import given, settings
from hypothesis import strategies as st

from inventory.domain import mint, position, redemption, snapshot, usdc
from inventory.domain import settings as settings_domain
from inventory.domain.aggregate import AggregateSpec
from inventory.domain.events import TradeId, TxPurpose
from inventory.domain.lifecycle import Lifecycle
from inventory.domain.values import (
    Direction,
    DomainError,
    RebalanceDirection,
    TransferRef,
    TransferRefKind,
)
from inventory.models import AggregateState, Event
from inventory.services import fill_record_offchain, hedge_place
from inventory.state_codec import Unencodable, decode_state, encode_state
from inventory.store import aggregate_execute, aggregate_load, aggregate_state
from tests.inventory.test_fill_batch import fill, seed
from tests.inventory.test_fill_batch import fills_record_batch as record_batch

D = Decimal
T0 = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)
WALLET = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359"
TOKEN = "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB"


def h(n: int) -> str:
    return "0x" + f"{n:064x}"


def position_commands(i: int) -> list:
    return [
        position.Initialize(symbol="AAPL", threshold=position.shares_threshold(D(1))),
        position.AcknowledgeOnChainFill(
            TradeId(h(i + 1), i), D("1.50"), Direction.BUY, D("10.5"), T0
        ),
        position.AcknowledgeOnChainFill(
            TradeId(h(i + 9), i), D("0.25"), Direction.SELL, D("11"), T0
        ),
        position.PlaceOffChainOrder(i, D("1.5"), Direction.SELL, "alpaca"),
        position.CompleteOffChainOrder(i, D("1.5"), Direction.SELL, "o-1", 1050, T0),
        position.FailOffChainOrder(i, "rejected"),
        position.UpdateThreshold(position.shares_threshold(D("2.5"))),
    ]


def mint_commands(i: int) -> list:
    return [
        mint.RequestMint(symbol="AAPL", quantity=D("30.000"), wallet=WALLET),
        mint.RejectMint(reason="no"),
        mint.AcknowledgeAcceptance(issuer_request_id="i-1", tokenization_request_id="t-1"),
        mint.FailAcceptance(reason="failed"),
        mint.ReceiveTokens(tx_hash=h(5), receipt_id=i, shares_minted=30 * 10**18),
        mint.Finalize(),
        mint.TimeOutMint(reason="late"),
        mint.ReconcileMint(reason="checked", operator="ops"),
    ]


def redemption_commands(i: int) -> list:
    return [
        redemption.SignTransfer(
            symbol="AAPL",
            quantity=D("2.5"),
            token=TOKEN,
            redemption_wallet=WALLET,
            raw_tx=b"\x02\x01",
            tx_hash=h(6),
        ),
        redemption.SendTokens(
            symbol="AAPL", quantity=D("2.5"), redemption_wallet=WALLET, tx_hash=h(6)
        ),
        redemption.FailTransfer(reason="reverted"),
        redemption.Detect(tokenization_request_id="t-2"),
        redemption.FailDetection(reason="none"),
        redemption.Complete(),
        redemption.RejectRedemption(reason="no"),
        redemption.ReconcileRedemption(reason="checked", operator="ops"),
    ]


def usdc_commands(i: int) -> list:
    return [
        usdc.Request(direction=RebalanceDirection.BASE_TO_ALPACA, amount=D("150.25")),
        usdc.FailRequest(reason="no"),
        usdc.RecordTransaction(
            purpose=TxPurpose.VAULT_WITHDRAW, chain_id=8453, raw_tx=b"\x02", tx_hash=h(7)
        ),
        usdc.Initiate(
            direction=RebalanceDirection.BASE_TO_ALPACA,
            amount=D("150.25"),
            withdrawal=TransferRef(TransferRefKind.ONCHAIN_TX, h(7)),
        ),
        usdc.ConfirmWithdrawal(),
        usdc.FailWithdrawal(reason="no"),
        usdc.InitiateBridging(burn_tx=h(8), cctp_nonce=h(9)),
        usdc.ReceiveAttestation(attestation=b"\x01\x02", message=b"\x03"),
        usdc.ConfirmBridging(mint_tx=h(10), amount_received=D("150.2")),
        usdc.FailBridging(reason="no"),
        usdc.InitiateDeposit(deposit=TransferRef(TransferRefKind.ONCHAIN_TX, h(11))),
        usdc.ConfirmDeposit(),
        usdc.FailDeposit(reason="no"),
        usdc.ReconcileUsdc(reason="checked", operator="ops"),
    ]


def snapshot_commands(i: int) -> list:
    at = T0 + timedelta(minutes=i)
    return [
        snapshot.RecordOnchainEquity({"AAPL": D("10.0"), "MSFT": D(3)}, at),
        snapshot.RecordOffchainEquity({"AAPL": D(7)}, at),
        snapshot.RecordOnchainCash(D("100.000001"), at),
        snapshot.RecordOffchainCash(D("5E+2"), at - timedelta(hours=1)),
    ]


def settings_commands(i: int) -> list:
    return [
        settings_domain.ChangeSetting(
            scope="global", setting="paused", old_value=None, new_value="true", changed_by="ops"
        ),
        settings_domain.ChangeSetting(
            scope="global",
            setting="equity_deviation",
            old_value="0.2",
            new_value=f"0.{i + 1}",
            changed_by="ops",
        ),
    ]


AGGREGATES = [
    (position.SPEC, position_commands),
    (mint.SPEC, mint_commands),
    (redemption.SPEC, redemption_commands),
    (usdc.SPEC, usdc_commands),
    (snapshot.SPEC, snapshot_commands),
    (settings_domain.SPEC, settings_commands),
]


def walk(spec: AggregateSpec, commands, choices: list[int]) -> list:
    """The events of the accepted commands of a random walk."""
    state: Lifecycle = Lifecycle.uninitialized()
    events: list = []
    for step, choice in enumerate(choices):
        options = commands(step)
        command = options[choice % len(options)]
        now = T0 + timedelta(seconds=step)
        try:
            decided = list(spec.handle(state, command, now))
        except (DomainError, ValueError, TypeError):
            continue
        for event in decided:
            state = spec.apply(state, event)
        events.extend(decided)
    return events


def folded_from_cache(spec: AggregateSpec, events: list, cut: int) -> Lifecycle | None:
    head = spec.fold(events[:cut])
    try:
        cached = decode_state(encode_state(head))
    except Unencodable:
        assert head.is_failed  # only a failed lifecycle is not cached
        return None
    assert cached == head
    state = cached
    for event in events[cut:]:
        state = spec.apply(state, event)
    return state


@pytest.mark.parametrize(
    ("spec", "commands"), AGGREGATES, ids=lambda v: getattr(v, "aggregate_type", "")
)
@given(choices=st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=25))
@settings(max_examples=60, deadline=None)
def test_a_cached_state_plus_the_tail_equals_the_full_fold(spec, commands, choices):
    events = walk(spec, commands, choices)
    full = spec.fold(events)
    for cut in range(len(events) + 1):
        resumed = folded_from_cache(spec, events, cut)
        if resumed is None:
            continue
        assert resumed == full
        if not full.is_failed:
            assert encode_state(resumed) == encode_state(full)  # exact, exponents included


def test_every_aggregate_reaches_a_live_state_that_is_cached():
    """The walks are not vacuous: each aggregate type has a live state after several events."""
    for spec, commands in AGGREGATES:
        longest = max(
            (
                walk(spec, commands, [n % 17, n % 5, n % 7, n % 3, n % 11, n, n + 1])
                for n in range(40)
            ),
            key=len,
        )
        assert len(longest) >= 2, spec.aggregate_type
        encode_state(spec.fold(longest))


def test_a_state_naming_a_class_outside_the_domain_is_never_built():
    for name in (
        "os:system",
        "builtins:eval",
        "inventory.models:Event",
        "inventory.domain:os",
        "inventory.domain.values:enum.StrEnum",
        "inventory.domain.events:Decimal",
    ):
        with pytest.raises(Unencodable):
            decode_state({"status": "live", "value": {"c": name, "f": {}}})


@pytest.mark.django_db
def test_the_stored_state_row_equals_the_full_fold_after_services_write():
    seed()
    record_batch(fills=[fill(1), fill(2), fill(3, "MSFT", direction="Sell")], now=T0)
    hedge_place(symbol="AAPL", execution_id=7, direction="Sell", shares=D("1.5"), now=T0)
    fill_record_offchain(
        symbol="AAPL",
        execution_id=7,
        shares_filled=D("1.5"),
        direction="Sell",
        broker_order_id="o-7",
        price_cents=20010,
        broker_timestamp=T0,
        now=T0,
    )
    aggregate_execute(
        spec=mint.SPEC,
        aggregate_id="m-1",
        command=mint.RequestMint(symbol="AAPL", quantity=D(3), wallet=WALLET),
        now=T0,
    )
    rows = list(AggregateState.objects.all())
    assert {(r.aggregate_type, r.aggregate_id) for r in rows} >= {
        (position.SPEC.aggregate_type, "AAPL"),
        (position.SPEC.aggregate_type, "MSFT"),
        (snapshot.SPEC.aggregate_type, snapshot.SNAPSHOT_AGGREGATE_ID),
        (mint.SPEC.aggregate_type, "m-1"),
    }
    specs = {spec.aggregate_type: spec for spec, _ in AGGREGATES}
    for row in rows:
        spec = specs[row.aggregate_type]
        full = aggregate_load(spec, row.aggregate_id)
        assert row.sequence == full.sequence
        assert decode_state(row.state) == full.state
        loaded = aggregate_state(spec, row.aggregate_id)
        assert (loaded.state, loaded.sequence) == (full.state, full.sequence)


@pytest.mark.django_db
def test_loading_an_aggregate_with_a_current_cached_state_is_one_statement_reading_no_event():
    seed()
    record_batch(fills=[fill(n) for n in range(1, 40)], now=T0)
    with CaptureQueriesContext(connection) as queries:
        loaded = aggregate_state(position.SPEC, "AAPL")
    assert loaded.sequence == Event.objects.filter(aggregate_id="AAPL").count()
    assert len(queries) == 1
    assert "MAX(" in queries[0]["sql"]  # the log's latest sequence, not its rows


@pytest.mark.django_db
def test_loading_an_aggregate_whose_cached_state_is_behind_reads_only_the_events_after_it():
    seed()
    record_batch(fills=[fill(n) for n in range(1, 40)], now=T0)
    full = aggregate_load(position.SPEC, "AAPL")
    behind = full.sequence - 5
    stored = Event.objects.filter(
        aggregate_type=position.SPEC.aggregate_type, aggregate_id="AAPL", sequence__lte=behind
    ).order_by("sequence")
    row = AggregateState.objects.get(
        aggregate_type=position.SPEC.aggregate_type, aggregate_id="AAPL"
    )
    row.state = encode_state(position.SPEC.fold([e.domain_event() for e in stored]))
    row.sequence = behind
    row.save()

    with CaptureQueriesContext(connection) as queries:
        loaded = aggregate_state(position.SPEC, "AAPL")

    assert (loaded.state, loaded.sequence) == (full.state, full.sequence)
    event_reads = [q["sql"] for q in queries if q["sql"].startswith('SELECT "sequence"')]
    assert len(queries) == 2 and len(event_reads) == 1
    assert '"sequence" >' in event_reads[0] and f"> {behind}" in event_reads[0]


@pytest.mark.django_db
def test_rebuild_with_states_reports_and_rewrites_a_cached_state_that_differs_from_the_log():
    from io import StringIO

    from django.core.management import CommandError, call_command

    seed()
    record_batch(fills=[fill(1), fill(2)], now=T0)
    out = StringIO()
    call_command("rebuild_inventory", "--check", "--states", "--no-progress", stdout=out)
    assert "cached aggregate states match the event log" in out.getvalue()
    row = AggregateState.objects.get(aggregate_id="AAPL")
    good = row.state
    corrupted = aggregate_state(position.SPEC, "AAPL").state.value
    row.state = encode_state(Lifecycle.live(replace(corrupted, net=corrupted.net + 1)))
    row.save(update_fields=["state"])

    with pytest.raises(CommandError):
        call_command("rebuild_inventory", "--check", "--states", "--no-progress", stdout=out)
    assert "state PositionEvent/AAPL" in out.getvalue() or "AAPL" in out.getvalue()
    call_command("rebuild_inventory", "--states", "--no-progress", stdout=StringIO())
    assert AggregateState.objects.get(aggregate_id="AAPL").state == good


class _Undo(Exception):
    pass


@pytest.mark.django_db
def test_a_state_written_by_a_rolled_back_transaction_is_never_served_from_memory():
    """The process remembers the states it writes; a write that was rolled back, and another
    write of a different state at the same sequence, must still load as the log says."""
    from django.db import transaction

    seed()
    record_batch(fills=[fill(n) for n in range(1, 4)], now=T0)
    with pytest.raises(_Undo), transaction.atomic():
        record_batch(fills=[fill(10, amount=D("7"))], now=T0)  # remembered, then undone
        raise _Undo
    after_undo = aggregate_state(position.SPEC, "AAPL")
    record_batch(fills=[fill(11, direction="Sell", amount=D("0.25"))], now=T0)  # same sequence

    full = aggregate_load(position.SPEC, "AAPL")
    loaded = aggregate_state(position.SPEC, "AAPL")
    assert (after_undo.state, after_undo.sequence) == (
        position.SPEC.fold(
            [
                e.domain_event()
                for e in Event.objects.filter(
                    aggregate_id="AAPL",
                    sequence__lte=after_undo.sequence,
                    aggregate_type=position.SPEC.aggregate_type,
                ).order_by("sequence")
            ]
        ),
        full.sequence - 1,
    )
    assert (loaded.state, loaded.sequence) == (full.state, full.sequence)

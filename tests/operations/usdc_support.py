"""Helpers shared by the USDC workflow tests (in-process, end to end and crash safety)."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from inventory.domain import usdc
from inventory.store import aggregate_load
from operations.models import Operation, OperationKind
from operations.services import operation_create
from operations.venues import Venues
from operations.workflows.base import Continue, Done, Wait
from operations.workflows.context import StepContext
from operations.workflows.usdc import WORKFLOW, ZERO_ADDRESS
from tests.operations.conftest import step_events
from venues.sim.server import KEY_WITHDRAW
from venues.sim.venue import SimVenue

WITHDRAW_POST = KEY_WITHDRAW
A2B = OperationKind.USDC_ALPACA_TO_BASE
B2A = OperationKind.USDC_BASE_TO_ALPACA
USDC_UNIT = 10**6


_amounts = itertools.count(60)


def next_amount() -> Decimal:
    """A fresh whole amount above Alpaca's 51 USDC minimum: tests share one sim Alpaca, whose
    earlier withdrawals must not look like this operation's (the lookup matches by amount)."""
    return Decimal(next(_amounts))


def cctp_received(amount: Decimal) -> Decimal:
    """What a burn of `amount` mints with the sim's 1 bp fast fee (whole amounts)."""
    return amount - amount / 10000


def new_usdc(kind: OperationKind, amount: str) -> Operation:
    operation = operation_create(kind=kind, pool="USDC", amount=Decimal(amount))
    assert operation is not None, "another USDC operation is still active"
    return operation


def usdc_events(operation: Operation) -> list:
    return [s.event for s in step_events(usdc.SPEC, operation.aggregate_id)]


def first_event(events: list, kind: type) -> Any:
    """The operation's first event of `kind` (StopIteration when it has none)."""
    return next(e for e in events if isinstance(e, kind))


def order_of(sim_venue: Any, client_order_id: str) -> dict:
    """The simulated Alpaca's order placed with `client_order_id`."""
    return next(o for o in sim_venue.server.orders() if o["client_order_id"] == client_order_id)


def event_types(operation: Operation) -> list[str]:
    return [type(e).__name__ for e in usdc_events(operation)]


def usdc_state(operation: Operation):
    return aggregate_load(usdc.SPEC, operation.aggregate_id).state


def step_context(operation: Operation, venues: Venues) -> StepContext:
    """A context without a lease: drive the workflow one step at a time, as a fresh worker."""
    operation.refresh_from_db()
    return StepContext(
        operation=operation, venues=venues, spec=usdc.SPEC, lease_token="", lease_s=60.0
    )


def step_once(operation: Operation, venues: Venues, *, timeout_s: float = 120.0):
    """One step that makes progress (Waits are slept through); returns its outcome."""
    deadline = time.monotonic() + timeout_s
    while True:
        outcome = WORKFLOW.step(step_context(operation, venues))
        if not isinstance(outcome, Wait):
            return outcome
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting: {outcome}")
        time.sleep(min(outcome.seconds, 0.2))


def drive_to(operation: Operation, venues: Venues, step: usdc.UsdcStep) -> None:
    """Step until the aggregate reaches `step`."""
    for _ in range(30):
        if usdc.step_of(usdc_state(operation)) == step:
            return
        outcome = step_once(operation, venues)
        assert isinstance(outcome, Continue | Done), outcome
    raise AssertionError(f"never reached {step}: {event_types(operation)}")


@dataclass(frozen=True)
class Effects:
    """Onchain and Alpaca effects since a starting point (blocks, withdrawal ids)."""

    withdrawals: int  # OUTGOING withdrawals to our wallet at the sim Alpaca
    burns: int  # depositForBurn transfers from us to the TokenMessenger (source chain)
    mints: int  # USDC minted to us (destination chain)
    vault_deposits: int
    vault_withdrawals: int
    alpaca_deposits: int  # transfers from us to Alpaca's deposit address (Ethereum)


@dataclass
class EffectWatch:
    sim_venue: SimVenue
    venues: Venues
    eth_block: int = 0  # latest block at the start: effects are in later blocks
    base_block: int = 0
    withdrawal_ids: frozenset[str] = frozenset()

    @classmethod
    def start(cls, sim_venue: SimVenue, venues: Venues) -> EffectWatch:
        return cls(
            sim_venue=sim_venue,
            venues=venues,
            eth_block=venues.ethereum.block_number(),
            base_block=venues.base.block_number(),
            withdrawal_ids=frozenset(t["id"] for t in sim_venue.server.transfers()),
        )

    def _count(self, chain, block: int, token: str, from_: str, to: str) -> int:
        found = chain.erc20_transfers(token=token, from_block=block, from_=from_, to=to)
        return len([t for t in found if t.block_number > block])

    def effects(self, kind: OperationKind) -> Effects:
        v = self.venues
        config = v.workers
        mm = v.market_maker_wallet
        vault = v.config.base_orderbook
        messenger = config.cctp_token_messenger
        eth, base = v.ethereum, v.base
        if kind == A2B:
            burns = self._count(eth, self.eth_block, config.usdc_ethereum, mm, messenger)
            mints = self._count(base, self.base_block, config.usdc_base, ZERO_ADDRESS, mm)
        else:
            burns = self._count(base, self.base_block, config.usdc_base, mm, messenger)
            mints = self._count(eth, self.eth_block, config.usdc_ethereum, ZERO_ADDRESS, mm)
        withdrawals = [
            t
            for t in self.sim_venue.server.transfers()
            if t["id"] not in self.withdrawal_ids
            and t["direction"] == "OUTGOING"
            and t["to_address"].lower() == mm.lower()
        ]
        return Effects(
            withdrawals=len(withdrawals),
            burns=burns,
            mints=mints,
            vault_deposits=self._count(base, self.base_block, config.usdc_base, mm, vault),
            vault_withdrawals=self._count(base, self.base_block, config.usdc_base, vault, mm),
            alpaca_deposits=self._count(
                eth, self.eth_block, config.usdc_ethereum, mm, self.sim_venue.deposit_address
            ),
        )


EXACTLY_ONCE = {
    A2B: Effects(
        withdrawals=1, burns=1, mints=1, vault_deposits=1, vault_withdrawals=0, alpaca_deposits=0
    ),
    B2A: Effects(
        withdrawals=0, burns=1, mints=1, vault_deposits=0, vault_withdrawals=1, alpaca_deposits=1
    ),
}


def fund_vault(sim_venue: SimVenue, venues: Venues, amount_usdc: str) -> None:
    """Put USDC into our USDC vault on Base (what a Base -> Alpaca move withdraws)."""
    chains = sim_venue.chains
    base = chains.base
    units = int(Decimal(amount_usdc) * USDC_UNIT)
    mm = chains.market_maker
    chains.mint_usdc(base, mm.address, units)
    chains.vault_deposit(mm, base.usdc, bytes.fromhex(sim_venue.usdc_vault_id[2:]), units)


def drain_usdc(sim_venue: SimVenue, chain_name: str, owner: str) -> None:
    """Burn every USDC unit `owner` holds on a chain (to make the next pull revert)."""
    chains = sim_venue.chains
    chain = chains.chain(chain_name)
    held = chains.balance(chain, chain.usdc, owner)
    if held:
        chains.burn_from(chain, chain.usdc, owner, held)


def business_types(operation: Operation) -> list[str]:
    """Event types without the transaction records (TransactionSigned, TransactionReplaced)."""
    return [
        t for t in event_types(operation) if t not in ("TransactionSigned", "TransactionReplaced")
    ]

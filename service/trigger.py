"""The rebalancing trigger: runs inside every event-appending transaction.

`inventory.store` appends events, applies them to the pools (`inventory.projection`) and sends
`events_appended(events, pools)` inside the same transaction; `on_events_appended` (wired in
`RebalancerConfig.ready`) then:

1. ends the Operation of every terminal operation event in the batch (completed, or failed with
   the event's reason; an operator reconciliation also ends it), which releases the guard;
2. checks every touched pool, plus the pool of each ended operation and USDC (B11), in sorted
   key order: imbalanced, enabled (deployment switch, operator pause, the asset's flag), no
   active operation, pool not waiting for reconciliation, pool not cooling down after a
   failure nor stopped by its circuit breaker (`operations.services.pool_hold_reason`), amount
   (capped) at least the minimum -> `operation_create`, which inserts under the database
   guard and queues the task.

Whatever it writes commits or rolls back with the events. A pool whose operation was ended
without a terminal event (`operations.services.operation_fail`) is re-checked through
`on_operation_released`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings as django_settings
from django.db import transaction
from django.utils import timezone

from inventory import config_stamp
from inventory.domain import events as ev
from inventory.domain.inventory import NotAGenesisEvent, PoolInventory, genesis_from_event
from inventory.domain.plan import BALANCED, REDEMPTION, PlanFacts, Skipped, plan_pool
from inventory.domain.values import USDC_POOL
from inventory.models import Event, InventoryPool
from inventory.projection import pools_lock
from inventory.selectors import (
    RebalancingSettings,
    asset_by_symbol,
    offchain_leavable,
    rebalancing_settings_from,
    rebalancing_settings_load,
)
from inventory.store import StoredEvent
from operations.challengers import challengers_configured, challengers_evaluate
from operations.models import Operation, OperationKind, OperationStatus
from operations.selectors import operation_active_for_pool
from operations.services import (
    BreakerState,
    breaker_hold_reason,
    operation_create,
    operation_finish,
    operation_reconciled,
    pool_breakers_load,
    pool_hold_reason,
)
from service.market import equity_market_open

logger = logging.getLogger(__name__)

# Terminal events that mean the operation did what it was for.
SUCCESS_EVENTS: tuple[type[ev.DomainEvent], ...] = (
    ev.MintCompleted,
    ev.DepositedIntoVault,
    ev.Completed,
    ev.DepositConfirmed,
)
# An operator declared the inflight settled outside the system (B13).
RECONCILED_EVENTS: tuple[type[ev.DomainEvent], ...] = (
    ev.MintReconciled,
    ev.RedemptionReconciled,
    ev.UsdcReconciled,
)


@dataclass(frozen=True)
class PlannedOperation:
    kind: OperationKind
    pool: str
    amount: Decimal
    token_address: str = ""


def on_events_appended(
    sender: Any,
    events: list[StoredEvent],
    pools: set[str],
    rows: dict[str, InventoryPool] | None = None,
    domains: Mapping[str, PoolInventory] | None = None,
    **kwargs: Any,
) -> None:
    trigger_events(events=events, pools=pools, rows=rows, domains=domains)


def on_operation_released(sender: Any, operation: Operation, **kwargs: Any) -> None:
    pools_check(pool_keys={operation.pool, USDC_POOL})


def on_pools_recheck(sender: Any, pools: set[str], **kwargs: Any) -> None:
    """A cool-down ended or an operator resumed pools: check them now."""
    pools_check(pool_keys=pools)


def trigger_events(
    *,
    events: Iterable[StoredEvent],
    pools: Iterable[str],
    rows: dict[str, InventoryPool] | None = None,
    domains: Mapping[str, PoolInventory] | None = None,
) -> list[Operation]:
    """End operations whose terminal event arrived, then check the pools. Returns new ones.

    `rows` are the pool rows the appending transaction locked up front (they cover the pools
    of ended operations and USDC), so checking takes no further pool lock; `domains` are the
    pools the projection just wrote, by key (their rows' `to_domain()`, already built)."""
    to_check = set(pools)
    for stored in events:
        if stored.aggregate_type not in ev.OPERATION_EVENT_TYPES:
            continue
        pool_key = operation_event_settle(stored)
        if pool_key is not None:
            to_check.update({pool_key, USDC_POOL})
    return pools_check(pool_keys=to_check, rows=rows, domains=domains)


def operation_event_settle(stored: StoredEvent) -> str | None:
    """End the Operation if `stored` is terminal; returns the pool to re-check, else None."""
    event = stored.event
    if isinstance(event, RECONCILED_EVENTS):
        operation = operation_reconciled(
            aggregate_id=stored.aggregate_id,
            reason=f"reconciled by {event.operator}: {event.reason}",
            finished_by=f"event:{event.event_type}",
        )
    elif event.TERMINAL:
        succeeded = isinstance(event, SUCCESS_EVENTS)
        operation = operation_finish(
            aggregate_id=stored.aggregate_id,
            status=OperationStatus.COMPLETED if succeeded else OperationStatus.FAILED,
            reason="" if succeeded else str(getattr(event, "reason", event.variant())),
            finished_by=f"event:{event.event_type}",
            needs_attention=not succeeded and _pool_has_inflight(stored),
        )
    else:
        return None
    if operation is not None:
        return operation.pool
    return _genesis_pool(stored.aggregate_type, stored.aggregate_id)


def _genesis_pool(aggregate_type: str, aggregate_id: str) -> str | None:
    """The pool of an operation aggregate, from its stored first event (B3)."""
    if aggregate_type == ev.USDC_REBALANCE:
        return USDC_POOL
    first = (
        Event.objects.filter(aggregate_type=aggregate_type, aggregate_id=aggregate_id)
        .order_by("sequence")
        .first()
    )
    if first is None:
        return None
    try:
        return genesis_from_event(aggregate_type, first.domain_event()).pool_key
    except NotAGenesisEvent:
        logger.error("%s/%s starts with %s", aggregate_type, aggregate_id, first.event_type)
        return None


def _pool_has_inflight(stored: StoredEvent) -> bool:
    """After a failure: is anything still inflight in the operation's pool (needs a human)?"""
    pool_key = _genesis_pool(stored.aggregate_type, stored.aggregate_id)
    if pool_key is None:
        return False
    row = InventoryPool.objects.filter(key=pool_key).first()
    return row is not None and (row.onchain_inflight != 0 or row.offchain_inflight != 0)


def pools_check(
    *,
    pool_keys: Iterable[str],
    rows: dict[str, InventoryPool] | None = None,
    domains: Mapping[str, PoolInventory] | None = None,
) -> list[Operation]:
    """Check each pool (sorted key order) and create the operations that are due.

    The pool rows are locked in key order (`inventory.projection.pools_lock`), unless the
    caller passes `rows` it already holds that cover every key: then no lock is taken here.
    """
    keys = sorted(set(pool_keys))
    if not keys:
        return []
    if not django_settings.REBALANCING.enabled:
        logger.debug("rebalancing off (REBALANCING_MODE), not checking %s", keys)
        return []
    symbols = tuple(key for key in keys if key != USDC_POOL)
    stored, breakers = config_stamp.cached(
        f"trigger:{keys}",
        lambda: (rebalancing_settings_load(symbols), pool_breakers_load(keys)),
    )
    settings = rebalancing_settings_from(stored)
    if settings.paused:
        logger.debug("rebalancing paused by an operator, not checking %s", keys)
        return []
    created = []
    covered = rows is not None and set(keys) <= rows.keys()
    if rows is not None and not covered:
        logger.error(
            "trigger needs pools %s the transaction did not lock up front",
            sorted(set(keys) - rows.keys()),
        )
    # Rows handed over by the appending transaction are already locked: no savepoint needed.
    with nullcontext() if covered else transaction.atomic():
        if not covered:
            rows = pools_lock(keys, create=False)
        assert rows is not None
        for key in keys:
            row = rows.get(key)
            if row is None:
                continue
            domain = None if not covered or domains is None else domains.get(key)
            if challengers_configured():
                # Issue 25: the challengers decide in shadow over the same state, first.
                domain = row.to_domain() if domain is None else domain
                challengers_evaluate(
                    key=key,
                    pool=domain,
                    settings=settings,
                    facts=plan_facts(key=key, pool=domain, breakers=breakers, memo=True),
                )
            planned = pool_plan(row=row, settings=settings, breakers=breakers, pool=domain)
            if planned is None:
                continue
            config = django_settings.REBALANCING
            estimated = None
            if (
                config.monitor_only
                or config.max_cost_bps is not None
                or (config.usdc_daily_cap if key == USDC_POOL else config.equity_daily_cap_shares)
                is not None
            ):
                # The cost gate (issue 24): estimate, then start only within the limits.
                from operations.costgate import gate_check
                from service.decisions import deferral_record

                minimum = (
                    settings.usdc_minimum if key == USDC_POOL else (settings.equity_minimum_shares)
                )
                decision, estimate = gate_check(
                    kind=planned.kind, pool=key, amount=planned.amount, minimum=minimum
                )
                estimated = estimate.usd
                if not decision.start:
                    deferral_record(
                        pool=key,
                        kind=planned.kind,
                        amount=planned.amount,
                        rule=decision.rule,
                        detail=decision.detail,
                        estimated_cost_usd=estimate.usd,
                        value_usd=estimate.value_usd,
                    )
                    continue
            if config.monitor_only:
                # REBALANCING_MODE=monitor: record what would start, write to no venue.
                from service.decisions import proposal_record

                proposal_record(
                    pool=planned.pool,
                    kind=planned.kind,
                    amount=planned.amount,
                    settings=settings,
                    estimated_cost_usd=estimated,
                )
                continue
            operation = operation_create(
                kind=planned.kind,
                pool=planned.pool,
                amount=planned.amount,
                token_address=planned.token_address,
            )
            if operation is not None:
                created.append(operation)
    return created


def pool_plan(
    *,
    row: InventoryPool,
    settings: RebalancingSettings,
    breakers: Mapping[str, BreakerState] | None = None,
    pool: PoolInventory | None = None,
) -> PlannedOperation | None:
    """The operation one pool needs now, or None (with the reason logged).

    Reads the facts (hold, market hours, active operation, what can leave Alpaca, the token
    address of a redemption) and lets the pure `inventory.domain.plan.plan_pool` decide.
    `breakers` are the pool breakers read with `settings` (read here when None); `pool` is
    `row.to_domain()` when the caller has it already."""
    key = row.key
    domain = row.to_domain() if pool is None else pool
    facts = plan_facts(key=key, pool=domain, breakers=breakers)
    plan = plan_pool(key=key, pool=domain, settings=settings, facts=facts)
    if isinstance(plan, Skipped):
        if plan.code != BALANCED:
            logger.log(plan.level, "%s", plan.message)
        return None
    if plan.leavable is not None:
        logger.info("USDC Alpaca-to-Base capped to what can leave: %s", plan.leavable.describe())
    token = ""
    if plan.kind == REDEMPTION:
        asset = asset_by_symbol(key)
        token = asset.token_address if asset is not None else ""
        if not token:
            logger.warning("no redemption for %s: no token address in the asset table", key)
            return None
    logger.info("%s", plan.describe)
    return PlannedOperation(
        kind=OperationKind(plan.kind), pool=key, amount=plan.amount, token_address=token
    )


def plan_facts(
    *,
    key: str,
    pool: PoolInventory,
    breakers: Mapping[str, BreakerState] | None,
    memo: bool = False,
) -> PlanFacts:
    """The facts of the decision for pool `key`, read from the database when the decision
    reaches them; `memo`: each read at most once (the challengers decide several times)."""

    def lazy(read: Callable[[], Any]) -> Callable[[], Any]:
        return functools.cache(read) if memo else read

    return PlanFacts(
        hold_reason=lazy(
            (lambda: pool_hold_reason(pool=key))
            if breakers is None
            else (lambda: breaker_hold_reason(breakers.get(key), timezone.now()))
        ),
        market_open=lazy(equity_market_open),
        active_operation=lazy(lambda: _active_description(key)),
        leavable=lazy(
            lambda: offchain_leavable(
                pool=pool, reserve=django_settings.REBALANCING.offchain_cash_reserve
            )
        ),
    )


def _active_description(key: str) -> str | None:
    active = operation_active_for_pool(pool=key)
    return None if active is None else str(active.pk)

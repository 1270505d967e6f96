"""Alerts: conditions an operator must hear about, evaluated every minute (a django-q schedule)
and shown on the dashboard; when ALERT_WEBHOOK_URL is set each is posted as Slack-compatible
JSON once when it opens, again every ALERT_REPEAT_S while it holds, and once when it resolves.

Conditions (the key makes each one distinct):
- `attention:<op>`: an operation needs attention;
- `overdue:<op>`: an active operation runs past its kind's expected time;
- `venue_poll:<venue>`: no balance snapshot of a venue for ALERT_POLL_STALE_S;
- `drift:<pool>`: a pool needs reconciliation, or a reconcile found drift above tolerance;
- `gas:<chain>`: our signer's native balance is below ALERT_GAS_MINIMUM_ETH.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import requests
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from inventory.models import InventoryPool
from operations.models import ACTIVE_STATUSES, Operation
from rebalancer.console.selectors import last_snapshot_per_venue
from rebalancer.models import AlertState

logger = logging.getLogger(__name__)

ALERT_SCHEDULE_NAME = "rebalancer.alerts"
ALERT_FUNC = "rebalancer.console.alerts.alerts_check"
WEI_PER_ETH = Decimal(10) ** 18
DRIFT_REPORT = "drift_report"
# The kinds the every-minute check evaluates (and so may resolve); reported drift is opened and
# resolved only by `alerts_drift_report` (the reconcile command).
CHECKED_KINDS = frozenset({"attention", "overdue", "venue_poll", "drift", "gas"})


@dataclass(frozen=True)
class Condition:
    key: str
    kind: str
    message: str


def _operation_conditions(now: datetime) -> list[Condition]:
    expected = settings.ALERTS.expected_s
    found = []
    for op in Operation.objects.filter(needs_attention=True).order_by("id")[:500]:
        reason = op.last_error or op.failure_reason or "a human must look"
        found.append(
            Condition(
                f"attention:{op.pk}",
                "attention",
                f"operation {op.pk} ({op.kind} {op.pool} {op.amount}) needs attention: {reason}",
            )
        )
    oldest_allowed = now - timedelta(seconds=min(expected.values()))
    for op in Operation.objects.filter(
        status__in=ACTIVE_STATUSES, created_at__lt=oldest_allowed
    ).order_by("id")[:500]:
        limit_s = expected.get(op.kind)
        started = op.started_at or op.created_at
        if limit_s is not None and (now - started).total_seconds() > limit_s:
            found.append(
                Condition(
                    f"overdue:{op.pk}",
                    "overdue",
                    f"operation {op.pk} ({op.kind} {op.pool}) has run "
                    f"{int((now - started).total_seconds())}s, expected at most {int(limit_s)}s",
                )
            )
    return found


def _poll_conditions(now: datetime) -> list[Condition]:
    if not settings.REBALANCING.enabled:
        return []
    stale_s = settings.ALERTS.poll_stale_s
    found = []
    for venue, at in last_snapshot_per_venue().items():
        if at is None or (now - at).total_seconds() > stale_s:
            since = "never" if at is None else f"not since {at.isoformat()}"
            found.append(
                Condition(
                    f"venue_poll:{venue}",
                    "venue_poll",
                    f"{venue} balances polled {since} (limit {int(stale_s)}s)",
                )
            )
    return found


def _drift_conditions() -> list[Condition]:
    return [
        Condition(
            f"drift:{pool.key}",
            "drift",
            f"pool {pool.key} needs reconciliation: {pool.reconciliation_reason}",
        )
        for pool in InventoryPool.objects.filter(needs_reconciliation=True).order_by("key")
    ]


def _reported_drift_conditions(drifts: Mapping[tuple[str, str], Decimal]) -> list[Condition]:
    tolerance = settings.ALERTS.drift_tolerance
    found = []
    for (pool, venue), difference in sorted(drifts.items()):
        if abs(difference) > tolerance:
            found.append(
                Condition(
                    f"drift_report:{pool}:{venue}",
                    DRIFT_REPORT,
                    f"pool {pool} at {venue}: projected and observed differ by {difference} "
                    f"(tolerance {tolerance})",
                )
            )
    return found


def _gas_conditions(balances_wei: Mapping[str, int] | None) -> list[Condition]:
    minimum = settings.ALERTS.gas_minimum_eth
    found = []
    for chain, wei in sorted((balances_wei or {}).items()):
        eth = Decimal(wei) / WEI_PER_ETH
        if eth < minimum:
            found.append(
                Condition(
                    f"gas:{chain}",
                    "gas",
                    f"signer gas on {chain} is {eth} ETH, below {minimum} ETH",
                )
            )
    return found


def signer_gas_balances() -> dict[str, int]:
    """Our signer's native balance on each chain; empty when the venues are not configured,
    and a chain that cannot be read is left out (logged), never guessed."""
    from operations.venues import VenuesNotConfigured, venues_get

    if not settings.REBALANCING.enabled:
        return {}
    try:
        venues = venues_get()
    except VenuesNotConfigured:
        return {}
    balances = {}
    for name in ("ethereum", "base"):
        try:
            balances[name] = getattr(venues, name).native_balance()
        except Exception as error:  # noqa: BLE001 - a chain outage is a poll alert, not a crash
            logger.warning("gas balance on %s could not be read: %s", name, error)
    return balances


def alerts_evaluate(
    *, now: datetime | None = None, gas_wei: Mapping[str, int] | None = None
) -> list[Condition]:
    moment = now or timezone.now()
    return (
        _operation_conditions(moment)
        + _poll_conditions(moment)
        + _drift_conditions()
        + _gas_conditions(gas_wei)
    )


def _post(text: str, payload: dict) -> bool:
    url = settings.ALERTS.webhook_url
    if url is None:
        return False
    try:
        response = requests.post(url.reveal(), json={"text": text, **payload}, timeout=10)
    except requests.RequestException as error:
        logger.warning("alert webhook unreachable: %s", type(error).__name__)
        return False
    if response.status_code >= 300:
        logger.warning("alert webhook answered HTTP %s", response.status_code)
        return False
    return True


def alerts_record(
    conditions: Iterable[Condition], *, now: datetime | None = None, kinds: set[str] | None = None
) -> list[AlertState]:
    """Open, refresh and resolve alert rows; post what is due. `kinds` limits resolution to
    the kinds that were evaluated (a partial check must not resolve the others)."""
    moment = now or timezone.now()
    current = {c.key: c for c in conditions}
    repeat = timedelta(seconds=settings.ALERTS.repeat_s)
    to_post: list[tuple[AlertState, str]] = []
    with transaction.atomic():
        open_rows = {
            row.key: row
            for row in AlertState.objects.select_for_update().filter(resolved_at__isnull=True)
        }
        for key, condition in current.items():
            row = open_rows.get(key)
            if row is None:
                row, created = AlertState.objects.get_or_create(
                    key=key,
                    defaults={
                        "kind": condition.kind,
                        "message": condition.message,
                        "first_seen_at": moment,
                        "last_seen_at": moment,
                    },
                )
                if not created:  # a resolved condition came back: open it again
                    row.first_seen_at = moment
                    row.resolved_at = None
                    row.last_sent_at = None
                logger.warning("alert opened: %s", condition.message)
            row.message = condition.message
            row.last_seen_at = moment
            row.save()
            if row.last_sent_at is None or moment - row.last_sent_at >= repeat:
                to_post.append((row, "open"))
        for key, row in open_rows.items():
            if key in current or (kinds is not None and row.kind not in kinds):
                continue
            row.resolved_at = moment
            row.save(update_fields=["resolved_at"])
            logger.info("alert resolved: %s", row.message)
            if row.last_sent_at is not None:
                to_post.append((row, "resolved"))
    for row, state in to_post:  # after commit: a slow webhook holds no lock
        text = f"[rebalancer] {'RESOLVED ' if state == 'resolved' else ''}{row.kind}: {row.message}"
        sent = _post(
            text,
            {
                "alert": {
                    "key": row.key,
                    "kind": row.kind,
                    "state": state,
                    "message": row.message,
                    "since": row.first_seen_at.isoformat(),
                }
            },
        )
        if sent and state == "open":
            AlertState.objects.filter(pk=row.pk).update(
                last_sent_at=moment, sent_count=row.sent_count + 1
            )
    return list(AlertState.objects.filter(resolved_at__isnull=True))


def alerts_check(*, now: datetime | None = None) -> list[AlertState]:
    """The scheduled task: evaluate every condition (gas read from the chains) and record."""
    return alerts_record(
        alerts_evaluate(now=now, gas_wei=signer_gas_balances()), now=now, kinds=set(CHECKED_KINDS)
    )


def alerts_drift_report(
    drifts: Mapping[tuple[str, str], Decimal], *, now: datetime | None = None
) -> list[AlertState]:
    """A reconcile's findings: (pool, venue) -> observed minus projected. Drift above
    ALERT_DRIFT_TOLERANCE opens an alert; a later report without it resolves it."""
    return alerts_record(_reported_drift_conditions(drifts), now=now, kinds={DRIFT_REPORT})


def alerts_schedule_ensure(*, using: str = "default") -> None:
    from django_q.models import Schedule

    Schedule.objects.using(using).update_or_create(
        name=ALERT_SCHEDULE_NAME,
        defaults={
            "func": ALERT_FUNC,
            "schedule_type": Schedule.MINUTES,
            "minutes": 1,
            "repeats": -1,
        },
    )

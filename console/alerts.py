"""Alerts: conditions an operator must hear about, evaluated every minute (a django-q schedule)
and shown on the dashboard; when ALERT_WEBHOOK_URL is set each is posted as Slack-compatible
JSON once when it opens, again every ALERT_REPEAT_S while it holds, and once when it resolves.

Conditions (the key makes each one distinct):
- `attention:<op>`: an operation needs attention;
- `overdue:<op>`: an active operation runs past its kind's expected time;
- `venue_poll:<venue>`: no balance snapshot of a venue for ALERT_POLL_STALE_S;
- `drift:<pool>`: a pool needs reconciliation, or a reconcile found drift above tolerance;
- `gas:<chain>`: our signer's native balance is below ALERT_GAS_MINIMUM_ETH.

The webhook (`webhook_post`) is posted to https only (http when ALERT_WEBHOOK_ALLOW_HTTP);
its host is resolved and every address must be public (not private, loopback, link-local,
reserved or multicast) unless ALERT_WEBHOOK_ALLOW_PRIVATE; the connection goes to the
address that was checked (no second lookup); redirects are not followed (a 3xx is a failure);
the whole call (connect, TLS, send, status and headers) has one wall-clock deadline,
ALERT_WEBHOOK_TIMEOUT_S, after which the connection is closed, however slowly the server
trickles. The body of the answer is never read.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from console.models import AlertState
from console.selectors import last_snapshot_per_venue
from inventory.domain.costs import WEI_PER_ETH
from inventory.selectors import pools_needing_reconciliation
from operations.models import ACTIVE_STATUSES, Operation

logger = logging.getLogger(__name__)

ALERT_SCHEDULE_NAME = "rebalancer.alerts"
ALERT_FUNC = "console.alerts.alerts_check"
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
        for pool in pools_needing_reconciliation()
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


class WebhookRefused(Exception):
    """The webhook URL or one of its addresses is not allowed (nothing was sent)."""


def _address_allowed(address: str, *, allow_private: bool) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global or allow_private


class _PinnedConnection(http.client.HTTPSConnection):
    """An HTTP(S) connection to one of `addresses` (already checked, tried in order) for
    `host`: the Host header and the TLS server name and certificate are the host's."""

    def __init__(
        self, host: str, port: int, addresses: list[str], deadline: float, tls: bool
    ) -> None:
        self._tls_context = ssl.create_default_context() if tls else None
        timeout = max(0.001, deadline - time.monotonic())
        super().__init__(host, port, timeout=timeout, context=self._tls_context)
        self._addresses = addresses
        self._deadline = deadline

    def connect(self) -> None:
        error: OSError | None = None
        for address in self._addresses:
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("deadline passed while connecting")
            try:
                sock = socket.create_connection((address, self.port), remaining)
                break
            except OSError as failed:
                error = failed
        else:
            raise error or OSError("no address to connect to")
        self.sock = sock  # the deadline's timer can shut it from here on (TLS handshake too)
        if self._tls_context is not None:
            self.sock = self._tls_context.wrap_socket(sock, server_hostname=self.host)


def webhook_post(
    url: str,
    body: dict,
    *,
    timeout_s: float,
    allow_http: bool = False,
    allow_private: bool = False,
) -> int:
    """POST `body` as JSON to `url`; returns the HTTP status. Raises `WebhookRefused` when
    the URL or an address of its host is not allowed, `TimeoutError` past the deadline, and
    `OSError` / `http.client.HTTPException` when the server cannot be reached or answers
    garbage."""
    from urllib.parse import urlsplit

    deadline = time.monotonic() + timeout_s
    parts = urlsplit(url)
    if parts.scheme not in (("https", "http") if allow_http else ("https",)):
        raise WebhookRefused(
            f"scheme {parts.scheme!r} is not allowed (https, or http with "
            "ALERT_WEBHOOK_ALLOW_HTTP=true)"
        )
    host = parts.hostname
    if not host:
        raise WebhookRefused("the URL names no host")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    refused = [a for a in addresses if not _address_allowed(a, allow_private=allow_private)]
    if refused or not addresses:
        raise WebhookRefused(
            f"{host} resolves to {', '.join(refused) or 'nothing'}: not a public address "
            "(private, loopback and link-local targets need ALERT_WEBHOOK_ALLOW_PRIVATE=true)"
        )
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    connection = _PinnedConnection(
        host, port, addresses, deadline=deadline, tls=parts.scheme == "https"
    )
    expired = threading.Event()

    def cut() -> None:  # the deadline: close the socket under whatever call is waiting on it
        expired.set()
        sock = connection.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(max(0.0, deadline - time.monotonic()), cut)
    timer.daemon = True
    timer.start()
    try:
        connection.request(
            "POST",
            target,
            body=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Connection": "close"},
        )
        status = connection.getresponse().status
    except (OSError, http.client.HTTPException) as error:
        if expired.is_set() or time.monotonic() >= deadline:
            raise TimeoutError(f"no answer within {timeout_s:g} s") from error
        raise
    finally:
        timer.cancel()
        connection.close()
    if expired.is_set():
        raise TimeoutError(f"no answer within {timeout_s:g} s")
    return status


def _post(text: str, payload: dict) -> bool:
    config = settings.ALERTS
    url = config.webhook_url
    if url is None:
        return False
    try:
        status = webhook_post(
            url.reveal(),
            {"text": text, **payload},
            timeout_s=config.webhook_timeout_s,
            allow_http=config.webhook_allow_http,
            allow_private=config.webhook_allow_private,
        )
    except WebhookRefused as error:
        logger.warning("alert webhook refused: %s", error)
        return False
    except (OSError, http.client.HTTPException) as error:  # TimeoutError is an OSError
        logger.warning("alert webhook unreachable: %s: %s", type(error).__name__, error)
        return False
    if status >= 300:
        redirect = " (redirects are not followed)" if 300 <= status < 400 else ""
        logger.warning("alert webhook answered HTTP %s%s", status, redirect)
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

"""`GET /metrics` in Prometheus' text format (prometheus-client), read from the database at
scrape time, so every process serving HTTP reports the same numbers.

Access: from the loopback address without credentials (a scraper on the same host), otherwise
only with an API token that has the `read` scope (`Authorization: Bearer <token>`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from console.models import AlertState
from console.selectors import last_snapshot_per_venue, step_timings
from inventory.domain.inventory import ratio
from inventory.models import ApiTokenScope
from inventory.selectors import api_token_authenticate, pools_list
from operations.models import Operation


class RebalancerCollector:
    """Pool balances and ratios, operations by kind and status, step durations, venue
    snapshot ages and open alerts (venue poll failures among them)."""

    def collect(self) -> Iterator[Metric]:
        balance = GaugeMetricFamily(
            "rebalancer_pool_balance",
            "Pool balance by venue and bucket (shares for equities, USDC for the cash pool)",
            labels=["pool", "venue", "bucket"],
        )
        pool_ratio = GaugeMetricFamily(
            "rebalancer_pool_ratio", "Onchain share of the pool's total", labels=["pool"]
        )
        reconcile = GaugeMetricFamily(
            "rebalancer_pool_needs_reconciliation",
            "1 when a recorded fact could not be applied to the pool",
            labels=["pool"],
        )
        for row in pools_list():
            for venue, observed, available, inflight in (
                ("onchain", row.onchain_observed, row.onchain_available, row.onchain_inflight),
                ("offchain", row.offchain_observed, row.offchain_available, row.offchain_inflight),
            ):
                if observed:
                    balance.add_metric([row.key, venue, "available"], float(available))
                    balance.add_metric([row.key, venue, "inflight"], float(inflight))
            value = ratio(row.to_domain())
            if value is not None:
                pool_ratio.add_metric([row.key], float(value))
            reconcile.add_metric([row.key], 1.0 if row.needs_reconciliation else 0.0)
        yield balance
        yield pool_ratio
        yield reconcile

        operations = GaugeMetricFamily(
            "rebalancer_operations", "Operations by kind and status", labels=["kind", "status"]
        )
        for item in Operation.objects.values("kind", "status").annotate(n=Count("id")):
            operations.add_metric([item["kind"], item["status"]], item["n"])
        yield operations
        attention = GaugeMetricFamily(
            "rebalancer_operations_needing_attention", "Operations a human must look at"
        )
        attention.add_metric([], Operation.objects.filter(needs_attention=True).count())
        yield attention

        steps = GaugeMetricFamily(
            "rebalancer_step_duration_seconds",
            "Step duration quantiles per operation kind over the last day",
            labels=["kind", "step", "quantile"],
        )
        for timing in step_timings(since=timezone.now() - timedelta(days=1)):
            step = timing.step.rsplit("::", 1)[-1]
            steps.add_metric([timing.kind, step, "0.5"], timing.p50_s)
            steps.add_metric([timing.kind, step, "0.95"], timing.p95_s)
        yield steps

        age = GaugeMetricFamily(
            "rebalancer_snapshot_age_seconds",
            "Seconds since the venue's last balance snapshot (absent: never)",
            labels=["venue"],
        )
        now = timezone.now()
        for venue, at in last_snapshot_per_venue().items():
            if at is not None:
                age.add_metric([venue], (now - at).total_seconds())
        yield age

        from operations.costs import cost_totals

        usd, wei = cost_totals(since=now - timedelta(days=1))
        cost = GaugeMetricFamily(
            "rebalancer_cost_usd",
            "Realized cost over the last day by operation kind and component (gas valued at "
            "the ETH/USD price read when recorded; circle_fee, alpaca_fee in USDC at par; "
            "venue: USDCUSD conversions' spread and venue charges, in USD)",
            labels=["kind", "component"],
        )
        for (kind, component), value in sorted(usd.items()):
            cost.add_metric([kind, component], float(value))
        yield cost
        native = GaugeMetricFamily(
            "rebalancer_native_fee_eth",
            "Native fees paid over the last day by operation kind and chain (ETH, exact "
            "from the receipts)",
            labels=["kind", "chain"],
        )
        for (kind, chain), fee_wei in sorted(wei.items()):
            native.add_metric([kind, chain], float(Decimal(fee_wei).scaleb(-18)))
        yield native

        alerts = GaugeMetricFamily(
            "rebalancer_open_alerts",
            "Open alert conditions by kind (venue_poll counts failing venue polls)",
            labels=["kind"],
        )
        for item in (
            AlertState.objects.filter(resolved_at__isnull=True)
            .values("kind")
            .annotate(n=Count("id"))
        ):
            alerts.add_metric([item["kind"]], item["n"])
        yield alerts


def _is_loopback(request: HttpRequest) -> bool:
    """A loopback caller, trusted only with METRICS_TRUST_LOOPBACK=true: behind a reverse
    proxy on the same host every caller is loopback."""
    if not getattr(settings, "METRICS_TRUST_LOOPBACK", False):
        return False
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False


def read_token_presented(request: HttpRequest) -> bool:
    """The request carries a live API token with the read scope (`Authorization: Bearer`)."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if not header.startswith("Bearer "):
        return False
    token = api_token_authenticate(secret=header.removeprefix("Bearer ").strip())
    return token is not None and ApiTokenScope.READ in token.scope_list


def metrics_view(request: HttpRequest) -> HttpResponse:
    if not (_is_loopback(request) or read_token_presented(request)):
        return HttpResponse(
            "metrics: send a token with the read scope (or set METRICS_TRUST_LOOPBACK=true "
            "to scrape from localhost without one)\n",
            status=401,
            content_type="text/plain",
        )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RebalancerCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)

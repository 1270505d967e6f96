"""The admin site of the operator console: the index is the dashboard (pools against their
bands, operations that need attention, step timings, health, the pause switch), refreshed in
place by a small script polling its fragment."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone

from console import charts, selectors
from console.challengers import challengers_page
from inventory.domain.values import InvalidValue
from inventory.services import setting_change

VIEW_PERMISSION = "console.view_console"
# The dashboard's history ranges (?range=hour|day|week), in seconds.
RANGES = {"hour": 3600, "day": 86400, "week": 7 * 86400}
OPERATE_PERMISSION = "console.operate"


def _history_since(pool: Any, now: Any, span_s: float) -> Any:
    """The chart's start: the oldest sample in the range (at least a minute back), else the
    range's start."""
    if pool.history:
        return min(pool.history[0][0], now - timedelta(minutes=1))
    return now - timedelta(seconds=span_s)


def can_view(request: HttpRequest) -> bool:
    user = request.user
    return bool(user.is_active and user.is_staff and user.has_perm(VIEW_PERMISSION))


def can_operate(request: HttpRequest) -> bool:
    user = request.user
    return bool(user.is_active and user.is_staff and user.has_perm(OPERATE_PERMISSION))


def require_operator(request: HttpRequest) -> None:
    if not can_operate(request):
        raise PermissionDenied("operator permission required")


def backtest_urls(site: admin.AdminSite) -> list[Any]:
    """The backtest page (issue 25: `operations.backtest_console`)."""
    from operations.backtest_console import backtest_page, backtest_run_page

    return [
        path(
            "console/backtest/",
            site.admin_view(
                lambda request: backtest_page(site, request, allowed=can_view(request))
            ),
            name="console_backtest",
        ),
        path(
            "console/backtest/<str:task_id>/",
            site.admin_view(
                lambda request, task_id: backtest_run_page(
                    site, request, task_id, allowed=can_view(request)
                )
            ),
            name="console_backtest_run",
        ),
    ]


class ConsoleSite(admin.AdminSite):
    site_header = "Rebalancer console"
    site_title = "Rebalancer"
    index_title = "Dashboard"
    index_template = "console/dashboard.html"
    # The page's width goes to the records, not to a second copy of the index (issue 22).
    enable_nav_sidebar = False

    def get_urls(self) -> list[Any]:
        urls = [
            path(
                "console/fragment/",
                self.admin_view(self.dashboard_fragment),
                name="console_fragment",
            ),
            path(
                "console/resume-pool/<str:pool>/",
                self.admin_view(self.resume_pool),
                name="console_resume_pool",
            ),
            path(
                "console/switch/<str:action>/",
                self.admin_view(self.pause_switch),
                name="console_switch",
            ),
            path(
                "console/challengers/",
                self.admin_view(
                    lambda request: challengers_page(self, request, allowed=can_view(request))
                ),
                name="console_challengers",
            ),
            *backtest_urls(self),
        ]
        return urls + super().get_urls()

    def dashboard_context(self, request: HttpRequest) -> dict[str, Any]:
        if not can_view(request):
            return {"console_visible": False}
        now = timezone.now()
        chosen = request.GET.get("range", "day")
        span_s = RANGES.get(chosen, RANGES["day"])
        pools = selectors.pool_views(now=now, history_s=span_s)
        health = selectors.console_health()
        alerts_by_pool: dict[str, list[Any]] = {}
        for alert in health.open_alerts:
            if pool_key := selectors.alert_pool(alert):
                alerts_by_pool.setdefault(pool_key, []).append(alert)
        return {
            "console_visible": True,
            "can_operate": can_operate(request),
            "now": now,
            "range": chosen if chosen in RANGES else "day",
            "ranges": list(RANGES),
            "pools": [
                {
                    "pool": pool,
                    "band_svg": charts.band_svg(pool),
                    # The chart spans the history that exists within the range, not the range.
                    "history_since": (since := _history_since(pool, now, span_s)),
                    "history_svg": charts.history_svg(pool, since=since, now=now),
                    "alerts": alerts_by_pool.get(pool.key, []),
                }
                for pool in pools
            ],
            "triage": selectors.triage(pools, health),
            "attention": selectors.operations_attention_queue(),
            "active": selectors.operations_active_first(),
            "failures": selectors.operations_recent_failures(),
            "timings": selectors.step_timings(since=now - timedelta(days=1)),
            "health": health,
        }

    def index(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        context = {**self.dashboard_context(request), **(extra_context or {})}
        return super().index(request, extra_context=context)

    def dashboard_fragment(self, request: HttpRequest) -> HttpResponse:
        if not can_view(request):
            raise PermissionDenied("console permission required")
        context = {**self.each_context(request), **self.dashboard_context(request)}
        return TemplateResponse(request, "console/_dashboard_body.html", context)

    def resume_pool(self, request: HttpRequest, pool: str) -> HttpResponse:
        """Close a pool's circuit breaker: a confirmation with a reason, then the operator
        service (audited as a `SettingChanged`, the user as actor)."""
        from operations.operator import OperatorError, operator_resume_pool

        require_operator(request)
        error = ""
        if request.method == "POST":
            try:
                operator_resume_pool(
                    pool=pool,
                    reason=request.POST.get("reason", ""),
                    actor=request.user.get_username(),
                )
            except OperatorError as exc:
                error = str(exc)
            else:
                messages.success(request, f"Pool {pool} resumed; it is checked again now.")
                return HttpResponseRedirect(reverse("admin:index"))
        context = {
            **self.each_context(request),
            "title": f"Confirm: resume pool {pool}",
            "pool": pool,
            "error": error,
            "reason": request.POST.get("reason", "") if request.method == "POST" else "",
        }
        return TemplateResponse(request, "console/confirm_resume_pool.html", context)

    def pause_switch(self, request: HttpRequest, action: str) -> HttpResponse:
        """Pause or resume rebalancing: a confirmation page, then the audited setting change."""
        require_operator(request)
        if action not in ("pause", "resume"):
            raise PermissionDenied("unknown switch action")
        if request.method == "POST":
            try:
                setting_change(
                    scope="global",
                    setting="paused",
                    new_value=action == "pause",
                    changed_by=request.user.get_username(),
                )
            except InvalidValue as error:
                messages.error(request, str(error))
            else:
                messages.success(
                    request,
                    "Rebalancing paused: no new operation starts; running ones continue."
                    if action == "pause"
                    else "Rebalancing resumed.",
                )
            return HttpResponseRedirect(reverse("admin:index"))
        context = {
            **self.each_context(request),
            "title": f"Confirm: {action} rebalancing",
            "action": action,
        }
        return TemplateResponse(request, "console/confirm_switch.html", context)

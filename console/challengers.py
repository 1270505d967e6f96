"""The console's Challengers page (issue 25): per pool, how each challenger of
REBALANCING_CHALLENGERS decided against the settings in force (`as-run`) over the last day
and the last week: operations it would have started (by kind), amount moved and modelled cost
(the cost gate's estimate), and its difference from the live settings."""

from __future__ import annotations

from typing import Any

from django.contrib.admin import AdminSite
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from operations.challengers import WINDOWS, challenger_comparison, challengers_configured


def challengers_page(site: AdminSite, request: HttpRequest, *, allowed: bool) -> HttpResponse:
    """`allowed`: the user may view the console (the site checks)."""
    if not allowed:
        raise PermissionDenied("console permission required")
    now = timezone.now()
    context: dict[str, Any] = {
        **site.each_context(request),
        "title": "Challengers",
        "now": now,
        "windows": list(WINDOWS),
        "configured": challengers_configured(),
        "pools": challenger_comparison(now=now),
    }
    return TemplateResponse(request, "console/challengers.html", context)

"""Plain Django views of the service (the typed API lives in each app's api.py)."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from rebalancer.health import health_report


@require_GET
def health(request: HttpRequest) -> JsonResponse:
    """`GET /api/v1/health` (no token): 200 when healthy, else 503; the body says why."""
    report = health_report()
    return JsonResponse(report.as_dict(), status=200 if report.healthy else 503)

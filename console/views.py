"""Plain Django views of the service (the typed API lives in each app's api.py)."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from service.health import health_report


@require_GET
def health(request: HttpRequest) -> JsonResponse:
    """`GET /api/v1/health`: 200 when healthy, else 503. Without a token the body is only
    `{"healthy": ...}` (load balancers); with a read-scope token it says why (every check)."""
    from console.metrics import read_token_presented

    report = health_report()
    status = 200 if report.healthy else 503
    if not read_token_presented(request):
        return JsonResponse({"healthy": report.healthy}, status=status)
    return JsonResponse(report.as_dict(), status=status)

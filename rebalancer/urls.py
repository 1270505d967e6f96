"""URLs: the operator console (/admin/) and the HTTP API (/api/v1/, docs at /api/v1/docs)."""

from django.contrib import admin
from django.urls import path

from console import views
from console.metrics import metrics_view
from rebalancer.api import api

urlpatterns = [
    path("admin/", admin.site.urls),
    # No token: load balancers and operators probe it (503 when unhealthy). Before the API's
    # routes so that it never needs one.
    path("api/v1/health", views.health, name="health"),
    path("api/v1/", api.urls),
    path("metrics", metrics_view, name="metrics"),
]

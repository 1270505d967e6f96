"""The console's own pages: alert states, and the task queue's schedules and failures (read-only).

Every other model's page lives in its own app's `admin.py` (`inventory/admin.py`,
`operations/admin.py`), built from `console.modeladmin` and registered on the console's site.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django_q.admin import FailAdmin as DjangoQFailAdmin
from django_q.admin import ScheduleAdmin as DjangoQScheduleAdmin
from django_q.models import Failure, Schedule

from console.modeladmin import ReadOnlyAdmin, pool_operations_link
from console.models import AlertState


@admin.register(AlertState)
class AlertStateAdmin(ReadOnlyAdmin):
    list_display = (
        "kind",
        "message_link",
        "first_seen_at",
        "last_seen_at",
        "last_sent_at",
        "resolved_at",
    )
    list_filter = ("kind",)
    empty_text = (
        "No alert has been raised. One opens here when an operation needs attention or runs "
        "past its expected time, a venue has not been read, a pool drifts from what the venues "
        "hold, or the signer's gas runs low (checked every minute); docs/operations.md says what "
        "to do about each."
    )

    @admin.display(description="message")
    def message_link(self, obj: AlertState) -> str:
        """The alert's message, linked to the operation or the pool it concerns."""
        kind, _, rest = obj.key.partition(":")
        subject = rest.split(":")[0]
        if kind in ("attention", "overdue") and subject.isdigit():
            url = reverse("admin:operations_operation_change", args=[int(subject)])
            return format_html('<a href="{}">{}</a>', url, obj.message)
        if kind in ("drift", "drift_report") and subject:
            return format_html("{} &middot; {}", obj.message, pool_operations_link(subject))
        return obj.message


# --- the task queue's schedules -----------------------------------------------------------------


if admin.site.is_registered(Schedule):
    admin.site.unregister(Schedule)


@admin.register(Schedule)
class ScheduleReadOnlyAdmin(DjangoQScheduleAdmin):
    """Read-only: a schedule names an import path that a worker calls, so a web user who could
    add or edit one could run any function. The project's schedules (the sweep) are created by
    code at migrate."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


if admin.site.is_registered(Failure):
    admin.site.unregister(Failure)


@admin.register(Failure)
class FailedTaskAdmin(DjangoQFailAdmin):
    """django-q2's failed tasks, with an explanation when there is none."""

    change_list_template = "console/change_list.html"

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> Any:
        context = {
            "empty_text": (
                "No task has failed. A task of the worker cluster that raises or outlives the "
                "task timeout lands here; an operation's failed steps and retries show on the "
                "operation's own page."
            ),
            **(extra_context or {}),
        }
        return super().changelist_view(request, extra_context=context)

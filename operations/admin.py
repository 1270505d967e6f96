"""The operator console's pages for operations (registered on the console's site).

Operations are read-only rows (workers own them); operator actions (retry now, force-fail with a
reason, reconcile with a reason, cancel) go through `operations.operator`, which records who did
it. Each action asks for confirmation first. Pool breakers are read-only too.
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from console.modeladmin import PoolFilter, ReadOnlyAdmin, pool_operations_link
from console.selectors import current_step_subquery, operation_references, operation_timeline
from console.site import can_operate, require_operator
from console.templatetags import console as console_tags
from inventory.domain.values import InvalidValue
from operations.costs import operation_costs
from operations.models import Operation, PoolBreaker
from operations.operator import (
    OperatorError,
    operation_actions_applicable,
    operator_cancel,
    operator_force_fail,
    operator_reconcile,
    operator_retry_now,
    operator_start,
)
from operations.venues import VenuesNotConfigured

KIND_SHORT = {
    "mint": "mint",
    "redemption": "redemption",
    "usdc_alpaca_to_base": "USDC to Base",
    "usdc_base_to_alpaca": "USDC to Alpaca",
}

ACTIONS = {
    "retry": ("Retry now", False),
    "fail": ("Force-fail", True),
    "reconcile": ("Reconcile inflight", True),
    # Only before anything moved (no recorded step, no venue request out): issue 24.
    "cancel": ("Cancel", True),
}


@admin.register(Operation)
class OperationAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "kind_short",
        "pool",
        "amount",
        "status",
        "step",
        "started",
        "duration",
        "attempts",
        "attention_flag",
        "error",
    )
    list_filter = ("kind", "status", PoolFilter, "needs_attention", "created_at")
    search_fields = ("=aggregate_id",)
    search_help_text = "Exact aggregate id (the operation's UUID; a mint's issuer_request_id)."
    readonly_fields = [field.name for field in Operation._meta.fields]
    ordering = ("-id",)
    change_form_template = "console/operation_detail.html"
    change_list_template = "console/operation_change_list.html"
    list_per_page = 50
    empty_text = (
        "No operation here. An operation starts when a pool leaves its band (a mint, a "
        "redemption or a USDC move); its steps and their events show on its page."
    )

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).annotate(current_step=current_step_subquery())

    @admin.display(description="current step", ordering="current_step")
    def step(self, obj: Operation) -> str:
        step = getattr(obj, "current_step", None)
        return step.rsplit("::", 1)[-1] if step else "not started"

    @admin.display(description="kind", ordering="kind")
    def kind_short(self, obj: Operation) -> str:
        return KIND_SHORT.get(obj.kind, obj.kind)

    @admin.display(description="created", ordering="created_at")
    def started(self, obj: Operation) -> str:
        return format_html(
            '<span title="{}">{}</span><br><small>{}</small>',
            obj.created_at.isoformat(),
            console_tags.when(obj.created_at),
            console_tags.ago(obj.created_at),
        )

    @admin.display(description="attention", ordering="needs_attention")
    def attention_flag(self, obj: Operation) -> str:
        # Only the rows that need a human say so (a cross on every other row read as an error).
        if not obj.needs_attention:
            return ""
        return format_html('<strong class="needs-attention-flag">{}</strong>', "needs attention")

    @admin.display(description="duration")
    def duration(self, obj: Operation) -> str:
        start = obj.started_at or obj.created_at
        end = obj.finished_at or timezone.now()
        seconds = int((end - start).total_seconds())
        return f"{seconds // 3600}h {seconds % 3600 // 60}m {seconds % 60}s"

    @admin.display(description="reason / last error")
    def error(self, obj: Operation) -> str:
        text = obj.failure_reason or obj.last_error
        return text if len(text) <= 120 else text[:117] + "..."

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> Any:
        context = {"can_operate": can_operate(request), **(extra_context or {})}
        return super().changelist_view(request, extra_context=context)

    def start_view(self, request: HttpRequest) -> HttpResponse:
        """Start an operation of a chosen amount (issue 24): the form (GET), a confirmation
        with the cost estimate (POST), then `operations.operator.operator_start` (POST with
        confirm) with the user as actor. Refusals are shown and change nothing."""
        require_operator(request)
        from operations.models import OperationKind

        data = request.POST if request.method == "POST" else request.GET
        values = {name: data.get(name, "").strip() for name in ("kind", "pool", "amount", "reason")}
        error = ""
        confirming = False
        estimated = None
        if request.method == "POST":
            missing = [name for name, value in values.items() if not value]
            if missing:
                error = f"{', '.join(missing)}: required"
            elif values["kind"] not in OperationKind.values:
                error = f"kind={values['kind']!r}: must be one of {', '.join(OperationKind.values)}"
            elif request.POST.get("confirm") != "yes":
                confirming = True
                from operations.costgate import estimate_cost

                try:
                    estimate = estimate_cost(
                        values["kind"], values["pool"].upper(), Decimal(values["amount"])
                    )
                except (InvalidOperation, ValueError):
                    estimate = None
                estimated = None if estimate is None else estimate
            else:
                try:
                    operation, _estimate = operator_start(
                        kind=values["kind"],
                        pool=values["pool"],
                        amount=values["amount"],
                        reason=values["reason"],
                        actor=request.user.get_username(),
                    )
                except (OperatorError, InvalidValue) as exc:
                    error = str(exc)
                else:
                    messages.success(
                        request,
                        format_html(
                            "Operation {} started by {}.", operation.pk, request.user.get_username()
                        ),
                    )
                    return HttpResponseRedirect(
                        reverse("admin:operations_operation_change", args=[operation.pk])
                    )
        context = {
            **self.admin_site.each_context(request),
            "title": "Start an operation",
            "opts": self.model._meta,
            "kinds": OperationKind.choices,
            "values": values,
            "error": error,
            "confirming": confirming,
            "estimate": estimated,
            "mode": settings.REBALANCING.mode,
            "list_url": reverse("admin:operations_operation_changelist"),
        }
        return TemplateResponse(request, "console/operation_start.html", context)

    def get_urls(self) -> list[Any]:
        return [
            path(
                "start/",
                self.admin_site.admin_view(self.start_view),
                name="operations_operation_start",
            ),
            path(
                "<int:operation_id>/act/<str:action>/",
                self.admin_site.admin_view(self.act_view),
                name="operations_operation_act",
            ),
        ] + super().get_urls()

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        context = dict(extra_context or {})
        operation = Operation.objects.filter(pk=object_id).first()
        if operation is not None and self.has_view_permission(request, operation):
            events = operation_timeline(operation)
            for item in events:
                item["payload_json"] = json.dumps(item["row"].payload, indent=2, sort_keys=True)
            context.update(
                {
                    "operation_events": events,
                    "references": operation_references(events, kind=operation.kind),
                    "can_operate": can_operate(request),
                    "operation_actions": [
                        (name, ACTIONS[name][0]) for name in operation_actions_applicable(operation)
                    ],
                    "operation_obj": operation,
                    "operation_costs": operation_costs(operation),
                }
            )
        return super().change_view(request, object_id, form_url, extra_context=context)

    def act_view(self, request: HttpRequest, operation_id: int, action: str) -> HttpResponse:
        """Confirmation page (GET), then the operator service (POST) with the user as actor."""
        require_operator(request)
        if action not in ACTIONS:
            raise PermissionDenied(f"unknown action {action!r}")
        operation = Operation.objects.filter(pk=operation_id).first()
        if operation is None:
            messages.error(request, f"operation {operation_id} does not exist")
            return HttpResponseRedirect(reverse("admin:operations_operation_changelist"))
        label, needs_reason = ACTIONS[action]
        detail_url = reverse("admin:operations_operation_change", args=[operation_id])
        if action not in operation_actions_applicable(operation):
            # Not offered (a finished operation, a cancel after something moved): no
            # confirmation page for it either, and nothing is changed.
            messages.error(
                request,
                f"{label} does not apply to operation {operation_id} ({operation.status}); "
                "nothing was changed",
            )
            return HttpResponseRedirect(detail_url)
        error = ""
        if request.method == "POST":
            actor = request.user.get_username()
            reason = request.POST.get("reason", "")
            try:
                if action == "retry":
                    operator_retry_now(operation_id=operation_id, actor=actor)
                elif action == "cancel":
                    operator_cancel(operation_id=operation_id, reason=reason, actor=actor)
                elif action == "fail":
                    operator_force_fail(operation_id=operation_id, reason=reason, actor=actor)
                else:
                    operator_reconcile(operation_id=operation_id, reason=reason, actor=actor)
            except (OperatorError, VenuesNotConfigured) as exc:
                error = str(exc)
            else:
                messages.success(
                    request,
                    format_html("{} done on operation {} by {}.", label, operation_id, actor),
                )
                return HttpResponseRedirect(detail_url)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Confirm: {label} operation {operation_id}",
            "opts": self.model._meta,
            "operation": operation,
            "action": action,
            "action_label": label,
            "needs_reason": needs_reason,
            "error": error,
            "reason": request.POST.get("reason", "") if request.method == "POST" else "",
            "detail_url": detail_url,
        }
        return TemplateResponse(request, "console/confirm_operation_action.html", context)


@admin.register(PoolBreaker)
class PoolBreakerAdmin(ReadOnlyAdmin):
    """Failures do not loop: each pool's failures in a row, cool-down and circuit breaker
    (resume with `manage.py operation resume-pool <pool> --reason ... --actor ...`)."""

    list_display = (
        "pool_link",
        "consecutive_failures",
        "cooldown_until",
        "open_since",
        "last_failure_reason",
        "updated_at",
    )
    empty_text = (
        "No pool has failed: a pool appears here after one of its operations fails, with its "
        "failures in a row, its cool-down and, after REBALANCER_BREAKER_FAILURES in a row, its "
        "open circuit breaker (resume it from the dashboard or with manage.py operation "
        "resume-pool)."
    )

    @admin.display(description="pool", ordering="pool")
    def pool_link(self, obj: PoolBreaker) -> str:
        return pool_operations_link(obj.pool)

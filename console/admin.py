"""The operator console's admin pages.

- Operations: read-only rows (workers own them); operator actions (retry now, force-fail with a
  reason, reconcile with a reason) go through `operations.operator`, which records who did it.
  Each action asks for confirmation first.
- Event log: read-only for everyone, superusers included; payloads pretty-printed; no
  full-table count.
- Thresholds and assets: edited through `inventory.services` (validated, audited as
  `SettingChanged` events, shown on the page), never by saving a row directly.
"""

from __future__ import annotations

import json
from datetime import UTC
from decimal import Decimal, InvalidOperation
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import OuterRef, Subquery
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django_q.admin import FailAdmin as DjangoQFailAdmin
from django_q.admin import ScheduleAdmin as DjangoQScheduleAdmin
from django_q.models import Failure, Schedule

from inventory.domain import settings as settings_domain
from inventory.domain.events import SETTINGS
from inventory.domain.inventory import detect_imbalance, ratio
from inventory.domain.values import USDC_POOL, InvalidValue
from inventory.models import (
    ApiToken,
    ApiTokenScope,
    Asset,
    Event,
    InventoryPool,
    RebalancingSettingsRow,
)
from inventory.selectors import offchain_cash_latest, rebalancing_settings_get
from inventory.services import (
    api_token_create,
    api_token_revoke,
    asset_register,
    setting_change,
)
from operations.costs import operation_costs
from operations.models import ACTIVE_STATUSES, Operation, PoolBreaker
from operations.operator import (
    OperatorError,
    operation_cancellable,
    operator_cancel,
    operator_force_fail,
    operator_reconcile,
    operator_retry_now,
    operator_start,
)
from operations.venues import VenuesNotConfigured
from console.paginator import CappedCountPaginator
from console.selectors import (
    current_step_subquery,
    operation_events,
    operation_references,
)
from console.site import can_operate, require_operator
from console.models import AlertState
from service.selectors import pool_state
from console.templatetags import console as console_tags

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


# --- read-only records --------------------------------------------------------------------------


class ReadOnlyAdmin(admin.ModelAdmin):
    paginator = CappedCountPaginator
    show_full_result_count = False
    change_list_template = "console/change_list.html"
    # Said on an empty list: what the page would hold, and when something appears on it.
    empty_text = ""

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> Any:
        context = {"empty_text": self.empty_text, **(extra_context or {})}
        return super().changelist_view(request, extra_context=context)

    class Media:
        css = {"all": ("console/console.css",)}

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_search_results(self, request: HttpRequest, queryset: Any, search_term: str) -> Any:
        # Searching is by exact aggregate id, case-sensitive, so it uses that column's index
        # (the admin's `=field` is iexact, a scan).
        term = search_term.strip()
        return (queryset.filter(aggregate_id=term), False) if term else (queryset, False)


class PoolFilter(admin.SimpleListFilter):
    title = "pool"
    parameter_name = "pool"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(key, key) for key in InventoryPool.objects.values_list("key", flat=True)]

    def queryset(self, request: HttpRequest, queryset: Any) -> Any:
        return queryset.filter(pool=self.value()) if self.value() else queryset


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
            events = operation_events(operation)
            for item in events:
                item["payload_json"] = json.dumps(item["row"].payload, indent=2, sort_keys=True)
            context.update(
                {
                    "operation_events": events,
                    "references": operation_references(events, kind=operation.kind),
                    "can_operate": can_operate(request),
                    # Only where they apply: a finished operation has nothing to retry, fail or
                    # reconcile.
                    "operation_actions": [
                        (name, label)
                        for name, (label, _reason) in ACTIONS.items()
                        if operation.status in ACTIVE_STATUSES
                        and (name != "cancel" or operation_cancellable(operation))
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


class EventTypeFilter(admin.SimpleListFilter):
    """Event types from the codec's registry: no DISTINCT over the whole log."""

    title = "event type"
    parameter_name = "event_type"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        from inventory.domain.events import EVENT_CLASSES

        return [(name, name) for name in sorted(EVENT_CLASSES)]

    def queryset(self, request: HttpRequest, queryset: Any) -> Any:
        return queryset.filter(event_type=self.value()) if self.value() else queryset


class AggregateTypeFilter(admin.SimpleListFilter):
    title = "aggregate type"
    parameter_name = "aggregate_type"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        from inventory.domain import events

        names = (
            events.POSITION,
            events.MINT,
            events.REDEMPTION,
            events.USDC_REBALANCE,
            events.SNAPSHOT,
            events.SETTINGS,
            events.DECISIONS,
            events.COSTS,
        )
        return [(name, name) for name in names]

    def queryset(self, request: HttpRequest, queryset: Any) -> Any:
        return queryset.filter(aggregate_type=self.value()) if self.value() else queryset


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "aggregate_type",
        "aggregate_link",
        "sequence",
        "event_type",
        "recorded",
    )
    list_filter = (AggregateTypeFilter, EventTypeFilter)
    empty_text = (
        "No event here. Every fill, hedge, balance snapshot, operation step and setting change "
        "is recorded in this log, in order, and never changed."
    )

    def get_queryset(self, request: HttpRequest) -> Any:
        operation = Operation.objects.filter(aggregate_id=OuterRef("aggregate_id")).values("pk")
        return super().get_queryset(request).annotate(operation_id=Subquery(operation[:1]))

    @admin.display(description="aggregate id", ordering="aggregate_id")
    def aggregate_link(self, obj: Event) -> str:
        """An operation's events link to the operation."""
        operation_id = getattr(obj, "operation_id", None)
        if operation_id is None:
            return obj.aggregate_id
        return format_html(
            '{}<br><a href="{}">operation #{}</a>',
            obj.aggregate_id,
            reverse("admin:operations_operation_change", args=[operation_id]),
            operation_id,
        )

    @admin.display(description="recorded", ordering="recorded_at")
    def recorded(self, obj: Event) -> str:
        return format_html(
            '<span title="{}">{}</span>',
            obj.recorded_at.isoformat(),
            obj.recorded_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC",
        )

    search_fields = ("=aggregate_id",)
    search_help_text = "Exact aggregate id (a symbol, an operation's UUID, venues, global)."

    ordering = ("-id",)
    list_per_page = 50
    fields = (
        "id",
        "aggregate_type",
        "aggregate_id",
        "sequence",
        "event_type",
        "event_version",
        "recorded_at",
        "pretty_payload",
        "pretty_metadata",
    )
    readonly_fields = fields

    @admin.display(description="payload")
    def pretty_payload(self, obj: Event) -> str:
        return format_html('<pre class="payload">{}</pre>', json.dumps(obj.payload, indent=2))

    @admin.display(description="metadata")
    def pretty_metadata(self, obj: Event) -> str:
        return format_html('<pre class="payload">{}</pre>', json.dumps(obj.metadata, indent=2))


@admin.register(InventoryPool)
class InventoryPoolAdmin(ReadOnlyAdmin):
    list_display = (
        "key",
        "kind",
        "onchain_available",
        "onchain_inflight",
        "offchain_available",
        "offchain_inflight",
        "alpaca_balances",
        "ratio_against_band",
        "state",
        "updated",
    )
    list_filter = ("kind", "needs_reconciliation")
    empty_text = "No pool yet: a pool appears with the first fill or venue poll of its asset."

    @admin.display(description="ratio (band)")
    def ratio_against_band(self, obj: InventoryPool) -> str:
        pool = obj.to_domain()
        threshold = rebalancing_settings_get().threshold_for(obj.key)
        value = ratio(pool)
        shown = "n/a" if value is None else f"{value:.4f}"
        return f"{shown} ({threshold.lower}-{threshold.upper})"

    @admin.display(description="Alpaca balances")
    def alpaca_balances(self, obj: InventoryPool) -> str:
        """The USDC pool's offchain side is two balances at Alpaca (spec 15.5): USD cash (and
        what of it may be withdrawn) and the USDC position, from the latest read."""
        if obj.key != USDC_POOL:
            return ""
        cash = offchain_cash_latest()
        if cash is None:
            return "not read yet"
        return format_html(
            'cash <span data-balance="cash">{}</span><br>'
            'withdrawable <span data-balance="cash_withdrawable">{}</span><br>'
            'USDC <span data-balance="usdc">{}</span><br><small>read {}</small>',
            cash.cash_balance,
            "not read" if cash.cash_withdrawable is None else cash.cash_withdrawable,
            "not read" if cash.usdc_balance is None else cash.usdc_balance,
            console_tags.when(cash.fetched_at),
        )

    @admin.display(description="updated", ordering="updated_at")
    def updated(self, obj: InventoryPool) -> str:
        return format_html(
            "{}<br><small>{}</small>",
            console_tags.when(obj.updated_at),
            console_tags.ago(obj.updated_at),
        )

    @admin.display(description="state")
    def state(self, obj: InventoryPool) -> str:
        pool = obj.to_domain()
        imbalance = detect_imbalance(pool, rebalancing_settings_get().threshold_for(obj.key))
        text = pool_state(pool, imbalance, obj).replace("_", " ")
        link = reverse("admin:operations_operation_changelist") + f"?pool={obj.key}"
        return format_html('{} &middot; <a href="{}">operations</a>', text, link)


def _pool_operations_link(pool: str) -> str:
    url = reverse("admin:operations_operation_changelist") + f"?pool={pool}"
    return format_html('<a href="{}">{}</a>', url, pool)


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
        return _pool_operations_link(obj.pool)


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
            return format_html("{} &middot; {}", obj.message, _pool_operations_link(subject))
        return obj.message


# --- audited settings and assets ------------------------------------------------------------------


def setting_history(scope: str, limit: int = 50) -> list[Event]:
    """The newest audited changes of one scope ("global" or an asset's symbol)."""
    return list(
        Event.objects.filter(aggregate_type=SETTINGS, aggregate_id=scope).order_by("-sequence")[
            :limit
        ]
    )


class AuditedSettingsForm(forms.ModelForm):
    """Each field is checked by the domain's parser, so the message names what is wrong.

    A stale form never undoes another operator's change: every field carries the value it was
    rendered with (Django's hidden initial, `initial-<name>`), so `changed_data` names only
    the fields this operator edited, and only those are saved (a pause switched on by someone
    else after the form was opened stays on). A field this operator edited that was also
    changed since the form was opened is refused, field by field: the form comes back with
    the error naming the value it was opened with and the current one, the other fields show
    their current values, and saving again applies the operator's value over the current one.
    A submission without the hidden initials (a script) is compared with the current values.
    """

    scope_name: str = settings_domain.GLOBAL_SCOPE
    setting_names: tuple[str, ...] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        names = [name for name in self.setting_names if name in self.fields]
        for name in names:
            self.fields[name].show_hidden_initial = True
        if self.is_bound:
            missing = [n for n in names if self.add_initial_prefix(n) not in self.data]
            if missing:
                data = self.data.copy()
                for name in missing:
                    data[self.add_initial_prefix(name)] = self._hidden(name, self.initial.get(name))
                self.data = data

    def _hidden(self, name: str, value: Any) -> str:
        """The text the hidden initial input renders for `value`."""
        field = self.fields[name]
        shown = field.hidden_widget().format_value(field.prepare_value(value))
        return "" if shown is None else str(shown)

    def _rendered(self, name: str) -> Any:
        """The value the form was rendered with (its hidden initial), parsed."""
        field = self.fields[name]
        raw = self._widget_data_value(field.hidden_widget(), self.add_initial_prefix(name))
        try:
            return field.to_python(raw)
        except forms.ValidationError:
            return raw

    def _scope(self) -> str:
        return self.scope_name

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        for name in self.setting_names:
            if name not in cleaned:
                continue
            raw = cleaned[name]
            try:
                cleaned[name] = settings_domain.parse_setting(
                    self._scope(), name, "" if raw is None else raw
                )
            except InvalidValue as error:
                self.add_error(name, error.rule if hasattr(error, "rule") else str(error))
        self._refuse_concurrent_changes()
        return cleaned

    def _refuse_concurrent_changes(self) -> None:
        if self.instance.pk is None:
            return
        # The admin's change view runs in one transaction: the row stays locked until saved.
        current = type(self.instance).objects.select_for_update().get(pk=self.instance.pk)
        names = [name for name in self.setting_names if name in self.fields]
        conflicts = [
            (name, self._rendered(name), getattr(current, name))
            for name in self.changed_data
            if name in names and self._rendered(name) != getattr(current, name)
        ]
        if not conflicts:
            return
        data = self.data.copy()
        for name in names:
            value = getattr(current, name)
            data[self.add_initial_prefix(name)] = self._hidden(name, value)
            if name in self.changed_data:
                continue  # the operator's edit stays in the form
            if isinstance(self.fields[name], forms.BooleanField):
                data.pop(name, None)
                if value:
                    data[name] = "on"
            else:
                data[name] = self._hidden(name, value)
        self.data = data
        who = getattr(current, "updated_by", "") or "someone else"
        for name, opened, now in conflicts:
            self.add_error(
                name,
                f"{name} was changed by {who} since you opened this form: it was "
                f"{settings_domain.format_setting(opened) or 'empty'}, it is now "
                f"{settings_domain.format_setting(now) or 'empty'}. Nothing was saved; the "
                "other fields now show their current values. Save again to replace it with "
                "your value.",
            )


class SettingsForm(AuditedSettingsForm):
    setting_names = tuple(settings_domain.GLOBAL_SETTINGS)

    class Meta:
        model = RebalancingSettingsRow
        fields = list(settings_domain.GLOBAL_SETTINGS)


class AuditedChangesMixin:
    """Saves go through `inventory.services.setting_change`: one audited event per field."""

    change_form_template = "console/audited_change_form.html"

    def audited_scope(self, obj: Any) -> str:
        raise NotImplementedError

    def audited_settings(self) -> tuple[str, ...]:
        raise NotImplementedError

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        scope = self.audited_scope(obj)
        for name in self.audited_settings():
            if name in form.changed_data:
                setting_change(
                    scope=scope,
                    setting=name,
                    new_value=form.cleaned_data[name],
                    changed_by=request.user.get_username(),
                )
        obj.refresh_from_db()

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return can_operate(request) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        context = dict(extra_context or {})
        if object_id is not None:
            obj = self.get_object(request, object_id)
            if obj is not None:
                context["setting_history"] = setting_history(self.audited_scope(obj))
        return super().changeform_view(request, object_id, form_url, extra_context=context)


@admin.register(RebalancingSettingsRow)
class RebalancingSettingsAdmin(AuditedChangesMixin, admin.ModelAdmin):
    form = SettingsForm
    list_display = (
        "scope",
        "paused",
        "equity_target_ratio",
        "equity_deviation",
        "usdc_target_ratio",
        "usdc_deviation",
        "updated_by",
        "updated_at",
    )
    fields = list(settings_domain.GLOBAL_SETTINGS)

    def audited_scope(self, obj: Any) -> str:
        return settings_domain.GLOBAL_SCOPE

    def audited_settings(self) -> tuple[str, ...]:
        return tuple(settings_domain.GLOBAL_SETTINGS)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        from inventory.services import settings_row_ensure

        settings_row_ensure()
        return super().changelist_view(request, extra_context)


class AssetChangeForm(AuditedSettingsForm):
    setting_names = tuple(settings_domain.ASSET_SETTINGS)

    class Meta:
        model = Asset
        fields = list(settings_domain.ASSET_SETTINGS)

    def _scope(self) -> str:
        return self.instance.base_symbol


class ServiceFormMixin:
    """An add page replaced by a form whose submission calls one service (validated, audited):
    `service_form_path` / `service_form_name` name its URL; `form_submit` runs the service and
    puts a refused field's message on the form."""

    service_form_path = "new/"
    service_form_name = ""

    def get_urls(self) -> list[Any]:
        return [
            path(
                self.service_form_path,
                self.admin_site.admin_view(self.service_form_view),
                name=self.service_form_name,
            ),
        ] + super().get_urls()

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        return HttpResponseRedirect(reverse(f"admin:{self.service_form_name}"))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return can_operate(request) and super().has_add_permission(request)

    @staticmethod
    def form_submit(request: HttpRequest, form: forms.Form, call: Any) -> Any:
        """The service's result, or None when the form or the service refused the input."""
        if request.method != "POST" or not form.is_valid():
            return None
        try:
            return call(form.cleaned_data)
        except InvalidValue as error:
            form.add_error(error.field if error.field in form.fields else None, str(error))
            return None

    def form_page(self, request: HttpRequest, title: str, template: str, **extra: Any) -> Any:
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "opts": self.model._meta,
            **extra,
        }
        return TemplateResponse(request, template, context)


def _base_token_reader() -> Any:
    """The Base chain client that reads the token's decimals() and symbol() at registration
    (None when the venues are not configured: the registration then says it was not checked)."""
    from operations.venues import venues_get

    try:
        return venues_get().base
    except VenuesNotConfigured:
        return None


class AssetAddForm(forms.Form):
    base_symbol = forms.CharField(max_length=32, help_text="e.g. AAPL")
    token_symbol = forms.CharField(max_length=40, help_text="e.g. tAAPL")
    token_address = forms.CharField(max_length=42, help_text="0x... (EIP-55 checksummed)")
    vault_id = forms.CharField(max_length=66, help_text="0x followed by 64 hex digits")
    decimals = forms.IntegerField(initial=18, min_value=0, max_value=77)
    rebalancing_enabled = forms.BooleanField(initial=True, required=False)


@admin.register(Asset)
class AssetAdmin(ServiceFormMixin, AuditedChangesMixin, admin.ModelAdmin):
    form = AssetChangeForm
    list_display = (
        "base_symbol",
        "token_symbol",
        "token_address",
        "decimals",
        "rebalancing_enabled",
        "target_ratio",
        "deviation",
        "updated_at",
    )
    list_filter = ("rebalancing_enabled",)
    search_fields = ("base_symbol", "token_symbol", "token_address")
    readonly_fields = ("base_symbol", "token_symbol", "token_address", "decimals", "vault_id")
    fields = readonly_fields + tuple(settings_domain.ASSET_SETTINGS)
    actions = ("enable_rebalancing", "disable_rebalancing")
    service_form_path = "register/"
    service_form_name = "asset_register"

    def audited_scope(self, obj: Any) -> str:
        return obj.base_symbol

    def audited_settings(self) -> tuple[str, ...]:
        return tuple(settings_domain.ASSET_SETTINGS)

    def service_form_view(self, request: HttpRequest) -> HttpResponse:
        """Register an asset through `inventory.services.asset_register` (validated, audited)."""
        require_operator(request)
        form = AssetAddForm(request.POST or None)
        reader = _base_token_reader() if request.method == "POST" else None
        asset = self.form_submit(
            request,
            form,
            lambda data: asset_register(
                changed_by=request.user.get_username(), token_reader=reader, **data
            ),
        )
        if asset is not None:
            if reader is None:
                messages.warning(
                    request,
                    "The Base chain is not configured: the token's decimals() and symbol() "
                    "were not checked against the contract.",
                )
            messages.success(request, f"Registered {asset.base_symbol}.")
            return HttpResponseRedirect(reverse("admin:inventory_asset_changelist"))
        return self.form_page(
            request, "Register an asset", "console/asset_register.html", form=form
        )

    def _switch(self, request: HttpRequest, queryset: Any, enabled: bool) -> None:
        require_operator(request)
        changed = 0
        for asset in queryset:
            if setting_change(
                scope=asset.base_symbol,
                setting="rebalancing_enabled",
                new_value=enabled,
                changed_by=request.user.get_username(),
            ):
                changed += 1
        word = "enabled" if enabled else "disabled"
        messages.success(request, f"Rebalancing {word} for {changed} asset(s).")

    @admin.action(description="Enable rebalancing for the selected assets")
    def enable_rebalancing(self, request: HttpRequest, queryset: Any) -> None:
        self._switch(request, queryset, True)

    @admin.action(description="Disable rebalancing for the selected assets")
    def disable_rebalancing(self, request: HttpRequest, queryset: Any) -> None:
        self._switch(request, queryset, False)


# --- API tokens -----------------------------------------------------------------------------------


class ApiTokenCreateForm(forms.Form):
    name = forms.CharField(max_length=64, help_text="letters, digits, '_', '.' or '-'")
    scopes = forms.MultipleChoiceField(
        choices=ApiTokenScope.choices, widget=forms.CheckboxSelectMultiple
    )


@admin.register(ApiToken)
class ApiTokenAdmin(ServiceFormMixin, admin.ModelAdmin):
    """Tokens for the trading side's HTTP API: create (the secret is shown once), list, revoke.
    Only the hash is stored; revoking keeps the row for the audit trail."""

    list_display = (
        "name",
        "prefix",
        "scopes",
        "created_by",
        "created_at",
        "revoked_at",
        "revoked_by",
    )
    list_filter = ("scopes",)
    readonly_fields = (
        "name",
        "prefix",
        "scopes",
        "created_by",
        "created_at",
        "revoked_at",
        "revoked_by",
    )
    fields = readonly_fields
    exclude = ("token_hash",)
    actions = ("revoke_tokens",)
    service_form_path = "create/"
    service_form_name = "api_token_create"

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def service_form_view(self, request: HttpRequest) -> HttpResponse:
        require_operator(request)
        form = ApiTokenCreateForm(request.POST or None)
        created = self.form_submit(
            request,
            form,
            lambda data: api_token_create(
                name=data["name"],
                scopes=data["scopes"],
                created_by=request.user.get_username(),
            ),
        )
        return self.form_page(
            request,
            "Create an API token",
            "console/api_token_create.html",
            form=None if created else form,
            secret=created[1] if created else None,
        )

    @admin.action(description="Revoke the selected tokens")
    def revoke_tokens(self, request: HttpRequest, queryset: Any) -> None:
        require_operator(request)
        revoked = []
        for token in queryset.filter(revoked_at__isnull=True):
            api_token_revoke(name=token.name, revoked_by=request.user.get_username())
            revoked.append(token.name)
        messages.success(request, f"Revoked: {', '.join(revoked) or 'nothing (already revoked)'}.")


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

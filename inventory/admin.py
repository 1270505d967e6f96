"""The operator console's pages for the inventory (registered on the console's site).

- Event log: read-only for everyone, superusers included; payloads pretty-printed; no
  full-table count.
- Pools: read-only, with their ratio against the band and their state.
- Thresholds and assets: edited through `inventory.services` (validated, audited as
  `SettingChanged` events, shown on the page), never by saving a row directly.
- API tokens: created and revoked through `inventory.services`.
"""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.db.models import OuterRef, Subquery
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html

from console.modeladmin import (
    AuditedChangesMixin,
    AuditedSettingsForm,
    ReadOnlyAdmin,
    ServiceFormMixin,
)
from console.site import require_operator
from console.templatetags import console as console_tags
from inventory.domain import settings as settings_domain
from inventory.domain.inventory import detect_imbalance, ratio
from inventory.domain.values import USDC_POOL
from inventory.models import (
    ApiToken,
    ApiTokenScope,
    Asset,
    Event,
    InventoryPool,
    RebalancingSettingsRow,
)
from inventory.selectors import offchain_cash_latest, rebalancing_settings_get
from inventory.services import api_token_create, api_token_revoke, asset_register, setting_change
from inventory.usdc_deltas import pools_current
from operations.models import Operation
from operations.venues import VenuesNotConfigured
from service.selectors import pool_state


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
            events.CHALLENGERS,
            events.MARKET_CLOCK,
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


class _CurrentPools(ChangeList):
    """The pool list as readers see it: the USDC row with its pending fill deltas applied
    (`inventory.usdc_deltas.pools_current`)."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        self.result_list = pools_current(self.result_list)


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

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return _CurrentPools

    def get_object(self, request: HttpRequest, object_id: str, from_field: Any = None) -> Any:
        row = super().get_object(request, object_id, from_field)
        return None if row is None else pools_current([row])[0]

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


class SettingsForm(AuditedSettingsForm):
    setting_names = tuple(settings_domain.GLOBAL_SETTINGS)

    class Meta:
        model = RebalancingSettingsRow
        fields = list(settings_domain.GLOBAL_SETTINGS)


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

"""Plain registrations; the operator console is a later issue."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from inventory.models import Asset, Event, InventoryPool, RebalancingSettingsRow


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = ("id", "aggregate_type", "aggregate_id", "sequence", "event_type", "recorded_at")
    list_filter = ("aggregate_type",)
    search_fields = ("aggregate_id", "event_type")


@admin.register(InventoryPool)
class InventoryPoolAdmin(ReadOnlyAdmin):
    list_display = (
        "key",
        "kind",
        "onchain_available",
        "onchain_inflight",
        "offchain_available",
        "offchain_inflight",
        "needs_reconciliation",
        "updated_at",
    )
    list_filter = ("kind", "needs_reconciliation")


@admin.register(Asset)
class AssetAdmin(ReadOnlyAdmin):
    # Changes go through inventory.services (audited); the console adds forms later.
    list_display = ("base_symbol", "token_symbol", "token_address", "rebalancing_enabled")


@admin.register(RebalancingSettingsRow)
class RebalancingSettingsAdmin(ReadOnlyAdmin):
    list_display = ("scope", "paused", "equity_target_ratio", "usdc_target_ratio", "updated_at")

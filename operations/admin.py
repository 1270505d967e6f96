from django.contrib import admin

from operations.models import Operation


@admin.register(Operation)
class OperationAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "kind",
        "pool",
        "amount",
        "status",
        "attempts",
        "needs_attention",
        "created_at",
        "finished_at",
    )
    list_filter = ("status", "kind", "needs_attention")
    search_fields = ("pool", "aggregate_id")
    readonly_fields = [field.name for field in Operation._meta.fields]
    ordering = ("-id",)

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

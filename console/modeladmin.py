"""The console's ModelAdmin building blocks, shared by every app's `admin.py`.

- `ReadOnlyAdmin`: a record list nobody edits (capped count, exact-id search).
- `AuditedSettingsForm` / `AuditedChangesMixin`: settings edited through
  `inventory.services` (validated, audited as `SettingChanged` events, shown on the page).
- `ServiceFormMixin`: an add page that calls a service instead of saving a row.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from console.paginator import CappedCountPaginator
from console.site import can_operate
from inventory.domain import settings as settings_domain
from inventory.domain.events import SETTINGS
from inventory.domain.values import InvalidValue
from inventory.models import Event, InventoryPool
from inventory.services import setting_change

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


def pool_operations_link(pool: str) -> str:
    url = reverse("admin:operations_operation_changelist") + f"?pool={pool}"
    return format_html('<a href="{}">{}</a>', url, pool)


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

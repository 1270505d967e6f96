"""The console's backtest page (issue 25): a form (period, pools, candidates), the backtest run
as a django-q2 task, and its report shown as the same self-contained page `--html` writes.

`GET console/backtest/` shows the form and the recent runs; `POST` validates the input (a bad
field is named and nothing is queued) and queues `backtest_task`; `console/backtest/<task>/`
shows that run: waiting, failed with its error, or its page."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django_q.models import OrmQ, Task
from django_q.tasks import async_task

from inventory.domain.values import InvalidValue
from operations.backtest import backtest_request, backtest_run, jsonable
from operations.backtest_render import html_page

TASK = "operations.backtest_console.backtest_task"
GROUP = "backtest"
RECENT = 10


def backtest_task(start: str, end: str, pools: str | None, candidates: list[str]) -> Any:
    """The django-q2 task: the report, jsonable (stored as the task's result)."""
    return jsonable(backtest_run(backtest_request(start, end, pools, candidates)))


def _recent() -> list[dict[str, Any]]:
    done = [
        {"id": t.id, "name": t.name, "started": t.started, "success": t.success}
        for t in Task.objects.filter(group=GROUP).order_by("-started")[:RECENT]
    ]
    return done


def backtest_page(site: Any, request: HttpRequest, *, allowed: bool) -> HttpResponse:
    """`allowed`: the console's view permission (the site checks it)."""
    if not allowed:
        raise PermissionDenied("console permission required")
    form = {"start": "", "end": "", "pools": "", "candidates": ""}
    error = None
    if request.method == "POST":
        form = {key: request.POST.get(key, "") for key in form}
        specs = [line.strip() for line in form["candidates"].splitlines() if line.strip()]
        try:
            backtest_request(form["start"], form["end"], form["pools"] or None, specs)
        except InvalidValue as invalid:
            error = str(invalid)
        else:
            task_id = async_task(
                TASK, form["start"], form["end"], form["pools"] or None, specs, group=GROUP
            )
            return HttpResponseRedirect(reverse("admin:console_backtest_run", args=[task_id]))
    context = {
        **site.each_context(request),
        "title": "Backtest",
        "form": form,
        "error": error,
        "recent": _recent(),
        "queued": OrmQ.objects.count(),
    }
    return TemplateResponse(request, "console/backtest.html", context, status=400 if error else 200)


def backtest_run_page(
    site: Any, request: HttpRequest, task_id: str, *, allowed: bool
) -> HttpResponse:
    if not allowed:
        raise PermissionDenied("console permission required")
    task = Task.objects.filter(id=task_id, group=GROUP).first()
    if task is None:
        if not any(q.task_id() == task_id for q in OrmQ.objects.all()):
            raise Http404("no such backtest")
        context = {**site.each_context(request), "title": "Backtest", "waiting": task_id}
        return TemplateResponse(request, "console/backtest.html", context)
    if not task.success:
        context = {
            **site.each_context(request),
            "title": "Backtest",
            "failed": task_id,
            "failure": str(task.result),
        }
        return TemplateResponse(request, "console/backtest.html", context)
    return HttpResponse(html_page(task.result), content_type="text/html; charset=utf-8")

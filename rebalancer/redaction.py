"""No secret is ever echoed: the debug page, error reports, `diffsettings` and the logs.

The secrets are the values of the settings and environment variables whose names look secret
(`HIDDEN`: keys, tokens, passwords, database and Redis URLs, RPC URLs), plus the parts of a URL
that carry a credential (its password, path and query, where providers put API keys), in the
spellings an HTTP library may normalise them to. Every surface replaces them with
`REDACTED`:
- `SecretsExceptionReporterFilter` (settings.DEFAULT_EXCEPTION_REPORTER_FILTER): settings,
  request.META (which holds the environment under runserver) and frame variables;
- `SecretsExceptionReporter` (settings.DEFAULT_EXCEPTION_REPORTER): the rendered page and text,
  which also show exception messages;
- `RedactSecretsFilter` on the log handlers (messages, arguments, tracebacks);
- `manage.py diffsettings` (rebalancer/management/commands/diffsettings.py).
"""

from __future__ import annotations

import functools
import html
import logging
import os
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from django.core.signals import setting_changed
from django.views.debug import ExceptionReporter, SafeExceptionReporterFilter

from conf.env import Secret, redact, secret_parts

REDACTED = "<redacted>"
HIDDEN = re.compile(
    "API|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE|DATABASE_URL|REDIS|RPC|PRIVATE|"
    "CREDENTIAL|AUTH|DSN",
    flags=re.IGNORECASE,
)


def _strings(value: Any) -> Iterable[str]:
    """Every string inside a setting's value (dicts, lists, Secret, dataclasses)."""
    if isinstance(value, Secret):
        yield value.reveal()
    elif isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from _strings(item)
    elif hasattr(value, "__dataclass_fields__"):
        for name in value.__dataclass_fields__:
            yield from _strings(getattr(value, name, None))


def _hidden_strings(name: str, value: Any) -> Iterable[str]:
    if isinstance(value, Secret) or HIDDEN.search(name):
        yield from _strings(value)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _hidden_strings(str(key), item)
    elif hasattr(value, "__dataclass_fields__"):
        for field in value.__dataclass_fields__:
            yield from _hidden_strings(field, getattr(value, field, None))


@functools.cache
def secret_values() -> tuple[str, ...]:
    """The texts to redact, longest first (cleared when a test changes a setting). Values
    from the environment count from 8 characters (a flag such as AUTH=true is no secret);
    the settings' own secrets (keys, passwords, Secret values) from 4."""
    from django.conf import settings

    found: set[str] = set()
    for name, value in os.environ.items():
        if HIDDEN.search(name) and value.strip():
            found.update(part for part in secret_parts(value) if len(part) >= 8)
    if settings.configured:
        for name in dir(settings):
            if name.isupper():
                for text in _hidden_strings(name, getattr(settings, name, None)):
                    found.update(secret_parts(text))
    spelled = set(found)
    for text in found:  # as an HTTP library or a template may write them
        spelled |= {quote(text, safe=":/?&=@"), html.escape(text), html.escape(text, quote=False)}
    return tuple(sorted((s for s in spelled if len(s) >= 4), key=len, reverse=True))


def redact_text(text: str) -> str:
    return redact(text, list(secret_values()))


def _clear_cache(**kwargs: Any) -> None:
    secret_values.cache_clear()


setting_changed.connect(_clear_cache, dispatch_uid="rebalancer.redaction.secret_values")


class SecretsExceptionReporterFilter(SafeExceptionReporterFilter):
    """Django's filter, knowing this project's secret names and values."""

    hidden_settings = HIDDEN
    cleansed_substitute = REDACTED

    def cleanse_setting(self, key: Any, value: Any) -> Any:
        if isinstance(value, Secret):
            return self.cleansed_substitute
        cleansed = super().cleanse_setting(key, value)
        if isinstance(cleansed, str):
            return redact_text(cleansed)
        return cleansed

    def get_safe_request_meta(self, request: Any) -> dict[str, Any]:
        meta = super().get_safe_request_meta(request)
        return {k: redact_text(v) if isinstance(v, str) else v for k, v in meta.items()}

    def get_traceback_frame_variables(self, request: Any, tb_frame: Any) -> Any:
        variables = super().get_traceback_frame_variables(request, tb_frame)
        return [(name, _RedactedRepr(value)) for name, value in variables]


class _RedactedRepr:
    """A frame variable whose repr never shows a secret."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return redact_text(repr(self.value))


class SecretsExceptionReporter(ExceptionReporter):
    """The debug page and error e-mails: the rendered output is redacted as a whole, so an
    exception message quoting a URL or a key cannot show it either."""

    def get_traceback_html(self) -> str:
        return redact_text(str(super().get_traceback_html()))

    def get_traceback_text(self) -> str:
        return redact_text(str(super().get_traceback_text()))


class RedactSecretsFilter(logging.Filter):
    """On every handler: the formatted message and any traceback, secrets replaced."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record is logging's business, not ours
            return True
        cleaned = redact_text(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        return True

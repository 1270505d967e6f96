"""Small formatting filters for the console's pages."""

from __future__ import annotations

from datetime import UTC, datetime

from django import template
from django.utils.html import format_html

register = template.Library()


@register.filter
def age(seconds: int | float | None) -> str:
    """12 -> "12s", 754 -> "12m 34s", 7300 -> "2h 1m"."""
    if seconds is None:
        return "n/a"
    total = int(seconds)
    if total < 60:
        return f"{total}s"
    if total < 3600:
        return f"{total // 60}m {total % 60}s"
    if total < 86400:
        return f"{total // 3600}h {total % 3600 // 60}m"
    return f"{total // 86400}d {total % 86400 // 3600}h"


@register.filter
def seconds(value: float | None) -> str:
    """A duration in seconds with a sensible precision."""
    if value is None:
        return "n/a"
    if value < 10:
        return f"{value:.2f}s"
    return age(value)


@register.filter
def short_event(event_type: str | None) -> str:
    """ "TokenizedEquityMintEvent::MintAccepted" -> "MintAccepted"."""
    if not event_type:
        return ""
    return event_type.rsplit("::", 1)[-1]


@register.filter
def when(moment: datetime | None) -> str:
    """A moment to the second, in UTC: "02:29:13 UTC" today, "2026-12-06 23:59:01 UTC" before."""
    if moment is None:
        return "never"
    utc = moment.astimezone(UTC)
    if utc.date() == datetime.now(UTC).date():
        return utc.strftime("%H:%M:%S UTC")
    return utc.strftime("%Y-%m-%d %H:%M:%S UTC")


@register.filter
def ago(moment: datetime | None) -> str:
    """How long ago: "12s ago", "3m 4s ago"."""
    if moment is None:
        return ""
    return f"{age(max((datetime.now(UTC) - moment).total_seconds(), 0))} ago"


@register.filter
def hexshort(value: object) -> str:
    """A long hex value (hash, raw transaction) shortened for reading, whole on hover and when
    copied: `<code title=... data-full=...>0x1234abcd…9f0e</code>`."""
    text = str(value or "")
    if len(text) <= 20:
        return format_html('<code class="hex">{}</code>', text)
    return format_html(
        '<code class="hex" title="{}" data-full="{}">{}…{}</code>', text, text, text[:10], text[-6:]
    )

"""Small formatting filters for the console's pages."""

from __future__ import annotations

from django import template

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

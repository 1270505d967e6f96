"""Server-rendered SVG: a pool's ratio against its band, and its ratio over the last day.

Plain markup built from numbers we computed (no user text is interpolated), marked safe."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from django.utils.safestring import SafeString, mark_safe

from console.selectors import PoolView

WIDTH = 320
BAR_HEIGHT = 26
CHART_HEIGHT = 90


def _x(value: Decimal, width: int = WIDTH) -> float:
    clamped = min(max(value, Decimal(0)), Decimal(1))
    return round(float(clamped) * width, 2)


def band_svg(pool: PoolView) -> SafeString:
    """A 0..1 bar: the band shaded, the target a dashed line, the ratio a marker."""
    lower = max(pool.threshold.lower, Decimal(0))
    upper = min(pool.threshold.upper, Decimal(1))
    parts = [
        f'<svg class="band" role="img" width="{WIDTH}" height="{BAR_HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {BAR_HEIGHT}" aria-label="ratio against band">',
        f'<rect x="0" y="6" width="{WIDTH}" height="14" fill="#eee"/>',
        f'<rect class="band-range" x="{_x(lower)}" y="6" width="{_x(upper) - _x(lower)}" '
        f'height="14" fill="#cde8cd"/>',
        f'<line x1="{_x(pool.threshold.target)}" x2="{_x(pool.threshold.target)}" y1="3" '
        f'y2="23" stroke="#555" stroke-dasharray="2,2"/>',
    ]
    if pool.ratio is not None:
        inside = pool.threshold.lower < pool.ratio < pool.threshold.upper
        colour = "#2a7a2a" if inside else "#c0392b"
        x = _x(pool.ratio)
        parts.append(
            f'<circle class="ratio-marker" data-ratio="{pool.ratio:.4f}" cx="{x}" cy="13" r="6" '
            f'fill="{colour}"/>'
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - numbers only


def history_svg(pool: PoolView, *, since: datetime, now: datetime) -> SafeString:
    """The ratio over [since, now] as a polyline over the shaded band."""
    span = max((now - since).total_seconds(), 1.0)
    lower = max(pool.threshold.lower, Decimal(0))
    upper = min(pool.threshold.upper, Decimal(1))

    def y(value: Decimal) -> float:
        clamped = min(max(value, Decimal(0)), Decimal(1))
        return round((1 - float(clamped)) * (CHART_HEIGHT - 4) + 2, 2)

    parts = [
        f'<svg class="history" role="img" width="{WIDTH}" height="{CHART_HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {CHART_HEIGHT}" aria-label="ratio over time">',
        f'<rect x="0" y="0" width="{WIDTH}" height="{CHART_HEIGHT}" fill="#fafafa" stroke="#ddd"/>',
        f'<rect x="0" y="{y(upper)}" width="{WIDTH}" height="{y(lower) - y(upper)}" '
        f'fill="#e3f2e3"/>',
    ]
    points = [
        (round((at - since).total_seconds() / span * WIDTH, 2), y(value))
        for at, value in pool.history
        if at >= since
    ]
    if points:
        coords = " ".join(f"{x},{yy}" for x, yy in points)
        parts.append(
            f'<polyline class="ratio-line" data-points="{len(points)}" points="{coords}" '
            f'fill="none" stroke="#2c5d8f" stroke-width="1.5"/>'
        )
        last_x, last_y = points[-1]
        parts.append(f'<circle cx="{last_x}" cy="{last_y}" r="2.5" fill="#2c5d8f"/>')
    else:
        parts.append(
            f'<text x="{WIDTH // 2}" y="{CHART_HEIGHT // 2}" text-anchor="middle" '
            f'font-size="11" fill="#888">no venue poll in this range</text>'
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - numbers only

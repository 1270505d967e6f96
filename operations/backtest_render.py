"""The backtest's report as a rich table, and as a self-contained HTML page with each pool's
onchain ratio over time per candidate against its band (inline SVG, no script, no link)."""

from __future__ import annotations

import html
from typing import Any

from rich.console import Console
from rich.table import Table

KIND_SHORT = {
    "mint": "mint",
    "redemption": "redeem",
    "usdc_alpaca_to_base": "A->B",
    "usdc_base_to_alpaca": "B->A",
}
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2"]
REAL_COLOUR = "#333333"


def _ops(operations: dict[str, int]) -> str:
    if not operations:
        return "0"
    return " ".join(f"{KIND_SHORT.get(k, k)} {n}" for k, n in operations.items())


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def _rows(report: dict[str, Any]) -> list[tuple[str, str, dict[str, Any], dict[str, Any] | None]]:
    rows = []
    for entry in report["candidates"]:
        for key, figures in sorted(entry["pools"].items()):
            rows.append((entry["name"], key, figures, figures.get("p90")))
    return sorted(rows, key=lambda row: (row[1], row[0] == "real", row[0] != "as-run"))


def table_print(report: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    table = Table(
        title=f"backtest {report['from']} .. {report['to']} ({report['events']} events)",
        title_justify="left",
    )
    for column in (
        "pool",
        "candidate",
        "operations",
        "ops p90",
        "volume USD",
        "est. cost USD",
        "per 10k USD",
        "out of band",
        "largest dev.",
        "stock-out",
        "missed fills",
    ):
        table.add_column(column, justify="left" if column in ("pool", "candidate") else "right")
    for name, key, figures, p90 in _rows(report):
        table.add_row(
            key,
            f"[bold]{name}[/bold]" if name == "real" else name,
            _ops(figures["operations"]),
            "" if p90 is None else _ops(p90["operations"]),
            str(figures["volume_usd"]),
            str(figures["estimated_cost_usd"]),
            "-" if figures["cost_per_10k_usd"] is None else str(figures["cost_per_10k_usd"]),
            f"{_duration(figures['time_out_of_band_s'])} ({figures['time_out_of_band_pct']}%)",
            "-" if figures["largest_deviation"] is None else str(figures["largest_deviation"]),
            _duration(figures["stockout_s"]),
            str(figures["missed_fills"]),
        )
    console.print(table)
    for kind, basis in sorted(report["model"].items()):
        if basis.get("assumed"):
            console.print(f"[yellow]model: no recorded {kind}: duration assumed "
                          f"{basis['seconds']:.0f} s, cost 0[/yellow]")  # fmt: skip
        else:
            console.print(
                f"model: {kind}: {basis['operations']} recorded, median {basis['median_s']} s, "
                f"p90 {basis['p90_s']} s, gas {basis['gas_usd_per_operation']} USD each, "
                f"other costs {basis['other_costs_per_usd']} per USD moved"
            )


# --- HTML ----------------------------------------------------------------------------------------

WIDTH, HEIGHT, PAD = 720, 220, 36


def _y(value: float, low: float, high: float) -> float:
    return PAD / 2 + (HEIGHT - PAD) * (1 - (value - low) / (high - low))


def _svg(key: str, series: list[tuple[str, str, dict[str, Any]]]) -> str:
    """One pool's chart: each candidate's ratio samples and its band (dashed)."""
    values = [v for _, _, chart in series for v in chart["ratio"] if v is not None]
    bounds = [b for _, _, chart in series for band in chart["bands"] for b in band[1:]]
    low = min([*values, *bounds, 0.0])
    high = max([*values, *bounds, 1.0])
    if high - low < 1e-9:
        high = low + 1
    samples = max((len(chart["ratio"]) for _, _, chart in series), default=1) or 1
    step = (WIDTH - PAD) / max(samples - 1, 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'role="img" aria-label="{html.escape(key)} onchain ratio over time">',
        f'<rect x="{PAD}" y="{PAD / 2}" width="{WIDTH - PAD}" height="{HEIGHT - PAD}" '
        'fill="#fafafa" stroke="#ccc"/>',
    ]
    for tick in (low, (low + high) / 2, high):
        parts.append(
            f'<text x="2" y="{_y(tick, low, high) + 4:.1f}" font-size="10">{tick:.2f}</text>'
        )
    for name, colour, chart in series:
        bands = chart["bands"]
        for index, (at, lower, upper) in enumerate(bands):
            until = bands[index + 1][0] if index + 1 < len(bands) else samples - 1
            x1, x2 = PAD + at * step, PAD + max(until, at) * step
            for bound in (lower, upper):
                y = _y(bound, low, high)
                parts.append(
                    f'<line x1="{x1:.1f}" y1="{y:.1f}" x2="{x2:.1f}" y2="{y:.1f}" '
                    f'stroke="{colour}" stroke-dasharray="4 3" stroke-width="1">'
                    f"<title>{html.escape(name)} band</title></line>"
                )
        points = []
        last = None
        for index, value in enumerate(chart["ratio"]):
            value = last if value is None else value
            if value is None:
                continue
            last = value
            points.append(f"{PAD + index * step:.1f},{_y(value, low, high):.1f}")
        if points:
            parts.append(
                f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" '
                f'points="{" ".join(points)}"><title>{html.escape(name)}</title></polyline>'
            )
    parts.append("</svg>")
    return "".join(parts)


def html_page(report: dict[str, Any]) -> str:
    """The report as one self-contained page (jsonable report)."""
    pools = sorted({key for entry in report["candidates"] for key in entry["pools"]})
    colours = {}
    for index, entry in enumerate(report["candidates"]):
        colours[entry["name"]] = REAL_COLOUR if entry.get("real") else COLOURS[index % len(COLOURS)]
    out = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>backtest {html.escape(str(report['from']))}</title>",
        "<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}.key span{margin-right:1em}</style>",
        "</head><body>",
        f"<h1>Backtest {html.escape(str(report['from']))} to {html.escape(str(report['to']))}</h1>",
        f"<p>{report['events']} events replayed. Candidates: "
        + ", ".join(
            f"<b style='color:{colours[e['name']]}'>{html.escape(e['name'])}</b>"
            + (f" <code>{html.escape(e['spec'])}</code>" if e.get("spec") else "")
            for e in report["candidates"]
        )
        + "</p>",
    ]
    for key in pools:
        out.append(f"<h2>{html.escape(key)}</h2>")
        series = [
            (entry["name"], colours[entry["name"]], entry["pools"][key]["chart"])
            for entry in report["candidates"]
            if key in entry["pools"]
        ]
        out.append(_svg(key, series))
        out.append(
            "<table><tr><th>candidate</th><th>operations</th><th>operations (p90 run)</th>"
            "<th>volume USD</th><th>est. cost USD</th><th>per 10k USD</th>"
            "<th>out of band</th><th>largest deviation</th><th>stock-out</th>"
            "<th>missed fills</th></tr>"
        )
        for entry in report["candidates"]:
            figures = entry["pools"].get(key)
            if figures is None:
                continue
            p90 = figures.get("p90")
            cells = [
                html.escape(entry["name"]),
                html.escape(_ops(figures["operations"])),
                "" if not p90 else html.escape(_ops(p90["operations"])),
                html.escape(str(figures["volume_usd"])),
                html.escape(str(figures["estimated_cost_usd"])),
                html.escape(str(figures["cost_per_10k_usd"] or "-")),
                f"{_duration(figures['time_out_of_band_s'])} ({figures['time_out_of_band_pct']}%)",
                html.escape(str(figures["largest_deviation"] or "-")),
                _duration(figures["stockout_s"]),
                str(figures["missed_fills"]),
            ]
            out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        out.append("</table>")
    out.append("<h2>Model</h2><ul>")
    for kind, basis in sorted(report["model"].items()):
        out.append(f"<li>{html.escape(kind)}: {html.escape(str(basis))}</li>")
    out.append("</ul></body></html>")
    return "\n".join(out)

"""A signal drawn as a small inline SVG line chart, for notifications and review pages.

Pure and stdlib-only: the SVG has no script, no style element and no external reference, so it renders under a
strict Content-Security-Policy; every piece of text in it is escaped.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from html import escape
from typing import Any

from controlplane.domain.signals import Series

LEFT, RIGHT, TOP, BOTTOM = 48, 10, 24, 20  # room for the y labels, the title and the time labels
TEXT = 'font-family="sans-serif" font-size="11" fill="#555"'


def line_chart(series: Series, *, width: int = 480, height: int = 140) -> str:
    """``series`` as an ``<svg>`` string: its line, min/max value labels, first/last time and a title."""
    points = [(_utc(t), float(v)) for t, v in series.points if math.isfinite(v)]
    title = series.name + (f" ({series.unit})" if series.unit else "")
    if not points:
        return _svg(width, 48, f"{title}: no data", [
            _text(LEFT, 16, title, 'font-weight="bold"'), _text(LEFT, 36, "no data")])

    x0, x1, y0, y1 = LEFT, width - RIGHT, TOP, height - BOTTOM  # the plot area
    first, last = points[0][0], points[-1][0]
    low, high = min(v for _, v in points), max(v for _, v in points)
    span, spread = (last - first).total_seconds(), high - low

    def x(t: datetime) -> float:
        return round(x0 + (x1 - x0) * ((t - first).total_seconds() / span if span else 0.5), 1)

    def y(v: float) -> float:
        return round(y1 - (y1 - y0) * ((v - low) / spread if spread else 0.5), 1)

    if len(points) == 1:
        line = f'<circle cx="{x(first)}" cy="{y(low)}" r="3" fill="#2563eb"/>'
    else:
        coordinates = " ".join(f"{x(t)},{y(v)}" for t, v in points)
        line = f'<polyline points="{coordinates}" fill="none" stroke="#2563eb" stroke-width="1.5"/>'
    label = (f"{title}: {len(points)} point{'s' * (len(points) > 1)} from {_hhmm(first)} to {_hhmm(last)} UTC, "
             f"min {_number(low)}, max {_number(high)}, last {_number(points[-1][1])}")
    return _svg(width, height, label, [
        _text(x0, 14, title, 'font-weight="bold"'),
        f'<rect x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}" fill="none" stroke="#ddd"/>',
        line,
        _text(x0 - 4, y0 + 4, _number(high), 'text-anchor="end"'),
        _text(x0 - 4, y1 + 4, _number(low), 'text-anchor="end"'),
        _text(x0, height - 4, f"{_hhmm(first)} UTC"),
        _text(x1, height - 4, f"{_hhmm(last)} UTC", 'text-anchor="end"'),
    ])


def bar_chart(title: str, bars: list[tuple[str, float | None]], *, unit: str = "", mark: float | None = None,
              mark_label: str = "", width: int = 480) -> str:
    """Horizontal bars, one per (label, value), from zero; a dashed line at ``mark`` (a threshold). A bar
    without a value (``None``) is labelled "no value" and drawn empty."""
    values = [v for _, v in bars if v is not None and math.isfinite(v)]
    top = max([*values, mark or 0.0, 0.0]) or 1.0
    row, label_width, x0 = 22, 150, 160
    x1 = width - 60
    height = TOP + row * len(bars) + 8

    def x(v: float) -> float:
        return round(x0 + (x1 - x0) * max(v, 0.0) / top, 1)

    title += f" ({unit})" if unit else ""
    parts = [_text(4, 14, title, 'font-weight="bold"')]
    described = []
    for index, (label, value) in enumerate(bars):
        y = TOP + row * index
        parts.append(_text(label_width, y + 14, label[:28], 'text-anchor="end"'))
        if value is None or not math.isfinite(value):
            parts.append(_text(x0 + 4, y + 14, "no value"))
            described.append(f"{label} no value")
            continue
        parts.append(f'<rect x="{x0}" y="{y + 3}" width="{round(x(value) - x0, 1)}" height="{row - 8}" '
                     f'fill="#2563eb"/>')
        parts.append(_text(x(value) + 4, y + 14, _number(value)))
        described.append(f"{label} {_number(value)}")
    if mark is not None:
        parts.append(f'<line x1="{x(mark)}" y1="{TOP - 4}" x2="{x(mark)}" y2="{height - 4}" stroke="#a4262c" '
                     f'stroke-dasharray="4 3"/>')
        described.append(f"{mark_label or 'mark'} {_number(mark)}")
    return _svg(width, height, f"{title}: " + ", ".join(described), parts)


REFERENCE, CURRENT = "#8c8c8c", "#2563eb"


def distribution_chart(distribution: Mapping[str, Any], *, width: int = 480) -> str:
    """A drifted column's reference against current, as shares of each side's rows (the sides differ in size):
    a histogram on shared bins for numbers, paired horizontal bars for categories. ``distribution`` is what
    ``controlplane.drift.engine.distribution`` keeps in the evidence."""
    name = str(distribution.get("column", ""))
    reference, current = list(distribution.get("reference") or []), list(distribution.get("current") or [])
    extra = distribution.get("outside") or distribution.get("other") or {}
    totals = [sum(counts) + sum(_counts(extra.get(side))) or 1
              for counts, side in ((reference, "reference"), (current, "current"))]
    ref_shares, cur_shares = [c / totals[0] for c in reference], [c / totals[1] for c in current]
    edges = distribution.get("edges")
    if edges and len(edges) == len(reference) + 1 == len(current) + 1:
        return _histogram(name, [float(e) for e in edges], ref_shares, cur_shares, width)
    categories = [str(c) for c in distribution.get("categories") or []][:len(reference)]
    return _paired_bars(name, categories, ref_shares, cur_shares, width)


def _counts(value: Any) -> list[int]:
    if isinstance(value, int | float):
        return [value]
    return [v for v in value or [] if isinstance(v, int | float)]


def _legend(x: float) -> list[str]:
    return [f'<rect x="{x}" y="5" width="10" height="10" fill="{REFERENCE}"/>', _text(x + 14, 14, "reference"),
            f'<rect x="{x + 80}" y="5" width="10" height="10" fill="{CURRENT}"/>', _text(x + 94, 14, "current")]


def _histogram(name: str, edges: list[float], ref: list[float], cur: list[float], width: int) -> str:
    height = 160
    x0, x1, y0, y1 = LEFT, width - RIGHT, TOP, height - BOTTOM
    top = max([*ref, *cur, 0.0]) or 1.0
    step = (x1 - x0) / max(len(ref), 1)
    parts = [_text(4, 14, name[:40], 'font-weight="bold"'), *_legend(width - 190),
             f'<line x1="{x0}" y1="{y1}" x2="{x1}" y2="{y1}" stroke="#999"/>']
    for index, (r, c) in enumerate(zip(ref, cur, strict=True)):
        left = x0 + step * index
        for offset, share, colour in ((0.1, r, REFERENCE), (0.5, c, CURRENT)):
            bar = round((y1 - y0) * share / top, 1)
            parts.append(f'<rect x="{round(left + step * offset, 1)}" y="{round(y1 - bar, 1)}" '
                         f'width="{round(step * 0.4, 1)}" height="{bar}" fill="{colour}"/>')
    parts += [_text(x0 - 4, y0 + 4, _percent(top), 'text-anchor="end"'),
              _text(x0 - 4, y1 + 4, "0%", 'text-anchor="end"'), _text(x0, height - 4, _number(edges[0])),
              _text(x1, height - 4, _number(edges[-1]), 'text-anchor="end"')]
    widest = max(range(len(ref)), key=lambda i: abs(cur[i] - ref[i]), default=None)
    label = (f"{name}: share of rows per bin, reference against current, {len(ref)} bins from {_number(edges[0])} "
             f"to {_number(edges[-1])}")
    if widest is not None:
        label += (f"; the largest change is between {_number(edges[widest])} and {_number(edges[widest + 1])}: "
                  f"reference {_percent(ref[widest])}, current {_percent(cur[widest])}")
    return _svg(width, height, label, parts)


def _paired_bars(name: str, categories: list[str], ref: list[float], cur: list[float], width: int) -> str:
    row, x0 = 26, 160
    x1 = width - 60
    height = TOP + row * len(categories) + 8
    top = max([*ref, *cur, 0.0]) or 1.0
    parts = [_text(4, 14, name[:40], 'font-weight="bold"'), *_legend(width - 190)]
    described = []
    for index, (category, r, c) in enumerate(zip(categories, ref, cur, strict=False)):
        y = TOP + row * index
        parts.append(_text(150, y + 15, category[:24], 'text-anchor="end"'))
        for offset, share, colour in ((2, r, REFERENCE), (12, c, CURRENT)):
            length = round((x1 - x0) * share / top, 1)
            parts.append(f'<rect x="{x0}" y="{y + offset}" width="{length}" height="9" fill="{colour}"/>')
            parts.append(_text(x0 + length + 4, y + offset + 9, _percent(share)))
        described.append(f"{category} {_percent(r)} to {_percent(c)}")
    label = f"{name}: share of rows per category, reference against current: " + ", ".join(described)
    return _svg(width, height, label, parts)


def _percent(share: float) -> str:
    return f"{share:.0%}" if share >= 0.1 or share == 0 else f"{share:.1%}"


def _svg(width: int, height: int, label: str, parts: list[str]) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}">' + "".join(parts) + "</svg>")


def _text(x: float, y: float, text: str, extra: str = "") -> str:
    return f'<text x="{x}" y="{y}" {TEXT}{" " + extra if extra else ""}>{escape(text)}</text>'


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _utc(moment: datetime) -> datetime:
    """Aware times in UTC; a naive time is taken as UTC already."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _hhmm(moment: datetime) -> str:
    return moment.strftime("%H:%M")

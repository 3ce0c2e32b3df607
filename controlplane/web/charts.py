"""A signal drawn as a small inline SVG line chart, for notifications and review pages.

Pure and stdlib-only: the SVG has no script, no style element and no external reference, so it renders under a
strict Content-Security-Policy; every piece of text in it is escaped.
"""
from __future__ import annotations

import math
from datetime import UTC, datetime
from html import escape

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

"""The inline SVG line chart of a signal: escaped, scaled, well-formed, and sane for tiny or flat series."""
from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from controlplane.domain.signals import Series
from controlplane.web.charts import bar_chart, line_chart

SVG = "{http://www.w3.org/2000/svg}"
START = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def series(*values: float, name: str = "p95 latency", unit: str = "ms") -> Series:
    return Series(name, unit, tuple((START + timedelta(minutes=5 * i), v) for i, v in enumerate(values)))


def draw(s: Series, **size: int) -> ET.Element:
    return ET.fromstring(line_chart(s, **size))


def polyline(svg: ET.Element) -> list[tuple[float, float]]:
    (line,) = svg.iter(f"{SVG}polyline")
    return [(float(x), float(y)) for x, y in (pair.split(",") for pair in line.get("points").split())]


def texts(svg: ET.Element) -> list[str]:
    return [t.text for t in svg.iter(f"{SVG}text")]


def test_a_series_is_a_labelled_accessible_svg_image():
    svg = draw(series(640, 950, 700.5, 690))

    assert svg.tag == f"{SVG}svg" and svg.get("role") == "img"
    assert (svg.get("width"), svg.get("height")) == ("480", "140")
    assert texts(svg) == ["p95 latency (ms)", "950", "640", "10:00 UTC", "10:15 UTC"]
    assert svg.get("aria-label") == "p95 latency (ms): 4 points from 10:00 to 10:15 UTC, min 640, max 950, last 690"


def test_the_highest_value_is_at_the_top_and_the_lowest_at_the_bottom_in_proportion():
    svg = draw(series(5, 10, 0, 7.5), width=300, height=100)

    (xa, ya), (xb, yb), (xc, yc), (xd, yd) = polyline(svg)
    (plot,) = svg.iter(f"{SVG}rect")
    top, bottom = float(plot.get("y")), float(plot.get("y")) + float(plot.get("height"))
    assert 0 < top < bottom < 100
    assert (yb, yc) == (top, bottom)  # 10 at the top, 0 at the bottom: SVG y grows downwards
    assert ya == pytest.approx((top + bottom) / 2, abs=0.1) and yd == pytest.approx(top + (bottom - top) / 4, abs=0.1)
    gaps = [xb - xa, xc - xb, xd - xc]
    assert 0 < xa < xd < 300 and max(gaps) - min(gaps) <= 0.2  # evenly spaced in time
    assert {"10", "0"} <= set(texts(svg))


def test_a_hostile_name_and_unit_are_escaped_everywhere():
    hostile = series(1, 2, name='<script>alert("x")</script>', unit="<b>&")

    out = line_chart(hostile)

    assert "<script" not in out and "<b>" not in out
    assert "&lt;script&gt;" in out and "&amp;" in out
    svg = ET.fromstring(out)
    assert texts(svg)[0] == '<script>alert("x")</script> (<b>&)'
    assert svg.get("aria-label").startswith('<script>alert("x")</script> (<b>&): 2 points')


def test_no_point_is_a_small_no_data_image():
    svg = draw(series())

    assert svg.get("role") == "img" and "no data" in texts(svg) and "no data" in svg.get("aria-label")
    assert not list(svg.iter(f"{SVG}polyline")) and not list(svg.iter(f"{SVG}circle"))


def test_non_finite_values_are_left_out():
    svg = draw(series(float("nan"), float("inf")))

    assert "no data" in texts(svg)


def test_one_point_is_a_single_dot():
    svg = draw(series(42.0))

    (dot,) = svg.iter(f"{SVG}circle")
    assert 0 < float(dot.get("cx")) < 480 and 0 < float(dot.get("cy")) < 140
    assert not list(svg.iter(f"{SVG}polyline"))
    assert "1 point from 10:00 to 10:00 UTC" in svg.get("aria-label")


def test_a_constant_series_is_a_flat_line_in_the_middle():
    svg = draw(series(3, 3, 3), height=140)

    ys = {y for _, y in polyline(svg)}
    assert len(ys) == 1 and 0 < ys.pop() < 140


def test_times_are_labelled_in_utc():
    berlin_winter = timezone(timedelta(hours=1))
    other = Series("requests", "count", ((datetime(2026, 11, 22, 12, 0, tzinfo=berlin_winter), 1.0),
                                         (datetime(2026, 11, 22, 11, 30), 2.0)))  # naive: taken as UTC

    assert texts(draw(other))[-2:] == ["11:00 UTC", "11:30 UTC"]


def test_no_script_style_or_external_reference():
    out = line_chart(series(1, 5, 2))

    for forbidden in ("<script", "<style", "href", "url(", "<foreignObject", " on"):
        assert forbidden not in out


def test_importing_the_charts_is_cheap():
    code = ("import sys; import controlplane.web.charts; "
            "assert not {m for m in sys.modules if m.startswith(('azure', 'controlplane.adapters'))}")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent.parent)


def test_bars_are_proportional_from_zero_with_the_mark_drawn_and_every_value_said():
    svg = ET.fromstring(bar_chart("Effect size", [("age", 0.5), ("plan", 1.0), ("tenure", None)], mark=0.25,
                                  mark_label="floor"))
    widths = [float(r.get("width")) for r in svg.iter(f"{SVG}rect")]
    assert len(widths) == 2 and widths[1] == pytest.approx(2 * widths[0])
    (line,) = svg.iter(f"{SVG}line")
    assert float(line.get("x1")) == pytest.approx(float(svg.find(f"{SVG}rect").get("x")) + widths[0] / 2)
    assert svg.get("aria-label") == "Effect size: age 0.5, plan 1, tenure no value, floor 0.25"


def test_bar_labels_are_escaped_and_negative_or_missing_values_draw_nothing_past_zero():
    svg = bar_chart("<b>x</b>", [("<script>", -3.0), ("nan", float("nan"))])
    parsed = ET.fromstring(svg)
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert [float(r.get("width")) for r in parsed.iter(f"{SVG}rect")] == [0.0]

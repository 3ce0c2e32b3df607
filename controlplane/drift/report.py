"""The human-readable drift report: Evidently's DataDriftPreset as an HTML file.

Rendering takes seconds (most of the preset's cost), so it runs only when a review is opened or someone
asks for it; decisions come from ``check_drift``. The report shows the numerical and categorical columns,
with the configured methods (Evidently's own versions of them, at their default thresholds unless
``correction="none"`` sets thresholds) on the same (sampled) rows as ``check_drift``: it is a picture for
people, not the calibrated verdict, and it does not apply ``effect_size_floor``.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

from controlplane.domain.drift import CATEGORICAL, NUMERICAL, DriftSettings
from controlplane.drift.engine import as_frame, evidently_definition, require_columns, sample


def render_report(current: Any, reference: Any, settings: DriftSettings, path: str | Path,
                  about: Mapping[str, Any] | None = None) -> Path:
    """Save Evidently's data drift report of the configured columns to ``path`` (parents created). With
    ``about`` (``model``, ``deployment``, ``bucket``, ``part``, ``start``, ``end``, ``made_at``) the report opens
    with a header naming them (``report_header``)."""
    from evidently import Dataset, Report
    from evidently.presets import DataDriftPreset

    current = as_frame(current, settings.columns, "current")
    for name in settings.columns:  # a column the window lacks is shown empty
        if name not in current.columns:
            current = current.assign(**{name: None})
    reference = as_frame(reference, settings.columns, "reference")
    require_columns(reference, settings, "reference")
    current, _ = sample(current, settings.sample_bound, settings.seed, 0)
    reference, _ = sample(reference, settings.reference_bound, settings.seed, 1)
    names = [name for name, kind in settings.columns.items() if kind in (NUMERICAL, CATEGORICAL)]
    methods = {name: settings.method_for(name) for name in names}
    thresholds = {name: settings.threshold_for(name) for name in names}
    preset = DataDriftPreset(
        columns=names,
        drift_share=settings.drift_share,
        per_column_method={name: method for name, method in methods.items() if method is not None} or None,
        per_column_threshold={name: value for name, value in thresholds.items() if value is not None} or None,
    )
    definition = evidently_definition(settings, names)
    snapshot = Report([preset]).run(
        Dataset.from_pandas(current[names].reset_index(drop=True), data_definition=definition),
        Dataset.from_pandas(reference[names].reset_index(drop=True), data_definition=definition),
    )
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(target))
    if about is not None:
        html = target.read_text(encoding="utf-8")
        body = re.search(r"<body[^>]*>", html)
        at = body.end() if body else 0
        target.write_text(html[:at] + report_header(about) + html[at:], encoding="utf-8")
    return target


def report_header(about: Mapping[str, Any]) -> str:
    """What the report is of, first on its page: the model, the window (deployment, bucket and part, event-time
    span) and when it was made. Every value is escaped."""
    def when(value: Any) -> str:
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value)
            except ValueError:
                return value
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if isinstance(value, datetime) else "-"

    window = f"bucket {about.get('bucket', '-')}, part {about.get('part', '-')}"
    if about.get("start") and about.get("end"):
        window += f", {when(about['start'])} to {when(about['end'])} (event time)"
    facts = (("Model", about.get("model") or "-"), ("Deployment", about.get("deployment") or "-"),
             ("Window", window), ("Made", when(about.get("made_at") or datetime.now(UTC))))
    rows = "".join(f"<div style='display:flex;gap:.5rem'><dt style='font-weight:600;min-width:7rem'>{escape(name)}"
                   f"</dt><dd style='margin:0'>{escape(str(value))}</dd></div>" for name, value in facts)
    return ("<header id='report-header' aria-label='About this report' style='font-family:system-ui,sans-serif;"
            "color:#1b1b1b;background:#f6f8fa;border-bottom:1px solid #ddd;padding:1rem 1.5rem'>"
            f"<h1 style='font-size:1.3rem;margin:0 0 .5rem'>Drift report: {escape(str(about.get('model') or '-'))}"
            f"</h1><dl style='margin:0'>{rows}</dl></header>")

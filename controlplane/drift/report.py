"""The human-readable drift report: Evidently's DataDriftPreset as an HTML file.

Rendering takes seconds (most of the preset's cost), so it runs only when a review is opened or someone
asks for it; decisions come from ``check_drift``. The report shows the numerical and categorical columns,
with the configured methods (Evidently's own versions of them, at their default thresholds unless
``correction="none"`` sets thresholds) on the same (sampled) rows as ``check_drift``: it is a picture for
people, not the calibrated verdict, and it does not apply ``effect_size_floor``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from controlplane.domain.drift import CATEGORICAL, NUMERICAL, DriftSettings
from controlplane.drift.engine import as_frame, evidently_definition, require_columns, sample


def render_report(current: Any, reference: Any, settings: DriftSettings, path: str | Path) -> Path:
    """Save Evidently's data drift report of the configured columns to ``path`` (parents created)."""
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
    return target

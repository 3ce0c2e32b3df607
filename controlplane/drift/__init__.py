"""Drift checks for the control plane: decide whether a current window drifted from its reference.

``check_drift`` gives the decision (calibrated tests, an error rate across columns, data-quality signals;
milliseconds, without rendering); ``render_report`` writes Evidently's HTML
report for people; ``ReferenceCache`` loads reference data once per version. Importing this package loads
neither pandas, numpy, scipy, Evidently nor the Azure SDKs: they load on first use.
"""
from __future__ import annotations

from controlplane.domain.drift import METHODS, DriftSettings
from controlplane.domain.errors import DriftConfigError
from controlplane.drift.engine import ColumnQuality, ColumnScore, DriftResult, check_drift
from controlplane.drift.errors import ReferenceLoadError, ReferenceUnreachable
from controlplane.drift.reference import ReferenceCache
from controlplane.drift.report import render_report

__all__ = [
    "METHODS",
    "ColumnQuality",
    "ColumnScore",
    "DriftConfigError",
    "DriftResult",
    "DriftSettings",
    "ReferenceCache",
    "ReferenceLoadError",
    "ReferenceUnreachable",
    "check_drift",
    "render_report",
]

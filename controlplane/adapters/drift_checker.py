"""The ``DriftChecker`` port on the Evidently engine (``controlplane.drift``), with reference data
cached per process and HTML reports kept as artifacts."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from controlplane.policy import DriftPolicy


class EvidentlyDriftChecker:
    name = "evidently"

    def __init__(self, artifacts, public_url: str = "", base: str | Path = ".") -> None:
        from controlplane.drift import ReferenceCache

        self._artifacts = artifacts
        self._public_url = public_url.rstrip("/")
        self._base = Path(base)  # relative reference paths are read from beside the policy file
        self._references = ReferenceCache()

    @staticmethod
    def settings(policy: DriftPolicy):
        from controlplane.drift import DriftSettings

        return DriftSettings(columns=dict(policy.columns), methods=dict(policy.methods),
                             thresholds=dict(policy.thresholds), drift_share=policy.drift_share,
                             min_rows=policy.min_rows, effect_size_floor=policy.effect_size_floor,
                             sample_bound=policy.window.sample)

    def reference(self, policy: DriftPolicy):
        source = policy.reference
        if not source.startswith(("azureml:", "https://", "http://", "/")):
            source = str(self._base / source)
        return self._references.load(source)

    def check(self, rows: list[dict[str, Any]], policy: DriftPolicy):
        from controlplane.drift import check_drift

        return check_drift(rows, self.reference(policy), self.settings(policy))

    def render(self, rows: list[dict[str, Any]], policy: DriftPolicy, name: str) -> str:
        """Render the full report and keep it as ``reports/<name>.html``; the URL people open."""
        from controlplane.drift import render_report

        with tempfile.TemporaryDirectory() as scratch:
            path = render_report(rows, self.reference(policy), self.settings(policy), Path(scratch) / "report.html")
            self._artifacts.save(f"reports/{name}.html", path.read_bytes(), "text/html")
        return f"{self._public_url}/api/reports/{name}"

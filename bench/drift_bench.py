"""Benchmark of the drift decision: check_drift against Evidently's DataDriftPreset and a plain scipy KS loop.

Run ``python bench/drift_bench.py``; ``run()`` returns the figures as dicts
``{name, value, unit, baseline, ratio, target, met}`` for aggregation. Targets: on 10k x 20 numerical columns
the decision takes at most 1/6 of DataDriftPreset (run + save_html); on a 1M-row x 50-column window (reference
of the same size) the decision takes under 5 s and the process peaks under 1.5 GB RSS (measured in a fresh
process, input frames included).
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

REPEATS = 3
SMALL = (10_000, 20)
LARGE = (1_000_000, 50)
LARGE_SECONDS = 5.0
LARGE_RSS_MB = 1536.0


def _frames(rows: int, width: int, seed: int = 0):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    names = [f"f{i}" for i in range(width)]
    reference = pd.DataFrame(rng.standard_normal((rows, width)), columns=names)
    current = rng.standard_normal((rows, width))
    current[:, : width // 4] += 0.3  # a quarter of the columns shifted by 0.3 std
    return pd.DataFrame(current, columns=names), reference, names


def _median_seconds(call) -> float:
    call()  # warm-up: imports and first-call caches are not timed
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _figure(name, value, unit, baseline=None, target=None, met=None) -> dict:
    ratio = None if not baseline else value / baseline
    return {"name": name, "value": value, "unit": unit, "baseline": baseline, "ratio": ratio,
            "target": target, "met": met}


def small_figures() -> list[dict]:
    from evidently import Report
    from evidently.presets import DataDriftPreset
    from scipy.stats import ks_2samp

    from controlplane.drift import DriftSettings, check_drift

    current, reference, names = _frames(*SMALL)
    settings = DriftSettings(columns={name: "numerical" for name in names})
    html = Path(tempfile.mkdtemp()) / "drift.html"

    def preset() -> None:
        Report([DataDriftPreset()]).run(current, reference).save_html(str(html))

    def ks_loop() -> None:
        for name in names:
            ks_2samp(reference[name], current[name])

    decision = _median_seconds(lambda: check_drift(current, reference, settings))
    ks_settings = DriftSettings(columns=settings.columns, methods={"numerical": "ks"})
    decision_ks = _median_seconds(lambda: check_drift(current, reference, ks_settings))
    full = _median_seconds(preset)
    scipy_ks = _median_seconds(ks_loop)
    return [
        _figure("drift.decision_10k_x_20", decision, "s", full, "<= 1/6 of DataDriftPreset", decision <= full / 6),
        _figure("drift.decision_ks_10k_x_20", decision_ks, "s", full, "<= 1/6 of DataDriftPreset",
                decision_ks <= full / 6),
        _figure("drift.preset_run_html_10k_x_20", full, "s"),
        _figure("drift.scipy_ks_loop_10k_x_20", scipy_ks, "s", decision),
    ]


_LARGE_CHILD = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
from bench.drift_bench import LARGE, _frames
from controlplane.drift import DriftSettings, check_drift
current, reference, names = _frames(*LARGE)
with open("/proc/self/statm") as statm:
    loaded_mb = int(statm.read().split()[1]) * resource.getpagesize() / 2**20
settings = DriftSettings(columns={{name: "numerical" for name in names}})
started = time.perf_counter()
result = check_drift(current, reference, settings)
seconds = time.perf_counter() - started
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"seconds": seconds, "peak_mb": peak_mb, "loaded_mb": loaded_mb,
                   "drifted": len(result.drifted), "rows": result.rows, "sampled_from": result.sampled_from}}))
"""


_COLD_CHILD = """
import sys, time
sys.path.insert(0, {root!r})
from bench.drift_bench import SMALL, _frames
current, reference, names = _frames(*SMALL)
started = time.perf_counter()
from controlplane.drift import DriftSettings, check_drift
check_drift(current, reference, DriftSettings(columns={{name: "numerical" for name in names}}))
print(time.perf_counter() - started)
"""


def _child(template: str) -> str:
    out = subprocess.run([sys.executable, "-c", template.format(root=str(ROOT))], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    return out.stdout.strip().splitlines()[-1]


def _cold_decision_seconds() -> float:
    """The first check_drift in a fresh process with pandas loaded (scipy's import included)."""
    return float(_child(_COLD_CHILD))


def large_figures() -> list[dict]:
    data = json.loads(_child(_LARGE_CHILD))
    return [
        _figure("drift.decision_1m_x_50", data["seconds"], "s", None, f"< {LARGE_SECONDS:g} s",
                data["seconds"] < LARGE_SECONDS),
        _figure("drift.peak_rss_1m_x_50", data["peak_mb"], "MB", None, f"< {LARGE_RSS_MB:g} MB",
                data["peak_mb"] < LARGE_RSS_MB),
        _figure("drift.rss_over_inputs_1m_x_50", data["peak_mb"] - data["loaded_mb"], "MB", data["loaded_mb"]),
    ]


def run() -> list[dict]:
    """All figures; each dict holds name, value, unit, baseline, ratio, target and met."""
    figures = small_figures()
    figures.append(_figure("drift.decision_cold_process_10k_x_20", _cold_decision_seconds(), "s",
                           figures[2]["value"]))
    return figures + large_figures()


def _table(figures: list[dict]) -> str:
    def fmt(value, digits=4):
        if value is None:
            return "-"
        return f"{value:.{digits}g}" if isinstance(value, float) else str(value)

    header = ("name", "value", "unit", "baseline", "ratio", "target", "met")
    rows = [header] + [tuple(fmt(f[key]) for key in header) for f in figures]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows)


if __name__ == "__main__":
    print(_table(run()))

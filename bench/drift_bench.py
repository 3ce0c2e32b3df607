"""Benchmark of the drift decision, and the calibration of its verdict.

Run ``python bench/drift_bench.py``; ``run()`` returns the figures as dicts
``{name, value, unit, baseline, ratio, target, met}`` for aggregation. Speed targets: on 10k x 20 numerical
columns the calibrated decision takes at most 1/20 of DataDriftPreset (run + save_html); with cached nulls a
distance used as a test costs at most 2x the uncalibrated distance; on a 1M-row x 50-column window (reference
of the same size) the decision takes under 5 s and the process peaks under 1.5 GB RSS (measured in a fresh
process, input frames included). Calibration targets (``calibration_figures``): at alpha 0.05, dataset-level
false alarms in [0.02, 0.07] for windows of 50 to 5,000 rows against references of 200 to 20,000 rows, on
scikit-learn's bundled data and synthetic data, at most 10% of no-drift windows blaming a column, and power
at 500-row windows of at least 0.8 (0.9 for the missing-value signal); each beside Evidently's decision
(``correction="none"``) on the same kind of windows.
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

    from controlplane.drift import DriftSettings, calibrated, check_drift

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
    legacy = DriftSettings(columns=settings.columns, correction="none")
    uncalibrated = _median_seconds(lambda: check_drift(current, reference, legacy))
    distance = DriftSettings(columns=settings.columns, methods={"numerical": "wasserstein"})
    calibrated.NULLS.clear()
    started = time.perf_counter()
    check_drift(current, reference, distance)
    cold_null = time.perf_counter() - started
    warm = _median_seconds(lambda: check_drift(current, reference, distance))
    legacy_distance = DriftSettings(columns=settings.columns, methods={"numerical": "wasserstein"},
                                    correction="none")
    uncalibrated_distance = _median_seconds(lambda: check_drift(current, reference, legacy_distance))
    full = _median_seconds(preset)
    scipy_ks = _median_seconds(ks_loop)
    return [
        _figure("drift.decision_10k_x_20", decision, "s", full, "<= 1/20 of DataDriftPreset", decision <= full / 20),
        _figure("drift.decision_ks_10k_x_20", decision_ks, "s", full, "<= 1/20 of DataDriftPreset",
                decision_ks <= full / 20),
        _figure("drift.decision_uncalibrated_10k_x_20", uncalibrated, "s", full, "-"),
        _figure("drift.wasserstein_warm_null_10k_x_20", warm, "s", uncalibrated_distance,
                "<= 2x uncalibrated wasserstein", warm <= 2 * uncalibrated_distance),
        _figure("drift.wasserstein_cold_null_10k_x_20", cold_null, "s", uncalibrated_distance),
        _figure("drift.preset_run_html_10k_x_20", full, "s"),
        _figure("drift.scipy_ks_loop_10k_x_20", scipy_ks, "s", decision),
    ]

# ---- calibration: false alarms and power -------------------------------------------------------------------------

FALSE_ALARM_TARGET = (0.02, 0.07)
BLAME_TARGET = 0.10
POWER_TARGET = 0.8
QUALITY_TARGET = 0.9
SIZES = ((50, 200), (50, 20_000), (100, 1_000), (100, 1_001), (500, 1_000), (500, 20_000), (5_000, 200),
         (5_000, 20_000))


def real_table(name: str):
    """A data set bundled with scikit-learn, with its declared column kinds."""
    from sklearn import datasets

    if name == "breast_cancer":
        frame = datasets.load_breast_cancer(as_frame=True).frame.drop(columns="target")
        return frame, {column: "numerical" for column in frame.columns}
    if name == "wine":
        frame = datasets.load_wine(as_frame=True).frame
        frame["target"] = frame["target"].map({0: "a", 1: "b", 2: "c"})
        return frame, {column: "numerical" for column in frame.columns if column != "target"} | {
            "target": "categorical"}
    if name == "diabetes":
        frame = datasets.load_diabetes(as_frame=True, scaled=False).frame
        frame["sex"] = frame["sex"].map({1.0: "F", 2.0: "M"})
        return frame, {column: "numerical" for column in frame.columns if column != "sex"} | {"sex": "categorical"}
    raise KeyError(name)


def synthetic_table(rows: int, rng):
    """Ten columns crossing the engine's switches: continuous, 20 and 21 distinct values, a point mass, a
    binary category at 26%, and a category with rare levels (Monte Carlo tables)."""
    import numpy as np
    import pandas as pd

    return pd.DataFrame({
        "x0": rng.standard_normal(rows), "x1": rng.standard_normal(rows), "x2": rng.lognormal(size=rows),
        "x3": rng.standard_normal(rows), "x4": rng.standard_normal(rows),
        "levels20": rng.integers(0, 20, rows), "levels21": rng.integers(0, 21, rows),
        "zeros": np.where(rng.random(rows) < 0.3, 0.0, rng.exponential(size=rows)),
        "binary": np.where(rng.random(rows) < 0.26, "yes", "no"),
        "rare": rng.choice(["a", "b", "c", "d", "e"], rows, p=[0.6, 0.3, 0.08, 0.015, 0.005]),
    })


SYNTHETIC_KINDS = {"x0": "numerical", "x1": "numerical", "x2": "numerical", "x3": "numerical",
                   "x4": "numerical", "levels20": "numerical", "levels21": "numerical", "zeros": "numerical",
                   "binary": "categorical", "rare": "categorical"}


def null_pair(source: str, window: int, reference: int, rng):
    """A window and a reference from one distribution: rows drawn with replacement from a real table, or two
    independent synthetic samples."""
    if source == "synthetic":
        return synthetic_table(window, rng), synthetic_table(reference, rng), SYNTHETIC_KINDS
    frame, kinds = real_table(source)
    return (frame.iloc[rng.integers(0, len(frame), window)], frame.iloc[rng.integers(0, len(frame), reference)],
            kinds)


def power_pair(scenario: str, rng, window: int = 500, reference: int = 5_000):
    """A 500-row window with one change among ten columns, and its reference."""
    import numpy as np

    ref, cur = synthetic_table(reference, rng), synthetic_table(window, rng)
    if scenario == "shift_0.2sd":
        cur["x0"] = cur["x0"] + 0.2
    elif scenario == "binary_26_to_41":
        cur["binary"] = np.where(rng.random(window) < 0.41, "yes", "no")
    elif scenario == "variance_x1.5":
        cur["x0"] = cur["x0"] * np.sqrt(1.5)
    elif scenario == "missing_0_to_10":
        cur["x0"] = cur["x0"].mask(rng.random(window) < 0.10)
    else:
        raise KeyError(scenario)
    return cur, ref, SYNTHETIC_KINDS


def false_alarms(source: str, window: int, reference: int, repeats: int, seed: int = 0, references: int = 0,
                 **settings) -> dict:
    """Share of no-drift windows called drifted, share blaming at least one column, and share raising a
    data-quality signal. Each window has a
    reference of its own, or with ``references`` that many references are each checked against
    ``repeats / references`` windows (the way a deployment reuses one reference and its cached nulls)."""
    import numpy as np

    from controlplane.drift import DriftSettings, check_drift

    rng = np.random.default_rng([seed, window, reference])
    drifted = blamed = quality = 0
    per_reference = max(1, repeats // references) if references else 1
    for trial in range(repeats):
        current, ref_new, kinds = null_pair(source, window, reference, rng)
        if trial % per_reference == 0:
            ref = ref_new
        result = check_drift(current, ref, DriftSettings(columns=kinds, min_rows=10, **settings))
        drifted += result.dataset_drift
        blamed += bool(result.drifted)
        quality += result.data_quality
    return {"rate": drifted / repeats, "blamed": blamed / repeats, "quality": quality / repeats, "repeats": repeats}


def power(scenario: str, repeats: int, seed: int = 1, **settings) -> float:
    """Share of changed windows detected: dataset drift, or for missing values the data-quality signal."""
    import numpy as np

    from controlplane.drift import DriftSettings, check_drift

    rng = np.random.default_rng([seed, len(scenario)])
    hits = 0
    for _ in range(repeats):
        current, ref, kinds = power_pair(scenario, rng)
        result = check_drift(current, ref, DriftSettings(columns=kinds, min_rows=10, **settings))
        if scenario.startswith("missing"):
            hits += any("missing_rate" in q.issues for q in result.quality if q.column == "x0")
        else:
            hits += result.dataset_drift
    return hits / repeats


def _binomial_interval(rate: float, repeats: int) -> tuple[float, float]:
    from scipy.stats import binomtest

    k = round(rate * repeats)
    interval = binomtest(k, repeats).proportion_ci(0.95)
    return interval.low, interval.high


def calibration_figures(repeats: int = 200, power_repeats: int = 100) -> list[dict]:
    """The full sweep: dataset-level false alarms per data set and sizes (Holm, alpha 0.05, default methods),
    the baseline being Evidently's defaults (correction none, drift_share 0.5) on the same windows; a
    distance configured as the test on both sides of the bootstrap's size switch; power at 500 rows."""
    figures = []
    low, high = FALSE_ALARM_TARGET
    for source in ("breast_cancer", "wine", "diabetes", "synthetic"):
        for window, reference in SIZES:
            print(f"calibration: {source} window {window} reference {reference} ...", flush=True)
            ours = false_alarms(source, window, reference, repeats)
            legacy = false_alarms(source, window, reference, max(20, repeats // 4), correction="none")
            tag = f"{source}.n{window}_m{reference}"
            figures.append(_figure(f"drift.false_alarms.{tag}", ours["rate"], "rate", legacy["rate"],
                                   f"in [{low}, {high}]", low <= ours["rate"] <= high))
            figures.append(_figure(f"drift.blamed_any.{tag}", ours["blamed"], "rate", legacy["blamed"],
                                   f"<= {BLAME_TARGET}", ours["blamed"] <= BLAME_TARGET))
            figures.append(_figure(f"drift.quality_signals.{tag}", ours["quality"], "rate", None, f"<= {high}",
                                   ours["quality"] <= high))
    for window, reference in ((2_000, 7_999), (2_000, 8_001)):  # both sides of calibrated.BOOTSTRAP_CAP
        print(f"calibration: wasserstein window {window} reference {reference} ...", flush=True)
        ours = false_alarms("wine", window, reference, repeats, references=10, methods={"numerical": "wasserstein"})
        figures.append(_figure(f"drift.false_alarms.wine_wasserstein.n{window}_m{reference}", ours["rate"], "rate",
                               None, f"in [{low}, {high}]", low <= ours["rate"] <= high))
    for scenario in ("shift_0.2sd", "binary_26_to_41", "variance_x1.5", "missing_0_to_10"):
        print(f"power: {scenario} ...", flush=True)
        ours = power(scenario, power_repeats)
        legacy = power(scenario, max(20, power_repeats // 2), correction="none")
        target = QUALITY_TARGET if scenario.startswith("missing") else POWER_TARGET
        figures.append(_figure(f"drift.power.{scenario}.n500", ours, "rate", legacy, f">= {target}",
                               ours >= target))
    return figures


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
                           next(f["value"] for f in figures if f["name"] == "drift.preset_run_html_10k_x_20")))
    return figures + large_figures() + calibration_figures()


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

"""The drift decision: compare a current window with a reference, column by column, without rendering.

``check_drift`` resolves each column's method and threshold from ``DriftSettings``, samples frames longer than
``sample_bound`` with a fixed seed, runs one test per column and counts the drifted share. Methods listed as
``fast`` in ``controlplane.drift.settings.METHODS`` are computed by ``controlplane.drift.stattests`` (scipy,
the same values as Evidently's); the others, or every column when ``engine="evidently"``, go through one
Evidently ``Report`` of ``ValueDrift`` metrics with an explicit ``DataDefinition``, read from the snapshot's
dict. The HTML report for people is ``controlplane.drift.report.render_report``.
"""
from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from controlplane.drift.errors import DriftConfigError
from controlplane.drift.settings import CATEGORICAL, METHODS, NUMERICAL, DriftSettings, method_named

if TYPE_CHECKING:
    import pandas as pd

ENGINES = ("auto", "evidently")


@dataclass(frozen=True)
class ColumnScore:
    """One column's test. ``statistic`` is ``"p_value"`` (drift when value is below the threshold) or
    ``"distance"`` (drift when value reaches it); ``suppressed`` is True when the test flagged drift but the
    effect size stayed under ``effect_size_floor``."""

    column: str
    kind: str
    method: str
    value: float
    threshold: float
    drifted: bool
    effect_size: float | None
    statistic: str
    suppressed: bool = False

    def to_evidence(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "kind": self.kind,
            "method": self.method,
            "statistic": self.statistic,
            "value": _json_float(self.value),
            "threshold": _json_float(self.threshold),
            "drifted": self.drifted,
            "effect_size": _json_float(self.effect_size),
            "suppressed": self.suppressed,
        }


@dataclass(frozen=True)
class DriftResult:
    """The outcome of one check. ``rows``/``reference_rows`` count the rows tested (after sampling);
    ``sampled_from``/``reference_sampled_from`` hold the original counts when a frame was sampled."""

    rows: int
    reference_rows: int
    sampled_from: int | None
    columns: tuple[ColumnScore, ...]
    drifted: tuple[str, ...]
    share: float
    dataset_drift: bool
    inconclusive: bool
    reason: str
    seconds: float
    drift_share: float = 0.5
    reference_sampled_from: int | None = None

    def score(self, column: str) -> ColumnScore:
        for score in self.columns:
            if score.column == column:
                return score
        raise KeyError(column)

    def to_evidence(self) -> dict[str, Any]:
        """A JSON-safe summary for the decision record (non-finite numbers become None)."""
        return {
            "dataset_drift": self.dataset_drift,
            "inconclusive": self.inconclusive,
            "reason": self.reason,
            "share": _json_float(self.share),
            "drift_share": self.drift_share,
            "drifted": list(self.drifted),
            "rows": self.rows,
            "reference_rows": self.reference_rows,
            "sampled_from": self.sampled_from,
            "reference_sampled_from": self.reference_sampled_from,
            "seconds": round(self.seconds, 4),
            "columns": [score.to_evidence() for score in self.columns],
        }


def _json_float(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def as_frame(data: Any, columns: Iterable[str], side: str) -> pd.DataFrame:
    """A DataFrame from a DataFrame or a sequence of row mappings (an empty sequence has the columns, no rows)."""
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        return data
    if isinstance(data, Sequence) and not isinstance(data, str | bytes):
        if not data:
            return pd.DataFrame({name: [] for name in columns})
        if all(isinstance(row, Mapping) for row in data):
            return pd.DataFrame.from_records(list(data))
    raise DriftConfigError(side, f"must be a pandas DataFrame or a list of row dicts, got {type(data).__name__}")


def require_columns(frame: pd.DataFrame, settings: DriftSettings, side: str) -> None:
    missing = [name for name in settings.columns if name not in frame.columns]
    if missing:
        raise DriftConfigError(missing[0], f"configured column missing from the {side} data "
                                           f"(missing: {', '.join(map(str, missing))})")


def sample(frame: pd.DataFrame, bound: int, seed: int, stream: int) -> tuple[pd.DataFrame, int | None]:
    """Rows drawn without replacement (kept in their order) when the frame is longer than ``bound``."""
    import numpy as np

    n = len(frame)
    if n <= bound:
        return frame, None
    rng = np.random.default_rng([seed, stream])
    positions = np.sort(rng.choice(n, size=bound, replace=False))
    return frame.iloc[positions], n


def _clean(frame: pd.DataFrame, name: str, kind: str, side: str) -> pd.Series:
    """The column without missing or infinite values, as Evidently cleans it; numerical columns as float64."""
    import numpy as np
    import pandas as pd
    from pandas.api.types import is_numeric_dtype

    series = frame[name]
    if isinstance(series, pd.DataFrame):
        raise DriftConfigError(name, f"the {side} data has more than one column of that name")
    if kind == NUMERICAL:
        if not is_numeric_dtype(series.dtype):
            raise DriftConfigError(name, f"numerical column has non-numeric dtype {series.dtype} in the {side} data")
        values = series.to_numpy(dtype="float64", na_value=np.nan)
        return pd.Series(values[np.isfinite(values)], name=name, copy=False)
    if isinstance(series.dtype, pd.CategoricalDtype):
        series = series.astype(object)
    series = series.dropna()
    if is_numeric_dtype(series.dtype) and series.dtype != bool:
        series = series[np.isfinite(series.to_numpy(dtype="float64"))]
    return series.reset_index(drop=True)


def _effect_size(reference: pd.Series, current: pd.Series) -> float:
    import numpy as np

    ref = reference.to_numpy()
    cur = current.to_numpy()
    shift = abs(float(cur.mean()) - float(ref.mean()))
    spread = float(np.std(ref))
    if spread == 0.0:
        return 0.0 if shift == 0.0 else math.inf
    return shift / spread


def _inconclusive(rows: int, ref_rows: int, settings: DriftSettings, started: float) -> DriftResult:
    short = [f"{side} has {count} rows" for side, count in (("current", rows), ("reference", ref_rows))
             if count < settings.min_rows]
    return DriftResult(
        rows=rows, reference_rows=ref_rows, sampled_from=None, reference_sampled_from=None, columns=(),
        drifted=(), share=0.0, dataset_drift=False, inconclusive=True, drift_share=settings.drift_share,
        reason=f"inconclusive: {' and '.join(short)}, fewer than min_rows={settings.min_rows}; no test was run",
        seconds=time.perf_counter() - started,
    )


def check_drift(current: Any, reference: Any, settings: DriftSettings, *, engine: str = "auto") -> DriftResult:
    """Test every configured column of ``current`` against ``reference`` and decide dataset drift.

    ``engine="auto"`` computes the methods the engine implements with scipy and hands the others to
    Evidently; ``engine="evidently"`` runs every column through Evidently (slower; for cross-checks).
    Raises ``DriftConfigError`` when a configured column is missing or mistyped.
    """
    started = time.perf_counter()
    if engine not in ENGINES:
        raise DriftConfigError("engine", f"must be one of {ENGINES}, got {engine!r}")
    current = as_frame(current, settings.columns, "current")
    reference = as_frame(reference, settings.columns, "reference")
    require_columns(current, settings, "current")
    require_columns(reference, settings, "reference")
    if len(current) < settings.min_rows or len(reference) < settings.min_rows:
        return _inconclusive(len(current), len(reference), settings, started)

    current, sampled_from = sample(current, settings.sample_bound, settings.seed, 0)
    reference, reference_sampled_from = sample(reference, settings.sample_bound, settings.seed, 1)

    from controlplane.drift import stattests

    cleaned: dict[str, tuple[pd.Series, pd.Series]] = {}
    for name, kind in settings.columns.items():
        ref = _clean(reference, name, kind, "reference")
        cur = _clean(current, name, kind, "current")
        for side, values in (("reference", ref), ("current", cur)):
            if values.empty:
                raise DriftConfigError(name, f"the {side} column has no usable (non-missing, finite) values")
        cleaned[name] = (ref, cur)

    raw: dict[str, tuple[str, float, float]] = {}  # column -> (method, threshold, value)
    slow: dict[str, tuple[str | None, float | None]] = {}
    for name, kind in settings.columns.items():
        method = settings.method_for(name)
        threshold = settings.threshold_for(name)
        if engine == "evidently" or (method is not None and not METHODS[method].fast):
            slow[name] = (method, threshold)
            continue
        ref, cur = cleaned[name]
        if method is None:
            method = stattests.default_method(ref, cur, kind)
        if threshold is None:
            threshold = METHODS[method].default_threshold
        raw[name] = (method, threshold, stattests.FAST[method](ref, cur, kind))
    if slow:
        raw.update(_evidently_values(current, reference, settings, slow))

    scores = []
    for name, kind in settings.columns.items():
        method, threshold, value = raw[name]
        spec = METHODS[method]
        test_drifted = spec.drifted(value, threshold)
        effect = _effect_size(*cleaned[name]) if kind == NUMERICAL else None
        suppressed = bool(test_drifted and effect is not None and settings.effect_size_floor is not None
                          and effect < settings.effect_size_floor)
        scores.append(ColumnScore(
            column=name, kind=kind, method=method, value=float(value), threshold=float(threshold),
            drifted=test_drifted and not suppressed, effect_size=effect, statistic=spec.statistic,
            suppressed=suppressed,
        ))

    drifted = tuple(score.column for score in scores if score.drifted)
    share = len(drifted) / len(scores)
    dataset_drift = share >= settings.drift_share
    verdict = "dataset drift" if dataset_drift else "no dataset drift"
    reason = (f"{verdict}: {len(drifted)} of {len(scores)} columns drifted (share {share:.2f} "
              f"{'>=' if dataset_drift else '<'} drift_share {settings.drift_share:.2f})")
    if drifted:
        reason += f": {', '.join(drifted)}"
    suppressed = [score.column for score in scores if score.suppressed]
    if suppressed:
        reason += (f"; below effect_size_floor {settings.effect_size_floor:g} "
                   f"(not counted): {', '.join(suppressed)}")
    return DriftResult(
        rows=len(current), reference_rows=len(reference), sampled_from=sampled_from,
        reference_sampled_from=reference_sampled_from, columns=tuple(scores), drifted=drifted, share=share,
        dataset_drift=dataset_drift, inconclusive=False, reason=reason, drift_share=settings.drift_share,
        seconds=time.perf_counter() - started,
    )


def evidently_definition(settings: DriftSettings, names: Iterable[str]):
    """Evidently's explicit ``DataDefinition`` for ``names`` (no type inference)."""
    from evidently import DataDefinition

    names = list(names)
    return DataDefinition(
        numerical_columns=[name for name in names if settings.columns[name] == NUMERICAL],
        categorical_columns=[name for name in names if settings.columns[name] == CATEGORICAL],
    )


def _evidently_values(current: pd.DataFrame, reference: pd.DataFrame, settings: DriftSettings,
                      wanted: Mapping[str, tuple[str | None, float | None]]) -> dict[str, tuple[str, float, float]]:
    """One Evidently report of ``ValueDrift`` metrics for ``wanted`` columns, read from the snapshot's dict."""
    from evidently import Dataset, Report
    from evidently.metrics import ValueDrift

    names = list(wanted)
    definition = evidently_definition(settings, names)
    metrics = [ValueDrift(column=name, method=method, threshold=threshold)
               for name, (method, threshold) in wanted.items()]
    snapshot = Report(metrics).run(
        Dataset.from_pandas(current[names].reset_index(drop=True), data_definition=definition),
        Dataset.from_pandas(reference[names].reset_index(drop=True), data_definition=definition),
    )
    out: dict[str, tuple[str, float, float]] = {}
    for metric in snapshot.dict()["metrics"]:
        config = metric["config"]
        if not str(config.get("type", "")).endswith(":ValueDrift"):
            continue
        known = method_named(config["method"])
        if known is None:
            raise DriftConfigError(config["column"], f"Evidently used method {config['method']!r}, unknown here")
        threshold = config["threshold"]
        if threshold is None:
            threshold = known.default_threshold
        out[config["column"]] = (known.name, float(threshold), float(metric["value"]))
    missing = set(names) - set(out)
    if missing:
        raise DriftConfigError(sorted(missing)[0], "Evidently returned no drift value for the column")
    return out

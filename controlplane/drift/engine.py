"""The drift decision: compare a current window with a reference, column by column, without rendering.

``check_drift`` types each column as the reference has it, samples the window (``sample_bound``) and the
reference (``reference_bound``) with a fixed seed, reports data-quality signals per column and excludes what
cannot be tested, then runs one test per remaining column. By default (``correction="holm"``) every column
gets a calibrated p-value (``controlplane.drift.calibrated``) and dataset drift means a column survives
Holm's correction at ``alpha``: with no drift, at most ``alpha`` of windows are called drifted, whatever the
sizes. ``correction="none"`` reproduces Evidently's decision: methods listed as ``fast`` in
``controlplane.domain.drift.METHODS`` are computed by ``controlplane.drift.stattests`` (scipy, the same
values as Evidently's); the others, or every column when ``engine="evidently"``, go through one Evidently
``Report`` of ``ValueDrift`` metrics. The HTML report for people is ``controlplane.drift.report.render_report``.
"""
from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from controlplane.domain.drift import (
    CATEGORICAL,
    EMBEDDING,
    LOW_CARDINALITY,
    METHODS,
    NUMERICAL,
    POINT_MASS,
    TEXT,
    DriftSettings,
    method_named,
)
from controlplane.domain.errors import DriftConfigError

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
    p_value: float | None = None
    adjusted_p_value: float | None = None
    test: str = ""

    def to_evidence(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "kind": self.kind,
            "method": self.method,
            "test": self.test,
            "statistic": self.statistic,
            "value": _json_float(self.value),
            "threshold": _json_float(self.threshold),
            "p_value": _json_float(self.p_value),
            "adjusted_p_value": _json_float(self.adjusted_p_value),
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
    quality: tuple[ColumnQuality, ...] = ()
    data_quality: bool = False
    excluded: tuple[str, ...] = ()
    correction: str = "none"
    alpha: float | None = None
    distributions: tuple[dict[str, Any], ...] = ()  # drifted columns, reference against current (``distribution``)

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
            "correction": self.correction,
            "alpha": self.alpha,
            "drifted": list(self.drifted),
            "data_quality": self.data_quality,
            "excluded": list(self.excluded),
            "rows": self.rows,
            "reference_rows": self.reference_rows,
            "sampled_from": self.sampled_from,
            "reference_sampled_from": self.reference_sampled_from,
            "seconds": round(self.seconds, 4),
            "columns": [score.to_evidence() for score in self.columns],
            "quality": [q.to_evidence() for q in self.quality if q.issues or q.missing_p_value is not None],
            "distributions": list(self.distributions),
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


GROSS_SPANS = 5  # a window value this many reference spans beyond its range is out of range by itself
_NUMBER = re.compile(r"[+-]?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_MISSING_TEXT = frozenset({"", "nan", "none", "null", "na", "n/a"})
_INVALID = object()


def canonical(value: Any) -> Any:
    """A categorical value as the reference and telemetry both spell it: ``1``, ``1.0`` and ``"1"`` are
    ``"1"``; ``True`` and ``"true"`` are ``"true"``; ``"007"`` keeps its zeros. None for a missing value;
    a value that cannot be a category (a list, a dict) is invalid."""
    import numpy as np

    if value is None:
        return None
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        if not math.isfinite(value):
            return None
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    if isinstance(value, str):
        text = value.strip()
        lowered = text.lower()
        if lowered in ("true", "false"):
            return lowered
        if lowered in _MISSING_TEXT:
            return None
        if _NUMBER.fullmatch(text):
            return canonical(float(text))
        return text
    if isinstance(value, list | tuple | dict | set | np.ndarray | bytes):
        return _INVALID
    try:
        import pandas as pd

        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


def _to_float(value: Any) -> float | object:
    """A number for a numerical column: numbers and numeric strings; NaN when missing; invalid otherwise."""
    import numpy as np

    if value is None:
        return math.nan
    if isinstance(value, bool | np.bool_):
        return float(value)
    if isinstance(value, int | float | np.integer | np.floating):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in _MISSING_TEXT:
            return math.nan
        try:
            return float(text)
        except ValueError:
            return _INVALID
    try:
        import pandas as pd

        if pd.isna(value):
            return math.nan
    except (TypeError, ValueError):
        pass
    return _INVALID


@dataclass(frozen=True)
class Prepared:
    """One side of a column after typing: the usable values, and what was missing or invalid."""

    values: Any  # numpy array: finite float64 (numerical) or canonical str (categorical)
    full: Any  # numpy array aligned with the rows: NaN / None where missing or invalid
    rows: int
    missing: int
    invalid: int
    examples: tuple[str, ...]


def _series(frame: pd.DataFrame, name: str, side: str) -> pd.Series:
    import pandas as pd

    series = frame[name]
    if isinstance(series, pd.DataFrame):
        raise DriftConfigError(name, f"the {side} data has more than one column of that name")
    return series


def _prepare(series: pd.Series, kind: str) -> Prepared:
    """Type a column as the reference says: numbers (numeric strings coerced) or canonical categories."""
    import numpy as np
    import pandas as pd
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    rows = len(series)
    examples: list[str] = []
    if kind == NUMERICAL:
        if is_numeric_dtype(series.dtype) or is_bool_dtype(series.dtype):
            full = series.to_numpy(dtype="float64", na_value=np.nan)
            invalid_mask = np.isinf(full)
            missing_mask = np.isnan(full)
        else:
            converted = [_to_float(value) for value in series.to_numpy(dtype=object)]
            invalid_mask = np.fromiter((value is _INVALID for value in converted), bool, rows)
            full = np.fromiter((math.nan if value is _INVALID else value for value in converted), float, rows)
            missing_mask = np.isnan(full) & ~invalid_mask
            invalid_mask |= np.isinf(full)
            examples = [repr(value)[:40] for value in series.to_numpy(dtype=object)[invalid_mask][:3]]
        full = np.where(invalid_mask, np.nan, full)
        values = full[np.isfinite(full)]
        return Prepared(values, full, rows, int(missing_mask.sum()), int(invalid_mask.sum()), tuple(examples))
    raw = series.astype(object).to_numpy() if isinstance(series.dtype, pd.CategoricalDtype) \
        else series.to_numpy(dtype=object)
    try:
        codes, uniques = pd.factorize(raw, use_na_sentinel=True)
        mapped = [canonical(value) for value in uniques]
        table = np.array([None if value is _INVALID else value for value in mapped] + [None], dtype=object)
        bad = np.array([value is _INVALID for value in mapped] + [False])
        full = table[codes]
        invalid_mask = bad[codes]
    except TypeError:  # unhashable values (lists): one at a time
        mapped = [canonical(value) for value in raw]
        invalid_mask = np.fromiter((value is _INVALID for value in mapped), bool, rows)
        full = np.array([None if value is _INVALID else value for value in mapped], dtype=object)
    missing_mask = pd.isna(full) & ~invalid_mask
    if invalid_mask.any():
        examples = [repr(value)[:40] for value in raw[invalid_mask][:3]]
    values = full[~(missing_mask | invalid_mask)].astype(str)
    return Prepared(values, full, rows, int(missing_mask.sum()), int(invalid_mask.sum()), tuple(examples))


@dataclass(frozen=True)
class ColumnQuality:
    """Data-quality signals of one column, apart from drift. ``issues`` lists the signals raised:
    ``missing_column`` (absent from the window), ``no_values`` (nothing usable in the window),
    ``no_reference_values``, ``missing_rate`` (the share of missing values changed, two-proportion test),
    ``invalid_values`` (values of the wrong type, excluded), ``out_of_range`` (numbers beyond the reference's
    range widened by its span on each side), ``unseen_categories`` (more unseen categories than the
    reference's own rare ones predict). ``excluded``: the column was not tested."""

    column: str
    issues: tuple[str, ...] = ()
    excluded: bool = False
    missing_reference: float | None = None
    missing_current: float | None = None
    missing_p_value: float | None = None
    invalid: int = 0
    invalid_examples: tuple[str, ...] = ()
    out_of_range: int = 0
    unseen: tuple[str, ...] = ()
    unseen_rows: int = 0
    unseen_p_value: float | None = None

    def to_evidence(self) -> dict[str, Any]:
        return {
            "column": self.column, "issues": list(self.issues), "excluded": self.excluded,
            "missing": {"reference": _json_float(self.missing_reference), "current": _json_float(self.missing_current),
                        "p_value": _json_float(self.missing_p_value)},
            "invalid": self.invalid, "invalid_examples": list(self.invalid_examples),
            "out_of_range": self.out_of_range, "unseen": list(self.unseen), "unseen_rows": self.unseen_rows,
            "unseen_p_value": _json_float(self.unseen_p_value),
        }


def _quality(name: str, kind: str, ref: Prepared, cur: Prepared, level: float) -> ColumnQuality:
    """The data-quality signals of a column both sides have; ``level`` is each signal's false-alarm rate."""
    import numpy as np
    from scipy.stats import binom, fisher_exact

    issues = []
    missing_ref, missing_cur = ref.missing / max(ref.rows, 1), cur.missing / max(cur.rows, 1)
    missing_p = None
    if ref.missing or cur.missing:
        missing_p = float(fisher_exact([[ref.missing, ref.rows - ref.missing],
                                        [cur.missing, cur.rows - cur.missing]])[1])
        if missing_p <= level:
            issues.append("missing_rate")
    if cur.invalid:
        issues.append("invalid_values")
    out_of_range = 0
    unseen: tuple[str, ...] = ()
    unseen_rows, unseen_p = 0, None
    if kind == NUMERICAL and ref.values.size and cur.values.size:
        low, high = float(ref.values.min()), float(ref.values.max())
        span = high - low or max(abs(high), 1.0)
        out_of_range = int(np.count_nonzero((cur.values < low - span) | (cur.values > high + span)))
        gross = bool(np.any((cur.values < low - GROSS_SPANS * span) | (cur.values > high + GROSS_SPANS * span)))
        # With no drift, a window value falls outside the reference's range with probability at most
        # 2 / (reference rows + 1) (exchangeability), and outside the widened range less often still.
        if out_of_range and (gross or binom.sf(out_of_range - 1, cur.values.size,
                                               min(1.0, 2 / (ref.values.size + 1))) <= level):
            issues.append("out_of_range")
    elif kind == CATEGORICAL and ref.values.size and cur.values.size:
        unseen_rows, unseen, unseen_p = _unseen(ref.values, cur.values)
        if unseen_p is not None and unseen_p <= level:
            issues.append("unseen_categories")
    no_values = cur.values.size == 0
    if no_values:
        issues.append("no_values")
    return ColumnQuality(
        column=name, issues=tuple(issues), excluded=no_values, missing_reference=missing_ref,
        missing_current=missing_cur, missing_p_value=missing_p, invalid=cur.invalid,
        invalid_examples=cur.examples, out_of_range=out_of_range, unseen=unseen, unseen_rows=unseen_rows,
        unseen_p_value=unseen_p,
    )


def _derived(name: str, kind: str, reference: pd.Series, current: pd.Series, level: float,
             vectors: bool = False) -> tuple[ColumnQuality, dict[str, tuple[Prepared, Prepared]]]:
    """A text or embedding column as the numerical columns derived from it (or, with ``vectors``, an embedding
    column as its vectors), with the column's quality."""
    from controlplane.drift import derived

    derive = (derived.text_columns if kind == TEXT else derived.embedding_vectors if vectors
              else derived.embedding_columns)
    columns, counts = derive(name, reference, current)
    sides = {}
    for side, (rows, missing, invalid, examples) in counts.items():
        values = next(iter(columns.values()))[0 if side == "reference" else 1] if columns else ()
        sides[side] = Prepared(values=values, full=None, rows=rows, missing=missing, invalid=invalid,
                               examples=examples)
    if not columns or not len(sides["reference"].values):
        return ColumnQuality(column=name, issues=("no_reference_values",), excluded=True,
                             invalid=sides["current"].invalid), {}
    quality = _quality(name, kind, sides["reference"], sides["current"], level)
    prepared = {}
    for derived_name, (ref_values, cur_values) in columns.items():
        prepared[derived_name] = (replace(sides["reference"], values=ref_values),
                                  replace(sides["current"], values=cur_values))
    return quality, prepared


def _unseen(reference: Any, current: Any) -> tuple[int, tuple[str, ...], float | None]:
    """Rows of the window whose category the reference never saw, a few of those categories, and the exact
    p-value of that many (the rows of both sides shuffled between them, 1,999 times, margins fixed)."""
    import numpy as np

    from controlplane.drift.calibrated import MONTE_CARLO

    keys, inverse = np.unique(np.concatenate([reference, current]), return_inverse=True)
    ref = np.bincount(inverse[: reference.size], minlength=keys.size)
    cur = np.bincount(inverse[reference.size:], minlength=keys.size)
    new = ref == 0
    rows = int(cur[new].sum())
    if not rows:
        return 0, (), None
    total = ref + cur
    simulated = np.random.default_rng(29).multivariate_hypergeometric(total, current.size, size=MONTE_CARLO)
    null = np.where(simulated == total, simulated, 0).sum(axis=1)
    p = (1 + int(np.count_nonzero(null >= rows))) / (MONTE_CARLO + 1)
    return rows, tuple(str(k) for k in keys[new][:10]), p


def _legacy_effect_size(reference: Any, current: Any) -> float:
    import numpy as np

    shift = abs(float(np.mean(current)) - float(np.mean(reference)))
    spread = float(np.std(reference))
    if spread == 0.0:
        return 0.0 if shift == 0.0 else math.inf
    return shift / spread


def _inconclusive(rows: int, ref_rows: int, settings: DriftSettings, started: float, reason: str | None = None,
                  quality: tuple[ColumnQuality, ...] = ()) -> DriftResult:
    if reason is None:
        short = [f"{side} has {count} rows" for side, count in (("current", rows), ("reference", ref_rows))
                 if count < settings.min_rows]
        reason = (f"inconclusive: {' and '.join(short)}, fewer than min_rows={settings.min_rows}; "
                  "no test was run")
    return DriftResult(
        rows=rows, reference_rows=ref_rows, sampled_from=None, reference_sampled_from=None, columns=(),
        drifted=(), share=0.0, dataset_drift=False, inconclusive=True, drift_share=settings.drift_share,
        reason=reason, seconds=time.perf_counter() - started, quality=quality,
        data_quality=any(q.issues for q in quality), excluded=tuple(q.column for q in quality if q.excluded),
        correction=settings.correction, alpha=settings.alpha if settings.calibrated else None,
    )


def _reference_numeric(name: str, series: pd.Series, prepared: Prepared) -> None:
    """The reference defines a numerical column's type: most of its values must be numbers."""
    if prepared.invalid and prepared.invalid * 2 >= prepared.rows - prepared.missing:
        raise DriftConfigError(name, f"numerical column has non-numeric dtype {series.dtype} in the reference data "
                                     f"(e.g. {', '.join(prepared.examples)})")


def _default_method(ref: Any, cur: Any, kind: str) -> tuple[str, str, str]:
    """The calibrated default (method, kind it is tested as, how values are grouped): homogeneity of the
    categories for categorical columns and for numbers with few distinct values; homogeneity of bins cut at
    quantiles of both samples together for numbers with a point mass (one value holding a tenth of the
    rows, where Anderson-Darling's law no longer holds); Anderson-Darling for the other numbers."""
    import numpy as np

    if kind == NUMERICAL:
        head, counts = np.unique(np.concatenate([ref[:4096], cur[:4096]]), return_counts=True)
        if head.size <= LOW_CARDINALITY:
            distinct = np.unique(np.concatenate([ref, cur])).size
            if distinct <= LOW_CARDINALITY:
                return ("z" if distinct <= 2 else "chisquare"), CATEGORICAL, "values"
        if counts.max() >= POINT_MASS * counts.sum():
            return "chisquare", CATEGORICAL, "bins"
        return "anderson", NUMERICAL, ""
    distinct = np.unique(np.concatenate([ref, cur])).size
    return ("z" if distinct <= 2 else "chisquare"), kind, ""


def _as_categories(values: Any) -> Any:
    """Numbers of a low-cardinality numerical column as canonical category strings."""
    import numpy as np

    uniques, inverse = np.unique(values, return_inverse=True)
    return np.array([canonical(float(v)) for v in uniques], dtype=object)[inverse].astype(str)


def _as_bins(ref: Any, cur: Any) -> tuple[Any, Any]:
    """Both samples as bin labels, bins cut at quantiles of the pooled values (the same for either sample,
    so the two stay exchangeable under no drift)."""
    import numpy as np

    pooled = np.concatenate([ref, cur])
    bins = max(2, min(20, int(math.ceil(math.log2(pooled.size) + 1))))
    edges = np.unique(np.quantile(pooled, np.linspace(0, 1, bins + 1)[1:-1]))
    return (np.searchsorted(edges, ref, "right").astype(str), np.searchsorted(edges, cur, "right").astype(str))


def check_drift(current: Any, reference: Any, settings: DriftSettings, *, engine: str = "auto") -> DriftResult:
    """Test every configured column of ``current`` against ``reference`` and decide dataset drift.

    Types come from the reference: numeric strings in a numerical column are read as numbers, categorical
    values are compared in canonical form (``1`` = ``"1"``, ``True`` = ``"true"``). A value of the wrong
    type, or a column absent from or empty in the window, is excluded and reported in ``quality``; the rest
    of the window is still tested. With ``settings.correction`` ``"holm"``/``"bh"`` each column gets a
    calibrated p-value and the verdict holds the stated error rate ``alpha``; with ``"none"``, ``engine``
    ``"auto"`` computes Evidently's methods with scipy and ``"evidently"`` runs them through Evidently.
    Raises ``DriftConfigError`` when a configured column is missing from or mistyped in the reference.
    """
    started = time.perf_counter()
    if engine not in ENGINES:
        raise DriftConfigError("engine", f"must be one of {ENGINES}, got {engine!r}")
    current = as_frame(current, settings.columns, "current")
    reference = as_frame(reference, settings.columns, "reference")
    require_columns(reference, settings, "reference")
    if len(current) < settings.min_rows or len(reference) < settings.min_rows:
        return _inconclusive(len(current), len(reference), settings, started)

    current, sampled_from = sample(current, settings.sample_bound, settings.seed, 0)
    reference, reference_sampled_from = sample(reference, settings.reference_bound, settings.seed, 1)

    level = settings.alpha / len(settings.columns)  # each data-quality signal: Bonferroni across columns
    prepared: dict[str, tuple[Prepared, Prepared]] = {}
    quality: list[ColumnQuality] = []
    kinds: dict[str, str] = {}
    for name, kind in settings.columns.items():
        ref_series = _series(reference, name, "reference")
        if kind in (TEXT, EMBEDDING):
            if name not in current.columns:
                quality.append(ColumnQuality(column=name, issues=("missing_column",), excluded=True))
                continue
            vectors = kind == EMBEDDING and settings.method_for(name) == "mmd"  # tested as one, not per axis
            column_quality, columns = _derived(name, kind, ref_series, _series(current, name, "current"), level,
                                               vectors)
            quality.append(column_quality)
            if not column_quality.excluded:
                prepared.update(columns)
                kinds.update(dict.fromkeys(columns, EMBEDDING if vectors else NUMERICAL))
            continue
        ref = _prepare(ref_series, kind)
        if kind == NUMERICAL:
            _reference_numeric(name, ref_series, ref)
        if name not in current.columns:
            quality.append(ColumnQuality(column=name, issues=("missing_column",), excluded=True))
            continue
        cur = _prepare(_series(current, name, "current"), kind)
        if ref.values.size == 0:
            quality.append(ColumnQuality(column=name, issues=("no_reference_values",), excluded=True,
                                         invalid=cur.invalid))
            continue
        column_quality = _quality(name, kind, ref, cur, level)
        quality.append(column_quality)
        if not column_quality.excluded:
            prepared[name] = (ref, cur)
            kinds[name] = kind
    counts = dict(rows=len(current), reference_rows=len(reference), sampled_from=sampled_from,
                  reference_sampled_from=reference_sampled_from)
    if not prepared:
        return replace(_inconclusive(len(current), len(reference), settings, started,
                                     "inconclusive: no configured column has usable values in the window: "
                                     + _quality_summary(quality), tuple(quality)), **counts)
    if settings.calibrated:
        scores = _calibrated_scores(prepared, kinds, settings)
    else:
        scores = _legacy_scores(prepared, current, reference, settings, engine)
    result = _verdict(scores, tuple(quality), settings, started, counts)
    if not result.drifted:
        return result
    shown = tuple(distribution(name, kinds[name], prepared[name][0].values, prepared[name][1].values)
                  for name in result.drifted[:DISTRIBUTION_COLUMNS] if kinds[name] != EMBEDDING)
    return replace(result, distributions=shown, seconds=time.perf_counter() - started)


DISTRIBUTION_COLUMNS = 10  # drifted columns whose distributions the evidence keeps
DISTRIBUTION_BINS = 20  # shared bins of a numerical column; also the most distinct numbers shown one by one
TOP_CATEGORIES = 10  # categories of a categorical column, by their share on either side
LABEL_CHARACTERS = 40


def distribution(name: str, kind: str, ref: Any, cur: Any) -> dict[str, Any]:
    """A column's reference against current, small enough for the decision record (about 1 KB): counts in
    ``DISTRIBUTION_BINS`` bins shared by both sides between the pooled 0.5% and 99.5% quantiles (``outside``
    counts the values below and above them), or counts of the ``TOP_CATEGORIES`` most common categories
    (``other`` counts the rest). A numerical column with few distinct values is counted value by value."""
    import numpy as np

    pooled = np.concatenate([ref, cur])
    if kind == NUMERICAL:
        distinct = np.unique(pooled)
        if distinct.size > DISTRIBUTION_BINS:
            low, high = (float(q) for q in np.quantile(pooled, [0.005, 0.995]))
            if low == high:
                low, high = float(distinct[0]), float(distinct[-1])
            edges = np.histogram_bin_edges(pooled, bins=DISTRIBUTION_BINS, range=(low, high))
            return {"column": name, "kind": NUMERICAL, "edges": [float(edge) for edge in edges],
                    "reference": np.histogram(ref, edges)[0].tolist(), "current": np.histogram(cur, edges)[0].tolist(),
                    "outside": {"reference": [int((ref < low).sum()), int((ref > high).sum())],
                                "current": [int((cur < low).sum()), int((cur > high).sum())]}}
    values, inverse = np.unique(pooled, return_inverse=True)
    ref_counts = np.bincount(inverse[:len(ref)], minlength=values.size)
    cur_counts = np.bincount(inverse[len(ref):], minlength=values.size)
    if kind == NUMERICAL:  # few distinct numbers: each one, in order
        kept = np.arange(values.size)
        labels = [canonical(float(value)) for value in values]
    else:
        weight = ref_counts / max(len(ref), 1) + cur_counts / max(len(cur), 1)
        kept = np.argsort(-weight, kind="stable")[:TOP_CATEGORIES]
        labels = [str(values[index]) for index in kept]
    return {"column": name, "kind": CATEGORICAL, "categories": [label[:LABEL_CHARACTERS] for label in labels],
            "reference": ref_counts[kept].tolist(), "current": cur_counts[kept].tolist(),
            "other": {"reference": int(len(ref) - ref_counts[kept].sum()),
                      "current": int(len(cur) - cur_counts[kept].sum())}}


def _calibrated_scores(prepared: Mapping[str, tuple[Prepared, Prepared]], kinds: Mapping[str, str],
                       settings: DriftSettings) -> list:
    import numpy as np

    from controlplane.drift import calibrated

    replicates = max(settings.null_samples, math.ceil(2 * len(prepared) / settings.alpha))
    rows = []
    for name, (ref, cur) in prepared.items():
        kind = kinds[name]
        ref_values, cur_values = ref.values, cur.values
        if kind == NUMERICAL:
            ref_values, cur_values = np.sort(ref_values), np.sort(cur_values)
        ref_sorted, cur_sorted = ref_values, cur_values
        method = settings.method_for(name) if name in settings.columns else None
        tested_as = kind
        if method is None:
            method, tested_as, grouping = _default_method(ref_values, cur_values, kind)
            if grouping == "values":
                ref_values, cur_values = _as_categories(ref_values), _as_categories(cur_values)
            elif grouping == "bins":
                ref_values, cur_values = _as_bins(ref_values, cur_values)
        outcome = calibrated.run(method, ref_values, cur_values, tested_as, replicates=replicates,
                                 alpha=settings.alpha, seed=settings.seed)
        effect = calibrated.effect_size(ref_sorted, cur_sorted) if kind == NUMERICAL else None
        rows.append((name, kind, method, outcome, effect))
    adjusted = calibrated.adjust([outcome.p_value for _, _, _, outcome, _ in rows], settings.correction)
    scores = []
    for (name, kind, method, outcome, effect), p_adjusted in zip(rows, adjusted, strict=True):
        distance = outcome.critical is not None
        significant = p_adjusted == p_adjusted and p_adjusted <= settings.alpha
        suppressed = bool(significant and effect is not None and settings.effect_size_floor is not None
                          and effect < settings.effect_size_floor)
        scores.append(ColumnScore(
            column=name, kind=kind, method=method,
            value=float(outcome.statistic if distance else outcome.p_value),
            threshold=float(outcome.critical if distance else settings.alpha),
            drifted=significant and not suppressed, effect_size=effect,
            statistic="distance" if distance else "p_value", suppressed=suppressed,
            p_value=float(outcome.p_value), adjusted_p_value=float(p_adjusted), test=outcome.test,
        ))
    return scores


def _legacy_scores(prepared: Mapping[str, tuple[Prepared, Prepared]], current: pd.DataFrame,
                   reference: pd.DataFrame, settings: DriftSettings, engine: str) -> list:
    """Evidently's per-column methods and thresholds, computed by ``stattests`` (or by Evidently)."""
    import pandas as pd

    from controlplane.drift import stattests

    raw: dict[str, tuple[str, float, float]] = {}  # column -> (method, threshold, value)
    slow: dict[str, tuple[str | None, float | None]] = {}
    cleaned = {name: (pd.Series(ref.values, name=name), pd.Series(cur.values, name=name))
               for name, (ref, cur) in prepared.items()}
    for name in prepared:
        kind = settings.columns[name]
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
        typed_current = pd.DataFrame({name: prepared[name][1].full for name in slow})
        typed_reference = pd.DataFrame({name: prepared[name][0].full for name in slow})
        raw.update(_evidently_values(typed_current, typed_reference, settings, slow))

    scores = []
    for name in prepared:
        kind = settings.columns[name]
        method, threshold, value = raw[name]
        spec = METHODS[method]
        test_drifted = spec.drifted(value, threshold)
        effect = _legacy_effect_size(*(side.values for side in prepared[name])) if kind == NUMERICAL else None
        suppressed = bool(test_drifted and effect is not None and settings.effect_size_floor is not None
                          and effect < settings.effect_size_floor)
        scores.append(ColumnScore(
            column=name, kind=kind, method=method, value=float(value), threshold=float(threshold),
            drifted=test_drifted and not suppressed, effect_size=effect, statistic=spec.statistic,
            suppressed=suppressed, test=spec.display,
        ))
    return scores


def _quality_summary(quality: Sequence[ColumnQuality]) -> str:
    return ", ".join(f"{q.column} ({', '.join(q.issues)})" for q in quality if q.issues)


def _verdict(scores: list, quality: tuple[ColumnQuality, ...], settings: DriftSettings, started: float,
             counts: Mapping[str, Any]) -> DriftResult:
    drifted = tuple(score.column for score in scores if score.drifted)
    share = len(drifted) / len(scores)
    if settings.calibrated:
        dataset_drift = bool(drifted)
        rate = "family-wise error rate, Holm" if settings.correction == "holm" else \
            "false discovery rate, Benjamini-Hochberg"
        verdict = "dataset drift" if dataset_drift else "no dataset drift"
        reason = f"{verdict}: {len(drifted)} of {len(scores)} columns drifted at alpha {settings.alpha:g} ({rate})"
    else:
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
    if any(q.issues for q in quality):
        reason += f"; data quality: {_quality_summary(quality)}"
    excluded = tuple(q.column for q in quality if q.excluded)
    if excluded:
        reason += f"; not tested: {', '.join(excluded)}"
    return DriftResult(
        **counts, columns=tuple(scores), drifted=drifted, share=share, dataset_drift=dataset_drift,
        inconclusive=False, reason=reason, drift_share=settings.drift_share, seconds=time.perf_counter() - started,
        quality=quality, data_quality=any(q.issues for q in quality), excluded=excluded,
        correction=settings.correction, alpha=settings.alpha if settings.calibrated else None,
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

"""Drift-check settings and the table of Evidently drift methods the engine knows.

A column's method resolves in this order: the column's own entry in ``methods``, then its kind's entry
(``"numerical"`` / ``"categorical"``), then the default. With ``correction`` ``"holm"`` (the default) or
``"bh"`` every column gets a calibrated p-value (``controlplane.drift.calibrated``) and the columns are
compared with ``alpha`` after the correction; the default method is Anderson–Darling for numerical columns
and a chi-square test of homogeneity for categorical ones (and for numerical columns with at most
``LOW_CARDINALITY`` distinct values). With ``correction="none"`` the engine reproduces Evidently: per-column
``thresholds`` (or each method's default), Evidently's default methods, and ``drift_share``. The resolved
method is recorded in every ``ColumnScore``.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from controlplane.domain.errors import DriftConfigError

NUMERICAL = "numerical"
CATEGORICAL = "categorical"
TEXT = "text"  # free text: tested through descriptors (length, words, out-of-vocabulary share, non-letters)
EMBEDDING = "embedding"  # a vector per row: its projections on the reference's main axes, or as vectors ("mmd")
KINDS = (NUMERICAL, CATEGORICAL, TEXT, EMBEDDING)
CORRECTIONS = ("holm", "bh", "none")
LOW_CARDINALITY = 20  # numerical columns with at most this many distinct values are tested as categories
POINT_MASS = 0.1  # numerical columns where one value holds this share of the rows are tested in bins

# Methods with a calibrated p-value (``controlplane.drift.calibrated``): a test's own, or a bootstrap null for a
# distance.
CALIBRATED_P_VALUE = ("anderson", "ks", "cramer_von_mises", "es", "mannw", "t_test", "chisquare", "g_test", "z",
                      "fisher_exact", "mmd")
CALIBRATED_DISTANCE = ("wasserstein", "psi", "jensenshannon", "kl_div", "hellinger", "ed")
CALIBRATED = frozenset(CALIBRATED_P_VALUE + CALIBRATED_DISTANCE)

VERDICT_TAG = "controlplane.drift."  # the prefix of the tags a drift-check job reports its verdict in

P_VALUE = "p_value"  # drift when the value is below the threshold
DISTANCE = "distance"  # drift when the value reaches the threshold


@dataclass(frozen=True)
class Method:
    """One Evidently drift method: the column kinds it accepts, its default threshold and its drift rule."""

    name: str
    kinds: frozenset[str]
    default_threshold: float
    statistic: str  # P_VALUE or DISTANCE
    rule: str  # the comparison Evidently applies: value <rule> threshold means drift
    fast: bool  # computed by controlplane.drift.stattests (otherwise through Evidently)
    display: str  # Evidently's display name, which its snapshots show for an auto-selected method

    def drifted(self, value: float, threshold: float) -> bool:
        if value != value:  # NaN: the test could not decide
            return False
        return {
            "<": value < threshold,
            "<=": value <= threshold,
            ">": value > threshold,
            ">=": value >= threshold,
        }[self.rule]


def _method(name: str, kinds: tuple[str, ...], threshold: float, statistic: str, rule: str, fast: bool,
            display: str) -> Method:
    return Method(name, frozenset(kinds), threshold, statistic, rule, fast, display)


_BOTH = (NUMERICAL, CATEGORICAL)
# Mirrors evidently.legacy.calculations.stattests (0.7.23): names, accepted kinds, default thresholds and the
# exact comparison each test uses (ks and cramer_von_mises use <=, energy distance uses >).
METHODS: Mapping[str, Method] = MappingProxyType({m.name: m for m in (
    _method("ks", (NUMERICAL,), 0.05, P_VALUE, "<=", True, "K-S p_value"),
    _method("wasserstein", (NUMERICAL,), 0.1, DISTANCE, ">=", True, "Wasserstein distance (normed)"),
    _method("psi", _BOTH, 0.1, DISTANCE, ">=", True, "PSI"),
    _method("jensenshannon", _BOTH, 0.1, DISTANCE, ">=", True, "Jensen-Shannon distance"),
    _method("kl_div", _BOTH, 0.1, DISTANCE, ">=", True, "Kullback-Leibler divergence"),
    _method("hellinger", _BOTH, 0.1, DISTANCE, ">=", True, "Hellinger distance"),
    _method("chisquare", (CATEGORICAL,), 0.05, P_VALUE, "<", True, "chi-square p_value"),
    _method("z", (CATEGORICAL,), 0.05, P_VALUE, "<", True, "Z-test p_value"),
    _method("mannw", (NUMERICAL,), 0.05, P_VALUE, "<", True, "Mann-Whitney U-rank test"),
    _method("t_test", (NUMERICAL,), 0.05, P_VALUE, "<", True, "t_test"),
    _method("anderson", (NUMERICAL,), 0.1, P_VALUE, "<", False, "Anderson-Darling"),
    _method("cramer_von_mises", (NUMERICAL,), 0.1, P_VALUE, "<=", False, "Cramer-von Mises"),
    _method("ed", (NUMERICAL,), 0.1, DISTANCE, ">", False, "Energy-distance"),
    _method("es", (NUMERICAL,), 0.05, P_VALUE, "<", False, "Epps-Singleton"),
    _method("empirical_mmd", (NUMERICAL,), 0.1, P_VALUE, "<", False, "empirical_mmd"),
    _method("fisher_exact", (CATEGORICAL,), 0.1, P_VALUE, "<", False, "Fisher's Exact test"),
    _method("g_test", (CATEGORICAL,), 0.1, P_VALUE, "<", False, "g_test"),
    _method("TVD", (CATEGORICAL,), 0.1, P_VALUE, "<", False, "Total-Variation-Distance"),
    # Evidently's embeddings method of the same name: maximum mean discrepancy between the two sets of vectors.
    _method("mmd", (EMBEDDING,), 0.05, P_VALUE, "<", False, "MMD"),
)})


def method_named(name: str) -> Method | None:
    """The method called ``name`` or displayed as ``name`` by Evidently."""
    return METHODS.get(name) or next((m for m in METHODS.values() if m.display == name), None)


def _frozen(mapping: Mapping[str, Any] | None, what: str) -> Mapping[str, Any]:
    if mapping is None:
        return MappingProxyType({})
    if not isinstance(mapping, Mapping):
        raise DriftConfigError(what, f"must be a mapping, got {type(mapping).__name__}")
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class DriftSettings:
    """What to compare and how.

    ``correction``: ``"holm"`` (family-wise error rate ``alpha`` across columns), ``"bh"`` (false discovery
    rate ``alpha``) or ``"none"`` (Evidently's per-column thresholds and the ``drift_share`` rule). With a
    correction, dataset drift means at least one column survives it. ``effect_size_floor``: a numerical
    column whose effect size (see ``calibrated.effect_size``; with ``correction="none"`` the standardised
    mean shift) stays below the floor is not counted as drifted even when its test says so.
    ``sample_bound``: windows longer than this are sampled down to it (without replacement, fixed ``seed``);
    ``reference_bound``: the same for the reference, with its own bound. ``null_samples``: bootstrap
    replicates of a distance's null distribution (raised to ``2 * columns / alpha`` when that is more).
    """

    columns: Mapping[str, str]
    methods: Mapping[str, str] = field(default_factory=dict)
    thresholds: Mapping[str, float] = field(default_factory=dict)
    drift_share: float = 0.5
    min_rows: int = 100
    effect_size_floor: float | None = None
    sample_bound: int = 50_000
    seed: int = 7
    correction: str = "holm"
    alpha: float = 0.05
    reference_bound: int = 50_000
    null_samples: int = 499

    @property
    def calibrated(self) -> bool:
        return self.correction != "none"

    def __post_init__(self) -> None:
        columns = _frozen(self.columns, "columns")
        methods = _frozen(self.methods, "methods")
        thresholds = _frozen(self.thresholds, "thresholds")
        object.__setattr__(self, "columns", columns)
        object.__setattr__(self, "methods", methods)
        object.__setattr__(self, "thresholds", thresholds)
        if not columns:
            raise DriftConfigError("columns", "at least one column must be configured")
        for name, kind in columns.items():
            if not isinstance(name, str) or not name:
                raise DriftConfigError("columns", f"column names must be non-empty strings, got {name!r}")
            if kind not in KINDS:
                raise DriftConfigError(name, f"kind must be one of {', '.join(map(repr, KINDS))}, got {kind!r}",
                                       "columns")
            if kind in (TEXT, EMBEDDING) and self.correction == "none":
                raise DriftConfigError(name, f"{kind} columns need a calibrated correction ('holm' or 'bh')",
                                       "columns")
        for key, method in methods.items():
            self._check_key(key, "methods")
            known = METHODS.get(method)
            if known is None:
                raise DriftConfigError(key, f"unknown drift method {method!r}; known: {', '.join(METHODS)}", "methods")
            kind = columns.get(key, key)
            if kind not in known.kinds:
                raise DriftConfigError(key, f"method {method!r} does not apply to {kind} columns", "methods")
        for key, threshold in thresholds.items():
            self._check_key(key, "thresholds")
            if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not math.isfinite(threshold):
                raise DriftConfigError(key, f"threshold must be a finite number, got {threshold!r}", "thresholds")
            if threshold < 0:
                raise DriftConfigError(key, f"threshold must not be negative, got {threshold!r}", "thresholds")
        if isinstance(self.drift_share, bool) or not isinstance(self.drift_share, int | float) \
                or not 0 < self.drift_share <= 1:
            raise DriftConfigError("drift_share", f"must be in (0, 1], got {self.drift_share!r}")
        if self.correction not in CORRECTIONS:
            raise DriftConfigError("correction", f"must be one of {', '.join(CORRECTIONS)}, got {self.correction!r}")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, int | float) or not 0 < self.alpha < 1:
            raise DriftConfigError("alpha", f"must be in (0, 1), got {self.alpha!r}")
        if self.calibrated:
            for key, method in methods.items():
                if method not in CALIBRATED:
                    raise DriftConfigError(key, f"method {method!r} has no calibrated test; use one of "
                                                f"{', '.join(sorted(CALIBRATED))}, or correction 'none'", "methods")
            if thresholds:
                raise DriftConfigError(next(iter(thresholds)), "thresholds apply with correction 'none' only; with "
                                       f"{self.correction!r} the level is alpha and every threshold comes from "
                                       "the test's null distribution", "thresholds")
        for name, value, low in (("min_rows", self.min_rows, 0), ("sample_bound", self.sample_bound, 2),
                                 ("reference_bound", self.reference_bound, 2), ("null_samples", self.null_samples, 19)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise DriftConfigError(name, f"must be an integer >= {low}, got {value!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise DriftConfigError("seed", f"must be a non-negative integer, got {self.seed!r}")
        floor = self.effect_size_floor
        if floor is not None and (isinstance(floor, bool) or not isinstance(floor, int | float)
                                  or not math.isfinite(floor) or floor < 0):
            raise DriftConfigError("effect_size_floor", f"must be None or a non-negative number, got {floor!r}")

    def _check_key(self, key: str, what: str) -> None:
        if key not in self.columns and key not in (NUMERICAL, CATEGORICAL):
            raise DriftConfigError(key, f"{what} key is neither a configured column nor 'numerical'/'categorical'",
                                   what)

    def _method_key(self, column: str) -> str | None:
        if column in self.methods:
            return column
        kind = self.columns[column]
        return kind if kind in self.methods else None

    def method_for(self, column: str) -> str | None:
        """The configured method of ``column`` (its own, else its kind's); None means Evidently's default."""
        key = self._method_key(column)
        return None if key is None else self.methods[key]

    def threshold_for(self, column: str) -> float | None:
        """The configured threshold of ``column`` (its own, else its kind's); None means the method's default."""
        if column in self.thresholds:
            return float(self.thresholds[column])
        kind = self.columns[column]
        return float(self.thresholds[kind]) if kind in self.thresholds else None

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> DriftSettings:
        """Build settings from a plain mapping (a policy section); unknown keys are refused."""
        if not isinstance(raw, Mapping):
            raise DriftConfigError("drift", f"settings must be a mapping, got {type(raw).__name__}")
        allowed = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(raw) - allowed)
        if unknown:
            raise DriftConfigError(unknown[0], f"unknown drift setting; allowed: {', '.join(sorted(allowed))}")
        if "columns" not in raw:
            raise DriftConfigError("columns", "is required")
        return cls(**dict(raw))

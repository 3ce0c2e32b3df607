"""Calibrated two-sample tests: every column gets a p-value that means a false-alarm rate at its actual sizes.

Numerical columns: Anderson–Darling (k-sample, midrank, Scholz & Stephens 1987) with the asymptotic law of
Marsaglia & Marsaglia (2004) matched to the exact finite-sample mean and variance, two-sample KS,
Cramér–von Mises, Epps–Singleton, a two-sided Mann–Whitney U and Welch's t. Categorical columns: a test of
homogeneity of the 2 x k contingency table (Pearson's chi-square or the G-test), exact by Monte Carlo with
both margins fixed when an expected count is under 5. Distances (Wasserstein, PSI, Jensen–Shannon,
Kullback–Leibler, Hellinger, energy) are turned into tests by a bootstrap of their null distribution drawn
from the reference at the window's and the reference's sizes; ``NullCache`` keeps each null per reference
content, column, method and sizes, so a warm check costs one distance per column.

Inputs are numpy arrays already cleaned (finite floats for numerical columns, canonical strings for
categorical ones).
"""
from __future__ import annotations

import functools
import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import numpy as np

MONTE_CARLO = 1999  # tables with small expected counts: p-values down to 1/2000
BOOTSTRAP_CAP = 10_000  # null replicates past this many rows use sizes with the same effective size
_AD_VARIANCE = 2 * (math.pi ** 2 - 9) / 3  # the variance of the asymptotic Anderson-Darling law (its mean is 1)


class Outcome(NamedTuple):
    """One column's test: its p-value, the statistic it rests on, and what was run."""

    p_value: float
    statistic: float
    test: str
    critical: float | None = None  # distances: the null's (1 - alpha) quantile at these sizes


# ---- numerical p-value tests -------------------------------------------------------------------------------------

def _adinf_upper(z: float) -> float:
    """``1 - _adinf(z)``, accurate far in the tail."""
    if z < 2:
        return 1.0 - _adinf(z)
    return -math.expm1(-math.exp(1.0776 - (2.30695 - (0.43424 - (0.082433 - (0.008056 - 0.0003146 * z) * z) * z)
                                           * z) * z))


def _adinf(z: float) -> float:
    """The CDF of the asymptotic Anderson–Darling law (Marsaglia & Marsaglia 2004, |error| < 2e-6)."""
    if z <= 0:
        return 0.0
    if z < 2:
        return math.exp(-1.2337141 / z) / math.sqrt(z) * (
            2.00012 + (0.247105 - (0.0649821 - (0.0347962 - (0.011672 - 0.00168691 * z) * z) * z) * z) * z)
    return math.exp(-math.exp(1.0776 - (2.30695 - (0.43424 - (0.082433 - (0.008056 - 0.0003146 * z) * z) * z)
                                        * z) * z))


def anderson(reference: np.ndarray, current: np.ndarray) -> Outcome:
    """Two-sample Anderson–Darling (midrank, so ties are handled) with a moment-matched asymptotic p-value.

    One stable sort of both samples (linear when they come sorted) gives, per distinct value, how many
    values of each sample lie at or below it: the statistic of Scholz & Stephens' midrank form follows.
    """
    import numpy as np

    n_ref, n_cur = reference.size, current.size
    N = float(n_ref + n_cur)
    if N < 8 or n_ref == 0 or n_cur == 0:
        return Outcome(math.nan, math.nan, "Anderson-Darling (too few values)")
    pooled = np.concatenate((reference, current))
    order = np.argsort(pooled, kind="stable")
    Z = pooled[order]
    in_current = order >= n_ref
    ends = np.flatnonzero(np.diff(Z) != 0)
    ends = np.append(ends, Z.size - 1)
    if ends.size < 2:
        return Outcome(1.0, 0.0, "Anderson-Darling (a single value on both sides)")
    cur_right = np.cumsum(in_current)[ends].astype(float)
    right = ends + 1.0
    lj = np.diff(right, prepend=0.0)
    Bj = right - lj / 2.0
    f_cur = np.diff(cur_right, prepend=0.0)
    M_cur = cur_right - f_cur / 2.0
    M_ref = (right - cur_right) - (lj - f_cur) / 2.0
    denominator = Bj * (N - Bj) - N * lj / 4.0
    usable = denominator > 0
    a2 = 0.0
    for M, n in ((M_ref, n_ref), (M_cur, n_cur)):
        inner = lj[usable] / N * (N * M[usable] - Bj[usable] * n) ** 2 / denominator[usable]
        a2 += float(inner.sum()) / n
    a2 *= (N - 1.0) / N
    k = 2
    variance = _ad_variance(n_ref, n_cur)
    standardised = (a2 - (k - 1)) / math.sqrt(variance)
    p = _adinf_upper(1.0 + standardised * math.sqrt(_AD_VARIANCE))
    return Outcome(min(1.0, max(p, 0.0)), a2, "Anderson-Darling two-sample (midrank), asymptotic p-value")


@functools.lru_cache(maxsize=256)
def _ad_variance(n_ref: int, n_cur: int) -> float:
    """The exact variance of the two-sample statistic under no drift (Scholz & Stephens 1987, eq. 4)."""
    import numpy as np

    k, N = 2, float(n_ref + n_cur)
    H = 1.0 / n_ref + 1.0 / n_cur
    hs_cs = np.cumsum(1.0 / np.arange(N - 1, 1, -1))
    h = float(hs_cs[-1]) + 1
    g = float((hs_cs / np.arange(2, N)).sum())
    a = (4 * g - 6) * (k - 1) + (10 - 6 * g) * H
    b = (2 * g - 4) * k ** 2 + 8 * h * k + (2 * g - 14 * h - 4) * H - 8 * h + 4 * g - 6
    c = (6 * h + 2 * g - 2) * k ** 2 + (4 * h - 4 * g + 6) * k + (2 * h - 6) * H + 4 * h
    d = (2 * h + 6) * k ** 2 - 4 * h * k
    return (a * N ** 3 + b * N ** 2 + c * N + d) / ((N - 1.0) * (N - 2.0) * (N - 3.0))


def ks(reference: np.ndarray, current: np.ndarray) -> Outcome:
    from scipy.stats import ks_2samp

    result = ks_2samp(reference, current)
    return Outcome(float(result.pvalue), float(result.statistic), "Kolmogorov-Smirnov two-sample, two-sided")


def cramer_von_mises(reference: np.ndarray, current: np.ndarray) -> Outcome:
    from scipy.stats import cramervonmises_2samp

    result = cramervonmises_2samp(reference, current)
    return Outcome(float(result.pvalue), float(result.statistic), "Cramer-von Mises two-sample")


def es(reference: np.ndarray, current: np.ndarray) -> Outcome:
    from scipy.stats import epps_singleton_2samp

    result = epps_singleton_2samp(reference, current)
    return Outcome(float(result.pvalue), float(result.statistic), "Epps-Singleton two-sample")


def mannw(reference: np.ndarray, current: np.ndarray) -> Outcome:
    from scipy.stats import mannwhitneyu

    result = mannwhitneyu(reference, current, alternative="two-sided")
    return Outcome(float(result.pvalue), float(result.statistic), "Mann-Whitney U, two-sided")


def t_test(reference: np.ndarray, current: np.ndarray) -> Outcome:
    from scipy.stats import ttest_ind

    result = ttest_ind(reference, current, equal_var=False)
    return Outcome(float(result.pvalue), float(result.statistic), "Welch's t-test, two-sided")


# ---- categorical: homogeneity of the contingency table -----------------------------------------------------------

def contingency(reference: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray, list]:
    """Counts per category (reference, current), categories in sorted order of their canonical strings."""
    import numpy as np

    keys, inverse = np.unique(np.concatenate([reference, current]), return_inverse=True)
    ref = np.bincount(inverse[: reference.size], minlength=keys.size)
    cur = np.bincount(inverse[reference.size:], minlength=keys.size)
    return ref, cur, list(keys)


def _table_statistic(ref: np.ndarray, cur: np.ndarray, g: bool) -> np.ndarray:
    """Pearson's chi-square (or G) of 2 x k tables; ``cur`` may hold one table per row."""
    import numpy as np

    n_ref, n_cur = ref.sum(axis=-1, keepdims=True), cur.sum(axis=-1, keepdims=True)
    total = ref + cur
    N = n_ref + n_cur
    expected_ref, expected_cur = total * n_ref / N, total * n_cur / N
    with np.errstate(divide="ignore", invalid="ignore"):
        if g:
            terms = (np.where(ref > 0, ref * np.log(ref / expected_ref), 0.0)
                     + np.where(cur > 0, cur * np.log(cur / expected_cur), 0.0))
            return 2.0 * terms.sum(axis=-1)
        terms = (np.where(expected_ref > 0, (ref - expected_ref) ** 2 / expected_ref, 0.0)
                 + np.where(expected_cur > 0, (cur - expected_cur) ** 2 / expected_cur, 0.0))
        return terms.sum(axis=-1)


def homogeneity(reference: np.ndarray, current: np.ndarray, g: bool = False, seed: int = 0) -> Outcome:
    """Chi-square (or G) test that both samples come from one categorical distribution."""
    import numpy as np
    from scipy.stats import chi2

    ref, cur, keys = contingency(reference, current)
    name = "G-test" if g else "chi-square"
    if len(keys) < 2:
        return Outcome(1.0, 0.0, f"{name} homogeneity (a single category on both sides)")
    statistic = float(_table_statistic(ref.astype(float), cur.astype(float), g))
    total = ref + cur
    expected = np.outer([ref.sum(), cur.sum()], total) / total.sum()
    if expected.min() >= 5:
        p = float(chi2.sf(statistic, len(keys) - 1))
        return Outcome(p, statistic, f"{name} homogeneity, 2 x {len(keys)}, asymptotic")
    rng = np.random.default_rng([seed, 11])
    simulated = rng.multivariate_hypergeometric(total, int(cur.sum()), size=MONTE_CARLO)
    null = _table_statistic((total - simulated).astype(float), simulated.astype(float), g)
    p = (1 + int(np.count_nonzero(null >= statistic - 1e-9 * max(1.0, statistic)))) / (MONTE_CARLO + 1)
    return Outcome(p, statistic, f"{name} homogeneity, 2 x {len(keys)}, Monte Carlo ({MONTE_CARLO} tables, "
                                 "margins fixed)")


# ---- distances with a bootstrap null -----------------------------------------------------------------------------

def _edges(reference: np.ndarray) -> np.ndarray:
    """Equal-mass bins of the reference (Sturges' count), open at both ends."""
    import numpy as np

    bins = max(2, min(30, int(math.ceil(math.log2(max(reference.size, 2)) + 1))))
    inner = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    return inner


def _proportions(counts: np.ndarray) -> np.ndarray:
    """Counts to proportions with empty bins set to a small share, as Evidently fills them."""
    import numpy as np

    p = counts / counts.sum(axis=-1, keepdims=True)
    return np.where(p == 0, 1e-4, p)


def _binned_distance(method: str, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    import numpy as np

    if method == "psi":
        return np.sum((p - q) * np.log(p / q), axis=-1)
    if method == "kl_div":
        p, q = p / p.sum(axis=-1, keepdims=True), q / q.sum(axis=-1, keepdims=True)
        return np.sum(p * np.log(p / q), axis=-1)
    if method == "jensenshannon":
        p, q = p / p.sum(axis=-1, keepdims=True), q / q.sum(axis=-1, keepdims=True)
        m = (p + q) / 2
        return np.sqrt(np.maximum(0.0, (np.sum(p * np.log(p / m), axis=-1) + np.sum(q * np.log(q / m), axis=-1))
                                  / 2))
    # hellinger
    return np.sqrt(np.clip(1 - np.sum(np.sqrt(p * q), axis=-1), 0, 1))


def _wasserstein(reference_sorted: np.ndarray, current: np.ndarray, spread: float) -> float:
    import numpy as np

    u, v = reference_sorted, np.sort(current)
    values = np.concatenate((u, v))
    values.sort(kind="mergesort")
    deltas = np.diff(values)
    gaps = np.abs(u.searchsorted(values[:-1], "right") / u.size - v.searchsorted(values[:-1], "right") / v.size)
    return float(np.dot(gaps, deltas)) / spread


def _energy(reference: np.ndarray, current: np.ndarray, spread: float) -> float:
    from scipy.stats import energy_distance

    return float(energy_distance(reference, current)) / spread


def _spread(reference: np.ndarray) -> float:
    import numpy as np

    return max(float(np.std(reference)), 1e-3)


BINNED = ("psi", "jensenshannon", "kl_div", "hellinger")
SCALED_EFFECTIVE_SIZE = 2_000  # past this effective size, a Wasserstein or energy null is drawn here and rescaled


def _counter(reference: np.ndarray, kind: str) -> Callable[[np.ndarray], np.ndarray]:
    """Counts per bin: equal-mass bins of the reference for numbers; the reference's categories (plus one
    bin for categories it never saw) otherwise."""
    import numpy as np

    if kind == "numerical":
        edges = _edges(reference)
        return lambda values: np.bincount(np.searchsorted(edges, values, "right"), minlength=edges.size + 1)
    keys = np.unique(reference)

    def counts(values: np.ndarray) -> np.ndarray:
        index = np.searchsorted(keys, values)
        index = np.where((index < keys.size) & (keys[np.minimum(index, keys.size - 1)] == values), index, keys.size)
        return np.bincount(index, minlength=keys.size + 1)
    return counts


def distance_function(method: str, reference: np.ndarray, kind: str) -> Callable[[np.ndarray, np.ndarray], float]:
    """``f(reference_sample, current_sample)`` for ``method``; numerical bins and scale come from ``reference``."""
    import numpy as np

    if method in ("wasserstein", "ed"):
        spread = _spread(reference)
        if method == "ed":
            return lambda ref, cur: _energy(ref, cur, spread)
        return lambda ref, cur: _wasserstein(np.sort(ref), cur, spread)
    counts = _counter(reference, kind)
    return lambda ref, cur: float(_binned_distance(method, _proportions(counts(ref)), _proportions(counts(cur))))


def null_plan(method: str, n: int, m: int) -> tuple[tuple[int, int], float]:
    """The sizes the null is drawn at, and the factor its values are multiplied by for sizes (n, m).

    Binned distances: the real sizes (multinomial draws are cheap). Wasserstein and energy distances: the
    real sizes up to an effective size ``n m / (n + m)`` of ``SCALED_EFFECTIVE_SIZE``; past it, the null
    is drawn at that effective size and rescaled by the square root of the ratio of effective sizes, as
    both distances shrink like one over the square root of the effective size under no drift (so one null
    per reference serves every large window)."""
    if method in BINNED:
        return (n, m), 1.0
    effective = n * m / (n + m)
    if effective <= SCALED_EFFECTIVE_SIZE:
        if n + m <= BOOTSTRAP_CAP:
            return (n, m), 1.0
        side = max(2, int(round(2 * effective)))
        return (side, side), 1.0
    side = 2 * SCALED_EFFECTIVE_SIZE
    return (side, side), math.sqrt(SCALED_EFFECTIVE_SIZE / effective)


def bootstrap_null(reference: np.ndarray, sizes: tuple[int, int], method: str, kind: str, replicates: int,
                   seed: int) -> np.ndarray:
    """The distance between two samples drawn from the reference with replacement, ``replicates`` times,
    sorted; binned distances draw the bin counts (multinomial) directly."""
    import numpy as np

    size_cur, size_ref = sizes
    rng = np.random.default_rng([seed, 23, size_cur, size_ref])
    if method in BINNED:
        counts = _counter(reference, kind)(reference)
        shares = counts / counts.sum()
        ref = rng.multinomial(size_ref, shares, size=replicates)
        cur = rng.multinomial(size_cur, shares, size=replicates)
        return np.sort(_binned_distance(method, _proportions(ref), _proportions(cur)))
    f = distance_function(method, reference, kind)
    out = np.empty(replicates)
    for b in range(replicates):
        out[b] = f(reference[rng.integers(0, reference.size, size_ref)],
                   reference[rng.integers(0, reference.size, size_cur)])
    return np.sort(out)


class NullCache:
    """Null distributions per (reference content, method, kind, window size, reference size, replicates)."""

    def __init__(self, max_entries: int = 512) -> None:
        self._entries: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._max = max_entries
        self.computed = 0

    def get(self, key: tuple, compute: Callable[[], np.ndarray]) -> np.ndarray:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        null = compute()
        with self._lock:
            self.computed += 1
            self._entries[key] = null
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
        return null

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


NULLS = NullCache()


def fingerprint(values: np.ndarray) -> int:
    """A content hash of a column (the reference's identity for the null cache)."""
    import pandas as pd

    return int(pd.util.hash_array(values).sum()) ^ values.size


def distance_test(method: str, reference: np.ndarray, current: np.ndarray, kind: str, replicates: int,
                  alpha: float, seed: int, cache: NullCache = NULLS) -> Outcome:
    import numpy as np

    observed = distance_function(method, reference, kind)(reference, current)
    sizes, scale = null_plan(method, current.size, reference.size)
    key = (fingerprint(reference), method, kind, sizes, replicates, seed)
    null = cache.get(key, lambda: bootstrap_null(reference, sizes, method, kind, replicates, seed)) * scale
    exceed = null.size - int(np.searchsorted(null, observed - 1e-12 * max(1.0, abs(observed)), "left"))
    p = (1 + exceed) / (null.size + 1)
    critical = float(np.quantile(null, 1 - alpha))
    return Outcome(p, observed, f"{method} distance, bootstrap null from the reference ({null.size} replicates)",
                   critical)


NUMERICAL_TESTS: dict[str, Callable[[np.ndarray, np.ndarray], Outcome]] = {
    "anderson": anderson, "ks": ks, "cramer_von_mises": cramer_von_mises, "es": es, "mannw": mannw,
    "t_test": t_test,
}


def run(method: str, reference: np.ndarray, current: np.ndarray, kind: str, *, replicates: int, alpha: float,
        seed: int) -> Outcome:
    """The calibrated test ``method`` on one column."""
    if method in NUMERICAL_TESTS:
        return NUMERICAL_TESTS[method](reference, current)
    if method in ("chisquare", "z", "fisher_exact"):
        return homogeneity(reference, current, g=False, seed=seed)
    if method == "g_test":
        return homogeneity(reference, current, g=True, seed=seed)
    if method == "mmd":
        return mmd_test(reference, current, replicates=replicates, seed=seed)
    return distance_test(method, reference, current, kind, replicates, alpha, seed)


MMD_BOUND = 500  # vectors per side the kernel is computed on (a uniform sample beyond): 1,000 x 1,000 at most


def mmd_test(reference: np.ndarray, current: np.ndarray, *, replicates: int, seed: int) -> Outcome:
    """Maximum mean discrepancy between two sets of vectors (rows), with a Gaussian kernel whose bandwidth is the
    median squared distance between the pooled vectors, and its p-value from ``replicates`` permutations of the
    pooled vectors between the sides. The bandwidth does not depend on which side a vector is on, so the
    permutation p-value is exact at any sizes: with no change, p <= alpha in at most alpha of windows. Each side is
    sampled down to ``MMD_BOUND`` vectors first (fixed seed)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    ref = reference[rng.permutation(reference.shape[0])[:MMD_BOUND]]
    cur = current[rng.permutation(current.shape[0])[:MMD_BOUND]]
    if ref.shape[0] < 2 or cur.shape[0] < 2:
        return Outcome(math.nan, math.nan, "mmd")
    pooled = np.vstack([ref, cur])
    norms = (pooled * pooled).sum(axis=1)
    squared = np.maximum(norms[:, None] + norms[None, :] - 2 * pooled @ pooled.T, 0.0)
    off_diagonal = squared[np.triu_indices_from(squared, k=1)]
    scale = float(np.median(off_diagonal[off_diagonal > 0])) if np.any(off_diagonal > 0) else 1.0
    kernel = np.exp(-squared / scale)
    n, m = ref.shape[0], cur.shape[0]
    # MMD^2 (biased) of a split is w' K w, w = 1/n on one side and -1/m on the other: all splits in one product.
    first = np.concatenate([np.full(n, 1 / n), np.full(m, -1 / m)])
    splits = np.column_stack([first] + [rng.permutation(first) for _ in range(replicates)])
    statistics = np.einsum("ij,ij->j", splits, kernel @ splits)
    observed = float(statistics[0])
    p_value = (1 + int(np.count_nonzero(statistics[1:] >= observed - 1e-12))) / (replicates + 1)
    return Outcome(p_value, observed, "mmd")


# ---- multiple testing --------------------------------------------------------------------------------------------

def adjust(p_values: list[float], correction: str) -> list[float]:
    """Holm (family-wise) or Benjamini–Hochberg (false discovery rate) adjusted p-values; NaN stays NaN."""
    finite = [(p, i) for i, p in enumerate(p_values) if p == p]
    m = len(finite)
    adjusted = [math.nan] * len(p_values)
    order = sorted(finite)
    if correction == "holm":
        running = 0.0
        for rank, (p, i) in enumerate(order):
            running = max(running, min(1.0, (m - rank) * p))
            adjusted[i] = running
    else:  # bh
        running = 1.0
        for rank in range(m - 1, -1, -1):
            p, i = order[rank]
            running = min(running, m * p / (rank + 1))
            adjusted[i] = min(1.0, running)
    return adjusted


def effect_size(reference: np.ndarray, current: np.ndarray) -> float:
    """Shape-aware effect size of two sorted samples: the Wasserstein-1 distance between the two quantile
    functions on the central 98% of probability (so one extreme value cannot dominate), in reference standard
    deviations (robust: IQR / 1.349 when the IQR is positive). A pure location shift of d SDs gives d; a
    variance x1.5 about 0.18."""
    import numpy as np

    if reference.size == 0 or current.size == 0:
        return math.nan
    grid = np.linspace(0.01, 0.99, 99)
    ref, cur = reference, current
    gap = float(np.mean(np.abs(_quantiles(cur, grid) - _quantiles(ref, grid))))
    q1, q3 = _quantiles(ref, np.array([0.25, 0.75]))
    spread = (q3 - q1) / 1.349 if q3 > q1 else float(np.std(ref))
    if spread == 0.0:
        return 0.0 if gap == 0.0 else math.inf
    return gap / spread


def _quantiles(sorted_values: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """``np.quantile`` (linear interpolation) of an already sorted array, without sorting it again."""
    import numpy as np

    position = probabilities * (sorted_values.size - 1)
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, sorted_values.size - 1)
    fraction = position - low
    return sorted_values[low] * (1 - fraction) + sorted_values[high] * fraction

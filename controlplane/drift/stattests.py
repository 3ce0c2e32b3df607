"""Drift tests computed with numpy/scipy, giving the values Evidently 0.7.23's stattests give.

Each function mirrors ``evidently.legacy.calculations.stattests.<module>`` step by step (same scipy call, same
binning, same zero filling, same key order) so the decision does not pay for Evidently's import (~4 s) nor its
per-column widget rendering, which ``ValueDrift`` always performs. The inputs are pandas Series already
cleaned the way Evidently cleans them (infinities and missing values dropped). ``tests/test_drift_engine.py``
checks the values against Evidently's own.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from controlplane.domain.drift import CATEGORICAL, NUMERICAL

if TYPE_CHECKING:
    import pandas as pd


def default_method(reference: pd.Series, current: pd.Series, kind: str) -> str:
    """Evidently's choice when no method is configured: it depends on the reference size and distinct values."""
    import pandas as pd

    if kind == NUMERICAL:
        n_values = _distinct_up_to(reference, current, 5)
        if len(reference) <= 1000:
            if n_values <= 5:
                return "chisquare" if n_values > 2 else "z"
            return "ks"
        return "jensenshannon" if n_values <= 5 else "wasserstein"
    if len(reference) <= 1000:
        n_values = pd.concat([reference, current], ignore_index=True).nunique()
        return "chisquare" if n_values > 2 else "z"
    return "jensenshannon"


def _distinct_up_to(reference: pd.Series, current: pd.Series, cap: int) -> int:
    """The number of distinct values of both columns, exact up to ``cap`` (anything above is reported as cap+1)."""
    import numpy as np
    import pandas as pd

    head = np.unique(reference.to_numpy()[:256])
    if len(head) > cap:  # a prefix already has more distinct values than matter
        return cap + 1
    return len(pd.unique(pd.concat([reference, current], ignore_index=True)))


def _unique_keys(reference: pd.Series, current: pd.Series) -> list:
    # evidently ...stattests.utils.get_unique_not_nan_values_list_from_series (same set order)
    return list(set(reference.dropna().unique()) | set(current.dropna().unique()))


def _binned(reference: pd.Series, current: pd.Series, kind: str, n: int, fill_zeroes: bool = True):
    # evidently ...stattests.utils.get_binned_data
    import numpy as np
    import pandas as pd

    if kind == NUMERICAL and reference.nunique() > 20:
        combined = np.asarray(pd.concat([reference, current], axis=0).values)
        bins = np.histogram_bin_edges(combined, bins="sturges")
        reference_percents = np.histogram(reference, bins)[0] / len(reference)
        current_percents = np.histogram(current, bins)[0] / len(current)
    else:
        keys = _unique_keys(reference, current)
        ref_counts = {**dict.fromkeys(keys, 0), **dict(reference.value_counts())}
        cur_counts = {**dict.fromkeys(keys, 0), **dict(current.value_counts())}
        reference_percents = np.array([ref_counts[key] / len(reference) for key in keys])
        current_percents = np.array([cur_counts[key] / len(current) for key in keys])
    if fill_zeroes:
        for percents in (reference_percents, current_percents):
            smallest = min(percents[percents != 0])
            np.place(percents, percents == 0, smallest / 10**6 if smallest <= 0.0001 else 0.0001)
    return reference_percents, current_percents


def ks(reference: pd.Series, current: pd.Series, kind: str) -> float:
    from scipy.stats import ks_2samp

    return float(ks_2samp(reference, current)[1])


def wasserstein(reference: pd.Series, current: pd.Series, kind: str) -> float:
    """``scipy.stats.wasserstein_distance`` (unweighted) / the reference's std, as Evidently normalises it.

    The distance follows scipy's ``_cdf_distance`` step for step (same merged sort, same searchsorted CDFs,
    same ``vecdot``) but sorts each sample directly instead of argsorting and indexing: the same numbers,
    about half the work.
    """
    import numpy as np

    u_values = np.sort(np.asarray(reference, dtype=float))
    v_values = np.sort(np.asarray(current, dtype=float))
    all_values = np.concatenate((u_values, v_values))
    all_values.sort(kind="mergesort")
    deltas = np.diff(all_values)
    u_cdf = u_values.searchsorted(all_values[:-1], "right") / u_values.size
    v_cdf = v_values.searchsorted(all_values[:-1], "right") / v_values.size
    gaps = np.abs(u_cdf - v_cdf)
    distance = np.vecdot(gaps, deltas, axis=-1) if hasattr(np, "vecdot") else np.sum(gaps * deltas, axis=-1)
    norm = max(float(np.std(reference)), 0.001)  # a Series: pandas' std with ddof=0, as in Evidently
    return float(distance / norm)


def psi(reference: pd.Series, current: pd.Series, kind: str) -> float:
    import numpy as np

    ref, cur = _binned(reference, current, kind, 30)
    return float(np.sum((ref - cur) * np.log(ref / cur)))


def jensenshannon(reference: pd.Series, current: pd.Series, kind: str) -> float:
    from scipy.spatial import distance

    ref, cur = _binned(reference, current, kind, 30, False)
    return float(distance.jensenshannon(ref, cur, None))


def kl_div(reference: pd.Series, current: pd.Series, kind: str) -> float:
    from scipy import stats

    ref, cur = _binned(reference, current, kind, 30)
    return float(stats.entropy(ref, cur))


def hellinger(reference: pd.Series, current: pd.Series, kind: str) -> float:
    from collections import defaultdict
    from math import sqrt

    import numpy as np

    reference, current = reference.dropna(), current.dropna()
    keys = list(set(reference.unique()) | set(current.unique()))
    total = 0.0
    if kind == CATEGORICAL:
        ref = (reference.value_counts() / len(reference)).to_dict(into=defaultdict(int))
        cur = (current.value_counts() / len(current)).to_dict(into=defaultdict(int))
        for key in keys:
            total += sqrt(float(ref[key]) * float(cur[key]))
    else:
        bins = np.histogram_bin_edges(keys, bins="sturges")
        h1 = np.histogram(reference.to_numpy(), bins=bins, density=True)[0]
        h2 = np.histogram(current.to_numpy(), bins=bins, density=True)[0]
        bin_width = (max(bins) - min(bins)) / (len(bins) - 1)
        for p1, p2 in zip(h1, h2, strict=True):
            total += sqrt(float(p1) * float(p2)) * bin_width
    return sqrt(1 - float(np.clip(total, 0, 1)))


def chisquare(reference: pd.Series, current: pd.Series, kind: str) -> float:
    from scipy.stats import chisquare as scipy_chisquare

    keys = _unique_keys(reference, current)
    ref_counts = {**dict.fromkeys(keys, 0), **dict(reference.value_counts())}
    cur_counts = {**dict.fromkeys(keys, 0), **dict(current.value_counts())}
    k_norm = current.shape[0] / reference.shape[0]
    f_exp = [ref_counts[key] * k_norm for key in keys]
    f_obs = [cur_counts[key] for key in keys]
    return float(scipy_chisquare(f_obs, f_exp)[1])


def z(reference: pd.Series, current: pd.Series, kind: str) -> float:
    import numpy as np
    from scipy.stats import norm

    if reference.nunique() == 1 and current.nunique() == 1 and reference.unique()[0] == current.unique()[0]:
        return 1.0
    keys = _unique_keys(reference, current)
    try:
        first = sorted(keys)[0]
    except TypeError:  # mixed types: Evidently cannot order them either; pick a stable first key
        first = sorted(keys, key=repr)[0]
    n1, n2 = len(reference), len(current)
    p1 = float(int((reference != first).sum())) / n1
    p2 = float(int((current != first).sum())) / n2
    pooled = float(p1 * n1 + p2 * n2) / (n1 + n2)
    statistic = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1.0 / n1 + 1.0 / n2))
    return float(2 * (1 - norm.cdf(np.abs(statistic))))


def mannw(reference: pd.Series, current: pd.Series, kind: str) -> float:
    from scipy.stats import mannwhitneyu

    return float(mannwhitneyu(x=reference, y=current, alternative="less")[1])  # one-sided, as in Evidently


def t_test(reference: pd.Series, current: pd.Series, kind: str) -> float:
    from scipy.stats import ttest_ind

    return float(ttest_ind(reference, current)[1])


FAST: dict[str, Callable[[pd.Series, pd.Series, str], float]] = {
    "ks": ks,
    "wasserstein": wasserstein,
    "psi": psi,
    "jensenshannon": jensenshannon,
    "kl_div": kl_div,
    "hellinger": hellinger,
    "chisquare": chisquare,
    "z": z,
    "mannw": mannw,
    "t_test": t_test,
}

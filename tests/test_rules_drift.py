"""The drift engine's decision as promised: the dataset verdict, corrections across columns, the effect size that
suppresses tiny shifts, the sample bound, and when no test runs at all."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from controlplane.domain.drift import DriftSettings
from controlplane.drift import calibrated
from controlplane.drift.engine import ColumnQuality, ColumnScore, _verdict, check_drift, sample

N = "numerical"


def score(column: str, drifted: bool, suppressed: bool = False) -> ColumnScore:
    return ColumnScore(column=column, kind=N, method="ks", value=0.01, threshold=0.05, drifted=drifted,
                       effect_size=0.5, statistic="p_value", suppressed=suppressed)


COUNTS = {"rows": 500, "reference_rows": 800, "sampled_from": None, "reference_sampled_from": None}


def legacy(share: float, columns=("a", "b", "c", "d"), floor=None) -> DriftSettings:
    return DriftSettings(columns=dict.fromkeys(columns, N), drift_share=share, correction="none",
                         effect_size_floor=floor)


# ---- the dataset verdict ------------------------------------------------------------------------------------------

def test_a_share_equal_to_drift_share_is_dataset_drift():
    scores = [score("a", True), score("b", True), score("c", False), score("d", False)]
    result = _verdict(scores, (), legacy(0.5), 0.0, COUNTS)
    assert result.dataset_drift and result.share == 0.5 and result.drifted == ("a", "b")
    assert result.reason == "dataset drift: 2 of 4 columns drifted (share 0.50 >= drift_share 0.50): a, b"
    assert result.alpha is None and result.correction == "none" and not result.inconclusive


def test_a_share_below_drift_share_is_no_dataset_drift():
    scores = [score("a", True), score("b", False), score("c", False), score("d", False)]
    result = _verdict(scores, (), legacy(0.5), 0.0, COUNTS)
    assert not result.dataset_drift and result.share == 0.25 and result.drift_share == 0.5
    assert result.reason == "no dataset drift: 1 of 4 columns drifted (share 0.25 < drift_share 0.50): a"
    assert (result.rows, result.reference_rows) == (500, 800)


@pytest.mark.parametrize(("correction", "rate"), [("holm", "family-wise error rate, Holm"),
                                                   ("bh", "false discovery rate, Benjamini-Hochberg")])
def test_with_a_correction_one_surviving_column_is_dataset_drift(correction, rate):
    settings = DriftSettings(columns=dict.fromkeys("abcd", N), correction=correction, alpha=0.01, drift_share=0.9)
    result = _verdict([score("a", False), score("b", True), score("c", False), score("d", False)], (), settings,
                      0.0, COUNTS)
    assert result.dataset_drift and result.alpha == 0.01 and result.correction == correction
    assert result.reason == f"dataset drift: 1 of 4 columns drifted at alpha 0.01 ({rate}): b"
    calm = _verdict([score(c, False) for c in "abcd"], (), settings, 0.0, COUNTS)
    assert not calm.dataset_drift and calm.reason.startswith("no dataset drift: 0 of 4")


def test_the_reason_names_suppressed_columns_quality_issues_and_untested_columns():
    quality = (ColumnQuality("a"), ColumnQuality("b", issues=("missing_rate",)),
               ColumnQuality("e", issues=("missing_column",), excluded=True))
    result = _verdict([score("a", False, suppressed=True), score("b", True)], quality, legacy(0.5, floor=0.2), 0.0,
                      COUNTS)
    assert result.reason == ("dataset drift: 1 of 2 columns drifted (share 0.50 >= drift_share 0.50): b; "
                             "below effect_size_floor 0.2 (not counted): a; data quality: b (missing_rate), "
                             "e (missing_column); not tested: e")
    assert result.data_quality and result.excluded == ("e",) and result.quality == quality
    clean = _verdict([score("a", False)], (ColumnQuality("a"),), legacy(0.5), 0.0, COUNTS)
    assert not clean.data_quality and clean.excluded == () and clean.reason.endswith("drift_share 0.50)")


# ---- multiple testing ---------------------------------------------------------------------------------------------

def test_holm_multiplies_by_the_remaining_count_and_keeps_the_order():
    assert calibrated.adjust([0.01, 0.04, 0.03], "holm") == pytest.approx([0.03, 0.06, 0.06])
    assert calibrated.adjust([0.5, 0.2, 0.01], "holm") == pytest.approx([0.5, 0.4, 0.03])
    assert calibrated.adjust([0.6, 0.9], "holm") == [1.0, 1.0]


def test_benjamini_hochberg_scales_by_rank_from_the_largest_down():
    assert calibrated.adjust([0.01, 0.04, 0.03], "bh") == pytest.approx([0.03, 0.04, 0.04])
    assert calibrated.adjust([0.04, 0.001, 0.5, 0.03], "bh") == pytest.approx([0.16 / 3, 0.004, 0.5, 0.16 / 3])
    assert calibrated.adjust([0.9, 0.95], "bh") == pytest.approx([0.95, 0.95])


@pytest.mark.parametrize("correction", ["holm", "bh"])
def test_an_untested_column_stays_nan_and_does_not_count(correction):
    adjusted = calibrated.adjust([math.nan, 0.02, 0.04], correction)
    assert math.isnan(adjusted[0])
    assert adjusted[1:] == pytest.approx([0.04, 0.04])  # two tests, not three
    assert calibrated.adjust([], correction) == []


# ---- effect size --------------------------------------------------------------------------------------------------

def test_a_location_shift_of_d_robust_sds_has_effect_size_d():
    reference = np.sort(np.random.default_rng(1).normal(0.0, 2.0, 4000))
    q1, q3 = np.quantile(reference, [0.25, 0.75])
    sd = (q3 - q1) / 1.349
    for d in (0.5, 1.0, 2.0):
        assert calibrated.effect_size(reference, reference + d * sd) == pytest.approx(d, rel=1e-9)
        assert calibrated.effect_size(reference, reference - d * sd) == pytest.approx(d, rel=1e-9)
    assert calibrated.effect_size(reference, reference.copy()) == 0.0


def test_without_an_iqr_the_effect_size_divides_by_the_standard_deviation():
    reference = np.sort(np.array([0.0] * 90 + [10.0] * 10))  # quartiles both 0
    sd = float(np.std(reference))
    assert calibrated.effect_size(reference, reference + sd) == pytest.approx(1.0, rel=1e-9)
    flat = np.zeros(50)
    assert calibrated.effect_size(flat, flat) == 0.0
    assert calibrated.effect_size(flat, flat + 1.0) == math.inf
    assert math.isnan(calibrated.effect_size(flat, np.array([]))) and math.isnan(calibrated.effect_size(
        np.array([]), flat))


def test_the_effect_size_ignores_the_extreme_percent_of_each_tail():
    reference = np.sort(np.random.default_rng(2).normal(0.0, 1.0, 1000))
    current = reference.copy()
    current[-5:] = 1e6  # half a percent of extreme values
    assert calibrated.effect_size(reference, np.sort(current)) < 0.01


def test_quantiles_of_a_sorted_array_interpolate_linearly_like_numpy():
    values = np.sort(np.random.default_rng(3).normal(size=37))
    grid = np.linspace(0.0, 1.0, 21)
    assert calibrated._quantiles(values, grid) == pytest.approx(np.quantile(values, grid))


# ---- the sample bound ---------------------------------------------------------------------------------------------

def test_a_frame_up_to_the_bound_is_kept_whole():
    frame = pd.DataFrame({"a": range(100)})
    kept, sampled_from = sample(frame, 100, seed=7, stream=0)
    assert kept is frame and sampled_from is None


def test_a_longer_frame_is_sampled_to_the_bound_in_order_and_reproducibly():
    frame = pd.DataFrame({"a": range(101)})
    kept, sampled_from = sample(frame, 100, seed=7, stream=0)
    assert len(kept) == 100 and sampled_from == 101
    assert kept["a"].is_unique and kept["a"].is_monotonic_increasing
    again, _ = sample(frame, 100, seed=7, stream=0)
    assert again.equals(kept)
    small = [sample(pd.DataFrame({"a": range(1000)}), 10, seed=7, stream=s)[0]["a"].tolist() for s in (0, 1)]
    assert small[0] != small[1]  # the reference draws its own stream
    assert sample(pd.DataFrame({"a": range(1000)}), 10, seed=8, stream=0)[0]["a"].tolist() != small[0]


def test_check_drift_samples_each_side_to_its_own_bound():
    rng = np.random.default_rng(4)
    settings = DriftSettings(columns={"x": N}, min_rows=10, sample_bound=150, reference_bound=300)
    result = check_drift(pd.DataFrame({"x": rng.normal(size=200)}), pd.DataFrame({"x": rng.normal(size=400)}),
                         settings)
    assert (result.rows, result.sampled_from, result.reference_rows, result.reference_sampled_from) == (
        150, 200, 300, 400)


# ---- whether a column counts --------------------------------------------------------------------------------------

def frames(shift: float, rows: int = 400, seed: int = 5):
    rng = np.random.default_rng(seed)
    reference = pd.DataFrame({"x": rng.normal(size=rows), "y": rng.normal(size=rows)})
    current = pd.DataFrame({"x": rng.normal(size=rows) + shift, "y": rng.normal(size=rows)})
    return current, reference


def test_a_clear_shift_drifts_and_a_floor_above_its_effect_suppresses_it():
    current, reference = frames(shift=1.0)
    result = check_drift(current, reference, DriftSettings(columns={"x": N, "y": N}, min_rows=10))
    x = result.score("x")
    assert x.drifted and not x.suppressed and x.adjusted_p_value <= 0.05 and x.p_value <= x.adjusted_p_value
    assert x.effect_size == pytest.approx(1.0, abs=0.25) and result.drifted == ("x",) and result.dataset_drift
    assert x.statistic == "p_value" and x.threshold == 0.05 and x.value == x.p_value
    floored = check_drift(current, reference, DriftSettings(columns={"x": N, "y": N}, min_rows=10,
                                                            effect_size_floor=5.0))
    assert floored.score("x").suppressed and not floored.score("x").drifted and not floored.dataset_drift
    kept = check_drift(current, reference, DriftSettings(columns={"x": N, "y": N}, min_rows=10,
                                                         effect_size_floor=0.1))
    assert kept.score("x").drifted and not kept.score("x").suppressed


def test_a_column_drifts_when_its_adjusted_p_value_is_at_most_alpha():
    current, reference = frames(shift=0.3)
    base = check_drift(current, reference, DriftSettings(columns={"x": N, "y": N}, min_rows=10))
    p = base.score("x").adjusted_p_value
    at = check_drift(current, reference, DriftSettings(columns={"x": N, "y": N}, min_rows=10, alpha=p))
    assert at.score("x").drifted
    below = check_drift(current, reference, DriftSettings(columns={"x": N, "y": N}, min_rows=10, alpha=p * 0.999))
    assert not below.score("x").drifted


def test_categorical_columns_have_no_effect_size_and_are_never_suppressed():
    rng = np.random.default_rng(6)
    reference = pd.DataFrame({"c": rng.choice(["a", "b"], size=400)})
    current = pd.DataFrame({"c": ["a"] * 400})
    result = check_drift(current, reference, DriftSettings(columns={"c": "categorical"}, min_rows=10,
                                                           effect_size_floor=100.0))
    assert result.score("c").effect_size is None and result.score("c").drifted


def test_too_few_rows_on_either_side_run_no_test():
    current, reference = frames(shift=0.0, rows=120)
    settings = DriftSettings(columns={"x": N}, min_rows=100)
    few = check_drift(current.head(99), reference, settings)
    assert few.inconclusive and not few.dataset_drift and few.columns == () and few.share == 0.0
    assert few.reason == "inconclusive: current has 99 rows, fewer than min_rows=100; no test was run"
    assert few.alpha == 0.05 and few.correction == "holm" and few.drift_share == settings.drift_share
    both = check_drift(current.head(5), reference.head(7), DriftSettings(columns={"x": N}, correction="none"))
    assert both.reason == ("inconclusive: current has 5 rows and reference has 7 rows, fewer than min_rows=100; "
                           "no test was run")
    assert both.alpha is None and (both.rows, both.reference_rows) == (5, 7)
    assert not check_drift(current.head(100), reference.head(100), settings).inconclusive


def test_each_score_names_its_column_kind_and_few_valued_numbers_are_compared_as_categories():
    rng = np.random.default_rng(7)
    reference = pd.DataFrame({"n": rng.integers(0, 3, 400), "x": rng.normal(size=400)})
    current = pd.DataFrame({"n": rng.integers(0, 3, 400) * 0 + 2, "x": rng.normal(size=400)})
    result = check_drift(current, reference, DriftSettings(columns={"n": N, "x": N}, min_rows=10))
    assert [(s.column, s.kind) for s in result.columns] == [("n", N), ("x", N)]
    assert result.score("n").drifted and not result.score("x").drifted and result.drifted == ("n",)


def test_a_window_with_no_usable_column_is_inconclusive_and_says_which_were_left_out():
    current, reference = frames(shift=0.0, rows=200)
    result = check_drift(current[["y"]], reference, DriftSettings(columns={"x": N}, min_rows=10))
    assert result.inconclusive and result.excluded == ("x",) and result.data_quality
    assert result.reason == "inconclusive: no configured column has usable values in the window: x (missing_column)"

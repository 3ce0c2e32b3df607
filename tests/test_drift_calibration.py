"""Calibration of the drift verdict: false alarms at the stated rate, power on small changes, data-quality
signals apart from drift, and types taken from the reference. The full sweep is in ``make bench``
(bench/drift_bench.py); this is its fast subset, on seeded samples, with binomial bounds."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom

from bench.drift_bench import SYNTHETIC_KINDS, false_alarms, power, synthetic_table
from controlplane.drift import DriftConfigError, DriftSettings, ReferenceCache, calibrated, check_drift


def shifted_frames(rows=500, reference=2_000, seed=0):
    rng = np.random.default_rng(seed)
    return synthetic_table(rows, rng), synthetic_table(reference, rng)


# ---- false alarms and power (fast subset of the bench sweep) ----------------------------------------------------

@pytest.mark.parametrize(("source", "window", "reference"), [
    ("synthetic", 50, 200),  # small: Monte Carlo tables, exact KS, 20 / 21 distinct values on both sides
    ("synthetic", 100, 1_001),  # past Evidently's 1,000-row switch, which no longer exists here
    ("breast_cancer", 100, 1_000),
])
def test_no_drift_windows_are_called_drifted_at_about_alpha(source, window, reference):
    repeats = 120
    result = false_alarms(source, window, reference, repeats)
    # alpha = 0.05 family-wise: the count stays below the 99.9% quantile of a binomial at the target's top, 0.07
    assert result["rate"] * repeats <= binom.ppf(0.999, repeats, 0.07), result
    assert result["blamed"] <= 0.10 + 3 * (0.1 * 0.9 / repeats) ** 0.5, result


@pytest.mark.parametrize(("scenario", "needed"), [
    ("shift_0.2sd", 0.8), ("binary_26_to_41", 0.8), ("variance_x1.5", 0.8), ("missing_0_to_10", 0.9),
])
def test_small_changes_in_one_column_of_ten_are_found_at_500_rows(scenario, needed):
    repeats = 30
    found = power(scenario, repeats)
    # a true power of `needed` gives fewer hits than this bound once in a thousand runs
    assert found * repeats >= binom.ppf(0.001, repeats, needed), found


def test_a_distance_as_the_test_gets_its_threshold_from_the_null_and_caches_it():
    rng = np.random.default_rng(3)
    reference = pd.DataFrame({"x": rng.standard_normal(1_500)})
    settings = DriftSettings(columns={"x": "numerical"}, methods={"x": "wasserstein"}, min_rows=10)
    calls = calibrated.NULLS.computed
    calm = [check_drift(pd.DataFrame({"x": rng.standard_normal(300)}), reference, settings) for _ in range(20)]
    assert calibrated.NULLS.computed == calls + 1  # one null per reference, method and sizes
    assert sum(r.dataset_drift for r in calm) <= 4
    score = calm[0].score("x")
    assert score.statistic == "distance" and score.threshold > 0 and 0 < score.p_value <= 1
    assert "bootstrap null" in score.test
    moved = check_drift(pd.DataFrame({"x": rng.standard_normal(300) + 0.4}), reference, settings)
    assert moved.dataset_drift and moved.score("x").value > moved.score("x").threshold


# ---- the verdict's error rate ------------------------------------------------------------------------------------

def test_only_columns_surviving_holm_are_drifted_and_bh_is_an_option():
    current, reference = shifted_frames(seed=4)
    current["x0"] += 0.5
    holm = check_drift(current, reference, DriftSettings(columns=SYNTHETIC_KINDS))
    assert holm.drifted == ("x0",) and holm.dataset_drift and holm.correction == "holm"
    x0 = holm.score("x0")
    assert x0.adjusted_p_value >= x0.p_value and x0.adjusted_p_value <= 0.05
    assert "family-wise error rate, Holm" in holm.reason
    bh = check_drift(current, reference, DriftSettings(columns=SYNTHETIC_KINDS, correction="bh"))
    assert "x0" in bh.drifted and "false discovery rate" in bh.reason
    legacy = check_drift(current, reference, DriftSettings(columns=SYNTHETIC_KINDS, correction="none"))
    assert not legacy.dataset_drift  # drift_share 0.5 hides one column in ten


def test_holm_and_bh_adjustments():
    assert calibrated.adjust([0.01, 0.04, 0.03], "holm") == pytest.approx([0.03, 0.06, 0.06])
    assert calibrated.adjust([0.01, 0.04, 0.03], "bh") == pytest.approx([0.03, 0.04, 0.04])
    assert np.isnan(calibrated.adjust([float("nan"), 0.2], "holm")[0])


def test_mann_whitney_is_two_sided():
    rng = np.random.default_rng(5)
    reference = pd.DataFrame({"x": rng.standard_normal(400)})
    current = pd.DataFrame({"x": rng.standard_normal(200) - 2})
    result = check_drift(current, reference, DriftSettings(columns={"x": "numerical"}, methods={"x": "mannw"}))
    assert result.score("x").p_value < 1e-20 and result.dataset_drift


def test_chi_square_is_a_homogeneity_test_not_goodness_of_fit():
    # same-size samples of one distribution: the goodness-of-fit test takes the reference as exact and alarms
    # far above 5%; the homogeneity test stays at its level
    rng = np.random.default_rng(6)
    levels, p = ["a", "b", "c", "d"], [0.4, 0.3, 0.2, 0.1]
    alarms = 0
    for _ in range(200):
        reference = pd.DataFrame({"c": rng.choice(levels, 150, p=p)})
        current = pd.DataFrame({"c": rng.choice(levels, 150, p=p)})
        alarms += check_drift(current, reference, DriftSettings(columns={"c": "categorical"})).dataset_drift
    assert alarms <= binom.ppf(0.999, 200, 0.05)


def test_thresholds_need_correction_none():
    with pytest.raises(DriftConfigError, match="correction 'none'"):
        DriftSettings(columns={"a": "numerical"}, thresholds={"a": 0.1})
    with pytest.raises(DriftConfigError, match="no calibrated test"):
        DriftSettings(columns={"a": "numerical"}, methods={"a": "empirical_mmd"})
    assert DriftSettings(columns={"a": "numerical"}, thresholds={"a": 0.1}, correction="none").thresholds


# ---- effect sizes that see shape ---------------------------------------------------------------------------------

def test_the_effect_size_floor_counts_variance_and_shape_but_not_one_outlier():
    rng = np.random.default_rng(7)
    reference = pd.DataFrame({"x": rng.standard_normal(5_000)})
    settings = DriftSettings(columns={"x": "numerical"}, effect_size_floor=0.1)
    wider = check_drift(pd.DataFrame({"x": rng.standard_normal(5_000) * 1.5 ** 0.5}), reference, settings)
    assert wider.dataset_drift and 0.12 < wider.score("x").effect_size < 0.25
    bimodal = np.where(rng.random(5_000) < 0.5, -1, 1) * 0.9 + rng.standard_normal(5_000) * 0.45
    assert check_drift(pd.DataFrame({"x": bimodal}), reference, settings).dataset_drift
    outlier = pd.DataFrame({"x": np.r_[rng.standard_normal(499), 1e6]})
    result = check_drift(outlier, reference, settings)
    assert not result.dataset_drift and result.score("x").effect_size < 0.1
    assert result.quality[0].out_of_range == 1 and "out_of_range" in result.quality[0].issues


# ---- data quality apart from drift -------------------------------------------------------------------------------

def test_a_bad_value_or_an_empty_column_does_not_hide_a_shift_elsewhere():
    current, reference = shifted_frames(seed=8)
    current["x1"] += 3
    current = current.astype({"x0": object})
    current.loc[3, "x0"] = "forty-two"
    current.loc[4, "x0"] = "42"  # a numeric string is a number
    current["x3"] = np.nan
    result = check_drift(current, reference, DriftSettings(columns=SYNTHETIC_KINDS))

    assert not result.inconclusive and result.dataset_drift and "x1" in result.drifted
    assert result.data_quality and result.excluded == ("x3",)
    quality = {q.column: q for q in result.quality}
    assert quality["x0"].invalid == 1 and quality["x0"].issues == ("invalid_values", "out_of_range")  # 42 SDs
    assert "'forty-two'" in quality["x0"].invalid_examples
    assert {"missing_rate", "no_values"} <= set(quality["x3"].issues)
    assert "not tested: x3" in result.reason and "data quality" in result.reason
    evidence = json.loads(json.dumps(result.to_evidence(), allow_nan=False))
    assert evidence["data_quality"] is True and {q["column"] for q in evidence["quality"]} >= {"x0", "x3"}


def test_a_column_missing_from_the_window_is_excluded_and_reported():
    current, reference = shifted_frames(seed=9)
    result = check_drift(current.drop(columns="x2"), reference, DriftSettings(columns=SYNTHETIC_KINDS))
    assert not result.inconclusive and result.excluded == ("x2",)
    assert result.quality[2].issues == ("missing_column",)
    nothing = check_drift(current[["x0"]].assign(x0=np.nan), reference[["x0"]],
                          DriftSettings(columns={"x0": "numerical"}))
    assert nothing.inconclusive and "no configured column has usable values" in nothing.reason


def test_missing_values_rising_and_unseen_categories_are_signals():
    current, reference = shifted_frames(seed=10)
    current["x4"] = current["x4"].mask(np.arange(len(current)) % 10 == 0)
    current.loc[:40, "rare"] = "brand-new"
    result = check_drift(current, reference, DriftSettings(columns=SYNTHETIC_KINDS))
    quality = {q.column: q for q in result.quality}
    assert "missing_rate" in quality["x4"].issues and quality["x4"].missing_current == pytest.approx(0.1)
    assert "unseen_categories" in quality["rare"].issues and quality["rare"].unseen == ("brand-new",)


def test_list_values_in_a_column_are_a_data_quality_problem_not_an_exception():
    rng = np.random.default_rng(11)
    reference = pd.DataFrame({"emb": rng.standard_normal(300), "x": rng.standard_normal(300)})
    current = pd.DataFrame({"emb": [list(rng.standard_normal(4)) for _ in range(200)],
                            "x": rng.standard_normal(200)})
    result = check_drift(current, reference, DriftSettings(columns={"emb": "numerical", "x": "numerical"}))
    assert not result.inconclusive and result.excluded == ("emb",)
    assert result.quality[0].invalid == 200
    categorical = check_drift(current, reference.astype({"emb": str}),
                              DriftSettings(columns={"emb": "categorical", "x": "numerical"}))
    assert categorical.excluded == ("emb",) and "invalid_values" in categorical.quality[0].issues


# ---- types come from the reference -------------------------------------------------------------------------------

def test_codes_booleans_and_numeric_strings_compare_as_the_reference_types_them(tmp_path):
    rng = np.random.default_rng(12)
    rows = 600
    reference = pd.DataFrame({
        "plan": rng.integers(1, 4, rows), "active": rng.random(rows) < 0.5,
        "zip": rng.choice(["02134", "10001", "00501"], rows), "amount": rng.gamma(2.0, size=rows),
    })
    path = tmp_path / "reference.csv"
    reference.to_csv(path, index=False)
    loaded = ReferenceCache().load(str(path))
    assert loaded.attrs["schema"] == {"plan": "numeric", "active": "text", "zip": "text", "amount": "numeric"}
    assert set(loaded["zip"]) == {"02134", "10001", "00501"}  # identifiers keep their leading zeros

    window = reference.sample(300, random_state=1)
    telemetry = [{"plan": str(r.plan), "active": "true" if r.active else "false", "zip": r.zip,
                  "amount": f"{r.amount:.10f}"} for r in window.itertuples()]
    settings = DriftSettings(columns={"plan": "categorical", "active": "categorical", "zip": "categorical",
                                      "amount": "numerical"})
    result = check_drift(telemetry, loaded, settings)
    assert not result.dataset_drift and not result.data_quality, result.reason
    assert result.quality == tuple(q for q in result.quality if not q.issues)


def test_the_reference_is_sampled_with_its_own_bound():
    rng = np.random.default_rng(13)
    reference = pd.DataFrame({"x": rng.standard_normal(3_000)})
    current = pd.DataFrame({"x": rng.standard_normal(500)})
    result = check_drift(current, reference, DriftSettings(columns={"x": "numerical"}, sample_bound=200))
    assert (result.rows, result.sampled_from) == (200, 500)
    assert (result.reference_rows, result.reference_sampled_from) == (3_000, None)
    bounded = check_drift(current, reference, DriftSettings(columns={"x": "numerical"}, reference_bound=1_000))
    assert (bounded.reference_rows, bounded.reference_sampled_from) == (1_000, 3_000)


# ---- text and embeddings -----------------------------------------------------------------------------------------

TOPICS = {
    "billing": ["invoice", "charge", "refund", "payment", "card", "bank", "account", "balance", "fee", "plan",
                "price", "discount"],
    "outage": ["server", "error", "timeout", "crash", "login", "page", "slow", "down", "restart", "network",
               "latency", "status"],
}
FILLER = ["the", "a", "my", "is", "was", "not", "please", "help", "with", "and", "on", "for"]


def tickets(rows, topic, rng):
    words = TOPICS[topic]
    return [" ".join(rng.choice(words + FILLER, rng.integers(4, 14))).capitalize() + rng.choice([".", "?", "!"])
            for _ in range(rows)]


def test_text_from_the_references_source_does_not_drift_and_another_topic_does():
    rng = np.random.default_rng(14)
    reference = pd.DataFrame({"ticket": tickets(1_500, "billing", rng)})
    settings = DriftSettings(columns={"ticket": "text"})
    alarms = sum(check_drift(pd.DataFrame({"ticket": tickets(300, "billing", rng)}), reference,
                             settings).dataset_drift for _ in range(10))
    assert alarms <= 2
    resampled = reference.sample(300, random_state=2)
    assert not check_drift(resampled, reference, settings).dataset_drift
    other = check_drift(pd.DataFrame({"ticket": tickets(300, "outage", rng)}), reference, settings)
    assert other.dataset_drift and "ticket:oov_share" in other.drifted
    assert {s.column for s in other.columns} == {f"ticket:{d}" for d in
                                                 ("length", "words", "oov_share", "non_letter_share")}


def test_embeddings_detect_a_change_in_the_class_mix_and_lists_never_raise():
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(15)
    order = rng.permutation(len(digits.target))
    vectors = [list(v) for v in digits.data]
    reference = pd.DataFrame({"emb": [vectors[i] for i in order[:1_000]]})
    settings = DriftSettings(columns={"emb": "embedding"})
    same = check_drift(pd.DataFrame({"emb": [vectors[i] for i in order[1_000:1_400]]}), reference, settings)
    assert not same.dataset_drift and len(same.columns) == 5, same.reason
    low = [i for i in order[1_000:] if digits.target[i] < 5][:400]
    assert check_drift(pd.DataFrame({"emb": [vectors[i] for i in low]}), reference, settings).dataset_drift
    broken = pd.DataFrame({"emb": [vectors[i] for i in order[1_000:1_300]] + ["n/a", [1.0, 2.0]]})
    result = check_drift(broken, reference, settings)
    assert not result.inconclusive and result.quality[0].invalid == 2 and "invalid_values" in result.quality[0].issues


def test_mmd_tests_embeddings_as_vectors_at_its_stated_error_rate_and_sees_a_class_mix_change():
    from sklearn.datasets import load_digits

    digits = load_digits()
    vectors = [list(v) for v in digits.data]
    settings = DriftSettings(columns={"emb": "embedding"}, methods={"emb": "mmd"})
    rng = np.random.default_rng(16)
    alarms = 0
    for _ in range(20):  # no change: two random halves of the same digits
        order = rng.permutation(len(vectors))
        reference = pd.DataFrame({"emb": [vectors[i] for i in order[:600]]})
        window = pd.DataFrame({"emb": [vectors[i] for i in order[600:900]]})
        result = check_drift(window, reference, settings)
        assert [s.method for s in result.columns] == ["mmd"] and result.columns[0].column == "emb"
        alarms += result.dataset_drift
    assert alarms <= 3  # alpha 0.05: 20 windows give more than 3 alarms with probability under 2%
    order = rng.permutation(len(vectors))
    reference = pd.DataFrame({"emb": [vectors[i] for i in order[:600]]})
    mix = [i for i in order[600:] if digits.target[i] < 7][:300]  # three digits of ten gone from the window
    shifted = check_drift(pd.DataFrame({"emb": [vectors[i] for i in mix]}), reference, settings)
    assert shifted.dataset_drift and shifted.drifted == ("emb",) and shifted.columns[0].p_value < 0.01
    broken = pd.DataFrame({"emb": [vectors[i] for i in order[600:900]] + ["n/a", [1.0, 2.0]]})
    assert check_drift(broken, reference, settings).quality[0].invalid == 2  # a bad vector is excluded, not fatal


def test_mmd_applies_to_embedding_columns_only():
    from controlplane.domain.errors import DriftConfigError

    with pytest.raises(DriftConfigError, match="method 'mmd' does not apply to numerical columns"):
        DriftSettings(columns={"x": "numerical"}, methods={"x": "mmd"})

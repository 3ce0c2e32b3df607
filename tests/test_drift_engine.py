"""Tests of the drift-check engine (controlplane.drift) on real data from scikit-learn and on synthetic samples."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from controlplane.domain.errors import PermanentError, TransientError
from controlplane.drift import (
    DriftConfigError,
    DriftSettings,
    ReferenceCache,
    ReferenceLoadError,
    ReferenceUnreachable,
    check_drift,
    render_report,
)
from tests.support import ROOT

FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
NUMERICAL = {name: "numerical" for name in FEATURES if name != "sex"}


@pytest.fixture(scope="module")
def diabetes() -> pd.DataFrame:
    """442 patients of the scikit-learn diabetes study, in original units; sex as a label, a BMI band."""
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(as_frame=True, scaled=False).frame
    frame["sex"] = frame["sex"].map({1.0: "F", 2.0: "M"})
    frame["bmi_band"] = pd.cut(frame["bmi"], [0, 22, 26, 30, 100], labels=["lean", "normal", "over", "obese"])
    return frame


@pytest.fixture(scope="module")
def by_age(diabetes):
    """Covariate shift: the older half of the patients against the younger half as reference."""
    median = diabetes["age"].median()
    return diabetes[diabetes["age"] >= median], diabetes[diabetes["age"] < median]


def features(**overrides) -> DriftSettings:
    return DriftSettings(columns={**NUMERICAL, "sex": "categorical"}, **overrides)


def gaussian(rows: int, shift: float = 0.0, seed: int = 0, width: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(rng.normal(shift, 1.0, size=(rows, width)), columns=[f"f{i}" for i in range(width)])


def test_importing_the_package_loads_no_heavy_module():
    heavy = ["pandas", "numpy", "scipy", "evidently", "azure.storage.blob", "azure.identity", "pyarrow", "sklearn"]
    code = f"import sys, controlplane.drift; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


# ---- decisions on real data -------------------------------------------------------------------------------------

def test_older_patients_drift_from_younger_ones(by_age):
    older, younger = by_age
    result = check_drift(older, younger, features())

    assert result.dataset_drift and not result.inconclusive
    assert {"age", "bmi", "bp", "s5", "s6"} <= set(result.drifted)
    assert result.share == len(result.drifted) / 10 >= 0.5
    age = result.score("age")
    # the calibrated default at any size: Anderson-Darling for numbers, a homogeneity test for two categories
    assert (age.method, age.statistic, age.threshold) == ("anderson", "p_value", 0.05)
    assert age.value < 1e-10 and age.adjusted_p_value <= 0.05 and age.effect_size > 1.5
    assert result.correction == "holm" and "alpha 0.05" in result.reason
    assert result.score("sex").method == "z" and result.score("sex").effect_size is None
    assert (result.rows, result.reference_rows, result.sampled_from) == (len(older), len(younger), None)
    assert "dataset drift" in result.reason and "age" in result.reason


def test_a_random_split_of_the_same_patients_does_not_drift(diabetes):
    order = np.random.default_rng(7).permutation(len(diabetes))
    half = len(diabetes) // 2
    result = check_drift(diabetes.iloc[order[:half]], diabetes.iloc[order[half:]], features())

    assert not result.dataset_drift
    assert result.share <= 0.2
    assert "no dataset drift" in result.reason


def test_rows_given_as_dicts_are_accepted(by_age):
    older, younger = by_age
    settings = features()
    from_rows = check_drift(older.to_dict("records"), younger.to_dict("records"), settings)
    assert from_rows.columns == check_drift(older, younger, settings).columns


def test_categorical_columns(by_age):
    older, younger = by_age
    settings = DriftSettings(columns={"sex": "categorical", "bmi_band": "categorical"})
    result = check_drift(older, younger, settings)

    assert result.score("sex").method == "z"  # two values
    assert result.score("bmi_band").method == "chisquare"  # four values
    assert result.score("bmi_band").drifted and result.score("bmi_band").statistic == "p_value"
    assert "homogeneity" in result.score("bmi_band").test

    rng = np.random.default_rng(1)  # a larger reference: still a test of homogeneity (no switch on size)
    reference = pd.DataFrame({"plan": rng.choice(["free", "pro", "team"], 5000, p=[0.6, 0.3, 0.1])})
    current = pd.DataFrame({"plan": rng.choice(["free", "pro", "team"], 3000, p=[0.3, 0.3, 0.4])})
    shifted = check_drift(current, reference, DriftSettings(columns={"plan": "categorical"}))
    assert shifted.score("plan").method == "chisquare" and shifted.dataset_drift
    same = check_drift(reference.iloc[2500:], reference.iloc[:2500], DriftSettings(columns={"plan": "categorical"}))
    assert not same.dataset_drift


# ---- the fast path gives Evidently's values ---------------------------------------------------------------------

def _compare_with_evidently(current, reference, settings):
    settings = replace(settings, correction="none")
    ours = check_drift(current, reference, settings)
    theirs = check_drift(current, reference, settings, engine="evidently")
    for mine, evidently in zip(ours.columns, theirs.columns, strict=True):
        assert (mine.column, mine.method, mine.threshold) == (evidently.column, evidently.method, evidently.threshold)
        assert mine.value == evidently.value, f"{mine.column} ({mine.method}): {mine.value} != {evidently.value}"
        assert mine.drifted == evidently.drifted
    return ours


def test_fast_path_values_equal_evidently_on_real_data(by_age, diabetes):
    older, younger = by_age
    frame = diabetes.assign(band_psi=diabetes["bmi_band"], band_js=diabetes["bmi_band"],
                            band_kl=diabetes["bmi_band"], band_hell=diabetes["bmi_band"])
    older, younger = frame.loc[older.index], frame.loc[younger.index]
    methods = {"age": "ks", "bmi": "wasserstein", "bp": "psi", "s1": "jensenshannon", "s2": "kl_div",
               "s3": "hellinger", "s4": "mannw", "s5": "t_test", "band_psi": "psi", "band_js": "jensenshannon",
               "band_kl": "kl_div", "band_hell": "hellinger", "bmi_band": "chisquare"}
    columns = {**NUMERICAL, "sex": "categorical", "bmi_band": "categorical", "band_psi": "categorical",
               "band_js": "categorical", "band_kl": "categorical", "band_hell": "categorical"}
    result = _compare_with_evidently(older, younger, DriftSettings(columns=columns, methods=methods))
    assert result.score("s6").method == "ks" and result.score("sex").method == "z"  # defaults, resolved alike


def test_ks_and_wasserstein_equal_evidently_on_large_samples():
    # 12k rows: past scipy's exact-KS limit (asymptotic p-value) and past Evidently's 1000-row default switch
    reference = gaussian(12_000, seed=1).assign(level=lambda f: (f["f0"] > 0).astype(int) + (f["f1"] > 1))
    current = gaussian(12_000, shift=0.05, seed=2).assign(level=lambda f: (f["f0"] > 0.2).astype(int))
    settings = DriftSettings(columns={"f0": "numerical", "f1": "numerical", "f2": "numerical", "level": "numerical"},
                             methods={"f0": "ks"})
    result = _compare_with_evidently(current, reference, settings)
    assert [score.method for score in result.columns] == ["ks", "wasserstein", "wasserstein", "jensenshannon"]


# ---- settings honoured ------------------------------------------------------------------------------------------

def test_configured_methods_and_thresholds_are_used(by_age):
    older, younger = by_age
    settings = features(methods={"bmi": "psi", "numerical": "t_test", "categorical": "chisquare"},
                        thresholds={"bmi": 0.3, "numerical": 0.001, "sex": 0.2}, correction="none")
    result = check_drift(older, younger, settings)

    bmi = result.score("bmi")
    assert (bmi.method, bmi.threshold, bmi.statistic) == ("psi", 0.3, "distance")
    assert bmi.drifted == (bmi.value >= 0.3)
    for name in ("age", "bp", "s1", "s2", "s3", "s4", "s5", "s6"):
        score = result.score(name)
        assert (score.method, score.threshold, score.statistic) == ("t_test", 0.001, "p_value")
        assert score.drifted == (score.value < 0.001)
    sex = result.score("sex")
    assert (sex.method, sex.threshold) == ("chisquare", 0.2)
    evidence = result.to_evidence()
    json.dumps(evidence, allow_nan=False)
    assert {c["column"]: c["method"] for c in evidence["columns"]}["bmi"] == "psi"


def test_a_method_evidently_alone_implements_goes_through_evidently(by_age):
    older, younger = by_age
    settings = DriftSettings(columns={"age": "numerical", "bmi": "numerical"}, methods={"age": "anderson"},
                             correction="none")
    with pytest.warns(UserWarning):  # scipy floors Anderson-Darling p-values below 0.001 and says so
        result = check_drift(older, younger, settings)
    assert result.score("age").method == "anderson" and result.score("age").drifted
    assert result.score("bmi").method == "ks"


def test_fewer_rows_than_min_rows_is_inconclusive(by_age):
    older, younger = by_age
    result = check_drift(older.head(40), younger, features(min_rows=100))
    assert result.inconclusive and not result.dataset_drift
    assert result.columns == () and result.drifted == ()
    assert "min_rows=100" in result.reason and "current has 40 rows" in result.reason
    assert check_drift(older, younger.head(99), features()).inconclusive
    assert check_drift([], younger, features()).inconclusive


def test_effect_size_floor_suppresses_a_significant_but_tiny_shift():
    reference, current = gaussian(200_000, seed=3, width=1), gaussian(200_000, shift=0.02, seed=4, width=1)
    plain = DriftSettings(columns={"f0": "numerical"}, methods={"f0": "ks"}, sample_bound=200_000,
                          reference_bound=200_000)
    flagged = check_drift(current, reference, plain)
    assert flagged.dataset_drift and flagged.score("f0").value < 1e-6

    floored = replace(plain, effect_size_floor=0.1)
    result = check_drift(current, reference, floored)
    score = result.score("f0")
    assert not result.dataset_drift and not score.drifted and score.suppressed
    assert score.value == flagged.score("f0").value and 0.01 < score.effect_size < 0.04
    assert "effect_size_floor" in result.reason

    shifted = check_drift(gaussian(200_000, shift=0.5, seed=5, width=1), reference, floored)
    assert shifted.dataset_drift and not shifted.score("f0").suppressed


def test_large_frames_are_sampled_with_a_fixed_seed():
    reference, current = gaussian(120_000, seed=6), gaussian(90_000, shift=0.05, seed=7)
    settings = DriftSettings(columns={"f0": "numerical", "f1": "numerical", "f2": "numerical"}, sample_bound=20_000,
                             reference_bound=20_000)
    first, second = check_drift(current, reference, settings), check_drift(current, reference, settings)

    assert first.columns == second.columns and first.drifted == second.drifted
    assert (first.rows, first.sampled_from) == (20_000, 90_000)
    assert (first.reference_rows, first.reference_sampled_from) == (20_000, 120_000)
    other_seed = check_drift(current, reference, replace(settings, seed=8))
    assert other_seed.columns != first.columns
    assert check_drift(current, reference, DriftSettings(columns=settings.columns)).sampled_from == 90_000


@pytest.mark.filterwarnings("ignore:Precision loss:RuntimeWarning")
def test_missing_and_infinite_values_are_dropped_and_evidence_stays_json_safe():
    reference = pd.DataFrame({"flat": [1.0] * 200, "x": np.r_[np.arange(199.0), np.inf]})
    current = pd.DataFrame({"flat": [1.0] * 150, "x": np.r_[np.arange(149.0), np.nan]})
    settings = DriftSettings(columns={"flat": "numerical", "x": "numerical"}, methods={"numerical": "t_test"})
    result = check_drift(current, reference, settings)

    flat = result.score("flat")
    assert np.isnan(flat.value) and not flat.drifted and flat.effect_size == 0.0  # a t-test of constants
    evidence = json.loads(json.dumps(result.to_evidence(), allow_nan=False))
    assert evidence["columns"][0]["value"] is None and evidence["columns"][1]["value"] == result.score("x").value
    assert evidence["rows"] == 150 and evidence["dataset_drift"] is result.dataset_drift


# ---- errors -----------------------------------------------------------------------------------------------------

def test_a_missing_column_is_a_config_error_naming_it(by_age):
    older, younger = by_age
    settings = DriftSettings(columns={"bmi": "numerical", "glucose": "numerical"})
    with pytest.raises(DriftConfigError, match="glucose") as raised:
        check_drift(older, younger, settings)
    assert raised.value.subject == "glucose" and isinstance(raised.value, PermanentError)
    with pytest.raises(DriftConfigError, match="'age'.*reference"):
        check_drift(older, younger.drop(columns="age"), features())


def test_a_text_column_declared_numerical_is_refused(by_age):
    older, younger = by_age
    with pytest.raises(DriftConfigError, match="sex.*non-numeric"):
        check_drift(older, younger, DriftSettings(columns={"sex": "numerical"}))


@pytest.mark.parametrize(("kwargs", "named"), [
    ({"columns": {}}, "columns"),
    ({"columns": {"a": "image"}}, "a"),
    ({"columns": {"a": "numerical"}, "methods": {"a": "nope"}}, "a"),
    ({"columns": {"a": "numerical"}, "methods": {"a": "chisquare"}}, "a"),
    ({"columns": {"a": "categorical"}, "methods": {"categorical": "ks"}}, "categorical"),
    ({"columns": {"a": "numerical"}, "methods": {"b": "ks"}}, "b"),
    ({"columns": {"a": "numerical"}, "thresholds": {"a": -1}}, "a"),
    ({"columns": {"a": "numerical"}, "drift_share": 0}, "drift_share"),
    ({"columns": {"a": "numerical"}, "sample_bound": 1}, "sample_bound"),
    ({"columns": {"a": "numerical"}, "effect_size_floor": -0.1}, "effect_size_floor"),
])
def test_invalid_settings_are_refused(kwargs, named):
    with pytest.raises(DriftConfigError) as raised:
        DriftSettings(**kwargs)
    assert raised.value.subject == named


def test_settings_from_a_policy_mapping():
    settings = DriftSettings.from_mapping({"columns": {"a": "numerical"}, "methods": {"a": "psi"}, "min_rows": 10})
    assert settings.method_for("a") == "psi" and settings.threshold_for("a") is None and settings.min_rows == 10
    with pytest.raises(DriftConfigError, match="colums"):
        DriftSettings.from_mapping({"colums": {"a": "numerical"}})


# ---- the HTML report --------------------------------------------------------------------------------------------

def test_render_report_writes_html_with_the_columns(by_age, tmp_path):
    older, younger = by_age
    settings = DriftSettings(columns={"age": "numerical", "bmi": "numerical", "sex": "categorical"},
                             methods={"bmi": "psi"})
    path = render_report(older, younger, settings, tmp_path / "reviews" / "drift.html")
    html = path.read_text(encoding="utf-8")
    assert path == tmp_path / "reviews" / "drift.html" and "<html" in html[:2000].lower()
    for name in ("age", "bmi", "sex"):
        assert f"Value drift for {name}" in html or f"'{name}'" in html or f'"{name}"' in html


# ---- reference cache --------------------------------------------------------------------------------------------

def test_reference_cache_loads_csv_once_and_reloads_after_a_change(tmp_path, diabetes):
    path = tmp_path / "reference.csv"
    diabetes.head(100).to_csv(path, index=False)
    cache = ReferenceCache()

    first = cache.load(str(path))
    assert len(first) == 100 and "bmi" in first.columns
    assert cache.load(str(path)) is first and cache.reads == 1

    diabetes.head(150).to_csv(path, index=False)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    reloaded = cache.load(str(path))
    assert reloaded is not first and len(reloaded) == 150 and cache.reads == 2
    assert cache.load(str(path)) is reloaded


def test_reference_cache_parquet(tmp_path, diabetes):
    pytest.importorskip("pyarrow")
    path = tmp_path / "reference.parquet"
    diabetes.drop(columns="bmi_band").to_parquet(path)
    cache = ReferenceCache()
    assert cache.load(str(path)).shape == (442, 11)


def test_reference_cache_resolves_azureml_assets_through_the_callable(tmp_path, diabetes):
    folder = tmp_path / "asset"
    folder.mkdir()
    diabetes.head(60).to_csv(folder / "part-0.csv", index=False)
    diabetes.iloc[60:100].to_csv(folder / "part-1.csv", index=False)
    calls = []

    def loader(source: str) -> str:
        calls.append(source)
        return str(folder)

    cache = ReferenceCache()
    frame = cache.load("azureml:diabetes-reference:3", loader_for_azureml=loader)
    assert len(frame) == 100 and calls == ["azureml:diabetes-reference:3"]
    assert cache.load("azureml:diabetes-reference:3", loader_for_azureml=loader) is frame and len(calls) == 1
    with pytest.raises(ReferenceLoadError, match="loader_for_azureml"):
        cache.load("azureml:diabetes-reference:4")
    with pytest.raises(ReferenceLoadError, match="pin"):
        cache.load("azureml:diabetes-reference:latest", loader_for_azureml=loader)


def test_reference_cache_errors(tmp_path):
    cache = ReferenceCache()
    with pytest.raises(ReferenceLoadError, match="does not exist") as raised:
        cache.load(str(tmp_path / "missing.csv"))
    assert str(tmp_path / "missing.csv") in str(raised.value) and isinstance(raised.value, PermanentError)
    (tmp_path / "reference.json").write_text("{}")
    with pytest.raises(ReferenceLoadError, match="unsupported"):
        cache.load(str(tmp_path / "reference.json"))
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ReferenceLoadError, match="cannot be parsed"):
        cache.load(str(tmp_path / "empty.csv"))

    def flaky(source):
        raise ConnectionError("reset by peer")

    with pytest.raises(ReferenceUnreachable) as unreachable:
        cache.load("azureml:ref:1", loader_for_azureml=flaky)
    assert isinstance(unreachable.value, TransientError)


class FakeBlob:
    """A blob client double: properties carry the ETag; download returns the bytes (or raises)."""

    def __init__(self, store: dict) -> None:
        self.store = store

    def get_blob_properties(self):
        if "error" in self.store:
            raise self.store["error"]
        return type("Properties", (), {"etag": self.store["etag"]})()

    def download_blob(self, etag=None, match_condition=None):
        self.store["downloads"] = self.store.get("downloads", 0) + 1
        data = self.store["data"]
        return type("Downloader", (), {"readall": lambda self: data})()


def test_reference_cache_blob_urls_are_cached_by_etag(diabetes):
    from azure.core.exceptions import ResourceNotFoundError, ServiceRequestError

    store = {"etag": '"0x1"', "data": diabetes.head(120).to_csv(index=False).encode()}
    cache = ReferenceCache(blob_client_factory=lambda url: FakeBlob(store))
    url = "https://account.blob.core.windows.net/references/diabetes.csv"

    first = cache.load(url)
    assert len(first) == 120 and cache.load(url) is first and store["downloads"] == 1
    store.update(etag='"0x2"', data=diabetes.head(130).to_csv(index=False).encode())
    assert len(cache.load(url)) == 130 and store["downloads"] == 2

    store["error"] = ServiceRequestError("connection refused")
    with pytest.raises(ReferenceUnreachable):
        cache.load(url)
    store["error"] = ResourceNotFoundError("no such blob")
    with pytest.raises(ReferenceLoadError, match="not found"):
        cache.load(url)


def test_reference_cache_reads_once_under_concurrent_loads(tmp_path, diabetes):
    path = tmp_path / "reference.csv"
    diabetes.to_csv(path, index=False)
    cache = ReferenceCache()
    start = threading.Barrier(8)

    def load(_):
        start.wait()
        return cache.load(str(path))

    with ThreadPoolExecutor(8) as pool:
        frames = list(pool.map(load, range(8)))
    assert cache.reads == 1 and all(frame is frames[0] for frame in frames)

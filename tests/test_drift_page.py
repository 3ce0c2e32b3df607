"""What a drift reviewer sees: each drifted column's reference against current (kept small in the decision
record, drawn as SVG on the review page), the per-column table with readable numbers, the window's facts, and
the full report opening with a header that names the model and the window."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from controlplane.domain.drift import DriftSettings
from controlplane.domain.ledger import Outcome, ReviewDraft, Source, Verdict, record
from controlplane.domain.reviews import ReviewKind
from controlplane.drift import check_drift, render_report
from controlplane.drift.engine import DISTRIBUTION_BINS, DISTRIBUTION_COLUMNS, TOP_CATEGORIES, distribution
from controlplane.web.charts import distribution_chart
from controlplane.web.pages import drift_section
from tests.support import ROOT, local_host
from tests.test_review_pages import KEY, drift_evidence, opened, serious_violations

ARTIFACTS = ROOT / "test-artifacts"
SVG = "{http://www.w3.org/2000/svg}"
START = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


# ---- the evidence: bounded, and the same counts as numpy's --------------------------------------------------------

def test_a_numerical_distribution_is_numpys_histogram_on_shared_bins_with_the_tails_counted_apart():
    rng = np.random.default_rng(7)
    ref, cur = rng.normal(0, 1, 300), rng.normal(0.8, 1.5, 120)
    found = distribution("x", "numerical", ref, cur)

    edges = np.asarray(found["edges"])
    assert len(edges) == DISTRIBUTION_BINS + 1 and np.all(np.diff(edges) > 0)
    low, high = np.quantile(np.concatenate([ref, cur]), [0.005, 0.995])
    assert edges[0] == pytest.approx(low) and edges[-1] == pytest.approx(high)
    assert found["reference"] == np.histogram(ref, edges)[0].tolist()
    assert found["current"] == np.histogram(cur, edges)[0].tolist()
    assert found["outside"] == {"reference": [int((ref < low).sum()), int((ref > high).sum())],
                                "current": [int((cur < low).sum()), int((cur > high).sum())]}
    assert sum(found["reference"]) + sum(found["outside"]["reference"]) == 300
    assert sum(found["current"]) + sum(found["outside"]["current"]) == 120


def test_categories_keep_the_most_common_and_count_the_rest_and_few_numbers_are_counted_one_by_one():
    ref = np.array([f"c{i % 15}" for i in range(300)] + ["x" * 500] * 40)
    cur = np.array(["new"] * 100 + ["c1"] * 20)
    found = distribution("shop", "categorical", ref, cur)
    assert len(found["categories"]) == TOP_CATEGORIES and found["categories"][:3] == ["new", "c1", "x" * 40]
    assert found["reference"][:3] == [0, 20, 40] and found["current"][:3] == [100, 20, 0]
    assert sum(found["reference"]) + found["other"]["reference"] == 340
    assert sum(found["current"]) + found["other"]["current"] == 120

    counted = distribution("doors", "numerical", np.array([2.0, 4, 4, 5]), np.array([2.0, 2, 3]))
    assert counted["kind"] == "categorical" and counted["categories"] == ["2", "3", "4", "5"]
    assert (counted["reference"], counted["current"]) == ([1, 0, 2, 1], [2, 1, 0, 0])


def test_the_evidence_keeps_distributions_of_drifted_columns_only_at_most_ten_and_small():
    rng = np.random.default_rng(1)
    names = [f"f{i}" for i in range(14)]
    reference = pd.DataFrame(rng.normal(0, 1, (2000, 14)), columns=names)
    current = pd.DataFrame(rng.normal(0, 1, (400, 14)), columns=names)
    current[names[:12]] += 3  # twelve columns move, two stay
    current["f0"] = current["f0"].round()  # and one of them has few distinct values
    reference["shop"] = rng.choice([f"store-{i}" for i in range(60)], 2000)
    current["shop"] = rng.choice(["store-1"] * 5 + ["a newcomer" * 20], 400)
    settings = DriftSettings(columns={**dict.fromkeys(names, "numerical"), "shop": "categorical"})

    evidence = check_drift(current, reference, settings).to_evidence()
    kept = evidence["distributions"]
    assert {d["column"] for d in kept} <= set(evidence["drifted"]) and "f13" not in {d["column"] for d in kept}
    assert len(evidence["drifted"]) == 13 and len(kept) == DISTRIBUTION_COLUMNS
    assert max(len(json.dumps(d)) for d in kept) < 4096 and len(json.dumps(kept)) < 10 * 4096
    assert check_drift(current[names[12:]], reference[names[12:]],
                       DriftSettings(columns=dict.fromkeys(names[12:], "numerical"))).to_evidence()[
        "distributions"] == []  # nothing drifted: nothing kept


# ---- the charts ----------------------------------------------------------------------------------------------------

def test_a_histogram_and_paired_bars_are_accessible_svg_naming_the_column_and_escaping_it():
    histogram = ET.fromstring(distribution_chart({"column": "age<b>", "kind": "numerical", "edges": [0, 1, 2, 3],
                                                  "reference": [10, 80, 10], "current": [0, 20, 80],
                                                  "outside": {"reference": [0, 0], "current": [0, 0]}}))
    label = histogram.get("aria-label")
    assert histogram.get("role") == "img" and label.startswith("age<b>: share of rows per bin, reference against")
    assert "largest change is between 2 and 3: reference 10%, current 80%" in label
    assert len([r for r in histogram.iter(f"{SVG}rect") if float(r.get("height")) > 10]) == 5  # 6 bars, one empty

    bars = ET.fromstring(distribution_chart({"column": "shop", "kind": "categorical", "categories": ["a", "b"],
                                             "reference": [90, 10], "current": [25, 75],
                                             "other": {"reference": 0, "current": 0}}))
    assert bars.get("aria-label") == ("shop: share of rows per category, reference against current: a 90% to 25%, "
                                      "b 10% to 75%")


def test_the_section_formats_numbers_and_shows_the_window_and_a_chart_per_drifted_column():
    html = drift_section({"window": {"model": "m", "deployment": "blue", "bucket": 7, "part": 0, "records": 12345,
                                     "closed_by": "time", "start": START.isoformat(),
                                     "end": (START + timedelta(hours=1)).isoformat()},
                          "drift": {"correction": "none", "drift_share": 0.6666666666666666, "rows": 200,
                                    "reference_rows": 5000, "reference_sampled_from": 80000, "drifted": ["x"],
                                    "columns": [{"column": "x", "kind": "numerical", "method": "wasserstein",
                                                 "statistic": "distance", "value": 0.123456789, "p_value": 0.0123456,
                                                 "effect_size": 1.23456, "drifted": True}],
                                    "quality": [{"column": "x", "issues": ["missing_rate"],
                                                 "missing": {"reference": 0.01, "current": 0.25}}],
                                    "distributions": [distribution("x", "numerical", np.arange(50.0),
                                                                   np.arange(50.0) + 20)]}})
    assert "drift share 67%" in html and "0.6666" not in html
    assert "<td>0.123</td>" in html and "<td>0.0123</td>" in html and "<td>1.23</td>" in html
    assert "missing values 1.0% to 25%" in html
    assert "2026-11-22 10:00 to 11:00 UTC" in html and "12,345" in html and "5,000 (sampled from 80,000)" in html
    assert 'aria-label="x: share of rows per bin' in html


# ---- the report's header -----------------------------------------------------------------------------------------

def test_the_report_opens_with_a_header_naming_the_model_the_window_and_when_it_was_made(tmp_path):
    rng = np.random.default_rng(3)
    reference = pd.DataFrame({"age": rng.normal(40, 10, 300)})
    current = pd.DataFrame({"age": rng.normal(55, 10, 200)})
    about = {"model": "churn<script>", "deployment": "blue", "bucket": 493_000, "part": 1,
             "start": START.isoformat(), "end": (START + timedelta(hours=1)).isoformat(),
             "made_at": datetime(2026, 11, 22, 11, 20, tzinfo=UTC)}
    path = render_report(current, reference, DriftSettings(columns={"age": "numerical"}), tmp_path / "r.html",
                         about=about)
    html = path.read_text(encoding="utf-8")
    body = html.index("<body>") + len("<body>")
    header = html[body:html.index("</header>") + len("</header>")]
    assert header.startswith("<header id='report-header'")
    assert "Drift report: churn&lt;script&gt;" in header and "<script>" not in header
    assert "blue" in header and "bucket 493000, part 1" in header
    assert "2026-11-22 10:00 UTC to 2026-11-22 11:00 UTC (event time)" in header
    assert "Made</dt><dd style='margin:0'>2026-11-22 11:20 UTC" in header


# ---- in a browser --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """A local host over a database holding one open drift review, from the engine's own evidence."""
    from controlplane.adapters.sqlite_store import SqliteStore

    workdir = tmp_path_factory.mktemp("drift-page")
    evidence = drift_evidence()
    evidence["window"].update(start=START.isoformat(), end=(START + timedelta(hours=1)).isoformat())
    review = ReviewDraft(kind=ReviewKind.DRIFT, approvers=("vision-reviewers@contoso.com",), quorum=1,
                         ttl=timedelta(days=3), evidence=evidence, separation_of_duties=False)
    now = datetime.now(UTC).replace(microsecond=0)
    decision = record(Verdict(Outcome.REVIEW, "drift review", model="defect-detector", reviews=(review,)),
                      key="page:drift-charts", event_id="drift-charts", source=Source.CONTROLPLANE, event_type="test",
                      policy_version="v", received_at=now, decided_at=now)
    SqliteStore(str(workdir / "cp.db")).append(decision)
    env = {"CONTROLPLANE_STORE": f"sqlite:///{workdir}/cp.db", "APPROVAL_SIGNING_KEY": KEY}
    with local_host(env, workdir) as running:
        running.env["CONTROLPLANE_PUBLIC_URL"] = running.url
        running.reviews = {"drift": (decision.reviews[0].id, "vision-reviewers@contoso.com")}
        yield running


def test_a_drift_review_charts_the_blamed_column_against_its_reference_with_readable_numbers(host, browser):
    page = opened(host, browser, "drift")
    table = page.locator("h2:has-text('Drift') ~ table").first
    assert [h.inner_text() for h in table.locator("th").all()][2:6] == ["method", "statistic", "p-value",
                                                                         "effect size"]
    rows = {r.locator("td").first.inner_text(): [c.inner_text() for c in r.locator("td").all()]
            for r in table.locator("tbody tr").all()}
    brightness = rows["brightness"]
    assert brightness[4] == "< 0.001" and brightness[6] == "drifted"
    for row in rows.values():  # statistics, p-values and effect sizes with at most three significant digits
        for cell in row[3:6]:
            assert cell in ("-", "< 0.001") or len(cell.replace("0.", "").replace(".", "").lstrip("0")) <= 3, cell

    charts = page.locator("figure svg[aria-label^='brightness: share of rows per bin']")
    assert charts.count() == 1 and charts.bounding_box()["height"] > 100  # drawn
    assert page.locator("figure svg[aria-label^='contrast: share']").count() == 0  # stable columns are not charted
    assert "reference against current" in charts.get_attribute("aria-label")

    window = page.locator("h2:has-text('Window') + table").inner_text()
    assert "blue" in window and "2026-11-22 10:00 to 11:00 UTC" in window and "200" in window
    assert "0.6666" not in page.content() and "{" not in page.locator("main").inner_text()
    page.screenshot(path=str(ARTIFACTS / "review-drift-distributions.png"), full_page=True)
    assert serious_violations(page) == []
    page.context.close()

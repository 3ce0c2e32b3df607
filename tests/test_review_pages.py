"""Review pages carry the evidence an approver decides from, in a real browser (headless Chromium driven by
Playwright): a promotion (candidate against champion), a rollback (why, and each deployment's health) and a
drift review (the window and a row per column). axe-core finds no serious or critical accessibility problem,
and the pages fit a 390 px wide phone. Screenshots go to test-artifacts/."""
from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from controlplane.domain.ledger import Outcome, ReviewDraft, Source, Verdict, record
from controlplane.domain.reviews import ReviewKind
from tests.support import ROOT, local_host

AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = ROOT / "test-artifacts"
KEY = "c" * 64
NOW = datetime.now(UTC).replace(microsecond=0)
WINDOW_BUCKET = int(NOW.timestamp()) // 3600  # the hour-long bucket NOW falls in


def promotion_evidence(tags: dict | None = None) -> dict:
    """What the promotion rules record for churn:5, registered with ``tags``, against the champion churn:4 (the
    shipped policy)."""
    from controlplane.domain.policy import load_policy
    from controlplane.domain.promotion import PromotionFacts, judge_promotion
    from controlplane.domain.refs import AssetRef

    policy = load_policy(ROOT / "policy.yaml")
    facts = PromotionFacts(champion=AssetRef("churn", "4"), metrics={"accuracy": 0.912, "auc": 0.94},
                           registrant="alice@contoso.com", registrant_source="workspace",
                           champion_metrics={"accuracy": 0.9, "auc": 0.93})
    verdict = judge_promotion("churn", "5", tags or {}, policy.rule_for("churn"), facts, "ml:page-test", policy)
    assert verdict.outcome is Outcome.REQUEST_APPROVAL
    return dict(verdict.evidence)


def rollback_evidence() -> dict:
    """A rollout step judged unhealthy: the new deployment's p95 and 5xx share against the old one's."""
    from controlplane.domain.policy import HealthGate
    from controlplane.domain.rollout import judge
    from controlplane.domain.signals import DeploymentHealth

    new = DeploymentHealth("churn-v5-green", requests=480, p95_latency_ms=910.0, error_rate=0.06)
    old = DeploymentHealth("blue", requests=4_200, p95_latency_ms=180.0, error_rate=0.002)
    judgment = judge(HealthGate().model_dump(), new, old)
    assert judgment.verdict == "unhealthy"
    return {"rollout": "r-42", "step": "10%", "reasons": list(judgment.reasons),
            "window": [(NOW - timedelta(minutes=15)).isoformat(), NOW.isoformat()],
            "health": {h.deployment: vars(h) for h in (new, old)}, "restored_traffic": {"blue": 100}}


def drift_evidence() -> dict:
    """The engine's own verdict on a window whose brightness moved, against the shipped reference."""
    import pandas as pd

    from controlplane.domain.policy import load_policy
    from controlplane.drift import check_drift

    rule = load_policy(ROOT / "policy.yaml").rule_for("defect-detector")
    reference = pd.read_csv(ROOT / "data" / "reference" / "defect-detector.csv")
    current = reference.sample(200, random_state=3).reset_index(drop=True)
    current["brightness"] = current["brightness"] + 2 * reference["brightness"].std()
    result = check_drift(current, reference, rule.drift.settings())
    assert result.drifted == ("brightness",)
    return {"window": {"model": "defect-detector", "deployment": "blue", "bucket": 493_000, "part": 0,
                       "records": 200, "closed_by": "count"},
            "drift": result.to_evidence(), "drifted": True}


def categorical_drift_evidence() -> dict:
    """The engine's own verdict on a churn window where most customers moved to the enterprise plan."""
    import pandas as pd

    from controlplane.domain.policy import load_policy
    from controlplane.drift import check_drift

    rule = load_policy(ROOT / "policy.yaml").rule_for("churn-eu")
    reference = pd.read_csv(ROOT / "data" / "reference" / "churn.csv")
    current = reference.sample(200, random_state=3).reset_index(drop=True)
    current.loc[:99, "plan"] = "enterprise"
    result = check_drift(current, reference, rule.drift.settings())
    assert result.drifted == ("plan",)
    return {"window": {"model": "churn-eu", "deployment": "blue", "bucket": 493_000, "part": 1, "records": 200,
                       "closed_by": "count"}, "drift": result.to_evidence(), "drifted": True}


REVIEWS = {
    "promotion": (ReviewKind.PROMOTION, "churn", "5", lambda: promotion_evidence(RETRAINED),
                  ("ana@contoso.com", "bo@contoso.com")),
    "rollback": (ReviewKind.PROMOTION, "churn", "5", rollback_evidence, ("ana@contoso.com",)),
    "drift": (ReviewKind.DRIFT, "defect-detector", None, drift_evidence, ("vision-reviewers@contoso.com",)),
    "drift-categorical": (ReviewKind.DRIFT, "churn-eu", None, categorical_drift_evidence, ("ml-leads@contoso.com",)),
}


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """A local host over a database holding one open review of each kind."""
    from controlplane.adapters.sqlite_store import SqliteStore

    workdir = tmp_path_factory.mktemp("pages")
    store, ids = SqliteStore(str(workdir / "cp.db")), {}
    for name, (kind, model, version, evidence, approvers) in REVIEWS.items():
        review = ReviewDraft(kind=kind, approvers=approvers, quorum=1, ttl=timedelta(days=3), evidence=evidence(),
                             separation_of_duties=False)
        decision = record(Verdict(Outcome.REVIEW, f"{name} review", model=model, version=version, reviews=(review,)),
                          key=f"page:{name}", event_id=name, source=Source.CONTROLPLANE, event_type="test",
                          policy_version="v", received_at=NOW, decided_at=NOW)
        store.append(decision)
        ids[name] = (decision.reviews[0].id, approvers[0])
    env = {"CONTROLPLANE_STORE": f"sqlite:///{workdir}/cp.db", "APPROVAL_SIGNING_KEY": KEY}
    with local_host(env, workdir) as running:
        running.env["CONTROLPLANE_PUBLIC_URL"] = running.url  # the links the CLI prints point at this host
        running.reviews = ids
        yield running


def opened(host, browser, name: str, width: int = 1100):
    """The approver's page of the review ``name``, through the link the CLI prints."""
    review_id, approver = host.reviews[name]
    done = subprocess.run([sys.executable, "-m", "controlplane", "reviews", "link", review_id, "--approver", approver],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, env={**host.full_env()})
    assert done.returncode == 0, done.stderr
    page = page_at(browser, done.stdout.strip(), width)
    page.wait_for_selector("#open", state="detached")
    return page


def page_at(browser, url: str, width: int = 1100):
    """``url`` in a fresh browser context ``width`` px wide. The context bypasses the pages'
    Content-Security-Policy only so that the test can inject axe-core."""
    page = browser.new_context(bypass_csp=True, viewport={"width": width, "height": 900}).new_page()
    page.goto(url)
    return page


def serious_violations(page) -> list[str]:
    page.add_script_tag(path=str(AXE))
    found = page.evaluate("async () => (await axe.run(document)).violations"
                          ".map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.length}))")
    return [f"{v['id']} ({v['impact']}, {v['nodes']} nodes)" for v in found if v["impact"] in ("serious", "critical")]


def test_a_promotion_review_shows_candidate_against_champion_with_each_gate_and_the_gain(host, browser):
    page = opened(host, browser, "promotion")
    table = page.locator("h2:has-text('Candidate against champion') + table")
    rows = {r.locator("td").first.inner_text(): r.inner_text() for r in table.locator("tbody tr").all()}
    assert set(rows) == {"accuracy", "auc"}
    assert "0.912" in rows["accuracy"] and "0.9" in rows["accuracy"] and "pass" in rows["accuracy"]
    assert page.locator("#improvement").inner_text() == ("accuracy: gain 0.012 over the champion, 0.005 required "
                                                          "(enough)")
    chart = page.locator("figure svg[role=img]").first
    assert "accuracy candidate 0.912" in chart.get_attribute("aria-label")
    assert "accuracy champion 0.9" in chart.get_attribute("aria-label")
    assert "alice@contoso.com (from Azure ML's record)" in page.locator("h2:has-text('Candidate') + table").last \
        .inner_text()
    lineage = page.locator("h2:text-is('Lineage') + table")
    assert lineage.is_visible() and "azureml:churn-training:7" in lineage.inner_text()
    assert page.locator("#lineage-job").inner_text() == "retrain-churn-4f9a (from the pipeline_job tag)"
    page.screenshot(path=str(ARTIFACTS / "review-promotion.png"), full_page=True)
    assert serious_violations(page) == []


def test_a_rollback_review_says_why_in_words_and_charts_each_deployments_health(host, browser):
    page = opened(host, browser, "rollback")
    reason = page.locator("#rollback-reason").inner_text()
    assert "p95 latency 910 ms is 5.06x the old deployment's 180 ms" in reason and "5xx rate 6.00%" in reason
    health = {r.locator("td").first.inner_text(): r.inner_text()
              for r in page.locator("h2:has-text('Health during the step') + table tbody tr").all()}
    assert set(health) == {"churn-v5-green", "blue"}
    assert "910" in health["churn-v5-green"] and "6.0%" in health["churn-v5-green"] and "0.2%" in health["blue"]
    labels = [c.get_attribute("aria-label") for c in page.locator("figure svg[role=img]").all()]
    [p95] = [label for label in labels if label.startswith("p95 latency (ms): ")]
    assert "churn-v5-green 910" in p95 and "blue 180" in p95
    assert "No metrics recorded" not in page.content()
    page.screenshot(path=str(ARTIFACTS / "review-rollback.png"), full_page=True)
    assert serious_violations(page) == []


def test_a_drift_review_shows_the_window_and_a_row_per_column_with_its_test_and_verdict(host, browser):
    page = opened(host, browser, "drift")
    assert page.locator("#drift-verdict").inner_text().startswith("1 of 3 columns drifted (holm correction at alpha")
    rows = {r.locator("td").first.inner_text(): r.inner_text()
            for r in page.locator("h2:has-text('Drift') ~ table").first.locator("tbody tr").all()}
    assert set(rows) == {"brightness", "contrast", "sharpness"}
    assert "drifted" in rows["brightness"] and "< 0.001" in rows["brightness"]
    assert "ks (Kolmogorov-Smirnov" in rows["brightness"]
    assert "stable" in rows["contrast"]
    window = page.locator("h2:has-text('Window') + table").inner_text()
    assert "defect-detector" in window and "blue" in window and "200" in window
    assert "share 0.66" not in page.content() and "{" not in page.locator("main").inner_text()  # no raw JSON
    page.screenshot(path=str(ARTIFACTS / "review-drift.png"), full_page=True)
    assert serious_violations(page) == []


def test_a_drift_review_charts_a_blamed_categorical_column_with_a_labelled_pair_of_bars_per_category(host, browser):
    from controlplane.web.charts import CURRENT, REFERENCE

    page = opened(host, browser, "drift-categorical")
    assert page.locator("#drift-verdict").inner_text() == "1 of 4 columns drifted (holm correction at alpha 0.05): plan"
    chart = page.locator("figure svg[aria-label^='plan: share of rows per category']")
    assert chart.is_visible() and chart.bounding_box()["height"] > 50  # drawn, not blocked by the CSP
    assert "basic 54% to 25%, enterprise 10% to 56%, pro 36% to 19%" in chart.get_attribute("aria-label")
    labels = chart.locator("text[text-anchor=end]")
    assert labels.all_text_contents() == ["basic", "enterprise", "pro"]
    reference, current = (chart.locator(f"rect[height='9'][fill='{colour}']") for colour in (REFERENCE, CURRENT))
    assert reference.count() == current.count() == 3
    for index, label in enumerate(labels.all()):  # each category's name beside its own two bars, left of them
        assert label.is_visible()
        name, bars = label.bounding_box(), [side.nth(index).bounding_box() for side in (reference, current)]
        assert name["x"] + name["width"] <= bars[0]["x"] and bars[0]["x"] == bars[1]["x"]
        assert name["y"] < bars[1]["y"] + bars[1]["height"] and bars[0]["y"] < name["y"] + name["height"]
    widths = [float(bar.get_attribute("width")) for bar in current.all()]
    assert widths.index(max(widths)) == 1  # enterprise: the share that grew
    page.screenshot(path=str(ARTIFACTS / "review-drift-categorical.png"), full_page=True)
    assert serious_violations(page) == []


@pytest.mark.parametrize("name", sorted(REVIEWS))
def test_a_review_page_fits_a_phone(host, browser, name):
    page = opened(host, browser, name, width=390)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(ARTIFACTS / f"review-{name}-390px.png"), full_page=True)


@pytest.mark.parametrize("width", [1100, 390])
def test_the_model_page_tells_the_models_story_accessibly_at_any_width(host, browser, width):
    page = page_at(browser, f"{host.url}/api/models/churn", width)
    assert page.locator("h1").inner_text() == "Model churn"
    assert page.locator("h2:has-text('Serving') + table").inner_text().count("churn-ep") == 1
    assert page.locator("h2:has-text('Timeline') + table tbody tr").count() == 2  # the two churn reviews' decisions
    reviews = page.locator("h2:has-text('Reviews') + table tbody tr")
    assert reviews.count() == 2 and all(r.locator("[data-state]").get_attribute("data-state") == "open"
                                        for r in reviews.all())
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    page.screenshot(path=str(ARTIFACTS / f"model-churn-{width}px.png"), full_page=True)
    assert serious_violations(page) == []
    page.context.close()


@pytest.fixture(scope="module")
def operated(tmp_path_factory):
    """A local host over a database holding outbox tasks (one dead-lettered), a paused rollout and incidents."""
    from dataclasses import replace

    from controlplane.adapters.sqlite_store import SqliteStore
    from controlplane.domain.incidents import Incident, IncidentState
    from controlplane.domain.ledger import TaskState
    from controlplane.domain.requests import Notify
    from controlplane.domain.rollout import RolloutState
    from tests.test_store_contract import a_rollout

    workdir = tmp_path_factory.mktemp("lists")
    store = SqliteStore(str(workdir / "cp.db"))
    decision = record(Verdict(Outcome.NOTIFY, "tell", model="churn",
                              tasks=tuple(Notify(channel="ops", event=f"e{i}") for i in range(5))),
                      key="lists", event_id="lists", source=Source.ALERT, event_type="t", policy_version="v",
                      received_at=NOW, decided_at=NOW)
    store.append(decision)
    dead = decision.tasks[0]
    store.update_task(dead, replace(dead, state=TaskState.DEAD_LETTERED, attempts=8, last_error="webhook 404"))
    store.create_rollout(replace(a_rollout("ro-7"), state=RolloutState.PAUSED, created_at=NOW))
    from controlplane.domain.windows import WindowSpec
    from tests.test_store_contract import telemetry_event

    spec = WindowSpec(records=4, minutes=60, grace_minutes=5, sample=4)
    store.append_telemetry([telemetry_event(s, n=3, at=NOW) for s in range(3)], lambda m: spec, NOW)  # 9: 4, 4, 1
    for n, state in enumerate((IncidentState.OPEN, IncidentState.CLOSED)):
        store.put_incident(None, Incident(group=f"latency-{n}", number=1, state=state, rule="latency-rollback",
                                          target="churn-ep/blue", severity="Sev1", opened_at=NOW, updated_at=NOW))
    env = {"CONTROLPLANE_STORE": f"sqlite:///{workdir}/cp.db", "APPROVAL_SIGNING_KEY": KEY}
    with local_host(env, workdir) as running:
        running.dead, running.store = dead, store
        yield running


@pytest.mark.parametrize("width", [1100, 390])
def test_the_outbox_page_lists_tasks_a_page_at_a_time_and_filters_them_by_state(operated, browser, width):
    page = page_at(browser, f"{operated.url}/api/ui/tasks?limit=2", width)
    assert page.locator("h1").inner_text() == "Outbox tasks"
    seen = []
    while True:
        seen += [r.locator("td").first.inner_text() for r in page.locator("main table tbody tr").all()]
        following = page.locator("a[rel=next]")
        if following.count() == 0:
            break
        following.click()
        page.wait_for_load_state()
    assert len(seen) == 5 and len(set(seen)) == 5  # every task once, over three pages
    page.select_option("#state", "dead_lettered")
    page.click("form button")
    page.wait_for_load_state()
    [row] = page.locator("main table tbody tr").all()
    assert operated.dead.id in row.inner_text() and "webhook 404" in row.inner_text()
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    page.screenshot(path=str(ARTIFACTS / f"tasks-{width}px.png"), full_page=True)
    assert serious_violations(page) == []
    page.context.close()


def test_the_outbox_page_retries_a_dead_letter_and_cancels_a_pending_task_with_its_buttons(operated, browser):
    page = page_at(browser, f"{operated.url}/api/ui/tasks?state=dead_lettered&code=the-function-key")
    page.click(f"button[aria-label='Retry task {operated.dead.id}']")
    page.wait_for_load_state()
    assert page.locator("[role=status]").inner_text() == f"Retry of task {operated.dead.id}: it is now pending."
    assert "code=the-function-key" in page.url and "state=dead_lettered" in page.url  # back where it was, key kept
    assert page.locator("main table").count() == 0  # no dead letter left
    page.reload()  # post/redirect/get: a reload posts nothing again
    assert page.locator("[role=status]").inner_text().endswith("it is now pending.")

    page.goto(f"{operated.url}/api/ui/tasks?state=pending")
    pending = [r.locator("td").first.inner_text() for r in page.locator("main table tbody tr").all()]
    page.click(f"button[aria-label='Cancel task {pending[-1]}']")
    page.wait_for_load_state()
    assert page.locator("[role=status]").inner_text() == f"Cancel of task {pending[-1]}: it is now cancelled."
    assert page.locator(f"button[aria-label='Cancel task {pending[-1]}']").count() == 0
    assert serious_violations(page) == []
    page.context.close()


def test_an_outbox_action_the_task_refuses_is_shown_with_why_and_an_unknown_one_is_a_400(operated):
    from tests.support import request

    cancelled = request("GET", f"{operated.url}/api/ui/tasks?state=cancelled", headers={"Accept": "application/json"})
    task = cancelled.json()["tasks"][0]["id"] if cancelled.json()["tasks"] else operated.dead.id
    refused = request("POST", f"{operated.url}/api/ui/tasks/{task}/cancel", b"")
    assert refused.status == 409 and "was not changed" in refused.body.decode()
    unknown = request("POST", f"{operated.url}/api/ui/tasks/{task}/explode", b"")
    assert unknown.status == 400 and unknown.json()["error"]["field"] == "action"
    assert request("POST", f"{operated.url}/api/ui/tasks/nope/retry", b"").status == 404


def test_the_outbox_replay_button_posts_with_the_key_replays_every_dead_letter_and_says_how_many(operated):
    from dataclasses import replace
    from http.client import HTTPConnection
    from urllib.parse import urlsplit

    from controlplane.domain.ledger import TaskState
    from tests.support import request

    tasks = request("GET", f"{operated.url}/api/ui/tasks", headers={"Accept": "application/json"}).json()["tasks"]
    pending = operated.store.task(next(t["id"] for t in tasks if t["state"] == "pending"))
    operated.store.update_task(pending, replace(pending, state=TaskState.DEAD_LETTERED, attempts=8,
                                                last_error="webhook 410"))
    dead = [t.id for t in operated.store.tasks(TaskState.DEAD_LETTERED)]
    page = request("GET", f"{operated.url}/api/ui/tasks?code=k3y&state=pending").body.decode()
    assert ("<form method='post' action='tasks/dead-letters/replay?code=k3y&amp;state=pending' id='replay'>"
            in page)  # posts with the function key, whichever state the page shows
    assert f"{len(dead)} dead-lettered task{'s' if len(dead) != 1 else ''}." in page

    where = urlsplit(operated.url)
    connection = HTTPConnection(where.hostname, where.port, timeout=30)
    connection.request("POST", "/api/ui/tasks/dead-letters/replay?code=k3y&state=dead_lettered", b"")
    done = connection.getresponse()
    done.read()
    connection.close()
    assert done.status == 303  # post/redirect/get
    assert done.getheader("Location") == f"/api/ui/tasks?code=k3y&state=dead_lettered&replay={len(dead)}"
    after = request("GET", f"{operated.url}{done.getheader('Location')}").body.decode()
    assert f"Replay of dead letters: {len(dead)} task" in after and "with a fresh retry budget." in after
    assert "id='replay'" not in after and "<p>None.</p>" in after  # no dead letter left, so no button
    for task_id in dead:
        replayed = operated.store.task(task_id)
        assert replayed.state is TaskState.PENDING and replayed.attempts == 0

    assert request("POST", f"{operated.url}/api/ui/tasks/dead-letters/retry", b"").json()["error"]["field"] == "action"
    assert request("GET", f"{operated.url}/api/ui/tasks/dead-letters/replay").status == 405  # POST only
    for forged in ("replay=%C2%B2", "replay=lots", "replay=99999"):  # nothing but a small count is said
        assert "Replay of dead letters" not in request("GET", f"{operated.url}/api/ui/tasks?{forged}").body.decode()


@pytest.mark.parametrize("count, words", [(1, "1 dead-lettered task."), (7, "7 dead-lettered tasks."),
                                          (100, "100 or more dead-lettered tasks; a replay takes 100 at a time.")])
def test_the_replay_button_says_how_many_wait_and_only_the_outbox_page_with_dead_letters_has_it(count, words):
    from controlplane.web.lists import list_page

    page = list_page("tasks", [], key="k'<y>", state="pending", dead_letters=count)
    assert f"<span id='replay-count'>{words}</span>" in page
    assert "action='tasks/dead-letters/replay?code=k%27%3Cy%3E&amp;state=pending'" in page  # the key, encoded
    assert "id='replay'" not in list_page("tasks", [], dead_letters=0)
    assert "id='replay'" not in list_page("rollouts", [], dead_letters=count)


@pytest.mark.parametrize("replayed, left, words", [
    (3, 0, "Replay of dead letters: 3 tasks are pending again, due now with a fresh retry budget."),
    (1, 2, "Replay of dead letters: 1 task is pending again, due now with a fresh retry budget. 2 still "
           "dead-lettered."),
    (100, 100, "100 tasks are pending again, due now with a fresh retry budget. 100 or more still dead-lettered."),
    (0, 0, "Replay of dead letters: none was replayed."),
])
def test_after_a_replay_the_page_says_how_many_went_back_and_how_many_are_left(replayed, left, words):
    from controlplane.web.lists import replay_message

    assert replay_message(replayed, left).endswith(words)


@pytest.mark.parametrize("name, expected", [("rollouts", ["ro-7"]), ("incidents", ["latency-0-1", "latency-1-1"]),
                                            ("windows", [f"{WINDOW_BUCKET}.{part}" for part in range(3)])])
def test_the_rollouts_and_incidents_pages_show_each_one_with_its_state(operated, browser, name, expected):
    page = page_at(browser, f"{operated.url}/api/ui/{name}", 390)
    assert sorted(r.locator("td").first.inner_text() for r in page.locator("main table tbody tr").all()) == expected
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(ARTIFACTS / f"{name}-390px.png"), full_page=True)
    assert serious_violations(page) == []
    page.context.close()


def test_a_list_that_does_not_exist_or_a_state_it_does_not_have_is_named_in_a_400(operated):
    from tests.support import request

    assert request("GET", f"{operated.url}/api/ui/tasks?state=pending",
                   headers={"Accept": "application/json"}).json()["continuation"] is None
    closed = request("GET", f"{operated.url}/api/ui/windows?state=closed", headers={"Accept": "application/json"})
    assert [(w["part"], w["count"], w["reason"]) for w in closed.json()["windows"]] == [(0, 4, "records"),
                                                                                        (1, 4, "records")]
    for path, field in (("ui/windmills", "list"), ("ui/tasks?state=lost", "state"), ("ui/rollouts?limit=0", "limit"),
                        ("ui/windows?state=done", "state")):
        answer = request("GET", f"{operated.url}/api/{path}")
        assert answer.status == 400 and answer.json()["error"]["field"] == field


# -- The MLOps v2 stages on a promotion review, rendered without a browser ------------------------------------------

WSID = "/subscriptions/sub-1/resourceGroups/rg-ml/providers/Microsoft.MachineLearningServices/workspaces/{}"


def staged_evidence(**changes) -> dict:
    """A production review opened after the test stage: routed dev -> staging -> prod through a registry."""
    evidence = {
        **promotion_evidence(), "stage": "production",
        "route": {"source": "dev", "staging": "staging", "production": "prod", "registry": "mlops-registry"},
        "staging": {"target": "online", "endpoint": "churn-ep", "deployment": "churn-v5-3f2a",
                    "environment": "staging"},
        "test_stage": {"job": "churn-v5-3f2a-test", "status": "Completed", "experiment": "churn-ep-test-stage",
                       "environment": "staging", "kind": "pipeline",
                       "results": {"auc": 0.91, "demographic_parity_difference": 0.14, "<b>rows</b>": 1200},
                       "gates": [{"gate": "auc >= 0.8", "metric": "auc", "value": 0.91, "passed": True},
                                 {"gate": "demographic_parity_difference <= 0.1",
                                  "metric": "demographic_parity_difference", "value": 0.14, "passed": False}]}}
    evidence.update(changes)
    return evidence


def staged_context(**changes) -> dict:
    """What ``promotion_context`` reads for that review: a live staging deployment, churn-ep's plan, workspace ids."""
    from controlplane.domain.policy import load_policy

    context = {"plan": load_policy(ROOT / "policy.yaml").rollout_for("churn-ep").model_dump(),
               "workspaces": {role: WSID.format(f"mlw-{env}") for role, env in (
                   ("source", "dev"), ("staging", "staging"), ("production", "prod"), ("test", "staging"))},
               "staging_state": {"state": "found", "provisioning_state": "Succeeded",
                                 "instance_type": "Standard_DS3_v2", "instance_count": 1, "model": "azureml:churn:5",
                                 "error": ""}}
    context.update(changes)
    return context


def older_evidence() -> dict:
    """A promotion review's evidence from before the MLOps v2 stages: no route, staging, stage or test stage."""
    return {key: value for key, value in promotion_evidence().items()
            if key not in ("route", "staging", "stage", "test_stage")}


def a_review(evidence: dict, kind: ReviewKind = ReviewKind.PROMOTION):
    draft = ReviewDraft(kind=kind, approvers=("ana@contoso.com",), quorum=1, ttl=timedelta(days=3), evidence=evidence,
                        separation_of_duties=False)
    decision = record(Verdict(Outcome.REVIEW, "review", model="churn", version="5", reviews=(draft,)), key="unit",
                      event_id="unit", source=Source.CONTROLPLANE, event_type="test", policy_version="v",
                      received_at=NOW, decided_at=NOW)
    return decision.reviews[0]


def section(html: str, heading: str) -> str:
    """The part of a page from the ``<h2>`` named ``heading`` to the next ``<h2>``."""
    start = html.index(f"<h2>{heading}</h2>")
    following = html.find("<h2>", start + 1)
    return html[start:following if following != -1 else None]


def row(html: str, first_cell: str) -> str:
    """The table row whose first cell is ``first_cell``."""
    [found] = re.findall(rf"<tr><td>{re.escape(first_cell)}</td>.*?</tr>", html)
    return found


def test_a_production_review_shows_its_route_staging_test_stage_rollout_plan_and_studio_links():
    from controlplane.web.pages import review_page

    html = review_page(a_review(staged_evidence()), promotion=staged_context())
    route = section(html, "Route")
    assert ("registered in dev → staged in staging → production in prod, through registry mlops-registry" in route
            and "This review approves <strong>production</strong>" in route)
    staging = section(html, "Staging")
    assert "churn-v5-3f2a" in staging and "churn-ep (online endpoint, 0% traffic)" in staging
    assert "<p id='staging-state' class='pass'>Live state: Succeeded, Standard_DS3_v2 × 1</p>" in staging

    test = section(html, "Test stage")
    assert "<p id='test-stage-status' class='fail'>Completed; 1 of 2 gates failed.</p>" in test
    assert "<span class='pass'>pass</span>" in row(test, "auc") and "auc &gt;= 0.8" in row(test, "auc")
    assert "<span class='fail'>fail</span>" in row(test, "demographic_parity_difference")
    assert "1200" in row(test, "&lt;b&gt;rows&lt;/b&gt;") and "<b>rows" not in html  # a result name is text
    job = "https://ml.azure.com/runs/churn-v5-3f2a-test?wsid=" + WSID.format("mlw-staging")
    assert f"<a href='{job}'>churn-v5-3f2a-test</a>" in test
    charts = re.findall(r'aria-label="(Test-stage results[^"]*)"', test)  # read by screen readers too
    assert len(charts) == 2 and "auc 0.91, demographic_parity_difference 0.14" in charts[0]
    assert charts[1].startswith("Test-stage results, other scales: ") and "1,200" in charts[1]

    plan = section(html, "Rollout plan")
    assert "A progressive rollout on churn-ep in prod:" in plan
    for words in ("mirror 20% of requests", "10% → 50% → 100%", "30 minutes", "at least 50 requests",
                  "p95 latency at most 1.5× the old deployment", "5xx share at most 1%",
                  "pause the rollout and notify people", "scaled down to one instance", "Standard_DS3_v2 × 2"):
        assert words in plan, words

    links = section(html, "Links")
    for url in ("https://ml.azure.com/model/churn:5/details?wsid=" + WSID.format("mlw-dev"),
                "https://ml.azure.com/registries/mlops-registry/models/churn/version/5", job,
                "https://ml.azure.com/endpoints/realtime/churn-ep/detail?wsid=" + WSID.format("mlw-prod"),
                "https://ml.azure.com/endpoints/realtime/churn-ep/detail?wsid=" + WSID.format("mlw-staging")):
        assert f"href='{url}'" in links, url
    assert "no-studio-links" not in links
    assert "Candidate against champion" in html and "id='improvement'" in html  # what was there stays


def test_everything_from_the_evidence_and_the_workspace_is_escaped_on_the_page():
    from controlplane.web.pages import review_page

    hostile = "<script>alert(1)</script>"
    evidence = staged_evidence(
        route={"source": hostile, "staging": "staging", "production": "prod", "registry": "reg'<x>"},
        staging={"target": "online", "endpoint": "churn-ep", "deployment": hostile, "environment": hostile})
    evidence["test_stage"] = {**evidence["test_stage"], "job": "job'><script>", "experiment": hostile}
    context = staged_context(staging_state={"state": "found", "provisioning_state": hostile, "instance_type": hostile,
                                            "instance_count": 1, "error": hostile})
    html = review_page(a_review(evidence), promotion=context)
    assert "<script>alert" not in html and "'><script>" not in html and "reg'<x>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in section(html, "Staging")
    assert "/runs/job%27%3E%3Cscript%3E?wsid=" in html  # a job's name cannot leave its link's path
    assert "/registries/reg%27%3Cx%3E/models/churn/version/5" in html


@pytest.mark.parametrize("status, words", [
    ("Failed", "The test job failed: its results are missing or incomplete."),
    ("Canceled", "The test job canceled: its results are missing or incomplete."),
    ("", "No result came in time: the test job reported nothing before its deadline, so people decide without it."),
])
def test_a_test_stage_that_failed_or_gave_no_result_in_time_says_so_in_a_clear_line(status, words):
    from controlplane.web.pages import review_page

    evidence = staged_evidence()
    evidence["test_stage"] = {"job": "churn-v5-3f2a-test", "status": status, "environment": "staging",
                              "kind": "pipeline"}
    test = section(review_page(a_review(evidence), promotion=staged_context()), "Test stage")
    assert f"<p id='test-stage-status' class='fail'>{words}</p>" in test
    assert "<th>pass/fail</th>" not in test and "<figure>" not in test  # no results: no table, no chart


def test_a_test_stage_that_did_not_report_a_gated_result_names_it_and_fails_that_gate():
    from controlplane.web.pages import review_page

    evidence = staged_evidence()
    evidence["test_stage"] = {**evidence["test_stage"], "results": {"auc": 0.91}, "gates": [
        {"gate": "auc >= 0.8", "metric": "auc", "value": 0.91, "passed": True},
        {"gate": "latency_p95_ms <= 300", "metric": "latency_p95_ms", "value": None, "passed": False}]}
    test = section(review_page(a_review(evidence), promotion=staged_context()), "Test stage")
    assert "Completed without reporting latency_p95_ms." in test
    assert "not reported" in row(test, "latency_p95_ms") and "class='fail'>fail" in row(test, "latency_p95_ms")


def test_a_batch_review_says_approval_switches_the_default_deployment_and_links_the_batch_endpoint():
    from controlplane.web.pages import review_page

    evidence = staged_evidence(staging={"target": "batch", "endpoint": "churn-batch", "deployment": "churn-v5-3f2a",
                                        "environment": "staging"})
    evidence["test_stage"] = {**evidence["test_stage"], "kind": "batch_scoring", "job": "churn-v5-3f2a-score"}
    context = staged_context(plan=None, staging_state={"state": "found", "provisioning_state": "Succeeded",
                                                       "instance_type": "", "instance_count": 2, "error": ""})
    html = review_page(a_review(evidence), promotion=context)
    assert "churn-batch (batch endpoint)" in section(html, "Staging") and "Succeeded, 2 instance(s)" in html
    assert "batch scoring job on the staging deployment" in section(html, "Test stage")
    assert ("<p id='rollout-plan'>Approval deploys it in prod and makes it the default deployment of churn-batch; a "
            "rollback switches the default back.</p>") in section(html, "Rollout plan")
    assert "https://ml.azure.com/endpoints/batch/churn-batch/detail?wsid=" + WSID.format("mlw-prod") in html
    assert "/endpoints/realtime/" not in html


@pytest.mark.parametrize("state, words", [
    ({"state": "missing", "reason": "not deployed yet"}, "class='muted'>Live state: not deployed yet.</p>"),
    ({"state": "missing", "reason": "not found in the staging workspace"},
     "Live state: not found in the staging workspace.</p>"),
    ({"state": "unknown", "reason": "get_deployment: throttled"}, "Live state unknown: get_deployment: throttled</p>"),
    ({"state": "found", "provisioning_state": "Failed", "instance_type": "Standard_DS3_v2", "instance_count": 1,
      "error": "quota exceeded"}, "class='fail'>Live state: Failed, Standard_DS3_v2 × 1; quota exceeded</p>"),
])
def test_the_staging_deployments_live_state_is_said_however_the_workspace_answered(state, words):
    from controlplane.web.pages import review_page

    html = review_page(a_review(staged_evidence()), promotion=staged_context(staging_state=state))
    assert words in section(html, "Staging")


def test_a_staging_review_says_it_approves_staging_and_that_the_plan_applies_later():
    from controlplane.web.pages import review_page

    evidence = {key: value for key, value in staged_evidence(stage="staging").items() if key != "test_stage"}
    html = review_page(a_review(evidence), promotion=staged_context(
        staging_state={"state": "missing", "reason": "not deployed yet"}))
    assert "This review approves <strong>staging</strong>: approval deploys the candidate to staging" in html
    assert "production follows this plan once it is approved" in section(html, "Rollout plan")
    assert "<h2>Test stage</h2>" not in html and "test job" not in section(html, "Links")


def test_without_workspace_ids_the_page_says_plainly_which_studio_links_it_cannot_give():
    from controlplane.web.pages import review_page

    context = staged_context(workspaces={"source": None, "staging": None, "production": None, "test": None})
    links = section(review_page(a_review(staged_evidence()), promotion=context), "Links")
    assert links.count("<li>") == 1 and "/registries/mlops-registry/models/churn/version/5" in links  # no wsid needed
    assert "No Azure ML studio link to the model churn:5 in dev; the test job churn-v5-3f2a-test" in links
    assert "the workspace has no Azure resource id here" in links and "wsid" not in links


def test_an_older_promotion_review_without_the_stages_still_renders_what_it_has():
    from controlplane.web.pages import review_page

    review = a_review(older_evidence())
    for html in (review_page(review), review_page(review, promotion={"plan": None, "workspaces": {}})):
        assert "<h2>Candidate against champion</h2>" in html and "<h2>Candidate</h2>" in html
        assert "accuracy: gain 0.012 over the champion" in html
        for heading in ("Route", "Staging", "Test stage", "Rollout plan"):
            assert f"<h2>{heading}</h2>" not in html, heading
    assert "<h2>Links</h2>" not in review_page(review)
    assert "No Azure ML studio link to the model churn:5 in the home workspace" in review_page(
        review, promotion={"plan": None, "workspaces": {}})


# -- Lineage: the job that trained the candidate, its training data, its registrant ---------------------------------

RETRAINED = {"accuracy": "0.9120", "auc": "0.9400", "training_data": "azureml:churn-training:7",
             "run_id": "register_step_1", "pipeline_job": "retrain-churn-4f9a"}  # what pipelines/src/register.py tags


def test_a_retrained_candidates_review_shows_its_lineage_with_a_studio_link_to_the_training_job():
    from controlplane.web.pages import review_page

    evidence = staged_evidence(**{k: v for k, v in promotion_evidence(RETRAINED).items() if k == "lineage"})
    assert evidence["lineage"] == {"job": "retrain-churn-4f9a", "job_from": "pipeline_job",
                                   "training_data": "azureml:churn-training:7", "registrant": "alice@contoso.com"}
    lineage = section(review_page(a_review(evidence), promotion=staged_context()), "Lineage")
    job = "https://ml.azure.com/runs/retrain-churn-4f9a?wsid=" + WSID.format("mlw-dev")  # where it was registered
    assert f"<a href='{job}' rel='noopener noreferrer'>retrain-churn-4f9a</a> (from the pipeline_job tag)" in lineage
    assert "<td>training data</td><td>azureml:churn-training:7</td>" in lineage
    assert "<td>registered by</td><td>alice@contoso.com (from Azure ML&#x27;s record)</td>" in lineage
    assert "No studio link" not in lineage


def test_azure_mls_run_id_names_the_training_job_before_the_pipeline_job_tag():
    evidence = promotion_evidence({**RETRAINED, "azureml.runId": "gentle_fig_0p7c3xqk5n"})
    assert evidence["lineage"]["job"] == "gentle_fig_0p7c3xqk5n" and evidence["lineage"]["job_from"] == "azureml.runId"


def test_lineage_without_a_workspace_id_names_the_job_unlinked_and_says_what_the_model_does_not_record():
    from controlplane.web.pages import review_page

    evidence = {**older_evidence(), "lineage": promotion_evidence({"pipeline_job": "retrain-<b>x</b>"})["lineage"]}
    lineage = section(review_page(a_review(evidence)), "Lineage")
    assert "retrain-&lt;b&gt;x&lt;/b&gt; (from the pipeline_job tag)" in lineage and "<a " not in lineage
    assert "No studio link: the workspace has no Azure resource id here." in lineage
    assert "not recorded: the model has no training_data tag" in lineage

    unknown = section(review_page(a_review(promotion_evidence()), promotion=staged_context()), "Lineage")
    assert "not recorded: the model has no azureml.runId property and no pipeline_job tag" in unknown
    assert "<a " not in unknown and "No studio link" not in unknown


def test_a_review_recorded_before_lineage_has_no_lineage_section():
    from controlplane.web.pages import review_page

    evidence = {key: value for key, value in staged_evidence().items() if key != "lineage"}
    assert "<h2>Lineage</h2>" not in review_page(a_review(evidence), promotion=staged_context())


# -- promotion_context: what the page reads from the workspaces and the policy --------------------------------------

class Workspaces:
    """One gateway per environment, as the policy's environments are reached."""

    def __init__(self, gateways: dict) -> None:
        self.gateways = gateways

    def gateway(self, environment=None):
        return self.gateways[environment]


def workspace(name: str | None = None, failing: Exception | None = None):
    """A fake workspace serving the staging deployment; ``name``: it has an Azure resource id, as a real one has."""
    from dataclasses import replace

    from tests.fakes import FakeWorkspace

    found = FakeWorkspace()
    found.serve("churn-ep", "blue", "azureml:churn:4")
    state = found.endpoints["churn-ep"]
    found.endpoints["churn-ep"] = replace(state, deployments=(*state.deployments, replace(
        state.deployments[0], name="churn-v5-3f2a", model="azureml:churn:5", instance_type="Standard_DS3_v2",
        instance_count=1)))
    if name:
        found.subscription_id, found.resource_group, found.workspace = "sub-1", "rg-ml", name
    if failing is not None:
        def fail(*args):
            raise failing
        found.get_deployment = fail
    return found


def context_for(evidence: dict, gateways: dict, policy, kind: ReviewKind = ReviewKind.PROMOTION):
    from controlplane.handlers.reviews import promotion_context
    from controlplane.ports.store import Services
    from tests.fakes import FakeClock, FakeStore, RecordingDispatcher

    services = Services(store=FakeStore(), clock=FakeClock(), dispatcher=RecordingDispatcher(), policy=policy,
                        gateway=gateways.get(None), workspaces=Workspaces(gateways))
    return promotion_context(services, a_review(evidence, kind))


def test_the_context_reads_the_staging_deployment_in_its_workspace_the_plan_and_each_workspaces_id(policy):
    gateways = {"dev": workspace("mlw-dev"), "staging": workspace("mlw-staging"), "prod": workspace("mlw-prod"),
                None: workspace("mlw-prod")}
    context = context_for(staged_evidence(), gateways, policy)
    assert context["staging_state"] == {"state": "found", "provisioning_state": "Succeeded",
                                        "instance_type": "Standard_DS3_v2", "instance_count": 1,
                                        "model": "azureml:churn:5", "error": ""}
    assert gateways["staging"].called("get_deployment") == [("get_deployment", "churn-ep", "churn-v5-3f2a")]
    assert not gateways["prod"].called("get_deployment")  # staging is read where it was deployed
    assert context["plan"]["mirror_percent"] == 20 and context["plan"]["steps"] == [10, 50, 100]
    assert context["workspaces"] == {"source": WSID.format("mlw-dev"), "staging": WSID.format("mlw-staging"),
                                     "production": WSID.format("mlw-prod"), "test": WSID.format("mlw-staging")}


@pytest.mark.parametrize("stage, failing, expected", [
    ("staging", None, {"state": "missing", "reason": "not deployed yet"}),
    ("production", None, {"state": "missing", "reason": "not found in the staging workspace"}),
    ("production", "transient", {"state": "unknown", "reason": "get_deployment: throttled"}),
    ("production", "permanent", {"state": "unknown", "reason": "get_deployment: forbidden"}),
])
def test_a_staging_deployment_that_cannot_be_read_leaves_its_state_unknown_with_why(policy, stage, failing,
                                                                                   expected):
    from controlplane.domain.errors import GatewayError, TransientError

    errors = {"transient": TransientError("get_deployment", "throttled"),
              "permanent": GatewayError("get_deployment", "forbidden")}
    staged = workspace("mlw-staging", errors.get(failing))
    evidence = staged_evidence(stage=stage, staging={"target": "online", "endpoint": "churn-ep",
                                                     "deployment": "churn-v5-3f2a" if failing else "not-there",
                                                     "environment": "staging"})
    context = context_for(evidence, {"staging": staged, "dev": None, "prod": None, None: None}, policy)
    assert context["staging_state"] == expected
    assert context["workspaces"]["production"] is None and context["workspaces"]["staging"] == WSID.format(
        "mlw-staging")


def test_without_a_workspace_the_context_says_why_and_gives_no_workspace_ids(policy):
    context = context_for(staged_evidence(), {"staging": None, "dev": None, "prod": None, None: None}, policy)
    assert context["staging_state"] == {"state": "unknown",
                                        "reason": "no Azure ML workspace is configured for the staging workspace"}
    assert set(context["workspaces"].values()) == {None}


def test_a_batch_staging_deployment_is_read_as_one_and_gets_no_online_rollout_plan(policy):
    from controlplane.ports.gateway import DeploymentInfo

    staged = workspace("mlw-staging")
    staged.get_batch_deployment = lambda endpoint, name: DeploymentInfo(endpoint, name, "azureml:churn:5",
                                                                        instance_count=2,
                                                                        provisioning_state="Succeeded")
    evidence = staged_evidence(staging={"target": "batch", "endpoint": "churn-batch", "deployment": "churn-v5-3f2a",
                                        "environment": "staging"})
    context = context_for(evidence, {"staging": staged, "dev": None, "prod": None, None: None}, policy)
    assert context["plan"] is None and context["staging_state"]["instance_count"] == 2
    assert not staged.called("get_deployment")


def test_other_reviews_and_rollbacks_have_no_promotion_context(policy):
    gateways = {None: workspace("mlw-prod")}
    assert context_for(drift_evidence(), gateways, policy, ReviewKind.DRIFT) is None
    assert context_for(rollback_evidence(), gateways, policy) is None
    older = context_for(older_evidence(), gateways, policy)  # no route or staging: the home workspace
    assert "staging_state" not in older and older["plan"]["mirror_percent"] == 20
    assert older["workspaces"]["source"] == WSID.format("mlw-prod")

"""Review pages carry the evidence an approver decides from, in a real browser (headless Chromium driven by
Playwright): a promotion (candidate against champion), a rollback (why, and each deployment's health) and a
drift review (the window and a row per column). axe-core finds no serious or critical accessibility problem,
and the pages fit a 390 px wide phone. Screenshots go to test-artifacts/."""
from __future__ import annotations

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


def promotion_evidence() -> dict:
    """What the promotion rules record for churn:5 against the champion churn:4 (the shipped policy)."""
    from controlplane.domain.policy import load_policy
    from controlplane.domain.promotion import PromotionFacts, judge_promotion
    from controlplane.domain.refs import AssetRef

    policy = load_policy(ROOT / "policy.yaml")
    facts = PromotionFacts(champion=AssetRef("churn", "4"), metrics={"accuracy": 0.912, "auc": 0.94},
                           registrant="alice@contoso.com", registrant_source="workspace",
                           champion_metrics={"accuracy": 0.9, "auc": 0.93})
    verdict = judge_promotion("churn", "5", {}, policy.rule_for("churn"), facts, "ml:page-test", policy)
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


REVIEWS = {
    "promotion": (ReviewKind.PROMOTION, "churn", "5", promotion_evidence, ("ana@contoso.com", "bo@contoso.com")),
    "rollback": (ReviewKind.PROMOTION, "churn", "5", rollback_evidence, ("ana@contoso.com",)),
    "drift": (ReviewKind.DRIFT, "defect-detector", None, drift_evidence, ("vision-reviewers@contoso.com",)),
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
        running.dead = dead
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

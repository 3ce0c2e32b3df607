"""The review page in a real browser (Debian's headless Chromium, driven by Playwright): open an
approval link, click Approve, see the state change. Screenshots go to test-artifacts/."""
from __future__ import annotations

import json
import subprocess
import sys
from urllib.parse import urlsplit

from tests.support import ROOT, load_event, local_host, request

ARTIFACTS = ROOT / "test-artifacts"
KEY = "b" * 64


def link(host, review_id, approver):
    done = subprocess.run([sys.executable, "-m", "controlplane", "reviews", "link", review_id, "--approver", approver],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, env={**host.full_env()})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def registered_in_workspace(workdir, model, version, registrant):
    """The dry run's simulated workspace (beside the host's database) records who registered the version."""
    from controlplane.adapters.simulated import SimulatedWorkspace

    path = workdir / "simulated-workspace.json"
    SimulatedWorkspace(path).tag_model(model, version, {})
    state = json.loads(path.read_text())
    state["models"][f"{model}:{version}"]["registered_by"] = registrant
    path.write_text(json.dumps(state))


def open_link(page, url):
    """Follow an approval link: the page's script posts the fragment's token and the approver's page loads."""
    page.goto(url)
    page.wait_for_selector("#open", state="detached")


def test_an_approver_opens_the_link_clicks_approve_and_sees_the_review_approved(browser, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    env = {"CONTROLPLANE_STORE": f"sqlite:///{tmp_path}/cp.db", "APPROVAL_SIGNING_KEY": KEY}
    registered_in_workspace(tmp_path, "churn", "12", "dan@contoso.com")
    with local_host(env, tmp_path) as host:
        host.env["CONTROLPLANE_PUBLIC_URL"] = host.url
        event = load_event("ce_model_registered.json")  # defect-detector, a tag holding <script>
        event.update(type="Microsoft.MachineLearningServices.ModelRegistered")
        event["data"].update(modelName="churn", modelVersion="12",
                             modelTags={**event["data"]["modelTags"], "accuracy": "0.93", "auc": "0.9"})
        assert host.post_events([event]).status == 202
        [review] = request("GET", f"{host.url}/api/reviews?state=open").json()["reviews"]

        page = browser.new_page()
        dialogs = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        for approver, expected in (("ana@contoso.com", "open"), ("bo@contoso.com", "approved")):
            open_link(page, link(host, review["id"], approver))
            assert urlsplit(page.url).fragment == ""  # the token left the address bar
            assert page.locator("[data-state]").first.get_attribute("data-state") == "open"
            page.fill("#comment", f"looks good to {approver}")
            page.click("#approve")
            page.wait_for_selector("[role=status]")
            assert page.locator("[data-state]").first.get_attribute("data-state") == expected
        page.screenshot(path=str(ARTIFACTS / "review-approved.png"), full_page=True)

        body = page.content()
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body and dialogs == []  # the tag showed as text
        assert "looks good to ana@contoso.com" in body and "looks good to bo@contoso.com" in body
        assert request("GET", f"{host.url}/api/reviews/{review['id']}",
                       headers={"Accept": "application/json"}).json()["review"]["state"] == "approved"

        open_link(page, link(host, review["id"], "carla@contoso.com"))  # a late link no longer offers a vote
        assert page.locator("#approve").count() == 0
        page.goto(f"{host.url}/api/ui")
        assert page.locator("h1").inner_text() == "MLOps control plane"
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        decisions = "h2:has-text('Recent decisions') ~ table"
        assert " UTC" in page.locator(decisions).inner_text()  # one readable form
        page.fill("#model", "churn")
        page.select_option("#outcome", "promote")
        page.select_option("#hours", "24")
        page.click("form.filters button")
        page.wait_for_load_state()
        rows = [r.inner_text() for r in page.locator(f"{decisions} tbody tr").all()]
        assert rows and all("churn:" in row and "promote" in row for row in rows)  # filtered: model, outcome, day
        assert page.locator("#model").input_value() == "churn"
        page.click(f"{decisions} a[href='models/churn']")
        assert page.locator("h1").inner_text() == "Model churn"  # every row leads to its model's story
        page.go_back()
        page.click("nav a:has-text('Outbox tasks')")
        assert page.locator("h1").inner_text() == "Outbox tasks"
        page.close()


def test_an_infrastructure_review_shows_the_alert_and_its_targets_recent_signals_as_charts(browser, tmp_path):
    from datetime import UTC, datetime, timedelta

    from controlplane.adapters.simulated import SimulatedWorkspace
    from controlplane.domain.signals import Series
    from tests.support import event_bytes

    ARTIFACTS.mkdir(exist_ok=True)
    workspace = SimulatedWorkspace(tmp_path / "simulated-workspace.json")  # beside the database: the host's
    workspace.seed_endpoint("churn-ep", "blue", "azureml:churn:4", instance_count=2)
    fired = datetime(2026, 11, 22, 12, 7, tzinfo=UTC)  # the fixture's firedDateTime
    at = [fired - timedelta(minutes=50 - 5 * n) for n in range(11)]
    workspace.set_signals("churn-ep/blue", [Series("CpuUtilizationPercentage", "Percent", tuple(
        (t, float(v)) for t, v in zip(at, [20, 22, 21, 25, 40, 61, 75, 83, 90, 93, 94], strict=True)))])
    env = {"CONTROLPLANE_STORE": f"sqlite:///{tmp_path}/cp.db", "APPROVAL_SIGNING_KEY": KEY}
    with local_host(env, tmp_path) as host:
        host.env["CONTROLPLANE_PUBLIC_URL"] = host.url
        assert request("POST", f"{host.url}/api/alerts", event_bytes("alert_cpu_blue_fired.json")).status == 200
        assert request("POST", f"{host.url}/admin/functions/sweep", '{"input": ""}').status == 202
        [review] = request("GET", f"{host.url}/api/reviews?state=open").json()["reviews"]
        assert review["kind"] == "alert" and review["approvers"] == ["infra-oncall@contoso.com"]

        page = browser.new_page()
        open_link(page, link(host, review["id"], "infra-oncall@contoso.com"))
        chart = page.locator("figure svg[role=img]")
        assert chart.count() == 1 and chart.bounding_box()["height"] > 50  # drawn, not blocked by the CSP
        assert "11 points" in chart.get_attribute("aria-label")
        assert "CpuUtilizationPercentage" in chart.get_attribute("aria-label")
        assert "peak 94" in page.locator("#signals-summary").inner_text()
        assert page.locator("#approve").count() == 1
        page.screenshot(path=str(ARTIFACTS / "alert-review.png"), full_page=True)
        page.goto(f"{host.url}/api/ui")
        incidents = page.locator("h2:has-text('Open incidents') + table tbody tr")
        assert incidents.count() == 1 and "churn-ep/blue" in incidents.first.inner_text()
        page.close()
    assert workspace.get_endpoint("churn-ep").deployments[0].instance_count == 3  # the sweep scaled it


def test_without_javascript_the_approver_pastes_the_links_token_and_votes(browser, tmp_path):
    env = {"CONTROLPLANE_STORE": f"sqlite:///{tmp_path}/cp.db", "APPROVAL_SIGNING_KEY": KEY}
    registered_in_workspace(tmp_path, "churn", "12", "dan@contoso.com")
    with local_host(env, tmp_path) as host:
        host.env["CONTROLPLANE_PUBLIC_URL"] = host.url
        event = load_event("ce_model_registered.json")
        event.update(type="Microsoft.MachineLearningServices.ModelRegistered")
        event["data"].update(modelName="churn", modelVersion="12", modelTags={"accuracy": "0.93", "auc": "0.9"})
        assert host.post_events([event]).status == 202
        [review] = request("GET", f"{host.url}/api/reviews?state=open").json()["reviews"]
        url = link(host, review["id"], "ana@contoso.com")

        context = browser.new_context(java_script_enabled=False)
        page = context.new_page()
        page.goto(url)
        assert page.locator("#approve").count() == 0 and page.locator("#open").count() == 1
        page.fill("#token", url.split("#token=", 1)[1])
        page.click("#open button")
        page.wait_for_selector("#approve")
        page.click("#approve")
        page.wait_for_selector("[role=status]")
        assert "ana@contoso.com approved (1 of 2)" in page.locator("[role=status]").inner_text()
        context.close()


def test_a_production_review_shows_the_route_staging_test_stage_rollout_plan_and_links(browser, tmp_path):
    """A review opened after the test stage, with the staging deployment live in the dry run's workspace."""
    from datetime import UTC, datetime, timedelta

    from controlplane.adapters.simulated import SimulatedWorkspace
    from controlplane.adapters.sqlite_store import SqliteStore
    from controlplane.domain.ledger import Outcome, ReviewDraft, Source, Verdict, record
    from controlplane.domain.reviews import ReviewKind
    from controlplane.ports.gateway import DeploymentRequest
    from tests.test_review_pages import staged_evidence

    ARTIFACTS.mkdir(exist_ok=True)
    home = tmp_path / "simulated-workspace.json"  # beside the database: the host's
    for workspace in (SimulatedWorkspace(home), SimulatedWorkspace.of(home, "staging")):  # home, or staging's own
        workspace.create_endpoint("churn-ep", "key")
        workspace.deploy(DeploymentRequest("churn-ep", "churn-v5-3f2a", "azureml:churn:5", "Standard_DS3_v2", 1))
    now = datetime.now(UTC)
    draft = ReviewDraft(kind=ReviewKind.PROMOTION, approvers=("ana@contoso.com",), quorum=1, ttl=timedelta(days=3),
                        evidence=staged_evidence(), separation_of_duties=False)
    decision = record(Verdict(Outcome.REVIEW, "test stage done", model="churn", version="5", reviews=(draft,)),
                      key="browser:staged", event_id="staged", source=Source.CONTROLPLANE, event_type="test",
                      policy_version="v", received_at=now, decided_at=now)
    SqliteStore(str(tmp_path / "cp.db")).append(decision)
    env = {"CONTROLPLANE_STORE": f"sqlite:///{tmp_path}/cp.db", "APPROVAL_SIGNING_KEY": KEY}
    with local_host(env, tmp_path) as host:
        host.env["CONTROLPLANE_PUBLIC_URL"] = host.url
        url = link(host, decision.reviews[0].id, "ana@contoso.com")
        for width in (1100, 390):
            page = browser.new_page(viewport={"width": width, "height": 900})
            open_link(page, url)
            for heading in ("Route", "Staging", "Test stage", "Rollout plan", "Links"):
                assert page.locator(f"h2:text-is('{heading}')").is_visible(), heading
            assert page.locator("#route").inner_text() == ("registered in dev → staged in staging → production in "
                                                           "prod, through registry mlops-registry")
            assert page.locator("#staging-state").inner_text() == "Live state: Succeeded, Standard_DS3_v2 × 1"
            results = page.locator("table:has(th:text-is('pass/fail')) tbody tr")
            verdicts = {r.locator("td").first.inner_text(): r.locator("td").last for r in results.all()}
            assert verdicts["auc"].inner_text() == "pass" and verdicts["auc"].locator(".pass").is_visible()
            assert verdicts["demographic_parity_difference"].locator(".fail").is_visible()
            assert page.locator("#test-stage-status").inner_text() == "Completed; 1 of 2 gates failed."
            scores, counts = page.locator("figure svg[aria-label^='Test-stage results']").all()
            assert scores.is_visible() and "auc 0.91" in scores.get_attribute("aria-label")
            assert "1,200" in counts.get_attribute("aria-label")  # a count does not flatten the scores' bars
            plan = page.locator("h2:text-is('Rollout plan') ~ table").first.inner_text()
            assert "mirror 20% of requests" in plan and "10% → 50% → 100%" in plan and "30 minutes" in plan
            registry = page.locator("#studio-links a")
            assert registry.count() == 1 and registry.get_attribute("href") == (
                "https://ml.azure.com/registries/mlops-registry/models/churn/version/5")
            assert "has no Azure resource id" in page.locator("#no-studio-links").inner_text()  # simulated: no wsid
            assert page.evaluate("document.documentElement.scrollWidth") <= width
            page.screenshot(path=str(ARTIFACTS / f"review-production-stages-{width}px.png"), full_page=True)
            page.close()


def test_an_operator_replays_the_dead_letters_from_the_outbox_page_and_sees_them_pending(browser, tmp_path):
    from dataclasses import replace
    from datetime import UTC, datetime

    from controlplane.adapters.sqlite_store import SqliteStore
    from controlplane.domain.ledger import Outcome, Source, TaskState, Verdict, record
    from controlplane.domain.requests import Notify
    from tests.test_review_pages import serious_violations

    ARTIFACTS.mkdir(exist_ok=True)
    store, now = SqliteStore(str(tmp_path / "cp.db")), datetime.now(UTC)
    decision = record(Verdict(Outcome.NOTIFY, "tell", model="churn",
                              tasks=tuple(Notify(channel="ops", event=f"e{n}") for n in range(4))),
                      key="browser:replay", event_id="replay", source=Source.ALERT, event_type="t",
                      policy_version="v", received_at=now, decided_at=now)
    store.append(decision)
    dead = decision.tasks[:3]
    for task in dead:
        store.update_task(task, replace(task, state=TaskState.DEAD_LETTERED, attempts=8, last_error="webhook 404"))
    env = {"CONTROLPLANE_STORE": f"sqlite:///{tmp_path}/cp.db", "APPROVAL_SIGNING_KEY": KEY}
    with local_host(env, tmp_path) as host:
        page = browser.new_context(bypass_csp=True).new_page()  # bypassed only to inject axe-core
        page.goto(f"{host.url}/api/ui/tasks?code=the-function-key")
        states = page.locator("main table tbody tr [data-state]")
        assert sorted(s.get_attribute("data-state") for s in states.all()) == ["dead_lettered"] * 3 + ["pending"]
        assert page.locator("#replay-count").inner_text() == "3 dead-lettered tasks."
        page.screenshot(path=str(ARTIFACTS / "tasks-dead-lettered.png"), full_page=True)
        page.click("button:text-is('Replay dead letters')")
        page.wait_for_load_state()
        assert page.locator("[role=status]").inner_text() == (
            "Replay of dead letters: 3 tasks are pending again, due now with a fresh retry budget.")
        assert "code=the-function-key" in page.url  # back where it was, key kept
        assert page.locator("#replay").count() == 0  # no dead letter left, so no button
        rows = {r.locator("td").first.inner_text(): r for r in page.locator("main table tbody tr").all()}
        assert set(rows) == {task.id for task in decision.tasks}
        for task in dead:
            assert rows[task.id].locator("[data-state]").get_attribute("data-state") == "pending"
            assert rows[task.id].locator("td").nth(5).inner_text() == "0"  # attempts: the full budget again
            assert rows[task.id].locator(f"button[aria-label='Cancel task {task.id}']").is_visible()
        page.screenshot(path=str(ARTIFACTS / "tasks-replayed.png"), full_page=True)
        assert serious_violations(page) == []
        page.context.close()

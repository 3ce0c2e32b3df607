"""Telemetry to decision, end to end: windows close, Evidently checks them against reference data
(scikit-learn's diabetes data, split by a natural variable), and each profile acts as MLOps v2 says."""
from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

import pytest

from controlplane.adapters.artifacts import LocalArtifacts
from controlplane.adapters.drift_checker import EvidentlyDriftChecker
from controlplane.adapters.routing import RoutingDispatcher
from controlplane.domain.ledger import Outcome, TaskKind, TaskState
from controlplane.domain.policy import parse_policy
from controlplane.handlers.dispatch_local import LocalWork
from controlplane.handlers.drift import EVENT_TYPE
from controlplane.handlers.schedules import run_schedules
from controlplane.handlers.sweep import sweep
from controlplane.handlers.telemetry import RawTelemetry, receive_telemetry
from controlplane.ports.gateway import JobInfo
from tests.fakes import FakeWorkspace, RecordingDispatcher

FEATURES = ["age", "bmi", "bp", "s1", "s2", "s3", "s5", "s6"]


@pytest.fixture(scope="module")
def diabetes():
    from sklearn.datasets import load_diabetes

    return load_diabetes(as_frame=True, scaled=False).frame


def policy_text(reference, profile="classical", persistence=1, records=150, extra="", drift_share=0.3):
    columns = ", ".join(f"{c}: numerical" for c in FEATURES)
    review = "review: {assignees: [vision-reviewers@contoso.com], labelling_project: labels}" \
        if profile != "classical" else ""
    return f"""
models:
  - name: diabetes
    profile: {profile}
    retraining: {{pipeline: pipelines/retrain.yml, experiment: diabetes-retraining, cooldown_hours: 24,
                  daily_budget: 2{extra}}}
    {review}
    drift:
      reference: {reference}
      columns: {{{columns}}}
      methods: {{numerical: ks}}
      drift_share: {drift_share}
      min_rows: 50
      persistence: {persistence}
      window: {{records: {records}, minutes: 60, grace_minutes: 5, sample: {records}}}
"""


@pytest.fixture
def wire(services, tmp_path):
    def wire(policy, reference_frame):
        reference = tmp_path / "reference.csv"
        reference_frame[FEATURES].to_csv(reference, index=False)
        artifacts = LocalArtifacts(tmp_path / "artifacts")
        parsed = parse_policy(policy(str(reference)))
        checker = EvidentlyDriftChecker(artifacts, "http://cp.test")
        wired = replace(services, policy=parsed, drift=checker, gateway=FakeWorkspace(), approval_key=b"k" * 32)
        local = LocalWork(wired.store, parsed, checker, artifacts, gateway=wired.gateway)
        return replace(wired, dispatcher=RoutingDispatcher({TaskKind.REVIEW: local}, RecordingDispatcher())), artifacts
    return wire


def send(services, frame, first_sequence=0, per_event=25, partition="0"):
    """Score ``frame`` through the telemetry path, ``per_event`` records per Event Hubs event."""
    rows = frame[FEATURES].to_dict("records")
    now = services.clock.now().isoformat()
    batch = []
    for n, start in enumerate(range(0, len(rows), per_event)):
        records = [{"model": "diabetes", "version": "1", "endpoint": "diabetes-ep", "deployment": "blue",
                    "request_id": f"{first_sequence}-{start + i}", "timestamp": now, "inputs": row,
                    "outputs": {"score": 1.0}} for i, row in enumerate(rows[start:start + per_event])]
        batch.append(RawTelemetry(partition, first_sequence + n, None, json.dumps(records).encode()))
    return receive_telemetry(services, batch)


def window_decisions(services):
    return [d for d in reversed(services.store.decisions(limit=500)) if d.event_type == EVENT_TYPE]


def test_older_patients_drift_from_a_younger_reference_and_a_classical_model_is_retrained(wire, diabetes):
    services, _ = wire(policy_text, diabetes[diabetes.age < 50])
    report = send(services, diabetes[diabetes.age >= 50].head(150))

    [decision] = report.windows
    assert decision.outcome is Outcome.RETRAIN, decision.reason
    assert "age" in decision.evidence["signal"]["drifted_columns"]
    assert decision.evidence["window"]["records"] == 150 and decision.evidence["window"]["closed_by"] == "records"
    [task] = decision.tasks
    assert task.kind is TaskKind.RETRAINING
    assert task.request["job"]["tags"]["controlplane.trigger"] == "telemetry_window"
    scores = {c["column"]: c for c in decision.evidence["drift"]["columns"]}
    assert scores["age"]["method"] == "ks" and scores["age"]["drifted"] is True


def test_an_unshifted_random_split_does_not_drift(wire, diabetes):
    shuffled = diabetes.sample(frac=1, random_state=11)
    services, _ = wire(policy_text, shuffled.iloc[:250])
    [decision] = send(services, shuffled.iloc[250:400]).windows
    assert decision.outcome is Outcome.NO_ACTION and decision.tasks == (), decision.reason


def test_a_window_smaller_than_min_rows_is_inconclusive_when_time_closes_it(wire, diabetes):
    services, _ = wire(policy_text, diabetes[diabetes.age < 50])
    send(services, diabetes[diabetes.age >= 50].head(20))
    services.clock.advance(hours=2)
    assert sweep(services).windows_closed == 1
    [decision] = window_decisions(services)
    assert decision.outcome is Outcome.INCONCLUSIVE and decision.evidence["window"]["closed_by"] == "time"


def test_persistence_two_acts_on_the_second_drifted_window_in_a_row(wire, diabetes):
    services, _ = wire(lambda ref: policy_text(ref, persistence=2, records=100), diabetes[diabetes.age < 50])
    old = diabetes[diabetes.age >= 50]
    first = send(services, old.head(100)).windows[0]
    second = send(services, old.iloc[100:200], first_sequence=100).windows[0]
    assert first.outcome is Outcome.NO_ACTION and "1 of 2 windows in a row" in first.reason
    assert second.outcome is Outcome.RETRAIN and second.evidence["streak"] == 2


def test_the_storm_guard_joins_a_running_job_then_keeps_the_cooldown_and_budget(wire, diabetes):
    # Small windows of 50: age alone drifting is enough to act (drift_share 0.1).
    services, _ = wire(lambda ref: policy_text(ref, records=50, drift_share=0.1), diabetes[diabetes.age < 50])
    old = diabetes[diabetes.age >= 50]
    started = send(services, old.head(50)).windows[0]
    assert started.outcome is Outcome.RETRAIN, started.reason
    services.gateway.jobs[started.evidence["job"]] = JobInfo(started.evidence["job"], "Running", "diabetes-retraining")
    joined = send(services, old.iloc[50:100], first_sequence=50).windows[0]
    assert joined.outcome is Outcome.NO_ACTION and "joined the retraining already running" in joined.reason
    services.gateway.jobs.clear()
    cooled = send(services, old.iloc[100:150], first_sequence=100).windows[0]
    assert cooled.outcome is Outcome.NO_ACTION and "cooldown" in cooled.reason and cooled.tasks == ()


def test_a_computer_vision_model_goes_to_review_with_its_rows_exported_and_a_report(wire, diabetes, tmp_path,
                                                                                   app_functions):
    services, artifacts = wire(lambda ref: policy_text(ref, profile="cv"), diabetes[diabetes.age < 50])
    [decision] = send(services, diabetes[diabetes.age >= 50].head(150)).windows
    assert decision.outcome is Outcome.REVIEW and decision.reviews[0].kind.value == "drift"
    assert {t.request["operation"] for t in decision.tasks if t.kind is TaskKind.REVIEW} == {
        "labelling.export", "report.render"}

    sweep(services)
    done = {t.request.get("operation"): t for t in services.store.tasks(limit=100)}
    assert done["labelling.export"].state is TaskState.SUCCEEDED and done["report.render"].state is TaskState.SUCCEEDED
    name = decision.evidence["report"]
    lines = (tmp_path / "artifacts" / "labelling" / f"{name}.jsonl").read_text().splitlines()
    assert len(lines) == 150 and set(FEATURES) <= set(json.loads(lines[0]))
    # The export is a data asset version the labelling project (and the next retraining) reads in Azure ML.
    exported = done["labelling.export"].result
    [(asset, version, path)] = [call[1:] for call in services.gateway.calls if call[0] == "register_data"]
    assert (asset, path) == ("labels-labelling", exported["exported"]) and version.startswith("blue-")
    assert exported["data_asset"] == f"azureml:labels-labelling:{version}" and exported["registered"] is True
    assert done["report.render"].result["report"] == f"http://cp.test/api/reports/{name}"
    report = (tmp_path / "artifacts" / "reports" / f"{name}.html").read_text(encoding="utf-8")
    header = report[report.index("<body>"):report.index("</header>")]  # the report opens naming what it is of
    window = decision.evidence["window"]
    assert header.startswith("<body><header id='report-header'") and f"Drift report: {window['model']}" in header
    assert f"bucket {window['bucket']}, part {window['part']}" in header and window["deployment"] in header
    from controlplane.web.pages import review_page

    review = decision.reviews[0]
    page = review_page(review, token="approval-token")
    assert f"action='{review.id}/report'" in page  # the reviewer's way to the report, with their token
    assert decision.evidence["report_url"].endswith(f"/api/reports/{name}")
    html = artifacts.load(f"reports/{name}.html").decode()
    assert "age" in html and len(html) > 10_000

    import azure.functions as func

    from controlplane import bootstrap

    report = app_functions["report"].get_user_function()
    bootstrap.reset(replace(services, artifacts=artifacts))
    try:
        served = report(func.HttpRequest("GET", f"/api/reports/{name}", body=b"", route_params={"name": name}))
        missing = report(func.HttpRequest("GET", "/api/reports/nope", body=b"", route_params={"name": "nope"}))
    finally:
        bootstrap.reset()
    assert served.status_code == 200 and served.get_body().decode() == html and missing.status_code == 404


def test_scheduled_retraining_fires_once_per_scheduled_second_through_the_guard(wire, diabetes):
    services, _ = wire(lambda ref: policy_text(ref, extra=', schedule: "0 0 3 * * *"'), diabetes)
    services.clock.moment = services.clock.moment.replace(hour=3, minute=0, second=30)
    [fired] = run_schedules(services)
    assert fired.outcome is Outcome.RETRAIN and fired.event_type == "retraining.scheduled"
    assert run_schedules(services)[0].outcome is Outcome.DUPLICATE  # the next sweep, same scheduled second
    services.clock.advance(days=1)
    [again] = run_schedules(services)
    assert again.outcome is Outcome.RETRAIN  # a day later: the cooldown of 24 h has passed
    services.clock.advance(minutes=10)
    assert run_schedules(services) == []
    assert timedelta(days=1) <= again.decided_at - fired.decided_at


def test_a_reference_registered_as_an_azure_ml_data_asset_is_read_through_the_gateway(diabetes, tmp_path):
    class Workspace:
        def __init__(self):
            self.asked = []

        def data_asset_url(self, name, version):
            self.asked.append((name, version))
            return f"https://st.blob.core.windows.net/refs/{name}-{version}.csv"

    csv = diabetes[FEATURES].to_csv(index=False).encode()
    downloads = []
    workspace = Workspace()
    checker = EvidentlyDriftChecker(LocalArtifacts(tmp_path), gateway=workspace,
                                    download=lambda url: downloads.append(url) or csv)
    policy = parse_policy(policy_text("azureml:diabetes-reference:2")).rule_for("diabetes").drift
    rows = diabetes[FEATURES].head(100).to_dict("records")

    first, second = checker.check(rows, policy), checker.check(rows, policy)
    # the reference is sampled with its own bound, not the window's sample of 150 rows
    assert (first.reference_rows, first.reference_sampled_from) == (len(diabetes), None)
    assert not first.dataset_drift and second.rows == first.rows
    assert workspace.asked == [("diabetes-reference", "2")]  # a pinned version is resolved and read once
    assert downloads == ["https://st.blob.core.windows.net/refs/diabetes-reference-2.csv"]


def test_a_window_whose_check_fails_for_now_is_decided_by_a_later_sweep(wire, diabetes):
    from controlplane.domain.errors import TransientError

    services, _ = wire(policy_text, diabetes[diabetes.age < 50])
    real_check = services.drift.check
    failures = [TransientError("reference blob", "unreachable")]

    def flaky(rows, policy):
        if failures:
            raise failures.pop()
        return real_check(rows, policy)

    services.drift.check = flaky
    report = send(services, diabetes[diabetes.age >= 50].head(150))
    assert report.stored == 150 and report.windows == ()  # the records are kept; the window waits
    assert sweep(services).windows_closed == 0
    [decision] = window_decisions(services)
    assert decision.outcome is Outcome.RETRAIN and services.store.undecided_windows() == []


def test_a_schedule_belongs_to_its_own_rule_even_after_a_broader_one(services):
    policy = parse_policy("""
models:
  - name: "dia*"
    profile: cv
  - name: diabetes
    retraining: {pipeline: p.yml, experiment: e, schedule: "0 0 3 * * *"}
""")
    services = replace(services, policy=policy)
    services.clock.moment = services.clock.moment.replace(hour=3, minute=0, second=30)
    [fired] = run_schedules(services)
    assert fired.outcome is Outcome.RETRAIN and fired.model == "diabetes"


def test_a_list_valued_column_is_a_data_quality_problem_and_the_window_is_still_decided(wire, diabetes):
    services, _ = wire(policy_text, diabetes[diabetes.age < 50])
    window = diabetes[diabetes.age >= 50].head(150).copy()
    window["s6"] = [[0.1, 0.2, 0.3]] * len(window)  # an embedding logged where a number belongs
    [decision] = send(services, window).windows
    assert decision.outcome is Outcome.RETRAIN, decision.reason
    assert decision.evidence["data_quality"] is True and "s6 (invalid_values, no_values)" in decision.reason
    quality = {q["column"]: q for q in decision.evidence["drift"]["quality"]}
    assert quality["s6"]["invalid"] == 150 and quality["s6"]["excluded"] is True
    assert "age" in decision.evidence["drift"]["drifted"]


def test_a_policy_written_for_evidently_thresholds_keeps_its_meaning(diabetes, tmp_path):
    reference = tmp_path / "reference.csv"
    diabetes[FEATURES].to_csv(reference, index=False)
    checker = EvidentlyDriftChecker(LocalArtifacts(tmp_path))
    rows = diabetes[FEATURES].head(100).to_dict("records")
    legacy = parse_policy(policy_text(str(reference)).replace("methods: {numerical: ks}",
                                                              "methods: {numerical: ks}\n      thresholds: "
                                                              "{numerical: 0.01}")).rule_for("diabetes").drift
    result = checker.check(rows, legacy)
    assert result.correction == "none" and "drift_share" in result.reason
    assert result.score("age").threshold == 0.01
    calibrated = checker.check(rows, parse_policy(policy_text(str(reference))).rule_for("diabetes").drift)
    assert calibrated.correction == "holm" and calibrated.alpha == 0.05


def quality_routed(reference, notify="[data-engineers]", reviewers="[]"):
    return policy_text(reference) + f"      data_quality: {{notify: {notify}, reviewers: {reviewers}}}\n"


def test_missing_values_without_drift_reach_the_data_engineers_as_their_own_outcome(wire, diabetes):
    shuffled = diabetes.sample(frac=1, random_state=11)
    services, _ = wire(quality_routed, shuffled.iloc[:250])
    window = shuffled.iloc[250:400].copy()
    window["bmi"] = window["bmi"].astype(object)  # None is sent as JSON null (a NaN would not be JSON)
    window.loc[window.index[:45], "bmi"] = None  # 30% of bmi missing, none in the reference
    [decision] = send(services, window).windows
    assert decision.outcome is Outcome.NOTIFY, decision.reason
    assert decision.reason.endswith("; sent to data-engineers")
    assert decision.evidence["drifted"] is False
    assert decision.evidence["data_quality_routed"]["problems"] == [["bmi", "missing_rate"]]
    [notice] = [t for t in decision.tasks if t.kind is TaskKind.NOTIFY]
    assert notice.request["channel"] == "data-engineers" and "bmi (missing_rate)" in notice.request["text"]


def test_with_reviewers_a_quality_problem_opens_a_review_and_drift_keeps_its_own_action(wire, diabetes):
    services, _ = wire(lambda r: quality_routed(r, reviewers="[dan@contoso.com]"), diabetes[diabetes.age < 50])
    window = diabetes[diabetes.age >= 50].head(150).copy()
    window["bmi"] = window["bmi"].astype(object)
    window.loc[window.index[:45], "bmi"] = None
    [decision] = send(services, window).windows
    assert decision.outcome is Outcome.RETRAIN  # drift is acted on as the profile says
    assert {t.kind for t in decision.tasks} == {TaskKind.RETRAINING, TaskKind.NOTIFY}
    [review] = decision.reviews
    assert review.approvers == ("dan@contoso.com",) and review.evidence["data_quality_review"] is True


def test_without_a_data_quality_route_problems_are_only_recorded(wire, diabetes):
    shuffled = diabetes.sample(frac=1, random_state=11)
    services, _ = wire(policy_text, shuffled.iloc[:250])
    window = shuffled.iloc[250:400].copy()
    window["bmi"] = window["bmi"].astype(object)
    window.loc[window.index[:45], "bmi"] = None
    [decision] = send(services, window).windows
    assert decision.outcome is Outcome.NO_ACTION and decision.evidence["data_quality"] is True
    assert decision.tasks == ()

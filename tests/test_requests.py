"""Outbox requests: one type per kind, stored as JSON, read back strictly; asset references; shadow mode."""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from controlplane.domain.ledger import (
    Decision,
    Outcome,
    ReviewDraft,
    Source,
    TaskKind,
    Verdict,
    dumps,
    record,
    shadowed,
)
from controlplane.domain.refs import AssetRef
from controlplane.domain.requests import (
    CORRELATION_TAG,
    REQUESTS,
    AzureMLRequest,
    CheckDrift,
    DeployBatch,
    DeployModel,
    ExportLabels,
    LocalRequest,
    Notify,
    PublishDecision,
    ReadSignals,
    RenderReport,
    RequestError,
    RollBack,
    Scale,
    SetBatchDefault,
    SetTraffic,
    StartRollout,
    SubmitPipeline,
    parse_request,
)
from controlplane.domain.reviews import ReviewKind
from controlplane.handlers.actions import storm_guard

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
WINDOW = {"model": "churn", "deployment": "blue", "bucket": 498706, "part": 0}
EXAMPLES = [
    SubmitPipeline(experiment_name="churn-retraining", name="retrain-churn-0a1b2c3d4e5f", source="azureml:retrain:3",
                   inputs={"model_name": "churn"}, tags={"controlplane.trigger": "drift"}, compute="cpu-cluster"),
    DeployModel(endpoint="churn-ep", deployment="churn-v7-0a1b2c3d4e5f", model=AssetRef("churn", "7"),
                instance_type="Standard_DS3_v2", instance_count=2, spec={"code": "src", "scoring_script": "score.py"},
                auth_mode="aad_token"),
    StartRollout(endpoint="churn-ep", deployment="churn-v7-0a1b2c3d4e5f", model=AssetRef("churn", "7"),
                 approvers=("ana@contoso.com", "bo@contoso.com")),
    SetTraffic(endpoint="churn-ep", traffic={"blue": 90, "green": 10}, mirror={}),
    SetTraffic(endpoint="churn-ep", traffic={"blue": 100}),
    Scale(endpoint="churn-ep", deployment="blue", instance_count=3),
    RollBack(endpoint="churn-ep", traffic={"blue": 100}, from_deployment="green", scale={"blue": 2}, mirror={}),
    Notify(channel="reviewers", event="review.opened", subject="Review opened", text="why",
           review_id="r1", approvers=("ana@contoso.com",)),
    Notify(channel="oncall", event="incident.opened", subject="[Sev1] p95", text="slow", incident_id="i1",
           alert_id="a1", targets=("/subscriptions/x",), signals={"artifact": "incidents/i1/s.json"}),
    PublishDecision(subject="models/churn", data={"decision_id": "d1", "outcome": "promote"}),
    RenderReport(name="churn-blue-498706.0-abc", window=WINDOW, model="churn"),
    ExportLabels(name="churn-blue-498706.0-abc", window=WINDOW, labelling_project="churn-labels"),
    ReadSignals(signals={"artifact": "incidents/i1/signals-review-abc.json", "metrics": []}, incident_id="i1"),
    DeployBatch(endpoint="churn-batch", deployment="churn-v7-0a1b2c3d4e5f", model=AssetRef("churn", "7"),
                compute="cpu-cluster", mini_batch_size=5, environment="staging", source="dev", registry="shared",
                sample_input="azureml:churn-sample:1", experiment="churn-batch-test-stage"),
    SetBatchDefault(endpoint="churn-batch", deployment="churn-v6-0a1b2c3d4e5f", environment="prod"),
    DeployModel(endpoint="churn-ep", deployment="churn-v8-0a1b2c3d4e5f", model=AssetRef("churn", "8"),
                instance_type="Standard_DS3_v2", environment="staging", source="dev", registry="shared",
                test=SubmitPipeline(experiment_name="churn-ep-test-stage", name="churn-v8-0a1b2c3d4e5f-test",
                                    source="pipelines/test-stage.yml", environment=None).to_json()),
    SubmitPipeline(experiment_name="churn-retraining", name="retrain-churn-1", source="azureml:retrain:3",
                   environment="dev"),
    CheckDrift(experiment_name="drift-check", name="drift-churn-0a1b2c3d4e5f", source="pipelines/drift-check.yml",
               inputs={"telemetry": "azureml://datastores/telemetry_capture/paths/ns/hub/", "model": "churn"},
               tags={"controlplane.stage": "drift"}),
]


def test_every_request_kind_has_an_example():
    assert {type(r) for r in EXAMPLES} == set(REQUESTS.values())


@pytest.mark.parametrize("request_", EXAMPLES, ids=lambda r: r.OPERATION)
def test_a_request_reads_back_from_its_json_as_it_was(request_):
    stored = request_.to_json()

    assert stored["operation"] == request_.OPERATION
    assert parse_request(stored) == request_


@pytest.mark.parametrize("request_", EXAMPLES, ids=lambda r: r.OPERATION)
def test_a_recorded_task_carries_the_kind_and_target_its_request_names(request_):
    decision = record(Verdict(Outcome.PROMOTE, "test", model="churn", tasks=(request_,)), key="k", event_id="e",
                      source=Source.CONTROLPLANE, event_type="test", policy_version="v", received_at=NOW,
                      decided_at=NOW)

    [task] = decision.tasks
    assert (task.kind, task.target) == (request_.KIND, request_.target)
    assert isinstance(task.kind, TaskKind) and task.target
    # Stored as it was, with the correlation id beside it; what the request creates in Azure ML is tagged with it too.
    stored = dict(task.request)
    assert stored.pop("correlation_id") == decision.correlation_id == decision.id == task.correlation_id
    tags = stored.get("tags") or stored.get("job", {}).get("tags")
    if hasattr(request_, "tags"):
        assert tags.pop(CORRELATION_TAG) == decision.id
    assert stored == request_.to_json()
    assert parse_request(task.request) == parse_request(stored)  # the id is beside the request, never inside it


def test_a_decision_that_follows_another_carries_its_correlation_id_to_every_task_and_review():
    follows = record(Verdict(Outcome.PROMOTE, "approved", model="churn", tasks=tuple(EXAMPLES[:2]),
                             reviews=(ReviewDraft(ReviewKind.PROMOTION, ("ana@contoso.com",), 1, timedelta(hours=1)),)),
                     key="review:r1:2", event_id="r1", source=Source.CONTROLPLANE, event_type="review.approved",
                     policy_version="v", received_at=NOW, decided_at=NOW, correlation_id="first-decision",
                     traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")

    assert follows.correlation_id == "first-decision" != follows.id
    carried = {t.correlation_id for t in follows.tasks} | {r.correlation_id for r in follows.reviews}
    assert carried == {"first-decision"} and len(follows.tasks) == 3
    assert {t.traceparent for t in follows.tasks} == {"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    assert Decision.from_json(json.loads(dumps(follows))) == follows
    written_before = {k: v for k, v in json.loads(dumps(follows)).items() if k != "correlation_id"}
    assert Decision.from_json(written_before).correlation_id == follows.id  # rows written before the field existed


@pytest.mark.parametrize("stored, expected", [
    ({"operation": "online_deployments.begin_create_or_update", "stage": "staging", "endpoint": "churn-ep",
      "deployment": "churn-v7-x", "model": "azureml:churn:7", "instance_type": "Standard_DS3_v2",
      "instance_count": 1, "traffic": 0, "spec": {}, "auth_mode": "key"},
     DeployModel(endpoint="churn-ep", deployment="churn-v7-x", model=AssetRef("churn", "7"),
                 instance_type="Standard_DS3_v2")),
    ({"operation": "rollout.start", "stage": "production", "endpoint": "churn-ep", "deployment": "churn-v7-x",
      "model": "azureml:churn:7", "approvers": ["ana@contoso.com"]},
     StartRollout(endpoint="churn-ep", deployment="churn-v7-x", model=AssetRef("churn", "7"),
                  approvers=("ana@contoso.com",))),
    ({"operation": "alert.signals", "signals": {"artifact": "incidents/i1/x.json"}},
     ReadSignals(signals={"artifact": "incidents/i1/x.json"})),
    ({"operation": "notify", "channel": "reviewers", "event": "review.expired", "subject": "s", "text": "t",
      "review_id": "r1", "approvers": []},
     Notify(channel="reviewers", event="review.expired", subject="s", text="t", review_id="r1")),
], ids=["staging", "rollout", "signals-without-incident", "notice"])
def test_tasks_stored_before_requests_were_typed_still_load(stored, expected):
    assert parse_request(stored) == expected


@pytest.mark.parametrize("stored, message", [
    ({"operation": "jobs.create_or_update", "experiment_name": "x", "job": {"source": "p.yml"}},
     "jobs.create_or_update: request.job.name is missing"),
    ({"operation": "jobs.create_or_update", "experiment_name": "x"}, "request.job is missing"),
    ({"operation": "online_deployments.scale", "endpoint": "ep", "deployment": "blue", "instance_count": "3"},
     "request.instance_count must be an integer, not '3'"),
    ({"operation": "online_deployments.scale", "endpoint": "ep", "deployment": "blue", "instance_count": True},
     "request.instance_count must be an integer"),
    ({"operation": "online_endpoints.rollback", "endpoint": "ep", "traffic": {"blue": "100"}},
     "request.traffic must map deployments to integer percentages"),
    ({"operation": "online_deployments.begin_create_or_update", "endpoint": "ep", "deployment": "d",
      "model": "churn-latest", "instance_type": "t"}, "request.model must be an azureml:<name>:<version>"),
    ({"operation": "online_deployments.begin_create_or_update", "endpoint": "ep", "deployment": "d",
      "model": "azureml:churn:7", "instance_type": "t", "traffic": 10}, "request.traffic must be 0"),
    ({"operation": "report.render", "name": "n", "window": {"model": "m", "deployment": "d", "bucket": "b",
                                                             "part": 0}}, "request.window.bucket must be an integer"),
    ({"operation": "notify", "channel": "c", "event": "e", "approvers": "ana"},
     "request.approvers must be a list of strings"),
    ({"operation": "jobs.delete"}, "'jobs.delete' is not one of"),
    ({}, "None: request.operation None is not one of"),
    ({"operation": ["notify"]}, "is not one of"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_a_malformed_request_is_refused_naming_its_field(stored, message):
    with pytest.raises(RequestError) as caught:
        parse_request(stored)
    assert message in str(caught.value)


def test_a_dispatcher_reads_only_its_own_kinds():
    scale = Scale(endpoint="ep", deployment="blue", instance_count=2).to_json()
    notice = EXAMPLES[7].to_json()

    assert isinstance(parse_request(scale, AzureMLRequest), Scale)
    with pytest.raises(RequestError, match="'notify' is not one of batch_deployments.begin_create_or_update, "
                                           "batch_endpoints.set_default, jobs.create_or_update, "):
        parse_request(notice, AzureMLRequest)
    with pytest.raises(RequestError, match="'online_deployments.scale' is not one of alert.signals, "
                                           "labelling.export, report.render"):
        parse_request(scale, LocalRequest)


@pytest.mark.parametrize("text, expected", [
    ("azureml:churn:7", AssetRef("churn", "7")),
    ("churn:7", AssetRef("churn", "7")),
    (" azureml:credit-risk:12 ", AssetRef("credit-risk", "12")),
    ("/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/w/models/churn"
     "/versions/7", AssetRef("churn", "7")),
    ("azureml://registries/shared/models/churn/versions/7", AssetRef("churn", "7")),
    ("/subscriptions/s/.../MODELS/churn/Versions/7/", AssetRef("churn", "7")),
    ("azureml:churn@latest", None),
    ("azureml:churn", None),
    ("https://store.blob.core.windows.net/ref/data.csv", None),
    ("data/reference.csv", None),
    ("", None),
    (None, None),
    (7, None),
])
def test_an_asset_reference_has_one_parser(text, expected):
    assert AssetRef.parse(text) == expected


def test_an_asset_reference_formats_as_azure_ml_takes_it_and_as_people_read_it():
    ref = AssetRef("churn", "7")
    assert (ref.uri, str(ref)) == ("azureml:churn:7", "churn:7")
    assert AssetRef.parse(ref.uri) == AssetRef.parse(str(ref)) == ref


def test_shadow_mode_keeps_the_verdict_and_what_it_would_have_opened_and_opens_nothing():
    job = EXAMPLES[0]
    review = ReviewDraft(kind=ReviewKind.DRIFT, approvers=("ana@contoso.com",), quorum=1, ttl=timedelta(days=7))
    verdict = Verdict(Outcome.RETRAIN, "drifted", model="churn", evidence={"share": 0.5}, tasks=(job,),
                      reviews=(review,))

    held = shadowed(verdict)

    assert (held.outcome, held.tasks, held.reviews) == (Outcome.RETRAIN, (), ())
    assert held.reason == "drifted (shadow mode: nothing dispatched)"
    assert held.evidence == {"share": 0.5, "shadow": {
        "tasks": [{"kind": "retraining", "target": job.target, "request": job.to_json()}],
        "reviews": [{"kind": "drift", "approvers": ["ana@contoso.com"]}]}}


def test_shadow_mode_leaves_a_verdict_that_opens_nothing_as_it_is():
    verdict = Verdict(Outcome.REJECT, "gates failed", model="churn")
    assert shadowed(verdict) is verdict


@pytest.mark.parametrize("started, status, held", [
    ([], "", None),
    ([(NOW - timedelta(hours=1), "job-1")], "Running", "joined the retraining already running (job-1, Running)"),
    ([(NOW - timedelta(hours=1), "job-1")], "queued", "joined the retraining already running"),
    ([(NOW - timedelta(hours=1), "job-1")], "Completed", "cooldown after job-1 until 2026-11-22T15:00"),
    ([(NOW - timedelta(hours=6), "job-1")], "Completed", None),  # the cooldown ends at six hours exactly
    ([(NOW - timedelta(hours=7), "job-2"), (NOW - timedelta(hours=20), "job-1")], "Failed",
     "daily budget of 2 retrainings reached"),
    ([(NOW - timedelta(hours=7), "job-2"), (NOW - timedelta(hours=24), "job-1")], "Failed", None),
])
def test_the_storm_guard_holds_back_a_retraining_for_a_running_job_a_cooldown_or_a_spent_budget(started, status,
                                                                                                   held):
    found = storm_guard(started, status, NOW, cooldown_hours=6, daily_budget=2)
    assert (found is None) if held is None else (found is not None and found[0].startswith(held))


@pytest.mark.parametrize("source, message", [
    ("azureml:churn-reference@latest", "pin a data asset version"),
    ("azureml:churn-reference:latest", "pin a data asset version"),
    ("azureml:churn-reference", "expected azureml:<name>:<version>"),
    ("azureml:a:b:c", "expected azureml:<name>:<version>"),
])
def test_a_reference_data_asset_must_name_a_pinned_version(source, message):
    from controlplane.drift import ReferenceCache, ReferenceLoadError

    with pytest.raises(ReferenceLoadError, match=message):
        ReferenceCache().load(source, loader_for_azureml=lambda asset: pytest.fail("nothing is read"))


def test_a_pinned_data_asset_is_read_once_per_version(tmp_path):
    from controlplane.drift import ReferenceCache

    (tmp_path / "reference.csv").write_text("age\n1.0\n2.0\n")
    reads = []
    cache = ReferenceCache()

    def loader(asset):
        reads.append(asset)
        return tmp_path / "reference.csv"

    for _ in range(3):
        assert list(cache.load("azureml:churn-reference:3", loader_for_azureml=loader)["age"]) == [1.0, 2.0]
    assert reads == ["azureml:churn-reference:3"]

"""MLOps v2 end to end over simulated workspaces, with the shipped policy: a version registered in dev is shared to
the registry, staged and tested in staging, approved, and rolled out in prod from the registry; a batch model is
tried on a sample in staging and becomes prod's default on approval, and an alert switches the default back.
Every workspace, and the registry, is a file of its own, recording what the real adapter would send."""
from __future__ import annotations

import copy
import json
from dataclasses import replace

import pytest

from controlplane.adapters.routing import RoutingDispatcher
from controlplane.adapters.simulated import SimulatedWorkspace
from controlplane.adapters.workspaces import simulated_workspaces
from controlplane.domain.ledger import Outcome, TaskKind, TaskState
from controlplane.domain.reviews import ReviewKind, ReviewState
from controlplane.domain.rollout import RolloutState
from controlplane.handlers.alerts import receive_alert
from controlplane.handlers.dispatch_azureml import AzureMLDispatcher
from controlplane.handlers.registry import receive_registry_event
from controlplane.handlers.reviews import approval_link, vote
from controlplane.handlers.sweep import sweep
from tests.fakes import RecordingDispatcher
from tests.support import load_event

WORKSPACE = ("/subscriptions/3f9c2b7e-5a41-4d8e-9b6a-2c7e1f04a9d3/resourceGroups/rg-ml/providers/"
             "Microsoft.MachineLearningServices/workspaces/{}")
REGISTRY = "mlops-registry"
RESULTS = {"auc": "0.8412", "tpr_gap": "0.1200", "missing_rate_max": "0.0100",
           "p95_latency_ms": "180.0000", "error_rate": "0.0000"}


@pytest.fixture
def topology(services, tmp_path):
    """The shipped policy's dev, staging and prod (home) workspaces, simulated, behind the Azure ML dispatcher."""
    home = SimulatedWorkspace(tmp_path / "simulated-workspace.json", services.clock)
    workspaces = simulated_workspaces(home, str(home.path), services.policy.document.environments, services.clock)
    routes = dict.fromkeys((TaskKind.PROMOTION, TaskKind.ROLLBACK, TaskKind.SCALE, TaskKind.TRAFFIC),
                           AzureMLDispatcher(home, services.clock, workspaces))
    wired = replace(services, gateway=home, health=home, workspaces=workspaces, approval_key=b"k" * 32,
                    dispatcher=RoutingDispatcher(routes, RecordingDispatcher()))
    return wired, {name: workspaces.gateway(name) for name in ("dev", "staging", "prod")}


def registered(services, dev, model, version, **tags):
    dev.register_model(model, version, registered_by="alice@contoso.com")
    event = copy.deepcopy(load_event("eg_model_registered_sdk.json"))
    event["id"], event["topic"] = f"reg-{model}-{version}", WORKSPACE.format("mlw-dev")
    event["data"].update(modelName=model, modelVersion=version, modelTags=tags)
    return receive_registry_event(services, event)


def run_ended(services, job, status="Completed", tags=None, properties=None, event_id=None):
    """The test job's end, as the staging workspace's subscription delivers it."""
    event = copy.deepcopy(load_event("eg_run_completed_docs.json"))[0]
    event["id"] = event_id or f"end-{job}-{status}"
    event["topic"] = WORKSPACE.format("mlw-staging")
    if status != "Completed":
        event["eventType"] = "Microsoft.MachineLearningServices.RunStatusChanged"
        event["data"]["RunStatus"] = status
    event["data"].update(RunId=job, ExperimentName="retention-test-stage", RunTags=tags or {},
                         RunProperties=properties or {})
    return receive_registry_event(services, event)


def approve_all(services, review, *approvers):
    for approver in approvers:
        link = approval_link(services, review.id, approver)
        vote(services, review.id, token=link.split("#token=", 1)[1], decision="approve")


def registry_models(tmp_path):
    return json.loads((tmp_path / f"simulated-registry-{REGISTRY}.json").read_text())["models"]


def operations(workspace):
    return [request["operation"] for request in workspace.requests()]


def test_a_dev_version_is_shared_staged_tested_approved_and_rolled_out_in_prod_from_the_registry(topology,
                                                                                                   tmp_path):
    services, ws = topology
    ws["prod"].seed_endpoint("retention-ep", "blue", "azureml:retention:6")
    ws["prod"].set_health("retention-ep", "blue", 400, 100.0, 0.001)

    decision = registered(services, ws["dev"], "retention", "7", auc="0.86")
    assert decision.outcome is Outcome.PROMOTE and decision.evidence["environment"] == "dev"
    sweep(services)

    # shared once to the registry, deployed in staging from it at 0%, then the test pipeline submitted there
    assert "retention:7" in registry_models(tmp_path)
    assert operations(ws["dev"]).count("models.share") == 1
    staged = ws["staging"].get_endpoint("retention-ep")
    [deployment] = staged.deployments
    assert deployment.model == f"azureml://registries/{REGISTRY}/models/retention/versions/7"
    assert staged.traffic == {deployment.name: 0}
    test_job = ws["staging"].get_job(f"{deployment.name}-test")
    assert test_job.tags["controlplane.stage"] == "test" and test_job.tags["controlplane.version"] == "7"
    assert test_job.tags["controlplane.correlation_id"] == decision.correlation_id
    assert ws["prod"].get_endpoint("retention-ep").traffic == {"blue": 100}  # prod untouched so far

    # the job reports two results on its run; the rest are read from the job in the staging workspace
    ws["staging"].set_job_properties(test_job.name, {k: v for k, v in RESULTS.items() if k not in ("auc",)})
    ended = run_ended(services, test_job.name, tags={**test_job.tags, "auc": RESULTS["auc"]})
    assert ended.outcome is Outcome.REQUEST_APPROVAL, ended.reason
    assert ended.correlation_id == decision.correlation_id  # one trace from registration to production
    assert ended.evidence["test_stage"]["results"]["p95_latency_ms"] == 180.0
    assert all(gate["passed"] for gate in ended.evidence["test_stage"]["gates"])
    again = run_ended(services, test_job.name, status="Completed", tags=test_job.tags, event_id="redelivered")
    assert again.outcome is Outcome.NO_ACTION and ended.id in again.reason  # Azure ML says it twice: once decided

    [review] = [r for r in services.store.reviews() if r.kind is ReviewKind.PROMOTION]
    assert review.evidence["test_stage"]["job"] == test_job.name and review.quorum == 2
    approve_all(services, review, "ana@contoso.com", "bo@contoso.com")
    for _ in range(12):
        sweep(services)
        ws["prod"].set_health("retention-ep", deployment.name, 400, 100.0, 0.001)
        services.clock.advance(minutes=31)
        [rollout] = services.store.rollouts(model="retention")
        if rollout.state is RolloutState.COMPLETED:
            break
    assert rollout.state is RolloutState.COMPLETED and rollout.environment is None  # prod is the home workspace
    live = ws["prod"].get_endpoint("retention-ep")
    assert live.traffic[deployment.name] == 100
    served = next(d for d in live.deployments if d.name == deployment.name)
    assert served.model == f"azureml://registries/{REGISTRY}/models/retention/versions/7"
    assert "retention-ep" not in json.loads((tmp_path / "simulated-workspace.dev.json").read_text())["endpoints"]


def test_failing_results_reject_and_a_silent_test_stage_goes_to_people_after_its_deadline(topology):
    services, ws = topology
    registered(services, ws["dev"], "retention", "8", auc="0.9")
    registered(services, ws["dev"], "retention", "9", auc="0.9")
    sweep(services)
    jobs = {version: next(j for j in json.loads(ws["staging"].path.read_text())["jobs"]
                          if ws["staging"].get_job(j).tags.get("controlplane.version") == version)
            for version in ("8", "9")}

    failing = {**RESULTS, "tpr_gap": "0.4500"}
    rejected = run_ended(services, jobs["8"], tags={**ws["staging"].get_job(jobs["8"]).tags, **failing})
    assert rejected.outcome is Outcome.REJECT and rejected.reviews == ()
    assert rejected.reason.endswith("tpr_gap 0.45 fails tpr_gap <= 0.3")

    services.clock.advance(hours=5)
    sweep(services)
    assert not services.store.decisions(event_types=("promotion.test_overdue",))  # 6 h not yet passed
    services.clock.advance(hours=2)
    sweep(services)
    sweep(services)  # the deadline is decided once
    [overdue] = services.store.decisions(event_types=("promotion.test_overdue",))
    assert overdue.version == "9" and overdue.outcome is Outcome.INCONCLUSIVE
    assert f"test stage job {jobs['9']} of retention:9 gave no result within 6 h" in overdue.reason
    assert overdue.reviews[0].state is ReviewState.OPEN


def test_a_failed_test_job_rejects_the_candidate(topology):
    services, ws = topology
    registered(services, ws["dev"], "retention", "10", auc="0.9")
    sweep(services)
    [job] = json.loads(ws["staging"].path.read_text())["jobs"]
    failed = run_ended(services, job, status="Failed", tags=ws["staging"].get_job(job).tags)
    assert failed.outcome is Outcome.REJECT and failed.reason.endswith("failed: not promoted further")


def test_a_version_registered_in_staging_is_recorded_not_promoted(topology):
    services, ws = topology
    event = copy.deepcopy(load_event("eg_model_registered_sdk.json"))
    event["id"], event["topic"] = "reg-in-staging", WORKSPACE.format("mlw-staging")
    event["data"].update(modelName="retention", modelVersion="11", modelTags={"auc": "0.95"})
    decision = receive_registry_event(services, event)
    assert decision.outcome is Outcome.NO_ACTION and decision.evidence["environment"] == "staging"
    assert decision.tasks == ()


def test_a_batch_model_is_tried_on_a_sample_made_the_default_on_approval_and_switched_back_on_an_alert(topology):
    services, ws = topology
    prod = ws["prod"]
    prod.create_batch_endpoint("demand-batch")
    prod.register_model("demand-forecast", "2", registered_by="carla@contoso.com")
    from controlplane.ports.gateway import BatchDeploymentRequest
    prod.deploy_batch(BatchDeploymentRequest("demand-batch", "old-default", "azureml:demand-forecast:2", "cpu"))
    prod.set_batch_default("demand-batch", "old-default")

    decision = registered(services, ws["dev"], "demand-forecast", "3", mape="0.09")
    assert decision.outcome is Outcome.PROMOTE
    sweep(services)
    staging = ws["staging"].get_batch_endpoint("demand-batch")
    [tried] = staging.deployments
    assert tried.model == f"azureml://registries/{REGISTRY}/models/demand-forecast/versions/3"
    scoring = ws["staging"].get_job(f"{tried.name}-score")
    invoked = [r for r in ws["staging"].requests() if r["operation"] == "batch_endpoints.invoke"]
    assert invoked[0]["input"] == "azureml:demand-sample@latest" and invoked[0]["deployment"] == tried.name
    assert scoring.properties["controlplane.stage"] == "test"  # a batch job carries its marks as properties

    ended = run_ended(services, scoring.name, properties=scoring.properties)
    assert ended.outcome is Outcome.REQUEST_APPROVAL, ended.reason
    [review] = [r for r in services.store.reviews() if r.kind is ReviewKind.PROMOTION]
    approve_all(services, review, "ana@contoso.com")
    sweep(services)
    [task] = [t for t in services.store.tasks() if t.kind is TaskKind.PROMOTION
              and t.request.get("stage") == "production"]
    assert services.store.task(task.id).state is TaskState.SUCCEEDED
    assert prod.get_batch_endpoint("demand-batch").default_deployment == tried.name
    assert services.store.task(task.id).result["previous_default"] == "old-default"

    alert = copy.deepcopy(load_event("alert_latency_blue_fired.json"))
    essentials = alert["data"]["essentials"]
    essentials["alertId"] = "/subscriptions/x/providers/Microsoft.AlertsManagement/alerts/batch-failures"
    essentials["alertRule"] = "latency-rollback"
    essentials["alertTargetIDs"] = [WORKSPACE.format("mlw-prod") + f"/batchEndpoints/demand-batch/deployments/"
                                    f"{tried.name}"]
    alert["data"]["alertContext"]["condition"]["allOf"][0]["metricName"] = "RequestLatency_P95"
    receipt = receive_alert(services, json.dumps(alert).encode())
    assert receipt.decision.outcome is Outcome.ROLLBACK, receipt.decision.reason
    assert f"switching batch endpoint demand-batch's default from {tried.name} back to old-default" in \
        receipt.decision.reason
    sweep(services)
    assert prod.get_batch_endpoint("demand-batch").default_deployment == "old-default"


def test_gated_ci_stages_only_once_approved_and_the_deadline_counts_from_the_approval(topology):
    from controlplane.domain.policy import parse_policy
    from tests.support import ROOT

    services, ws = topology
    shipped = (ROOT / "policy.yaml").read_text()
    gated = shipped.replace("      staging:\n        environment: staging\n        test:\n",
                            "      staging:\n        environment: staging\n"
                            "        approval: {approvers: [lead@contoso.com]}\n        test:\n", 1)
    services = replace(services, policy=parse_policy(gated))
    decision = registered(services, ws["dev"], "retention", "12", auc="0.9")
    assert decision.outcome is Outcome.REQUEST_APPROVAL
    sweep(services)
    assert not ws["staging"].path.exists()  # nothing staged yet: the staging workspace was never asked for anything

    services.clock.advance(hours=5)
    [review] = decision.reviews
    approve_all(services, review, "lead@contoso.com")
    sweep(services)
    [job] = json.loads(ws["staging"].path.read_text())["jobs"]
    assert ws["staging"].get_job(job).tags["controlplane.stage"] == "test"
    services.clock.advance(hours=5)  # 10 h since registration, 5 h since the approval: not overdue
    sweep(services)
    assert not services.store.decisions(event_types=("promotion.test_overdue",))
    ended = run_ended(services, job, tags={**ws["staging"].get_job(job).tags, **RESULTS})
    assert ended.outcome is Outcome.REQUEST_APPROVAL and ended.reviews[0].evidence["stage"] == "production"


def test_a_step_of_the_test_job_carrying_its_tags_decides_nothing_and_the_job_itself_still_does(topology):
    services, ws = topology
    registered(services, ws["dev"], "retention", "13", auc="0.9")
    sweep(services)
    [job] = json.loads(ws["staging"].path.read_text())["jobs"]
    tags = {**ws["staging"].get_job(job).tags, **RESULTS}
    step = run_ended(services, "evaluate_holdout_step_9f2a", tags=tags)
    assert step.outcome is Outcome.NO_ACTION and "not the test stage's own job" in step.reason
    assert run_ended(services, job, tags=tags).outcome is Outcome.REQUEST_APPROVAL

"""Windows past the function's bound are checked in full by an Azure ML job over the captured telemetry: the window's
decision hands it to the job, and the job's end (its verdict in the run's tags) decides the window as the function's
own check would."""
from __future__ import annotations

import copy
import json
from dataclasses import replace

import pytest

from controlplane.domain.ledger import Outcome, TaskKind
from controlplane.domain.requests import CheckDrift, parse_request
from controlplane.handlers.registry import receive_registry_event
from controlplane.ports.gateway import JobInfo
from tests import test_drift_flow as flow
from tests.support import load_event
from tests.test_drift_flow import FEATURES, policy_text, send

diabetes, wire = flow.diabetes, flow.wire  # the drift flow's fixtures

CAPTURE = "azureml://datastores/telemetry_capture/paths/evhns-cp/telemetry/"


def job_policy(reference, over=100, extra=""):
    return policy_text(reference) + f"      azureml: {{over_records: {over}, compute: cpu-cluster{extra}}}\n"


@pytest.fixture
def deferred(wire, diabetes):
    """A window of 150 records (over the 100 the function checks) handed to the job."""
    services, _ = wire(job_policy, diabetes[diabetes.age < 50])
    services = replace(services, telemetry_capture=CAPTURE)
    [decision] = send(services, diabetes[diabetes.age >= 50].head(150)).windows
    return services, decision


def job_ended(services, decision, status="Completed", event_id="job-end", **verdict):
    [task] = decision.tasks
    request = parse_request(task.request, CheckDrift)
    event = copy.deepcopy(load_event("eg_run_completed_docs.json"))[0]
    event["id"] = event_id
    if status != "Completed":
        event["eventType"] = "Microsoft.MachineLearningServices.RunStatusChanged"
        event["data"]["RunStatus"] = status
    tags = {**request.tags, **{f"controlplane.drift.{name}": value for name, value in verdict.items()}}
    event["data"].update(RunId=request.name, ExperimentName=request.experiment_name, RunTags=tags, RunProperties={})
    return receive_registry_event(services, event)


def test_a_window_past_the_bound_is_handed_to_a_job_over_the_captured_telemetry(deferred):
    services, decision = deferred
    assert decision.outcome is Outcome.NO_ACTION
    assert "is checked in full by Azure ML job drift-diabetes-" in decision.reason and "over 100" in decision.reason
    [task] = decision.tasks
    assert task.kind is TaskKind.DRIFT
    request = parse_request(task.request, CheckDrift)
    window = decision.evidence["window"]
    assert request.inputs["telemetry"] == CAPTURE and request.compute == "cpu-cluster"
    assert (request.inputs["model"], request.inputs["deployment"]) == ("diabetes", "blue")
    assert (request.inputs["start"], request.inputs["end"]) == (window["start"], window["end"])
    assert request.inputs["reference"].endswith("reference.csv")
    settings = json.loads(request.inputs["settings"])
    assert settings["columns"] == {c: "numerical" for c in FEATURES} and settings["methods"] == {"numerical": "ks"}
    assert "sample_bound" not in settings  # the job checks every record of the window
    assert request.tags["controlplane.stage"] == "drift" and request.tags["controlplane.window"] == "diabetes/blue/" \
        f"{window['bucket']}.{window['part']}"
    assert decision.evidence["deferred"]["job"] == request.name


def test_the_jobs_drift_verdict_decides_the_window_and_a_classical_model_is_retrained(deferred):
    services, decision = deferred
    ended = job_ended(services, decision, dataset_drift="true", drifted="age,bp", share="0.25", rows="150",
                      reason="dataset drift: 2 of 8 columns drifted at alpha 0.05")
    assert ended.outcome is Outcome.RETRAIN, ended.reason
    assert "checked by Azure ML job drift-diabetes-" in ended.reason
    assert ended.evidence["drift"]["drifted"] == ["age", "bp"] and ended.evidence["drifted"] is True
    assert ended.evidence["signal"]["drifted_columns"] == ["age", "bp"]
    again = job_ended(services, decision, event_id="again", dataset_drift="true")
    assert again.outcome is Outcome.NO_ACTION and ended.id in again.reason  # decided once per job


def test_no_drift_leaves_the_window_calm(deferred):
    services, decision = deferred
    calm = job_ended(services, decision, dataset_drift="false", rows="150", reason="no dataset drift")
    assert calm.outcome is Outcome.NO_ACTION and calm.evidence["drifted"] is False and calm.tasks == ()


def test_a_failed_job_leaves_the_window_inconclusive(deferred):
    services, decision = deferred
    failed = job_ended(services, decision, status="Failed")
    assert failed.outcome is Outcome.INCONCLUSIVE and failed.reason.endswith(" failed")


def test_a_job_that_reported_no_verdict_leaves_the_window_inconclusive(deferred):
    services, decision = deferred
    silent = job_ended(services, decision)  # no verdict on the event, and the workspace knows no such job
    assert silent.outcome is Outcome.INCONCLUSIVE and "reported no verdict" in silent.reason


def test_the_verdict_is_read_from_the_job_when_the_event_lacks_it(wire, diabetes):
    services, _ = wire(job_policy, diabetes[diabetes.age < 50])
    services = replace(services, telemetry_capture=CAPTURE)
    [decision] = send(services, diabetes[diabetes.age >= 50].head(150)).windows
    name = parse_request(decision.tasks[0].request, CheckDrift).name
    services.gateway.jobs[name] = JobInfo(name, "Completed", "drift-check", tags={
        "controlplane.drift.dataset_drift": "true", "controlplane.drift.drifted": "age"})
    ended = job_ended(services, decision)
    assert ended.outcome is Outcome.RETRAIN and ended.evidence["drift"]["drifted"] == ["age"]


def test_without_a_capture_the_function_checks_the_sample_and_says_why(wire, diabetes):
    services, _ = wire(job_policy, diabetes[diabetes.age < 50])
    [decision] = send(services, diabetes[diabetes.age >= 50].head(150)).windows
    assert decision.outcome is Outcome.RETRAIN  # the function's own check, on the window's sample
    assert "CONTROLPLANE_TELEMETRY_CAPTURE" in decision.evidence["job_skipped"]


def test_a_window_within_the_bound_is_checked_by_the_function(wire, diabetes):
    services, _ = wire(lambda r: job_policy(r, over=1_000), diabetes[diabetes.age < 50])
    services = replace(services, telemetry_capture=CAPTURE)
    [decision] = send(services, diabetes[diabetes.age >= 50].head(150)).windows
    assert decision.outcome is Outcome.RETRAIN and "deferred" not in decision.evidence


def test_the_adapter_builds_the_drift_job_with_the_reference_and_the_capture_as_data_inputs(deferred):
    from controlplane.adapters.azureml import AzureMLGateway
    from controlplane.ports.gateway import PipelineRequest
    from tests.support import ROOT

    _, decision = deferred
    request = parse_request(decision.tasks[0].request, CheckDrift)
    job = AzureMLGateway._pipeline_from_yaml(PipelineRequest(
        name=request.name, experiment=request.experiment_name, source=str(ROOT / "pipelines" / "drift-check.yml"),
        inputs=dict(request.inputs)))
    reference, telemetry = job.inputs.reference._data, job.inputs.telemetry._data
    assert (reference.type, reference.path) == ("uri_file", request.inputs["reference"])  # uploaded with the job
    assert (telemetry.type, telemetry.path) == ("uri_folder", CAPTURE)
    assert job.inputs.model._data == "diabetes" and json.loads(job.inputs.settings._data)["alpha"] == 0.05


def test_a_step_of_the_drift_job_carrying_its_tags_decides_nothing(deferred):
    services, decision = deferred
    [task] = decision.tasks
    request = parse_request(task.request, CheckDrift)
    event = copy.deepcopy(load_event("eg_run_completed_docs.json"))[0]
    event["data"].update(RunId="drift_check_step_4c1e", RunTags={**request.tags, "controlplane.drift.dataset_drift":
                                                                   "true"}, RunProperties={})
    step = receive_registry_event(services, event)
    assert step.outcome is Outcome.NO_ACTION and f"not the drift check job {request.name} itself" in step.reason
    assert job_ended(services, decision, dataset_drift="true").outcome is Outcome.RETRAIN

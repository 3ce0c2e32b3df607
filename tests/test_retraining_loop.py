"""The loop back to people after a retraining: the job the control plane submitted reports its end through Event
Grid (the own-runs subscription), and its data scientists hear of it under the drift decision's correlation id."""
from __future__ import annotations

import copy

import pytest

from controlplane.domain.ledger import Outcome, TaskKind
from controlplane.domain.requests import CORRELATION_TAG
from controlplane.domain.reviews import ReviewKind, ReviewState
from controlplane.handlers.registry import receive_registry_event
from tests.support import load_event


def retrained(services):
    """A monitor breach on churn: the retraining decision and the job it submits (the request as stored)."""
    decision = receive_registry_event(services, load_event("eg_monitor_breach.json")[0])
    [task] = [t for t in decision.tasks if t.kind is TaskKind.RETRAINING]
    return decision, task.request["job"]


def run_event(job, status, event_id):
    """Azure ML's RunStatusChanged for the job, as Event Grid delivers it: the job's tags are its RunTags."""
    event = copy.deepcopy(load_event("eg_run_status_changed_docs.json")[0])
    event["id"] = event_id
    event["data"].update(RunId=job["name"], RunType="azureml.PipelineRun", RunStatus=status,
                         RunTags=dict(job["tags"]), ExperimentName="churn-retraining")
    return event


@pytest.mark.parametrize("status", ["Failed", "Canceled"])
def test_a_failed_retraining_opens_a_review_for_the_models_data_scientists(services, status):
    started, job = retrained(services)

    ended = receive_registry_event(services, run_event(job, status, "run-end-1"))

    assert (ended.outcome, ended.model) == (Outcome.REVIEW, "churn")
    assert ended.correlation_id == started.correlation_id == job["tags"][CORRELATION_TAG]
    [review] = ended.reviews
    # policy.yaml names no owners for churn's retraining: the alerts' ml team reviews it
    assert (review.kind, review.state, review.approvers) == (ReviewKind.OPERATION, ReviewState.OPEN,
                                                             ("ana@contoso.com",))
    assert review.evidence["job"] == job["name"] and review.evidence["status"] == status
    told = [t.request for t in ended.tasks if t.kind is TaskKind.NOTIFY]
    assert [n["channel"] for n in told] == ["data-scientists", "reviewers"]
    assert told[0]["event"] == "retraining.failed" and told[1]["review_id"] == review.id


def test_a_completed_retraining_tells_its_owners_and_hands_the_new_version_to_the_gates(services):
    from controlplane.domain.policy import parse_policy
    from tests.support import ROOT

    shipped = (ROOT / "policy.yaml").read_text()
    owned = shipped.replace("pipeline: pipelines/retrain-churn.yml",
                            "pipeline: pipelines/retrain-churn.yml\n      owners: [dee@contoso.com]")
    assert owned != shipped
    services = type(services)(**{**vars(services), "policy": parse_policy(owned)})
    started, job = retrained(services)

    ended = receive_registry_event(services, run_event(job, "Completed", "run-end-2"))

    assert ended.outcome is Outcome.NOTIFY and not ended.reviews
    assert ended.evidence["owners"] == ["dee@contoso.com"] and ended.correlation_id == started.correlation_id
    [notice] = ended.tasks
    assert (notice.request["channel"], notice.request["event"]) == ("data-scientists", "retraining.completed")


def test_a_retraining_still_running_and_other_peoples_runs_are_only_recorded(services):
    _, job = retrained(services)
    running = receive_registry_event(services, run_event(job, "Running", "run-3"))
    foreign = load_event("eg_run_status_changed_docs.json")[0]
    foreign = {**foreign, "data": {**foreign["data"], "RunStatus": "Failed"}}
    assert running.outcome is Outcome.NO_ACTION and running.model == "churn"
    assert receive_registry_event(services, foreign).outcome is Outcome.NO_ACTION  # not a job the control plane began


def with_policy(services, old, new):
    from controlplane.domain.policy import parse_policy
    from tests.support import ROOT

    shipped = (ROOT / "policy.yaml").read_text()
    assert old in shipped
    return type(services)(**{**vars(services), "policy": parse_policy(shipped.replace(old, new, 1))})


def test_a_classical_models_drift_tells_the_channels_its_rule_names_even_when_the_retraining_is_held_back(services):
    services = with_policy(services, '  - name: "churn*"\n', '  - name: "churn*"\n    notify: [data-scientists]\n')
    first, _ = retrained(services)
    breach = copy.deepcopy(load_event("eg_monitor_breach.json")[0])
    breach["id"] = "a-second-breach"
    held = receive_registry_event(services, breach)  # within the cooldown: the storm guard holds it back

    assert first.outcome is Outcome.RETRAIN and held.outcome is Outcome.NO_ACTION and "held back" in held.reason
    for decision in (first, held):
        told = [t.request for t in decision.tasks if t.kind is TaskKind.NOTIFY]
        assert [(n["channel"], n["event"]) for n in told] == [("data-scientists", f"drift.{decision.outcome.value}")]
        assert decision.evidence["told"] == ["data-scientists"]


def test_approving_a_vision_drift_review_sends_the_labelled_data_back_to_a_retraining(services):
    from controlplane.handlers.reviews import approval_link, vote

    retraining = ("    retraining: {pipeline: pipelines/retrain-defects.yml, experiment: defect-retraining,\n"
                  "                 inputs: {images: azureml:defect-images@latest}}\n")
    project = "      labelling_project: defect-labelling\n"
    services = with_policy(services, project, project + retraining)
    services = type(services)(**{**vars(services), "approval_key": b"k" * 32})
    breach = copy.deepcopy(load_event("eg_monitor_breach.json")[0])
    breach["data"]["ExperimentName"] = "defect-detector-drift"
    drifted = receive_registry_event(services, breach)
    assert drifted.outcome is Outcome.REVIEW and drifted.model == "defect-detector"
    [review] = drifted.reviews
    assert review.evidence["labelled_data"] == "azureml:defect-labelling-labelling"

    token = approval_link(services, review.id, "vision-reviewers@contoso.com").split("#token=", 1)[1]
    _, approved = vote(services, review.id, token=token, decision="approve")

    assert approved.outcome is Outcome.RETRAIN and "back to model development" in approved.reason
    [job] = [t.request["job"] for t in approved.tasks if t.kind is TaskKind.RETRAINING]
    assert job["inputs"] == {"model_name": "defect-detector", "images": "azureml:defect-images@latest",
                             "labelled_data": "azureml:defect-labelling-labelling@latest"}
    assert job["tags"][CORRELATION_TAG] == drifted.correlation_id == approved.correlation_id


def test_a_completed_retraining_that_registers_nothing_in_time_is_reported_once(services, clock):
    from controlplane.handlers.retraining import UNREGISTERED
    from controlplane.handlers.sweep import sweep

    started, job = retrained(services)
    completed = receive_registry_event(services, run_event(job, "Completed", "run-end-4"))
    twice = receive_registry_event(services, {**run_event(job, "Completed", "run-end-5"),
                                              "eventType": "Microsoft.MachineLearningServices.RunCompleted"})
    assert completed.outcome is Outcome.NOTIFY and twice.outcome is Outcome.NO_ACTION  # told once
    clock.advance(hours=23)
    sweep(services)
    assert not services.store.decisions(model="churn", event_types=[UNREGISTERED])

    clock.advance(hours=2)
    sweep(services)
    sweep(services)
    [late] = services.store.decisions(model="churn", event_types=[UNREGISTERED])
    assert late.outcome is Outcome.NOTIFY and late.correlation_id == started.correlation_id
    assert late.evidence["job"] == job["name"] and "within 24 h" in late.reason
    assert [t.request["event"] for t in late.tasks] == ["retraining.unregistered"]


def test_a_retraining_whose_version_is_registered_in_time_is_not_reported(services, clock):
    from controlplane.handlers.retraining import UNREGISTERED
    from controlplane.handlers.sweep import sweep

    _, job = retrained(services)
    receive_registry_event(services, run_event(job, "Completed", "run-end-6"))
    clock.advance(hours=1)
    registered = copy.deepcopy(load_event("eg_model_registered_docs.json"))
    registered = registered[0] if isinstance(registered, list) else registered
    registered["eventTime"] = clock.now().isoformat().replace("+00:00", "Z")
    assert receive_registry_event(services, registered).model == "churn"
    clock.advance(hours=30)
    sweep(services)
    assert not services.store.decisions(model="churn", event_types=[UNREGISTERED])


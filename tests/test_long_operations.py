"""Long-running Azure ML operations are begun, recorded and watched by later sweeps; none is awaited.

A managed online deployment can take 15 minutes or more. These tests let provisioning take simulated time on
the control plane's clock and check that sweeps come back at once, that nothing is sent twice, that the work
goes on when Azure ML says it is done, and that a failure or a missed deadline dead-letters with a review.
"""
from __future__ import annotations

import time
from dataclasses import replace
from datetime import timedelta

import pytest

from controlplane.adapters.simulated import SimulatedWorkspace
from controlplane.domain.ledger import Outcome, Task, TaskKind, TaskState
from controlplane.domain.policy import parse_policy
from controlplane.domain.reviews import ReviewKind
from controlplane.domain.rollout import RolloutState
from controlplane.handlers.dispatch_azureml import AzureMLDispatcher
from controlplane.handlers.operations import DEADLINES
from controlplane.handlers.rollout import advance_rollouts, start_rollout
from controlplane.handlers.sweep import sweep
from tests.fakes import FakeWorkspace
from tests.test_azureml_dispatcher import staging_request, task_for

POLICY = """
models:
  - name: churn
    deployment:
      environment_variables: {MODEL_FLAVOUR: sklearn}
endpoints:
  churn-ep:
    auth_mode: aml_token
    deployment:
      scoring_script: score.py
      environment_variables: {LOG_LEVEL: info}
    rollout:
      mirror_percent: 20
      steps: [50, 100]
      interval_minutes: 30
"""


@pytest.fixture
def simulated(services, tmp_path):
    workspace = SimulatedWorkspace(tmp_path / "workspace.json", services.clock)
    workspace.seed_endpoint("churn-ep", "blue", "azureml:churn:3")
    workspace.set_provisioning(20 * 60)  # a new deployment takes 20 minutes to provision
    return replace(services, policy=parse_policy(POLICY), gateway=workspace, health=workspace), workspace


def rollout_task(services) -> Task:
    return Task(id="rollout-1", kind=TaskKind.ROLLOUT, target="azureml:endpoint/churn-ep", request={
        "operation": "rollout.start", "stage": "production", "endpoint": "churn-ep", "deployment": "churn-v4-green",
        "model": "azureml:churn:4", "approvers": ["ana@contoso.com"]}, decision_id="d", idempotency_key="k",
        created_at=services.clock.now(), due_at=services.clock.now(), model="churn")


def creates(workspace, name):
    return [r for r in workspace.requests()
            if r["operation"] == "online_deployments.begin_create_or_update" and r["name"] == name]


def test_a_deployment_provisioning_for_20_minutes_is_watched_by_sweeps_and_created_once(simulated):
    services, workspace = simulated
    start_rollout(services, rollout_task(services))
    slowest, states = 0.0, []
    # WHEN the sweep runs every minute while the deployment provisions
    for _ in range(25):
        began = time.perf_counter()
        advance_rollouts(services)
        slowest = max(slowest, time.perf_counter() - began)
        rollout = services.store.rollout("rollout-1")
        states.append("waiting" if rollout.waiting else rollout.state.value)
        services.clock.advance(minutes=1)
    # THEN it waited 20 minutes without sending anything again, then moved on to its first step
    assert states[:20] == ["waiting"] * 20 and states[-1] == "observing"
    assert len(creates(workspace, "churn-v4-green")) == 1
    assert slowest < 5.0  # no sweep waits on Azure ML: each only looks
    endpoint = workspace.get_endpoint("churn-ep")
    assert endpoint.mirror_traffic == {"churn-v4-green": 20} and endpoint.traffic["blue"] == 100
    decided = [d.reason for d in services.store.decisions(model="churn")]
    assert any("waits for deploy on churn-ep/churn-v4-green" in reason for reason in decided)


def test_the_new_deployment_carries_the_spec_of_the_one_it_replaces_and_the_policy(simulated):
    services, workspace = simulated
    workspace.deploy(replace(_blue(workspace), spec=_custom_spec()))  # blue serves a custom model
    workspace.set_provisioning(0)
    start_rollout(services, rollout_task(services))

    advance_rollouts(services)

    [sent] = creates(workspace, "churn-v4-green")
    assert sent["copied_from"] == "blue"
    assert sent["spec"] == {"environment": "azureml:churn-env:4", "code": "azureml:churn-score:2",
                            "scoring_script": "score.py",  # the policy's, over the copied one
                            "environment_variables": {"TELEMETRY_EVENTHUB_NAME": "telemetry", "LOG_LEVEL": "info",
                                                      "MODEL_FLAVOUR": "sklearn"},
                            "liveness_probe": {"initial_delay": 600}}


def _blue(workspace):
    from controlplane.ports.gateway import DeploymentRequest

    blue = workspace.get_deployment("churn-ep", "blue")
    return DeploymentRequest("churn-ep", "blue", blue.model, blue.instance_type, blue.instance_count)


def _custom_spec():
    from controlplane.ports.gateway import DeploymentSpec

    return DeploymentSpec(environment="azureml:churn-env:4", code="azureml:churn-score:2", scoring_script="old.py",
                          environment_variables={"TELEMETRY_EVENTHUB_NAME": "telemetry", "LOG_LEVEL": "warning"},
                          liveness_probe={"initial_delay": 600})


def test_an_absent_endpoint_is_created_with_the_policy_auth_mode_before_the_deployment(simulated, tmp_path):
    services, _ = simulated
    workspace = SimulatedWorkspace(tmp_path / "empty.json", services.clock)
    services = replace(services, gateway=workspace, health=workspace)
    start_rollout(services, rollout_task(services))

    advance_rollouts(services)

    operations = [r["operation"] for r in workspace.requests()]
    assert operations[:2] == ["online_endpoints.begin_create_or_update", "online_deployments.begin_create_or_update"]
    assert workspace.requests()[0]["auth_mode"] == "aml_token"


@pytest.fixture
def outbox(services):
    workspace = FakeWorkspace()
    workspace.serve("churn-ep", "blue", "azureml:churn:6")
    return replace(services, dispatcher=AzureMLDispatcher(workspace, services.clock)), workspace


def enqueue(services, task):
    services.store.outbox[task.id] = task
    return task


def test_a_staging_deployment_task_waits_while_provisioning_and_succeeds_after(outbox):
    services, workspace = outbox
    task = enqueue(services, task_for(staging_request()))
    workspace.provision("churn-ep", task.request["deployment"], "Creating", "Creating", "Creating", "Succeeded")

    first = sweep(services)
    waiting = services.store.task(task.id)
    assert first.waiting == 1 and waiting.state is TaskState.PENDING and waiting.result["waiting"]["kind"] == "deploy"
    assert waiting.attempts == 0 and waiting.due_at > services.clock.now()

    for _ in range(3):
        services.clock.advance(minutes=1)
        sweep(services)

    done = services.store.task(task.id)
    assert done.state is TaskState.SUCCEEDED and done.result["provisioning_state"] == "Succeeded"
    assert len(workspace.called("deploy")) == 1


def test_a_failed_deployment_dead_letters_the_task_with_azures_reason_and_opens_a_review(outbox):
    services, workspace = outbox
    task = enqueue(services, task_for(staging_request()))
    workspace.provision("churn-ep", task.request["deployment"], "Creating", "Failed",
                        error="provisioning failed; container log: No module named 'lightgbm'")

    sweep(services)
    services.clock.advance(minutes=1)
    sweep(services)

    dead = services.store.task(task.id)
    assert dead.state is TaskState.DEAD_LETTERED and "No module named 'lightgbm'" in dead.last_error
    [review] = services.store.reviews()
    assert review.kind is ReviewKind.OPERATION and "lightgbm" in review.evidence["error"]
    [decision] = [d for d in services.store.decisions() if d.event_type == "operation.failed"]
    assert decision.outcome is Outcome.REVIEW


def test_an_operation_past_its_deadline_is_given_up_with_a_review(outbox):
    services, workspace = outbox
    task = enqueue(services, task_for(staging_request()))
    workspace.provision("churn-ep", task.request["deployment"], "Creating")  # for ever

    sweep(services)
    services.clock.advance(minutes=DEADLINES["deploy"] / timedelta(minutes=1) + 1)
    sweep(services)

    dead = services.store.task(task.id)
    assert dead.state is TaskState.DEAD_LETTERED and "at its deadline" in dead.last_error
    assert [r.kind for r in services.store.reviews()] == [ReviewKind.OPERATION]


def test_a_rollout_whose_deployment_fails_pauses_with_a_review(simulated):
    services, workspace = simulated
    workspace.set_provisioning(60, fail_with="provisioning failed; container log: scoring script crashed")
    start_rollout(services, rollout_task(services))

    advance_rollouts(services)
    services.clock.advance(minutes=2)
    advance_rollouts(services)

    rollout = services.store.rollout("rollout-1")
    assert rollout.state is RolloutState.PAUSED and rollout.waiting is None
    [review] = services.store.reviews()
    assert review.kind is ReviewKind.OPERATION and "scoring script crashed" in review.evidence["error"]

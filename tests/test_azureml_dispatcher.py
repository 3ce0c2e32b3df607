"""The Azure ML dispatcher against an in-memory workspace: each task request becomes the right gateway call."""
from __future__ import annotations

import copy
import re
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from controlplane.adapters.clock import SystemClock
from controlplane.domain.errors import PermanentError
from controlplane.domain.ledger import Task, TaskKind, TaskState, digest
from controlplane.handlers.dispatch_azureml import AzureMLDispatcher
from controlplane.handlers.registry import receive_registry_event
from controlplane.handlers.sweep import sweep
from controlplane.ports.gateway import DeploymentRequest, PipelineRequest
from tests.fakes import FakeWorkspace as Workspace
from tests.support import load_event

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def task_for(request: dict, kind: TaskKind = TaskKind.PROMOTION, key: str = "test:1") -> Task:
    """A task as the store holds it: its request as stored JSON (hand-written here, malformed on purpose in
    some tests, as an old or hand-edited database may hold it)."""
    return Task(id=digest(key, length=24), kind=kind, target=f"azureml:{request.get('operation')}", request=request,
                decision_id=digest(key, length=24), idempotency_key=key, created_at=NOW, due_at=NOW, model="churn")


def staging_request(deployment: str = "churn-v7-0a1b2c3d4e5f", traffic: int = 0) -> dict:
    return {"operation": "online_deployments.begin_create_or_update", "stage": "staging", "endpoint": "churn-ep",
            "deployment": deployment, "model": "azureml:churn:7", "instance_type": "Standard_DS3_v2",
            "instance_count": 1, "traffic": traffic}


def retraining_task(services) -> Task:
    event = load_event("eg_monitor_breach.json")[0]
    [task] = receive_registry_event(services, event).tasks
    return task


@pytest.fixture
def workspace() -> Workspace:
    workspace = Workspace()
    workspace.serve("churn-ep", "blue", "azureml:churn:6")
    return workspace


def test_retraining_task_submits_the_pipeline_with_the_requests_name_experiment_source_inputs_compute_and_tags(
        services, workspace):
    task = retraining_task(services)
    job = task.request["job"]

    result = AzureMLDispatcher(workspace, SystemClock()).dispatch(task)

    [(_, submitted)] = workspace.called("submit_pipeline")
    assert submitted == PipelineRequest(name=job["name"], experiment=task.request["experiment_name"],
                                        source=job["source"], inputs=job["inputs"], compute=job["compute"],
                                        tags=job["tags"])
    assert result == {"job": job["name"], "status": "NotStarted", "created": True,
                      "studio_url": f"https://ml.azure.com/runs/{job['name']}"}


def test_a_repeated_retraining_dispatch_submits_once_and_reports_the_existing_job(services, workspace):
    task = retraining_task(services)
    dispatcher = AzureMLDispatcher(workspace, SystemClock())

    first, second = dispatcher.dispatch(task), dispatcher.dispatch(task)

    assert first["created"] is True and second["created"] is False
    assert first["job"] == second["job"] == task.request["job"]["name"]
    assert workspace.created == {task.request["job"]["name"]: 1} and len(workspace.jobs) == 1


def test_the_sweep_with_the_azureml_dispatcher_keeps_the_submitted_job_on_the_task(services, workspace):
    task = retraining_task(services)
    services = replace(services, dispatcher=AzureMLDispatcher(workspace, SystemClock()))

    report = sweep(services)

    stored = services.store.task(task.id)
    assert report.succeeded == 1 and stored.state is TaskState.SUCCEEDED
    assert stored.result["job"] == task.request["job"]["name"] and stored.result["created"] is True


def test_staging_promotion_deploys_the_requested_model_and_never_sets_traffic(workspace):
    request = staging_request()

    result = AzureMLDispatcher(workspace, SystemClock()).dispatch(task_for(request))

    [(_, deployed)] = workspace.called("deploy")
    # the spec the champion serves with is copied from its deployment
    assert deployed == DeploymentRequest(endpoint="churn-ep", name=request["deployment"], model="azureml:churn:7",
                                         instance_type="Standard_DS3_v2", instance_count=1, copy_from="blue")
    assert workspace.called("set_traffic") == []
    assert workspace.endpoints["churn-ep"].traffic == {"blue": 100}  # the champion keeps serving
    assert result["copied_from"] == "blue" and result["traffic"] == 0 and result["deployment"] == request["deployment"]
    assert result["model"] == "azureml:churn:7" and result["provisioning_state"] == "Succeeded"


def test_a_repeated_staging_dispatch_sends_nothing_again_and_still_leaves_traffic_alone(workspace):
    task = task_for(staging_request())
    dispatcher = AzureMLDispatcher(workspace, SystemClock())

    first, second = dispatcher.dispatch(task), dispatcher.dispatch(task)

    assert len(workspace.called("deploy")) == 1  # the second found the deployment in place
    assert first["deployment"] == second["deployment"] and second["provisioning_state"] == "Succeeded"
    assert [d.name for d in workspace.endpoints["churn-ep"].deployments] == ["blue", task.request["deployment"]]
    assert workspace.called("set_traffic") == []


def test_a_staging_dispatch_leaves_a_deployment_that_already_serves_traffic_as_it_is(workspace):
    workspace.serve("churn-ep", "churn-v7-0a1b2c3d4e5f", "azureml:churn:7")  # a rollout took it to 100%

    result = AzureMLDispatcher(workspace, SystemClock()).dispatch(task_for(staging_request("churn-v7-0a1b2c3d4e5f")))

    assert workspace.called("deploy") == [] and workspace.called("set_traffic") == []
    assert result["redeployed"] is False and result["traffic"] == 100
    assert workspace.endpoints["churn-ep"].traffic == {"churn-v7-0a1b2c3d4e5f": 100}


def test_a_staging_request_asking_for_traffic_is_refused_before_anything_is_sent(workspace):
    with pytest.raises(PermanentError, match="0% traffic, not 10%"):
        AzureMLDispatcher(workspace, SystemClock()).dispatch(task_for(staging_request(traffic=10)))
    assert workspace.calls == []


def test_scale_task_scales_the_named_deployment(workspace):
    request = {"operation": "online_deployments.scale", "endpoint": "churn-ep", "deployment": "blue",
               "instance_count": 4}

    result = AzureMLDispatcher(workspace, SystemClock()).dispatch(task_for(request, TaskKind.SCALE))

    assert workspace.called("scale") == [("scale", "churn-ep", "blue", 4)]
    assert result["deployment"] == "blue" and result["instance_count"] == 4


def test_rollback_task_sets_the_requested_traffic_and_mirror(workspace):
    workspace.set_traffic("churn-ep", {"blue": 0, "green": 100})
    workspace.calls.clear()
    request = {"operation": "online_endpoints.set_traffic", "endpoint": "churn-ep",
               "traffic": {"blue": 100, "green": 0}, "mirror": {"green": 10}}

    result = AzureMLDispatcher(workspace, SystemClock()).dispatch(task_for(request, TaskKind.ROLLBACK))

    assert workspace.called("set_traffic") == [("set_traffic", "churn-ep", {"blue": 100, "green": 0}, {"green": 10})]
    assert result == {"endpoint": "churn-ep", "traffic": {"blue": 100, "green": 0}, "mirror_traffic": {"green": 10},
                      "serving": "blue"}


def test_rollback_without_mirror_leaves_mirror_traffic_unchanged(workspace):
    workspace.set_traffic("churn-ep", {"blue": 0})
    workspace.calls.clear()
    request = {"operation": "online_endpoints.set_traffic", "endpoint": "churn-ep", "traffic": {"blue": 100}}

    AzureMLDispatcher(workspace, SystemClock()).dispatch(task_for(request, TaskKind.ROLLBACK))

    assert workspace.called("set_traffic") == [("set_traffic", "churn-ep", {"blue": 100}, None)]


@pytest.mark.parametrize("operation", ["rollout.start", "jobs.delete", None])
def test_an_unknown_operation_is_a_permanent_error_naming_it(workspace, operation):
    with pytest.raises(PermanentError, match=f"{re.escape(repr(operation))} is not one of"):
        AzureMLDispatcher(workspace, SystemClock()).dispatch(task_for({"operation": operation, "endpoint": "churn-ep"}))
    assert workspace.calls == []


def test_a_malformed_request_is_a_permanent_error_naming_the_field(services, workspace):
    task = retraining_task(services)
    request = copy.deepcopy(dict(task.request))
    del request["job"]["name"]

    with pytest.raises(PermanentError, match=r"request\.job\.name is missing"):
        AzureMLDispatcher(workspace, SystemClock()).dispatch(replace(task, request=request))
    assert workspace.calls == []


def test_a_malformed_request_is_dead_lettered_by_the_sweep_not_retried(services, workspace):
    task = retraining_task(services)
    broken = replace(task, request={**task.request, "job": "not-an-object"})
    services.store.update_task(task, broken)
    services = replace(services, dispatcher=AzureMLDispatcher(workspace, SystemClock()))

    sweep(services)

    stored = services.store.task(task.id)
    assert stored.state is TaskState.DEAD_LETTERED and "request.job must be an object" in stored.last_error


def test_an_endpoint_the_policy_puts_on_kubernetes_gets_kubernetes_deployments_created_there(tmp_path):
    from controlplane.adapters.simulated import SimulatedWorkspace
    from controlplane.domain.policy import parse_policy
    from controlplane.domain.promotion import staging_request as planned
    from controlplane.domain.requests import correlated
    from controlplane.ports.gateway import GatewayError

    policy = parse_policy("""
models:
  - name: churn
    promotion: {endpoint: churn-k8s, gates: {accuracy: ">= 0.8"}, staging: {instance_type: cpu-small}}
endpoints:
  churn-k8s: {compute: aks-prod}
""")
    request = planned(policy.rule_for("churn").promotion, "churn", "7", "ml:evt-7", policy)
    assert request.compute == "aks-prod"
    simulated = SimulatedWorkspace(tmp_path / "simulated.json")
    dispatcher = AzureMLDispatcher(simulated, SystemClock())
    for _ in range(3):  # the endpoint, then the deployment, each begun and looked at again
        dispatcher.dispatch(task_for(correlated(request, "corr-7"), key="ml:evt-7"))

    sent = {r["operation"]: r for r in simulated.requests()}
    assert sent["online_endpoints.begin_create_or_update"]["kind"] == "Kubernetes"
    assert sent["online_endpoints.begin_create_or_update"]["compute"] == "aks-prod"
    deployed = sent["online_deployments.begin_create_or_update"]
    assert (deployed["kind"], deployed["compute"], deployed["instance_type"]) == ("Kubernetes", "aks-prod", "cpu-small")
    with pytest.raises(GatewayError, match="Managed deployment cannot go on the Kubernetes endpoint"):
        simulated.deploy(DeploymentRequest("churn-k8s", "blue", "azureml:churn:6", "Standard_DS3_v2"))


def test_a_staging_task_resumed_from_before_the_model_was_kept_watches_its_own_version(workspace):
    from controlplane.handlers.operations import Operation
    from tests.fakes import FakeClock

    name = "churn-v7-0a1b2c3d4e5f"
    workspace.deploy(DeploymentRequest("churn-ep", name, "azureml:churn:7", "Standard_DS3_v2"))
    workspace.provision("churn-ep", name, "Creating", "Succeeded")
    waiting = Operation.begun("deploy", "churn-ep", name, NOW, model="azureml:churn:7", instance_count=1)
    task = replace(task_for(staging_request(name)), result={"waiting": waiting.to_json(), "state": "deploy"})
    before = len(workspace.called("deploy"))

    dispatcher = AzureMLDispatcher(workspace, FakeClock(NOW))
    still = dispatcher.dispatch(task)  # Creating: still watched, the workspace's own version kept for next time
    assert still["model"] == "azureml:churn:7" and still["waiting"]["deployment"] == name
    done = dispatcher.dispatch(replace(task, result=still))

    assert done["model"] == "azureml:churn:7" and done["provisioning_state"] == "Succeeded"
    assert len(workspace.called("deploy")) == before  # watched to its end, never begun again with another model

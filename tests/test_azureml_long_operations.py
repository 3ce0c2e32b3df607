"""Long-running Azure ML operations through the real adapter and SDK, answered at the HTTP boundary.

Azure ML answers a PUT on a deployment or endpoint with 201, ``Azure-AsyncOperation`` and the resource
``Creating`` or ``Updating``; the resource then moves through provisioning states over minutes. These tests script
those states over several sweeps (``tests.azure_http.AzureMLService``) and check that the control plane begins
each operation once, watches it sweep after sweep with reads only, goes on when Azure ML says ``Succeeded``, and
dead-letters with Azure's reason when it says ``Failed`` or when the operation outlives its deadline. Tasks come
from the use cases (a registry event, an alert, an approval), not from hand-written requests.
"""
from __future__ import annotations

import threading
import time
from dataclasses import replace
from datetime import timedelta

import pytest

from controlplane.adapters.azureml import AzureMLGateway
from controlplane.adapters.monitor_logs import MonitorLogsProbe
from controlplane.adapters.routing import RoutingDispatcher
from controlplane.domain.ledger import Outcome, TaskKind, TaskState
from controlplane.domain.reviews import ReviewKind
from controlplane.domain.rollout import RolloutState
from controlplane.handlers.alerts import receive_alert
from controlplane.handlers.dispatch_azureml import AzureMLDispatcher
from controlplane.handlers.operations import DEADLINES
from controlplane.handlers.registry import receive_registry_event
from controlplane.handlers.reviews import approval_link, vote
from controlplane.handlers.sweep import sweep
from tests.azure_http import GROUP, SUBSCRIPTION, WORKSPACE, AzureMLService, FixedCredential
from tests.fakes import RecordingDispatcher
from tests.support import ROOT, load_event

LOG = "loading model\nTraceback (most recent call last):\nModuleNotFoundError: No module named 'lightgbm'\n"


@pytest.fixture
def azure(clock):
    service = AzureMLService(clock)
    service.serve("churn-ep", {"blue": ("azureml:churn:3", 1), "green": ("azureml:churn:2", 2)}, {"blue": 100})
    service.add_model("churn", "3", {"accuracy": "0.90", "auc": "0.86"}, registered_by="dan@contoso.com")
    service.add_model("churn", "4", {"auc": "0.89"}, registered_by="alice@contoso.com")
    yield service
    service.close()


@pytest.fixture
def wired(services, azure):
    """The control plane with the real gateway over the HTTP boundary, routing Azure ML work as production does
    (``CONTROLPLANE_DISPATCH=azureml``); other tasks (notices) are recorded."""
    gateway = AzureMLGateway(SUBSCRIPTION, GROUP, WORKSPACE, credential=FixedCredential(), transport=azure.transport,
                             retry_total=0)
    azureml = AzureMLDispatcher(gateway, services.clock)
    routes = dict.fromkeys((TaskKind.PROMOTION, TaskKind.RETRAINING, TaskKind.ROLLBACK, TaskKind.SCALE), azureml)
    health = MonitorLogsProbe("00000000-aaaa-bbbb-cccc-000000000009", credential=FixedCredential(),
                              transport=azure.transport, retry_total=0)  # read only when a step is judged
    return replace(services, gateway=gateway, health=health,
                   dispatcher=RoutingDispatcher(routes, RecordingDispatcher()), approval_key=b"k" * 32)


def staging_task(services):
    decision = receive_registry_event(services, load_event("eg_model_registered_sdk.json"))
    assert decision.outcome is Outcome.REQUEST_APPROVAL, decision.reason
    [task] = [t for t in services.store.tasks() if t.kind is TaskKind.PROMOTION]
    return decision, task


def sweeps(services, task_id, count):
    """Run ``count`` sweeps a minute apart; the task's state and what it waits for after each."""
    seen = []
    for _ in range(count):
        sweep(services)
        task = services.store.task(task_id)
        waiting = task.result.get("waiting") if task.state is TaskState.PENDING else None
        seen.append((task.state.value, waiting["kind"] if waiting else None))
        services.clock.advance(minutes=1)
    return seen


def deployment_path(name):
    return f"/onlineEndpoints/churn-ep/deployments/{name}"


def test_a_staging_deployment_creating_then_updating_then_succeeded_is_put_once_and_watched(wired, azure):
    _, task = staging_task(wired)
    name = task.request["deployment"]
    azure.provision("churn-ep", name, "Creating", "Creating", "Updating", "Updating", "Succeeded")

    seen = sweeps(wired, task.id, 5)

    assert seen == [("pending", "deploy")] * 4 + [("succeeded", None)]
    [put] = [s for s in azure.transport.requests("PUT") if s.path.endswith(deployment_path(name))]
    assert put.body["properties"]["model"].endswith("/models/churn/versions/4") and put.body["sku"]["capacity"] == 1
    gets = [s for s in azure.transport.requests("GET") if s.path.endswith(deployment_path(name))]
    assert len(gets) >= 5  # each sweep looked at it again instead of sending it again
    done = wired.store.task(task.id)
    assert done.result["provisioning_state"] == "Succeeded" and done.result["model"] == "azureml:churn:4"
    assert put.body["properties"]["livenessProbe"]["initialDelay"] == "PT10M"  # blue's spec, copied
    assert {k: v for k, v in azure.endpoints["churn-ep"]["properties"]["traffic"].items() if v} == {"blue": 100}


def test_a_failed_deployment_is_dead_lettered_with_azures_reason_and_a_review(wired, azure):
    _, task = staging_task(wired)
    name = task.request["deployment"]
    azure.provision("churn-ep", name, "Creating", "Updating", "Failed", log=LOG)

    seen = sweeps(wired, task.id, 3)

    assert seen == [("pending", "deploy"), ("pending", "deploy"), ("dead_lettered", None)]
    dead = wired.store.task(task.id)
    assert "No module named 'lightgbm'" in dead.last_error and "deploy on churn-ep/" in dead.last_error
    assert azure.transport.one("POST", deployment_path(name) + "/getLogs")  # the container log was read for why
    [review] = [r for r in wired.store.reviews() if r.kind is ReviewKind.OPERATION]
    assert "lightgbm" in review.evidence["error"]
    assert len([s for s in azure.transport.requests("PUT") if s.path.endswith(deployment_path(name))]) == 1


def test_a_deployment_past_its_deadline_is_given_up(wired, azure):
    _, task = staging_task(wired)
    azure.provision("churn-ep", task.request["deployment"], "Creating")  # for ever

    sweep(wired)
    wired.clock.advance(minutes=DEADLINES["deploy"] / timedelta(minutes=1) - 1)
    sweep(wired)
    assert wired.store.task(task.id).state is TaskState.PENDING  # a minute before its deadline: still watched
    wired.clock.advance(minutes=2)
    sweep(wired)

    dead = wired.store.task(task.id)
    assert dead.state is TaskState.DEAD_LETTERED and "still creating at its deadline" in dead.last_error
    assert [r.kind for r in wired.store.reviews() if r.kind is ReviewKind.OPERATION] == [ReviewKind.OPERATION]


def test_an_alerts_scale_is_put_once_and_watched_while_updating(wired, azure):
    receipt = receive_alert(wired, (ROOT / "tests/events/alert_cpu_fired.json").read_bytes())
    assert receipt.decision.outcome is Outcome.SCALE, receipt.decision.reason
    [task] = [t for t in wired.store.tasks() if t.kind is TaskKind.SCALE]
    azure.provision("churn-ep", "green", "Updating", "Updating", "Updating", "Succeeded")

    seen = sweeps(wired, task.id, 4)

    assert seen == [("pending", "scale")] * 3 + [("succeeded", None)]
    [put] = [s for s in azure.transport.requests("PUT") if s.path.endswith(deployment_path("green"))]
    assert put.body["sku"]["capacity"] == 3  # the rule scales by one from 2
    assert put.body["properties"]["model"].endswith("/models/churn/versions/2")  # the rest unchanged
    assert wired.store.task(task.id).result["instance_count"] == 3


def approved(services, azure):
    """The staging deployment in place and the production promotion approved by two approvers."""
    _, task = staging_task(services)
    azure.provision("churn-ep", task.request["deployment"], "Creating", "Succeeded")
    sweeps(services, task.id, 2)
    [review] = [r for r in services.store.reviews() if r.kind is ReviewKind.PROMOTION]
    for approver in ("ana@contoso.com", "bo@contoso.com"):
        link = approval_link(services, review.id, approver)
        vote(services, review.id, token=link.split("token=", 1)[1], decision="approve")
    return task


def rollout_states(services, count):
    states = []
    for _ in range(count):
        sweep(services)
        [rollout] = services.store.rollouts()
        states.append("waiting" if rollout.waiting else rollout.state.value)
        services.clock.advance(minutes=1)
    return states


def test_a_rollouts_mirror_traffic_is_set_once_and_watched_while_the_endpoint_updates(wired, azure):
    task = approved(wired, azure)
    azure.provision("churn-ep", None, "Updating", "Updating", "Succeeded")
    before = len(azure.transport.requests("PUT"))

    states = rollout_states(wired, 6)

    # started by the sweep after the approval, which scales the staging deployment to the rollout's size (a
    # minute); then the endpoint Updating for two minutes; then the step is observed
    assert states == ["starting", "waiting", "waiting", "waiting", RolloutState.OBSERVING.value,
                      RolloutState.OBSERVING.value]
    assert any("waits for set_traffic on churn-ep" in d.reason for d in wired.store.decisions(limit=50))
    puts = azure.transport.requests("PUT")[before:]
    assert [s.path.rsplit("/", 2)[-2:] for s in puts] == [["deployments", task.request["deployment"]],
                                                          ["onlineEndpoints", "churn-ep"]]  # scaled, not redeployed
    assert puts[1].body["properties"]["mirrorTraffic"] == {task.request["deployment"]: 20}
    assert puts[1].body["properties"]["traffic"] == {"blue": 100}


def test_a_traffic_change_azure_fails_pauses_the_rollout_with_a_review(wired, azure):
    approved(wired, azure)
    azure.provision("churn-ep", None, "Updating", "Failed")

    states = rollout_states(wired, 4)

    assert states == ["starting", "waiting", "waiting", RolloutState.PAUSED.value]  # scaled, then traffic failed
    [review] = [r for r in wired.store.reviews() if r.kind is ReviewKind.OPERATION]
    assert review.evidence["error"] == "provisioning state failed"
    assert any("paused: set_traffic on churn-ep failed" in d.reason for d in wired.store.decisions(limit=50))
    assert len([s for s in azure.transport.requests("PUT") if s.path.endswith("/onlineEndpoints/churn-ep")]) == 1


def threads_started(monkeypatch) -> list[threading.Thread]:
    """Every thread started from now on, whether or not it is still running when looked at."""
    started: list[threading.Thread] = []
    start = threading.Thread.start

    def recorded(thread: threading.Thread) -> None:
        started.append(thread)
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", recorded)
    return started


def test_the_sdks_own_poller_follows_the_operation_with_reads_only_and_nothing_waits_for_it(wired, azure,
                                                                                            monkeypatch):
    from azure.ai.ml.constants._common import LROConfigurations

    monkeypatch.setattr(LROConfigurations, "POLL_INTERVAL", 0.05)  # Azure ML's is 5 s: the same loop, faster
    _, task = staging_task(wired)
    name = task.request["deployment"]
    azure.provision("churn-ep", name, "Creating", "Updating", "Succeeded")
    started = threads_started(monkeypatch)

    began = time.perf_counter()
    sweep(wired)  # begins the deployment and looks once: Creating
    took = time.perf_counter() - began

    [poller] = [t for t in started if t.name.startswith("LROPoller")]
    assert poller.daemon  # left behind by the adapter, polling on its own
    status = [s for s in azure.transport.sent if s.polled and "mfeOperationsStatus" in s.path]
    deadline = time.monotonic() + 10
    while not status and time.monotonic() < deadline:  # its first look, on its own thread
        poller.join(0.05)
        status = [s for s in azure.transport.sent if s.polled and "mfeOperationsStatus" in s.path]
    assert status and poller.is_alive()  # still InProgress: the poller goes on; the sweep did not wait for it
    for _ in range(2):
        wired.clock.advance(minutes=1)
        sweep(wired)  # Updating, then Succeeded
    poller.join(10)

    assert not poller.is_alive()  # it saw Succeeded and ended with a final read
    polled = [s for s in azure.transport.sent if s.polled]
    assert {s.method for s in polled} == {"GET"} and polled[-1].path.endswith(deployment_path(name))
    assert len([s for s in azure.transport.sent if s.method == "PUT"]) == 1
    assert wired.store.task(task.id).state is TaskState.SUCCEEDED
    assert took < 3.0


def test_the_poller_of_a_failed_operation_ends_without_anyone_hearing_of_it(wired, azure, monkeypatch):
    from azure.ai.ml.constants._common import LROConfigurations

    monkeypatch.setattr(LROConfigurations, "POLL_INTERVAL", 0.05)
    _, task = staging_task(wired)
    azure.provision("churn-ep", task.request["deployment"], "Creating", "Failed", log=LOG)
    started = threads_started(monkeypatch)
    sweep(wired)
    [poller] = [t for t in started if t.name.startswith("LROPoller")]

    wired.clock.advance(minutes=1)
    sweep(wired)  # the control plane reads Failed and dead-letters with the container log
    poller.join(10)

    assert not poller.is_alive()
    failed = [s for s in azure.transport.sent if s.polled and "mfeOperationsStatus" in s.path]
    assert failed  # it read the operation's Failed status, raised on its own thread, and ended
    assert wired.store.task(task.id).state is TaskState.DEAD_LETTERED
    assert "No module named 'lightgbm'" in wired.store.task(task.id).last_error

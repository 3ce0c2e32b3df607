"""The outbox under faults: a flaky workspace and a crash mid-dispatch lose no task and submit no job twice."""
from __future__ import annotations

import copy
import random
from collections import Counter
from dataclasses import replace

import pytest

from controlplane.adapters.clock import SystemClock
from controlplane.domain.errors import TransientError
from controlplane.domain.ledger import Task, TaskKind, TaskState
from controlplane.domain.policy import parse_policy
from controlplane.handlers.dispatch_azureml import AzureMLDispatcher
from controlplane.handlers.registry import receive_registry_event
from controlplane.handlers.sweep import sweep
from controlplane.ports.gateway import GatewayError, JobInfo, PipelineRequest
from tests.fakes import FakeWorkspace as Workspace
from tests.support import load_event

TASKS = 40


class FlakyWorkspace(Workspace):
    """Half of all submissions fail: a quarter before anything happens, a quarter after the job was created
    (the caller sees a timeout: the worst case), and a few are refused for good."""

    def __init__(self, rng: random.Random) -> None:
        super().__init__()
        self.rng = rng
        self.faults: Counter[str] = Counter()

    def submit_pipeline(self, request: PipelineRequest) -> JobInfo:
        roll = self.rng.random()
        if roll < 0.25:
            self.faults["unavailable"] += 1
            raise TransientError("submit_pipeline", "HTTP 503 service unavailable")
        if roll < 0.50:
            super().submit_pipeline(request)  # the job exists now...
            self.faults["timeout_after_create"] += 1
            raise TransientError("submit_pipeline", "read timed out")  # ...but the caller never hears of it
        if roll < 0.54:
            self.faults["refused"] += 1
            raise GatewayError("submit_pipeline", "compute cpu-cluster is being deleted", 400)
        return super().submit_pipeline(request)


class Crash(BaseException):
    """The process dies: nothing after the raise runs, not even the sweep's write."""


class DiesAfterDispatch:
    """Sends the task for real, then the process dies before the outcome is written."""

    name = "dies-after-dispatch"

    def __init__(self, inner: AzureMLDispatcher) -> None:
        self.inner = inner

    def dispatch(self, task: Task) -> dict:
        self.inner.dispatch(task)
        raise Crash(f"process died after dispatching {task.id}")


def open_retraining_tasks(services, count: int) -> list[Task]:
    """Monitor breaches with distinct event ids, through the real intake path: one retraining task each."""
    template = load_event("eg_monitor_breach.json")[0]
    tasks = []
    for n in range(count):
        event = copy.deepcopy(template)
        event["id"] = f"breach-{n:03d}"
        [task] = receive_registry_event(services, event).tasks
        assert task.kind is TaskKind.RETRAINING
        tasks.append(task)
    return tasks


def sweep_until_quiet(services, max_sweeps: int = 100) -> int:
    """Sweep, jump the clock to the next due task (past its backoff), and again until nothing is pending."""
    for sweeps in range(1, max_sweeps + 1):
        sweep(services)
        pending = services.store.tasks(TaskState.PENDING, 10_000)
        if not pending:
            return sweeps
        services.clock.moment = max(services.clock.now(), min(task.due_at for task in pending))
    raise AssertionError(f"tasks still pending after {max_sweeps} sweeps")


@pytest.fixture(params=["fake", "sqlite"])
def store_services(request, services, make_store):
    # Every breach must open a retraining here: the storm guard (tested elsewhere) is turned off.
    unguarded = parse_policy(GUARDLESS_POLICY)
    return replace(services, store=make_store(request.param), policy=unguarded)


GUARDLESS_POLICY = """
models:
  - name: churn
    retraining: {pipeline: pipelines/retrain-churn.yml, experiment: churn-retraining, cooldown_hours: 0,
                 daily_budget: 100000}
monitors: {churn-monitor: churn}
"""


def test_a_flaky_workspace_leaves_every_task_succeeded_or_dead_lettered_none_lost_no_job_submitted_twice(
        store_services):
    workspace = FlakyWorkspace(random.Random(20261122))
    services = replace(store_services, dispatcher=AzureMLDispatcher(workspace, SystemClock()))
    created = open_retraining_tasks(services, TASKS)

    sweep_until_quiet(services)

    tasks = services.store.tasks(limit=10_000)
    assert sorted(t.id for t in tasks) == sorted(t.id for t in created)  # none lost, none added
    states = Counter(t.state for t in tasks)
    assert set(states) <= {TaskState.SUCCEEDED, TaskState.DEAD_LETTERED}
    assert workspace.created and max(workspace.created.values()) == 1  # each job name created at most once
    for task in tasks:
        name = task.request["job"]["name"]
        if task.state is TaskState.SUCCEEDED:
            assert name in workspace.jobs and task.result["job"] == name
        else:
            assert task.last_error
    # The faults really happened, and the worst one converged through the job's deterministic name.
    assert workspace.faults["unavailable"] and workspace.faults["timeout_after_create"] and workspace.faults["refused"]
    assert states[TaskState.SUCCEEDED] and states[TaskState.DEAD_LETTERED]
    assert any(t.state is TaskState.SUCCEEDED and t.result["created"] is False and t.attempts > 1 for t in tasks)


def test_a_task_whose_dispatch_crashed_half_way_is_dispatched_again_and_finds_its_job(store_services):
    workspace = Workspace()
    [task] = open_retraining_tasks(store_services, 1)
    name = task.request["job"]["name"]

    with pytest.raises(Crash):
        sweep(replace(store_services, dispatcher=DiesAfterDispatch(AzureMLDispatcher(workspace, SystemClock()))))

    assert name in workspace.jobs  # the job was created...
    assert store_services.store.task(task.id) == task  # ...and the outbox never heard of it

    report = sweep(replace(store_services, dispatcher=AzureMLDispatcher(workspace, SystemClock())))  # a fresh process

    stored = store_services.store.task(task.id)
    assert report.succeeded == 1 and stored.state is TaskState.SUCCEEDED and stored.attempts == 1
    assert stored.result == {"job": name, "status": "NotStarted", "created": False,
                             "studio_url": f"https://ml.azure.com/runs/{name}"}
    assert len(workspace.called("submit_pipeline")) == 2 and workspace.created == {name: 1}

"""Progressive rollout after a production approval, against an in-memory workspace and scripted health."""
from __future__ import annotations

from dataclasses import replace

import pytest

from controlplane.domain.ledger import Outcome, Task, TaskKind
from controlplane.domain.policy import parse_policy
from controlplane.domain.refs import AssetRef
from controlplane.domain.rollout import RolloutState
from controlplane.domain.signals import DeploymentHealth
from controlplane.handlers.promotion import SETS_CHAMPION, find_champion
from controlplane.handlers.rollout import advance_rollouts, resume_rollout, start_rollout
from tests.fakes import FakeWorkspace

POLICY = """
models:
  - name: churn
endpoints:
  churn-ep:
    rollout:
      mirror_percent: 20
      steps: [10, 50, 100]
      interval_minutes: 30
      health: {min_requests: 50, max_latency_ratio: 1.5, max_error_rate: 0.01}
      old_deployment: scale_down
  quiet-ep:
    rollout:
      steps: [50, 100]
      when_no_data: wait
      max_waits: 1
"""


class ScriptedHealth:
    """Deployment health as a test scripts it; records every window asked about."""

    def __init__(self) -> None:
        self.figures: dict[str, DeploymentHealth] = {}
        self.asked: list[tuple] = []

    def set(self, deployment, requests, p95, error_rate):
        self.figures[deployment] = DeploymentHealth(deployment, requests, p95, error_rate)

    def deployment_health(self, endpoint, deployments, start, end):
        self.asked.append((endpoint, tuple(deployments), start, end))
        return {name: self.figures.get(name, DeploymentHealth(name, 0, None, None)) for name in deployments}


@pytest.fixture
def world(services):
    workspace, health = FakeWorkspace(), ScriptedHealth()
    workspace.serve("churn-ep", "blue", "azureml:churn:3")
    health.set("blue", 1000, 100.0, 0.001)
    services = replace(services, policy=parse_policy(POLICY), gateway=workspace, health=health)
    return services, workspace, health


def approve(services, endpoint="churn-ep", task_id="rollout-1"):
    task = Task(id=task_id, kind=TaskKind.ROLLOUT, target=f"azureml:endpoint/{endpoint}", request={
        "operation": "rollout.start", "stage": "production", "endpoint": endpoint, "deployment": "churn-v4-green",
        "model": "azureml:churn:4", "approvers": ["ana@contoso.com"], "correlation_id": "registered-churn-4"},
        decision_id="d", idempotency_key="k",
        created_at=services.clock.now(), due_at=services.clock.now(), model="churn")
    return start_rollout(services, task)


def step(services, minutes=31):
    services.clock.advance(minutes=minutes)
    return advance_rollouts(services)


def traffic(workspace, endpoint="churn-ep"):
    state = workspace.endpoints[endpoint]
    return ({k: v for k, v in state.traffic.items() if v}, dict(state.mirror_traffic))


def rollout_decisions(services):
    return [d for d in reversed(services.store.decisions(limit=100)) if d.event_type.startswith("rollout.")]


def test_a_healthy_rollout_goes_mirror_10_50_100_and_makes_the_model_champion(world):
    services, workspace, health = world
    assert approve(services)["steps"] == ["mirror 20%", "10%", "50%", "100%"]
    health.set("churn-v4-green", 400, 110.0, 0.002)

    advance_rollouts(services)  # starting: deploy, then mirror
    assert traffic(workspace) == ({"blue": 100}, {"churn-v4-green": 20})
    [deploy] = workspace.called("deploy")
    assert deploy[1].model == "azureml:churn:4" and deploy[1].instance_count == 2
    [rollout] = services.store.rollouts(limit=5)
    # the tags operators find it by in Azure ML: the rollout, and the correlation id of the approval that opened it
    assert deploy[1].tags == {"controlplane.rollout": rollout.id, "controlplane.correlation_id": "registered-churn-4"}
    assert {d.correlation_id for d in rollout_decisions(services)} == {"registered-churn-4"}

    assert advance_rollouts(services) == []  # the step is watched for its interval first
    step(services)
    assert traffic(workspace) == ({"blue": 90, "churn-v4-green": 10}, {})
    step(services)
    assert traffic(workspace) == ({"blue": 50, "churn-v4-green": 50}, {})
    step(services)
    assert traffic(workspace) == ({"churn-v4-green": 100}, {})
    step(services)  # 100% watched and healthy: done

    [rollout] = services.store.rollouts()
    assert rollout.state is RolloutState.COMPLETED
    assert workspace.called("scale") == [("scale", "churn-ep", "blue", 1)]
    assert workspace.models[("churn", "4")].stage == "Production"
    decisions = rollout_decisions(services)
    assert [d.outcome for d in decisions] == [Outcome.PROMOTE] * 5
    assert "step 2/4 10% after mirror 20% was healthy" in decisions[1].reason
    assert decisions[-1].evidence[SETS_CHAMPION] == "churn-ep"
    assert find_champion(replace(services, gateway=None), "churn-ep", "churn") == AssetRef("churn", "4")
    assert health.asked[0][1] == ("churn-v4-green", "blue")  # new against old over the step's window


def test_an_unhealthy_step_rolls_back_to_the_old_split_and_opens_a_review(world):
    services, workspace, health = world
    approve(services)
    health.set("churn-v4-green", 400, 110.0, 0.002)
    advance_rollouts(services)
    step(services)  # mirror healthy -> 10%
    health.set("churn-v4-green", 120, 480.0, 0.05)  # 4.8x slower and 5% errors at 10%
    step(services)

    assert traffic(workspace) == ({"blue": 100}, {})
    [rollout] = services.store.rollouts()
    assert rollout.state is RolloutState.ROLLED_BACK
    last = rollout_decisions(services)[-1]
    assert last.outcome is Outcome.ROLLBACK and "rolled back at 10%" in last.reason
    assert "4.80x the old deployment's 100 ms" in last.reason and "5xx rate 5.00% over 1.00%" in last.reason
    [review] = last.reviews
    assert review.approvers == ("ana@contoso.com",) and review.evidence["restored_traffic"] == {"blue": 100}
    assert step(services) == []  # a rolled-back rollout stays put


def test_no_traffic_pauses_and_notifies_and_never_promotes(world):
    services, workspace, _ = world
    approve(services)
    advance_rollouts(services)
    step(services)  # the mirror got no requests

    [rollout] = services.store.rollouts()
    assert rollout.state is RolloutState.PAUSED and traffic(workspace) == ({"blue": 100}, {"churn-v4-green": 20})
    last = rollout_decisions(services)[-1]
    assert last.outcome is Outcome.NOTIFY and "0 requests" in last.reason and "never promoted" in last.reason
    assert any(t.request.get("event") == "rollout.paused" for t in last.tasks)
    assert step(services, minutes=600) == [] and traffic(workspace)[0] == {"blue": 100}


def test_a_person_resumes_a_paused_rollout(world):
    services, workspace, health = world
    approve(services)
    advance_rollouts(services)
    step(services)
    resumed = resume_rollout(services, services.store.rollouts()[0].id)
    assert resumed.state is RolloutState.OBSERVING
    health.set("churn-v4-green", 400, 100.0, 0.0)
    step(services)
    assert traffic(workspace) == ({"blue": 90, "churn-v4-green": 10}, {})


def test_when_no_data_wait_watches_more_intervals_before_pausing(world):
    services, workspace, health = world
    workspace.serve("quiet-ep", "blue", "azureml:churn:3")
    approve(services, endpoint="quiet-ep", task_id="rollout-q")
    advance_rollouts(services)
    assert traffic(workspace, "quiet-ep") == ({"blue": 50, "churn-v4-green": 50}, {})
    step(services)  # no data: wait one more interval
    assert services.store.rollouts()[0].waits == 1
    assert step(services, minutes=10) == []  # the window is now two intervals long
    step(services, minutes=25)
    assert services.store.rollouts()[0].state is RolloutState.PAUSED


def test_a_crash_between_setting_traffic_and_recording_it_resumes_without_a_second_change(world):
    services, workspace, health = world
    approve(services)
    health.set("churn-v4-green", 400, 110.0, 0.002)
    advance_rollouts(services)
    store = services.store
    real_update = store.update_rollout
    crashed = []

    def crash_once(current, updated, decision):
        if not crashed:
            crashed.append(updated.step)
            raise SystemExit("the host died after changing traffic")
        return real_update(current, updated, decision)

    store.update_rollout = crash_once
    with pytest.raises(SystemExit):
        step(services)
    assert traffic(workspace) == ({"blue": 90, "churn-v4-green": 10}, {})  # traffic changed, not recorded
    calls_before = len(workspace.called("set_traffic"))

    step(services, minutes=1)  # the next sweep finds the step due and the traffic already set
    assert len(workspace.called("set_traffic")) == calls_before
    [rollout] = store.rollouts()
    assert rollout.step == 1 and rollout.state is RolloutState.OBSERVING
    assert rollout_decisions(services)[-1].evidence["traffic_already_set"] is True


def test_the_first_model_on_an_empty_endpoint_goes_straight_to_100(world):
    services, workspace, health = world
    workspace.endpoints.pop("churn-ep")
    approve(services)
    advance_rollouts(services)
    assert traffic(workspace) == ({"churn-v4-green": 100}, {})
    health.set("churn-v4-green", 400, 110.0, 0.0)
    step(services)
    assert services.store.rollouts()[0].state is RolloutState.COMPLETED


def test_starting_twice_opens_one_rollout_and_a_missing_workspace_waits(world):
    services, _, _ = world
    assert approve(services)["created"] is True and approve(services)["created"] is False
    assert advance_rollouts(replace(services, gateway=None)) == []
    assert services.store.rollouts()[0].state is RolloutState.STARTING


def test_a_staging_deployment_of_the_version_is_taken_forward_at_the_rollouts_size(world):
    services, workspace, health = world
    approve(services)
    [rollout] = services.store.rollouts(limit=5)
    from controlplane.ports.gateway import DeploymentRequest

    workspace.deploy(DeploymentRequest(endpoint="churn-ep", name=rollout.deployment, model="azureml:churn:4",
                                       instance_type="Standard_DS3_v2", instance_count=1))  # staging's, at 0%
    workspace.calls.clear()

    advance_rollouts(services)

    assert workspace.get_deployment("churn-ep", rollout.deployment).instance_count == 2  # the policy's size
    assert workspace.called("deploy") == []  # already in place: scaled, not redeployed

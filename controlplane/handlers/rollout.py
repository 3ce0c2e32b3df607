"""Progressive rollout: start after a production approval, then move step by step on health.

The sweep timer advances every active rollout once per run. Each move reads the endpoint first and
sets traffic only when it differs from the step's target, so a run that crashed after changing
traffic but before recording it resumes without changing traffic twice. Every move is a decision,
written with the rollout's new state in one conditional update.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from datetime import timedelta
from typing import Any

from controlplane.domain.errors import PermanentError, TransientError
from controlplane.domain.ledger import (
    Outcome,
    ReviewDraft,
    Task,
    Verdict,
)
from controlplane.domain.refs import AssetRef
from controlplane.domain.requests import CORRELATION_TAG, Notify, StartRollout, parse_request
from controlplane.domain.reviews import ReviewKind
from controlplane.domain.rollout import ACTIVE, Rollout, RolloutState, Step, baseline_of, judge, plan, target
from controlplane.handlers.operations import (
    NextStep,
    Operation,
    OperationFailed,
    deleted,
    deployment_in_place,
    endpoint_or_none,
    in_order,
    reconcile,
    scaled,
    traffic_matches,
    traffic_set,
)
from controlplane.handlers.promotion import SETS_CHAMPION
from controlplane.handlers.record import own_decision, recorded
from controlplane.ports.gateway import DeploymentRequest, DeploymentSpec, Gateway, registry_model
from controlplane.ports.store import Services

logger = logging.getLogger(__name__)

ROLLBACK_REVIEW_TTL = timedelta(hours=72)


def start_rollout(services: Services, task: Task) -> dict[str, Any]:
    """Open the rollout a production approval asked for (idempotent: the task id is the rollout id)."""
    request = parse_request(task.request, StartRollout)
    policy = services.policy.rollout_for(request.endpoint)
    model_ref = (registry_model(request.registry, request.model.name, request.model.version) if request.registry
                 else request.model.uri)
    rollout = Rollout(id=task.id, endpoint=request.endpoint, model=task.model, version=request.model.version,
                      deployment=request.deployment, model_ref=model_ref, environment=request.environment,
                      steps=plan(policy.mirror_percent, policy.steps),
                      policy={**policy.model_dump(), **services.policy.deployment_for(request.endpoint, task.model)},
                      created_at=services.clock.now(), approvers=request.approvers,
                      correlation_id=task.correlation_id)
    created = services.store.create_rollout(rollout)
    return {"rollout": rollout.id, "created": created, "steps": [str(step) for step in rollout.steps]}


def advance_rollouts(services: Services) -> list[str]:
    """Move every active rollout one step if it is due; a failing one waits for the next sweep."""
    moved = []
    for rollout in services.store.rollouts(ACTIVE, limit=100):
        try:
            if _advance(services, rollout):
                moved.append(rollout.id)
        except TransientError as error:
            logger.warning("rollout %s waits for the next sweep: %s", rollout.id, error)
        except OperationFailed as error:  # Azure ML failed what the rollout began: people look before it resumes
            review = ReviewDraft(kind=ReviewKind.OPERATION, approvers=rollout.approvers or ("ml-leads",), quorum=1,
                                 ttl=ROLLBACK_REVIEW_TTL, evidence={"rollout": rollout.id, "error": error.reason,
                                                                    "operation": error.operation.to_json()},
                                 separation_of_duties=False)
            _transition(services, rollout, replace(rollout, state=RolloutState.PAUSED, waiting=None), Outcome.REVIEW,
                        f"rollout of {_label(rollout)} paused: {error}", {"error": str(error)}, notify=True,
                        reviews=(review,))
            moved.append(rollout.id)
        except PermanentError as error:
            _transition(services, rollout, replace(rollout, state=RolloutState.PAUSED, waiting=None), Outcome.NOTIFY,
                        f"rollout of {_label(rollout)} paused: {error}", {"error": str(error)}, notify=True)
            moved.append(rollout.id)
    return moved


def resume_rollout(services: Services, rollout_id: str) -> Rollout:
    """A person resumes a paused rollout: its current step is watched for another interval."""
    rollout = services.store.rollout(rollout_id)
    if rollout is None or rollout.state is not RolloutState.PAUSED:
        raise PermanentError(f"rollout {rollout_id}", "is not paused")
    resumed = replace(rollout, state=RolloutState.OBSERVING if rollout.step >= 0 else RolloutState.STARTING,
                      applied_at=services.clock.now(), waits=0)
    _transition(services, rollout, resumed, Outcome.NO_ACTION, f"rollout of {_label(rollout)} resumed", {})
    return services.store.rollout(rollout_id)


def halt_rollout(services: Services, rollout: Rollout, why: str) -> None:
    """Stop a rollout whose deployment something else rolls back (an alert's incident), so that no sweep
    moves its traffic again; the caller restores the traffic. Re-reads when a sweep moved it meanwhile."""
    for _ in range(5):
        if rollout is None or rollout.state not in (*ACTIVE, RolloutState.PAUSED):
            return
        if _transition(services, rollout, replace(rollout, state=RolloutState.ROLLED_BACK), Outcome.ROLLBACK,
                       f"rollout of {_label(rollout)} on {rollout.endpoint} stopped at {rollout.current}: {why}",
                       {"stopped_by": why}):
            return
        rollout = services.store.rollout(rollout.id)
    raise TransientError(f"rollout {rollout.id}", "kept moving while it was being stopped")


def _gateway(services: Services, rollout: Rollout) -> Gateway:
    return services.gateway_in(rollout.environment)


def _advance(services: Services, rollout: Rollout) -> bool:
    if _gateway(services, rollout) is None or services.health is None:
        raise TransientError("rollouts", "no Azure ML workspace or health probe is configured")
    if rollout.waiting:
        return _resume(services, rollout)
    if rollout.state is RolloutState.STARTING:
        return _begin(services, rollout)
    policy, now = rollout.policy, services.clock.now()
    if now < rollout.applied_at + timedelta(minutes=policy["interval_minutes"]) * (1 + rollout.waits):
        return False
    old = rollout.old_deployment
    names = [rollout.deployment] + ([old] if old else [])
    health = services.health.deployment_health(rollout.endpoint, names, rollout.applied_at, now)
    judgment = judge(policy["health"], health[rollout.deployment], health.get(old) if old else None)
    evidence = {"step": str(rollout.current), "judgment": judgment.verdict, "reasons": list(judgment.reasons),
                "window": [rollout.applied_at.isoformat(), now.isoformat()],
                "health": {name: vars(value) for name, value in health.items()}}
    if judgment.verdict == "unhealthy":
        return _rollback(services, rollout, evidence, "; ".join(judgment.reasons))
    if judgment.verdict == "no_data":
        if policy["when_no_data"] == "wait" and rollout.waits < policy["max_waits"]:
            return _transition(services, rollout, replace(rollout, waits=rollout.waits + 1), Outcome.NO_ACTION,
                               f"rollout of {_label(rollout)} at {rollout.current}: {judgment.reasons[0]}; "
                               "watching another interval", evidence)
        return _transition(services, rollout, replace(rollout, state=RolloutState.PAUSED), Outcome.NOTIFY,
                           f"rollout of {_label(rollout)} paused at {rollout.current}: {judgment.reasons[0]}; "
                           "never promoted without evidence", evidence, notify=True)
    if rollout.step == len(rollout.steps) - 1:
        return _complete(services, rollout, evidence)
    return _apply(services, rollout, rollout.step + 1, evidence)


def _resume(services: Services, rollout: Rollout) -> bool:
    """Pick up the phase that began an operation: watch it, and go on once it is done."""
    waiting = rollout.waiting
    phase, evidence = waiting["phase"], waiting.get("evidence", {})
    if phase == "begin":
        return _begin(services, rollout)
    if phase == "step":
        return _apply(services, rollout, waiting["step"], evidence)
    if phase == "complete":
        return _complete(services, rollout, evidence)
    return _rollback(services, rollout, evidence, waiting["why"])


def _operations(services: Services, current: Rollout, updated: Rollout, phase: str, next_step: NextStep,
                **context: Any) -> bool | None:
    """Drive a phase's Azure ML operations without waiting: None once they are done (the caller goes on);
    otherwise True when an operation was begun (recorded as a decision), False while one still runs."""
    pending = current.waiting if current.waiting and current.waiting["phase"] == phase else None
    running = Operation.from_json(pending["operation"]) if pending else None
    still = reconcile(_gateway(services, current), services.clock.now(), running, next_step)
    if still is None:
        return None
    if still == running:
        return False  # looked at, still running: nothing to record until it ends
    waiting = {"phase": phase, "operation": still.to_json(), **context}
    return _transition(services, current, replace(updated, waiting=waiting), Outcome.NO_ACTION,
                       f"rollout of {_label(updated)} on {updated.endpoint} waits for {still.kind} on {still.target} "
                       f"(deadline {still.deadline.isoformat(timespec='minutes')})", {"operation": still.to_json()})


def _begin(services: Services, rollout: Rollout) -> bool:
    policy, gateway, now = rollout.policy, _gateway(services, rollout), services.clock.now()
    state = endpoint_or_none(gateway, rollout.endpoint)
    serving = state.serving() if state is not None else None
    request = DeploymentRequest(
        endpoint=rollout.endpoint, name=rollout.deployment, model=rollout.model_ref,
        instance_type=policy["instance_type"], instance_count=policy["instance_count"],
        tags={"controlplane.rollout": rollout.id, CORRELATION_TAG: rollout.correlation_id},
        spec=DeploymentSpec.from_json(policy.get("spec")),
        copy_from=serving if serving != rollout.deployment else None, auth_mode=policy.get("auth_mode", "key"),
        compute=policy.get("compute"))
    # The staging deployment of this version, when there is one, is taken forward at the rollout's size.
    in_place = in_order(deployment_in_place(gateway, request, now),
                        scaled(gateway, rollout.endpoint, rollout.deployment, request.instance_count, now))
    waited = _operations(services, rollout, rollout, "begin", in_place)
    if waited is not None:
        return waited
    state = gateway.get_endpoint(rollout.endpoint)
    baseline = baseline_of(state.traffic, rollout.deployment)
    steps = rollout.steps if baseline else (Step("traffic", 100),)  # nothing serves yet: nothing to compare
    begun = replace(rollout, baseline=baseline, steps=steps, waiting=None,
                    old_deployment=max(baseline, key=baseline.__getitem__) if baseline else None)
    return _apply(services, begun, 0, {"baseline": baseline}, current_rollout=rollout)


def _apply(services: Services, rollout: Rollout, index: int, evidence: dict[str, Any],
           current_rollout: Rollout | None = None) -> bool:
    step = rollout.steps[index]
    live, mirror = target(step, rollout.deployment, rollout.baseline)
    current = current_rollout or rollout
    # set by an earlier run that crashed before recording it, unless it is this step's own operation that ended
    gateway = _gateway(services, rollout)
    already = current.waiting is None and traffic_matches(gateway.get_endpoint(rollout.endpoint), live, mirror)
    waited = _operations(services, current, rollout, "step", traffic_set(
        gateway, rollout.endpoint, live, mirror, services.clock.now()), step=index, evidence=evidence)
    if waited is not None:
        return waited
    moved = replace(rollout, state=RolloutState.OBSERVING, step=index, applied_at=services.clock.now(), waits=0,
                    waiting=None)
    evidence = {**evidence, "traffic": live, "mirror": mirror, "traffic_already_set": already}
    previous = f" after {rollout.current} was healthy ({evidence['reasons'][0]})" if evidence.get("reasons") else ""
    return _transition(services, current, moved, Outcome.PROMOTE,
                       f"rollout of {_label(rollout)} on {rollout.endpoint}: step {index + 1}/{len(rollout.steps)} "
                       f"{step}{previous}", evidence)


def _complete(services: Services, rollout: Rollout, evidence: dict[str, Any]) -> bool:
    old, policy, now = rollout.old_deployment, rollout.policy, services.clock.now()
    gateway = _gateway(services, rollout)
    retire = None
    if old and policy["old_deployment"] == "scale_down":
        retire = scaled(gateway, rollout.endpoint, old, 1, now)
    elif old and policy["old_deployment"] == "delete":
        retire = deleted(gateway, rollout.endpoint, old, now)
    if retire is not None:
        waited = _operations(services, rollout, rollout, "complete", retire, evidence=evidence)
        if waited is not None:
            return waited
    if rollout.model and rollout.version and rollout.model_ref == AssetRef(rollout.model, rollout.version).uri:
        # The workspace's own version is tagged; a registry's copy is not the workspace's to change.
        gateway.tag_model(rollout.model, rollout.version, {"controlplane.stage": "production",
                                                           "controlplane.endpoint": rollout.endpoint},
                          stage="Production")
    done = replace(rollout, state=RolloutState.COMPLETED, waiting=None)
    return _transition(services, rollout, done, Outcome.PROMOTE,
                       f"{_label(rollout)} serves 100% of {rollout.endpoint}; old deployment {old or '-'}: "
                       f"{policy['old_deployment'] if old else 'none'}", {**evidence, SETS_CHAMPION: rollout.endpoint},
                       notify=True)


def _rollback(services: Services, rollout: Rollout, evidence: dict[str, Any], why: str) -> bool:
    waited = _operations(services, rollout, rollout, "rollback", traffic_set(
        _gateway(services, rollout), rollout.endpoint, rollout.baseline, {}, services.clock.now()), evidence=evidence,
        why=why)
    if waited is not None:
        return waited
    review = ReviewDraft(kind=ReviewKind.PROMOTION, approvers=rollout.approvers or ("ml-leads",), quorum=1,
                         ttl=ROLLBACK_REVIEW_TTL, evidence={**evidence, "rollout": rollout.id,
                                                            "restored_traffic": dict(rollout.baseline)},
                         separation_of_duties=False)
    return _transition(services, rollout, replace(rollout, state=RolloutState.ROLLED_BACK, waiting=None),
                       Outcome.ROLLBACK, f"rollout of {_label(rollout)} rolled back at {rollout.current}: {why}",
                       {**evidence, "restored_traffic": dict(rollout.baseline)}, reviews=(review,))


def _transition(services: Services, current: Rollout, updated: Rollout, outcome: Outcome, reason: str,
                evidence: dict[str, Any], notify: bool = False, reviews: tuple[ReviewDraft, ...] = ()) -> bool:
    updated = replace(updated, revision=current.revision + 1)
    tasks = ()
    if notify:
        tasks = (Notify(channel="reviewers", event=f"rollout.{updated.state.value}",
                        subject=f"Rollout {updated.state.value}: {_label(updated)} on {updated.endpoint}",
                        text=reason),)
    verdict = Verdict(outcome, reason, model=updated.model, version=updated.version,
                      evidence={"rollout_id": updated.id, "state": updated.state.value, **evidence}, tasks=tasks,
                      reviews=reviews)
    decision = own_decision(services, verdict, key=f"rollout:{updated.id}:{updated.revision}", event_id=updated.id,
                            event_type=f"rollout.{updated.state.value}", correlation_id=updated.correlation_id)
    if not services.store.update_rollout(current, updated, decision):
        logger.info("rollout %s moved elsewhere meanwhile; this sweep leaves it", current.id)
        return False
    recorded(decision)
    return True


def _label(rollout: Rollout) -> str:
    return f"{rollout.model or '-'}:{rollout.version or '-'}"

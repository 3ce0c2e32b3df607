"""Long-running Azure ML operations: begun by one invocation, watched by the sweeps after it, never awaited.

Creating a deployment can take 15 minutes or more; endpoint creation, scaling, traffic changes and deletions
take seconds to minutes. A function that waited would block its timer and, past ``functionTimeout``, be
restarted and send the request again. So a caller states what it wants as steps, each of which reads the
workspace and either finds its part done or begins the operation that does it (``reconcile``). A begun
operation is looked at once; still running, it is returned as an ``Operation`` the caller keeps (on the
outbox task or the rollout) and hands back on the next sweep, which looks again instead of sending again.
A failed operation, or one past its deadline, raises ``OperationFailed`` with Azure's reason.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from controlplane.domain.errors import OperationFailed, PermanentError
from controlplane.ports.gateway import (
    BatchDeploymentRequest,
    BatchEndpointState,
    DeploymentInfo,
    DeploymentRequest,
    EndpointState,
    Gateway,
    NotFound,
)

# Past these, an operation is given up on: Azure ML's own timeouts are in the same range.
DEADLINES = {
    "create_endpoint": timedelta(minutes=30),
    "deploy": timedelta(minutes=90),
    "scale": timedelta(minutes=45),
    "set_traffic": timedelta(minutes=20),
    "delete_deployment": timedelta(minutes=30),
    "create_batch_endpoint": timedelta(minutes=30),
    "deploy_batch": timedelta(minutes=60),
    "set_batch_default": timedelta(minutes=20),
}
POLL_EVERY = timedelta(minutes=1)
_MAX_STEPS = 8  # steps one reconcile may take when each finishes at once (simulated and fake workspaces)
_FAILED = frozenset({"failed", "canceled", "cancelled"})


@dataclass(frozen=True)
class Operation:
    """One begun operation: what, on which endpoint and deployment, since when, until when, what done means."""

    kind: str
    endpoint: str
    deployment: str | None
    started_at: datetime
    deadline: datetime
    expect: Mapping[str, Any] = field(default_factory=dict)

    @staticmethod
    def begun(kind: str, endpoint: str, deployment: str | None, now: datetime, **expect: Any) -> Operation:
        return Operation(kind, endpoint, deployment, now, now + DEADLINES[kind], expect)

    @property
    def target(self) -> str:
        return f"{self.endpoint}/{self.deployment}" if self.deployment else self.endpoint

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "endpoint": self.endpoint, "deployment": self.deployment,
                "started_at": self.started_at.isoformat(), "deadline": self.deadline.isoformat(),
                "expect": dict(self.expect)}

    @staticmethod
    def from_json(data: Mapping[str, Any] | None) -> Operation | None:
        if not data:
            return None
        return Operation(data["kind"], data["endpoint"], data.get("deployment"),
                         datetime.fromisoformat(data["started_at"]), datetime.fromisoformat(data["deadline"]),
                         dict(data.get("expect") or {}))


Step = Callable[[], Operation]


def reconcile(gateway: Gateway, now: datetime, running: Operation | None,
              next_step: Callable[[], Step | None]) -> Operation | None:
    """Move towards what ``next_step`` wants without waiting: the operation still running, or None when every
    step is done. ``next_step`` reads the workspace and returns the step that begins the next operation, or
    None when nothing is left to do."""
    if running is not None and not finished(gateway, running, now):
        return running
    for _ in range(_MAX_STEPS):
        step = next_step()
        if step is None:
            return None
        operation = step()
        if not finished(gateway, operation, now):
            return operation
    raise PermanentError("workspace", f"did not reach the wanted state after {_MAX_STEPS} operations")


def finished(gateway: Gateway, operation: Operation, now: datetime) -> bool:
    """True once the operation succeeded, False while it runs; ``OperationFailed`` when it failed or is late."""
    state, error = _state(gateway, operation)
    if state in _FAILED:
        raise OperationFailed(operation, error or f"provisioning state {state}")
    if state == "succeeded":
        return True
    if now >= operation.deadline:
        raise OperationFailed(operation, f"still {state or 'not started'} at its deadline "
                                         f"{operation.deadline.isoformat(timespec='minutes')}")
    return False


def _state(gateway: Gateway, operation: Operation) -> tuple[str, str]:
    """(lower-cased state, error) of what the operation changes, where 'succeeded' means it is as expected."""
    expect = operation.expect
    if operation.kind in ("create_batch_endpoint", "set_batch_default"):
        batch = batch_endpoint_or_none(gateway, operation.endpoint)
        if batch is None:
            return "creating", ""
        state = batch.provisioning_state.lower()
        if state == "succeeded" and operation.kind == "set_batch_default" and (
                batch.default_deployment != expect["default"]):
            return "updating", ""
        return state, ""
    if operation.kind == "deploy_batch":
        try:
            batch_deployment = gateway.get_batch_deployment(operation.endpoint, operation.deployment or "")
        except NotFound:
            return "failed", f"batch deployment {operation.deployment} is gone from {operation.endpoint}"
        return batch_deployment.provisioning_state.lower(), batch_deployment.error
    if operation.kind in ("create_endpoint", "set_traffic"):
        endpoint = endpoint_or_none(gateway, operation.endpoint)
        if endpoint is None:
            return "creating", ""
        state = endpoint.provisioning_state.lower()
        if (state == "succeeded" and operation.kind == "set_traffic"
                and not traffic_matches(endpoint, expect["traffic"], expect.get("mirror"))):
            return "updating", ""
        return state, ""
    try:
        deployment = gateway.get_deployment(operation.endpoint, operation.deployment or "")
    except NotFound:
        if operation.kind == "delete_deployment":
            return "succeeded", ""
        return "failed", f"deployment {operation.deployment} is gone from {operation.endpoint}"
    state = deployment.provisioning_state.lower()
    if operation.kind == "delete_deployment" and state not in _FAILED:
        return "deleting", ""
    if state == "succeeded" and deployment.instance_count != expect.get("instance_count", deployment.instance_count):
        return "scaling", ""
    return state, deployment.error


def endpoint_or_none(gateway: Gateway, name: str) -> EndpointState | None:
    try:
        return gateway.get_endpoint(name)
    except NotFound:
        return None


def batch_endpoint_or_none(gateway: Gateway, name: str) -> BatchEndpointState | None:
    try:
        return gateway.get_batch_endpoint(name)
    except NotFound:
        return None


def traffic_matches(state: EndpointState, traffic: Mapping[str, int], mirror: Mapping[str, int] | None) -> bool:
    """Whether live traffic (and mirror traffic, unless None) is as wanted, zero shares aside."""
    return _nonzero(state.traffic) == _nonzero(traffic) and (
        mirror is None or _nonzero(state.mirror_traffic) == _nonzero(mirror))


def _nonzero(shares: Mapping[str, int]) -> dict[str, int]:
    return {name: share for name, share in dict(shares).items() if share}


# -- steps: each reads the workspace and returns what begins the next operation, or None when its part is done --

NextStep = Callable[[], Step | None]


def in_order(*steps: NextStep) -> NextStep:
    """The first step not done yet, in the order given."""
    def next_step() -> Step | None:
        return next((step for step in (s() for s in steps) if step is not None), None)
    return next_step


def deployment_in_place(gateway: Gateway, request: DeploymentRequest, now: datetime) -> NextStep:
    """The endpoint exists (created with the request's auth mode) and the deployment serves the request's model."""
    def create_endpoint() -> Operation:
        gateway.create_endpoint(request.endpoint, request.auth_mode, request.compute)
        return Operation.begun("create_endpoint", request.endpoint, None, now, auth_mode=request.auth_mode)

    def deploy() -> Operation:
        gateway.deploy(request)
        return Operation.begun("deploy", request.endpoint, request.name, now, model=request.model,
                               instance_count=request.instance_count)

    def watch(current: DeploymentInfo) -> Step:
        return lambda: Operation.begun("deploy", request.endpoint, request.name, now, model=request.model,
                                       instance_count=current.instance_count)

    return _deployment_step(lambda: endpoint_or_none(gateway, request.endpoint) is not None, create_endpoint,
                            lambda: gateway.get_deployment(request.endpoint, request.name), deploy, watch,
                            request.model)


def _deployment_step(endpoint_exists: Callable[[], bool], create_endpoint: Step,
                     current: Callable[[], DeploymentInfo], deploy: Step, watch: Callable[[DeploymentInfo], Step],
                     model: str) -> NextStep:
    """The endpoint created, then the deployment serving ``model``; one being provisioned already (a sweep that
    began it crashed before recording it) is watched, not begun again."""
    def next_step() -> Step | None:
        if not endpoint_exists():
            return create_endpoint
        try:
            found = current()
        except NotFound:
            return deploy
        state = found.provisioning_state.lower()
        if found.model != model or state in _FAILED:
            return deploy
        return None if state == "succeeded" else watch(found)
    return next_step


def scaled(gateway: Gateway, endpoint: str, deployment: str, instance_count: int, now: datetime) -> NextStep:
    def scale() -> Operation:
        gateway.scale(endpoint, deployment, instance_count)
        return Operation.begun("scale", endpoint, deployment, now, instance_count=instance_count)

    def next_step() -> Step | None:
        current = gateway.get_deployment(endpoint, deployment)
        state = current.provisioning_state.lower()
        if current.instance_count != instance_count or state in _FAILED:
            return scale
        return None if state == "succeeded" else (
            lambda: Operation.begun("scale", endpoint, deployment, now, instance_count=instance_count))
    return next_step


def deleted(gateway: Gateway, endpoint: str, deployment: str, now: datetime) -> NextStep:
    def delete() -> Operation:
        gateway.delete_deployment(endpoint, deployment)
        return Operation.begun("delete_deployment", endpoint, deployment, now)

    def next_step() -> Step | None:
        try:
            current = gateway.get_deployment(endpoint, deployment)
        except NotFound:
            return None
        if current.provisioning_state.lower() == "deleting":
            return lambda: Operation.begun("delete_deployment", endpoint, deployment, now)
        return delete
    return next_step


def traffic_set(gateway: Gateway, endpoint: str, traffic: Mapping[str, int], mirror: Mapping[str, int] | None,
                now: datetime) -> NextStep:
    def set_traffic() -> Operation:
        gateway.set_traffic(endpoint, traffic, mirror)
        return Operation.begun("set_traffic", endpoint, None, now, traffic=dict(traffic),
                               mirror=dict(mirror) if mirror is not None else None)

    def next_step() -> Step | None:
        return None if traffic_matches(gateway.get_endpoint(endpoint), traffic, mirror) else set_traffic
    return next_step


def batch_deployment_in_place(gateway: Gateway, request: BatchDeploymentRequest, now: datetime) -> NextStep:
    """The batch endpoint exists and the batch deployment scores with the request's model."""
    def create_endpoint() -> Operation:
        gateway.create_batch_endpoint(request.endpoint)
        return Operation.begun("create_batch_endpoint", request.endpoint, None, now)

    def deploy() -> Operation:
        gateway.deploy_batch(request)
        return Operation.begun("deploy_batch", request.endpoint, request.name, now, model=request.model)

    return _deployment_step(lambda: batch_endpoint_or_none(gateway, request.endpoint) is not None, create_endpoint,
                            lambda: gateway.get_batch_deployment(request.endpoint, request.name), deploy,
                            lambda _: lambda: Operation.begun("deploy_batch", request.endpoint, request.name, now,
                                                              model=request.model), request.model)


def batch_default_set(gateway: Gateway, endpoint: str, deployment: str, now: datetime) -> NextStep:
    """The batch endpoint's default deployment is ``deployment``."""
    def switch() -> Operation:
        gateway.set_batch_default(endpoint, deployment)
        return Operation.begun("set_batch_default", endpoint, None, now, default=deployment)

    def next_step() -> Step | None:
        return None if gateway.get_batch_endpoint(endpoint).default_deployment == deployment else switch
    return next_step

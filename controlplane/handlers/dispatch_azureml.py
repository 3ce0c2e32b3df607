"""Azure ML dispatcher: sends retraining, staging, scale and rollback tasks to a workspace through the Gateway port.

Each task holds a typed request (``controlplane.domain.requests``); the dispatcher turns it into gateway calls
and returns what the workspace answered, which the outbox keeps as the task's result:

    SubmitPipeline -> submit_pipeline   (retraining)
    DeployModel    -> deploy            (staging promotion, at 0% traffic)
    Scale          -> scale
    SetTraffic     -> set_traffic
    RollBack       -> scale the previous deployments back up, then set_traffic

Exactly-once rests on the names in the requests, not on anything kept here: a job or deployment name derived
from the idempotency key makes a repeated dispatch (after a timeout, a crash or a replay) find what the first
one created instead of starting another. A staging deployment takes no traffic: the endpoint's traffic is
never touched for it, and a deployment that already receives traffic (a rollout took it further) is left as
it is rather than redeployed at staging's size. A malformed request or an unknown operation is a
``PermanentError``, so the task is dead-lettered with the reason instead of being retried.

Deployments, scaling and traffic changes are long-running in Azure ML: the dispatcher begins them and answers
``{"waiting": <operation>}`` at once; the sweep keeps the task pending with that operation and hands it back on
its next run, when the dispatcher looks at the workspace again instead of sending anything again. A failed
operation, or one past its deadline, raises ``OperationFailed``: dead-lettered with Azure's reason.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from controlplane.domain.ledger import Task
from controlplane.domain.requests import (
    AzureMLRequest,
    DeployModel,
    Request,
    RollBack,
    Scale,
    SetTraffic,
    SubmitPipeline,
    parse_request,
)
from controlplane.handlers.operations import (
    NextStep,
    Operation,
    deployment_in_place,
    endpoint_or_none,
    in_order,
    reconcile,
    scaled,
    traffic_set,
)
from controlplane.ports.gateway import DeploymentRequest, DeploymentSpec, Gateway, PipelineRequest
from controlplane.ports.store import Clock


class AzureMLDispatcher:
    name = "azureml"

    def __init__(self, gateway: Gateway, clock: Clock) -> None:
        self._gateway, self._clock = gateway, clock
        self._operations: dict[type[Request], Callable[[Any, Operation | None], dict]] = {
            SubmitPipeline: self._submit_job, DeployModel: self._deploy, Scale: self._scale,
            SetTraffic: self._set_traffic, RollBack: self._rollback}

    def dispatch(self, task: Task) -> dict:
        request = parse_request(task.request, AzureMLRequest)
        return self._operations[type(request)](request, Operation.from_json(task.result.get("waiting")))

    def _drive(self, running: Operation | None, next_step: NextStep, done: Callable[[], dict]) -> dict:
        still = reconcile(self._gateway, self._clock.now(), running, next_step)
        if still is not None:
            return {"waiting": still.to_json(), "state": f"{still.kind} on {still.target} in progress"}
        return done()

    def _submit_job(self, request: SubmitPipeline, running: Operation | None) -> dict:
        info = self._gateway.submit_pipeline(PipelineRequest(
            name=request.name, experiment=request.experiment_name, source=request.source,
            inputs=dict(request.inputs), compute=request.compute, tags=dict(request.tags)))
        return {"job": info.name, "status": info.status, "created": info.created, "studio_url": info.studio_url}

    def _deploy(self, request: DeployModel, running: Operation | None) -> dict:
        endpoint, name = request.endpoint, request.deployment
        copy_from = None
        if running is None:
            state = endpoint_or_none(self._gateway, endpoint)
            if state is not None:
                live, mirrored = state.traffic.get(name, 0), state.mirror_traffic.get(name, 0)
                if live or mirrored:
                    return {**self._deployment(endpoint, name), "redeployed": False, "traffic": live,
                            "mirror_traffic": mirrored,
                            "note": "the deployment receives traffic already; left as it is, traffic untouched"}
                copy_from = state.serving()
        wanted = DeploymentRequest(
            endpoint=endpoint, name=name, model=request.model.uri, instance_type=request.instance_type,
            instance_count=request.instance_count, tags=dict(request.tags), spec=DeploymentSpec.from_json(request.spec),
            copy_from=copy_from, auth_mode=request.auth_mode, compute=request.compute)
        return self._drive(running, deployment_in_place(self._gateway, wanted, self._clock.now()),
                           lambda: {**self._deployment(endpoint, name), "redeployed": True, "traffic": 0,
                                    "copied_from": copy_from})

    def _scale(self, request: Scale, running: Operation | None) -> dict:
        step = scaled(self._gateway, request.endpoint, request.deployment, request.instance_count, self._clock.now())
        return self._drive(running, step, lambda: self._deployment(request.endpoint, request.deployment))

    def _set_traffic(self, request: SetTraffic, running: Operation | None) -> dict:
        step = traffic_set(self._gateway, request.endpoint, request.traffic, request.mirror, self._clock.now())
        return self._drive(running, step, lambda: self._endpoint(request.endpoint))

    def _rollback(self, request: RollBack, running: Operation | None) -> dict:
        """Traffic back to the deployments that served before, each first scaled back to its serving size
        (a finished rollout left it at one instance). Every step is absolute, so a repeat changes nothing."""
        endpoint, now = request.endpoint, self._clock.now()
        steps = [scaled(self._gateway, endpoint, name, count, now) for name, count in request.scale.items()]
        traffic = traffic_set(self._gateway, endpoint, request.traffic, request.mirror, now)
        return self._drive(running, in_order(*steps, traffic),
                           lambda: {**self._endpoint(endpoint),
                                    "scaled": [self._deployment(endpoint, name) for name in request.scale]})

    def _deployment(self, endpoint: str, name: str) -> dict[str, Any]:
        info = self._gateway.get_deployment(endpoint, name)
        return {"endpoint": info.endpoint, "deployment": info.name, "model": info.model,
                "instance_type": info.instance_type, "instance_count": info.instance_count,
                "provisioning_state": info.provisioning_state}

    def _endpoint(self, endpoint: str) -> dict[str, Any]:
        state = self._gateway.get_endpoint(endpoint)
        return {"endpoint": state.name, "traffic": dict(state.traffic), "mirror_traffic": dict(state.mirror_traffic),
                "serving": state.serving()}

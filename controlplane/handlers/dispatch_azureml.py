"""Azure ML dispatcher: sends retraining, staging, scale and rollback tasks to a workspace through the Gateway port.

Each task request names its Azure ML operation; the dispatcher turns it into one gateway call and returns
what the workspace answered, which the outbox keeps as the task's result:

    jobs.create_or_update                     -> submit_pipeline   (retraining)
    online_deployments.begin_create_or_update -> deploy            (staging promotion, at 0% traffic)
    online_deployments.scale                  -> scale
    online_endpoints.set_traffic              -> set_traffic
    online_endpoints.rollback                 -> scale the previous deployments back up, then set_traffic

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

from collections.abc import Callable, Mapping
from typing import Any

from controlplane.domain.errors import PermanentError
from controlplane.domain.ledger import Task
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

SUBMIT_JOB = "jobs.create_or_update"
DEPLOY = "online_deployments.begin_create_or_update"
SCALE = "online_deployments.scale"
SET_TRAFFIC = "online_endpoints.set_traffic"
ROLLBACK = "online_endpoints.rollback"


class AzureMLDispatcher:
    name = "azureml"

    def __init__(self, gateway: Gateway, clock: Clock) -> None:
        self._gateway, self._clock = gateway, clock
        self._operations: dict[str, Callable[[_Request, Operation | None], dict]] = {
            SUBMIT_JOB: self._submit_job, DEPLOY: self._deploy, SCALE: self._scale, SET_TRAFFIC: self._set_traffic,
            ROLLBACK: self._rollback}

    def dispatch(self, task: Task) -> dict:
        operation = task.request.get("operation")
        handler = self._operations.get(operation) if isinstance(operation, str) else None
        if handler is None:
            raise PermanentError(f"task {task.id}: the azureml dispatcher has no operation {operation!r} "
                                 f"(it handles {', '.join(sorted(self._operations))})")
        return handler(_Request(operation, task.request), Operation.from_json(task.result.get("waiting")))

    def _drive(self, running: Operation | None, next_step: NextStep, done: Callable[[], dict]) -> dict:
        """Begin or watch what is left to do; ``done`` reads the result once nothing is."""
        still = reconcile(self._gateway, self._clock.now(), running, next_step)
        if still is not None:
            return {"waiting": still.to_json(), "state": f"{still.kind} on {still.target} in progress"}
        return done()

    def _submit_job(self, request: _Request, running: Operation | None) -> dict:
        job = request.mapping("job")
        info = self._gateway.submit_pipeline(PipelineRequest(
            name=job.text("name"), experiment=request.text("experiment_name"), source=job.text("source"),
            inputs=job.strings("inputs"), compute=job.optional_text("compute"), tags=job.strings("tags")))
        return {"job": info.name, "status": info.status, "created": info.created, "studio_url": info.studio_url}

    def _deploy(self, request: _Request, running: Operation | None) -> dict:
        endpoint, name = request.text("endpoint"), request.text("deployment")
        traffic = request.integer("traffic", default=0)
        if traffic != 0:
            raise PermanentError(f"{DEPLOY}: deployment {name!r} is created at 0% traffic, not {traffic}%; "
                                 f"shift traffic with {SET_TRAFFIC}")
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
            endpoint=endpoint, name=name, model=request.text("model"), instance_type=request.text("instance_type"),
            instance_count=request.integer("instance_count", default=1), tags=request.strings("tags"),
            spec=DeploymentSpec.from_json(request.get("spec")), copy_from=copy_from,
            auth_mode=request.get("auth_mode") or "key")
        return self._drive(running, deployment_in_place(self._gateway, wanted, self._clock.now()),
                           lambda: {**self._deployment(endpoint, name), "redeployed": True, "traffic": 0,
                                    "copied_from": copy_from})

    def _scale(self, request: _Request, running: Operation | None) -> dict:
        endpoint, name = request.text("endpoint"), request.text("deployment")
        step = scaled(self._gateway, endpoint, name, request.integer("instance_count"), self._clock.now())
        return self._drive(running, step, lambda: self._deployment(endpoint, name))

    def _set_traffic(self, request: _Request, running: Operation | None) -> dict:
        endpoint = request.text("endpoint")
        return self._drive(running, self._traffic(request), lambda: self._endpoint(endpoint))

    def _rollback(self, request: _Request, running: Operation | None) -> dict:
        """Traffic back to the deployments that served before, each first scaled back to its serving size
        (a finished rollout left it at one instance). Every step is absolute, so a repeat changes nothing."""
        endpoint, now = request.text("endpoint"), self._clock.now()
        sizes = request.shares("scale") if request.get("scale") else {}
        steps = [scaled(self._gateway, endpoint, name, count, now) for name, count in sizes.items()]
        return self._drive(running, in_order(*steps, self._traffic(request)),
                           lambda: {**self._endpoint(endpoint),
                                    "scaled": [self._deployment(endpoint, name) for name in sizes]})

    def _traffic(self, request: _Request) -> NextStep:
        mirror = request.shares("mirror") if request.get("mirror") is not None else None
        return traffic_set(self._gateway, request.text("endpoint"), request.shares("traffic"), mirror,
                           self._clock.now())

    def _deployment(self, endpoint: str, name: str) -> dict[str, Any]:
        info = self._gateway.get_deployment(endpoint, name)
        return {"endpoint": info.endpoint, "deployment": info.name, "model": info.model,
                "instance_type": info.instance_type, "instance_count": info.instance_count,
                "provisioning_state": info.provisioning_state}

    def _endpoint(self, endpoint: str) -> dict[str, Any]:
        state = self._gateway.get_endpoint(endpoint)
        return {"endpoint": state.name, "traffic": dict(state.traffic), "mirror_traffic": dict(state.mirror_traffic),
                "serving": state.serving()}


class _Request:
    """Typed reads of a task request; a missing or malformed field is a ``PermanentError`` naming its path."""

    def __init__(self, operation: str, data: Mapping[str, Any], path: str = "request") -> None:
        self._operation, self._data, self._path = operation, data, path

    def get(self, key: str) -> Any:
        return self._data.get(key)

    def _refuse(self, key: str, reason: str) -> PermanentError:
        return PermanentError(f"{self._operation}: {self._path}.{key} {reason}")

    def text(self, key: str) -> str:
        value = self._data.get(key)
        if not isinstance(value, str) or not value:
            raise self._refuse(key, "is missing" if value is None else f"must be a non-empty string, not {value!r}")
        return value

    def optional_text(self, key: str) -> str | None:
        return self.text(key) if self._data.get(key) not in (None, "") else None

    def integer(self, key: str, default: int | None = None) -> int:
        value = self._data.get(key, default)
        if value is None:
            raise self._refuse(key, "is missing")
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._refuse(key, f"must be an integer, not {value!r}")
        return value

    def mapping(self, key: str) -> _Request:
        value = self._data.get(key)
        if not isinstance(value, Mapping):
            raise self._refuse(key, "is missing" if value is None else f"must be an object, not {value!r}")
        return _Request(self._operation, value, f"{self._path}.{key}")

    def strings(self, key: str) -> dict[str, str]:
        value = self._data.get(key) or {}
        if not isinstance(value, Mapping):
            raise self._refuse(key, f"must be an object, not {value!r}")
        return {str(k): str(v) for k, v in value.items()}

    def shares(self, key: str) -> dict[str, int]:
        value = self.mapping(key)._data
        if any(isinstance(share, bool) or not isinstance(share, int) for share in value.values()):
            raise self._refuse(key, f"must map deployments to integer percentages, not {dict(value)!r}")
        return {str(name): share for name, share in value.items()}

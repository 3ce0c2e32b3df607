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

from collections.abc import Callable, Mapping
from typing import Any

from controlplane.domain.ledger import Task
from controlplane.domain.promotion import test_tags
from controlplane.domain.requests import (
    CORRELATION_TAG,
    AzureMLRequest,
    CheckDrift,
    DeployBatch,
    DeployModel,
    Request,
    RollBack,
    Scale,
    SetBatchDefault,
    SetTraffic,
    SubmitPipeline,
    parse_request,
)
from controlplane.handlers.operations import (
    NextStep,
    Operation,
    batch_default_set,
    batch_deployment_in_place,
    batch_endpoint_or_none,
    deployment_in_place,
    endpoint_or_none,
    in_order,
    reconcile,
    scaled,
    traffic_set,
)
from controlplane.ports.gateway import (
    BatchDeploymentRequest,
    DeploymentRequest,
    DeploymentSpec,
    Gateway,
    PipelineRequest,
    Workspaces,
    registry_model,
)
from controlplane.ports.store import Clock


class AzureMLDispatcher:
    name = "azureml"

    def __init__(self, gateway: Gateway, clock: Clock, workspaces: Workspaces | None = None) -> None:
        self._gateway, self._clock, self._workspaces = gateway, clock, workspaces
        self._operations: dict[type[Request], Callable[[Any, Operation | None, Mapping[str, Any]], dict]] = {
            SubmitPipeline: self._submit_job, CheckDrift: self._submit_job, DeployModel: self._deploy,
            DeployBatch: self._deploy_batch, SetBatchDefault: self._set_batch_default, Scale: self._scale,
            SetTraffic: self._set_traffic, RollBack: self._rollback}

    def dispatch(self, task: Task) -> dict:
        request = parse_request(task.request, AzureMLRequest)
        return self._operations[type(request)](request, Operation.from_json(task.result.get("waiting")), task.result)

    def _in(self, environment: str | None) -> Gateway:
        """The gateway of the environment's workspace (None: the home workspace)."""
        return self._workspaces.gateway(environment) if environment and self._workspaces else self._gateway

    def _drive(self, running: Operation | None, next_step: NextStep, done: Callable[[], dict],
               gateway: Gateway | None = None, keep: Mapping[str, Any] | None = None) -> dict:
        """Reconcile; while an operation runs, the result to keep on the task (with ``keep``, read back by the next
        dispatch); once every step is done, ``done()``."""
        still = reconcile(gateway or self._gateway, self._clock.now(), running, next_step)
        if still is not None:
            return {"waiting": still.to_json(), "state": f"{still.kind} on {still.target} in progress", **(keep or {})}
        return done()

    def _submit_job(self, request: SubmitPipeline, running: Operation | None, kept: Mapping[str, Any]) -> dict:
        return self._submit(self._in(request.environment), request)

    @staticmethod
    def _submit(gateway: Gateway, request: SubmitPipeline, tags: Mapping[str, str] | None = None) -> dict:
        info = gateway.submit_pipeline(PipelineRequest(
            name=request.name, experiment=request.experiment_name, source=request.source,
            inputs=dict(request.inputs), compute=request.compute, tags={**request.tags, **(tags or {})}))
        return {"job": info.name, "status": info.status, "created": info.created, "studio_url": info.studio_url}

    def _model(self, request: DeployModel | DeployBatch) -> str:
        """The model reference the deployment takes: the registry's copy (shared first from the workspace the
        version was registered in, once), else the workspace's own version."""
        if not request.registry:
            return request.model.uri
        self._in(request.source).share_model(request.model.name, request.model.version, request.registry)
        return registry_model(request.registry, request.model.name, request.model.version)

    def _test_stage(self, gateway: Gateway, request: DeployModel | DeployBatch) -> dict:
        """Start the staged candidate's test stage (its pipeline, or a batch scoring job on the sample), once."""
        marks = {CORRELATION_TAG: request.tags[CORRELATION_TAG]} if CORRELATION_TAG in request.tags else {}
        if request.test:
            job = self._submit(gateway, parse_request(request.test, SubmitPipeline), marks)
            return {"test_job": job}
        if isinstance(request, DeployBatch) and request.sample_input:
            tags = {**test_tags(request.model.name, request.model.version, request.endpoint, request.deployment),
                    **marks}
            info = gateway.invoke_batch(request.endpoint, request.deployment, request.sample_input,
                                        job_name=f"{request.deployment}-score", experiment=request.experiment or "",
                                        tags=tags)
            return {"test_job": {"job": info.name, "status": info.status, "created": info.created,
                                 "studio_url": info.studio_url}}
        return {}

    def _deploy(self, request: DeployModel, running: Operation | None, kept: Mapping[str, Any]) -> dict:
        endpoint, name, gateway = request.endpoint, request.deployment, self._in(request.environment)
        copy_from = None
        if running is None:
            state = endpoint_or_none(gateway, endpoint)
            if state is not None:
                live, mirrored = state.traffic.get(name, 0), state.mirror_traffic.get(name, 0)
                if live or mirrored:
                    return {**self._deployment(endpoint, name, gateway), "redeployed": False, "traffic": live,
                            "mirror_traffic": mirrored,
                            "note": "the deployment receives traffic already; left as it is, traffic untouched"}
                copy_from = state.serving()
        # A resumed dispatch takes the model its first pass settled on (shared once); a task begun before the model was
        # kept deploys the workspace's own version, as it did then.
        wanted = DeploymentRequest(
            endpoint=endpoint, name=name, model=(kept.get("model") or request.model.uri) if running
            else self._model(request),
            instance_type=request.instance_type, instance_count=request.instance_count, tags=dict(request.tags),
            spec=DeploymentSpec.from_json(request.spec), copy_from=copy_from, auth_mode=request.auth_mode,
            compute=request.compute)
        return self._drive(running, deployment_in_place(gateway, wanted, self._clock.now()),
                           lambda: {**self._deployment(endpoint, name, gateway), "redeployed": True, "traffic": 0,
                                    "copied_from": copy_from, **self._where(request),
                                    **self._test_stage(gateway, request)},
                           gateway, keep={"model": wanted.model})

    def _deploy_batch(self, request: DeployBatch, running: Operation | None, kept: Mapping[str, Any]) -> dict:
        """A batch deployment in place; in staging its test stage started, in production made the endpoint's default
        (the default it replaces is kept in the result: a rollback switches back to it)."""
        endpoint, name, gateway = request.endpoint, request.deployment, self._in(request.environment)
        if running is None:
            current = batch_endpoint_or_none(gateway, endpoint)
            kept = {"model": self._model(request),
                    "previous_default": current.default_deployment if current is not None else None}
        wanted = BatchDeploymentRequest(
            endpoint=endpoint, name=name, model=kept.get("model", ""), compute=request.compute,
            instance_count=request.instance_count, mini_batch_size=request.mini_batch_size,
            max_concurrency_per_instance=request.max_concurrency_per_instance,
            output_file_name=request.output_file_name, tags=dict(request.tags),
            spec=DeploymentSpec.from_json(request.spec))
        now = self._clock.now()
        steps = batch_deployment_in_place(gateway, wanted, now)
        production = request.stage == "production"
        if production:
            steps = in_order(steps, batch_default_set(gateway, endpoint, name, now))
        previous = kept.get("previous_default")

        def done() -> dict:
            state = gateway.get_batch_endpoint(endpoint)
            result = {"endpoint": endpoint, "deployment": name, "model": wanted.model,
                      "default_deployment": state.default_deployment, **self._where(request)}
            if production:
                return {**result, "previous_default": previous if previous != name else None}
            return {**result, **self._test_stage(gateway, request)}
        return self._drive(running, steps, done, gateway,
                           keep={"model": wanted.model, "previous_default": previous})

    def _set_batch_default(self, request: SetBatchDefault, running: Operation | None,
                           kept: Mapping[str, Any]) -> dict:
        gateway = self._in(request.environment)
        step = batch_default_set(gateway, request.endpoint, request.deployment, self._clock.now())
        return self._drive(running, step, lambda: {"endpoint": request.endpoint, "default_deployment":
                                                   gateway.get_batch_endpoint(request.endpoint).default_deployment},
                           gateway)

    @staticmethod
    def _where(request: DeployModel | DeployBatch) -> dict[str, Any]:
        return {key: value for key, value in (("environment", request.environment), ("registry", request.registry))
                if value}

    def _scale(self, request: Scale, running: Operation | None, kept: Mapping[str, Any]) -> dict:
        step = scaled(self._gateway, request.endpoint, request.deployment, request.instance_count, self._clock.now())
        return self._drive(running, step, lambda: self._deployment(request.endpoint, request.deployment))

    def _set_traffic(self, request: SetTraffic, running: Operation | None, kept: Mapping[str, Any]) -> dict:
        step = traffic_set(self._gateway, request.endpoint, request.traffic, request.mirror, self._clock.now())
        return self._drive(running, step, lambda: self._endpoint(request.endpoint))

    def _rollback(self, request: RollBack, running: Operation | None, kept: Mapping[str, Any]) -> dict:
        """Traffic back to the deployments that served before, each first scaled back to its serving size
        (a finished rollout left it at one instance). Every step is absolute, so a repeat changes nothing."""
        endpoint, now = request.endpoint, self._clock.now()
        steps = [scaled(self._gateway, endpoint, name, count, now) for name, count in request.scale.items()]
        traffic = traffic_set(self._gateway, endpoint, request.traffic, request.mirror, now)
        return self._drive(running, in_order(*steps, traffic),
                           lambda: {**self._endpoint(endpoint),
                                    "scaled": [self._deployment(endpoint, name) for name in request.scale]})

    def _deployment(self, endpoint: str, name: str, gateway: Gateway | None = None) -> dict[str, Any]:
        info = (gateway or self._gateway).get_deployment(endpoint, name)
        return {"endpoint": info.endpoint, "deployment": info.name, "model": info.model,
                "instance_type": info.instance_type, "instance_count": info.instance_count,
                "provisioning_state": info.provisioning_state}

    def _endpoint(self, endpoint: str) -> dict[str, Any]:
        state = self._gateway.get_endpoint(endpoint)
        return {"endpoint": state.name, "traffic": dict(state.traffic), "mirror_traffic": dict(state.mirror_traffic),
                "serving": state.serving()}

"""A simulated Azure ML workspace for dry runs: the Gateway and HealthProbe ports over one JSON file.

With ``CONTROLPLANE_DISPATCH=dry-run`` (the local default), rollouts and promotion lookups run against
this workspace instead of Azure: endpoints, deployments, traffic and models change as Azure would
change them, every request is appended to its ``requests`` list exactly as the real adapter would
send it, and deployment health is whatever the file's ``health`` section says (no entry: no traffic).
A new deployment stays ``Creating`` for the file's ``provisioning_seconds`` (0 unless set), measured on the
control plane's clock, and carries the spec it was given, completed from the deployment it replaces. Like the
real gateway, each change returns the operation it began (``Creating``, ``Updating``): reads say how it went.

The MLOps v2 topology is simulated too: each environment's workspace is a file of its own beside the home one
(``simulated-workspace.<environment>.json``, see ``SimulatedWorkspace.of``), and models shared between them go
to a registry file those workspaces have in common (``simulated-registry-<registry>.json``), which deployments
in any of them name as ``azureml://registries/<registry>/models/<name>/versions/<version>``.
"""
from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from controlplane.domain.signals import DeploymentHealth, Series, Signals
from controlplane.ports.gateway import (
    BatchDeploymentRequest,
    BatchEndpointState,
    DataAsset,
    DeploymentInfo,
    DeploymentRequest,
    EndpointState,
    GatewayError,
    JobInfo,
    ModelInfo,
    NotFound,
    PipelineRequest,
    validate_traffic,
)

_lock = threading.Lock()  # one for every file of the simulation: a share writes a workspace's and a registry's
_REGISTRY_MODEL = re.compile(r"^azureml://registries/(?P<registry>[^/]+)/models/(?P<name>[^/]+)"
                             r"/versions/(?P<version>[^/]+)$")


class SimulatedWorkspace:
    name = "simulated"

    def __init__(self, path: str | Path, clock: Any = None) -> None:
        from controlplane.adapters.clock import SystemClock

        self.path = Path(path)
        self.clock = clock or SystemClock()

    @classmethod
    def of(cls, home_path: str | Path, environment: str | None = None, clock: Any = None) -> SimulatedWorkspace:
        """The workspace of ``environment``: ``simulated-workspace.<environment>.json`` beside the home workspace's
        file (``home_path``, the settings' ``simulation_path``); the home workspace itself for None."""
        return cls(environment_path(home_path, environment), clock)

    # -- the file -----------------------------------------------------------------------------------
    def _load(self) -> dict[str, Any]:
        return _read(self.path, {"models": {}, "jobs": {}, "endpoints": {}, "health": {}, "requests": []})

    def _change(self, operation: str, request: Mapping[str, Any], change) -> Any:
        return self._update(lambda state: (change(state), {"operation": operation, **request}))

    def _update(self, change) -> Any:
        """Apply ``change`` (state -> result, the request it sent or None when it sent none) to the file."""
        with _lock:
            state = self._load()
            result, request = change(state)
            if request is not None:
                state["requests"].append(request)
            _write(self.path, state)
            return result

    def registry_path(self, registry: str) -> Path:
        """The file of the registry ``registry``, shared by every simulated workspace of this directory."""
        return self.path.parent / f"simulated-registry-{registry}.json"

    def _registry(self, registry: str) -> dict[str, Any]:
        return _read(self.registry_path(registry), {"models": {}})

    def seed_endpoint(self, endpoint: str, deployment: str, model: str, instance_type: str = "Standard_DS3_v2",
                      instance_count: int = 1) -> None:
        """An endpoint already serving ``model`` from ``deployment`` at 100%."""
        self.create_endpoint(endpoint, "key")
        self.deploy(DeploymentRequest(endpoint, deployment, model, instance_type, instance_count))
        self.set_traffic(endpoint, {deployment: 100})

    def set_provisioning(self, seconds: float, fail_with: str = "") -> None:
        """How long new deployments stay ``Creating``; with ``fail_with``, they then fail with that error."""
        def change(state):
            state["provisioning_seconds"], state["provisioning_error"] = seconds, fail_with
        self._change("simulation.set_provisioning", {"seconds": seconds, "fail_with": fail_with}, change)

    def set_job_status(self, name: str, status: str) -> None:
        """A submitted job moves on (Running, Completed, Failed) as Azure ML would run it."""
        def change(state):
            state["jobs"][name]["status"] = status
        self._change("simulation.set_job_status", {"name": name, "status": status}, change)

    def set_job_properties(self, name: str, properties: Mapping[str, str]) -> None:
        """What a job reports as its run properties (a test stage's metrics), merged into what it has."""
        def change(state):
            state["jobs"][name].setdefault("properties", {}).update(properties)
        self._change("simulation.set_job_properties", {"name": name, "properties": dict(properties)}, change)

    def set_health(self, endpoint: str, deployment: str, requests: int, p95_latency_ms: float | None,
                   error_rate: float | None) -> None:
        def change(state):
            state["health"].setdefault(endpoint, {})[deployment] = {
                "requests": requests, "p95_latency_ms": p95_latency_ms, "error_rate": error_rate}
        self._change("simulation.set_health", {"endpoint": endpoint, "deployment": deployment}, change)

    def set_signals(self, target: str, series: Sequence[Series]) -> None:
        """What ``recent_signals`` answers for ``target`` (``endpoint/deployment``, ``endpoint`` or a resource ID)."""
        def change(state):
            state.setdefault("signals", {})[target] = [s.to_json() for s in series]
        self._change("simulation.set_signals", {"target": target}, change)

    # -- Gateway ------------------------------------------------------------------------------------
    def get_model(self, name: str, version: str) -> ModelInfo:
        found = self._load()["models"].get(f"{name}:{version}")
        if found is None:
            raise NotFound("get_model", f"model {name}:{version} not found", 404)
        return _model(name, version, found)

    def share_model(self, name: str, version: str, registry: str) -> ModelInfo:
        def change(state):
            found = state["models"].get(f"{name}:{version}")
            if found is None:
                raise NotFound("share_model", f"model {name}:{version} not found", 404)
            shared = self._registry(registry)
            copy = shared["models"].get(f"{name}:{version}")
            if copy is not None:  # shared already: nothing is sent
                return copy, None
            copy = {"tags": dict(found.get("tags", {})), "properties": dict(found.get("properties", {})),
                    "registered_by": found.get("registered_by", "")}
            shared["models"][f"{name}:{version}"] = copy
            _write(self.registry_path(registry), shared)
            return copy, {"operation": "models.share", "name": name, "version": version, "registry": registry}
        return _model(name, version, self._update(change))

    def register_model(self, name: str, version: str, registered_by: str, tags: Mapping[str, str] | None = None,
                       properties: Mapping[str, str] | None = None) -> ModelInfo:
        """A model version as Azure ML keeps it once registered, with who registered it (its system data)."""
        def change(state):
            state["models"][f"{name}:{version}"] = {"tags": dict(tags or {}), "properties": dict(properties or {}),
                                                    "registered_by": registered_by}
        self._change("simulation.register_model", {"name": name, "version": version}, change)
        return self.get_model(name, version)

    def tag_model(self, name: str, version: str, tags: Mapping[str, str], stage: str | None = None) -> ModelInfo:
        def change(state):
            model = state["models"].setdefault(f"{name}:{version}", {"tags": {}, "properties": {}})
            model["tags"].update(tags)
            if stage:
                model["stage"] = stage
        self._change("models.create_or_update", {"name": name, "version": version, "tags": dict(tags),
                                                 "stage": stage}, change)
        return self.get_model(name, version)

    def submit_pipeline(self, request: PipelineRequest) -> JobInfo:
        def change(state):
            created = request.name not in state["jobs"]
            return created, state["jobs"].setdefault(request.name, {
                "experiment": request.experiment, "status": "NotStarted", "tags": dict(request.tags),
                "properties": {}})
        created, job = self._change("jobs.create_or_update", {
            "name": request.name, "experiment": request.experiment, "source": request.source,
            "inputs": dict(request.inputs), "tags": dict(request.tags)}, change)
        return _job(request.name, job, created=created)

    def register_data(self, name: str, version: str, path: str, description: str = "",
                      tags: Mapping[str, str] | None = None) -> DataAsset:
        def change(state):
            state.setdefault("data", {})[f"{name}:{version}"] = {"path": path, "description": description,
                                                                  "tags": dict(tags or {})}

        found = self._load().get("data", {}).get(f"{name}:{version}")
        if found is not None:
            if found["path"] != path:
                raise GatewayError("register_data", f"data asset {name}:{version} exists at {found['path']}, "
                                                    f"not at {path}")
            return DataAsset(name, version, path)
        self._change("data.create_or_update", {"name": name, "version": version, "path": path,
                                               "type": "uri_file", "tags": dict(tags or {})}, change)
        return DataAsset(name, version, path, created=True)

    def get_job(self, name: str) -> JobInfo:
        job = self._load()["jobs"].get(name)
        if job is None:
            raise NotFound("get_job", f"job {name} not found", 404)
        return _job(name, job)

    def create_endpoint(self, name: str, auth_mode: str, compute: str | None = None) -> EndpointState:
        def change(state):
            state["endpoints"].setdefault(name, {"traffic": {}, "mirror": {}, "deployments": {},
                                                 "auth_mode": auth_mode, "compute": compute})
        self._change("online_endpoints.begin_create_or_update",
                     {"endpoint": name, "auth_mode": auth_mode, "kind": _kind(compute), "compute": compute}, change)
        return replace(self.get_endpoint(name), provisioning_state="Creating")

    def deploy(self, request: DeploymentRequest) -> DeploymentInfo:
        self._refuse_missing_registry_model("deploy", request.model)
        spec = self._spec_of(request)

        def change(state):
            self._deployments(state, request.endpoint, "deploy")  # Azure ML deploys only to an existing endpoint
            endpoint = state["endpoints"][request.endpoint]
            if endpoint.get("compute") != request.compute:
                raise GatewayError("deploy", f"a {_kind(request.compute)} deployment cannot go on the "
                                             f"{_kind(endpoint.get('compute'))} endpoint {request.endpoint}")
            endpoint["deployments"][request.name] = {
                "model": request.model, "instance_type": request.instance_type,
                "instance_count": request.instance_count, "spec": spec, "started": self.clock.now().isoformat()}
            endpoint["traffic"].setdefault(request.name, 0)
        self._change("online_deployments.begin_create_or_update", {
            "endpoint": request.endpoint, "name": request.name, "model": request.model,
            "instance_type": request.instance_type, "instance_count": request.instance_count,
            "copied_from": request.copy_from, "spec": spec, "kind": _kind(request.compute),
            "compute": request.compute}, change)
        return replace(self.get_deployment(request.endpoint, request.name), provisioning_state="Creating")

    def _spec_of(self, request: DeploymentRequest) -> dict[str, Any]:
        """The spec the deployment is created with: the request's, completed from the one it replaces."""
        found = self._load()["endpoints"].get(request.endpoint, {}).get("deployments", {})
        template = found.get(request.copy_from or "", {}).get("spec", {})
        given = request.spec.to_json()
        variables = {**template.get("environment_variables", {}), **given.get("environment_variables", {})}
        merged = {**template, **given, "environment_variables": variables}
        return {key: value for key, value in merged.items() if value not in ({}, None)}

    def get_deployment(self, endpoint: str, name: str) -> DeploymentInfo:
        state = self._load()
        found = self._deployments(state, endpoint, "get_deployment").get(name)
        if found is None:
            raise NotFound("get_deployment", f"deployment {name} not found on {endpoint}", 404)
        return self._info(state, endpoint, name, found)

    def _info(self, state: dict[str, Any], endpoint: str, name: str, found: dict[str, Any]) -> DeploymentInfo:
        provisioning, error = "Succeeded", ""
        if found.get("started"):
            ready = datetime.fromisoformat(found["started"]).timestamp() + state.get("provisioning_seconds", 0)
            if self.clock.now().timestamp() < ready:
                provisioning = "Creating"
            elif state.get("provisioning_error"):
                provisioning, error = "Failed", state["provisioning_error"]
        return DeploymentInfo(endpoint, name, found["model"], found["instance_type"], found["instance_count"],
                              provisioning, error)

    def scale(self, endpoint: str, deployment: str, instance_count: int) -> DeploymentInfo:
        def change(state):
            found = self._deployments(state, endpoint, "scale").get(deployment)
            if found is None:
                raise NotFound("scale", f"deployment {deployment} not found on {endpoint}", 404)
            found["instance_count"] = instance_count
            return found
        found = self._change("online_deployments.scale", {"endpoint": endpoint, "name": deployment,
                                                          "instance_count": instance_count}, change)
        return DeploymentInfo(endpoint, deployment, found["model"], found["instance_type"], instance_count, "Updating")

    def delete_deployment(self, endpoint: str, deployment: str) -> None:
        def change(state):
            if endpoint in state["endpoints"]:  # deleting what is gone is not an error
                state["endpoints"][endpoint]["deployments"].pop(deployment, None)
                state["endpoints"][endpoint]["traffic"].pop(deployment, None)
        self._change("online_deployments.begin_delete", {"endpoint": endpoint, "name": deployment}, change)

    def get_endpoint(self, name: str) -> EndpointState:
        found = self._load()["endpoints"].get(name)
        if found is None:
            raise NotFound("get_endpoint", f"endpoint {name} not found", 404)
        state = self._load()
        return EndpointState(name, found["traffic"], found["mirror"], tuple(
            self._info(state, name, deployment, d) for deployment, d in found["deployments"].items()))

    def set_traffic(self, endpoint: str, traffic: Mapping[str, int],
                    mirror: Mapping[str, int] | None = None) -> EndpointState:
        validate_traffic(traffic, mirror)

        def change(state):
            found = state["endpoints"].get(endpoint)
            if found is None:
                raise NotFound("set_traffic", f"endpoint {endpoint} not found", 404)
            found["traffic"] = {**{name: 0 for name in found["deployments"]}, **dict(traffic)}
            if mirror is not None:
                found["mirror"] = dict(mirror)
        self._change("online_endpoints.begin_create_or_update", {"endpoint": endpoint, "traffic": dict(traffic),
                                                                 "mirror_traffic": mirror}, change)
        return replace(self.get_endpoint(endpoint), provisioning_state="Updating")

    @staticmethod
    def _deployments(state: dict[str, Any], endpoint: str, operation: str) -> dict[str, Any]:
        if endpoint not in state["endpoints"]:
            raise NotFound(operation, f"endpoint {endpoint} not found", 404)
        return state["endpoints"][endpoint]["deployments"]

    def _refuse_missing_registry_model(self, operation: str, model: str) -> None:
        """A deployment of a registry's model version the registry does not hold is refused, as Azure ML does."""
        shared = _REGISTRY_MODEL.match(model)
        if shared and f"{shared['name']}:{shared['version']}" not in self._registry(shared["registry"])["models"]:
            raise GatewayError(operation, f"(UserError) Could not find asset with ID: {model}: model version "
                                          f"{shared['name']}:{shared['version']} is not in registry "
                                          f"{shared['registry']}")

    # -- batch endpoints ----------------------------------------------------------------------------
    def create_batch_endpoint(self, name: str) -> BatchEndpointState:
        def change(state):
            state.setdefault("batch_endpoints", {}).setdefault(name, {"default_deployment": None, "deployments": {}})
        self._change("batch_endpoints.begin_create_or_update", {"endpoint": name, "auth_mode": "AADToken"},
                     change)
        return replace(self.get_batch_endpoint(name), provisioning_state="Creating")

    def get_batch_endpoint(self, name: str) -> BatchEndpointState:
        state = self._load()
        found = state.get("batch_endpoints", {}).get(name)
        if found is None:
            raise NotFound("get_batch_endpoint", f"batch endpoint {name} not found", 404)
        return BatchEndpointState(name, found["default_deployment"], tuple(
            self._info(state, name, deployment, d) for deployment, d in found["deployments"].items()))

    def deploy_batch(self, request: BatchDeploymentRequest) -> DeploymentInfo:
        self._refuse_missing_registry_model("deploy_batch", request.model)

        def change(state):
            endpoint = self._batch_endpoint(state, request.endpoint, "deploy_batch")
            endpoint["deployments"][request.name] = {
                "model": request.model, "instance_type": request.compute, "instance_count": request.instance_count,
                "started": self.clock.now().isoformat()}
            # Azure ML makes an endpoint's first deployment its default; later ones leave the default alone.
            endpoint["default_deployment"] = endpoint["default_deployment"] or request.name
        self._change("batch_deployments.begin_create_or_update", {
            "endpoint": request.endpoint, "name": request.name, "model": request.model, "compute": request.compute,
            "instance_count": request.instance_count, "mini_batch_size": request.mini_batch_size,
            "max_concurrency_per_instance": request.max_concurrency_per_instance,
            "output_file_name": request.output_file_name, "tags": dict(request.tags),
            "spec": request.spec.to_json()}, change)
        return replace(self.get_batch_deployment(request.endpoint, request.name), provisioning_state="Creating")

    def get_batch_deployment(self, endpoint: str, name: str) -> DeploymentInfo:
        state = self._load()
        return self._info(state, endpoint, name, self._batch_deployment(state, endpoint, name, "get_batch_deployment"))

    def set_batch_default(self, endpoint: str, deployment: str) -> BatchEndpointState:
        def change(state):
            self._batch_deployment(state, endpoint, deployment, "set_batch_default")
            state["batch_endpoints"][endpoint]["default_deployment"] = deployment
        self._change("batch_endpoints.begin_create_or_update", {
            "endpoint": endpoint, "defaults": {"deployment_name": deployment}}, change)
        return replace(self.get_batch_endpoint(endpoint), provisioning_state="Updating")

    def invoke_batch(self, endpoint: str, deployment: str, input_path: str, job_name: str,
                     experiment: str = "", tags: Mapping[str, str] | None = None) -> JobInfo:
        properties = {str(key): str(value) for key, value in (tags or {}).items()}

        def change(state):
            job = state["jobs"].get(job_name)
            if job is not None:  # started already: nothing is sent
                return (job, False), None
            self._batch_deployment(state, endpoint, deployment, "invoke_batch")
            job = state["jobs"][job_name] = {"experiment": experiment, "status": "NotStarted", "tags": {},
                                             "properties": properties, "endpoint": endpoint,
                                             "deployment": deployment}
            return (job, True), {"operation": "batch_endpoints.invoke", "endpoint": endpoint,
                                 "deployment": deployment, "input": input_path, "job_name": job_name,
                                 "experiment": experiment, "properties": properties}
        job, created = self._update(change)
        return _job(job_name, job, created=created)

    @staticmethod
    def _batch_endpoint(state: dict[str, Any], endpoint: str, operation: str) -> dict[str, Any]:
        found = state.setdefault("batch_endpoints", {}).get(endpoint)
        if found is None:
            raise NotFound(operation, f"batch endpoint {endpoint} not found", 404)
        return found

    def _batch_deployment(self, state: dict[str, Any], endpoint: str, name: str, operation: str) -> dict[str, Any]:
        found = self._batch_endpoint(state, endpoint, operation)["deployments"].get(name)
        if found is None:
            raise NotFound(operation, f"batch deployment {name} not found on {endpoint}", 404)
        return found

    # -- HealthProbe --------------------------------------------------------------------------------
    def deployment_health(self, endpoint: str, deployments: Sequence[str], start: datetime,
                          end: datetime) -> dict[str, DeploymentHealth]:
        scripted = self._load()["health"].get(endpoint, {})
        return {name: DeploymentHealth(name, **scripted[name]) if name in scripted
                else DeploymentHealth(name, 0, None, None) for name in deployments}

    def recent_signals(self, resource_id: str, endpoint: str | None, deployment: str | None,
                       metrics: Sequence[str], start: datetime, end: datetime, bin_minutes: int = 5) -> Signals:
        name = f"{endpoint}/{deployment}" if endpoint and deployment else endpoint or resource_id.lower()
        scripted = [Series.from_json(s) for s in self._load().get("signals", {}).get(name, [])]
        series = tuple(Series(s.name, s.unit, tuple(p for p in s.points if start <= p[0] <= end)) for s in scripted)
        said = [f"{s.name} {s.points[-1][1]:g} {s.unit} at {s.points[-1][0]:%H:%M} "
                f"(peak {max(v for _, v in s.points):g})" for s in series if s.points]
        summary = f"{name}, {start:%H:%M} to {end:%H:%M} UTC (simulated workspace): " + (
            "; ".join(said) if said else "no signals scripted for this target")
        return Signals(summary, tuple(s for s in series if s.points), "simulated", start, end)

    def requests(self) -> list[dict[str, Any]]:
        return self._load()["requests"]


def environment_path(home_path: str | Path, environment: str | None) -> Path:
    """The file of ``environment``'s simulated workspace: the home file for None, else
    ``simulated-workspace.<environment>.json`` in the home file's directory."""
    home = Path(home_path)
    return home if environment is None else home.parent / f"simulated-workspace.{environment}.json"


def _read(path: Path, empty: dict[str, Any]) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else empty


def _write(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(state, indent=2, default=str), encoding="utf-8")


def _model(name: str, version: str, found: Mapping[str, Any]) -> ModelInfo:
    registered_by = found.get("registered_by", "")
    created_by = (found.get("created_by") or found.get("tags", {}).get("created_by")
                  or found.get("properties", {}).get("created_by") or registered_by)
    return ModelInfo(name, version, found.get("tags", {}), found.get("properties", {}), created_by,
                     found.get("stage", ""), registered_by=registered_by)


def _job(name: str, job: Mapping[str, Any], created: bool = False) -> JobInfo:
    return JobInfo(name, job["status"], job["experiment"], created=created, tags=job.get("tags", {}),
                   properties=job.get("properties", {}))


def _kind(compute: str | None) -> str:
    """The deployments' kind in Azure ML's words: on an attached Kubernetes compute, or managed."""
    return "Kubernetes" if compute else "Managed"

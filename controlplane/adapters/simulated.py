"""A simulated Azure ML workspace for dry runs: the Gateway and HealthProbe ports over one JSON file.

With ``CONTROLPLANE_DISPATCH=dry-run`` (the local default), rollouts and promotion lookups run against
this workspace instead of Azure: endpoints, deployments, traffic and models change as Azure would
change them, every request is appended to its ``requests`` list exactly as the real adapter would
send it, and deployment health is whatever the file's ``health`` section says (no entry: no traffic).
A new deployment stays ``Creating`` for the file's ``provisioning_seconds`` (0 unless set), measured on the
control plane's clock, and carries the spec it was given, completed from the deployment it replaces. Like the
real gateway, each change returns the operation it began (``Creating``, ``Updating``): reads say how it went.
"""
from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from controlplane.domain.signals import DeploymentHealth, Series, Signals
from controlplane.ports.gateway import (
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

_lock = threading.Lock()


class SimulatedWorkspace:
    name = "simulated"

    def __init__(self, path: str | Path, clock: Any = None) -> None:
        from controlplane.adapters.clock import SystemClock

        self.path = Path(path)
        self.clock = clock or SystemClock()

    # -- the file -----------------------------------------------------------------------------------
    def _load(self) -> dict[str, Any]:
        if self.path.exists():
            return json.loads(self.path.read_text(encoding="utf-8"))
        return {"models": {}, "jobs": {}, "endpoints": {}, "health": {}, "requests": []}

    def _change(self, operation: str, request: Mapping[str, Any], change) -> Any:
        with _lock:
            state = self._load()
            result = change(state)
            state["requests"].append({"operation": operation, **request})
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(state, indent=2, default=str), encoding="utf-8")
            return result

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
        registered_by = found.get("registered_by", "")
        created_by = (found.get("created_by") or found.get("tags", {}).get("created_by")
                      or found.get("properties", {}).get("created_by") or registered_by)
        return ModelInfo(name, version, found.get("tags", {}), found.get("properties", {}), created_by,
                         found.get("stage", ""), registered_by=registered_by)

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
            return created, state["jobs"].setdefault(request.name, {"experiment": request.experiment,
                                                                    "status": "NotStarted"})
        created, job = self._change("jobs.create_or_update", {
            "name": request.name, "experiment": request.experiment, "source": request.source,
            "inputs": dict(request.inputs)}, change)
        return JobInfo(request.name, job["status"], job["experiment"], created=created)

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
        return JobInfo(name, job["status"], job["experiment"])

    def create_endpoint(self, name: str, auth_mode: str, compute: str | None = None) -> EndpointState:
        def change(state):
            state["endpoints"].setdefault(name, {"traffic": {}, "mirror": {}, "deployments": {},
                                                 "auth_mode": auth_mode, "compute": compute})
        self._change("online_endpoints.begin_create_or_update",
                     {"endpoint": name, "auth_mode": auth_mode, "kind": _kind(compute), "compute": compute}, change)
        return replace(self.get_endpoint(name), provisioning_state="Creating")

    def deploy(self, request: DeploymentRequest) -> DeploymentInfo:
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


def _kind(compute: str | None) -> str:
    """The deployments' kind in Azure ML's words: on an attached Kubernetes compute, or managed."""
    return "Kubernetes" if compute else "Managed"

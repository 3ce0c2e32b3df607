"""The HTTP boundary of the real Azure SDKs, for adapter tests: an azure-core transport that answers
from a routing table with documented REST bodies (``tests/azure_responses``) and records each request,
a credential with a fixed token, and ``AzureMLService``, an Azure ML workspace kept in memory behind that
transport (documented ARM semantics: PUT 201 + ``Azure-AsyncOperation``, DELETE 202 + ``Location``). No network
and no retries."""
from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from io import BytesIO
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from azure.core.credentials import AccessToken
from azure.core.pipeline.transport import HttpTransport
from azure.core.rest._http_response_impl import HttpResponseImpl
from azure.core.utils import CaseInsensitiveDict

RESPONSES = Path(__file__).parent / "azure_responses"


def body(name: str) -> dict:
    return json.loads((RESPONSES / f"{name}.json").read_text(encoding="utf-8"))


def arm_error(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message, "details": [], "additionalInfo": []}}


@dataclass(frozen=True)
class Sent:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    thread: str = ""

    @property
    def polled(self) -> bool:
        """Sent by an SDK poller's thread (azure-core names them ``LROPoller(<uuid>)``), not by the caller."""
        return self.thread.startswith("LROPoller")


class AzureTransport(HttpTransport):
    """Answers requests from a routing table (last matching route wins) and records each one."""

    def __init__(self) -> None:
        self.routes: list[tuple[str, re.Pattern, list]] = []
        self.sent: list[Sent] = []

    def on(self, method: str, path: str, *answers: Any) -> AzureTransport:
        """Answer ``method`` on a path ending with ``path`` (a regex) with each answer in turn, the last one for
        good. An answer is a body (200), ``(status, body)``, ``(status, body, headers)``, an exception to raise
        or a callable given the ``Sent`` request that returns one of those."""
        self.routes.append((method, re.compile(f"{path}$"), list(answers)))
        return self

    def send(self, request, **kwargs):
        url = urlparse(request.url)
        content = request.content
        sent = Sent(request.method, unquote(url.path), parse_qs(url.query), dict(request.headers),
                    json.loads(content) if content else None, threading.current_thread().name)
        self.sent.append(sent)
        for method, pattern, answers in reversed(self.routes):
            if method == request.method and pattern.search(sent.path):
                answer = answers.pop(0) if len(answers) > 1 else answers[0]
                break
        else:
            answer = (404, arm_error("ResourceNotFound", f"no route for {sent.method} {sent.path}"))
        if callable(answer) and not isinstance(answer, type):
            answer = answer(sent)
        if isinstance(answer, BaseException):
            raise answer
        status, payload, headers = (tuple(answer) + ({},))[:3] if isinstance(answer, tuple) else (200, answer, {})
        data = b"" if payload is None else json.dumps(payload).encode()
        response = HttpResponseImpl(request=request, internal_response=BytesIO(data), status_code=status,
                                    reason="", content_type="application/json",
                                    headers=CaseInsensitiveDict({"Content-Type": "application/json",
                                                                 "x-ms-request-id": "test", **headers}),
                                    stream_download_generator=None)
        response._content = data
        return response

    def requests(self, method: str | None = None) -> list[Sent]:
        """What the caller sent (the SDK pollers' own reads left out)."""
        return [s for s in self.sent if (method is None or s.method == method) and not s.polled]

    def one(self, method: str, path: str) -> Sent:
        matching = [s for s in self.requests(method) if re.search(f"{path}$", s.path)]
        assert len(matching) == 1, [(s.method, s.path) for s in self.sent]
        return matching[0]

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> AzureTransport:
        return self

    def __exit__(self, *args) -> None:
        pass


class FixedCredential:
    """A token credential with a fixed, unsigned JWT (azure-ai-ml decodes, never verifies, the token to read
    its audience and tenant); records the scopes asked for."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)

        def part(claims: dict) -> str:
            return base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()

        audience = scopes[0].removesuffix("/.default") if scopes else ""
        claims = {"aud": audience, "tid": "00000000-aaaa-bbbb-cccc-000000000002", "oid": "controlplane"}
        return AccessToken(f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}.", int(time.time()) + 3600)


SUBSCRIPTION, GROUP, WORKSPACE = "00000000-1111-2222-3333-444444444444", "rg-mlops", "ws-mlops"
WS = (f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}"
      f"/providers/Microsoft.MachineLearningServices/workspaces/{WORKSPACE}")
OPERATIONS = f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.MachineLearningServices/locations/westeurope"
_SETTLED = ("Succeeded", "Failed", "Canceled")
_BATCH = "batch:"  # first in the keys of batch endpoints' operations: no endpoint is named so


class AzureMLService:
    """One Azure ML workspace in memory behind an ``AzureTransport``, answering the ARM REST calls the gateway
    makes as the service documents them: models, pipeline jobs, online endpoints and deployments, batch endpoints
    and deployments with the scoring jobs posted to a batch endpoint's scoring URI, and Azure ML registries (the
    registry discovery service and a registry's models, copied in from the workspace by ``import``).

    A PUT on an endpoint or deployment answers 201 with ``Azure-AsyncOperation`` (and the resource
    ``Creating``/``Updating``); a DELETE answers 202 with ``Location``. The operation then takes the time
    ``provision`` scripts, on ``clock`` (the control plane's): reads in the n-th minute after the PUT find the
    n-th state scripted (the last one for good), and find it ``Succeeded`` when none is scripted. Reads by the
    caller and by the SDK's own pollers see the same. Routes added to the transport afterwards win, so a test can
    still make any call fail."""

    def __init__(self, clock: Any = None, transport: AzureTransport | None = None) -> None:
        self.clock = clock or _Now()
        self.transport = transport or AzureTransport()
        self.models: dict[tuple[str, str], dict] = {}
        self.jobs: dict[str, dict] = {}
        self.endpoints: dict[str, dict] = {}
        self.deployments: dict[tuple[str, str], dict] = {}
        self.scripts: dict[tuple[str, ...], list[str]] = {}
        self.begun: dict[tuple[str, ...], datetime] = {}
        self.logs: dict[tuple[str, str], str] = {}
        self.closed = False
        self._operations: dict[str, tuple[str, ...]] = {}
        self._lock = threading.Lock()
        on = self.transport.on
        on("GET", "/workspaces/ws-mlops", body("ml_workspace"))
        on("GET", "/components/train-churn/versions/2", body("ml_component_version"))
        on("GET", "/models/[^/]+/versions", self._answer(self._model_versions))
        on("GET", "/models/[^/]+/versions/[^/]+", self._answer(self._get_model))
        on("PUT", "/models/[^/]+/versions/[^/]+", self._answer(self._put_model))
        on("GET", "/jobs/[^/]+", self._answer(self._get_job))
        on("PUT", "/jobs/[^/]+", self._answer(self._put_job))
        on("GET", "/onlineEndpoints/[^/]+", self._answer(self._get_endpoint))
        on("PUT", "/onlineEndpoints/[^/]+", self._answer(self._put_endpoint))
        on("GET", "/onlineEndpoints/[^/]+/deployments", self._answer(self._list_deployments))
        on("GET", "/onlineEndpoints/[^/]+/deployments/[^/]+", self._answer(self._get_deployment))
        on("PUT", "/onlineEndpoints/[^/]+/deployments/[^/]+", self._answer(self._put_deployment))
        on("DELETE", "/onlineEndpoints/[^/]+/deployments/[^/]+", self._answer(self._delete_deployment))
        on("POST", "/onlineEndpoints/[^/]+/deployments/[^/]+/getLogs", self._answer(self._logs))
        on("GET", "/mfeOperationsStatus/[^/]+", self._answer(self._operation_status))
        on("GET", "/mfeOperationResults/[^/]+", self._answer(self._operation_result))
        # Batch endpoints, their deployments and scoring jobs; Azure ML registries (``_BATCH`` keys their operations).
        self.batch_endpoints: dict[str, dict] = {}
        self.batch_deployments: dict[tuple[str, str], dict] = {}
        self.registries: dict[str, dict] = {}
        self.registry_models: dict[tuple[str, str, str], dict] = {}
        on("GET", "/batchEndpoints/[^/]+", self._answer(self._get_batch_endpoint))
        on("PUT", "/batchEndpoints/[^/]+", self._answer(self._put_batch_endpoint))
        on("GET", "/batchEndpoints/[^/]+/deployments", self._answer(self._list_batch_deployments))
        on("GET", "/batchEndpoints/[^/]+/deployments/[^/]+", self._answer(self._get_batch_deployment))
        on("PUT", "/batchEndpoints/[^/]+/deployments/[^/]+", self._answer(self._put_batch_deployment))
        on("POST", "/jobs", self._answer(self._invoke_batch))  # a batch endpoint's scoring URI
        on("GET", "/registrymanagement/v1.0/registries/[^/]+/discovery", self._answer(self._discover_registry))
        on("GET", "/registries/[^/]+/models/[^/]+/versions", self._answer(self._registry_model_versions))
        on("GET", "/registries/[^/]+/models/[^/]+/versions/[^/]+", self._answer(self._get_registry_model))
        on("POST", "/registries/[^/]+/import", self._answer(self._import_into_registry))

    def close(self) -> None:
        """Refuse every request from now on: the SDK pollers a test left running end at their next look."""
        self.closed = True

    # -- what a test puts in the workspace ---------------------------------------------------------------------

    def add_model(self, name: str, version: str, tags: dict | None = None, properties: dict | None = None,
                  registered_by: str = "alice@contoso.com") -> None:
        model = json.loads(json.dumps(body("ml_model_version")).replace("/models/churn/versions/3",
                                                                          f"/models/{name}/versions/{version}"))
        model["name"] = version
        model["properties"].update(tags=dict(tags or {}), properties=dict(properties or {}))
        model["systemData"]["createdBy"] = registered_by
        self.models[(name, version)] = model

    def add_job(self, name: str, status: str = "NotStarted", experiment: str = "churn-retrain") -> None:
        job = json.loads(json.dumps(body("ml_pipeline_job")).replace("retrain-churn-42", name))
        job["properties"].update(status=status, experimentName=experiment)
        self.jobs[name] = job

    def serve(self, endpoint: str, deployments: dict[str, tuple[str, int]], traffic: dict[str, int],
              mirror: dict[str, int] | None = None) -> None:
        """An endpoint whose deployments (name -> (``azureml:<model>:<version>``, instances)) are provisioned."""
        answer = json.loads(json.dumps(body("ml_online_endpoint")).replace("churn-ep", endpoint))
        answer["properties"].update(traffic=dict(traffic), mirrorTraffic=dict(mirror or {}))
        self.endpoints[endpoint] = answer
        for name, (model, count) in deployments.items():
            self.deployments[(endpoint, name)] = self.deployment(endpoint, name, model, count)

    @staticmethod
    def deployment(endpoint: str, name: str, model: str, capacity: int = 1, state: str = "Succeeded") -> dict:
        _, model_name, version = model.split(":")
        answer = json.loads(json.dumps(body("ml_online_deployment")).replace("churn-ep", endpoint))
        answer["id"] = answer["id"].rsplit("/", 1)[0] + f"/{name}"
        answer["name"] = name
        answer["sku"]["capacity"] = capacity
        answer["properties"].update(model=f"{WS}/models/{model_name}/versions/{version}", provisioningState=state)
        return answer

    def provision(self, endpoint: str, deployment: str | None, *states: str, log: str = "") -> None:
        """The provisioning states of the next operation on a deployment (or, without one, on the endpoint), one a
        minute from its PUT, the last for good; ``log`` is the container log of a failed deployment."""
        self.scripts[(endpoint, deployment) if deployment else (endpoint,)] = list(states)
        if deployment:
            self.logs[(endpoint, deployment)] = log

    def serve_batch(self, endpoint: str, deployments: dict[str, tuple[str, int]], default: str | None) -> None:
        """A batch endpoint whose deployments (name -> (model reference, instances)) are provisioned."""
        answer = json.loads(json.dumps(body("ml_batch_endpoint")).replace("churn-batch", endpoint))
        answer["properties"]["defaults"] = {"deploymentName": default}
        self.batch_endpoints[endpoint] = answer
        for name, (model, count) in deployments.items():
            self.batch_deployments[(endpoint, name)] = self.batch_deployment(endpoint, name, model, count)

    @staticmethod
    def batch_deployment(endpoint: str, name: str, model: str, capacity: int = 1, state: str = "Succeeded") -> dict:
        """A batch deployment of ``model`` (``azureml:<name>:<version>`` or a registry's ``azureml://`` id)."""
        answer = json.loads(json.dumps(body("ml_batch_deployment")).replace("churn-batch", endpoint))
        answer["id"] = answer["id"].rsplit("/", 1)[0] + f"/{name}"
        answer["name"] = name
        if not model.startswith("azureml://"):
            _, model_name, version = model.split(":")
            model = f"{WS}/models/{model_name}/versions/{version}"
        answer["properties"].update(model={"referenceType": "Id", "assetId": model}, provisioningState=state)
        answer["properties"]["resources"]["instanceCount"] = capacity
        return answer

    def add_registry(self, registry: str) -> None:
        """An Azure ML registry the registry discovery service knows."""
        self.registries[registry] = json.loads(json.dumps(body("ml_registry_discovery")).replace("mlops-shared",
                                                                                                 registry))

    def add_registry_model(self, registry: str, name: str, version: str) -> None:
        self.add_registry(registry)
        self.registry_models[(registry, name, version)] = self._registry_model(registry, name, version)

    @staticmethod
    def _registry_model(registry: str, name: str, version: str) -> dict:
        model = json.loads(json.dumps(body("ml_registry_model_version")).replace("mlops-shared", registry))
        model["id"] = model["id"].replace("/models/churn/versions/3", f"/models/{name}/versions/{version}")
        model["name"] = version
        return model

    # -- answers -----------------------------------------------------------------------------------------------

    def _answer(self, handler: Callable[[Sent, list[str]], Any]) -> Callable[[Sent], Any]:
        def answer(sent: Sent) -> Any:
            if self.closed:
                from azure.core.exceptions import ServiceRequestError

                return ServiceRequestError("the test is over")
            with self._lock:
                return handler(sent, sent.path.split("/"))
        return answer

    @staticmethod
    def _missing(what: str) -> tuple[int, dict]:
        return 404, arm_error("ResourceNotFound", f"{what} was not found")

    def _model_versions(self, sent: Sent, parts: list[str]) -> Any:
        name = parts[-2]
        return {"value": [m for (n, _), m in self.models.items() if n == name]}

    def _get_model(self, sent: Sent, parts: list[str]) -> Any:
        found = self.models.get((parts[-3], parts[-1]))
        return found if found is not None else (404, arm_error("UserError", f"model {parts[-3]}:{parts[-1]} "
                                                                            "not found"))

    def _put_model(self, sent: Sent, parts: list[str]) -> Any:
        key = (parts[-3], parts[-1])
        model = json.loads(json.dumps(self.models.get(key) or body("ml_model_version")))
        model["properties"].update({k: v for k, v in sent.body["properties"].items() if v is not None})
        self.models[key] = model
        return model

    def _get_job(self, sent: Sent, parts: list[str]) -> Any:
        found = self.jobs.get(parts[-1])
        return found if found is not None else (404, arm_error("UserError", f"job {parts[-1]} not found"))

    def _put_job(self, sent: Sent, parts: list[str]) -> Any:
        name = parts[-1]
        if name in self.jobs:
            return 409, arm_error("Conflict", f"job {name} already exists")
        self.add_job(name, experiment=sent.body["properties"].get("experimentName") or "Default")
        return 201, self.jobs[name]

    def _get_endpoint(self, sent: Sent, parts: list[str]) -> Any:
        found = self.endpoints.get(parts[-1])
        if found is None:
            return self._missing(f"online endpoint {parts[-1]}")
        return self._read(found, (parts[-1],))

    def _put_endpoint(self, sent: Sent, parts: list[str]) -> Any:
        name = parts[-1]
        state = "Updating" if name in self.endpoints else "Creating"
        template = json.loads(json.dumps(body("ml_online_endpoint")).replace("churn-ep", name))
        template["properties"].update(traffic={}, mirrorTraffic={})
        endpoint = self._with_defaults(template, sent.body)
        endpoint["properties"]["provisioningState"] = state
        self.endpoints[name] = endpoint
        self.begun[(name,)] = self.clock.now()
        return self._begun(endpoint, (name,))

    def _list_deployments(self, sent: Sent, parts: list[str]) -> Any:
        endpoint = parts[-2]
        if endpoint not in self.endpoints:
            return self._missing(f"online endpoint {endpoint}")
        return {"value": [self._read(d, key) for key, d in self.deployments.items() if key[0] == endpoint]}

    def _get_deployment(self, sent: Sent, parts: list[str]) -> Any:
        key = (parts[-3], parts[-1])
        found = self.deployments.get(key)
        return self._missing(f"deployment {key[1]} of {key[0]}") if found is None else self._read(found, key)

    def _put_deployment(self, sent: Sent, parts: list[str]) -> Any:
        key = (parts[-3], parts[-1])
        if key[0] not in self.endpoints:
            return self._missing(f"online endpoint {key[0]}")
        state = "Updating" if key in self.deployments else "Creating"
        deployment = self._with_defaults(self.deployment(key[0], key[1], "azureml:churn:3"), sent.body)
        deployment["properties"]["provisioningState"] = state
        self.deployments[key] = deployment
        self.begun[key] = self.clock.now()
        return self._begun(deployment, key)

    @staticmethod
    def _with_defaults(template: dict, sent: dict) -> dict:
        """The resource the service keeps for a PUT: what was sent, and its defaults for what was not (a scale
        setting, probes); live and mirror traffic are what was sent, absent shares being 0."""
        resource = {**template, **{k: v for k, v in sent.items() if k != "properties" and v is not None}}
        resource["properties"] = {**template["properties"],
                                  **{k: v for k, v in sent["properties"].items() if v is not None}}
        return json.loads(json.dumps(resource))

    def _delete_deployment(self, sent: Sent, parts: list[str]) -> Any:
        key = (parts[-3], parts[-1])
        if self.deployments.pop(key, None) is None:
            return self._missing(f"deployment {key[1]} of {key[0]}")
        operation = self._operation(key)
        return 202, None, {"Location": f"https://management.azure.com{OPERATIONS}/mfeOperationResults/{operation}"
                                       "?api-version=2023-04-01-preview", "Retry-After": "30"}

    def _logs(self, sent: Sent, parts: list[str]) -> Any:
        return {"content": self.logs.get((parts[-4], parts[-2]), "")}

    def _operation_status(self, sent: Sent, parts: list[str]) -> Any:
        key = self._operations[parts[-1]]
        resource = self.endpoints.get(key[0]) if len(key) == 1 else self.deployments.get(key)
        if key[0] == _BATCH:
            resource = self.batch_endpoints.get(key[1]) if len(key) == 2 else self.batch_deployments.get(key[1:])
        state = self._read(resource, key)["properties"]["provisioningState"] if resource else "Succeeded"
        status = state if state in _SETTLED else "InProgress"
        answer = {**body("ml_operation_status"), "id": f"{OPERATIONS}/mfeOperationsStatus/{parts[-1]}",
                  "name": parts[-1], "status": status}
        if status == "Failed":
            answer["error"] = {"code": "DeploymentFailed", "message": self.logs.get(key) or "provisioning failed"}
        return answer

    def _operation_result(self, sent: Sent, parts: list[str]) -> Any:
        return 200, None

    def _get_batch_endpoint(self, sent: Sent, parts: list[str]) -> Any:
        found = self.batch_endpoints.get(parts[-1])
        return self._missing(f"batch endpoint {parts[-1]}") if found is None else self._read(found, (_BATCH,
                                                                                                    parts[-1]))

    def _put_batch_endpoint(self, sent: Sent, parts: list[str]) -> Any:
        name, key = parts[-1], (_BATCH, parts[-1])
        state = "Updating" if name in self.batch_endpoints else "Creating"
        template = json.loads(json.dumps(body("ml_batch_endpoint")).replace("churn-batch", name))
        template["properties"]["defaults"] = {"deploymentName": None}
        endpoint = self._with_defaults(template, sent.body)
        endpoint["properties"]["provisioningState"] = state
        self.batch_endpoints[name] = endpoint
        self.begun[key] = self.clock.now()
        return self._begun(endpoint, key)

    def _list_batch_deployments(self, sent: Sent, parts: list[str]) -> Any:
        endpoint = parts[-2]
        if endpoint not in self.batch_endpoints:
            return self._missing(f"batch endpoint {endpoint}")
        return {"value": [self._read(d, (_BATCH, *key)) for key, d in self.batch_deployments.items()
                          if key[0] == endpoint]}

    def _get_batch_deployment(self, sent: Sent, parts: list[str]) -> Any:
        key = (parts[-3], parts[-1])
        found = self.batch_deployments.get(key)
        if found is None:
            return self._missing(f"batch deployment {key[1]} of {key[0]}")
        return self._read(found, (_BATCH, *key))

    def _put_batch_deployment(self, sent: Sent, parts: list[str]) -> Any:
        key = (parts[-3], parts[-1])
        if key[0] not in self.batch_endpoints:
            return self._missing(f"batch endpoint {key[0]}")
        state = "Updating" if key in self.batch_deployments else "Creating"
        deployment = self._with_defaults(self.batch_deployment(key[0], key[1], "azureml:churn:3"), sent.body)
        deployment["properties"]["provisioningState"] = state
        self.batch_deployments[key] = deployment
        self.begun[(_BATCH, *key)] = self.clock.now()
        return self._begun(deployment, (_BATCH, *key))

    def _invoke_batch(self, sent: Sent, parts: list[str]) -> Any:
        """A scoring job: it becomes a job of the workspace (409 when one of that name exists), with the
        properties the request gave and no tags (a batch job takes none)."""
        request = sent.body["properties"]
        name = request.get("name") or f"batchjob-{len(self.jobs) + 1}"
        if name in self.jobs:
            return 409, arm_error("Conflict", f"job {name} already exists")
        experiment = (request.get("properties") or {}).get("experimentName") or "Default"
        self.add_job(name, experiment=experiment)
        self.jobs[name]["properties"]["properties"] = dict(request.get("properties") or {})
        self.jobs[name]["properties"]["tags"] = {}
        answer = json.loads(json.dumps(body("ml_batch_job")).replace("green-score", name))
        answer["properties"].update(experimentName=experiment, properties=dict(request.get("properties") or {}))
        return answer

    def _discover_registry(self, sent: Sent, parts: list[str]) -> Any:
        found = self.registries.get(parts[-2])
        return found if found is not None else (404, arm_error("NotFound", f"registry {parts[-2]} not found"))

    def _registry_model_versions(self, sent: Sent, parts: list[str]) -> Any:
        registry, name = parts[-4], parts[-2]
        return {"value": [m for (r, n, _), m in self.registry_models.items() if (r, n) == (registry, name)]}

    def _get_registry_model(self, sent: Sent, parts: list[str]) -> Any:
        found = self.registry_models.get((parts[-5], parts[-3], parts[-1]))
        return found if found is not None else (404, arm_error("UserError", f"model {parts[-3]}:{parts[-1]} not "
                                                                            f"found in registry {parts[-5]}"))

    def _import_into_registry(self, sent: Sent, parts: list[str]) -> Any:
        """A copy of a workspace's model version (``sourceAssetId``: azureml://locations/<region>/workspaces/
        <workspace guid>/models/<name>/versions/<version>) under the destination name and version; answered 202,
        the copy done when the operation's ``Location`` is read."""
        registry, copy = parts[-2], sent.body["properties"]
        source = re.match(r"^azureml://locations/[^/]+/workspaces/[^/]+/models/([^/]+)/versions/([^/]+)$",
                          copy["sourceAssetId"])
        if source is None or (source[1], source[2]) not in self.models:
            return 404, arm_error("UserError", f"asset {copy['sourceAssetId']} not found")
        key = (registry, copy["destinationName"], copy["destinationVersion"])
        self.registry_models[key] = self._registry_model(*key)
        operation = self._operation((registry,))
        return 202, None, {"Location": f"https://management.azure.com{OPERATIONS}/mfeOperationResults/{operation}"
                                       "?api-version=2021-10-01-dataplanepreview", "Retry-After": "1"}

    # -- provisioning ------------------------------------------------------------------------------------------

    def _read(self, resource: dict, key: tuple[str, ...]) -> dict:
        """The resource as a read finds it now: its operation's scripted state for the minute since it began
        (``Succeeded`` when none is scripted: it ended before this look)."""
        answer = json.loads(json.dumps(resource))
        if key in self.begun:
            script = self.scripts.get(key) or ["Succeeded"]
            minutes = int((self.clock.now() - self.begun[key]) / timedelta(minutes=1))
            answer["properties"]["provisioningState"] = script[min(minutes, len(script) - 1)]
        return answer

    def _operation(self, key: tuple[str, ...]) -> str:
        operation = f"op-{len(self._operations) + 1}"
        self._operations[operation] = key
        return operation

    def _begun(self, resource: dict, key: tuple[str, ...]) -> tuple[int, dict, dict]:
        operation = self._operation(key)
        return 201, resource, {"Azure-AsyncOperation": f"https://management.azure.com{OPERATIONS}/mfeOperationsStatus/"
                                                       f"{operation}?api-version=2023-04-01-preview",
                               "x-ms-async-operation-timeout": "PT1H"}


class _Now:
    def now(self) -> datetime:
        return datetime.now(UTC)

"""Azure ML gateway: the ``Gateway`` port on azure-ai-ml's ``MLClient``: models (and their copies in Azure ML
registries), data assets, pipeline jobs, online endpoints (managed and Kubernetes) and batch endpoints with their
scoring jobs.

Azure errors are translated at this boundary by ``azure_errors``: not found -> ``NotFound``; throttling,
timeouts, 5xx and connection failures -> ``TransientError``; authentication, authorisation and validation ->
``GatewayError``; a conflict is transient on endpoints and deployments (another operation is running on them)
and on a batch scoring job (another attempt is starting it), a ``GatewayError`` elsewhere. ``azure.ai.ml`` is
imported on first use only, never at module import (it costs ~1.5 s of cold start).

A registry is reached through a client of its own, built (and the registry discovered) on first use. The SDK's
``models.share`` builds its registry clients itself, without this gateway's client options (transport, retry
policy): they get azure-core's defaults.
"""
from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from controlplane.adapters.azure_errors import azure_errors, reason_of
from controlplane.adapters.identity import Lazy, app_credential
from controlplane.domain.errors import TransientError
from controlplane.domain.refs import AssetRef, registry_model
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

# Input types that name an asset; anything else a pipeline declares (string, integer, ...) is a literal.
_ASSET_TYPES = frozenset({"uri_file", "uri_folder", "mltable", "custom_model", "mlflow_model", "triton_model"})
_DATASTORE_PATH = re.compile(r"^azureml://(?:.*/)?datastores/(?P<store>[^/]+)/paths/(?P<path>.+)$")
_WORKSPACE_MODEL_ID = re.compile(r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers"
                                 r"/Microsoft\.MachineLearningServices/workspaces/[^/]+"
                                 r"/models/(?P<name>[^/]+)/versions/(?P<version>[^/]+)$", re.I)
# A registry's model version as a deployment names it (azureml://registries/...) or as ARM does (/subscriptions/...).
_REGISTRY_MODEL_ID = re.compile(r"^(?:azureml:/|/subscriptions/[^/]+/resourceGroups/[^/]+/providers"
                                r"/Microsoft\.MachineLearningServices)/registries/(?P<registry>[^/]+)"
                                r"/models/(?P<name>[^/]+)/versions/(?P<version>[^/]+)$", re.I)
# The last segment of a path that names a file (``scores.csv``, ``part-0001.parquet``) rather than a folder.
_FILE_NAME = re.compile(r"^[^/]*[^/.]\.[A-Za-z][A-Za-z0-9]{0,9}$")


def _text(value: Any) -> str:
    return str(getattr(value, "value", value)) if value is not None else ""


def _strings(mapping: Mapping | None) -> dict[str, str]:
    return {str(key): _text(value) for key, value in (mapping or {}).items()}


def _model_reference(model: Any) -> str:
    """``azureml:<name>:<version>`` for a model of this workspace, ``azureml://registries/<registry>/models/<name>/
    versions/<version>`` for a registry's (the forms deployments are requested with); other references unchanged."""
    reference = getattr(model, "id", None) or model
    if not isinstance(reference, str):
        return ""
    shared = _REGISTRY_MODEL_ID.match(reference)
    if shared:
        return registry_model(shared["registry"], shared["name"], shared["version"])
    match = _WORKSPACE_MODEL_ID.match(reference)
    return AssetRef(match["name"], match["version"]).uri if match else reference


def _model_info(model: Any) -> ModelInfo:
    tags, properties = _strings(model.tags), _strings(model.properties)
    context = getattr(model, "creation_context", None)
    created_by = tags.get("created_by") or properties.get("created_by") or _text(getattr(context, "created_by", ""))
    return ModelInfo(name=model.name, version=_text(model.version), tags=tags, properties=properties,
                     created_by=created_by, stage=_text(getattr(model, "stage", None)),
                     registered_by=_text(getattr(context, "created_by", "")))


def _job_info(job: Any, *, created: bool) -> JobInfo:
    return JobInfo(name=job.name, status=_text(job.status), experiment=_text(job.experiment_name),
                   studio_url=_text(job.studio_url), created=created, tags=_strings(job.tags),
                   properties=_strings(job.properties))


def _deployment_info(deployment: Any, endpoint: str) -> DeploymentInfo:
    return DeploymentInfo(endpoint=deployment.endpoint_name or endpoint, name=deployment.name,
                          model=_model_reference(deployment.model), instance_type=_text(deployment.instance_type),
                          instance_count=int(deployment.instance_count or 0),
                          provisioning_state=_text(deployment.provisioning_state))


def _batch_deployment_info(deployment: Any, endpoint: str) -> DeploymentInfo:
    resources = getattr(deployment, "resources", None)
    state = _text(deployment.provisioning_state)
    # A batch deployment has no container log to read: Azure ML says only that provisioning failed.
    return DeploymentInfo(endpoint=deployment.endpoint_name or endpoint, name=deployment.name,
                          model=_model_reference(deployment.model),
                          instance_type=_text(deployment.compute).rsplit("/", 1)[-1],  # the cluster's name
                          instance_count=int(getattr(resources, "instance_count", None) or 0),
                          provisioning_state=state,
                          error="batch deployment provisioning failed" if state.lower() == "failed" else "")


def _default_deployment(endpoint: Any) -> str | None:
    """``defaults.deployment_name``: a REST model when read from Azure, a dict when set here."""
    defaults = endpoint.defaults
    name = getattr(defaults, "deployment_name", None)
    if name is None and isinstance(defaults, Mapping):
        name = defaults.get("deployment_name") or defaults.get("deploymentName")
    return str(name) if name else None


def _gave_up_connecting(exc: BaseException) -> bool:
    """The SDK's own error when the scoring URI refused every connection of its five attempts: it keeps none of
    the connection errors, so only its message tells it from a refusal of the job."""
    return exc.__cause__ is None and str(getattr(exc, "message", "")).startswith("Max retry attempts reached")


def _batch_deployment(request: BatchDeploymentRequest) -> Any:
    """A model batch deployment whose jobs fail when any mini-batch fails (error threshold 0): a scoring job that
    skipped files must not pass as a test stage."""
    from azure.ai.ml.constants import BatchDeploymentOutputAction
    from azure.ai.ml.entities import (
        CodeConfiguration,
        ModelBatchDeployment,
        ModelBatchDeploymentSettings,
        ResourceConfiguration,
    )

    spec = request.spec
    code = (CodeConfiguration(code=spec.code, scoring_script=spec.scoring_script)
            if spec.code or spec.scoring_script else None)
    settings = ModelBatchDeploymentSettings(
        mini_batch_size=request.mini_batch_size,
        max_concurrency_per_instance=request.max_concurrency_per_instance,
        output_action=BatchDeploymentOutputAction.APPEND_ROW, output_file_name=request.output_file_name,
        error_threshold=0, environment_variables=dict(spec.environment_variables) or None)
    return ModelBatchDeployment(
        name=request.name, endpoint_name=request.endpoint, model=request.model, compute=request.compute,
        environment=spec.environment, code_configuration=code, settings=settings,
        resources=ResourceConfiguration(instance_count=request.instance_count),
        tags={str(k): str(v) for k, v in request.tags.items()})


def _online_deployment(request: DeploymentRequest, template: Any) -> Any:
    """The deployment to create: the request's model and size, its spec where it gives one, else the spec of the
    deployment it replaces (a redeploy replaces the whole spec: leaving a field out would drop it)."""
    from azure.ai.ml.entities import (
        CodeConfiguration,
        KubernetesOnlineDeployment,
        ManagedOnlineDeployment,
        OnlineRequestSettings,
        ProbeSettings,
    )

    spec = request.spec
    code = template.code_configuration if template is not None else None
    if spec.code or spec.scoring_script:
        code = CodeConfiguration(code=spec.code or (code.code if code else None),
                                 scoring_script=spec.scoring_script or (code.scoring_script if code else None))

    def pick(name: str, given: Mapping | None, build: Any) -> Any:
        return build(**given) if given else getattr(template, name, None)

    variables = {**(getattr(template, "environment_variables", None) or {}), **spec.environment_variables}
    insights = spec.app_insights_enabled
    if insights is None and template is not None:
        insights = bool(template.app_insights_enabled)
    # On an attached Kubernetes compute the endpoint is a Kubernetes one, and so are its deployments.
    kind = KubernetesOnlineDeployment if request.compute else ManagedOnlineDeployment
    return kind(
        name=request.name, endpoint_name=request.endpoint, model=request.model,
        instance_type=request.instance_type, instance_count=request.instance_count,
        tags={str(k): str(v) for k, v in request.tags.items()},
        environment=spec.environment or getattr(template, "environment", None), code_configuration=code,
        environment_variables=variables or None,
        request_settings=pick("request_settings", spec.request_settings, OnlineRequestSettings),
        liveness_probe=pick("liveness_probe", spec.liveness_probe, ProbeSettings),
        readiness_probe=pick("readiness_probe", spec.readiness_probe, ProbeSettings),
        scale_settings=getattr(template, "scale_settings", None), app_insights_enabled=bool(insights))


def _shares(mapping: Mapping | None) -> dict[str, int]:
    return {str(name): int(share) for name, share in (mapping or {}).items()}


def _declared_type(declared: Any) -> str | None:
    """The type a pipeline or component declares for an input, when it declares one."""
    if declared is None:
        return None
    if hasattr(declared, "result"):  # a pipeline's own input: look at the value the YAML gave it
        declared = declared.result()
    if isinstance(declared, Mapping):
        return declared.get("type")
    return getattr(declared, "type", None)


def _job_input(value: str, declared: str | None) -> Any:
    """A job input value: ``azureml:`` references become data (or model) inputs, and so does any path or URL given
    to an input the pipeline declares as data (a local file is uploaded with the job); anything else a literal."""
    from azure.ai.ml import Input
    from azure.ai.ml.constants import AssetTypes

    if not isinstance(value, str):
        return value
    if not value.startswith("azureml:"):
        return Input(type=declared, path=value) if declared in _ASSET_TYPES else value
    if declared is not None and declared not in _ASSET_TYPES:
        return value  # the pipeline declares a literal (e.g. a string that happens to name an asset)
    path = value
    if "@" in value and not value.startswith("azureml://"):
        # The SDK resolves ``name@label`` only without the prefix (as its YAML loader strips it); with it, it
        # looks up an asset literally named "azureml:name".
        path = value.removeprefix("azureml:")
    return Input(type=declared or AssetTypes.URI_FOLDER, path=path)


def _component_reference(source: str) -> tuple[str, str | None, str | None]:
    """(name, version, label) of ``azureml:<name>:<version>`` or ``azureml:<name>@<label>``."""
    reference = source.removeprefix("azureml:")
    if "@" in reference:
        name, label = reference.rsplit("@", 1)
        version = None
    else:
        name, _, version = reference.partition(":")
        label = None
    if not name or not (version or label):
        raise GatewayError("submit_pipeline", f"component reference must be azureml:<name>:<version>: {source!r}")
    return name, version, label


class AzureMLGateway:
    """The ``Gateway`` port on one Azure ML workspace."""

    def __init__(self, subscription_id: str, resource_group: str, workspace: str, credential: Any = None,
                 **client_kwargs: Any) -> None:
        self.subscription_id = subscription_id
        self.resource_group = resource_group
        self.workspace = workspace
        self._credential = credential
        # The SDK draws progress bars on the console for uploads and long operations: noise in a function host.
        self._client_kwargs = {"show_progress": False, **client_kwargs}
        self._client = Lazy(self._build)
        self._registries: dict[str, Any] = {}
        self._registries_lock = threading.Lock()

    def _build(self) -> Any:
        from azure.ai.ml import MLClient

        return MLClient(self._credential or app_credential(), self.subscription_id, self.resource_group,
                        self.workspace, **self._client_kwargs)

    def _ml(self) -> Any:
        return self._client.get()

    def _registry(self, name: str) -> Any:
        """A client of the Azure ML registry ``name``, built on first use (it asks the registry discovery service
        where the registry lives) and reused."""
        with self._registries_lock:
            client = self._registries.get(name)
            if client is None:
                from azure.ai.ml import MLClient

                client = MLClient(self._credential or app_credential(), self.subscription_id, self.resource_group,
                                  registry_name=name, **self._client_kwargs)
                self._registries[name] = client
            return client

    # -- data -------------------------------------------------------------------------------------------------

    def data_asset_url(self, name: str, version: str) -> str:
        """The https URL of a file data asset (a reference dataset) in a blob datastore of the workspace."""
        with azure_errors("data_asset_url"):
            client = self._ml()
            path = str(client.data.get(name, version=version).path)
            if path.startswith("https://"):
                return path
            match = _DATASTORE_PATH.match(path)
            if match is None or path.endswith("/"):
                raise GatewayError("data_asset_url", f"{name}:{version} is at {path}; a reference must be one "
                                                     "csv or parquet file (uri_file) in a blob datastore")
            store = client.datastores.get(match["store"])
            account, container = getattr(store, "account_name", None), getattr(store, "container_name", None)
            if not account or not container:
                raise GatewayError("data_asset_url", f"datastore {match['store']} is not a blob container")
            endpoint = getattr(store, "endpoint", None) or "core.windows.net"
            return f"https://{account}.blob.{endpoint}/{container}/{match['path']}"

    def register_data(self, name: str, version: str, path: str, description: str = "",
                      tags: Mapping[str, str] | None = None) -> DataAsset:
        from azure.ai.ml.constants import AssetTypes
        from azure.ai.ml.entities import Data
        from azure.core.exceptions import ResourceNotFoundError

        with azure_errors("register_data"):
            client = self._ml()
            try:
                found = client.data.get(name, version=version)
            except ResourceNotFoundError:
                found = None
            if found is not None:
                if str(found.path) != path:
                    raise GatewayError("register_data", f"data asset {name}:{version} exists at {found.path}, "
                                                        f"not at {path}")
                return DataAsset(name, version, path)
            made = client.data.create_or_update(Data(
                name=name, version=version, path=path, type=AssetTypes.URI_FILE, description=description or None,
                tags={str(k): str(v) for k, v in (tags or {}).items()}))
            return DataAsset(made.name, str(made.version), str(made.path), created=True)

    # -- models -----------------------------------------------------------------------------------------------

    def get_model(self, name: str, version: str) -> ModelInfo:
        with azure_errors("get_model"):
            return _model_info(self._ml().models.get(name, version=version))

    def tag_model(self, name: str, version: str, tags: Mapping[str, str], stage: str | None = None) -> ModelInfo:
        with azure_errors("tag_model"):
            client = self._ml()
            model = client.models.get(name, version=version)
            model.tags = {**(model.tags or {}), **{str(k): str(v) for k, v in tags.items()}}
            if stage is not None:
                model.stage = stage
            return _model_info(client.models.create_or_update(model))

    def share_model(self, name: str, version: str, registry: str) -> ModelInfo:
        from azure.core.exceptions import ResourceNotFoundError

        with azure_errors("share_model"):
            try:
                return _model_info(self._registry(registry).models.get(name, version=version))
            except ResourceNotFoundError:
                pass
            try:
                # The SDK copies the version and waits for the copy: the registry holds it when this returns.
                shared = self._ml().models.share(name, version, share_with_name=name, share_with_version=version,
                                                 registry_name=registry)
            except Exception:
                # Another attempt may have copied it between the lookup and the copy (the SDK then refuses to copy
                # a version the registry has, or the registry refuses it): the registry holding it is what was asked.
                try:
                    return _model_info(self._registry(registry).models.get(name, version=version))
                except ResourceNotFoundError:
                    pass
                raise
            return _model_info(shared)

    # -- jobs -------------------------------------------------------------------------------------------------

    def get_job(self, name: str) -> JobInfo:
        with azure_errors("get_job"):
            return _job_info(self._ml().jobs.get(name), created=False)

    def submit_pipeline(self, request: PipelineRequest) -> JobInfo:
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

        with azure_errors("submit_pipeline"):
            client = self._ml()
            try:
                return _job_info(client.jobs.get(request.name), created=False)
            except ResourceNotFoundError:
                pass
            job = self._pipeline(client, request)
            try:
                # No client-side validation: the service validates the job anyway, and the SDK's validation
                # reports a throttled or failed compute lookup as an invalid job, that is, as permanent.
                created = client.jobs.create_or_update(job, experiment_name=request.experiment,
                                                       skip_validation=True)
            except HttpResponseError as exc:
                if exc.status_code != 409:
                    raise
                # Another attempt created the job between our lookup and our submission.
                try:
                    return _job_info(client.jobs.get(request.name), created=False)
                except ResourceNotFoundError:
                    raise exc from None  # a conflict about something else: report the conflict
            return _job_info(created, created=True)

    def _pipeline(self, client: Any, request: PipelineRequest) -> Any:
        if request.source.startswith("azureml:"):
            job = self._pipeline_from_component(client, request)
        else:
            job = self._pipeline_from_yaml(request)
        job.name = request.name
        job.experiment_name = request.experiment
        job.tags = {**(job.tags or {}), **{str(k): str(v) for k, v in request.tags.items()}}
        if request.compute:
            job.compute = request.compute
            job.settings.default_compute = request.compute
        return job

    @staticmethod
    def _pipeline_from_yaml(request: PipelineRequest) -> Any:
        from azure.ai.ml import load_job
        from azure.ai.ml.entities import PipelineJob

        try:
            job = load_job(source=request.source)
        except Exception as exc:
            # Loading only reads and parses a local file: whatever fails there fails again on retry.
            raise GatewayError("submit_pipeline", f"cannot load pipeline {request.source}: {reason_of(exc)}") from exc
        if not isinstance(job, PipelineJob):
            raise GatewayError("submit_pipeline", f"{request.source} is a {job.type} job, not a pipeline")
        for name, value in request.inputs.items():
            if name not in job.inputs:
                raise GatewayError("submit_pipeline", f"pipeline {request.source} declares no input {name!r}")
            setattr(job.inputs, name, _job_input(value, _declared_type(job.inputs[name])))
        return job

    @staticmethod
    def _pipeline_from_component(client: Any, request: PipelineRequest) -> Any:
        from azure.ai.ml.dsl import pipeline

        name, version, label = _component_reference(request.source)
        component = client.components.get(name, version=version) if version else client.components.get(
            name, label=label)
        declared = component.inputs or {}
        inputs = {key: _job_input(value, _declared_type(declared.get(key))) for key, value in request.inputs.items()}

        @pipeline(display_name=request.name, experiment_name=request.experiment)
        def pipeline_from_component():
            component(**inputs)

        return pipeline_from_component()

    # -- online endpoints -------------------------------------------------------------------------------------

    # Every change below begins a long-running operation and returns without waiting for it: the SDK's poller
    # is dropped (it polls on a daemon thread of its own, every 5 s or as Azure's Retry-After says, until the
    # operation ends; nothing reads its result) and later sweeps read the state with get_endpoint / get_deployment
    # (controlplane.handlers.operations).

    def create_endpoint(self, name: str, auth_mode: str, compute: str | None = None) -> EndpointState:
        from azure.ai.ml.entities import KubernetesOnlineEndpoint, ManagedOnlineEndpoint

        tags = {"controlplane.created": "true"}
        endpoint = (KubernetesOnlineEndpoint(name=name, auth_mode=auth_mode, compute=compute, tags=tags) if compute
                    else ManagedOnlineEndpoint(name=name, auth_mode=auth_mode, tags=tags))
        with azure_errors("create_endpoint", conflict_is_transient=True):
            self._ml().online_endpoints.begin_create_or_update(endpoint)
            return EndpointState(name=name, traffic={}, mirror_traffic={}, provisioning_state="Creating")

    def deploy(self, request: DeploymentRequest) -> DeploymentInfo:
        with azure_errors("deploy", conflict_is_transient=True):
            client = self._ml()
            template = client.online_deployments.get(request.copy_from, request.endpoint) if request.copy_from else None
            deployment = _online_deployment(request, template)
            client.online_deployments.begin_create_or_update(deployment)
            return DeploymentInfo(request.endpoint, request.name, request.model, request.instance_type,
                                  request.instance_count, "Creating")

    def scale(self, endpoint: str, deployment: str, instance_count: int) -> DeploymentInfo:
        with azure_errors("scale", conflict_is_transient=True):
            client = self._ml()
            current = client.online_deployments.get(deployment, endpoint)
            current.instance_count = instance_count
            client.online_deployments.begin_create_or_update(current)
            return replace(_deployment_info(current, endpoint), provisioning_state="Updating")

    def delete_deployment(self, endpoint: str, deployment: str) -> None:
        try:
            with azure_errors("delete_deployment", conflict_is_transient=True):
                self._ml().online_deployments.begin_delete(deployment, endpoint)
        except NotFound:
            pass  # already gone: the state the caller asked for

    def get_endpoint(self, name: str) -> EndpointState:
        with azure_errors("get_endpoint"):
            client = self._ml()
            return self._endpoint_state(client, client.online_endpoints.get(name))

    def get_deployment(self, endpoint: str, name: str) -> DeploymentInfo:
        with azure_errors("get_deployment"):
            client = self._ml()
            info = _deployment_info(client.online_deployments.get(name, endpoint), endpoint)
            if info.provisioning_state.lower() == "failed":
                info = replace(info, error=self._failure(client, endpoint, name))
            return info

    @staticmethod
    def _failure(client: Any, endpoint: str, name: str) -> str:
        """The end of a failed deployment's container log: where a scoring script's error shows."""
        try:
            logs = client.online_deployments.get_logs(name, endpoint, lines=20)
        except Exception as exc:  # the logs are a courtesy: the failure is reported without them
            return f"provisioning failed (no container logs: {reason_of(exc)})"
        tail = " | ".join(line.strip() for line in str(logs).splitlines()[-5:] if line.strip())
        return f"provisioning failed; container log: {tail[:1500]}" if tail else "provisioning failed"

    def set_traffic(self, endpoint: str, traffic: Mapping[str, int],
                    mirror: Mapping[str, int] | None = None) -> EndpointState:
        validate_traffic(traffic, mirror)
        with azure_errors("set_traffic", conflict_is_transient=True):
            client = self._ml()
            current = client.online_endpoints.get(endpoint)
            current.traffic = dict(traffic)
            if mirror is not None:
                current.mirror_traffic = dict(mirror)
            client.online_endpoints.begin_create_or_update(current)
            return EndpointState(name=endpoint, traffic=dict(traffic), mirror_traffic=_shares(current.mirror_traffic),
                                 provisioning_state="Updating")

    @staticmethod
    def _endpoint_state(client: Any, endpoint: Any) -> EndpointState:
        deployments = tuple(_deployment_info(d, endpoint.name)
                            for d in client.online_deployments.list(endpoint_name=endpoint.name))
        return EndpointState(name=endpoint.name, traffic=_shares(endpoint.traffic),
                             mirror_traffic=_shares(endpoint.mirror_traffic), deployments=deployments,
                             provisioning_state=_text(endpoint.provisioning_state) or "Succeeded")

    # -- batch endpoints --------------------------------------------------------------------------------------

    # As above, every change begins a long-running operation and returns without waiting for it: the poller is
    # dropped and get_batch_endpoint / get_batch_deployment read the state later.

    def create_batch_endpoint(self, name: str) -> BatchEndpointState:
        from azure.ai.ml.entities import BatchEndpoint

        with azure_errors("create_batch_endpoint", conflict_is_transient=True):
            self._ml().batch_endpoints.begin_create_or_update(
                BatchEndpoint(name=name, auth_mode="AADToken", tags={"controlplane.created": "true"}))
            return BatchEndpointState(name=name, default_deployment=None, provisioning_state="Creating")

    def get_batch_endpoint(self, name: str) -> BatchEndpointState:
        with azure_errors("get_batch_endpoint"):
            client = self._ml()
            endpoint = client.batch_endpoints.get(name)
            deployments = tuple(_batch_deployment_info(d, name)
                                for d in client.batch_deployments.list(endpoint_name=name))
            return BatchEndpointState(name=endpoint.name, default_deployment=_default_deployment(endpoint),
                                      deployments=deployments,
                                      provisioning_state=_text(endpoint.provisioning_state) or "Succeeded")

    def deploy_batch(self, request: BatchDeploymentRequest) -> DeploymentInfo:
        deployment = _batch_deployment(request)
        with azure_errors("deploy_batch", conflict_is_transient=True):
            self._ml().batch_deployments.begin_create_or_update(deployment)
            return DeploymentInfo(request.endpoint, request.name, request.model, request.compute,
                                  request.instance_count, "Creating")

    def get_batch_deployment(self, endpoint: str, name: str) -> DeploymentInfo:
        with azure_errors("get_batch_deployment"):
            return _batch_deployment_info(self._ml().batch_deployments.get(name, endpoint), endpoint)

    def set_batch_default(self, endpoint: str, deployment: str) -> BatchEndpointState:
        with azure_errors("set_batch_default", conflict_is_transient=True):
            client = self._ml()
            current = client.batch_endpoints.get(endpoint)
            current.defaults = {"deployment_name": deployment}
            client.batch_endpoints.begin_create_or_update(current)
            return BatchEndpointState(name=endpoint, default_deployment=deployment, provisioning_state="Updating")

    def invoke_batch(self, endpoint: str, deployment: str, input_path: str, job_name: str,
                     experiment: str = "", tags: Mapping[str, str] | None = None) -> JobInfo:
        from azure.ai.ml import Input
        from azure.ai.ml.constants import AssetTypes
        from azure.ai.ml.exceptions import MlException
        from azure.core.exceptions import ResourceNotFoundError

        with azure_errors("invoke_batch", conflict_is_transient=True):
            client = self._ml()
            try:
                return _job_info(client.jobs.get(job_name), created=False)
            except ResourceNotFoundError:
                pass
            last = input_path.rsplit("/", 1)[-1] if "/" in input_path else ""  # not in azureml:<name>:<version>
            kind = AssetTypes.URI_FILE if _FILE_NAME.match(last) else AssetTypes.URI_FOLDER
            # A batch job takes no tags: they go into its properties. The SDK overrides the whole of the
            # properties with its own {experimentName} when given experiment_name, so the experiment goes there too.
            properties = {str(k): str(v) for k, v in (tags or {}).items()}
            if experiment:
                properties["experimentName"] = experiment
            try:
                job = client.batch_endpoints.invoke(
                    endpoint_name=endpoint, deployment_name=deployment, input=Input(type=kind, path=input_path),
                    job_name=job_name, params_override=[{"properties": properties}] if properties else None)
            except MlException as exc:
                if _gave_up_connecting(exc):
                    raise TransientError("invoke_batch", reason_of(exc)) from exc
                raise
            return JobInfo(name=job.name or job_name, status=_text(job.status), experiment=experiment,
                           created=True, properties=properties)  # as get_job will read it: no tags

"""The Azure ML gateway port: everything the control plane asks of a workspace.

Adapters: ``controlplane.adapters.azureml.AzureMLGateway`` (azure-ai-ml ``MLClient``) and, in tests,
hand-written fakes. Errors cross this port only as ``TransientError`` (throttling, 5xx, timeouts)
or ``GatewayError`` (a ``PermanentError``: not found, validation, authorisation).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from controlplane.domain.errors import GatewayError, NotFound  # noqa: F401 - errors crossing this port
from controlplane.domain.refs import registry_model  # noqa: F401 - how deployments name a registry's model


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    tags: Mapping[str, str] = field(default_factory=dict)
    properties: Mapping[str, str] = field(default_factory=dict)
    created_by: str = ""  # the 'created_by' tag or property: whatever whoever registered it wrote
    stage: str = ""
    registered_by: str = ""  # Azure ML's own record (system data) of who registered the version


@dataclass(frozen=True)
class PipelineRequest:
    """A pipeline job: from a YAML file, or from a registered component (``azureml:name:version``)."""

    name: str  # deterministic: a resubmission finds the same job
    experiment: str
    source: str
    inputs: Mapping[str, str] = field(default_factory=dict)
    compute: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class JobInfo:
    name: str
    status: str
    experiment: str = ""
    studio_url: str = ""
    created: bool = False  # False when the job existed already (a repeated submission)
    tags: Mapping[str, str] = field(default_factory=dict)
    properties: Mapping[str, str] = field(default_factory=dict)  # where a test stage writes its results


@dataclass(frozen=True)
class DataAsset:
    """A registered data asset version: one file (``uri_file``) at ``path``."""

    name: str
    version: str
    path: str
    created: bool = False  # False when that version was registered already (a repeated export)


@dataclass(frozen=True)
class DeploymentSpec:
    """What a model needs to serve besides its weights. Only MLflow models deploy without an environment and
    a scoring script; a redeploy replaces the whole spec, so what is not given here is copied from the
    deployment being replaced (``DeploymentRequest.copy_from``)."""

    environment: str | None = None  # azureml:<name>:<version> or an ARM id
    code: str | None = None  # the scoring code: azureml:<name>:<version>, an ARM id or a local folder
    scoring_script: str | None = None
    environment_variables: Mapping[str, str] = field(default_factory=dict)
    request_settings: Mapping[str, int] = field(default_factory=dict)
    liveness_probe: Mapping[str, int] = field(default_factory=dict)
    readiness_probe: Mapping[str, int] = field(default_factory=dict)
    app_insights_enabled: bool | None = None

    def to_json(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value not in (None, {})}

    @staticmethod
    def from_json(data: Mapping[str, Any] | None) -> DeploymentSpec:
        return DeploymentSpec(**(data or {}))


@dataclass(frozen=True)
class DeploymentRequest:
    endpoint: str
    name: str
    model: str  # azureml:<name>:<version>
    instance_type: str
    instance_count: int = 1
    tags: Mapping[str, str] = field(default_factory=dict)
    spec: DeploymentSpec = DeploymentSpec()
    copy_from: str | None = None  # the deployment whose spec fills what ``spec`` leaves out
    auth_mode: str = "key"  # for the endpoint, when it has to be created
    compute: str | None = None  # an attached Kubernetes compute (AKS or Arc); None: managed


@dataclass(frozen=True)
class BatchDeploymentRequest:
    """A model batch deployment: scoring jobs on ``compute`` (a cluster), ``mini_batch_size`` files at a time."""

    endpoint: str
    name: str
    model: str  # azureml:<name>:<version> or azureml://registries/<registry>/models/<name>/versions/<version>
    compute: str
    instance_count: int = 1
    mini_batch_size: int = 10
    max_concurrency_per_instance: int = 1
    output_file_name: str = "predictions.csv"
    tags: Mapping[str, str] = field(default_factory=dict)
    spec: DeploymentSpec = DeploymentSpec()  # environment and scoring script (MLflow models need neither)


@dataclass(frozen=True)
class BatchEndpointState:
    name: str
    default_deployment: str | None  # the deployment a scoring job without one runs on
    deployments: tuple[DeploymentInfo, ...] = ()
    provisioning_state: str = "Succeeded"


@dataclass(frozen=True)
class DeploymentInfo:
    endpoint: str
    name: str
    model: str
    instance_type: str = ""
    instance_count: int = 0
    provisioning_state: str = ""
    error: str = ""  # why provisioning failed, when it did


@dataclass(frozen=True)
class EndpointState:
    name: str
    traffic: Mapping[str, int]
    mirror_traffic: Mapping[str, int]
    deployments: tuple[DeploymentInfo, ...] = ()
    provisioning_state: str = "Succeeded"

    def serving(self) -> str | None:
        """The deployment with the most live traffic, if any."""
        live = {name: share for name, share in self.traffic.items() if share > 0}
        return max(live, key=live.__getitem__) if live else None


def validate_traffic(traffic: Mapping[str, int], mirror: Mapping[str, int] | None) -> None:
    """Refuse a traffic split Azure ML would refuse, before anything is sent."""

    def refuse(reason: str) -> GatewayError:
        return GatewayError("set_traffic", reason)

    for name, share in {**traffic, **(mirror or {})}.items():
        if isinstance(share, bool) or not isinstance(share, int):
            raise refuse(f"share of {name!r} must be an integer, got {share!r}")
    if any(not 0 <= share <= 100 for share in traffic.values()):
        raise refuse(f"live traffic shares must be between 0 and 100: {dict(traffic)}")
    total = sum(traffic.values())
    if total not in (0, 100):
        raise refuse(f"live traffic shares must sum to 100 (or all be 0), got {total}: {dict(traffic)}")
    mirrored = {name: share for name, share in (mirror or {}).items() if share != 0}
    if any(not 0 < share <= 50 for share in mirrored.values()):
        raise refuse(f"mirror traffic shares must be between 0 and 50: {dict(mirror or {})}")
    if len(mirrored) > 1:
        raise refuse(f"mirror traffic can go to one deployment only: {mirrored}")
    for name in mirrored:
        if traffic.get(name, 0):
            raise refuse(f"deployment {name!r} cannot receive mirror traffic while it serves live traffic")


class Gateway(Protocol):
    def get_model(self, name: str, version: str) -> ModelInfo: ...

    def tag_model(self, name: str, version: str, tags: Mapping[str, str], stage: str | None = None) -> ModelInfo:
        """Merge ``tags`` into the model's tags (and set its stage); returns the updated model."""

    def submit_pipeline(self, request: PipelineRequest) -> JobInfo:
        """Submit once: when a job of that name exists, return it instead of starting another."""

    def get_job(self, name: str) -> JobInfo:
        """A job as it is now, with its tags and properties."""

    def share_model(self, name: str, version: str, registry: str) -> ModelInfo:
        """Copy the workspace's model version into the Azure ML ``registry`` under the same name and version,
        once: a version the registry holds already is returned as it is. Deployments in any workspace then
        refer to it as ``registry_model(registry, name, version)``."""

    def register_data(self, name: str, version: str, path: str, description: str = "",
                      tags: Mapping[str, str] | None = None) -> DataAsset:
        """Register the file at ``path`` as the data asset ``name:version`` (``uri_file``), once: a version
        registered already at that path is returned as it is; at another path it is a ``GatewayError``."""

    # The changes to endpoints and deployments below are long-running operations in Azure ML (a deployment can
    # take 15 minutes or more): each one is begun and returns at once; ``get_endpoint`` and ``get_deployment``
    # say how it goes (``controlplane.handlers.operations`` watches them).

    def create_endpoint(self, name: str, auth_mode: str, compute: str | None = None) -> EndpointState:
        """Begin creating a managed online endpoint."""

    def deploy(self, request: DeploymentRequest) -> DeploymentInfo:
        """Begin creating (or replacing) a managed online deployment, its spec completed from ``copy_from``."""

    def scale(self, endpoint: str, deployment: str, instance_count: int) -> DeploymentInfo:
        """Begin changing a deployment's instance count."""

    def delete_deployment(self, endpoint: str, deployment: str) -> None:
        """Begin deleting a deployment; one already gone is not an error."""

    def set_traffic(self, endpoint: str, traffic: Mapping[str, int],
                    mirror: Mapping[str, int] | None = None) -> EndpointState:
        """Begin setting live traffic (shares summing to 100 or 0) and, when given, mirror traffic (<= 50)."""

    def get_endpoint(self, name: str) -> EndpointState:
        """Traffic, mirror traffic, deployments and provisioning state of an online endpoint."""

    def get_deployment(self, endpoint: str, name: str) -> DeploymentInfo:
        """One deployment as it is now (``NotFound`` when it does not exist)."""

    # Batch endpoints: a deployment scores files in jobs; the endpoint's default deployment is the one a job
    # without a deployment named runs on. Changes are long-running operations, as above.

    def create_batch_endpoint(self, name: str) -> BatchEndpointState:
        """Begin creating a batch endpoint."""

    def get_batch_endpoint(self, name: str) -> BatchEndpointState:
        """Default deployment, deployments and provisioning state of a batch endpoint (``NotFound``)."""

    def deploy_batch(self, request: BatchDeploymentRequest) -> DeploymentInfo:
        """Begin creating (or replacing) a model batch deployment; the endpoint's default is left as it is (but Azure
        ML makes an endpoint's first deployment its default)."""

    def get_batch_deployment(self, endpoint: str, name: str) -> DeploymentInfo:
        """One batch deployment as it is now (``NotFound`` when it does not exist)."""

    def set_batch_default(self, endpoint: str, deployment: str) -> BatchEndpointState:
        """Begin making ``deployment`` the endpoint's default."""

    def invoke_batch(self, endpoint: str, deployment: str, input_path: str, job_name: str,
                     experiment: str = "", tags: Mapping[str, str] | None = None) -> JobInfo:
        """Start a scoring job of ``deployment`` on the data at ``input_path`` (a uri_folder or uri_file), once:
        a job named ``job_name`` that exists already is returned instead of starting another."""


class Workspaces(Protocol):
    """The Azure ML workspaces of the policy's environments (dev, staging, prod...), each reached through its own
    gateway, built on first use. ``None`` is the home workspace: the one the settings name."""

    def gateway(self, environment: str | None = None) -> Gateway: ...

"""What a decision asks the outbox to do: one frozen request type per kind of work.

A verdict lists its requests; the ledger stores each as JSON on its task (``to_json``, keyed by
``operation`` as tasks have always been stored) and a dispatcher reads it back with ``parse_request``, which
refuses a malformed request with a ``PermanentError`` naming the field (the task is dead-lettered with that
reason instead of being retried). Each request knows its task kind and the target it acts on, so no caller
spells them out.

    SubmitPipeline   jobs.create_or_update                      retraining pipeline job
    CheckDrift       jobs.create_or_update                      a large window's drift check, as a job
    DeployModel      online_deployments.begin_create_or_update  a deployment at 0% traffic (staging), then its test
    DeployBatch      batch_deployments.begin_create_or_update   a batch deployment: tried (staging) or the default
    SetBatchDefault  batch_endpoints.set_default                a batch endpoint's default switched back
    StartRollout     rollout.start                              production rollout (opened by an approval)
    SetTraffic       online_endpoints.set_traffic
    Scale            online_deployments.scale
    RollBack         online_endpoints.rollback                  scale back, then restore the traffic
    Notify           notify                                     a message to a channel (reviewers, teams)
    PublishDecision  eventgrid.publish                          the decision as a CloudEvent
    RenderReport     report.render                              a drift report for reviewers
    ExportLabels     labelling.export                           a window's rows for labelling
    ReadSignals      alert.signals                              an alert target's recent signals
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from enum import StrEnum
from typing import Any, ClassVar, TypeVar

from controlplane.domain.errors import PermanentError
from controlplane.domain.refs import AssetRef


class TaskKind(StrEnum):
    PROMOTION = "promotion"
    RETRAINING = "retraining"
    REVIEW = "review"
    ROLLBACK = "rollback"
    SCALE = "scale"
    NOTIFY = "notify"
    PUBLISH = "publish"
    ROLLOUT = "rollout"
    TRAFFIC = "traffic"
    DRIFT = "drift"  # a drift check run as an Azure ML job


class RequestError(PermanentError):
    """A stored request lacks a field or holds a malformed one; ``subject`` is the field's path."""

    template = "{operation}: {subject} {reason}"

    def __init__(self, operation: str, path: str, reason: str) -> None:
        self.operation = operation
        super().__init__(path, reason)


class _Fields:
    """Typed reads of a stored request; a missing or malformed field raises ``RequestError`` naming its path."""

    def __init__(self, operation: str, data: Mapping[str, Any], path: str = "request") -> None:
        self._operation, self._data, self._path = operation, data, path

    def _refuse(self, key: str, reason: str) -> RequestError:
        return RequestError(self._operation, f"{self._path}.{key}", reason)

    def has(self, key: str) -> bool:
        return self._data.get(key) not in (None, "")

    def get(self, key: str) -> Any:
        return self._data.get(key)

    def text(self, key: str) -> str:
        value = self._data.get(key)
        if not isinstance(value, str) or not value:
            raise self._refuse(key, "is missing" if value is None else f"must be a non-empty string, not {value!r}")
        return value

    def optional_text(self, key: str) -> str | None:
        return self.text(key) if self.has(key) else None

    def integer(self, key: str, default: int | None = None) -> int:
        value = self._data.get(key, default)
        if value is None:
            raise self._refuse(key, "is missing")
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._refuse(key, f"must be an integer, not {value!r}")
        return value

    def mapping(self, key: str) -> _Fields:
        value = self._data.get(key)
        if not isinstance(value, Mapping):
            raise self._refuse(key, "is missing" if value is None else f"must be an object, not {value!r}")
        return _Fields(self._operation, value, f"{self._path}.{key}")

    def raw(self, key: str) -> dict[str, Any]:
        value = self._data.get(key) or {}
        if not isinstance(value, Mapping):
            raise self._refuse(key, f"must be an object, not {value!r}")
        return dict(value)

    def strings(self, key: str) -> dict[str, str]:
        return {str(k): str(v) for k, v in self.raw(key).items()}

    def texts(self, key: str) -> tuple[str, ...]:
        value = self._data.get(key) or ()
        if isinstance(value, str) or not all(isinstance(v, str) for v in value):
            raise self._refuse(key, f"must be a list of strings, not {value!r}")
        return tuple(value)

    def shares(self, key: str) -> dict[str, int]:
        value = self.mapping(key)._data
        if any(isinstance(share, bool) or not isinstance(share, int) for share in value.values()):
            raise self._refuse(key, f"must map deployments to integer percentages, not {dict(value)!r}")
        return {str(name): share for name, share in value.items()}

    def model(self, key: str = "model") -> AssetRef:
        text = self.text(key)
        ref = AssetRef.parse(text)
        if ref is None:
            raise self._refuse(key, f"must be an azureml:<name>:<version> reference, not {text!r}")
        return ref


class Request:
    """The common face of every request type (see the module's table)."""

    OPERATION: ClassVar[str]
    KIND: ClassVar[TaskKind]
    TARGET: ClassVar[str]  # what the task acts on, from the request's fields

    @property
    def target(self) -> str:
        return self.TARGET.format_map({f.name: getattr(self, f.name) for f in fields(self)})  # type: ignore[arg-type]

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"operation": self.OPERATION}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is None:
                continue
            body[f.name] = _jsonable(value)
        return body

    @classmethod
    def read(cls, data: _Fields) -> Request:
        """Each field read by its declared type; one absent (or empty) takes its default."""
        values = {}
        for f in fields(cls):  # type: ignore[arg-type]
            if data.has(f.name) or (f.default is MISSING and f.default_factory is MISSING):
                values[f.name] = _READERS[f.type](data, f.name)
        return cls(**values)


CORRELATION_TAG = "controlplane.correlation_id"
MODEL_TAG = "controlplane.model"  # on a job the control plane starts: the model its run events are about
VERSION_TAG = "controlplane.version"  # on a test-stage job: the candidate version
STAGE_TAG = "controlplane.stage"  # "test" on a test-stage job (a tag, or a property on a batch scoring job)


def correlated(request: Request, correlation_id: str) -> dict[str, Any]:
    """The request as a task stores it: with the correlation id, which also tags what it creates in Azure ML, so
    the job or deployment leads back to the event and the decision."""
    if any(f.name == "tags" for f in fields(request)):  # type: ignore[arg-type]
        request = replace(request, tags={**request.tags, CORRELATION_TAG: correlation_id})  # type: ignore[attr-defined]
    return {**request.to_json(), "correlation_id": correlation_id}


class AzureMLRequest(Request):
    """Work sent to an Azure ML workspace (by ``controlplane.handlers.dispatch_azureml``)."""


class LocalRequest(Request):
    """Work the control plane does itself (by ``controlplane.handlers.dispatch_local``)."""


def _jsonable(value: Any) -> Any:
    if isinstance(value, AssetRef):
        return value.uri
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    return value


@dataclass(frozen=True)
class SubmitPipeline(AzureMLRequest):
    OPERATION: ClassVar[str] = "jobs.create_or_update"
    KIND: ClassVar[TaskKind] = TaskKind.RETRAINING
    TARGET: ClassVar[str] = "azureml:job/{name}"

    experiment_name: str
    name: str  # derived from the idempotency key: a repeated submission finds the first job
    source: str  # the pipeline's YAML (azureml:<component>:<version> or a path)
    inputs: Mapping[str, str] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)
    compute: str | None = None
    environment: str | None = None  # the workspace the job runs in; None: the home workspace

    def to_json(self) -> dict[str, Any]:
        job = {"name": self.name, "source": self.source, "compute": self.compute, "inputs": dict(self.inputs),
               "tags": dict(self.tags)}
        where = {"environment": self.environment} if self.environment else {}
        return {"operation": self.OPERATION, "experiment_name": self.experiment_name, "job": job, **where}

    @classmethod
    def read(cls, data: _Fields) -> SubmitPipeline:
        job = data.mapping("job")
        return cls(experiment_name=data.text("experiment_name"), name=job.text("name"), source=job.text("source"),
                   inputs=job.strings("inputs"), tags=job.strings("tags"), compute=job.optional_text("compute"),
                   environment=data.optional_text("environment"))


@dataclass(frozen=True)
class CheckDrift(SubmitPipeline):
    """A window's drift check as an Azure ML job over the captured telemetry; its end decides the window."""

    OPERATION: ClassVar[str] = "jobs.create_or_update.drift_check"
    KIND: ClassVar[TaskKind] = TaskKind.DRIFT


@dataclass(frozen=True)
class DeployModel(AzureMLRequest):
    """A deployment of ``model`` on ``endpoint`` at 0% traffic; traffic moves only through a rollout."""

    OPERATION: ClassVar[str] = "online_deployments.begin_create_or_update"
    KIND: ClassVar[TaskKind] = TaskKind.PROMOTION
    TARGET: ClassVar[str] = "azureml:endpoint/{endpoint}"

    endpoint: str
    deployment: str
    model: AssetRef
    instance_type: str
    instance_count: int = 1
    stage: str = "staging"
    spec: Mapping[str, Any] = field(default_factory=dict)
    auth_mode: str = "key"
    tags: Mapping[str, str] = field(default_factory=dict)
    traffic: int = 0
    compute: str | None = None  # an attached Kubernetes compute; None: a managed online endpoint
    environment: str | None = None  # the workspace to deploy in; None: the home workspace
    source: str | None = None  # the workspace the model is registered in, when it is shared to ``registry`` first
    registry: str | None = None  # deployed from this registry (shared there first from ``source``)
    test: Mapping[str, Any] | None = None  # the test stage's pipeline job (a SubmitPipeline), once in place

    @classmethod
    def read(cls, data: _Fields) -> DeployModel:
        if data.integer("traffic", default=0) != 0:
            raise RequestError(cls.OPERATION, "request.traffic", f"must be 0: deployment {data.get('deployment')!r} "
                               f"is created at 0% traffic, not {data.get('traffic')}%; shift traffic with "
                               f"{SetTraffic.OPERATION}")
        return super().read(data)


@dataclass(frozen=True)
class DeployBatch(AzureMLRequest):
    """A model batch deployment on ``endpoint``. In staging it is tried: a scoring job on ``sample_input`` (or the
    ``test`` pipeline) is the test stage, and the endpoint's default is left alone; in production it becomes the
    endpoint's default once in place."""

    OPERATION: ClassVar[str] = "batch_deployments.begin_create_or_update"
    KIND: ClassVar[TaskKind] = TaskKind.PROMOTION
    TARGET: ClassVar[str] = "azureml:batch-endpoint/{endpoint}"

    endpoint: str
    deployment: str
    model: AssetRef
    compute: str
    stage: str = "staging"  # staging | production
    instance_count: int = 1
    mini_batch_size: int = 10
    max_concurrency_per_instance: int = 1
    output_file_name: str = "predictions.csv"
    spec: Mapping[str, Any] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)
    environment: str | None = None
    source: str | None = None
    registry: str | None = None
    sample_input: str | None = None
    experiment: str | None = None  # of the staging scoring job
    test: Mapping[str, Any] | None = None

    @classmethod
    def read(cls, data: _Fields) -> DeployBatch:
        if data.get("stage") not in ("staging", "production", None):
            raise RequestError(cls.OPERATION, "request.stage", f"must be staging or production, not "
                                                               f"{data.get('stage')!r}")
        return super().read(data)


@dataclass(frozen=True)
class SetBatchDefault(AzureMLRequest):
    """The batch endpoint's default deployment switched (back) to ``deployment``: a batch rollback."""

    OPERATION: ClassVar[str] = "batch_endpoints.set_default"
    KIND: ClassVar[TaskKind] = TaskKind.ROLLBACK
    TARGET: ClassVar[str] = "azureml:batch-endpoint/{endpoint}"

    endpoint: str
    deployment: str
    environment: str | None = None


@dataclass(frozen=True)
class StartRollout(Request):
    """Production: a rollout of ``model`` on ``endpoint`` by the policy's steps, once its review approves."""

    OPERATION: ClassVar[str] = "rollout.start"
    KIND: ClassVar[TaskKind] = TaskKind.ROLLOUT
    TARGET: ClassVar[str] = "azureml:endpoint/{endpoint}"

    endpoint: str
    deployment: str
    model: AssetRef
    approvers: tuple[str, ...] = ()
    stage: str = "production"
    environment: str | None = None  # the production workspace; None: the home workspace
    registry: str | None = None  # the model is deployed from this registry


@dataclass(frozen=True)
class SetTraffic(AzureMLRequest):
    OPERATION: ClassVar[str] = "online_endpoints.set_traffic"
    KIND: ClassVar[TaskKind] = TaskKind.TRAFFIC
    TARGET: ClassVar[str] = "azureml:endpoint/{endpoint}"

    endpoint: str
    traffic: Mapping[str, int]
    mirror: Mapping[str, int] | None = None  # None leaves mirrored traffic as it is


@dataclass(frozen=True)
class Scale(AzureMLRequest):
    OPERATION: ClassVar[str] = "online_deployments.scale"
    KIND: ClassVar[TaskKind] = TaskKind.SCALE
    TARGET: ClassVar[str] = "azureml:deployment/{endpoint}/{deployment}"

    endpoint: str
    deployment: str
    instance_count: int


@dataclass(frozen=True)
class RollBack(AzureMLRequest):
    """Traffic back to the deployments that served before, each first scaled back to ``scale``."""

    OPERATION: ClassVar[str] = "online_endpoints.rollback"
    KIND: ClassVar[TaskKind] = TaskKind.ROLLBACK
    TARGET: ClassVar[str] = "azureml:endpoint/{endpoint}"

    endpoint: str
    traffic: Mapping[str, int]
    from_deployment: str
    scale: Mapping[str, int] = field(default_factory=dict)
    mirror: Mapping[str, int] | None = None  # None leaves mirrored traffic as it is


@dataclass(frozen=True)
class Notify(Request):
    """A message to a channel; a review's opening carries its approvers (each gets a link of their own)."""

    OPERATION: ClassVar[str] = "notify"
    KIND: ClassVar[TaskKind] = TaskKind.NOTIFY
    TARGET: ClassVar[str] = "channel/{channel}"

    channel: str
    event: str
    subject: str = ""
    text: str = ""
    review_id: str | None = None
    approvers: tuple[str, ...] = ()
    incident_id: str | None = None
    alert_id: str | None = None
    targets: tuple[str, ...] = ()
    signals: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class PublishDecision(Request):
    """The decision as a CloudEvent on the control plane's Event Grid topic."""

    OPERATION: ClassVar[str] = "eventgrid.publish"
    KIND: ClassVar[TaskKind] = TaskKind.PUBLISH
    TARGET: ClassVar[str] = "eventgrid/decisions"
    TYPE: ClassVar[str] = "MLOps.ControlPlane.DecisionRecorded"
    SOURCE: ClassVar[str] = "/mlops-control-plane"

    subject: str
    data: Mapping[str, Any]
    type: str = TYPE
    source: str = SOURCE


@dataclass(frozen=True)
class WindowWork(LocalRequest):
    """Work on one telemetry window's sampled rows, published under ``name``."""

    name: str
    window: Mapping[str, Any]  # model, deployment, bucket, part: the window's key

    @classmethod
    def read(cls, data: _Fields) -> WindowWork:
        window = data.mapping("window")
        window.text("model"), window.text("deployment"), window.integer("bucket"), window.integer("part")
        return super().read(data)


@dataclass(frozen=True)
class RenderReport(WindowWork):
    """The drift report of a window, rendered for its reviewers."""

    OPERATION: ClassVar[str] = "report.render"
    KIND: ClassVar[TaskKind] = TaskKind.REVIEW
    TARGET: ClassVar[str] = "report/{name}"

    model: str | None = None


@dataclass(frozen=True)
class ExportLabels(WindowWork):
    """A window's rows, one JSON line each, for the labelling project."""

    OPERATION: ClassVar[str] = "labelling.export"
    KIND: ClassVar[TaskKind] = TaskKind.REVIEW
    TARGET: ClassVar[str] = "labelling/{name}"

    labelling_project: str | None = None

    @property
    def data_asset(self) -> str:
        """The data asset the export is registered as: one per labelling project (else per model)."""
        return labelling_asset(self.labelling_project, self.window["model"])


def labelling_asset(project: str | None, model: str) -> str:
    """The data asset of a labelling project's exports (a model's, without a project): a name Azure ML accepts
    (letters, digits, '-', '_', '.')."""
    return asset_name(f"{project or model}-labelling")


def asset_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")[:255] or "labelling"


@dataclass(frozen=True)
class ReadSignals(LocalRequest):
    """What an alert's target did recently, read once and kept for its review page."""

    OPERATION: ClassVar[str] = "alert.signals"
    KIND: ClassVar[TaskKind] = TaskKind.REVIEW
    TARGET: ClassVar[str] = "signals/{incident_id}"

    signals: Mapping[str, Any]
    incident_id: str | None = None

    @classmethod
    def read(cls, data: _Fields) -> ReadSignals:
        data.mapping("signals").text("artifact")
        return super().read(data)


_READERS: Mapping[str, Callable[[_Fields, str], Any]] = {
    "str": _Fields.text, "str | None": _Fields.optional_text, "int": _Fields.integer, "AssetRef": _Fields.model,
    "tuple[str, ...]": _Fields.texts, "Mapping[str, str]": _Fields.strings, "Mapping[str, int]": _Fields.shares,
    "Mapping[str, int] | None": _Fields.shares, "Mapping[str, Any]": _Fields.raw,
    "Mapping[str, Any] | None": _Fields.raw,
}  # field type (as declared) -> how it is read

R = TypeVar("R", bound=Request)


REQUESTS: Mapping[str, type[Request]] = {kind.OPERATION: kind for kind in (
    SubmitPipeline, CheckDrift, DeployModel, DeployBatch, SetBatchDefault, StartRollout, SetTraffic, Scale, RollBack,
    Notify, PublishDecision, RenderReport, ExportLabels, ReadSignals)}


def parse_request(data: Mapping[str, Any], expected: type[R] = Request) -> R:
    """The typed request a stored task holds; ``RequestError`` names what is missing or malformed, or says the
    request is not the ``expected`` kind."""
    operation = data.get("operation") if isinstance(data, Mapping) else None
    kind = REQUESTS.get(operation) if isinstance(operation, str) else None
    if kind is None or not issubclass(kind, expected):
        known = [k.OPERATION for k in REQUESTS.values() if issubclass(k, expected)]
        raise RequestError(str(operation), "request.operation",
                           f"{operation!r} is not one of {', '.join(sorted(known))}")
    return kind.read(_Fields(kind.OPERATION, data))

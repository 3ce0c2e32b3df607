"""Typed, immutable events the control plane reacts to, produced only by ``controlplane.parsing``.

Events are facts in the past tense. Every timestamp is timezone-aware (UTC), every version a string,
and every event carries the envelope it came in (``meta``) so decisions can cite it.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from controlplane.domain.refs import AssetRef

ML_PREFIX = "Microsoft.MachineLearningServices."
MODEL_REGISTERED = ML_PREFIX + "ModelRegistered"
MODEL_DEPLOYED = ML_PREFIX + "ModelDeployed"
RUN_COMPLETED = ML_PREFIX + "RunCompleted"
RUN_STATUS_CHANGED = ML_PREFIX + "RunStatusChanged"
DATASET_DRIFT_DETECTED = ML_PREFIX + "DatasetDriftDetected"

MONITOR_BREACH_TAG = "azureml_modelmonitor_threshold_breached"


@dataclass(frozen=True)
class EventMeta:
    """The envelope: who sent what, when, in which schema (``eventgrid`` or ``cloudevents``)."""

    id: str
    type: str
    source: str
    subject: str
    time: datetime | None  # CloudEvents may omit it
    schema: str


@dataclass(frozen=True)
class ModelRegistered:
    meta: EventMeta
    model: str
    version: str
    tags: Mapping[str, str] = field(default_factory=dict)
    properties: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelDeployed:
    meta: EventMeta
    endpoint: str
    compute_type: str
    models: tuple[AssetRef, ...]
    tags: Mapping[str, str] = field(default_factory=dict)
    properties: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FeatureViolation:
    """One feature over its threshold in an Azure ML model-monitoring signal."""

    feature: str
    metric: str
    value: float
    threshold: float


@dataclass(frozen=True)
class MonitorBreach:
    """Azure ML model monitoring's ``azureml_modelmonitor_threshold_breached`` run tag, parsed."""

    signal: str
    violations: tuple[FeatureViolation, ...]
    text: str


@dataclass(frozen=True)
class RunCompleted:
    meta: EventMeta
    experiment_id: str
    experiment_name: str
    run_id: str
    run_type: str
    tags: Mapping[str, str] = field(default_factory=dict)
    properties: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RunStatusChanged:
    meta: EventMeta
    experiment_id: str
    experiment_name: str
    run_id: str
    run_type: str
    status: str
    tags: Mapping[str, str] = field(default_factory=dict)
    properties: Mapping[str, str] = field(default_factory=dict)
    breach: MonitorBreach | None = None


@dataclass(frozen=True)
class DatasetDriftDetected:
    """Legacy (v1) dataset monitor signal; retired in Azure ML but still delivered by old monitors."""

    meta: EventMeta
    drift_id: str
    drift_name: str
    run_id: str
    base_dataset_id: str
    target_dataset_id: str
    coefficient: float
    start: datetime | None
    end: datetime | None


RegistryEvent = ModelRegistered | ModelDeployed | RunCompleted | RunStatusChanged | DatasetDriftDetected


@dataclass(frozen=True)
class AlertCondition:
    """One criterion of an alert: a metric over a threshold, or a log query's result."""

    metric: str
    operator: str
    threshold: float | None
    value: float | None
    namespace: str = ""
    aggregation: str = ""
    dimensions: Mapping[str, str] = field(default_factory=dict)
    query: str = ""


@dataclass(frozen=True)
class Alert:
    """An Azure Monitor alert in the common alert schema."""

    alert_id: str
    rule: str
    rule_id: str
    severity: str
    signal_type: str
    monitor_condition: str
    monitoring_service: str
    targets: tuple[str, ...]
    configuration_items: tuple[str, ...]
    fired_at: datetime
    resolved_at: datetime | None
    description: str
    conditions: tuple[AlertCondition, ...]
    custom_properties: Mapping[str, Any] = field(default_factory=dict)
    context: Mapping[str, Any] = field(default_factory=dict)

    @property
    def fired(self) -> bool:
        return self.monitor_condition == "Fired"


@dataclass(frozen=True)
class TelemetryRecord:
    """One scored request as a scoring script reports it (see docs/telemetry.md)."""

    model: str
    version: str
    endpoint: str
    deployment: str
    request_id: str
    timestamp: datetime
    inputs: Mapping[str, Any]
    outputs: Mapping[str, Any]


@dataclass(frozen=True)
class TelemetryEvent:
    """One Event Hubs event: its position in the hub and the records its body carried."""

    partition: str
    sequence_number: int
    enqueued_time: datetime | None
    records: tuple[TelemetryRecord, ...]

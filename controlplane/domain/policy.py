"""The versioned policy: which rule governs a model and what the control plane does for it.

``policy.yaml`` is validated when it loads; an invalid file raises ``PolicyError`` naming the key path.
The policy's version is the hash of its content, stamped on every decision. ``schema()`` is the JSON
schema editors use (``python -m controlplane policy schema``).
"""
from __future__ import annotations

import fnmatch
import hashlib
import operator
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from controlplane.domain.drift import DriftSettings
from controlplane.domain.errors import DriftConfigError, PolicyError
from controlplane.domain.windows import WindowSpec


class Profile(StrEnum):
    """The MLOps v2 architecture a model follows: what drift leads to."""

    CLASSICAL = "classical"  # retrain automatically
    CV = "cv"  # send degraded data to human review and labelling
    NLP = "nlp"  # likewise


class UnknownRegistrant(StrEnum):
    REFUSE = "refuse"
    EXTRA_APPROVAL = "extra_approval"


class Mode(StrEnum):
    ENFORCE = "enforce"  # decide and dispatch
    SHADOW = "shadow"  # decide and record, dispatch nothing


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)


class Retraining(_Strict):
    """The Azure ML pipeline job a drifted classical model is retrained with, and its storm guard."""

    pipeline: str = Field(description="Pipeline job YAML path (from the app's root) or 'azureml:component:version'.")
    experiment: str = Field(description="Experiment the retraining job is filed under.")
    compute: str | None = Field(default=None, description="Default compute for the pipeline, if it sets none.")
    inputs: dict[str, str] = Field(default_factory=dict, description="Pipeline inputs, e.g. training data assets.")
    environment: str | None = Field(None, description=(
        "The environment (workspace) the job runs in, e.g. dev, where the version it registers starts its way "
        "through the gates. Default: the home workspace."))
    cooldown_hours: float = Field(24, ge=0, description="No new retraining this soon after the last one.")
    daily_budget: int = Field(2, ge=1, description="At most this many retrainings in 24 hours.")
    schedule: str | None = Field(None, description="Also retrain on this 6-field NCRONTAB schedule (UTC).")
    owners: list[str] = Field(default_factory=list,
                              description="The model's data scientists: told how each retraining ends, and reviewers "
                                          "of a failed one (none: the alerts' ml team).")
    register_within_hours: float = Field(24, gt=0, description="A completed retraining that registers no version of "
                                                               "the model within this many hours is reported to its "
                                                               "owners.")

    @field_validator("schedule")
    @classmethod
    def _valid_schedule(cls, schedule: str | None) -> str | None:
        if schedule is not None:
            from controlplane.domain.ncrontab import Schedule

            Schedule(schedule)
        return schedule


class Review(_Strict):
    """Who looks at degraded data (cv, nlp) or at signals that need a person."""

    assignees: list[str] = Field(min_length=1, description="Principals or groups assigned to the review.")
    labelling_project: str | None = Field(default=None, description="Azure ML labelling project to feed.")


_GATE = re.compile(r"^\s*(>=|<=|>|<)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")
_OPERATORS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


@dataclass(frozen=True)
class Gate:
    """A metric threshold such as ``accuracy >= 0.85``; the operator gives the better direction."""

    metric: str
    op: str
    threshold: float

    @property
    def higher_is_better(self) -> bool:
        return self.op in (">=", ">")

    def passes(self, value: float) -> bool:
        return _OPERATORS[self.op](value, self.threshold)

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.threshold:g}"


def _valid_gates(gates: dict[str, str]) -> dict[str, str]:
    for metric, condition in gates.items():
        if not _GATE.match(str(condition)):
            raise ValueError(f"gate {metric!r}: expected '<op> <number>' with op one of >=, <=, >, <, "
                             f"got {condition!r}")
    return gates


def parse_gates(gates: Mapping[str, str]) -> list[Gate]:
    parsed = []
    for metric, condition in gates.items():
        op, threshold = _GATE.match(str(condition)).groups()
        parsed.append(Gate(metric, op, float(threshold)))
    return parsed


class TestStage(_Strict):
    """The test stage: an Azure ML pipeline job run in the staging workspace once the staging deployment is in
    place (evaluation on held-out production data, data-quality and fairness checks, a load test of the
    deployment). It reports its results as job properties; its end decides whether production is asked."""

    pipeline: str = Field(description="Pipeline job YAML path (from the app's root) or 'azureml:component:version'.")
    experiment: str | None = Field(None, description="Experiment of the test jobs (default: '<endpoint>-test-stage').")
    compute: str | None = Field(None, description="Default compute for the pipeline, if it sets none.")
    inputs: dict[str, str] = Field(default_factory=dict, description=(
        "Pipeline inputs. The job also gets model (the registry or workspace reference), endpoint and deployment "
        "when the pipeline declares them."))
    gates: dict[str, str] = Field(default_factory=dict, description=(
        "Result -> condition on the job's reported properties, e.g. demographic_parity_difference: '<= 0.1'. "
        "A result the job does not report sends the candidate to people."))
    timeout_hours: float = Field(6, gt=0, description=(
        "From the staging decision: a test stage without a result by then is decided by people."))

    @field_validator("gates")
    @classmethod
    def _gate_syntax(cls, gates: dict[str, str]) -> dict[str, str]:
        return _valid_gates(gates)

    def parsed_gates(self) -> list[Gate]:
        return parse_gates(self.gates)


class StagingApproval(_Strict):
    """Gated CI: people approve a candidate before it is staged."""

    approvers: list[str] = Field(min_length=1, description="Principals (or group names) who may approve.")
    quorum: int = Field(1, ge=1, description="Distinct approvals needed; one rejection closes the review.")
    approval_ttl_hours: float = Field(72, gt=0, description="How long the review and its links stay valid.")

    @model_validator(mode="after")
    def _reachable_quorum(self) -> StagingApproval:
        if self.quorum > len(self.approvers):
            raise ValueError(f"quorum {self.quorum} is more than the {len(self.approvers)} approvers listed")
        return self


class Staging(_Strict):
    """The first stage: a deployment with 0% traffic (online) or beside the default (batch), in the staging
    environment when one is named, then the test stage when there is one."""

    instance_type: str = Field("Standard_DS3_v2", description="VM size of the staging deployment (online).")
    instance_count: int = Field(1, ge=1, description="Instances of the staging deployment.")
    environment: str | None = Field(None, description=(
        "The environment (workspace) staging happens in; the model is shared to the registry and deployed there "
        "from it. Default: the workspace the candidate was registered in."))
    approval: StagingApproval | None = Field(None, description="Gated CI: approval before staging.")
    test: TestStage | None = Field(None, description=(
        "The test stage; with it, the production review opens only once its results pass."))
    sample_input: str | None = Field(None, description=(
        "Batch: the data (azureml:<asset>:<version> or a datastore path) a scoring job runs on in staging; that "
        "job is the test stage unless 'test' names a pipeline."))


class BatchTarget(_Strict):
    """How a model's batch deployments score: on a compute cluster, a mini-batch of files at a time."""

    compute: str = Field(description="The compute cluster scoring jobs run on.")
    instance_count: int = Field(1, ge=1, description="Nodes per scoring job.")
    mini_batch_size: int = Field(10, ge=1, description="Files per mini-batch.")
    max_concurrency_per_instance: int = Field(1, ge=1, description="Mini-batches scored at once per node.")
    output_file_name: str = Field("predictions.csv", description="The file predictions are appended to.")


class Production(_Strict):
    """The gated stage: people approve before the model takes live traffic."""

    approvers: list[str] = Field(min_length=1, description="Principals (or group names) who may approve.")
    quorum: int = Field(1, ge=1, description="Distinct approvals needed; one rejection closes the review.")
    approval_ttl_hours: float = Field(72, gt=0, description="How long the review and its links stay valid.")
    separation_of_duties: bool = Field(True, description="The model's registrant may not approve it.")
    registrant_from_tags: bool = Field(False, description=(
        "When Azure ML's record of who registered the version is missing, take the registrant from the "
        "model's 'created_by' tag or property (anyone who registers a model can write those)."))
    unknown_registrant: UnknownRegistrant = Field(UnknownRegistrant.EXTRA_APPROVAL, description=(
        "With separation of duties, when the registrant cannot be established: 'refuse' opens no production "
        "review; 'extra_approval' needs one approval beyond the quorum."))
    environment: str | None = Field(None, description=(
        "The environment (workspace) production deployments go to, from the registry. Default: the home "
        "workspace the settings name."))

    @model_validator(mode="after")
    def _reachable_quorum(self) -> Production:
        if self.quorum > len(self.approvers):
            raise ValueError(f"quorum {self.quorum} is more than the {len(self.approvers)} approvers listed")
        return self


class Promotion(_Strict):
    """How a registered model goes forward: gates, champion comparison, stages."""

    model_config = ConfigDict(populate_by_name=True)

    target: Literal["online", "batch"] = Field("online", description=(
        "online: a managed (or Kubernetes) online endpoint, reached by a progressive rollout; batch: a batch "
        "endpoint, whose default deployment is switched."))
    endpoint: str = Field(description="Endpoint the model is promoted on; its serving model is the champion.")
    source: str | None = Field(None, alias="from", description=(
        "The environment candidates come from (dev): versions registered elsewhere are recorded, not promoted."))
    batch: BatchTarget | None = Field(None, description="Batch deployments' settings (target: batch).")
    gates: dict[str, str] = Field(min_length=1, description="Metric -> condition, e.g. accuracy: '>= 0.85'.")
    primary_metric: str | None = Field(None, description="Metric compared with the champion (default: first gate).")
    min_improvement: float = Field(0.0, ge=0, description="Least gain over the champion on the primary metric.")
    staging: Staging = Staging()
    production: Production | None = Field(None, description="Approval gate; without it promotion stops at staging.")

    @field_validator("gates")
    @classmethod
    def _gate_syntax(cls, gates: dict[str, str]) -> dict[str, str]:
        return _valid_gates(gates)

    @model_validator(mode="after")
    def _known_primary(self) -> Promotion:
        if self.primary_metric is not None and self.primary_metric not in self.gates:
            raise ValueError(f"primary_metric {self.primary_metric!r} is not one of the gates")
        return self

    @model_validator(mode="after")
    def _complete_stages(self) -> Promotion:
        if self.target == "batch" and self.batch is None:
            raise ValueError("target batch needs batch.compute: the cluster scoring jobs run on")
        if self.target == "batch" and not (self.staging.sample_input or self.staging.test):
            raise ValueError("target batch needs staging.sample_input (or staging.test): a batch deployment is "
                             "tried on data before it can become the default")
        if self.staging.approval is not None and self.staging.test is None and self.target == "online":
            raise ValueError("staging.approval needs staging.test: an approved candidate goes on to production "
                             "through the test stage's results")
        return self

    def parsed_gates(self) -> list[Gate]:
        return parse_gates(self.gates)

    @property
    def test_timeout_hours(self) -> float:
        """How long the test stage may take from the staging decision (a batch scoring job: 6 h)."""
        return self.staging.test.timeout_hours if self.staging.test else 6.0

    @property
    def tested(self) -> bool:
        """Whether a test stage decides when production is asked (else it is asked with staging)."""
        return self.staging.test is not None or self.target == "batch"

    def primary_gate(self) -> Gate:
        gates = self.parsed_gates()
        return next((g for g in gates if g.metric == self.primary_metric), gates[0])


class WindowPolicy(_Strict):
    """Tumbling telemetry windows per deployment: by count or event time, whichever comes first."""

    records: int = Field(10_000, ge=1, description="A window closes when it has counted this many records.")
    minutes: float = Field(60, gt=0, description="Or when its event-time bucket of this length ends.")
    grace_minutes: float = Field(5, ge=0, description="Late records within this are counted in their window.")
    sample: int = Field(10_000, ge=10, description="Rows of the window the drift check reads (uniform sample).")

    def spec(self) -> WindowSpec:
        return WindowSpec(self.records, self.minutes, self.grace_minutes, self.sample)


QUALITY_ISSUES = ("missing_column", "no_values", "missing_rate", "invalid_values", "out_of_range",
                  "unseen_categories")


class DataQualityPolicy(_Strict):
    """Where a window's data-quality problems go, apart from drift (typically to the data engineers who own the
    pipeline feeding the model)."""

    notify: list[str] = Field(default_factory=lambda: ["data-engineers"], description=(
        "Channels told of each window with a problem (routed to sinks by notifications)."))
    reviewers: list[str] = Field(default_factory=list, description=(
        "People who review each such window; none: notices only."))
    issues: list[Literal[QUALITY_ISSUES]] = Field(default_factory=lambda: list(QUALITY_ISSUES), description=(
        "The signals that count: missing_column, no_values, missing_rate, invalid_values, out_of_range, "
        "unseen_categories."))


class DriftJob(_Strict):
    """Windows too large for one function are checked in full by an Azure ML job, over the telemetry Event Hubs
    Capture kept, with the same engine."""

    over_records: int = Field(100_000, ge=1, description=(
        "A window with more records than this is checked by the job, over all of them; smaller ones by the "
        "function, on the window's sample."))
    pipeline: str = Field("pipelines/drift-check.yml", description="The job's pipeline YAML or component.")
    experiment: str = Field("drift-check", description="Experiment the jobs are filed under.")
    compute: str | None = Field(None, description="Compute the job runs on, if the pipeline sets none.")
    environment: str | None = Field(None, description="The workspace the job runs in (default: the home one).")
    telemetry: str | None = Field(None, description=(
        "Where the captured telemetry is, as the job reads it (azureml://datastores/<store>/paths/<ns>/<hub>/); "
        "default: the CONTROLPLANE_TELEMETRY_CAPTURE setting."))


class DriftPolicy(_Strict):
    """How telemetry windows are checked for drift against reference data (Evidently)."""

    reference: str = Field(description="Reference data: a .csv/.parquet path (relative to the policy file), an "
                                       "https blob URL or 'azureml:<data asset>:<version>'.")
    columns: dict[str, str] = Field(min_length=1, description="Column -> 'numerical', 'categorical', 'text' or "
                                                             "'embedding' (a vector per record); outputs "
                                                             "are 'outputs.<name>'.")
    methods: dict[str, str] = Field(default_factory=dict, description="Per column or per type: the test "
                                                                       "(default: anderson / chisquare).")
    thresholds: dict[str, float] = Field(default_factory=dict, description="Per column or per type; with "
                                                                          "correction 'none' only.")
    correction: Literal["holm", "bh", "none"] | None = Field(
        None, description="holm: dataset drift when a column survives Holm's correction (family-wise error "
                          "rate alpha); bh: Benjamini-Hochberg (false discovery rate alpha); none: Evidently's "
                          "per-column thresholds and drift_share. Default: none when thresholds are set (a "
                          "policy written for Evidently keeps its meaning), holm otherwise.")
    alpha: float = Field(0.05, gt=0, lt=1, description="The false-alarm rate of a window with no drift.")
    drift_share: float = Field(0.5, gt=0, le=1, description="With correction 'none': dataset drift when this "
                                                            "share of columns drift.")
    min_rows: int = Field(100, ge=1, description="Fewer rows in a window: inconclusive.")
    effect_size_floor: float | None = Field(None, ge=0, description="Ignore numerical changes smaller than this "
                                                                      "many reference standard deviations "
                                                                      "(trimmed Wasserstein distance).")
    persistence: int = Field(1, ge=1, description="Act only after this many drifted windows in a row.")
    reference_sample: int = Field(50_000, ge=10, description="Rows of the reference the check reads (uniform "
                                                             "sample, fixed seed); apart from window.sample.")
    window: WindowPolicy = WindowPolicy()
    data_quality: DataQualityPolicy | None = Field(None, description=(
        "Route data-quality problems to their own notice or review; none: they are only recorded."))
    azureml: DriftJob | None = Field(None, description=(
        "Check windows past a size in full with an Azure ML job; none: every window is checked by the function."))

    @model_validator(mode="after")
    def _valid_for_the_engine(self) -> DriftPolicy:
        try:
            self.settings()
        except DriftConfigError as error:  # located at the setting, as pydantic's own errors are
            raise PydanticCustomError("drift_setting", "{reason}", {"setting": error.setting,
                                                                   "reason": str(error)}) from None
        return self

    def settings(self) -> DriftSettings:
        """What the drift engine runs with: the one place the policy's drift section is validated."""
        return DriftSettings(columns=dict(self.columns), methods=dict(self.methods), thresholds=dict(self.thresholds),
                             drift_share=self.drift_share, min_rows=self.min_rows,
                             effect_size_floor=self.effect_size_floor, sample_bound=self.window.sample,
                             reference_bound=self.reference_sample, correction=self.resolved_correction(),
                             alpha=self.alpha)

    def resolved_correction(self) -> str:
        """The correction in force: the configured one, else ``none`` with thresholds and ``holm`` without."""
        if self.correction is not None:
            return self.correction
        return "none" if self.thresholds else "holm"

    @model_validator(mode="after")
    def _enough_rows_sampled(self) -> DriftPolicy:
        if self.min_rows > self.window.sample:
            raise ValueError(f"min_rows {self.min_rows} is more than the window's sample of {self.window.sample}: "
                             "every window would be inconclusive")
        return self


class ModelRule(_Strict):
    """What applies to the models whose name matches ``name`` (a glob) and whose tags include ``tags``."""

    name: str = Field(description="Glob on the registered model name, e.g. 'churn*'.")
    tags: dict[str, str] = Field(default_factory=dict, description="Tags the model must carry (exact values).")
    profile: Profile | None = Field(default=None, description="classical | cv | nlp (default: defaults.profile).")
    mode: Mode | None = Field(default=None, description="enforce | shadow (default: defaults.mode).")
    retraining: Retraining | None = None
    review: Review | None = None
    promotion: Promotion | None = None
    drift: DriftPolicy | None = None
    deployment: DeploymentBlock | None = Field(None, description="Spec of this model's deployments; overrides the "
                                                                 "endpoint's block field by field.")
    notify: list[str] = Field(default_factory=list,
                              description="Channels told of each drift decision about the model (a retraining, one "
                                          "held back, a review), e.g. [data-scientists].")

    def matches(self, model: str, tags: Mapping[str, str]) -> bool:
        return fnmatch.fnmatchcase(model, self.name) and all(tags.get(k) == v for k, v in self.tags.items())


class HealthGate(_Strict):
    """When a rollout step is healthy: the new deployment against limits and against the old one."""

    min_requests: int = Field(50, ge=1, description="Fewer requests on the new deployment: too little to judge.")
    max_p95_latency_ms: float | None = Field(None, gt=0, description="Absolute p95 latency limit (ms).")
    max_latency_ratio: float | None = Field(1.5, gt=0, description="New p95 / old p95 limit.")
    max_error_rate: float | None = Field(0.01, ge=0, le=1, description="Share of 5xx responses limit.")
    max_error_rate_increase: float | None = Field(None, ge=0, le=1, description="New minus old 5xx share limit.")


class RolloutPolicy(_Strict):
    """How a production promotion reaches an endpoint: mirror, traffic steps, health between them."""

    mirror_percent: int | None = Field(None, ge=1, le=50, description="Optional first step: mirror this share.")
    steps: list[int] = Field(default_factory=lambda: [10, 50, 100], min_length=1,
                             description="Live traffic shares, increasing, ending at 100.")
    interval_minutes: float = Field(30, gt=0, description="How long each step is watched before judging it.")
    health: HealthGate = HealthGate()
    when_no_data: str = Field("pause", pattern="^(pause|wait)$",
                              description="Too little traffic: pause and notify, or wait another interval first.")
    max_waits: int = Field(2, ge=0, description="Intervals to wait for traffic before pausing (when_no_data: wait).")
    old_deployment: str = Field(
        "scale_down", pattern="^(keep|scale_down|delete)$",
        description="After 100%: keep the old deployment, scale it to one instance or delete it.")
    instance_type: str = Field("Standard_DS3_v2", description="VM size of the production deployment.")
    instance_count: int = Field(2, ge=1, description="Instances of the production deployment.")

    @field_validator("steps")
    @classmethod
    def _increasing_to_100(cls, steps: list[int]) -> list[int]:
        if any(not 1 <= s <= 100 for s in steps) or steps != sorted(set(steps)) or steps[-1] != 100:
            raise ValueError("steps must be increasing shares from 1 to 100 that end at 100")
        return steps


class ProbeBlock(_Strict):
    initial_delay: int | None = Field(None, ge=0, description="Seconds before the first probe.")
    period: int | None = Field(None, ge=1, description="Seconds between probes.")
    timeout: int | None = Field(None, ge=1, description="Seconds a probe may take.")
    failure_threshold: int | None = Field(None, ge=1, description="Failures before the container is unhealthy.")
    success_threshold: int | None = Field(None, ge=1, description="Successes before it is healthy again.")


class RequestSettingsBlock(_Strict):
    request_timeout_ms: int | None = Field(None, ge=1, description="Scoring request timeout (ms).")
    max_concurrent_requests_per_instance: int | None = Field(None, ge=1)
    max_queue_wait_ms: int | None = Field(None, ge=1)


class DeploymentBlock(_Strict):
    """What a new deployment serves with. Anything left out is copied from the deployment it replaces on the
    endpoint; MLflow models need none of it, custom models need an environment and a scoring script."""

    environment: str | None = Field(None, description="azureml:<name>:<version> (or an ARM id) of the environment.")
    code: str | None = Field(None, description="azureml:<name>:<version> (or an ARM id) of the scoring code.")
    scoring_script: str | None = Field(None, description="The scoring script inside the code, e.g. score.py.")
    environment_variables: dict[str, str] = Field(default_factory=dict,
                                                  description="Merged over the copied ones.")
    request_settings: RequestSettingsBlock | None = None
    liveness_probe: ProbeBlock | None = None
    readiness_probe: ProbeBlock | None = None
    app_insights_enabled: bool | None = None

    def spec(self) -> dict[str, Any]:
        """The block as a ``DeploymentSpec``'s JSON: only what it sets."""
        return self.model_dump(exclude_none=True, exclude_defaults=True)


class EndpointPolicy(_Strict):
    rollout: RolloutPolicy = RolloutPolicy()
    auth_mode: str = Field("key", pattern="^(key|aml_token|aad_token)$",
                           description="Auth mode of the endpoint when the control plane has to create it.")
    deployment: DeploymentBlock | None = Field(None, description="Spec of new deployments on this endpoint.")
    compute: str | None = Field(None, pattern=r"^[A-Za-z][A-Za-z0-9_-]{1,31}$",
                                description="An attached Kubernetes compute (AKS or Arc): the endpoint and its "
                                            "deployments run there, instance types named as the cluster defines "
                                            "them. None: a managed online endpoint.")


class Defaults(_Strict):
    profile: Profile = Profile.CLASSICAL
    mode: Mode = Mode.ENFORCE


SEVERITIES = ("Sev0", "Sev1", "Sev2", "Sev3", "Sev4")  # most severe first
ACTIONS = ("rollback", "scale", "retrain", "review", "notify")


def _severities(values: list[str]) -> list[str]:
    unknown = [v for v in values if v not in SEVERITIES]
    if unknown:
        raise ValueError(f"unknown severity {unknown[0]!r}; one of {', '.join(SEVERITIES)}")
    return values


class AlertMatch(_Strict):
    """Which alerts a rule takes: every field given must match (globs and names ignore case)."""

    rule: str | None = Field(None, description="Glob on the alert rule's name.")
    signal_type: str | None = Field(None, description="Metric, Log, Activity Log, Service Health, Resource Health.")
    metric: str | None = Field(None, description="Glob on the metric (or log alert measure) of any condition.")
    severity: list[str] = Field(default_factory=list, description="Severities taken, e.g. [Sev0, Sev1]; empty: all.")
    target: str | None = Field(None, description="Glob on the target: 'endpoint', 'endpoint/deployment' or the "
                                                 "resource ID.")

    @field_validator("severity")
    @classmethod
    def _known_severities(cls, severity: list[str]) -> list[str]:
        return _severities(severity)

    def matches(self, rule: str, signal_type: str, metrics: list[str], severity: str, targets: list[str]) -> bool:
        def glob(pattern: str | None, values: list[str]) -> bool:
            return pattern is None or any(fnmatch.fnmatchcase(v.lower(), pattern.lower()) for v in values)

        return (glob(self.rule, [rule]) and glob(self.metric, metrics) and glob(self.target, targets)
                and (self.signal_type is None or self.signal_type.lower() == signal_type.lower())
                and (not self.severity or severity in self.severity))


class ScaleAction(_Strict):
    """How the deployment an alert names is scaled: by a step, within bounds."""

    by: int = Field(1, description="Instances to add (negative: to remove).")
    min_instances: int = Field(1, ge=1, description="Never fewer instances than this.")
    max_instances: int = Field(10, ge=1, description="Never more instances than this.")

    @model_validator(mode="after")
    def _sane(self) -> ScaleAction:
        if self.by == 0:
            raise ValueError("by must add or remove at least one instance")
        if self.min_instances > self.max_instances:
            raise ValueError(f"min_instances {self.min_instances} is more than max_instances {self.max_instances}")
        return self


class RollbackAction(_Strict):
    """Which deployments an alert may roll back: those the control plane rolled out recently."""

    max_age_hours: float = Field(24, gt=0, description="Only deployments rolled out this recently are rolled back.")


class AlertRule(_Strict):
    """What an alert that matches leads to. Actions run when its incident opens, never on a repeated alert."""

    name: str = Field(description="The rule's name, recorded on every decision it makes.")
    match: AlertMatch = AlertMatch()
    actions: list[str] = Field(default_factory=lambda: ["notify"], min_length=1,
                               description="Any of rollback, scale, retrain, review, notify.")
    owner: str | None = Field(None, pattern="^(infrastructure|ml)$",
                              description="Team reviewing it (default: infrastructure for infrastructure signals).")
    mode: Mode = Field(Mode.ENFORCE, description="enforce | shadow (decide and record, dispatch nothing).")
    scale: ScaleAction = ScaleAction()
    rollback: RollbackAction = RollbackAction()
    notify: list[str] = Field(default_factory=list, description="Channels told besides the severity's tier.")
    cooldown_minutes: float = Field(60, ge=0, description="An incident reopened this soon after its last actions "
                                                          "notifies only.")

    @field_validator("actions")
    @classmethod
    def _known_actions(cls, actions: list[str]) -> list[str]:
        for action in actions:
            if action not in ACTIONS:
                raise ValueError(f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
        return actions


class Alerts(_Strict):
    """Azure Monitor alerts: the rules, who is told at each severity, and who reviews."""

    notify: list[str] = Field(default_factory=lambda: ["infrastructure"],
                              description="Channels told about an alert whose severity has no tier.")
    tiers: dict[str, list[str]] = Field(default_factory=dict,
                                        description="Severity -> channels told, e.g. Sev0: [oncall, infrastructure].")
    teams: dict[str, list[str]] = Field(
        default_factory=lambda: {"infrastructure": ["infrastructure"], "ml": ["ml-leads"]},
        description="Assignees of alert reviews per owner team (infrastructure, ml).")
    review_ttl_hours: float = Field(72, gt=0, description="How long an alert review stays open.")
    signals_minutes: float = Field(60, gt=0, description="How far back notifications and reviews look at the "
                                                         "target's metrics and logs.")
    rules: list[AlertRule] = Field(default_factory=list, description="First matching rule wins; none: notify.")

    @field_validator("tiers")
    @classmethod
    def _known_tiers(cls, tiers: dict[str, list[str]]) -> dict[str, list[str]]:
        _severities(list(tiers))
        return tiers

    @field_validator("teams")
    @classmethod
    def _both_teams(cls, teams: dict[str, list[str]]) -> dict[str, list[str]]:
        for team in ("infrastructure", "ml"):
            if not teams.get(team):
                raise ValueError(f"team {team!r} needs at least one assignee")
        return teams

    def channels(self, severity: str, rule: AlertRule | None) -> list[str]:
        """Who is told about an incident of this severity (the tier, else ``notify``) and the rule's extras."""
        told = self.tiers.get(severity, self.notify) + (rule.notify if rule else [])
        return list(dict.fromkeys(told))


class Environment(_Strict):
    """One stage of MLOps v2 (development, staging and test, production): an Azure ML workspace."""

    workspace: str = Field(description="The workspace's name, as in its resource id.")
    resource_group: str | None = Field(None, description="Its resource group, when names repeat across groups.")
    subscription_id: str | None = Field(None, description="Its subscription, when names repeat across them.")
    home: bool = Field(False, description=(
        "This is the home workspace, the one the settings name (AZUREML_WORKSPACE; in dry run, the simulated "
        "workspace): usually production, where the endpoints alerts are about live."))

    def holds(self, source: str) -> bool:
        """Whether an event's source (Event Grid ``topic``, CloudEvents ``source``: the workspace's resource id)
        is this workspace."""
        parts = source.lower().strip("/").split("/")
        found = dict(zip(parts[::2], parts[1::2], strict=False))
        wanted = {"workspaces": self.workspace, "resourcegroups": self.resource_group,
                  "subscriptions": self.subscription_id}
        return all(value is None or found.get(key) == value.lower() for key, value in wanted.items())


Sink = Literal["teams", "slack", "webhook"]


class Notifications(_Strict):
    """Where each channel's notices go. A channel is a persona or a team (reviewers, infrastructure, oncall, data
    scientists...); a sink is one of the configured notification settings (Teams, Slack, the signed webhook)."""

    routes: dict[str, list[Sink]] = Field(
        default_factory=dict,
        description="Channel -> the sinks (teams, slack, webhook) its notices go to; [] sends them nowhere.")
    default: list[Sink] = Field(default_factory=lambda: ["teams", "slack", "webhook"],
                                description="The sinks of a channel that routes does not name.")

    def sinks(self, channel: str) -> list[str]:
        return self.routes.get(channel, self.default)


class PolicyDocument(_Strict):
    """The policy file's schema (version 1)."""

    version: int = Field(1, description="Schema version of this file.")
    defaults: Defaults = Defaults()
    models: list[ModelRule] = Field(default_factory=list, description="First matching rule wins.")
    monitors: dict[str, str] = Field(
        default_factory=dict,
        description="Azure ML monitor or legacy dataset-monitor name -> model name, for drift signals.",
    )
    alerts: Alerts = Alerts()
    endpoints: dict[str, EndpointPolicy] = Field(default_factory=dict,
                                                 description="Per online endpoint: how production rollouts go.")
    notifications: Notifications = Notifications()
    environments: dict[str, Environment] = Field(
        default_factory=dict, description="Name (dev, staging, prod...) -> its Azure ML workspace: events are "
                                          "recorded with the environment they came from.")
    registry: str | None = Field(None, description=(
        "The Azure ML registry models are shared to when they move between environments (workspaces)."))

    @model_validator(mode="after")
    def _known_environments(self) -> PolicyDocument:
        homes = [name for name, environment in self.environments.items() if environment.home]
        if len(homes) > 1:
            raise ValueError(f"environments: only one can be the home workspace, not {', '.join(homes)}")
        for index, rule in enumerate(self.models):
            job = rule.drift.azureml.environment if rule.drift and rule.drift.azureml else None
            if job is not None and job not in self.environments:
                raise ValueError(f"models[{index}].drift.azureml.environment: {job!r} is not one of the "
                                 f"environments ({', '.join(self.environments) or 'none is defined'})")
            retraining = rule.retraining.environment if rule.retraining else None
            if retraining is not None and retraining not in self.environments:
                raise ValueError(f"models[{index}].retraining.environment: {retraining!r} is not one of the "
                                 f"environments ({', '.join(self.environments) or 'none is defined'})")
            promotion = rule.promotion
            if promotion is None:
                continue
            named = {"from": promotion.source, "staging.environment": promotion.staging.environment,
                     "production.environment": promotion.production.environment if promotion.production else None}
            for key, name in named.items():
                if name is not None and name not in self.environments:
                    raise ValueError(f"models[{index}].promotion.{key}: {name!r} is not one of the environments "
                                     f"({', '.join(self.environments) or 'none is defined'})")
            moved = {name for name in named.values() if name is not None}
            if len(moved) > 1 and self.registry is None:
                raise ValueError(f"models[{index}].promotion moves models between environments "
                                 f"({', '.join(sorted(moved))}): name the registry they are shared through")
        return self

    @field_validator("version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value != 1:
            raise ValueError("only policy schema version 1 is supported")
        return value


@dataclass(frozen=True)
class ResolvedRule:
    """A model's effective settings: the matching rule with the defaults filled in."""

    rule: str
    profile: Profile
    mode: Mode
    retraining: Retraining | None
    review: Review | None
    promotion: Promotion | None = None
    drift: DriftPolicy | None = None
    notify: tuple[str, ...] = ()


@dataclass(frozen=True)
class Policy:
    document: PolicyDocument
    version: str
    source: str

    def rule_for(self, model: str, tags: Mapping[str, str] | None = None) -> ResolvedRule | None:
        for index, rule in enumerate(self.document.models):
            if rule.matches(model, tags or {}):
                return self.resolve(index)
        return None

    def resolve(self, index: int) -> ResolvedRule:
        """Rule ``index`` with the defaults filled in."""
        rule, defaults = self.document.models[index], self.document.defaults
        return ResolvedRule(rule=f"models[{index}] ({rule.name})", profile=rule.profile or defaults.profile,
                            mode=rule.mode or defaults.mode, retraining=rule.retraining, review=rule.review,
                            promotion=rule.promotion, drift=rule.drift, notify=tuple(rule.notify))

    def alert_rule(self, rule: str, signal_type: str, metrics: list[str], severity: str,
                   targets: list[str]) -> AlertRule | None:
        return next((r for r in self.document.alerts.rules
                     if r.match.matches(rule, signal_type, metrics, severity, targets)), None)

    def home_environment(self) -> str | None:
        """The environment marked as the home workspace, if one is."""
        return next((name for name, env in self.document.environments.items() if env.home), None)

    def environment_of(self, source: str) -> str | None:
        """The environment whose workspace sent an event from ``source``; None when no environment names it."""
        return next((name for name, env in self.document.environments.items() if env.holds(source)), None)

    def model_for_monitor(self, monitor: str) -> str | None:
        return self.document.monitors.get(monitor)

    def rollout_for(self, endpoint: str) -> RolloutPolicy:
        configured = self.document.endpoints.get(endpoint)
        return configured.rollout if configured else RolloutPolicy()

    def deployment_for(self, endpoint: str, model: str) -> dict[str, Any]:
        """How a deployment of ``model`` on ``endpoint`` is made: {"spec", "auth_mode", "compute"}. The model's
        rule's block overrides the endpoint's field by field; what neither sets is copied from the deployment
        being replaced."""
        configured = self.document.endpoints.get(endpoint) or EndpointPolicy()
        rule = next((r for r in self.document.models if r.matches(model, {})), None)
        spec = configured.deployment.spec() if configured.deployment else {}
        own = rule.deployment.spec() if rule is not None and rule.deployment else {}
        variables = {**spec.get("environment_variables", {}), **own.get("environment_variables", {})}
        merged = {**spec, **own, **({"environment_variables": variables} if variables else {})}
        return {"spec": merged, "auth_mode": configured.auth_mode, "compute": configured.compute}


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    import yaml  # only when a policy is actually loaded

    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}" if mark else "$"
        raise PolicyError(where, f"malformed YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(raw, dict):
        raise PolicyError("$", f"expected a mapping at the top level, got {type(raw).__name__}")
    try:
        document = PolicyDocument.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = error["loc"] + ((error["ctx"]["setting"],) if error["type"] == "drift_setting" else ())
        raise PolicyError(_loc(loc), error["msg"]) from None
    version = "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]
    return Policy(document=document, version=version, source=source)


def load_policy(path: str | Path) -> Policy:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError("$", f"cannot read {path}: {exc.strerror}") from None
    return parse_policy(text, str(path))


def schema() -> dict[str, Any]:
    document = PolicyDocument.model_json_schema()
    document["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    document["title"] = "MLOps control plane policy"
    return document


def _loc(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "$"

"""Azure ML registry and run events (Event Grid): decide what each one calls for.

ModelRegistered and ModelDeployed are recorded with their evidence; model-monitoring breaches
(RunStatusChanged carrying ``azureml_modelmonitor_threshold_breached``) and legacy
DatasetDriftDetected events enter the drift action path of the model's profile.
"""
from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from controlplane.domain import events as ev
from controlplane.domain.errors import InvalidEvent
from controlplane.domain.ledger import Decision, Outcome, Source, Verdict
from controlplane.domain.policy import Policy
from controlplane.domain.requests import CORRELATION_TAG, MODEL_TAG, STAGE_TAG, VERSION_TAG
from controlplane.handlers.actions import act_on_drift
from controlplane.handlers.drift import drift_job_ended
from controlplane.handlers.promotion import decide_promotion
from controlplane.handlers.record import decide_once, record_invalid
from controlplane.handlers.retraining import ENDED, retraining_ended
from controlplane.handlers.staging import is_test_stage, marks, test_stage_ended
from controlplane.parsing import parse_registry_event
from controlplane.parsing.fields import check_json, parse_json
from controlplane.ports.store import Services


def receive_registry_event(services: Services, raw: Any) -> Decision:
    """Parse one Event Grid / CloudEvents envelope (its JSON text as the host delivers it, or decoded
    already) and decide it once; a bad one becomes ``invalid``."""
    try:
        if isinstance(raw, (str, bytes)):
            raw = parse_json(raw)
        else:
            check_json(raw)
    except InvalidEvent as error:
        return record_invalid(services, source=Source.EVENTGRID, payload=_payload(raw), error=error)
    cloud = isinstance(raw, dict) and any(str(key).lower() == "specversion" for key in raw)
    source = Source.CLOUDEVENTS if cloud else Source.EVENTGRID
    try:
        event = parse_registry_event(raw)
    except InvalidEvent as error:
        payload = _payload(raw)
        event_id = str(raw.get("id", "")) if isinstance(raw, dict) else ""
        event_type = str(raw.get("eventType") or raw.get("type") or "") if isinstance(raw, dict) else ""
        return record_invalid(services, source=source, payload=payload, error=error, event_id=event_id,
                              event_type=event_type)
    model, version = subject_model(event, services.policy)
    # A job or model the control plane started carries the correlation id of the decision that started it.
    run = isinstance(event, (ev.RunStatusChanged, ev.RunCompleted))
    correlation = str(marks(event).get(CORRELATION_TAG, "") if run else "")[:64]
    return decide_once(services, key=f"ml:{event.meta.id}", event_id=event.meta.id, source=source,
                       event_type=event.meta.type, model=model, version=version,
                       received_at=event.meta.time or services.clock.now(),
                       decide=lambda: _sourced(decide_registry_event(event, services, key=f"ml:{event.meta.id}"),
                                               event, services.policy),
                       claim_first=False, correlation_id=correlation)


def _sourced(verdict: Verdict, event: ev.RegistryEvent, policy: Policy) -> Verdict:
    """The verdict with the environment the event came from (its workspace, per the policy's environments)."""
    environment = policy.environment_of(event.meta.source)
    return replace(verdict, evidence={**verdict.evidence, "environment": environment}) if environment else verdict


def _payload(raw: Any) -> bytes:
    """The event as it arrived, for the record of an invalid one."""
    if isinstance(raw, bytes):
        return raw
    if isinstance(raw, str):
        return raw.encode("utf-8", "surrogatepass")
    try:
        return json.dumps(raw, default=str).encode()
    except (ValueError, RecursionError):  # decoded by the caller past the limits that refused it
        return f"<{type(raw).__name__} past the intake limits>".encode()


def subject_model(event: ev.RegistryEvent, policy: Policy) -> tuple[str | None, str | None]:
    """The model (and version, when known) an event is about."""
    if isinstance(event, ev.ModelRegistered):
        return event.model, event.version
    if isinstance(event, ev.ModelDeployed):
        return (event.models[0].name, event.models[0].version) if event.models else (None, None)
    if isinstance(event, (ev.RunStatusChanged, ev.RunCompleted)):
        marked = marks(event)
        if marked.get(MODEL_TAG):
            return marked[MODEL_TAG], marked.get(VERSION_TAG) or None
        for key, value in {**event.properties, **event.tags}.items():
            if key.lower() in ("model_name", "azureml.model_name", "model") and value:
                return value, None
        return policy.model_for_monitor(event.experiment_name), None
    if isinstance(event, ev.DatasetDriftDetected):
        return policy.model_for_monitor(event.drift_name), None
    return None, None


def decide_registry_event(event: ev.RegistryEvent, services: Services, *, key: str) -> Verdict:
    policy = services.policy
    model, version = subject_model(event, policy)
    if isinstance(event, ev.ModelRegistered):
        rule = policy.rule_for(event.model, event.tags)
        if rule is not None and rule.promotion is not None:
            return decide_promotion(event, rule, services, key)
        evidence = {"tags": dict(event.tags), "properties": dict(event.properties),
                    "rule": rule.rule if rule else None}
        reason = (f"registered and recorded under rule {rule.rule}" if rule
                  else f"registered and recorded; no policy rule matches model {event.model!r}")
        return Verdict(Outcome.NO_ACTION, reason, model=model, version=version, evidence=evidence)
    if isinstance(event, ev.ModelDeployed):
        return Verdict(Outcome.NO_ACTION,
                       f"deployment to endpoint {event.endpoint!r} recorded: {', '.join(map(str, event.models))}",
                       model=model, version=version,
                       evidence={"endpoint": event.endpoint, "compute_type": event.compute_type,
                                 "models": [str(ref) for ref in event.models], "tags": dict(event.tags)})
    if isinstance(event, ev.RunStatusChanged) and event.breach is not None:
        breach = event.breach
        signal = {"kind": "model_monitor", "monitor": event.experiment_name, "run_id": event.run_id,
                  "signal": breach.signal, "run_status": event.status,
                  "features": [{"feature": v.feature, "metric": v.metric, "value": v.value,
                                "threshold": v.threshold} for v in breach.violations]}
        drifted = ", ".join(v.feature for v in breach.violations) or "unnamed features"
        return act_on_drift(services, model, signal, f"monitor signal {breach.signal!r} breached on {drifted}", key)
    if isinstance(event, ev.DatasetDriftDetected):
        signal = {"kind": "dataset_monitor", "monitor": event.drift_name, "run_id": event.run_id,
                  "coefficient": event.coefficient, "base_dataset": event.base_dataset_id,
                  "target_dataset": event.target_dataset_id,
                  "window": [t.isoformat() if t else None for t in (event.start, event.end)]}
        return act_on_drift(services, model, signal,
                            f"dataset monitor {event.drift_name!r} drift coefficient {event.coefficient:g}", key)
    run = event  # RunCompleted or an ordinary RunStatusChanged
    status = getattr(run, "status", "Completed")
    if model is not None and is_test_stage(run) and status in ENDED:
        return test_stage_ended(services, run, model, status)
    if model is not None and marks(run).get(STAGE_TAG) == "drift" and status in ENDED:
        return drift_job_ended(services, run, model, status)
    if model is not None and run.tags.get(MODEL_TAG) and status in ENDED:
        return retraining_ended(services, run, model, status)
    return Verdict(Outcome.NO_ACTION, f"run {run.run_id} of {run.experiment_name!r} is {status}",
                   model=model, version=version,
                   evidence={"experiment": run.experiment_name, "run_id": run.run_id, "run_type": run.run_type,
                             "status": status})


"""Event Grid and CloudEvents 1.0 envelopes carrying Azure Machine Learning events.

``parse_registry_event`` turns one envelope, in either schema, into a typed event. The Functions
host (or the local host) splits a delivery into single events and answers the validation handshake.
"""
from __future__ import annotations

import json
import re
from typing import Any

from controlplane.domain import events as ev
from controlplane.domain.errors import InvalidEvent, UnsupportedEvent
from controlplane.domain.refs import AssetRef
from controlplane.parsing.fields import Fields, check_json


def read_envelope(raw: Any) -> tuple[ev.EventMeta, Fields]:
    """The envelope's metadata and its ``data`` object, in either schema."""
    envelope = Fields(raw)
    if envelope.has("specversion"):
        spec = envelope.text("specversion")
        if spec != "1.0":
            raise InvalidEvent("specversion", f"unsupported CloudEvents version {spec!r}, expected '1.0'")
        meta = ev.EventMeta(
            id=envelope.text("id"),
            type=envelope.text("type"),
            source=envelope.text("source"),
            subject=envelope.text("subject", default=""),
            time=envelope.time("time", default=None),  # optional in CloudEvents 1.0
            schema="cloudevents",
        )
    else:
        meta = ev.EventMeta(
            id=envelope.text("id"),
            type=envelope.text("eventType"),
            source=envelope.text("topic", default=""),
            subject=envelope.text("subject", default=""),
            time=envelope.time("eventTime"),
            schema="eventgrid",
        )
    return meta, envelope.obj("data")


def parse_registry_event(raw: Any) -> ev.RegistryEvent:
    """One Event Grid or CloudEvents envelope as a typed Azure ML event."""
    meta, data = read_envelope(raw)
    parser = _PARSERS.get(meta.type)
    if parser is None:
        raise UnsupportedEvent("eventType" if meta.schema == "eventgrid" else "type",
                               f"unsupported event type {meta.type!r}")
    return parser(meta, data)


def _model_registered(meta: ev.EventMeta, data: Fields) -> ev.ModelRegistered:
    return ev.ModelRegistered(
        meta=meta,
        model=data.text("modelName"),
        version=data.version("modelVersion"),
        tags=data.string_map("modelTags"),
        properties=data.string_map("modelProperties"),
    )


def _model_deployed(meta: ev.EventMeta, data: Fields) -> ev.ModelDeployed:
    ids_path = data.path_of("modelIds")
    refs = []
    for part in data.text("modelIds").split(","):
        name, sep, version = part.strip().rpartition(":")
        if not sep or not name or not version:
            raise InvalidEvent(ids_path, f"expected 'name:version' items, got {part.strip()!r}")
        refs.append(AssetRef(name, version))
    return ev.ModelDeployed(
        meta=meta,
        endpoint=data.text("serviceName"),
        compute_type=data.text("serviceComputeType", default=""),
        models=tuple(refs),
        tags=data.string_map("serviceTags"),
        properties=data.string_map("serviceProperties"),
    )


def _run_fields(data: Fields) -> dict[str, Any]:
    return dict(
        experiment_id=data.text("experimentId", default=""),
        experiment_name=data.text("experimentName"),
        run_id=data.text("runId"),
        run_type=data.text("runType", default=""),
        tags=data.string_map("runTags"),
        properties=data.string_map("runProperties"),
    )


def _run_completed(meta: ev.EventMeta, data: Fields) -> ev.RunCompleted:
    return ev.RunCompleted(meta=meta, **_run_fields(data))


def _run_status_changed(meta: ev.EventMeta, data: Fields) -> ev.RunStatusChanged:
    run = _run_fields(data)
    breach = None
    for key, text in run["tags"].items():
        if key.lower() == ev.MONITOR_BREACH_TAG:
            breach = parse_monitor_breach(text, f"{data.path_of('runTags')}.{key}")
    return ev.RunStatusChanged(meta=meta, status=data.text("runStatus"), breach=breach, **run)


def _dataset_drift_detected(meta: ev.EventMeta, data: Fields) -> ev.DatasetDriftDetected:
    return ev.DatasetDriftDetected(
        meta=meta,
        drift_id=data.text("dataDriftId"),
        drift_name=data.text("dataDriftName", default=""),
        run_id=data.text("runId", default=""),
        base_dataset_id=data.text("baseDatasetId", default=""),
        target_dataset_id=data.text("targetDatasetId", default=""),
        coefficient=data.number("driftCoefficient"),
        start=data.time("startTime", default=None),
        end=data.time("endTime", default=None),
    )


_PARSERS = {
    ev.MODEL_REGISTERED: _model_registered,
    ev.MODEL_DEPLOYED: _model_deployed,
    ev.RUN_COMPLETED: _run_completed,
    ev.RUN_STATUS_CHANGED: _run_status_changed,
    ev.DATASET_DRIFT_DETECTED: _dataset_drift_detected,
}

_SIGNAL = re.compile(r"signal\s+'([^']+)'", re.IGNORECASE)


def parse_monitor_breach(text: str, path: str) -> ev.MonitorBreach:
    """Parse the free text Azure ML model monitoring writes when a signal breaches its thresholds.

    The text names the signal, then lists one JSON object per violating feature (``group``,
    ``metric_name``, ``metric_value``, ``threshold_value``), sometimes as escaped JSON strings.
    """
    match = _SIGNAL.search(text)
    if match is None:
        raise InvalidEvent(path, "breach text names no signal (expected \"The signal '<name>' ...\")")
    violations = []
    for index, item in enumerate(_json_objects(text[match.end():])):
        item_path = f"{path}[{index}]"
        check_json(item, item_path)
        fields = Fields(item, item_path)
        violations.append(ev.FeatureViolation(
            feature=str(fields.raw("group", "feature", "feature_name")),
            metric=fields.text("metric_name"),
            value=fields.number("metric_value"),
            threshold=fields.number("threshold_value"),
        ))
    return ev.MonitorBreach(signal=match.group(1), violations=tuple(violations), text=text)


def _json_objects(text: str) -> list[Any]:
    """Every top-level JSON object in ``text``, whether written plainly or as escaped JSON strings."""
    decoder = json.JSONDecoder()
    found: list[Any] = []
    for candidate in (text, text.replace('\\"', '"')):
        position = candidate.find("{")
        while position != -1:
            try:
                value, end = decoder.raw_decode(candidate, position)
            except (ValueError, RecursionError):  # not JSON, or past Python's limits (check_json names it)
                position = candidate.find("{", position + 1)
                continue
            found.append(value)
            position = candidate.find("{", end)
        if found:
            return found
    return found


__all__ = ["parse_registry_event", "parse_monitor_breach", "read_envelope"]

"""Azure ML events in both envelopes and both casings, parsed strictly into typed events."""
from __future__ import annotations

import copy
from datetime import UTC

import pytest

from controlplane.domain import events as ev
from controlplane.domain.errors import InvalidEvent, UnsupportedEvent
from controlplane.parsing import parse_registry_event
from controlplane.parsing.eventgrid import parse_monitor_breach
from tests.support import load_event


def first(name):
    payload = load_event(name)
    return payload[0] if isinstance(payload, list) else payload


def test_model_registered_reads_the_same_in_documentation_and_sdk_casing():
    docs = parse_registry_event(first("eg_model_registered_docs.json"))
    sdk = parse_registry_event(first("eg_model_registered_sdk.json"))

    assert isinstance(docs, ev.ModelRegistered) and isinstance(sdk, ev.ModelRegistered)
    assert (docs.model, docs.version) == ("churn", "3")  # numeric version becomes a string
    assert sdk.version == "4" and sdk.model == "churn"
    assert docs.tags["created_by"] == "alice@contoso.com"
    assert docs.meta.schema == "eventgrid" and docs.meta.time.tzinfo is UTC
    assert not hasattr(sdk, "modelFramework")  # unknown fields are ignored


def test_cloudevents_envelope_gives_the_same_typed_event():
    event = parse_registry_event(first("ce_model_registered.json"))
    assert isinstance(event, ev.ModelRegistered)
    assert (event.model, event.version, event.meta.schema) == ("defect-detector", "7", "cloudevents")
    assert event.tags["note"] == "<script>alert(1)</script>"  # kept verbatim; pages escape it


@pytest.mark.parametrize("name, endpoint, models", [
    ("eg_model_deployed_docs.json", "churn-ep", ["churn:3", "churn:2"]),
    ("ce_model_deployed_sdk.json", "defect-detector-ep", ["defect-detector:7"]),
])
def test_model_deployed_lists_the_models_serving_the_endpoint(name, endpoint, models):
    event = parse_registry_event(first(name))
    assert isinstance(event, ev.ModelDeployed)
    assert event.endpoint == endpoint and [str(m) for m in event.models] == models


def other_casing(event):
    """The event with every data key in the other casing: ``RunId`` for ``runId`` and back."""
    twin = copy.deepcopy(event)
    twin["data"] = {(k[0].lower() if k[0].isupper() else k[0].upper()) + k[1:]: v for k, v in event["data"].items()}
    assert set(twin["data"]).isdisjoint(event["data"])
    return twin


@pytest.mark.parametrize("name, kind, run_id, experiment, status", [
    ("eg_run_completed_docs.json", ev.RunCompleted, "brave_kiwi_4tq8lm2zxp", "churn-training", None),
    ("ce_run_completed_sdk.json", ev.RunCompleted, "sleepy_mango_8hx3wz1q2c", "defect-detector-training", None),
    ("eg_run_status_changed_docs.json", ev.RunStatusChanged, "0f3b8e61-d27a-4c94-8b15-e6a9c2d74f08",
     "churn-training", "Running"),
    ("ce_run_status_changed_sdk.json", ev.RunStatusChanged, "happy_pear_2mz9tq6v4d", "churn-training", "Completed"),
])
def test_run_events_parse_in_both_casings(name, kind, run_id, experiment, status):
    event = first(name)
    parsed, twin = parse_registry_event(event), parse_registry_event(other_casing(event))
    assert type(parsed) is kind and twin == parsed
    assert (parsed.run_id, parsed.experiment_name) == (run_id, experiment)
    raw = {k.lower(): v for k, v in event["data"].items()}
    assert (parsed.experiment_id, parsed.run_type, parsed.tags) == (raw["experimentid"], raw["runtype"], raw["runtags"])
    if status:
        assert parsed.status == status and parsed.breach is None


@pytest.mark.parametrize("tag", ["azureml_modelmonitor_threshold_breached", "AZUREML_MODELMONITOR_THRESHOLD_BREACHED",
                                 "Azureml_ModelMonitor_Threshold_Breached"])
def test_the_breach_tag_is_found_in_any_casing(tag):
    event = copy.deepcopy(first("eg_monitor_breach.json"))
    tags = event["data"]["runTags"]
    text = tags.pop(ev.MONITOR_BREACH_TAG)
    event["data"]["runTags"] = {**tags, tag: text}
    parsed = parse_registry_event(event)
    assert parsed.breach is not None and parsed.breach.signal == "data-drift-signal"
    assert [v.feature for v in parsed.breach.violations] == ["age", "tenure_months", "plan"]


def test_monitor_breach_tag_is_parsed_into_feature_violations():
    event = parse_registry_event(first("eg_monitor_breach.json"))
    assert isinstance(event, ev.RunStatusChanged) and event.breach is not None
    assert event.breach.signal == "data-drift-signal"
    assert [(v.feature, v.metric, v.threshold) for v in event.breach.violations] == [
        ("age", "NormalizedWassersteinDistance", 0.1),
        ("tenure_months", "NormalizedWassersteinDistance", 0.1),
        ("plan", "JensenShannonDistance", 0.1),
    ]
    assert event.breach.violations[0].value == pytest.approx(0.2318470112)


def test_monitor_breach_in_pascal_case_cloudevent():
    event = parse_registry_event(first("ce_monitor_breach.json"))
    assert event.breach is not None and len(event.breach.violations) == 3
    assert event.breach.violations[1].metric == "PearsonsChiSquaredTest"


def test_breach_text_as_a_json_array_of_escaped_strings_is_understood_too():
    text = ("The signal 'drift' has failed due to one or more features violating metric thresholds. "
            '["{\\"group\\": \\"age\\", \\"metric_value\\": 0.3, \\"metric_name\\": \\"psi\\", '
            '\\"threshold_value\\": 0.2}"]')
    breach = parse_monitor_breach(text, "data.runTags.x")
    assert [(v.feature, v.value) for v in breach.violations] == [("age", 0.3)]


def test_breach_text_without_a_signal_names_the_tag():
    with pytest.raises(InvalidEvent) as error:
        parse_monitor_breach("thresholds violated", "data.runTags.azureml_modelmonitor_threshold_breached")
    assert error.value.subject == "data.runTags.azureml_modelmonitor_threshold_breached"


@pytest.mark.parametrize("name", ["eg_dataset_drift_detected.json", "ce_dataset_drift_detected.json"])
def test_legacy_dataset_drift_detected(name):
    event = parse_registry_event(first(name))
    assert isinstance(event, ev.DatasetDriftDetected)
    assert event.coefficient > 0 and event.drift_name


def test_unknown_event_type_is_unsupported_and_names_the_field():
    with pytest.raises(UnsupportedEvent) as error:
        parse_registry_event(first("eg_unknown_type.json"))
    assert error.value.subject == "eventType" and "SomethingNew" in error.value.reason


@pytest.mark.parametrize("mutate, path, words", [
    (lambda e: e["data"].update(ModelName=42), "data.ModelName", "expected a string, got int"),
    (lambda e: e["data"].pop("ModelVersion"), "data.modelVersion", "missing"),
    (lambda e: e["data"].update(ModelVersion=True), "data.ModelVersion", "version"),
    (lambda e: e.update(eventTime="yesterday"), "eventTime", "ISO 8601"),
    (lambda e: e.pop("id"), "id", "missing"),
    (lambda e: e.update(data=[1, 2]), "data", "expected an object"),
    (lambda e: e["data"].update(ModelTags={"a": {"nested": 1}}), "data.ModelTags.a", "scalar"),
])
def test_bad_fields_raise_one_error_naming_the_path(mutate, path, words):
    event = copy.deepcopy(first("eg_model_registered_docs.json"))
    mutate(event)
    with pytest.raises(InvalidEvent) as error:
        parse_registry_event(event)
    assert error.value.subject == path and words in error.value.reason


def test_model_ids_must_be_name_colon_version():
    event = copy.deepcopy(first("eg_model_deployed_docs.json"))
    event["data"]["ModelIds"] = "churn:3,churn"
    with pytest.raises(InvalidEvent) as error:
        parse_registry_event(event)
    assert error.value.subject == "data.ModelIds" and "'churn'" in error.value.reason


def test_cloudevents_must_be_version_1_0():
    event = copy.deepcopy(first("ce_model_registered.json"))
    event["specversion"] = "0.3"
    with pytest.raises(InvalidEvent, match="specversion"):
        parse_registry_event(event)


def test_cloudevents_time_is_optional():
    event = copy.deepcopy(first("ce_model_registered.json"))
    del event["time"]
    assert parse_registry_event(event).meta.time is None


def test_one_bad_event_in_a_batch_does_not_hide_the_good_ones():
    results = []
    for raw in load_event("ce_batch_mixed.json"):
        try:
            results.append(type(parse_registry_event(raw)).__name__)
        except InvalidEvent as error:
            results.append(f"invalid {error.subject}")
    assert results == ["ModelRegistered", "RunStatusChanged", "invalid data"]

"""The parsing rules as promised: any key casing, strict types with the failing field's path, times in every form
Azure sends (and none it does not), the intake limits, and Azure ML's envelopes and breach texts."""
from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from controlplane.domain import events as ev
from controlplane.domain.errors import InvalidEvent, UnsupportedEvent
from controlplane.domain.refs import AssetRef
from controlplane.parsing import fields as f
from controlplane.parsing.eventgrid import parse_monitor_breach, parse_registry_event, read_envelope
from controlplane.parsing.fields import Fields, check_json, child_path, clip, parse_json, parse_time
from tests.support import load_event


def one(name: str) -> dict:
    """The first event of a test file (the Event Grid ones are the batch arrays it delivers), as a copy."""
    loaded = load_event(name)
    return copy.deepcopy(loaded[0] if isinstance(loaded, list) else loaded)


def invalid(path: str, match: str = ""):
    """Expect ``InvalidEvent`` naming exactly ``path``."""

    class Check:
        def __enter__(self):
            self.raises = pytest.raises(InvalidEvent, match=match)
            self.info = self.raises.__enter__()
            return self.info

        def __exit__(self, *exc):
            handled = self.raises.__exit__(*exc)
            assert self.info.value.subject == path, self.info.value
            return handled

    return Check()


# ---- Fields: casing and paths -------------------------------------------------------------------------------------

def test_fields_are_found_in_any_casing_and_reported_as_spelled():
    data = Fields({"ModelName": "churn", "modelVersion": 3, "Other": None}, "$.data")
    assert data.text("modelName") == "churn" and data.text("MODELNAME") == "churn"
    assert data.path_of("modelname") == "$.data.ModelName" and data.path_of("missing") == "$.data.missing"
    assert data.has("modelVersion") and not data.has("other") and not data.has("nope")
    assert data.path_of("nope", "modelVersion") == "$.data.modelVersion"
    assert data.raw("x", "ModelName") == "churn" and data.raw("other", default=7) == 7
    assert data.as_dict() == {"ModelName": "churn", "modelVersion": 3, "Other": None}
    with invalid("$.data.Other", "required field is missing"):
        data.raw("Other")


def test_a_top_level_field_has_a_bare_path_and_a_long_key_is_shortened():
    assert child_path("$", "id") == "id" and child_path("data", "id") == "data.id"
    assert child_path("$", "k" * 64) == "k" * 64 and child_path("$", "k" * 65) == "k" * 64 + "…"
    with invalid("id", "required"):
        Fields({}).text("id")


def test_fields_wants_an_object():
    with invalid("$.data", "expected an object, got list"):
        Fields([], "$.data")
    assert Fields({"a": {"b": 1}}).obj("A").path == "a"
    with invalid("$", "expected an object, got null"):
        Fields(None)


def test_text_is_a_non_empty_string_unless_a_default_is_given():
    data = Fields({"a": "x", "blank": "  ", "n": 3})
    assert data.text("a") == "x" and data.text("blank", default="d") == "  " and data.text("zz", default="d") == "d"
    with invalid("blank", "must not be empty"):
        data.text("blank")
    with invalid("n", "expected a string, got int 3"):
        data.text("n")
    with invalid("zz", "required field is missing"):
        data.text("zz")


def test_a_version_is_a_string_or_an_integer_trimmed():
    data = Fields({"v": 3, "s": " 4 ", "b": True, "f": 1.5, "e": " "})
    assert data.version("v") == "3" and data.version("S") == "4"
    for name, message in (("b", "got bool"), ("f", "got float"), ("e", "must not be empty"),
                          ("zz", "required field is missing")):
        with invalid(name, message):
            data.version(name)


def test_a_number_is_finite_and_may_come_as_text():
    data = Fields({"i": 3, "s": "0.25", "b": False, "t": "abc", "inf": "inf", "o": {}, "big": "1e999"})
    assert data.number("i") == 3.0 and data.number("s") == 0.25 and data.number("zz", default=None) is None
    for name, message in (("b", "expected a number, got bool"), ("t", "expected a number, got 'abc'"),
                          ("inf", "expected a finite number"), ("o", "expected a finite number"),
                          ("big", "expected a finite number"), ("zz", "required field is missing")):
        with invalid(name, message):
            data.number(name)


def test_objects_arrays_and_maps_keep_their_paths():
    data = Fields({"o": {"k": 1}, "a": [1, {"x": 2}], "m": {"k": 1, "n": None, "b": True}, "bad": {"k": [1]}},
                  "$.data")
    assert data.obj("O").raw("K") == 1 and data.obj("zz", required=False).as_dict() == {}
    assert data.obj("zz", required=False).path == "$.data.zz"
    with invalid("$.data.zz", "required"):
        data.obj("zz")
    assert data.array("A") == [("$.data.a[0]", 1), ("$.data.a[1]", {"x": 2})] and data.array("zz", required=False) == []
    with invalid("$.data.zz", "required"):
        data.array("zz")
    with invalid("$.data.o", "expected an array, got dict"):
        data.array("o")
    assert data.string_map("M") == {"k": "1", "n": "", "b": "True"} and data.string_map("zz") == {}
    with invalid("$.data.bad.k", "expected a scalar value, got list"):
        data.string_map("bad")
    with invalid("$.data.a", "expected an object, got list"):
        data.string_map("a")
    assert data.json_object("bad") == {"k": [1]} and data.json_object("zz") == {}
    with invalid("$.data.a", "expected an object, got list"):
        data.json_object("a")


# ---- times --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("2026-11-22T10:00:00Z", datetime(2026, 11, 22, 10, tzinfo=UTC)),
    ("2026-11-22T10:00:00z", datetime(2026, 11, 22, 10, tzinfo=UTC)),
    (" 2026-11-22T10:00:00Z ", datetime(2026, 11, 22, 10, tzinfo=UTC)),
    ("2026-11-22T10:00:00", datetime(2026, 11, 22, 10, tzinfo=UTC)),
    ("2026-11-22T12:30:00+02:30", datetime(2026, 11, 22, 10, tzinfo=UTC)),
    ("2026-11-22T10:00:00.1234567Z", datetime(2026, 11, 22, 10, 0, 0, 123456, tzinfo=UTC)),
    ("2026-11-22T10:00:00.1234567+01:00", datetime(2026, 11, 22, 9, 0, 0, 123456, tzinfo=UTC)),
    ("2026-11-22T10:00:00.5Z", datetime(2026, 11, 22, 10, 0, 0, 500000, tzinfo=UTC)),
    ("2026-11-22 10:00:00Z", datetime(2026, 11, 22, 10, tzinfo=UTC)),
])
def test_times_are_read_as_aware_utc(text, expected):
    moment = parse_time(text, "t")
    assert moment == expected and moment.tzinfo is UTC


def test_an_aware_or_naive_datetime_is_taken_as_utc():
    assert parse_time(datetime(2026, 1, 1, 12), "t") == datetime(2026, 1, 1, 12, tzinfo=UTC)
    east = datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=3)))
    assert parse_time(east, "t") == datetime(2026, 1, 1, 9, tzinfo=UTC) and parse_time(east, "t").tzinfo is UTC


@pytest.mark.parametrize(("value", "message"), [
    ("2026-11-22", "the date alone"),
    (1764000000, "expected an ISO 8601 date and time, got int"),
    ("", "expected an ISO 8601 date and time, got str"),
    ("   ", "expected an ISO 8601 date and time"),
    (None, "got null"),
    ("yesterday", "expected an ISO 8601 date and time, got 'yesterday'"),
    ("2026-11-22T10:00:00Z" + " " * 50 + "x", "expected an ISO 8601"),
    ("1969-12-31T23:59:59Z", "outside 1970..8999"),
    ("9000-01-01T00:00:00Z", "outside 1970..8999"),
    ("2026-13-22T10:00:00Z", "expected an ISO 8601"),
    ("0001-01-01T00:00:00+01:00", "outside the supported range"),
])
def test_times_azure_does_not_send_are_refused_naming_the_field(value, message):
    with invalid("$.data.eventTime", message):
        parse_time(value, "$.data.eventTime")


def test_the_time_range_includes_its_start():
    assert parse_time("1970-01-01T00:00:00Z", "t") == f.EARLIEST
    assert parse_time("8999-12-31T23:59:59Z", "t").year == 8999


def test_a_time_field_may_default():
    data = Fields({"at": "2026-11-22T10:00:00Z"})
    assert data.time("AT") == datetime(2026, 11, 22, 10, tzinfo=UTC) and data.time("zz", default=None) is None
    with invalid("zz", "required"):
        data.time("zz")


# ---- intake limits ------------------------------------------------------------------------------------------------

def test_json_is_read_from_utf8_with_or_without_a_bom():
    assert parse_json(b'\xef\xbb\xbf{"a": 1}') == {"a": 1} and parse_json('{"a": [1, 2]}') == {"a": [1, 2]}


@pytest.mark.parametrize(("raw", "message"), [
    (b"\xff{}", "not UTF-8 text"),
    (b'{"a": }', "malformed JSON: Expecting value at line 1 column 7"),
    (b'{"a": NaN}', "NaN is not a JSON number"),
    (b'{"a": -Infinity}', "-Infinity is not a JSON number"),
    (b"[" * 5000 + b"]" * 5000, "nested deeper than 64 levels"),
    (b'{"a": 1' + b"0" * 5000 + b"}", "a number is too long"),
])
def test_malformed_json_is_refused_at_the_documents_path(raw, message):
    with invalid("$body", message):
        parse_json(raw, "$body")


def test_a_document_over_the_size_limit_is_refused_before_it_is_read(monkeypatch):
    monkeypatch.setattr(f, "MAX_JSON_BYTES", 10)
    assert parse_json(b'{"a": 100}') == {"a": 100}
    with invalid("$", "11 bytes is over the 10-byte limit"):
        parse_json(b'{"a": 1000}')


def nested(depth: int):
    value: object = 1
    for _ in range(depth - 1):
        value = [value]
    return {"a": value}


def test_nesting_is_limited_and_the_path_leads_to_the_deepest_item():
    check_json(nested(f.MAX_DEPTH))
    with invalid("a" + "[0]" * (f.MAX_DEPTH - 1), "nested deeper than 64 levels"):
        check_json(nested(f.MAX_DEPTH + 1))


@pytest.mark.parametrize(("value", "path", "message"), [
    ({"a": {"b": [1, 2 ** 64]}}, "a.b[1]", "integer of 65 bits is outside the 64-bit range"),
    ({"a": [-(2 ** 63) - 1]}, "a[0]", "outside the 64-bit range"),
    ({"a": float("inf")}, "a", "expected a finite number, got inf"),
    ({"a": [float("nan")]}, "a[0]", "expected a finite number, got nan"),
    ({"a": "\ud800"}, "a", "lone surrogate"),
    ({"a": {"\ud800x": 1}}, "a.\ud800x", "lone surrogate"),
    ({"a": {1: 2}}, "a[1]", "expected string keys, got int"),
    ({"k" * (f.MAX_KEY_CHARS + 1): 1}, "k" * 64 + "…", "over the 1024-character limit"),
    ({"a": ({"b": object()},)}, "a[0].b", "expected a JSON value, got object"),
    ({"a": {1.5}}, "a", "expected a JSON value, got set"),
])
def test_values_past_the_limits_are_refused_with_their_path(value, path, message):
    with invalid(path, message):
        check_json(value)


def test_values_at_the_limits_are_accepted():
    check_json({"a": [2 ** 64 - 1, -(2 ** 63), 1.5, True, None, "é" * 300, "x" * 300], "k" * f.MAX_KEY_CHARS: 1})
    check_json("text")
    check_json(None)
    check_json(2 ** 64 - 1)
    with invalid("$", "outside the 64-bit range"):
        check_json(2 ** 64)
    with invalid("$", "got bytes"):
        check_json(b"x")


def test_a_long_string_is_checked_against_the_string_limit(monkeypatch):
    monkeypatch.setattr(f, "MAX_STRING_CHARS", 300)
    check_json({"a": "x" * 300})
    with invalid("a", "text of 301 characters is over the 300-character limit"):
        check_json({"a": "x" * 301})
    with invalid("$", "text of 301 characters"):
        check_json("x" * 301)


def test_clip_cuts_to_the_limit_and_escapes_lone_surrogates():
    assert clip("abc", 2) == "ab" and clip("abc", 3) == "abc" and clip("x" * 5000) == "x" * f.MAX_STORED_CHARS
    assert clip("é\ud800", 10) == "é\\ud800"


# ---- envelopes ----------------------------------------------------------------------------------------------------

def test_an_event_grid_envelope_and_a_cloudevent_carry_the_same_metadata():
    meta, data = read_envelope(one("eg_model_registered_sdk.json"))
    assert meta.schema == "eventgrid" and meta.type == ev.MODEL_REGISTERED and meta.time.tzinfo is UTC
    assert data.path == "data" and data.text("modelName")
    meta, _ = read_envelope(one("ce_model_registered.json"))
    assert meta.schema == "cloudevents" and meta.type == ev.MODEL_REGISTERED and meta.source


def test_a_cloudevent_of_another_version_or_without_time_is_read_strictly():
    raw = one("ce_model_registered.json")
    raw.pop("time", None)
    assert read_envelope(raw)[0].time is None
    with invalid("specversion", "unsupported CloudEvents version '0.3'"):
        read_envelope({**raw, "specversion": "0.3"})


def test_an_unknown_event_type_names_the_schemas_type_field():
    raw = one("eg_model_registered_sdk.json")
    with pytest.raises(UnsupportedEvent, match="unsupported event type 'X.Y'") as raised:
        parse_registry_event({**raw, "eventType": "X.Y"})
    assert raised.value.subject == "eventType"
    ce = one("ce_model_registered.json")
    with pytest.raises(UnsupportedEvent) as raised:
        parse_registry_event({**ce, "type": "X.Y"})
    assert raised.value.subject == "type"


def test_model_registered_reads_name_version_tags_and_properties():
    event = parse_registry_event(one("eg_model_registered_sdk.json"))
    assert isinstance(event, ev.ModelRegistered) and event.model and event.version
    raw = one("eg_model_registered_sdk.json")
    raw["data"] = {"ModelName": "churn", "ModelVersion": 7, "ModelTags": {"auc": 0.9}, "ModelProperties": None}
    event = parse_registry_event(raw)
    assert (event.model, event.version, dict(event.tags), dict(event.properties)) == ("churn", "7", {"auc": "0.9"},
                                                                                      {})


def test_model_deployed_reads_every_model_reference():
    raw = one("eg_model_deployed_docs.json")
    raw["data"].update(modelIds="churn:3, fraud:v2:12", serviceName="churn-ep")
    event = parse_registry_event(raw)
    assert event.models == (AssetRef("churn", "3"), AssetRef("fraud:v2", "12")) and event.endpoint == "churn-ep"
    for bad in ("churn", "churn:", ":3", "churn:3,"):
        raw["data"]["modelIds"] = bad
        with invalid("data.modelIds", "expected 'name:version' items"):
            parse_registry_event(raw)


def test_a_dataset_drift_event_reads_its_coefficient_and_optional_times():
    raw = one("eg_dataset_drift_detected.json")
    event = parse_registry_event(raw)
    assert isinstance(event, ev.DatasetDriftDetected) and event.drift_id == raw["data"]["DataDriftId"]
    assert event.coefficient == raw["data"]["DriftCoefficient"] and event.start.tzinfo is UTC
    for key in [k for k in raw["data"] if k.lower() in ("starttime", "endtime", "datadriftname")]:
        del raw["data"][key]
    event = parse_registry_event(raw)
    assert event.start is None and event.end is None and event.drift_name == ""


# ---- monitor breaches ---------------------------------------------------------------------------------------------

def breach_event(tag: str = ev.MONITOR_BREACH_TAG):
    raw = one("eg_monitor_breach.json")
    tags = raw["data"]["runTags"]
    tags[tag] = tags.pop(ev.MONITOR_BREACH_TAG)
    return raw


@pytest.mark.parametrize("tag", [ev.MONITOR_BREACH_TAG, ev.MONITOR_BREACH_TAG.upper(),
                                 "AzureML_ModelMonitor_Threshold_Breached"])
def test_the_breach_tag_is_matched_in_any_casing(tag):
    event = parse_registry_event(breach_event(tag))
    assert event.breach is not None and event.breach.signal == "data-drift-signal"
    assert [v.feature for v in event.breach.violations] == ["age", "tenure_months", "plan"]
    assert event.breach.violations[0] == ev.FeatureViolation("age", "NormalizedWassersteinDistance", 0.2318470112,
                                                             0.1)


def test_a_run_without_the_breach_tag_has_no_breach():
    raw = one("eg_monitor_breach.json")
    del raw["data"]["runTags"][ev.MONITOR_BREACH_TAG]
    event = parse_registry_event(raw)
    assert event.breach is None and event.status == "Failed" and event.run_id


def test_breach_text_plain_or_escaped_json_and_errors_name_the_tag():
    plain = ("The signal 'prediction-drift' has failed.\n"
             '{"feature": "score", "metric_name": "JSD", "metric_value": 0.3, "threshold_value": "0.2"} and '
             '{"feature_name": "age", "metric_name": "JSD", "metric_value": 1, "threshold_value": 0.5}')
    breach = parse_monitor_breach(plain, "tags.x")
    assert breach.signal == "prediction-drift" and breach.text == plain
    assert breach.violations == (ev.FeatureViolation("score", "JSD", 0.3, 0.2), ev.FeatureViolation("age", "JSD",
                                                                                                    1.0, 0.5))
    escaped = "THE SIGNAL 'x' failed: [" + json.dumps(json.dumps({"group": "a", "metric_name": "m",
                                                                   "metric_value": 2, "threshold_value": 1})) + "]"
    assert parse_monitor_breach(escaped, "p").violations == (ev.FeatureViolation("a", "m", 2.0, 1.0),)
    assert parse_monitor_breach("The signal 'x' failed {not json}", "p").violations == ()
    after_noise = parse_monitor_breach("signal 'x' {not json} " + json.dumps(
        {"group": "a", "metric_name": "m", "metric_value": 2, "threshold_value": 1}), "p")
    assert after_noise.violations == (ev.FeatureViolation("a", "m", 2.0, 1.0),)
    with invalid("tags.x", "names no signal"):
        parse_monitor_breach("something failed", "tags.x")
    with invalid("tags.x[0].metric_value", "expected a number"):
        parse_monitor_breach("signal 'x' {\"group\": \"a\", \"metric_name\": \"m\", \"metric_value\": \"hi\", "
                             "\"threshold_value\": 1}", "tags.x")


@pytest.mark.parametrize(("name", "field", "path"), [
    ("eg_model_registered_sdk.json", "modelName", "data.modelName"),
    ("eg_model_deployed_docs.json", "ServiceName", "data.serviceName"),
    ("eg_run_completed_docs.json", "ExperimentName", "data.experimentName"),
    ("eg_run_status_changed_docs.json", "RunStatus", "data.runStatus"),
])
def test_a_missing_required_field_is_named_as_documented(name, field, path):
    raw = one(name)
    for key in [k for k in raw["data"] if k.lower() == field.lower()]:
        del raw["data"][key]
    with invalid(path, "required field is missing"):
        parse_registry_event(raw)


def test_optional_fields_read_empty_when_absent_and_as_sent_when_present():
    raw = one("eg_model_deployed_docs.json")
    raw["data"] = {"ServiceName": "churn-ep", "ModelIds": "churn:3", "ServiceProperties": {"p": 1}}
    deployed = parse_registry_event(raw)
    assert deployed.compute_type == "" and dict(deployed.properties) == {"p": "1"} and dict(deployed.tags) == {}
    drift = one("eg_dataset_drift_detected.json")
    drift["data"] = {"DataDriftId": "d1", "DriftCoefficient": 0.4}
    event = parse_registry_event(drift)
    assert (event.target_dataset_id, event.base_dataset_id, event.run_id) == ("", "", "")
    run = one("eg_run_completed_docs.json")
    run["data"] = {"ExperimentName": "e", "RunId": "r1"}
    completed = parse_registry_event(run)
    assert (completed.experiment_id, completed.run_type, dict(completed.tags)) == ("", "", {})
    envelope = one("eg_model_registered_sdk.json")
    envelope.pop("subject", None)
    assert read_envelope(envelope)[0].subject == ""
    ce = one("ce_model_registered.json")
    ce.pop("subject", None)
    assert read_envelope(ce)[0].subject == ""


def test_a_malformed_breach_names_the_tag_it_was_read_from():
    raw = breach_event()
    raw["data"]["runTags"][ev.MONITOR_BREACH_TAG] = "no signal named here"
    with invalid(f"data.runTags.{ev.MONITOR_BREACH_TAG}", "names no signal"):
        parse_registry_event(raw)

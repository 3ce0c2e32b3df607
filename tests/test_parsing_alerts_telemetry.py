"""Azure Monitor's common alert schema in all its kinds, and the telemetry contract."""
from __future__ import annotations

import copy
import gzip
import json

import pytest

from controlplane.domain.errors import InvalidEvent
from controlplane.parsing import parse_alert, parse_telemetry_body
from tests.support import event_bytes, load_event


def test_metric_alert_keeps_its_condition_with_a_numeric_threshold():
    alert = parse_alert(load_event("alert_metric_fired.json"))
    assert alert.fired and alert.severity == "Sev2" and alert.signal_type == "Metric"
    [condition] = alert.conditions
    assert condition.metric == "RequestLatency_P95" and condition.threshold == 500.0  # sent as the string "500"
    assert condition.value == pytest.approx(812.4) and condition.dimensions == {"deployment": "green"}
    assert alert.targets[0].lower().endswith("/onlineendpoints/churn-ep")


def test_resolved_alert_has_the_same_id_and_a_resolution_time():
    fired, resolved = parse_alert(load_event("alert_metric_fired.json")), parse_alert(
        load_event("alert_metric_resolved.json"))
    assert fired.alert_id == resolved.alert_id
    assert resolved.monitor_condition == "Resolved" and resolved.resolved_at > fired.fired_at


def test_log_alert_v2_reads_query_and_count():
    alert = parse_alert(load_event("alert_log_v2.json"))
    [condition] = alert.conditions
    assert alert.signal_type == "Log" and condition.query and condition.threshold == 10.0
    assert condition.value == 27


def test_legacy_log_alert_in_pascal_case():
    alert = parse_alert(load_event("alert_log_legacy.json"))
    [condition] = alert.conditions
    assert condition.threshold == 5 and condition.value == 7 and "AmlOnlineEndpointConsoleLog" in condition.query


@pytest.mark.parametrize("name", ["alert_activity_log.json", "alert_service_health.json"])
def test_activity_log_and_service_health_alerts(name):
    alert = parse_alert(load_event(name))
    assert alert.signal_type == "Activity Log"
    [condition] = alert.conditions
    assert condition.metric  # the operation or the incident title


def test_alert_rule_id_spelling_and_target_casing_vary():
    alert = parse_alert(load_event("alert_pascal_essentials.json"))
    assert alert.rule_id and alert.targets


def test_cpu_alert_with_null_custom_properties():
    alert = parse_alert(load_event("alert_cpu_fired.json"))
    assert alert.custom_properties == {} and alert.conditions[0].metric == "CpuUtilizationPercentage"


@pytest.mark.parametrize("mutate, path", [
    (lambda a: a.update(schemaId="Microsoft.Insights/activityLogs"), "schemaId"),
    (lambda a: a["data"]["essentials"].update(severity="Sev9"), "data.essentials.severity"),
    (lambda a: a["data"]["essentials"].update(monitorCondition="Flapping"), "data.essentials.monitorCondition"),
    (lambda a: a["data"]["essentials"].pop("alertId"), "data.essentials.alertId"),
    (lambda a: a["data"]["essentials"].update(alertTargetIDs="one"), "data.essentials.alertTargetIDs"),
    (lambda a: a["data"]["alertContext"]["condition"]["allOf"][0].update(threshold="high"),
     "data.alertContext.condition.allOf[0].threshold"),
])
def test_bad_alert_fields_are_named(mutate, path):
    alert = copy.deepcopy(load_event("alert_metric_fired.json"))
    mutate(alert)
    with pytest.raises(InvalidEvent) as error:
        parse_alert(alert)
    assert error.value.subject == path


def test_telemetry_single_record_and_array():
    [record] = parse_telemetry_body(event_bytes("telemetry_record.json"))
    assert (record.model, record.version, record.deployment) == ("churn", "3", "green")
    assert record.inputs["age"] == 42 and record.timestamp.tzinfo is not None
    assert len(parse_telemetry_body(event_bytes("telemetry_batch.json"))) == 5


def test_telemetry_gzip_body_is_accepted_with_or_without_the_property():
    body = gzip.compress(event_bytes("telemetry_batch.json"))
    assert len(parse_telemetry_body(body, "gzip")) == 5
    assert len(parse_telemetry_body(body)) == 5


def test_telemetry_bad_record_names_its_index_and_field():
    with pytest.raises(InvalidEvent) as error:
        parse_telemetry_body(event_bytes("telemetry_bad_records.json"))
    assert error.value.subject == "[1].timestamp"


@pytest.mark.parametrize("body, path, words", [
    (b"{not json", "$", "malformed JSON"),
    (b"\xff\xfe", "$", "not UTF-8"),
    (b"[]", "$", "no records"),
    (json.dumps({"model": "churn"}).encode(), "version", "missing"),
    (b"\x1f\x8bnot gzip", "$", "gzip"),
])
def test_telemetry_malformed_bodies(body, path, words):
    with pytest.raises(InvalidEvent) as error:
        parse_telemetry_body(body)
    assert error.value.subject == path and words in error.value.reason

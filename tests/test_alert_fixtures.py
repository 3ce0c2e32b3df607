"""The alert fixtures in tests/events: every kind parses, in either key casing, to the same ``Alert``."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from controlplane.domain.errors import InvalidEvent
from controlplane.domain.events import Alert
from controlplane.parsing import parse_alert
from controlplane.parsing.fields import parse_json
from tests.support import EVENTS

SUB = "3f9c2b7e-5a41-4d8e-9b6a-2c7e1f04a9d3"
ENDPOINT = (f"/subscriptions/{SUB}/resourcegroups/rg-ml-prod/providers/microsoft.machinelearningservices"
            "/workspaces/mlw-prod/onlineendpoints/churn-ep")
ALERT_FIXTURES = sorted(path.name for path in EVENTS.glob("alert_*.json"))


def load(name: str) -> Any:
    return parse_json((EVENTS / name).read_bytes(), name)


def parse(name: str) -> Alert:
    return parse_alert(load(name))


def at(hour: int, minute: int, second: int = 0, micro: int = 0) -> datetime:
    return datetime(2026, 11, 22, hour, minute, second, micro, tzinfo=UTC)


def meaning(alert: Alert) -> dict[str, Any]:
    """The fields a decision depends on (``context`` keeps the payload's own key spelling, so it is left out)."""
    return {
        "alert_id": alert.alert_id,
        "rule": alert.rule,
        "rule_id": alert.rule_id,
        "severity": alert.severity,
        "signal_type": alert.signal_type,
        "monitor_condition": alert.monitor_condition,
        "monitoring_service": alert.monitoring_service,
        "targets": alert.targets,
        "configuration_items": alert.configuration_items,
        "fired_at": alert.fired_at,
        "resolved_at": alert.resolved_at,
        "description": alert.description,
        "custom_properties": dict(alert.custom_properties),
        "conditions": [
            (c.metric, c.operator, c.threshold, c.value, dict(c.dimensions), c.query) for c in alert.conditions
        ],
    }


@pytest.mark.parametrize("twin, original", [
    ("alert_metric_fired_pascal.json", "alert_metric_fired.json"),
    ("alert_metric_resolved_pascal.json", "alert_metric_resolved.json"),
    ("alert_log_v2_pascal.json", "alert_log_v2.json"),
    ("alert_activity_log_pascal.json", "alert_activity_log.json"),
    ("alert_service_health_pascal.json", "alert_service_health.json"),
    ("alert_log_legacy_camel.json", "alert_log_legacy.json"),
])
def test_casing_twin_parses_to_the_same_alert(twin, original):
    twin_payload, original_payload = load(twin), load(original)
    # The twin really is re-cased: no key of its alertContext is spelled as in the original.
    assert not set(twin_payload["data"]["alertContext"]) & set(original_payload["data"]["alertContext"]) - {
        "Activity Log Event Description", "ResourceType"}
    assert meaning(parse_alert(twin_payload)) == meaning(parse_alert(original_payload))


def test_pascal_twins_keep_the_documented_id_spellings():
    essentials = load("alert_metric_fired_pascal.json")["data"]["essentials"]
    assert "AlertTargetIDs" in essentials and "AlertRuleID" in essentials


def test_latency_on_blue_fired():
    alert = parse("alert_latency_blue_fired.json")
    assert (alert.rule, alert.severity, alert.signal_type, alert.monitor_condition) == (
        "churn-ep-latency-p95", "Sev1", "Metric", "Fired")
    assert alert.targets == (ENDPOINT,) and alert.fired_at == at(12, 5) and alert.resolved_at is None
    [condition] = alert.conditions
    assert (condition.metric, condition.operator, condition.threshold, condition.value) == (
        "RequestLatency_P95", "GreaterThan", 500.0, 1250.0)
    assert condition.dimensions == {"deployment": "blue"} and condition.aggregation == "Average"
    assert alert.alert_id != parse("alert_metric_fired.json").alert_id


def test_latency_on_blue_fired_again_is_a_new_alert_of_the_same_rule():
    first, again = parse("alert_latency_blue_fired.json"), parse("alert_latency_blue_fired_again.json")
    assert again.alert_id != first.alert_id and again.fired
    assert (again.rule, again.rule_id, again.targets, again.severity) == (
        first.rule, first.rule_id, first.targets, first.severity)
    assert again.fired_at == at(12, 10) and again.conditions[0].dimensions == {"deployment": "blue"}


def test_latency_on_blue_resolved_closes_the_first_alert():
    first, resolved = parse("alert_latency_blue_fired.json"), parse("alert_latency_blue_resolved.json")
    assert resolved.alert_id == first.alert_id and not resolved.fired
    assert resolved.monitor_condition == "Resolved" and resolved.fired_at == at(12, 5)
    assert resolved.resolved_at == at(12, 20)
    [condition] = resolved.conditions
    assert condition.value < condition.threshold == 500.0 and condition.dimensions == {"deployment": "blue"}


def test_cpu_on_the_blue_deployment():
    alert = parse("alert_cpu_blue_fired.json")
    assert alert.severity == "Sev2" and alert.fired and alert.signal_type == "Metric"
    assert alert.targets == (f"{ENDPOINT}/deployments/blue",)
    assert alert.fired_at == at(12, 7, 41, 553091) and alert.custom_properties == {}
    [condition] = alert.conditions
    assert (condition.metric, condition.operator, condition.threshold, condition.value) == (
        "CpuUtilizationPercentage", "GreaterThan", 85.0, 94.2)
    assert list(condition.dimensions) == ["instanceId"] and condition.dimensions["instanceId"].startswith("blue-")


def test_quota_failure_in_the_activity_log():
    alert = parse("alert_quota_activity_log.json")
    assert alert.signal_type == "Activity Log" and alert.monitoring_service == "Activity Log - Administrative"
    assert alert.severity == "Sev4" and alert.fired and alert.targets == (ENDPOINT,)
    assert alert.fired_at == at(12, 3, 17, 284601)
    [condition] = alert.conditions
    assert condition.metric == "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/deployments/write"
    assert condition.operator == "Failed" and condition.threshold is None and condition.value is None
    properties = alert.context["properties"]
    assert "quota" in properties["statusMessage"].lower()
    error = parse_json(properties["statusMessage"])["error"]  # a JSON string inside the payload
    assert error["code"] == "BadRequest" and "Not enough quota" in error["details"][0]["message"]


def test_metric_alert_on_a_storage_account():
    alert = parse("alert_unknown_target.json")
    assert alert.severity == "Sev3" and alert.fired and alert.signal_type == "Metric"
    [target] = alert.targets
    assert "/microsoft.storage/storageaccounts/" in target and "machinelearningservices" not in target
    assert alert.fired_at == at(12, 14, 52, 880734)
    [condition] = alert.conditions
    assert (condition.metric, condition.operator, condition.threshold, condition.value) == (
        "Availability", "LessThan", 99.0, 97.31)
    assert condition.dimensions == {"ApiName": "GetBlob"}


def test_resource_health_degraded_endpoint():
    alert = parse("alert_resource_health.json")
    assert alert.signal_type == "Activity Log" and alert.monitoring_service == "Resource Health"
    assert alert.targets == (ENDPOINT,) and alert.fired and alert.fired_at == at(12, 26, 8, 914257)
    [condition] = alert.conditions
    assert condition.metric == "Microsoft.Resourcehealth/healthevent/Activated/action"
    assert condition.operator == "Active"
    assert alert.context["properties"]["currentHealthStatus"] == "Degraded"
    assert alert.context["properties"]["previousHealthStatus"] == "Available"


def test_the_fixture_set_is_complete():
    new = {"alert_metric_fired_pascal.json", "alert_log_v2_pascal.json", "alert_activity_log_pascal.json",
           "alert_service_health_pascal.json", "alert_metric_resolved_pascal.json", "alert_log_legacy_camel.json",
           "alert_latency_blue_fired.json", "alert_latency_blue_fired_again.json",
           "alert_latency_blue_resolved.json", "alert_cpu_blue_fired.json", "alert_quota_activity_log.json",
           "alert_unknown_target.json", "alert_resource_health.json"}
    assert new <= set(ALERT_FIXTURES)


@pytest.mark.parametrize("name", ALERT_FIXTURES)
def test_every_alert_fixture_parses(name):
    alert = parse(name)
    assert alert.alert_id and alert.rule and alert.fired_at.tzinfo is UTC
    assert alert.severity in {"Sev0", "Sev1", "Sev2", "Sev3", "Sev4"}
    assert (alert.resolved_at is not None) == (alert.monitor_condition == "Resolved")


@pytest.mark.parametrize("name", ALERT_FIXTURES)
def test_every_alert_fixture_without_its_alert_id_is_refused_naming_it(name):
    payload = load(name)
    essentials = payload["data"]["essentials"]
    [key] = [key for key in essentials if key.lower() == "alertid"]
    del essentials[key]
    with pytest.raises(InvalidEvent) as error:
        parse_alert(payload)
    assert "alertid" in error.value.subject.lower()

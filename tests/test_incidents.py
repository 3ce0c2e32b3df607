"""Incident grouping as a pure state machine: what each alert does to its incident."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

from controlplane.domain.events import Alert, AlertCondition
from controlplane.domain.incidents import Effect, IncidentState, is_infrastructure, observe, target_of
from controlplane.parsing import parse_alert
from controlplane.parsing.fields import parse_json
from tests.support import event_bytes

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def alert(alert_id="a1", condition="Fired", severity="Sev2", **fields) -> Alert:
    values = dict(alert_id=alert_id, rule="latency", rule_id="", severity=severity, signal_type="Metric",
                  monitor_condition=condition, monitoring_service="Platform", targets=(), configuration_items=(),
                  fired_at=T0, resolved_at=T0 if condition == "Resolved" else None, description="", conditions=())
    return Alert(**{**values, **fields})


def step(current, a, at=T0, cooldown=HOUR):
    return observe(current, a, "g", "latency", "churn-ep/blue", cooldown, at)


def test_fired_opens_repeats_count_quietly_resolved_closes():
    opened, effect = step(None, alert("a1"))
    assert effect is Effect.OPENED and opened.state is IncidentState.OPEN and opened.number == 1
    assert opened.acted_at == T0 and opened.revision == 1

    again, effect = step(opened, alert("a2"), T0 + timedelta(minutes=5))
    assert effect is Effect.REPEATED and not effect.tells and again.fired == 2 and again.acted_at == T0

    closed, effect = step(again, alert("a1", "Resolved"), T0 + timedelta(minutes=9))
    assert effect is Effect.RESOLVED and closed.state is IncidentState.CLOSED and closed.revision == 3


def test_a_more_severe_alert_escalates_the_open_incident_without_new_actions():
    opened, _ = step(None, alert("a1", severity="Sev3"))
    escalated, effect = step(opened, alert("a2", severity="Sev1"))
    assert effect is Effect.ESCALATED and effect.tells and escalated.severity == "Sev1"
    calmer, effect = step(escalated, alert("a3", severity="Sev2"))
    assert effect is Effect.REPEATED and calmer.severity == "Sev1"


def test_reopening_within_the_cooldown_tells_but_does_not_act_and_after_it_acts_again():
    opened, _ = step(None, alert("a1"))
    closed, _ = step(opened, alert("a1", "Resolved"), T0 + timedelta(minutes=10))
    soon, effect = step(closed, alert("a2"), T0 + timedelta(minutes=20))
    assert effect is Effect.REOPENED_IN_COOLDOWN and soon.number == 2 and soon.acted_at == T0
    closed2, _ = step(soon, alert("a2", "Resolved"), T0 + timedelta(minutes=30))
    later, effect = step(closed2, alert("a3"), T0 + timedelta(hours=2))
    assert effect is Effect.OPENED and later.number == 3 and later.acted_at == T0 + timedelta(hours=2)


def test_an_alert_seen_before_has_the_same_effect_and_changes_nothing():
    opened, _ = step(None, alert("a1"))
    again, effect = step(opened, alert("a1"), T0 + timedelta(minutes=1))
    assert effect is Effect.OPENED and again == opened  # a retry after a failure half-way


def test_resolved_before_its_fired_is_remembered_so_the_late_fired_opens_nothing():
    remembered, effect = step(None, alert("a1", "Resolved"))
    assert effect is Effect.STALE and remembered.state is IncidentState.CLOSED and remembered.number == 0
    late, effect = step(remembered, alert("a1"), T0 + timedelta(minutes=1))
    assert effect is Effect.STALE and late.state is IncidentState.CLOSED
    fresh, effect = step(late, alert("a2"), T0 + timedelta(minutes=2))
    assert effect is Effect.OPENED and fresh.number == 1


def test_only_the_newest_alerts_are_remembered():
    incident, _ = step(None, alert("a0"))
    for n in range(1, 80):
        incident, _ = step(incident, alert(f"a{n}"))
    assert len(incident.handled) == 50 and "a79:Fired" in incident.handled and "a0:Fired" not in incident.handled
    assert incident.fired == 80


def test_targets_come_from_resource_ids_dimensions_and_custom_properties():
    metric = parse_alert(parse_json(event_bytes("alert_metric_fired.json")))
    assert target_of(metric).name == "churn-ep/green"  # endpoint from the ID, deployment from the dimension
    cpu = parse_alert(parse_json(event_bytes("alert_cpu_fired.json")))
    assert (target_of(cpu).endpoint, target_of(cpu).deployment) == ("churn-ep", "green")  # a deployment's ID
    log = alert(targets=("/subscriptions/s/resourceGroups/rg/providers/Microsoft.OperationalInsights/workspaces/la",),
                signal_type="Log", conditions=(AlertCondition("count", "GreaterThan", 5, 9,
                                                              dimensions={"EndpointName": "churn-ep",
                                                                          "DeploymentName": "blue"}),))
    assert target_of(log).name == "churn-ep/blue"
    workspace = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.OperationalInsights/workspaces/la"
    item = alert(targets=(workspace,), signal_type="Log", configuration_items=(
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/w/"
        "onlineEndpoints/Fraud-EP/deployments/Blue",))
    assert (target_of(item).endpoint, target_of(item).deployment) == ("fraud-ep", "blue")
    custom = alert(targets=("/subscriptions/s/x",), custom_properties={"endpoint": "fraud-ep"})
    assert target_of(custom).name == "fraud-ep"
    storage = alert(targets=("/subscriptions/S/resourceGroups/RG/providers/Microsoft.Storage/storageAccounts/Data",))
    assert target_of(storage).endpoint is None
    assert target_of(storage).name == storage.targets[0].lower()


def test_compute_health_and_platform_signals_are_infrastructure_latency_is_not():
    cpu = parse_alert(parse_json(event_bytes("alert_cpu_fired.json")))
    latency = parse_alert(parse_json(event_bytes("alert_metric_fired.json")))
    health = parse_alert(parse_json(event_bytes("alert_service_health.json")))
    assert is_infrastructure(cpu) and is_infrastructure(health) and not is_infrastructure(latency)

"""The incident rules as promised: what an alert is about, how alerts group, and what each does to its incident."""
from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from controlplane.domain.events import Alert, AlertCondition
from controlplane.domain.incidents import (
    REMEMBERED_ALERTS,
    Effect,
    Incident,
    IncidentState,
    Target,
    group_of,
    is_infrastructure,
    more_severe,
    observe,
    target_of,
)

T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
COOLDOWN = timedelta(minutes=30)
DEPLOYMENT_ID = ("/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws/"
                 "onlineEndpoints/Churn-EP/deployments/Green")


def alert(condition="Fired", alert_id="a1", severity="Sev2", resolved_at=None, targets=(DEPLOYMENT_ID,),
          signal_type="Metric", metric="RequestLatency_P95", dimensions=None, custom=None, items=(),
          rule="latency", rule_id="/rules/Latency") -> Alert:
    return Alert(alert_id=alert_id, rule=rule, rule_id=rule_id, severity=severity, signal_type=signal_type,
                 monitor_condition=condition, monitoring_service="Platform", targets=tuple(targets),
                 configuration_items=tuple(items), fired_at=T0, resolved_at=resolved_at, description="",
                 conditions=(AlertCondition(metric=metric, operator="GreaterThan", threshold=1.0, value=2.0,
                                            dimensions=dimensions or {}),),
                 custom_properties=custom or {})


def see(current, a, now=T0):
    return observe(current, a, "g1", "latency", "churn-ep/green", COOLDOWN, now)


# ---- targets and groups -------------------------------------------------------------------------------------------

def test_the_target_comes_from_the_resource_id_in_the_usual_lower_case():
    t = target_of(alert())
    assert (t.endpoint, t.deployment, t.resource_id) == ("churn-ep", "green", DEPLOYMENT_ID)
    assert t.name == "churn-ep/green" and t.names() == ["churn-ep/green", "churn-ep", DEPLOYMENT_ID]
    endpoint_only = DEPLOYMENT_ID.rsplit("/deployments", 1)[0]
    t = target_of(alert(targets=("/other/resource", endpoint_only)))
    assert (t.endpoint, t.deployment, t.resource_id) == ("churn-ep", None, endpoint_only) and t.name == "churn-ep"


def test_the_target_comes_from_a_configuration_item_or_a_dimension_when_no_id_names_it():
    t = target_of(alert(targets=("/subscriptions/s/VM1",), items=(DEPLOYMENT_ID,)))
    assert (t.endpoint, t.deployment) == ("churn-ep", "green")
    t = target_of(alert(targets=("/subscriptions/s/WS",), dimensions={"EndpointName": "churn-ep",
                                                                      "DeploymentName": "blue"}))
    assert (t.endpoint, t.deployment, t.resource_id) == ("churn-ep", "blue", "/subscriptions/s/WS")
    t = target_of(alert(targets=("/subscriptions/s/WS",), custom={"endpoint": "churn-ep", "deployment": 7}))
    assert (t.endpoint, t.deployment) == ("churn-ep", "7")
    t = target_of(alert(targets=("/subscriptions/s/WS",), custom={"deployment": "blue"}))
    assert (t.endpoint, t.deployment) == (None, None)  # a deployment without its endpoint names nothing
    assert t.name == "/subscriptions/s/ws" and t.names() == ["/subscriptions/s/ws", "/subscriptions/s/WS"]
    assert target_of(alert(targets=())).name == "-"


def test_infrastructure_signals_are_told_apart_from_model_signals():
    assert not is_infrastructure(alert())
    assert not is_infrastructure(alert(signal_type="log", metric="ModelErrors"))
    assert is_infrastructure(alert(signal_type="Activity Log"))
    assert is_infrastructure(alert(signal_type="ServiceHealth"))
    for metric in ("CpuUtilizationPercentage", "MemoryUtilization", "DiskUsage", "GpuUtilization", "NodeCount"):
        assert is_infrastructure(alert(metric=metric)), metric


def test_alerts_of_one_rule_on_one_target_share_a_group_whatever_the_casing():
    a = alert()
    assert group_of(a, target_of(a)) == group_of(alert(rule_id="/RULES/latency"), Target("x", "CHURN-EP", "GREEN"))
    assert group_of(a, target_of(a)) != group_of(alert(rule_id="/rules/errors"), target_of(a))
    assert group_of(alert(rule_id=""), target_of(a)) == group_of(alert(rule_id="", rule="LATENCY"), target_of(a))
    assert group_of(a, target_of(a)) != group_of(a, Target("x", "churn-ep", "blue"))
    # Incidents are stored under this id: its derivation must not change between versions.
    from controlplane.domain.ledger import digest

    assert group_of(a, target_of(a)) == digest("/rules/latency", "churn-ep/green", length=24)


def test_a_lower_severity_number_is_more_severe():
    assert more_severe("Sev0", "Sev1") and not more_severe("Sev1", "Sev1") and not more_severe("Sev3", "Sev2")


# ---- what an alert does -------------------------------------------------------------------------------------------

def test_a_fired_alert_opens_an_incident():
    incident, effect = see(None, alert())
    assert effect is Effect.OPENED and effect.tells
    assert incident == Incident(group="g1", number=1, state=IncidentState.OPEN, rule="latency",
                                target="churn-ep/green", severity="Sev2", opened_at=T0, updated_at=T0, fired=1,
                                acted_at=T0, handled={"a1:Fired": "opened"}, revision=1)
    assert incident.id == "g1-1"


def test_the_same_alert_again_has_the_same_effect_and_changes_nothing():
    incident, _ = see(None, alert())
    again, effect = see(incident, alert(), T0 + timedelta(minutes=1))
    assert effect is Effect.OPENED and again is incident


def test_another_alert_on_the_open_incident_repeats_or_escalates():
    incident, _ = see(None, alert())
    later = T0 + timedelta(minutes=5)
    repeated, effect = see(incident, alert(alert_id="a2", severity="Sev3"), later)
    assert effect is Effect.REPEATED and not effect.tells
    assert (repeated.fired, repeated.updated_at, repeated.severity, repeated.revision) == (2, later, "Sev2", 2)
    escalated, effect = see(repeated, alert(alert_id="a3", severity="Sev0"), later)
    assert effect is Effect.ESCALATED and escalated.severity == "Sev0" and escalated.fired == 3
    assert escalated.acted_at == T0 and escalated.opened_at == T0


def test_a_resolved_alert_closes_the_incident_at_the_alerts_resolved_time():
    incident, _ = see(None, alert())
    resolved_at = T0 + timedelta(minutes=7)
    closed, effect = see(incident, alert("Resolved", resolved_at=resolved_at), T0 + timedelta(minutes=9))
    assert effect is Effect.RESOLVED and closed.state is IncidentState.CLOSED
    assert closed.closed_at == resolved_at and closed.updated_at == T0 + timedelta(minutes=9)
    unstamped, _ = see(incident, alert("Resolved"), T0 + timedelta(minutes=9))
    assert unstamped.closed_at == T0 + timedelta(minutes=9)


def test_a_fired_after_its_own_resolved_opens_nothing():
    resolved_at = T0 + timedelta(minutes=1)
    stale, effect = see(None, alert("Resolved", resolved_at=resolved_at))
    assert effect is Effect.STALE and not effect.tells
    assert stale.state is IncidentState.CLOSED and stale.number == 0 and stale.closed_at == resolved_at
    assert (stale.opened_at, stale.updated_at, stale.rule, stale.target, stale.fired) == (T0, T0, "latency",
                                                                                         "churn-ep/green", 0)
    late, effect = see(stale, alert(), T0 + timedelta(minutes=2))
    assert effect is Effect.STALE and late.state is IncidentState.CLOSED
    assert late.handled == {"a1:Resolved": "stale", "a1:Fired": "stale"} and late.revision == 2
    unstamped, _ = see(None, alert("Resolved"), T0 + timedelta(minutes=3))
    assert unstamped.closed_at == T0 + timedelta(minutes=3)


def test_a_resolved_with_the_incident_closed_is_stale_and_keeps_the_incident():
    incident, _ = see(None, alert())
    closed, _ = see(incident, alert("Resolved"), T0 + timedelta(minutes=5))
    again, effect = see(closed, alert("Resolved", alert_id="a2"), T0 + timedelta(minutes=6))
    assert effect is Effect.STALE and again.closed_at == closed.closed_at and again.number == 1


def test_a_new_alert_after_closing_reopens_with_actions_only_after_the_cooldown():
    incident, _ = see(None, alert())
    closed, _ = see(incident, alert("Resolved"), T0 + timedelta(minutes=5))
    soon, effect = see(closed, alert(alert_id="a2"), T0 + COOLDOWN - timedelta(seconds=1))
    assert effect is Effect.REOPENED_IN_COOLDOWN and effect.tells
    assert soon.number == 2 and soon.state is IncidentState.OPEN and soon.acted_at == T0 and soon.fired == 1
    assert soon.closed_at is None and soon.opened_at == T0 + COOLDOWN - timedelta(seconds=1)
    late, effect = see(closed, alert(alert_id="a2"), T0 + COOLDOWN)
    assert effect is Effect.OPENED and late.acted_at == T0 + COOLDOWN and late.number == 2
    assert late.handled == {"a1:Fired": "opened", "a1:Resolved": "resolved", "a2:Fired": "opened"}


def test_an_incident_remembers_only_its_newest_alerts():
    incident, _ = see(None, alert())
    for n in range(2, REMEMBERED_ALERTS + 3):
        incident, _ = see(incident, alert(alert_id=f"a{n}"))
    assert len(incident.handled) == REMEMBERED_ALERTS
    assert "a1:Fired" not in incident.handled and f"a{REMEMBERED_ALERTS + 2}:Fired" in incident.handled
    assert list(incident.handled)[-1] == f"a{REMEMBERED_ALERTS + 2}:Fired"


@pytest.mark.parametrize("closed", [False, True])
def test_an_incident_survives_json(closed):
    incident, _ = see(None, alert())
    if closed:
        incident, _ = see(incident, alert("Resolved", resolved_at=T0 + timedelta(minutes=3)))
    data = incident.to_json()
    assert data["id"] == incident.id and data["opened_at"] == T0.isoformat()
    assert Incident.from_json(data) == incident
    assert Incident.from_json({**data, "acted_at": None}) == replace(incident, acted_at=None)

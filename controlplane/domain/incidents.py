"""Incidents: the alerts of one rule on one target, grouped so that people are told and actions are
taken once per incident instead of once per alert.

``Fired`` opens an incident (or updates the open one), ``Resolved`` closes it. An incident lives in the
store and changes only from the revision it was read at. It remembers the alerts it has counted and
what each did to it, so an alert handled again (a retry after a failure half-way) has the same effect
as the first time, and a ``Fired`` that arrives after its own ``Resolved`` opens nothing.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from controlplane.domain.events import Alert
from controlplane.domain.ledger import digest

REMEMBERED_ALERTS = 50  # the newest alerts an incident remembers (retries come within minutes)
_RESOURCE = re.compile(r"/(?P<kind>online|batch)endpoints/(?P<endpoint>[^/]+)(?:/deployments/(?P<deployment>[^/]+))?",
                       re.IGNORECASE)
_ENDPOINT_NAMES = ("endpoint", "endpointname", "endpoint_name")
_DEPLOYMENT_NAMES = ("deployment", "deploymentname", "deployment_name")
_INFRASTRUCTURE_METRICS = re.compile(r"cpu|memory|disk|gpu|capacity|quota|instance|node", re.IGNORECASE)


class IncidentState(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class Effect(StrEnum):
    """What one alert did to its incident."""

    OPENED = "opened"  # a new incident: actions run (unless it reopened within the cooldown) and people are told
    REOPENED_IN_COOLDOWN = "reopened_in_cooldown"  # a new incident soon after the last actions: told, no actions
    ESCALATED = "escalated"  # the open incident got more severe: told again, no actions
    REPEATED = "repeated"  # the open incident fired again: counted, nobody told
    RESOLVED = "resolved"  # closed: told
    STALE = "stale"  # a Resolved with nothing open, or a Fired after its own Resolved: recorded only

    @property
    def tells(self) -> bool:
        return self in (Effect.OPENED, Effect.REOPENED_IN_COOLDOWN, Effect.ESCALATED, Effect.RESOLVED)


@dataclass(frozen=True)
class Target:
    """What an alert is about: an Azure ML online or batch endpoint (and deployment), or another resource."""

    resource_id: str
    endpoint: str | None = None
    deployment: str | None = None
    model: str | None = None
    version: str | None = None
    batch: bool = False  # a batch endpoint's: rolled back by switching its default deployment back

    @property
    def name(self) -> str:
        """The target as rules match it and incidents group it: ``endpoint[/deployment]``, else the resource ID."""
        if self.endpoint:
            return f"{self.endpoint}/{self.deployment}" if self.deployment else self.endpoint
        return self.resource_id.lower() or "-"

    def names(self) -> list[str]:
        return list(dict.fromkeys(n for n in (self.name, self.endpoint or "", self.resource_id) if n))


def target_of(alert: Alert) -> Target:
    """The endpoint from the alert's target IDs or configuration items (or a dimension or custom property
    naming it), the deployment from that ID, a metric or log dimension, or a custom property."""
    resource = alert.targets[0] if alert.targets else ""
    endpoint = deployment = None
    batch = False
    for candidate in (*alert.targets, *alert.configuration_items):
        found = _RESOURCE.search(candidate)
        if found:  # ARM compares names case-insensitively and alerts may upper-case the ID: keep the usual form
            resource, endpoint, deployment = candidate, found["endpoint"].lower(), found["deployment"]
            deployment, batch = deployment.lower() if deployment else None, found["kind"].lower() == "batch"
            break
    named = {k.lower(): str(v) for c in alert.conditions for k, v in c.dimensions.items()}
    named.update({k.lower(): str(v) for k, v in alert.custom_properties.items() if isinstance(v, (str, int))})
    endpoint = endpoint or next((named[n] for n in _ENDPOINT_NAMES if named.get(n)), None)
    deployment = deployment or (next((named[n] for n in _DEPLOYMENT_NAMES if named.get(n)), None) if endpoint else None)
    return Target(resource_id=resource, endpoint=endpoint, deployment=deployment, batch=batch)


def is_infrastructure(alert: Alert) -> bool:
    """Signals about the platform rather than the model: resource and service health, activity log, and
    compute metrics (CPU, memory, disk, GPU, capacity, quota). They loop back to the infrastructure team."""
    if alert.signal_type.lower() not in ("metric", "log"):
        return True
    return any(_INFRASTRUCTURE_METRICS.search(c.metric) for c in alert.conditions)


def group_of(alert: Alert, target: Target) -> str:
    """Alerts of the same rule on the same target share an incident."""
    return digest((alert.rule_id or alert.rule).lower(), target.name.lower(), length=24)


def more_severe(severity: str, than: str) -> bool:
    return severity < than  # "Sev0" < "Sev1": a lower number is more severe


@dataclass(frozen=True)
class Incident:
    group: str
    number: int  # the group's incidents are numbered 1, 2, ... as they reopen
    state: IncidentState
    rule: str
    target: str
    severity: str
    opened_at: datetime
    updated_at: datetime
    closed_at: datetime | None = None
    fired: int = 0  # Fired alerts counted while open
    acted_at: datetime | None = None  # when actions last ran for the group
    handled: Mapping[str, str] = field(default_factory=dict)  # alert key -> Effect, newest last
    revision: int = 0

    @property
    def id(self) -> str:
        return f"{self.group}-{self.number}"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("opened_at", "updated_at", "closed_at", "acted_at"):
            data[name] = data[name].isoformat() if data[name] else None
        data["id"] = self.id
        return data

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> Incident:
        data = {k: v for k, v in data.items() if k != "id"}
        times = {name: datetime.fromisoformat(data[name]) if data.get(name) else None
                 for name in ("opened_at", "updated_at", "closed_at", "acted_at")}
        return Incident(**{**data, **times, "state": IncidentState(data["state"]), "handled": dict(data["handled"])})


def observe(current: Incident | None, alert: Alert, group: str, rule: str, target: str, cooldown: timedelta,
            now: datetime) -> tuple[Incident, Effect]:
    """The incident after ``alert``, and what the alert did to it (pure; the caller writes it)."""
    alert_key = f"{alert.alert_id}:{alert.monitor_condition}"
    if current is not None and alert_key in current.handled:
        return current, Effect(current.handled[alert_key])
    if alert.fired:
        if current is not None and f"{alert.alert_id}:Resolved" in current.handled:
            effect, updated = Effect.STALE, current
        elif current is not None and current.state is IncidentState.OPEN:
            effect = Effect.ESCALATED if more_severe(alert.severity, current.severity) else Effect.REPEATED
            updated = replace(current, fired=current.fired + 1, updated_at=now,
                              severity=min(alert.severity, current.severity))
        else:
            recent = current is not None and current.acted_at is not None and now - current.acted_at < cooldown
            effect = Effect.REOPENED_IN_COOLDOWN if recent else Effect.OPENED
            updated = Incident(group=group, number=current.number + 1 if current else 1, state=IncidentState.OPEN,
                               rule=rule, target=target, severity=alert.severity, opened_at=now, updated_at=now,
                               fired=1, acted_at=now if effect is Effect.OPENED else current.acted_at,
                               handled=current.handled if current else {})
    elif current is not None and current.state is IncidentState.OPEN:
        effect = Effect.RESOLVED
        updated = replace(current, state=IncidentState.CLOSED, closed_at=alert.resolved_at or now, updated_at=now)
    else:  # remember the resolution, so its Fired arriving late opens nothing
        effect = Effect.STALE
        updated = current or Incident(group=group, number=0, state=IncidentState.CLOSED, rule=rule, target=target,
                                      severity=alert.severity, opened_at=now, updated_at=now,
                                      closed_at=alert.resolved_at or now)
    handled = {**updated.handled, alert_key: effect.value}
    handled = dict(list(handled.items())[-REMEMBERED_ALERTS:])
    return replace(updated, handled=handled, revision=(current.revision + 1) if current else 1), effect

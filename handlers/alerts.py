"""Azure Monitor alerts (action-group webhook): record each alert state once and tell the people
who own the signal. Infrastructure signals loop back to the infrastructure team (MLOps v2)."""
from __future__ import annotations

from dataclasses import dataclass

from controlplane.errors import InvalidEvent
from controlplane.events import Alert
from controlplane.ledger import Decision, Outcome, Source, TaskDraft, TaskKind, Verdict
from controlplane.parsing import parse_alert
from controlplane.parsing.fields import parse_json
from controlplane.policy import Policy
from controlplane.ports import Services
from handlers.record import decide_once, record_invalid


@dataclass(frozen=True)
class AlertReceipt:
    """The decision, and the contract violation when the body was bad (answered 400 every time)."""

    decision: Decision
    error: InvalidEvent | None = None


def receive_alert(services: Services, body: bytes) -> AlertReceipt:
    """Parse one common-alert-schema body and decide it once; a bad body is recorded ``invalid``."""
    try:
        alert = parse_alert(parse_json(body))
    except InvalidEvent as error:
        return AlertReceipt(record_invalid(services, source=Source.ALERT, payload=body, error=error,
                                           event_type="alert"), error)
    key = f"alert:{alert.alert_id}:{alert.monitor_condition}"
    return AlertReceipt(decide_once(services, key=key, event_id=alert.alert_id, source=Source.ALERT,
                       event_type=f"alert.{alert.monitor_condition.lower()}", model=None, version=None,
                       received_at=alert.resolved_at or alert.fired_at,
                       decide=lambda: decide_alert(alert, services.policy)))


def decide_alert(alert: Alert, policy: Policy) -> Verdict:
    conditions = [
        {"metric": c.metric, "operator": c.operator, "threshold": c.threshold, "value": c.value,
         "dimensions": dict(c.dimensions), **({"query": c.query} if c.query else {})}
        for c in alert.conditions
    ]
    evidence = {"alert_id": alert.alert_id, "rule": alert.rule, "severity": alert.severity,
                "signal_type": alert.signal_type, "monitor_condition": alert.monitor_condition,
                "monitoring_service": alert.monitoring_service, "targets": list(alert.targets),
                "conditions": conditions, "fired_at": alert.fired_at.isoformat()}
    state = "fired" if alert.fired else "resolved"
    subject = f"[{alert.severity}] {alert.rule} {state}"
    channels = policy.document.alerts.notify
    tasks = tuple(
        TaskDraft(TaskKind.NOTIFY, f"channel/{channel}",
                  {"operation": "notify", "channel": channel, "subject": subject,
                   "text": alert.description or subject, "alert_id": alert.alert_id,
                   "targets": list(alert.targets)})
        for channel in channels
    )
    return Verdict(Outcome.NOTIFY, f"{subject}; told {', '.join(channels)}", evidence=evidence, tasks=tasks)

"""Azure Monitor alerts (action-group webhook): one incident per alert rule and target, actions once
per incident, and people told only when an incident changes state.

Each alert state (``alert:<id>:<Fired|Resolved>``) is decided once. The decision reads the incident
of its rule and target, applies the alert to it and writes it back from the revision it read (a
concurrent alert of the same incident re-reads and tries again), then acts on what changed: an opened
incident runs the matching policy rule's actions (rollback, scale, retrain, review) and tells the
severity's tier; an escalated or resolved one tells; a repeated one is counted and recorded. The
incident is written before the decision: a crash between the two is harmless, because the incident
remembers what each alert did and the retry decides the same again.

Slow work is left to the outbox: deployment changes are tasks, and the target's recent metrics and
logs are read when its notification or review is delivered, not here.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from controlplane.domain.errors import InvalidEvent, PermanentError, TransientError
from controlplane.domain.events import Alert
from controlplane.domain.incidents import Effect, Incident, Target, group_of, is_infrastructure, observe, target_of
from controlplane.domain.ledger import Decision, Outcome, ReviewDraft, Source, Verdict, digest, shadowed
from controlplane.domain.policy import AlertRule, Mode
from controlplane.domain.refs import AssetRef
from controlplane.domain.requests import Notify, ReadSignals, Request, RollBack, Scale, SetBatchDefault
from controlplane.domain.reviews import ReviewKind
from controlplane.domain.rollout import ACTIVE, Rollout, RolloutState
from controlplane.handlers.actions import retrain
from controlplane.handlers.promotion import PROMOTION_DISPATCHED
from controlplane.handlers.record import decide_once, record_invalid
from controlplane.handlers.rollout import halt_rollout
from controlplane.parsing import parse_alert
from controlplane.parsing.fields import parse_json
from controlplane.ports.gateway import EndpointState, NotFound
from controlplane.ports.store import Services

DEFAULT_COOLDOWN = timedelta(minutes=AlertRule.model_fields["cooldown_minutes"].default)
_PRECEDENCE = (Outcome.ROLLBACK, Outcome.SCALE, Outcome.RETRAIN, Outcome.REVIEW, Outcome.NOTIFY)


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
    target = locate(services, target_of(alert))
    key = f"alert:{alert.alert_id}:{alert.monitor_condition}"
    return AlertReceipt(decide_once(services, key=key, event_id=alert.alert_id, source=Source.ALERT,
                                    event_type=f"alert.{alert.monitor_condition.lower()}", model=target.model,
                                    version=target.version, received_at=alert.resolved_at or alert.fired_at,
                                    decide=lambda: decide_alert(services, alert, target, key)))


def locate(services: Services, target: Target) -> Target:
    """The model the target serves: from the control plane's own rollouts, else from the workspace it is in."""
    if target.endpoint is None:
        return target
    gateway = _gateway(services, target)
    if target.batch:
        try:
            state = gateway.get_batch_endpoint(target.endpoint) if gateway is not None else None
        except NotFound:
            return target
        serving = next((d for d in state.deployments if same(d.name, target.deployment or state.default_deployment)),
                       None) if state else None
        return replace(target, **model_of(serving.model)) if serving else target
    for rollout in services.store.rollouts(limit=100):
        if same(rollout.endpoint, target.endpoint) and (
                same(rollout.deployment, target.deployment)
                or (target.deployment is None and rollout.state is RolloutState.COMPLETED)):
            return replace(target, model=rollout.model, version=rollout.version)
    if gateway is None:
        return target
    try:
        state = gateway.get_endpoint(target.endpoint)
    except NotFound:
        return target
    serving = next((d for d in state.deployments if same(d.name, target.deployment or state.serving())), None)
    return replace(target, **model_of(serving.model)) if serving else target


def _gateway(services: Services, target: Target):
    """The gateway of the workspace the target is in (by its resource id), else the home workspace's."""
    environment = services.policy.environment_of(target.resource_id) if target.resource_id else None
    return services.gateway_in(environment)


def same(name: str | None, other: str | None) -> bool:
    """Azure resource names compare without case."""
    return name is not None and other is not None and name.lower() == other.lower()


def model_of(reference: str) -> dict[str, str | None]:
    ref = AssetRef.parse(reference)
    return {"model": ref.name, "version": ref.version} if ref else {"model": None, "version": None}


@dataclass
class _Plan:
    """What an incident leads to, built action by action."""

    outcomes: list[Outcome] = field(default_factory=list)
    tasks: list[Request] = field(default_factory=list)
    reviews: list[ReviewDraft] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)
    halt: Any = None  # an active rollout of the deployment being rolled back

    def outcome(self) -> Outcome:
        return next((o for o in _PRECEDENCE if o in self.outcomes), Outcome.NO_ACTION)


def decide_alert(services: Services, alert: Alert, target: Target, key: str) -> Verdict:
    alerts = services.policy.document.alerts
    metrics = [c.metric for c in alert.conditions if c.metric]
    rule = services.policy.alert_rule(alert.rule, alert.signal_type, metrics, alert.severity, target.names())
    incident, effect = _apply(services, alert, target, rule)
    label = f"[{alert.severity}] {alert.rule} on {target.name}"
    evidence: dict[str, Any] = {
        **_alert_evidence(alert), "policy_rule": rule.name if rule else None,
        "target": {"name": target.name, "resource_id": target.resource_id, "endpoint": target.endpoint,
                   "deployment": target.deployment, "model": target.model, "version": target.version},
        "incident": {"id": incident.id, "number": incident.number, "state": incident.state.value,
                     "effect": effect.value, "fired": incident.fired, "severity": incident.severity,
                     "opened_at": incident.opened_at.isoformat()}}
    plan = _Plan()
    if effect is Effect.OPENED and rule is not None:
        if target.endpoint is None and set(rule.actions) & {"rollback", "scale", "retrain"}:
            plan.refused.append(f"the target {target.name} is not an Azure ML online endpoint")
        else:
            _plan_actions(services, alert, target, rule, incident, key, plan)
    elif effect is Effect.REOPENED_IN_COOLDOWN and rule is not None and set(rule.actions) - {"notify"}:
        plan.refused.append(f"actions held: the last ran at {incident.acted_at:%Y-%m-%d %H:%M} UTC, within the "
                            f"rule's {rule.cooldown_minutes:g}-minute cooldown")
    reason = f"{label}: incident {effect.value.replace('_', ' ')}" + (
        f" (alert {incident.fired} of this incident)" if effect is Effect.REPEATED else "")
    reason += "".join(f"; {done}" for done in plan.done) + "".join(f"; not done: {why}" for why in plan.refused)
    if effect.tells and (rule is None or "notify" in rule.actions or plan.refused):
        channels = alerts.channels(alert.severity, rule)
        plan.tasks += [_notice(alert, target, incident, effect, channel, reason, alerts.signals_minutes)
                       for channel in channels]
        plan.outcomes.append(Outcome.NOTIFY)
        reason += f"; told {', '.join(channels)}" if channels else "; nobody to tell at this severity"
    evidence.update(plan.evidence)
    verdict = Verdict(plan.outcome(), reason, model=target.model, version=target.version, evidence=evidence,
                      tasks=tuple(plan.tasks), reviews=tuple(plan.reviews))
    if rule is not None and rule.mode is Mode.SHADOW:
        return shadowed(verdict)
    if plan.halt is not None:
        halt_rollout(services, plan.halt, f"{label}: incident {incident.id} rolls it back")
    return verdict


def _apply(services: Services, alert: Alert, target: Target, rule: AlertRule | None) -> tuple[Incident, Effect]:
    """Apply the alert to its incident and write it, re-reading when another alert changed it meanwhile."""
    group = group_of(alert, target)
    cooldown = timedelta(minutes=rule.cooldown_minutes) if rule else DEFAULT_COOLDOWN
    for _ in range(8):
        current = services.store.incident(group)
        updated, effect = observe(current, alert, group, alert.rule, target.name, cooldown, services.clock.now())
        if updated is current or services.store.put_incident(current, updated):
            return updated, effect
    raise TransientError(f"incident {group}", f"stayed contended (rule {alert.rule} on {target.name})")


def _plan_actions(services: Services, alert: Alert, target: Target, rule: AlertRule, incident: Incident,
                  key: str, plan: _Plan) -> None:
    endpoint: list[EndpointState | PermanentError] = []
    gateway = _gateway(services, target)

    def state() -> EndpointState | PermanentError:  # read once, only when an action needs it
        if not endpoint:
            try:
                endpoint.append(gateway.get_endpoint(target.endpoint))
            except PermanentError as error:  # not found, forbidden: say so; a transient error is retried
                endpoint.append(error)
        return endpoint[0]

    for action in rule.actions:
        if action in ("rollback", "scale") and gateway is None:
            plan.refused.append(f"{action}: no Azure ML workspace is configured")
        elif action == "rollback" and target.batch:
            _batch_rollback(services, target, rule, plan)
        elif action == "scale" and target.batch:
            plan.refused.append(f"scale: {target.name} is a batch endpoint: its deployments' nodes are set per "
                                "deployment, not scaled on an alert")
        elif action in ("rollback", "scale") and isinstance(state(), PermanentError):
            plan.refused.append(f"{action}: endpoint {target.endpoint}: {state()}")
        elif action == "rollback":
            recent = services.store.rollouts(limit=100)
            _rollback(target, rule, state(), recent, services.clock.now(), plan)
        elif action == "scale":
            _scale(target, rule, state(), plan)
        elif action == "retrain":
            _retrain(services, alert, target, key, plan)
        elif action == "review":
            _review(services, alert, target, rule, incident, plan)


def _rollback(target: Target, rule: AlertRule, state: EndpointState, recent: list[Rollout], now: datetime,
              plan: _Plan) -> None:
    """Back to what served before the control plane's own recent rollout of the deployment at fault."""
    deployment = state.serving() if target.deployment is None else next(
        (name for name in state.traffic if same(name, target.deployment)), target.deployment)
    if not deployment or not state.traffic.get(deployment):
        plan.refused.append(f"rollback: {deployment or 'no deployment'} serves no live traffic on {state.name}")
        return
    since = now - timedelta(hours=rule.rollback.max_age_hours)
    rollout = next((r for r in recent if same(r.endpoint, state.name)
                    and same(r.deployment, deployment) and r.created_at >= since), None)
    if rollout is None:
        plan.refused.append(f"rollback: {deployment} was not rolled out by the control plane in the last "
                            f"{rule.rollback.max_age_hours:g} h, so there is no known previous deployment")
        return
    existing = {d.name: d for d in state.deployments}
    missing = [name for name in rollout.baseline if name not in existing]
    if not rollout.baseline or missing:
        why = f"{missing[0]}, which served before it, no longer exists" if missing else "nothing served before it"
        plan.refused.append(f"rollback: {deployment} cannot be rolled back: {why}")
        return
    size = rollout.policy["instance_count"]
    scale = {name: size for name in rollout.baseline if existing[name].instance_count < size}
    plan.tasks.append(RollBack(endpoint=state.name, traffic=dict(rollout.baseline), mirror={}, scale=scale,
                               from_deployment=deployment))
    plan.outcomes.append(Outcome.ROLLBACK)
    plan.done.append(f"rolling {state.name} back from {deployment} to "
                     + ", ".join(f"{name} {share}%" for name, share in rollout.baseline.items()))
    plan.evidence["rollback"] = {"rollout": rollout.id, "from": deployment, "traffic": dict(rollout.baseline),
                                 "scale": scale}
    if rollout.state in (*ACTIVE, RolloutState.PAUSED):
        plan.halt = rollout


def _batch_rollback(services: Services, target: Target, rule: AlertRule, plan: _Plan) -> None:
    """The batch endpoint's default back to the deployment the control plane's recent production promotion
    replaced."""
    since = services.clock.now() - timedelta(hours=rule.rollback.max_age_hours)
    promoted = services.store.decision_page(50, model=target.model, event_types=(PROMOTION_DISPATCHED,),
                                            since=since).items
    switch = next((d.evidence["result"] for d in promoted if d.evidence.get("stage") == "production"
                   and same(d.evidence.get("endpoint"), target.endpoint)
                   and "default_deployment" in d.evidence.get("result", {})), None)
    if switch is None or not switch.get("previous_default"):
        why = ("there was no default before it" if switch else
               f"the control plane made no deployment its default in the last {rule.rollback.max_age_hours:g} h")
        plan.refused.append(f"rollback: {target.endpoint} cannot be rolled back: {why}")
        return
    current, previous = switch["deployment"], switch["previous_default"]
    plan.tasks.append(SetBatchDefault(endpoint=target.endpoint, deployment=previous,
                                      environment=switch.get("environment")))
    plan.outcomes.append(Outcome.ROLLBACK)
    plan.done.append(f"switching batch endpoint {target.endpoint}'s default from {current} back to {previous}")
    plan.evidence["rollback"] = {"from": current, "default": previous, "batch": True}


def _scale(target: Target, rule: AlertRule, state: EndpointState, plan: _Plan) -> None:
    name = target.deployment or state.serving()
    deployment = next((d for d in state.deployments if same(d.name, name)), None)
    if deployment is None:
        plan.refused.append(f"scale: no deployment {name or '(none serving)'} on {state.name}")
        return
    bounds = rule.scale
    count = min(max(deployment.instance_count + bounds.by, bounds.min_instances), bounds.max_instances)
    if count == deployment.instance_count:
        plan.refused.append(f"scale: {name} has {count} instances already, the rule's bound "
                            f"({bounds.min_instances}..{bounds.max_instances})")
        return
    plan.tasks.append(Scale(endpoint=state.name, deployment=name, instance_count=count))
    plan.outcomes.append(Outcome.SCALE)
    plan.done.append(f"scaling {state.name}/{name} from {deployment.instance_count} to {count} instances")
    plan.evidence["scale"] = {"deployment": name, "from": deployment.instance_count, "to": count}


def _retrain(services: Services, alert: Alert, target: Target, key: str, plan: _Plan) -> None:
    model_rule = services.policy.rule_for(target.model) if target.model else None
    if model_rule is None:
        plan.refused.append(f"retrain: no model with a policy rule is known to serve {target.name}")
        return
    verdict = retrain(services, model_rule, target.model, f"alert {alert.rule}", key, {}, trigger="alert")
    if verdict.tasks:
        plan.tasks += verdict.tasks
        plan.outcomes.append(Outcome.RETRAIN)
        plan.done.append(f"retraining {target.model}")
    else:
        plan.refused.append(f"retrain: {verdict.reason.split('; ', 1)[-1]}")
    plan.evidence["retraining"] = dict(verdict.evidence)


def _review(services: Services, alert: Alert, target: Target, rule: AlertRule, incident: Incident,
            plan: _Plan) -> None:
    alerts = services.policy.document.alerts
    owner = rule.owner or ("infrastructure" if is_infrastructure(alert) else "ml")
    signals = _signals(alert, target, incident, "review", alerts.signals_minutes)
    plan.reviews.append(ReviewDraft(
        kind=ReviewKind.ALERT, approvers=tuple(alerts.teams[owner]), quorum=1,
        ttl=timedelta(hours=alerts.review_ttl_hours), separation_of_duties=False,
        evidence={**_alert_evidence(alert), "incident": incident.id, "target": target.name, "owner": owner,
                  "signals": signals}))
    plan.tasks.append(ReadSignals(signals=signals, incident_id=incident.id))
    plan.outcomes.append(Outcome.REVIEW)
    plan.done.append(f"review by the {owner} team ({', '.join(alerts.teams[owner])})")


def _notice(alert: Alert, target: Target, incident: Incident, effect: Effect, channel: str, text: str,
            minutes: float) -> Notify:
    return Notify(channel=channel, event=f"incident.{effect.value}",
                  subject=f"[{alert.severity}] {alert.rule} {effect.value.replace('_', ' ')}: {target.name}",
                  text=alert.description + ("\n" if alert.description else "") + text, incident_id=incident.id,
                  alert_id=alert.alert_id, targets=tuple(alert.targets),
                  signals=_signals(alert, target, incident, effect.value, minutes))


def _signals(alert: Alert, target: Target, incident: Incident, purpose: str, minutes: float) -> dict[str, Any]:
    """What the outbox reads about the target when it delivers a notice or review (and where it keeps it)."""
    end: datetime = alert.resolved_at or alert.fired_at
    return {"resource_id": target.resource_id, "endpoint": target.endpoint, "deployment": target.deployment,
            "metrics": [c.metric for c in alert.conditions if c.metric],
            "start": (end - timedelta(minutes=minutes)).isoformat(), "end": end.isoformat(),
            "artifact": f"incidents/{incident.id}/signals-{purpose}-{digest(alert.alert_id, length=12)}.json"}


def _alert_evidence(alert: Alert) -> dict[str, Any]:
    conditions = [
        {"metric": c.metric, "operator": c.operator, "threshold": c.threshold, "value": c.value,
         "dimensions": dict(c.dimensions), **({"query": c.query} if c.query else {})}
        for c in alert.conditions
    ]
    return {"alert_id": alert.alert_id, "rule": alert.rule, "severity": alert.severity,
            "signal_type": alert.signal_type, "monitor_condition": alert.monitor_condition,
            "monitoring_service": alert.monitoring_service, "targets": list(alert.targets),
            "conditions": conditions, "fired_at": alert.fired_at.isoformat()}

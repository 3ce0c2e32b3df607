"""Promotion on ModelRegistered: gates, champion comparison, staging, and the production approval.

Candidate metrics come from the event's tags and properties, or from Azure ML through the gateway
when the event lacks them. The champion is the model serving the target endpoint (the gateway's
view of live traffic, else the ledger's last deployment or production promotion). Missing metrics
never promote silently: they are ``inconclusive`` and open a review.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from datetime import timedelta
from typing import Any

from controlplane.domain.errors import PermanentError
from controlplane.domain.events import MODEL_DEPLOYED, ModelRegistered
from controlplane.domain.ledger import Decision, Outcome, ReviewDraft, TaskDraft, TaskKind, Verdict, digest
from controlplane.domain.policy import Mode, Policy, Production, Promotion, ResolvedRule, UnknownRegistrant
from controlplane.domain.reviews import ReviewKind, identity
from controlplane.ports.store import Services

SETS_CHAMPION = "controlplane.champion"  # evidence key naming the endpoint a decision made this model serve on


def decide_promotion(event: ModelRegistered, rule: ResolvedRule, services: Services, key: str) -> Verdict:
    promotion: Promotion = rule.promotion
    model, version = event.model, event.version
    evidence: dict[str, Any] = {"rule": rule.rule, "endpoint": promotion.endpoint, "tags": dict(event.tags)}

    earlier = next((d for d in _verdicts(services, model, version) if "shadow" not in d.evidence),
                   None)  # a shadow verdict dispatched nothing
    if earlier is not None:
        return Verdict(Outcome.NO_ACTION, f"{model}:{version} was decided already ({earlier.outcome.value}, "
                       f"decision {earlier.id}); not promoted again", model=model, version=version,
                       evidence={**evidence, "earlier_decision": earlier.id})

    champion = find_champion(services, promotion.endpoint, model)
    evidence["champion"] = f"{champion[0]}:{champion[1]}" if champion else None
    if champion and champion[0] == model and _version_key(version) <= _version_key(champion[1]):
        return Verdict(Outcome.NO_ACTION, f"{model}:{version} is not newer than the champion {model}:{champion[1]} "
                       f"on {promotion.endpoint}", model=model, version=version, evidence=evidence)

    metrics, registrant, source, looked_up = candidate_facts(event, promotion, services)
    evidence.update(metrics=metrics, registrant=registrant, registrant_source=source, metrics_from_gateway=looked_up)
    # Without `production`, the review of a candidate lacking metrics can only send it to staging, where a
    # passing candidate goes unreviewed: an unknown registrant asks for nothing more there.
    production = promotion.production or Production(approvers=["ml-leads"])
    unknown = promotion.production is not None and production.separation_of_duties and not registrant
    quorum = production.quorum
    if unknown:
        evidence["unknown_registrant"] = production.unknown_registrant.value
        quorum += production.unknown_registrant is UnknownRegistrant.EXTRA_APPROVAL
    missing = [gate.metric for gate in promotion.parsed_gates() if gate.metric not in metrics]
    if missing:
        reason = f"metrics missing for {model}:{version}: {', '.join(missing)}; a person must look"
        staging = _staging_request(promotion, model, version, key, services.policy)
        verdict = _gated(production, quorum, unknown, evidence, registrant, staging, Verdict(
            Outcome.INCONCLUSIVE, reason, model=model, version=version, evidence=evidence))
        return _enforce(rule, verdict)

    results = [{"gate": str(gate), "metric": gate.metric, "value": metrics[gate.metric], "passed":
                gate.passes(metrics[gate.metric])} for gate in promotion.parsed_gates()]
    evidence["gates"] = results
    failed = [r for r in results if not r["passed"]]
    if failed:
        reason = "; ".join(f"{r['metric']} {r['value']:g} fails {r['gate']}" for r in failed)
        return Verdict(Outcome.REJECT, reason, model=model, version=version, evidence=evidence)

    if champion is not None:
        champion_metrics = champion_facts(services, champion)
        evidence["champion_metrics"] = champion_metrics
        gate = promotion.primary_gate()
        if gate.metric in champion_metrics:
            gain = metrics[gate.metric] - champion_metrics[gate.metric]
            gain = round(gain if gate.higher_is_better else -gain, 9)  # 0.565 - 0.56 is 0.005, not 0.00499...
            evidence["improvement"] = {"metric": gate.metric, "gain": gain, "required": promotion.min_improvement}
            if gain < promotion.min_improvement:
                return Verdict(Outcome.REJECT, f"{gate.metric} {metrics[gate.metric]:g} vs champion "
                               f"{champion[0]}:{champion[1]} {champion_metrics[gate.metric]:g}: gain {gain:g} is "
                               f"less than {promotion.min_improvement:g}", model=model, version=version,
                               evidence=evidence)

    staging = TaskDraft(TaskKind.PROMOTION, f"azureml:endpoint/{promotion.endpoint}",
                        _staging_request(promotion, model, version, key, services.policy))
    passed = ", ".join(r["gate"] for r in results)
    if promotion.production is None:
        verdict = Verdict(Outcome.PROMOTE, f"gates passed ({passed}); deploying to staging on {promotion.endpoint} "
                          "at 0% traffic", model=model, version=version, evidence=evidence, tasks=(staging,))
    else:
        verdict = _gated(production, quorum, unknown, evidence, registrant,
                         production_request(promotion, model, version, key, production.approvers),
                         Verdict(Outcome.REQUEST_APPROVAL, f"gates passed ({passed}); staging at 0% on "
                                 f"{promotion.endpoint}; production needs {quorum} approval(s)", model=model,
                                 version=version, evidence=evidence, tasks=(staging,)))
    return _enforce(rule, verdict)


_PROMOTION_OUTCOMES = [Outcome.PROMOTE, Outcome.REQUEST_APPROVAL, Outcome.REJECT, Outcome.INCONCLUSIVE]
# The decisions that put a model on an endpoint: a finished rollout, a dispatched production promotion,
# a deployment Azure ML reported.
_CHAMPION_EVENTS = ["rollout.completed", "promotion.dispatched", MODEL_DEPLOYED]


def _verdicts(services: Services, model: str, version: str) -> list[Decision]:
    """Promotion verdicts recorded for one model version, newest first (a handful at most)."""
    return services.store.decisions(model=model, limit=20, outcomes=_PROMOTION_OUTCOMES, version=version)


def _enforce(rule: ResolvedRule, verdict: Verdict) -> Verdict:
    """Shadow mode keeps the verdict and what it would have opened, and opens nothing."""
    if rule.mode is not Mode.SHADOW:
        return verdict
    shadow = {"tasks": [{"kind": t.kind.value, "request": dict(t.request)} for t in verdict.tasks],
              "reviews": [{"kind": r.kind.value, "approvers": list(r.approvers)} for r in verdict.reviews]}
    return Verdict(verdict.outcome, f"{verdict.reason} (shadow mode: nothing dispatched)", model=verdict.model,
                   version=verdict.version, evidence={**verdict.evidence, "shadow": shadow})


def _gated(production: Production, quorum: int, unknown: bool, evidence: Mapping[str, Any], registrant: str,
           on_approval: Mapping[str, Any], verdict: Verdict) -> Verdict:
    """The verdict with its promotion review needing ``quorum`` approvals (one beyond the policy's when the
    registrant, who may be among the approvers, is unknown: at least the policy's quorum then comes from
    others), or refused when the registrant is unknown and the policy says so or that quorum cannot be met."""
    if unknown and (production.unknown_registrant is UnknownRegistrant.REFUSE or quorum > len(production.approvers)):
        why = ("the policy refuses a review without one" if production.unknown_registrant is UnknownRegistrant.REFUSE
               else f"one approval beyond the quorum needs {quorum} approvers, {len(production.approvers)} are listed")
        return Verdict(Outcome.REJECT, f"{verdict.reason}; but the registrant of {verdict.model}:{verdict.version} "
                       f"cannot be established and {why}: no promotion review opened", model=verdict.model,
                       version=verdict.version, evidence={**evidence, "unknown_registrant": "refuse"})
    review = ReviewDraft(kind=ReviewKind.PROMOTION, approvers=tuple(production.approvers), quorum=quorum,
                         ttl=timedelta(hours=production.approval_ttl_hours), evidence=dict(evidence),
                         registrant=registrant, separation_of_duties=production.separation_of_duties,
                         on_approval=dict(on_approval))
    return replace(verdict, evidence=evidence, reviews=(review,))


def _staging_request(promotion: Promotion, model: str, version: str, key: str, policy: Policy) -> dict[str, Any]:
    return {"operation": "online_deployments.begin_create_or_update", "stage": "staging",
            "endpoint": promotion.endpoint, "deployment": deployment_name(model, version, key),
            "model": f"azureml:{model}:{version}", "instance_type": promotion.staging.instance_type,
            "instance_count": promotion.staging.instance_count, "traffic": 0,
            **policy.deployment_for(promotion.endpoint, model)}


def production_request(promotion: Promotion, model: str, version: str, key: str,
                       approvers: list[str]) -> dict[str, Any]:
    return {"operation": "rollout.start", "stage": "production", "endpoint": promotion.endpoint,
            "deployment": deployment_name(model, version, key), "model": f"azureml:{model}:{version}",
            "approvers": list(approvers)}


def deployment_name(model: str, version: str, key: str) -> str:
    """A deployment name derived from the idempotency key (online deployments allow 3-32 characters,
    starting with a letter): a short slug of model and version, then a digest of the key."""
    slug = re.sub(r"[^a-z0-9]+", "-", f"{model}-v{version}".lower()).strip("-")[:18].strip("-")
    if not slug[:1].isalpha():
        slug = ("m" + slug)[:18]
    return f"{slug}-{digest(key, length=12)}"


def candidate_facts(event: ModelRegistered, promotion: Promotion,
                    services: Services) -> tuple[dict[str, float], str, str, bool]:
    """Gate metrics, completed from the workspace when the event lacks some, and the registrant with
    where it came from: Azure ML's own record of who registered the version (``workspace``), else,
    only when the policy allows it, the ``created_by`` tag or property (``tags``), else unknown (``""``).
    A registrant that is not plain ASCII once normalised (a look-alike letter) counts as unknown."""
    facts = {**event.properties, **event.tags}
    metrics = _metrics(facts, promotion)
    info = None
    if services.gateway is not None:
        try:
            info = services.gateway.get_model(event.model, event.version)
        except PermanentError:
            info = None
    looked_up = info is not None and len(metrics) < len(promotion.gates)
    if looked_up:
        metrics = {**_metrics({**info.properties, **info.tags}, promotion), **metrics}
    from_tags = promotion.production is not None and promotion.production.registrant_from_tags
    for source, name in (("workspace", info.registered_by if info else ""),
                         ("tags", (facts.get("created_by") or (info.created_by if info else "")) if from_tags else "")):
        if identity(name) and identity(name).isascii():
            return metrics, name.strip(), source, looked_up
    return metrics, "", "", looked_up


def champion_facts(services: Services, champion: tuple[str, str]) -> dict[str, float]:
    """The champion's metrics as recorded when it was registered, else from the workspace."""
    name, version = champion
    for decision in _verdicts(services, name, version):
        if "metrics" in decision.evidence:
            return dict(decision.evidence["metrics"])
    if services.gateway is not None:
        try:
            info = services.gateway.get_model(name, version)
        except PermanentError:
            return {}
        return {k: _number(v) for k, v in {**info.properties, **info.tags}.items() if _number(v) is not None}
    return {}


def find_champion(services: Services, endpoint: str, model: str) -> tuple[str, str] | None:
    """The model serving ``endpoint`` now: live traffic from the workspace, else the ledger."""
    if services.gateway is not None:
        try:
            state = services.gateway.get_endpoint(endpoint)
        except PermanentError:
            state = None
        serving = state.serving() if state else None
        for deployment in state.deployments if state else ():
            if deployment.name == serving and deployment.model.count(":") >= 2:
                _, name, version = deployment.model.rsplit(":", 2)
                return name, version
    for decision in services.store.decisions(model=model, limit=20, event_types=_CHAMPION_EVENTS):  # newest first
        if decision.evidence.get(SETS_CHAMPION) == endpoint:
            return decision.model, decision.version
        if decision.evidence.get("endpoint") == endpoint and decision.event_type == MODEL_DEPLOYED:
            return decision.model, decision.version
    return None


def _metrics(facts: Mapping[str, str], promotion: Promotion) -> dict[str, float]:
    found = {}
    for gate in promotion.parsed_gates():
        value = _number(facts.get(gate.metric))
        if value is not None:
            found[gate.metric] = value
    return found


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number and abs(number) != float("inf") else None


def _version_key(version: str) -> tuple[int, Any]:
    return (0, int(version)) if version.isdigit() else (1, version)

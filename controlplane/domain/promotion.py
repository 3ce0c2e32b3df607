"""Promotion rules, as pure functions of what was read: gates, the champion comparison, staging, and the
production approval a candidate needs. ``controlplane.handlers.promotion`` reads the facts and records the
verdict; everything decided in between is here.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from controlplane.domain.ledger import Outcome, ReviewDraft, Verdict, digest
from controlplane.domain.policy import Policy, Production, Promotion, ResolvedRule, UnknownRegistrant
from controlplane.domain.refs import AssetRef
from controlplane.domain.requests import DeployModel, Request, StartRollout
from controlplane.domain.reviews import ReviewKind


@dataclass(frozen=True)
class PromotionFacts:
    """What a promotion decision rests on, read before deciding."""

    earlier: tuple[str, str] | None = None  # (decision id, outcome) of an earlier verdict on this version
    champion: AssetRef | None = None  # the model serving the endpoint now
    metrics: Mapping[str, float] = field(default_factory=dict)  # the candidate's gate metrics
    registrant: str = ""  # who registered the candidate ("" when it cannot be established)
    registrant_source: str = ""  # "workspace" or "tags"
    metrics_from_gateway: bool = False
    champion_metrics: Mapping[str, float] = field(default_factory=dict)


def judge_promotion(model: str, version: str, tags: Mapping[str, str], rule: ResolvedRule, facts: PromotionFacts,
                    key: str, policy: Policy) -> Verdict:
    promotion: Promotion = rule.promotion
    evidence: dict[str, Any] = {"rule": rule.rule, "endpoint": promotion.endpoint, "tags": dict(tags)}

    if facts.earlier is not None:
        earlier_id, earlier_outcome = facts.earlier
        return Verdict(Outcome.NO_ACTION, f"{model}:{version} was decided already ({earlier_outcome}, "
                       f"decision {earlier_id}); not promoted again", model=model, version=version,
                       evidence={**evidence, "earlier_decision": earlier_id})

    champion = facts.champion
    evidence["champion"] = str(champion) if champion else None
    if champion and champion.name == model and version_key(version) <= version_key(champion.version):
        return Verdict(Outcome.NO_ACTION, f"{model}:{version} is not newer than the champion {champion} "
                       f"on {promotion.endpoint}", model=model, version=version, evidence=evidence)

    metrics, registrant = facts.metrics, facts.registrant
    evidence.update(metrics=dict(metrics), registrant=registrant, registrant_source=facts.registrant_source,
                    metrics_from_gateway=facts.metrics_from_gateway)
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
        staging = staging_request(promotion, model, version, key, policy)
        verdict = gated(production, quorum, unknown, evidence, registrant, staging, Verdict(
            Outcome.INCONCLUSIVE, reason, model=model, version=version, evidence=evidence))
        return verdict

    results = [{"gate": str(gate), "metric": gate.metric, "value": metrics[gate.metric], "passed":
                gate.passes(metrics[gate.metric])} for gate in promotion.parsed_gates()]
    evidence["gates"] = results
    failed = [r for r in results if not r["passed"]]
    if failed:
        reason = "; ".join(f"{r['metric']} {r['value']:g} fails {r['gate']}" for r in failed)
        return Verdict(Outcome.REJECT, reason, model=model, version=version, evidence=evidence)

    if champion is not None:
        champion_metrics = facts.champion_metrics
        evidence["champion_metrics"] = dict(champion_metrics)
        gate = promotion.primary_gate()
        if gate.metric in champion_metrics:
            gain = metrics[gate.metric] - champion_metrics[gate.metric]
            gain = round(gain if gate.higher_is_better else -gain, 9)  # 0.565 - 0.56 is 0.005, not 0.00499...
            evidence["improvement"] = {"metric": gate.metric, "gain": gain, "required": promotion.min_improvement}
            if gain < promotion.min_improvement:
                return Verdict(Outcome.REJECT, f"{gate.metric} {metrics[gate.metric]:g} vs champion "
                               f"{champion} {champion_metrics[gate.metric]:g}: gain {gain:g} is "
                               f"less than {promotion.min_improvement:g}", model=model, version=version,
                               evidence=evidence)

    staging = staging_request(promotion, model, version, key, policy)
    passed = ", ".join(r["gate"] for r in results)
    if promotion.production is None:
        verdict = Verdict(Outcome.PROMOTE, f"gates passed ({passed}); deploying to staging on {promotion.endpoint} "
                          "at 0% traffic", model=model, version=version, evidence=evidence, tasks=(staging,))
    else:
        verdict = gated(production, quorum, unknown, evidence, registrant,
                         production_request(promotion, model, version, key, production.approvers),
                         Verdict(Outcome.REQUEST_APPROVAL, f"gates passed ({passed}); staging at 0% on "
                                 f"{promotion.endpoint}; production needs {quorum} approval(s)", model=model,
                                 version=version, evidence=evidence, tasks=(staging,)))
    return verdict



def gated(production: Production, quorum: int, unknown: bool, evidence: Mapping[str, Any], registrant: str,
           on_approval: Request, verdict: Verdict) -> Verdict:
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
                         on_approval=on_approval)
    return replace(verdict, evidence=evidence, reviews=(review,))


def staging_request(promotion: Promotion, model: str, version: str, key: str, policy: Policy) -> DeployModel:
    how = policy.deployment_for(promotion.endpoint, model)
    return DeployModel(endpoint=promotion.endpoint, deployment=deployment_name(model, version, key),
                       model=AssetRef(model, version), instance_type=promotion.staging.instance_type,
                       instance_count=promotion.staging.instance_count, stage="staging", spec=how["spec"],
                       auth_mode=how["auth_mode"], compute=how["compute"])


def production_request(promotion: Promotion, model: str, version: str, key: str, approvers: list[str]) -> StartRollout:
    return StartRollout(endpoint=promotion.endpoint, deployment=deployment_name(model, version, key),
                        model=AssetRef(model, version), approvers=tuple(approvers))


def deployment_name(model: str, version: str, key: str) -> str:
    """A deployment name derived from the idempotency key (online deployments allow 3-32 characters,
    starting with a letter): a short slug of model and version, then a digest of the key."""
    slug = re.sub(r"[^a-z0-9]+", "-", f"{model}-v{version}".lower()).strip("-")[:18].strip("-")
    if not slug[:1].isalpha():
        slug = ("m" + slug)[:18]
    return f"{slug}-{digest(key, length=12)}"


def version_key(version: str) -> tuple[int, Any]:
    """Numeric versions in number order, before any other version (in text order)."""
    return (0, int(version)) if version.isdigit() else (1, version)

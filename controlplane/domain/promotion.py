"""Promotion rules, as pure functions of what was read: gates, the champion comparison, staging, and the
production approval a candidate needs. ``controlplane.handlers.promotion`` reads the facts and records the
verdict; everything decided in between is here.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import timedelta
from typing import Any

from controlplane.domain.ledger import Outcome, ReviewDraft, Verdict, digest
from controlplane.domain.policy import Policy, Production, Promotion, ResolvedRule, UnknownRegistrant
from controlplane.domain.refs import AssetRef, registry_model
from controlplane.domain.requests import (
    MODEL_TAG,
    STAGE_TAG,
    VERSION_TAG,
    DeployBatch,
    DeployModel,
    Request,
    StartRollout,
    SubmitPipeline,
)
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
    environment: str | None = None  # the workspace the candidate was registered in (None: the home one)
    properties: Mapping[str, str] = field(default_factory=dict)  # the version's properties (azureml.runId...)


def judge_promotion(model: str, version: str, tags: Mapping[str, str], rule: ResolvedRule, facts: PromotionFacts,
                    key: str, policy: Policy) -> Verdict:
    promotion: Promotion = rule.promotion
    evidence: dict[str, Any] = {"rule": rule.rule, "endpoint": promotion.endpoint, "tags": dict(tags)}

    if facts.earlier is not None:
        earlier_id, earlier_outcome = facts.earlier
        return Verdict(Outcome.NO_ACTION, f"{model}:{version} was decided already ({earlier_outcome}, "
                       f"decision {earlier_id}); not promoted again", model=model, version=version,
                       evidence={**evidence, "earlier_decision": earlier_id})

    if promotion.source is not None and facts.environment != promotion.source:
        return Verdict(Outcome.NO_ACTION, f"{model}:{version} was registered in "
                       f"{facts.environment or 'a workspace no environment names'}; candidates for "
                       f"{promotion.endpoint} come from {promotion.source}", model=model, version=version,
                       evidence=evidence)

    champion = facts.champion
    evidence["champion"] = str(champion) if champion else None
    if champion and champion.name == model and version_key(version) <= version_key(champion.version):
        return Verdict(Outcome.NO_ACTION, f"{model}:{version} is not newer than the champion {champion} "
                       f"on {promotion.endpoint}", model=model, version=version, evidence=evidence)

    metrics, registrant = facts.metrics, facts.registrant
    evidence.update(metrics=dict(metrics), registrant=registrant, registrant_source=facts.registrant_source,
                    metrics_from_gateway=facts.metrics_from_gateway)
    # Where the candidate came from, for its reviewers: the job that trained it (Azure ML's azureml.runId, or the
    # pipeline_job tag the shipped retraining pipeline writes), the data it was trained on, who registered it.
    recorded = {**facts.properties, **tags}
    job_from = next((name for name in ("azureml.runId", "pipeline_job") if recorded.get(name)), None)
    evidence["lineage"] = {"job": str(recorded[job_from]) if job_from else None, "job_from": job_from,
                           "training_data": str(recorded.get("training_data") or "") or None, "registrant": registrant}
    route = Route.of(promotion, policy, facts.environment)
    evidence.update(route.evidence())
    production, quorum, unknown = production_quorum(promotion, registrant, evidence)
    staging = staging_request(promotion, model, version, key, policy, route)
    evidence["staging"] = {"target": promotion.target, "endpoint": staging.endpoint, "deployment": staging.deployment,
                           "environment": staging.environment}
    missing = [gate.metric for gate in promotion.parsed_gates() if gate.metric not in metrics]
    if missing:
        reason = f"metrics missing for {model}:{version}: {', '.join(missing)}; a person must look"
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

    passed = ", ".join(r["gate"] for r in results)
    where = route.staging_words(promotion)
    if promotion.staging.approval is not None:  # gated CI: people approve before anything is staged
        approval = promotion.staging.approval
        review = ReviewDraft(kind=ReviewKind.PROMOTION, approvers=tuple(approval.approvers), quorum=approval.quorum,
                             ttl=timedelta(hours=approval.approval_ttl_hours),
                             evidence={**evidence, "stage": "staging"}, registrant=registrant,
                             separation_of_duties=production.separation_of_duties, on_approval=staging)
        return Verdict(Outcome.REQUEST_APPROVAL, f"gates passed ({passed}); staging {where} needs "
                       f"{approval.quorum} approval(s)", model=model, version=version, evidence=evidence,
                       reviews=(review,))
    if promotion.tested:
        evidence["test_stage"] = test_stage_of(staging)
        return Verdict(Outcome.PROMOTE, f"gates passed ({passed}); staging {where}; the test stage decides whether "
                       "production is asked", model=model, version=version, evidence=evidence, tasks=(staging,))
    if promotion.production is None:
        verdict = Verdict(Outcome.PROMOTE, f"gates passed ({passed}); deploying to staging {where}", model=model,
                          version=version, evidence=evidence, tasks=(staging,))
    else:
        verdict = gated(production, quorum, unknown, evidence, registrant,
                         production_request(promotion, model, version, key, production.approvers, route, policy),
                         Verdict(Outcome.REQUEST_APPROVAL, f"gates passed ({passed}); staging {where}; "
                                 f"production needs {quorum} approval(s)", model=model,
                                 version=version, evidence=evidence, tasks=(staging,)))
    return verdict


def production_quorum(promotion: Promotion, registrant: str,
                      evidence: dict[str, Any]) -> tuple[Production, int, bool]:
    """The production gate, the approvals it needs and whether the registrant is unknown (noted in ``evidence``).
    Without ``production``, the review of a candidate lacking metrics can only send it to staging, where a passing
    candidate goes unreviewed: an unknown registrant asks for nothing more there."""
    production = promotion.production or Production(approvers=["ml-leads"])
    unknown = promotion.production is not None and production.separation_of_duties and not registrant
    quorum = production.quorum
    if unknown:
        evidence["unknown_registrant"] = production.unknown_registrant.value
        quorum += production.unknown_registrant is UnknownRegistrant.EXTRA_APPROVAL
    return production, quorum, unknown


@dataclass(frozen=True)
class Route:
    """Where a candidate goes: the workspace it was registered in, the staging and production workspaces (None: the
    home workspace) and the registry it is shared through when it changes workspace."""

    source: str | None
    staging: str | None
    production: str | None
    registry: str | None

    @staticmethod
    def of(promotion: Promotion, policy: Policy, source: str | None) -> Route:
        home = policy.home_environment()

        def where(environment: str | None) -> str | None:  # the home environment is the home workspace: None
            return None if environment == home else environment

        source = where(source)
        staging = where(promotion.staging.environment) or source
        production = where(promotion.production.environment if promotion.production else None)
        moves = {source, staging, production} != {source}
        return Route(source, staging, production, policy.document.registry if moves else None)

    def shared(self, environment: str | None) -> str | None:
        """The registry a deployment in ``environment`` takes the model from (None: the workspace's own)."""
        return self.registry if environment != self.source else None

    def evidence(self) -> dict[str, Any]:
        if self.registry is None and self.staging is None and self.production is None:
            return {}
        return {"route": asdict(self)}

    @staticmethod
    def recorded(evidence: Mapping[str, Any]) -> Route:
        """The route a promotion verdict recorded (the home workspace throughout when it recorded none)."""
        return Route(**{"source": None, "staging": None, "production": None, "registry": None,
                        **evidence.get("route", {})})

    def staging_words(self, promotion: Promotion) -> str:
        """Where staging happens, in words: '<how> on <endpoint>[ in <workspace>][ from registry <registry>]'."""
        how = "beside the default" if promotion.target == "batch" else "at 0%"
        place = f" in {self.staging}" if self.staging else ""
        via = f" from registry {self.registry}" if self.shared(self.staging) else ""
        return f"{how} on {promotion.endpoint}{place}{via}"



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


def staging_request(promotion: Promotion, model: str, version: str, key: str, policy: Policy,
                    route: Route | None = None) -> DeployModel | DeployBatch:
    route = route or Route(None, None, None, None)
    how = policy.deployment_for(promotion.endpoint, model)
    deployment = deployment_name(model, version, key)
    registry = route.shared(route.staging)
    where = {"environment": route.staging, "source": route.source if registry else None, "registry": registry}
    test = promotion.staging.test
    job = None
    if test is not None:
        values = {"model": model_reference(model, version, registry), "endpoint": promotion.endpoint,
                  "deployment": deployment}
        job = SubmitPipeline(
            experiment_name=test.experiment or f"{promotion.endpoint}-test-stage", name=f"{deployment}-test",
            source=test.pipeline, inputs={name: value.format_map(values) for name, value in test.inputs.items()},
            compute=test.compute, tags=test_tags(model, version, promotion.endpoint, deployment)).to_json()
    if promotion.target == "batch":
        batch = promotion.batch
        return DeployBatch(endpoint=promotion.endpoint, deployment=deployment, model=AssetRef(model, version),
                           compute=batch.compute, instance_count=batch.instance_count,
                           mini_batch_size=batch.mini_batch_size,
                           max_concurrency_per_instance=batch.max_concurrency_per_instance,
                           output_file_name=batch.output_file_name, spec=how["spec"], test=job,
                           sample_input=None if job else promotion.staging.sample_input,
                           experiment=f"{promotion.endpoint}-test-stage", **where)
    return DeployModel(endpoint=promotion.endpoint, deployment=deployment,
                       model=AssetRef(model, version), instance_type=promotion.staging.instance_type,
                       instance_count=promotion.staging.instance_count, stage="staging", spec=how["spec"],
                       auth_mode=how["auth_mode"], compute=how["compute"], test=job, **where)


def production_request(promotion: Promotion, model: str, version: str, key: str, approvers: list[str],
                       route: Route, policy: Policy) -> StartRollout | DeployBatch:
    deployment, registry = deployment_name(model, version, key), route.shared(route.production)
    if promotion.target == "batch":
        staged = staging_request(promotion, model, version, key, policy, route)
        return replace(staged, stage="production", environment=route.production, registry=registry,
                       source=route.source if registry else None, sample_input=None, test=None, experiment=None)
    return StartRollout(endpoint=promotion.endpoint, deployment=deployment, model=AssetRef(model, version),
                        approvers=tuple(approvers), environment=route.production, registry=registry)


def model_reference(model: str, version: str, registry: str | None) -> str:
    """The model as a workspace refers to it: from the registry when it was shared there, else its own."""
    return registry_model(registry, model, version) if registry else AssetRef(model, version).uri


def test_tags(model: str, version: str, endpoint: str, deployment: str) -> dict[str, str]:
    """What marks a job as a candidate's test stage: its run events are then decided as test results."""
    return {STAGE_TAG: "test", MODEL_TAG: model, VERSION_TAG: version, "controlplane.endpoint": endpoint,
            "controlplane.deployment": deployment}


def test_stage_of(staging: DeployModel | DeployBatch) -> dict[str, Any] | None:
    """What the staging request will run as its test stage (the job's name, where), for the decision's evidence
    and the sweep's deadline; None when it runs none."""
    if staging.test:
        job, kind = staging.test["job"]["name"], "pipeline"
    elif isinstance(staging, DeployBatch) and staging.sample_input:
        job, kind = f"{staging.deployment}-score", "batch_scoring"
    else:
        return None
    return {"job": job, "kind": kind, "environment": staging.environment, "endpoint": staging.endpoint,
            "deployment": staging.deployment}


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


FAILED_RUNS = ("Failed", "Canceled")


def judge_test_stage(model: str, version: str, promotion: Promotion, policy: Policy, key: str,
                     registered: Mapping[str, Any], result: Mapping[str, Any]) -> Verdict:
    """A staged candidate's test stage ended (``result["status"]``), or gave nothing by its deadline (status "").

    ``registered`` is the evidence of the candidate's promotion verdict (its gates, champion, registrant, route);
    ``key`` that verdict's idempotency key, from which the deployments are named. Failing results reject it; passing
    ones open the production review, which shows them; missing ones, or none in time, leave it to that review."""
    job, status = result["job"], result["status"]
    stage = {**result}
    evidence: dict[str, Any] = {**registered, "stage": "production", "test_stage": stage}
    registrant = str(registered.get("registrant", ""))
    route = Route.recorded(registered)
    production, quorum, unknown = production_quorum(promotion, registrant, evidence)
    label = f"test stage job {job} of {model}:{version}"

    def to_people(reason: str, outcome: Outcome = Outcome.INCONCLUSIVE) -> Verdict:
        verdict = Verdict(outcome, reason, model=model, version=version, evidence=evidence)
        if promotion.production is None:
            return verdict
        return gated(production, quorum, unknown, evidence, registrant,
                     production_request(promotion, model, version, key, production.approvers, route, policy), verdict)

    if status in FAILED_RUNS:
        return Verdict(Outcome.REJECT, f"{label} {status.lower()}: not promoted further", model=model,
                       version=version, evidence=evidence)
    if not status:
        return to_people(f"{label} gave no result within {promotion.test_timeout_hours:g} h; a person must look")
    values = result.get("results", {})
    gates = promotion.staging.test.parsed_gates() if promotion.staging.test else []
    stage["gates"] = [{"gate": str(gate), "metric": gate.metric, "value": values.get(gate.metric),
                       "passed": gate.metric in values and gate.passes(values[gate.metric])} for gate in gates]
    missing = [gate["metric"] for gate in stage["gates"] if gate["value"] is None]
    if missing:
        return to_people(f"{label} completed without reporting {', '.join(missing)}; a person must look")
    failed = [gate for gate in stage["gates"] if not gate["passed"]]
    if failed:
        return Verdict(Outcome.REJECT, f"{label}: " + "; ".join(f"{g['metric']} {g['value']:g} fails {g['gate']}"
                                                                for g in failed),
                       model=model, version=version, evidence=evidence)
    passed = f"test stage passed ({', '.join(g['gate'] for g in stage['gates'])})" if gates else "test stage passed"
    if promotion.production is None:
        return Verdict(Outcome.PROMOTE, f"{label}: {passed}; no production stage: it stays staged", model=model,
                       version=version, evidence=evidence)
    where = f" in {route.production}" if route.production else ""
    return to_people(f"{label}: {passed}; production on {promotion.endpoint}{where} needs {quorum} approval(s)",
                     Outcome.REQUEST_APPROVAL)

"""Promotion on ModelRegistered: gates, champion comparison, staging, and the production approval.

Candidate metrics come from the event's tags and properties, or from Azure ML through the gateway
when the event lacks them. The champion is the model serving the target endpoint (the gateway's
view of live traffic, else the ledger's last deployment or production promotion). Missing metrics
never promote silently: they are ``inconclusive`` and open a review.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from controlplane.domain.errors import PermanentError
from controlplane.domain.events import MODEL_DEPLOYED, ModelRegistered
from controlplane.domain.ledger import Decision, Outcome, Verdict
from controlplane.domain.policy import Promotion, ResolvedRule
from controlplane.domain.promotion import PromotionFacts, judge_promotion
from controlplane.domain.refs import AssetRef
from controlplane.domain.reviews import identity
from controlplane.handlers.actions import enforce
from controlplane.ports.store import Services

SETS_CHAMPION = "controlplane.champion"  # evidence key naming the endpoint a decision made this model serve on
PROMOTION_DISPATCHED = "promotion.dispatched"  # the control plane's record of a staging or production promotion sent


def decide_promotion(event: ModelRegistered, rule: ResolvedRule, services: Services, key: str) -> Verdict:
    facts = read_facts(event, rule.promotion, services)
    return enforce(rule, judge_promotion(event.model, event.version, event.tags, rule, facts, key, services.policy))


def read_facts(event: ModelRegistered, promotion: Promotion, services: Services) -> PromotionFacts:
    """What the promotion rules need: an earlier verdict on this version (then nothing more), the champion
    and its metrics, the candidate's metrics and registrant."""
    earlier = next((d for d in _verdicts(services, event.model, event.version) if "shadow" not in d.evidence),
                   None)  # a shadow verdict dispatched nothing
    if earlier is not None:
        return PromotionFacts(earlier=(earlier.id, earlier.outcome.value))
    environment = services.policy.environment_of(event.meta.source)
    if promotion.source is not None and environment != promotion.source:
        return PromotionFacts(environment=environment)  # not a candidate here: nothing more to read
    production = promotion.production.environment if promotion.production else None
    champion = find_champion(services, promotion.endpoint, event.model, production, batch=promotion.target == "batch")
    metrics, registrant, source, looked_up = candidate_facts(event, promotion, services, environment)
    return PromotionFacts(champion=champion, metrics=metrics, registrant=registrant, registrant_source=source,
                          metrics_from_gateway=looked_up, environment=environment, properties=dict(event.properties),
                          champion_metrics=champion_facts(services, champion, production) if champion else {})


_PROMOTION_OUTCOMES = [Outcome.PROMOTE, Outcome.REQUEST_APPROVAL, Outcome.REJECT, Outcome.INCONCLUSIVE]
# The decisions that put a model on an endpoint: a finished rollout, a dispatched production promotion,
# a deployment Azure ML reported.
_CHAMPION_EVENTS = ["rollout.completed", PROMOTION_DISPATCHED, MODEL_DEPLOYED]


def _verdicts(services: Services, model: str, version: str) -> list[Decision]:
    """Promotion verdicts recorded for one model version, newest first (a handful at most)."""
    return services.store.decisions(model=model, limit=20, outcomes=_PROMOTION_OUTCOMES, version=version)


def candidate_facts(event: ModelRegistered, promotion: Promotion, services: Services,
                    environment: str | None = None) -> tuple[dict[str, float], str, str, bool]:
    """Gate metrics, completed from the workspace when the event lacks some, and the registrant with
    where it came from: Azure ML's own record of who registered the version (``workspace``), else,
    only when the policy allows it, the ``created_by`` tag or property (``tags``), else unknown (``""``).
    A registrant that is not plain ASCII once normalised (a look-alike letter) counts as unknown."""
    facts = {**event.properties, **event.tags}
    metrics = _metrics(facts, promotion)
    info = None
    gateway = services.gateway_in(environment)  # the workspace the version was registered in
    if gateway is not None:
        try:
            info = gateway.get_model(event.model, event.version)
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


def champion_facts(services: Services, champion: AssetRef, environment: str | None = None) -> dict[str, float]:
    """The champion's metrics as recorded when it was registered, else from the workspace it serves in."""
    name, version = champion.name, champion.version
    for decision in _verdicts(services, name, version):
        if "metrics" in decision.evidence:
            return dict(decision.evidence["metrics"])
    gateway = services.gateway_in(environment)
    if gateway is not None:
        try:
            info = gateway.get_model(name, version)
        except PermanentError:
            return {}
        return {k: _number(v) for k, v in {**info.properties, **info.tags}.items() if _number(v) is not None}
    return {}


def find_champion(services: Services, endpoint: str, model: str, environment: str | None = None, *,
                  batch: bool = False) -> AssetRef | None:
    """The model serving ``endpoint`` now (a batch endpoint's default deployment, an online endpoint's live
    traffic) in the production workspace, else the ledger's last record of one."""
    gateway = services.gateway_in(environment)
    if gateway is not None:
        try:
            state = gateway.get_batch_endpoint(endpoint) if batch else gateway.get_endpoint(endpoint)
        except PermanentError:
            state = None
        serving = (state.default_deployment if batch else state.serving()) if state else None
        for deployment in state.deployments if state else ():
            ref = AssetRef.parse(deployment.model) if deployment.name == serving else None
            if ref is not None:
                return ref
    for decision in services.store.decisions(model=model, limit=20, event_types=_CHAMPION_EVENTS):  # newest first
        if decision.evidence.get(SETS_CHAMPION) == endpoint or (
                decision.evidence.get("endpoint") == endpoint and decision.event_type == MODEL_DEPLOYED):
            return AssetRef(decision.model, decision.version)
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



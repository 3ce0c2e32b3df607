"""The actions a drift signal leads to, per the model's profile (MLOps v2).

Classical models are retrained automatically; computer vision and NLP models send the degraded
data to human review and labelling instead. Shadow mode records the verdict and opens no task.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from controlplane.ledger import Outcome, ReviewDraft, TaskDraft, TaskKind, Verdict, digest
from controlplane.policy import Mode, Policy, Profile
from controlplane.reviews import ReviewKind

DRIFT_REVIEW_TTL = timedelta(days=7)


def act_on_drift(policy: Policy, model: str | None, signal: Mapping[str, Any], summary: str, key: str) -> Verdict:
    evidence: dict[str, Any] = {"signal": dict(signal)}
    if model is None:
        how = "map it under 'monitors' in the policy"
        if signal.get("kind") == "model_monitor":
            how = "tag the monitor's runs with model_name or " + how
        return Verdict(Outcome.INCONCLUSIVE,
                       f"{summary}; no model is known for monitor {signal.get('monitor')!r} ({how})",
                       evidence=evidence)
    rule = policy.rule_for(model)
    if rule is None:
        return Verdict(Outcome.INCONCLUSIVE, f"{summary}; no policy rule matches model {model!r}", model=model,
                       evidence=evidence)
    evidence.update(rule=rule.rule, profile=rule.profile.value, mode=rule.mode.value)
    if rule.profile is Profile.CLASSICAL:
        if rule.retraining is None:
            return Verdict(Outcome.INCONCLUSIVE, f"{summary}; rule {rule.rule} has no retraining pipeline",
                           model=model, evidence=evidence)
        retraining = rule.retraining
        job_name = deterministic_name("retrain", model, key)
        request = {"operation": "jobs.create_or_update", "experiment_name": retraining.experiment,
                   "job": {"name": job_name, "source": retraining.pipeline, "compute": retraining.compute,
                           "inputs": {"model_name": model, **retraining.inputs},
                           "tags": {"controlplane.trigger": str(signal.get("kind")),
                                    "controlplane.idempotency_key": key}}}
        outcome, task = Outcome.RETRAIN, TaskDraft(TaskKind.RETRAINING, f"azureml:job/{job_name}", request)
        reason = f"{summary}; retraining {model} with {retraining.pipeline}"
        if rule.mode is Mode.SHADOW:
            evidence["shadow_task"] = {"kind": task.kind.value, "target": task.target, "request": task.request}
            return Verdict(outcome, f"{reason} (shadow mode: nothing dispatched)", model=model, evidence=evidence)
        return Verdict(outcome, reason, model=model, evidence=evidence, tasks=(task,))
    if rule.review is None:
        return Verdict(Outcome.INCONCLUSIVE, f"{summary}; rule {rule.rule} names no reviewers", model=model,
                       evidence=evidence)
    review = ReviewDraft(kind=ReviewKind.DRIFT, approvers=tuple(rule.review.assignees), quorum=1, ttl=DRIFT_REVIEW_TTL,
                         evidence={**evidence, "labelling_project": rule.review.labelling_project},
                         separation_of_duties=False)
    reason = f"{summary}; {rule.profile.value} model sent to human review and labelling"
    if rule.mode is Mode.SHADOW:
        evidence["shadow_review"] = {"kind": review.kind.value, "approvers": list(review.approvers)}
        return Verdict(Outcome.REVIEW, f"{reason} (shadow mode: nothing dispatched)", model=model, evidence=evidence)
    return Verdict(Outcome.REVIEW, reason, model=model, evidence=evidence, reviews=(review,))


def deterministic_name(prefix: str, model: str, key: str) -> str:
    """An Azure ML resource name derived from the idempotency key: a resubmission finds the same job."""
    slug = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")[:40] or "model"
    return f"{prefix}-{slug}-{digest(key, length=12)}"

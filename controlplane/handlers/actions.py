"""The actions a drift signal leads to, per the model's profile (MLOps v2).

Classical models are retrained automatically, behind a storm guard: a retraining already running is
joined instead of starting another, and a cooldown and a daily budget hold back the rest, each
suppressed action still leaving a decision that says why. Computer vision and NLP models send the
degraded data to human review and labelling instead. Shadow mode records the verdict and opens nothing.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from controlplane.domain.errors import ControlPlaneError
from controlplane.domain.ledger import Outcome, ReviewDraft, TaskDraft, TaskKind, Verdict, digest
from controlplane.domain.policy import Mode, Profile, ResolvedRule
from controlplane.domain.reviews import ReviewKind
from controlplane.ports.store import Services

DRIFT_REVIEW_TTL = timedelta(days=7)
RUNNING = {"notstarted", "queued", "preparing", "provisioning", "starting", "running", "finalizing"}


def act_on_drift(services: Services, model: str | None, signal: Mapping[str, Any], summary: str, key: str,
                 evidence: Mapping[str, Any] | None = None) -> Verdict:
    evidence = {**(evidence or {}), "signal": dict(signal)}
    if model is None:
        how = "map it under 'monitors' in the policy"
        if signal.get("kind") == "model_monitor":
            how = "tag the monitor's runs with model_name or " + how
        return Verdict(Outcome.INCONCLUSIVE,
                       f"{summary}; no model is known for monitor {signal.get('monitor')!r} ({how})",
                       evidence=evidence)
    rule = services.policy.rule_for(model)
    if rule is None:
        return Verdict(Outcome.INCONCLUSIVE, f"{summary}; no policy rule matches model {model!r}", model=model,
                       evidence=evidence)
    evidence.update(rule=rule.rule, profile=rule.profile.value, mode=rule.mode.value)
    if rule.profile is Profile.CLASSICAL:
        return retrain(services, rule, model, summary, key, evidence, trigger=str(signal.get("kind")))
    if rule.review is None:
        return Verdict(Outcome.INCONCLUSIVE, f"{summary}; rule {rule.rule} names no reviewers", model=model,
                       evidence=evidence)
    window = evidence.get("window")
    tasks = []
    if window:  # the window's rows go to labelling and its report to the reviewers
        base = f"{model}-{window['deployment']}-{window['bucket']}.{window['part']}"
        name = f"{base}-{unguessable(services.approval_key, base)}"
        evidence.update(report=name, report_url=f"{services.public_url.rstrip('/')}/api/reports/{name}")
        tasks = [TaskDraft(TaskKind.REVIEW, f"labelling/{name}", {
                     "operation": "labelling.export", "name": name, "window": dict(window),
                     "labelling_project": rule.review.labelling_project}),
                 TaskDraft(TaskKind.REVIEW, f"report/{name}", {"operation": "report.render", "name": name,
                                                               "window": dict(window), "model": model})]
    review = ReviewDraft(kind=ReviewKind.DRIFT, approvers=tuple(rule.review.assignees), quorum=1, ttl=DRIFT_REVIEW_TTL,
                         evidence={**evidence, "labelling_project": rule.review.labelling_project},
                         separation_of_duties=False, secret=unguessable(services.approval_key, key))
    reason = f"{summary}; {rule.profile.value} model sent to human review and labelling"
    if rule.mode is Mode.SHADOW:
        evidence["shadow_review"] = {"kind": review.kind.value, "approvers": list(review.approvers)}
        return Verdict(Outcome.REVIEW, f"{reason} (shadow mode: nothing dispatched)", model=model, evidence=evidence)
    return Verdict(Outcome.REVIEW, reason, model=model, evidence=evidence, reviews=(review,), tasks=tuple(tasks))


def unguessable(key: bytes, base: str) -> str:
    """A part no one can compute from public data (model, deployment, hour): an HMAC under the approval
    signing key, or random when there is no key."""
    if not key:
        return secrets.token_hex(8)
    return hmac.new(key, base.encode(), hashlib.sha256).hexdigest()[:16]


def retrain(services: Services, rule: ResolvedRule, model: str, summary: str, key: str, evidence: dict[str, Any],
            trigger: str) -> Verdict:
    """A retraining task, unless the storm guard holds it back (the decision then says why)."""
    if rule.retraining is None:
        return Verdict(Outcome.INCONCLUSIVE, f"{summary}; rule {rule.rule} has no retraining pipeline",
                       model=model, evidence=evidence)
    retraining = rule.retraining
    held = _guard(services, model, retraining.cooldown_hours, retraining.daily_budget)
    if held is not None:
        reason, extra = held
        return Verdict(Outcome.NO_ACTION, f"{summary}; retraining held back: {reason}", model=model,
                       evidence={**evidence, "guard": extra})
    job_name = deterministic_name("retrain", model, key)
    request = {"operation": "jobs.create_or_update", "experiment_name": retraining.experiment,
               "job": {"name": job_name, "source": retraining.pipeline, "compute": retraining.compute,
                       "inputs": {"model_name": model, **retraining.inputs},
                       "tags": {"controlplane.trigger": trigger, "controlplane.idempotency_key": key}}}
    task = TaskDraft(TaskKind.RETRAINING, f"azureml:job/{job_name}", request)
    reason = f"{summary}; retraining {model} with {retraining.pipeline}"
    if rule.mode is Mode.SHADOW:
        evidence["shadow_task"] = {"kind": task.kind.value, "target": task.target, "request": task.request}
        return Verdict(Outcome.RETRAIN, f"{reason} (shadow mode: nothing dispatched)", model=model, evidence=evidence)
    return Verdict(Outcome.RETRAIN, reason, model=model, evidence={**evidence, "job": job_name}, tasks=(task,))


def _guard(services: Services, model: str, cooldown_hours: float, daily_budget: int) -> tuple[str, dict] | None:
    now = services.clock.now()
    # Only the latest `daily_budget` retrainings can matter: the newest for the job and the cooldown,
    # all of them for the budget.
    started = services.store.retraining_jobs(model, daily_budget)
    if not started:
        return None
    latest_at, job = started[0]
    if services.gateway is not None:
        try:
            status = services.gateway.get_job(job).status
        except ControlPlaneError:
            status = ""
        if status.lower() in RUNNING:
            return f"joined the retraining already running ({job}, {status})", {"attached_to": job, "status": status}
    if now - latest_at < timedelta(hours=cooldown_hours):
        until = latest_at + timedelta(hours=cooldown_hours)
        return (f"cooldown after {job} until {until.isoformat(timespec='minutes')}",
                {"cooldown_until": until.isoformat(), "last": job})
    today = [at for at, _ in started if now - at < timedelta(days=1)]
    if len(today) >= daily_budget:
        return f"daily budget of {daily_budget} retrainings reached", {"budget": daily_budget, "used": len(today)}
    return None


def deterministic_name(prefix: str, model: str, key: str) -> str:
    """An Azure ML resource name derived from the idempotency key: a resubmission finds the same job."""
    slug = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")[:40] or "model"
    return f"{prefix}-{slug}-{digest(key, length=12)}"

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
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from controlplane.domain.errors import ControlPlaneError
from controlplane.domain.ledger import Outcome, ReviewDraft, Verdict, digest, shadowed
from controlplane.domain.policy import Mode, Profile, ResolvedRule
from controlplane.domain.requests import (
    MODEL_TAG,
    ExportLabels,
    Notify,
    RenderReport,
    SubmitPipeline,
    labelling_asset,
)
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
    if rule.notify:
        evidence["told"] = list(rule.notify)
    if rule.profile is Profile.CLASSICAL:
        return _told(rule, retrain(services, rule, model, summary, key, evidence, trigger=str(signal.get("kind"))))
    if rule.review is None:
        return Verdict(Outcome.INCONCLUSIVE, f"{summary}; rule {rule.rule} names no reviewers", model=model,
                       evidence=evidence)
    window = evidence.get("window")
    tasks = []
    if window:  # the window's rows go to labelling and its report to the reviewers
        base = f"{model}-{window['deployment']}-{window['bucket']}.{window['part']}"
        name = f"{base}-{unguessable(services.approval_key, base)}"
        evidence.update(report=name, report_url=f"{services.public_url.rstrip('/')}/api/reports/{name}")
        tasks = [ExportLabels(name=name, window=dict(window), labelling_project=rule.review.labelling_project),
                 RenderReport(name=name, window=dict(window), model=model)]
    # Approving it sends the labelled data back to model development: with a retraining pipeline, a retraining
    # that also reads the labelling project's data asset.
    labelled = labelling_asset(rule.review.labelling_project, model)
    then = (retraining_job(rule, model, key, "drift_review", labelled_data=f"azureml:{labelled}@latest")
            if rule.retraining is not None else None)
    review = ReviewDraft(kind=ReviewKind.DRIFT, approvers=tuple(rule.review.assignees), quorum=1, ttl=DRIFT_REVIEW_TTL,
                         evidence={**evidence, "labelling_project": rule.review.labelling_project,
                                   "labelled_data": f"azureml:{labelled}"},
                         separation_of_duties=False, secret=unguessable(services.approval_key, key), on_approval=then)
    reason = f"{summary}; {rule.profile.value} model sent to human review and labelling"
    return _told(rule, enforce(rule, Verdict(Outcome.REVIEW, reason, model=model, evidence=evidence,
                                             reviews=(review,), tasks=tuple(tasks))))


def _told(rule: ResolvedRule, verdict: Verdict) -> Verdict:
    """The channels the model's rule names hear of its drift decision, whatever it was (in shadow mode, nothing is
    sent: the evidence's ``told`` says who would have been)."""
    if not rule.notify or rule.mode is Mode.SHADOW:
        return verdict
    notices = tuple(Notify(channel=channel, event=f"drift.{verdict.outcome.value}",
                           subject=f"Drift on {verdict.model}: {verdict.outcome.value}", text=verdict.reason)
                    for channel in rule.notify)
    return replace(verdict, tasks=verdict.tasks + notices)


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
    job = retraining_job(rule, model, key, trigger)
    reason = f"{summary}; retraining {model} with {retraining.pipeline}"
    if rule.mode is Mode.SHADOW:
        return shadowed(Verdict(Outcome.RETRAIN, reason, model=model, evidence=evidence, tasks=(job,)))
    return Verdict(Outcome.RETRAIN, reason, model=model, evidence={**evidence, "job": job.name}, tasks=(job,))


def retraining_job(rule: ResolvedRule, model: str, key: str, trigger: str, **inputs: str) -> SubmitPipeline:
    """The rule's retraining pipeline job for ``model``, named from ``key``, with ``inputs`` besides its own."""
    retraining = rule.retraining
    return SubmitPipeline(experiment_name=retraining.experiment, name=deterministic_name("retrain", model, key),
                          source=retraining.pipeline, compute=retraining.compute, environment=retraining.environment,
                          inputs={"model_name": model, **retraining.inputs, **inputs},
                          tags={"controlplane.trigger": trigger, "controlplane.idempotency_key": key,
                                MODEL_TAG: model})


def enforce(rule: ResolvedRule, verdict: Verdict) -> Verdict:
    """The verdict as the rule's mode lets it act: in shadow mode it opens nothing (see ``shadowed``)."""
    return shadowed(verdict) if rule.mode is Mode.SHADOW else verdict


def _guard(services: Services, model: str, cooldown_hours: float, daily_budget: int) -> tuple[str, dict] | None:
    # Only the latest `daily_budget` retrainings can matter: the newest for the job and the cooldown,
    # all of them for the budget.
    started = services.store.retraining_jobs(model, daily_budget)
    status = ""
    if started and services.gateway is not None:
        try:
            status = services.gateway.get_job(started[0][1]).status
        except ControlPlaneError:
            status = ""
    return storm_guard(started, status, services.clock.now(), cooldown_hours, daily_budget)


def storm_guard(started: list[tuple[datetime, str]], status: str, now: datetime, cooldown_hours: float,
                daily_budget: int) -> tuple[str, dict] | None:
    """Why a retraining is held back, with the evidence, or None: the latest job still runs (``status``, as
    Azure ML reports it), or ran within the cooldown, or the day's budget is spent. ``started`` is the
    latest retrainings, newest first."""
    if not started:
        return None
    latest_at, job = started[0]
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

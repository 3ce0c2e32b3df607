"""Drift decisions on telemetry windows: when a window closes, check it against the model's
reference data and act per the model's profile, once per window.

Beyond the test itself: a window smaller than ``min_rows`` is ``inconclusive``; ``persistence`` asks
for that many drifted windows in a row before acting; the per-column scores stay on the decision, and so do
the data-quality signals (missing-value rate, invalid values, unseen categories, out-of-range numbers), with
``evidence.data_quality`` true when any was raised.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from controlplane.domain.drift import VERDICT_TAG
from controlplane.domain.errors import PermanentError, TransientError
from controlplane.domain.events import RUN_COMPLETED, RUN_STATUS_CHANGED
from controlplane.domain.ledger import Decision, Outcome, ReviewDraft, Source, Verdict
from controlplane.domain.policy import DataQualityPolicy
from controlplane.domain.requests import MODEL_TAG, STAGE_TAG, CheckDrift, Notify
from controlplane.domain.reviews import ReviewKind
from controlplane.domain.windows import WindowKey
from controlplane.handlers.actions import act_on_drift, deterministic_name
from controlplane.handlers.record import decide_once
from controlplane.ports import telemetry
from controlplane.ports.store import DriftVerdict, Services

logger = logging.getLogger(__name__)

EVENT_TYPE = "drift.window"
RUN_EVENTS = (RUN_COMPLETED, RUN_STATUS_CHANGED)
QUALITY_REVIEW_TTL = timedelta(hours=72)


def evaluate_window(services: Services, key: WindowKey) -> Decision:
    """Decide a closed window once; a check that fails for now leaves it undecided for the next sweep."""
    decision = decide_once(services, key=f"window:{key}", event_id=str(key), source=Source.TELEMETRY,
                           event_type=EVENT_TYPE, model=key.model, version=None, received_at=services.clock.now(),
                           decide=lambda: _decide(services, key))
    services.store.mark_window_decided(key)
    return decision


def evaluate_closed_windows(services: Services, keys: list[WindowKey]) -> list[Decision]:
    """Decide each window; one whose check fails for now waits for the sweep, the others go on."""
    decided = []
    for key in keys:
        try:
            decided.append(evaluate_window(services, key))
        except TransientError as error:
            logger.warning("window %s stays undecided until the next sweep: %s", key, error)
    return decided


def _decide(services: Services, key: WindowKey) -> Verdict:
    rule = services.policy.rule_for(key.model)
    window = services.store.window(key)
    evidence: dict[str, Any] = {"window": {"model": key.model, "deployment": key.deployment, "bucket": key.bucket,
                                           "part": key.part, "records": window.count if window else 0,
                                           "closed_by": window.reason if window else ""}}
    if rule is None or rule.drift is None:
        return Verdict(Outcome.NO_ACTION, f"window {key} closed; no drift policy for {key.model}", model=key.model,
                       evidence=evidence)
    spec = rule.drift.window.spec()  # the event-time span of the window's bucket
    evidence["window"].update(start=spec.bucket_end(key.bucket - 1).isoformat(),
                              end=spec.bucket_end(key.bucket).isoformat())
    job = rule.drift.azureml
    if job is not None and window is not None and window.count > job.over_records:
        capture = job.telemetry or services.telemetry_capture
        if capture:
            return _to_job(services, key, rule, capture, evidence)
        evidence["job_skipped"] = ("no telemetry capture is configured (CONTROLPLANE_TELEMETRY_CAPTURE): checked on "
                                   "the window's sample")
    if services.drift is None:
        return Verdict(Outcome.INCONCLUSIVE, f"window {key}: no drift checker is configured", model=key.model,
                       evidence=evidence)
    rows = services.store.window_sample(key, rule.drift.window.sample)
    try:
        result = _check(services, rows, rule.drift)
    except PermanentError as error:
        return Verdict(Outcome.INCONCLUSIVE, f"window {key}: drift check impossible: {error}", model=key.model,
                       evidence={**evidence, "error": str(error)})
    evidence.update(drift=result.to_evidence(), drifted=bool(result.dataset_drift and not result.inconclusive),
                    data_quality=bool(getattr(result, "data_quality", False)))
    summary = f"window {key} ({window.count if window else len(rows)} records): {result.reason}"
    return route_quality(rule.drift.data_quality, key, _act(services, key, rule, result, summary, evidence))


JOB_SETTINGS = ("columns", "methods", "thresholds", "drift_share", "min_rows", "effect_size_floor", "correction",
                "alpha", "reference_bound")  # what the job checks with: all but the function's sample bound
WINDOW_TAG = "controlplane.window"


def _to_job(services: Services, key: WindowKey, rule: Any, capture: str, evidence: dict[str, Any]) -> Verdict:
    """A window past the function's bound: checked in full by an Azure ML job over the captured telemetry, whose
    end decides it (``drift_job_ended``)."""
    job, drift = rule.drift.azureml, rule.drift
    checked = drift.settings()
    settings = {name: dict(value) if isinstance(value, Mapping) else value
                for name, value in ((name, getattr(checked, name)) for name in JOB_SETTINGS)}
    reference = drift.reference
    if not reference.startswith(("azureml:", "https://", "/")):  # a file beside the policy: uploaded with the job
        reference = str(Path(services.policy.source).parent / reference)
    name = job_name(key)
    request = CheckDrift(
        experiment_name=job.experiment, name=name, source=job.pipeline, compute=job.compute,
        environment=job.environment, inputs={
            "telemetry": capture, "reference": reference, "settings": json.dumps(settings, sort_keys=True),
            "model": key.model, "deployment": key.deployment, "start": evidence["window"]["start"],
            "end": evidence["window"]["end"]},
        tags={STAGE_TAG: "drift", MODEL_TAG: key.model, WINDOW_TAG: str(key),
              "controlplane.deployment": key.deployment})
    records = evidence["window"]["records"]
    return Verdict(Outcome.NO_ACTION, f"window {key} ({records} records, over {job.over_records}) is checked in full "
                   f"by Azure ML job {name}; its end decides", model=key.model,
                   evidence={**evidence, "deferred": {"job": name, "environment": job.environment}}, tasks=(request,))


def job_name(key: WindowKey) -> str:
    """The drift check job of a window: one per bucket, as the parts of a bucket split by count cover the same time
    span, which the job reads whole."""
    return deterministic_name("drift", key.model, f"window:{key.model}/{key.deployment}/{key.bucket}")


def drift_job_ended(services: Services, run: Any, model: str, status: str) -> Verdict:
    """A window's drift-check job ended: its verdict, from the run's tags (else the job's), decides the window as the
    function's own check would, persistence and the profile's action included. Decided once per job."""
    marks = {**run.properties, **run.tags}
    window = marks.get(WINDOW_TAG, "")
    facts = {"job": run.run_id, "status": status, "window_key": window}
    earlier = next((d for d in services.store.decisions(model=model, limit=50, event_types=RUN_EVENTS)
                    if d.evidence.get("drift", {}).get("job") == run.run_id), None)
    if earlier is not None:
        return Verdict(Outcome.NO_ACTION, f"drift check job {run.run_id} of {model} {status.lower()}; already decided "
                       f"as decision {earlier.id}", model=model, evidence=facts)
    rule = services.policy.rule_for(model)
    try:
        key = WindowKey.parse(window)
    except ValueError:
        key = None
    if rule is None or rule.drift is None or key is None:
        return Verdict(Outcome.NO_ACTION, f"drift check job {run.run_id} of {model} {status.lower()}; no drift rule "
                       f"or window to decide", model=model, evidence=facts)
    if run.run_id != job_name(key):  # a step of the job, say, carrying its tags: the job's own end decides
        return Verdict(Outcome.NO_ACTION, f"run {run.run_id} of {model} {status.lower()}; not the drift check job "
                       f"{job_name(key)} itself", model=model, evidence=facts)
    found = _job_results(services, run, rule.drift.azureml, marks)
    evidence: dict[str, Any] = {"window": {"model": key.model, "deployment": key.deployment, "bucket": key.bucket,
                                           "part": key.part},
                                "drift": {**found, "job": run.run_id, "status": status},
                                "drifted": found.get("dataset_drift") is True and status == "Completed",
                                "data_quality": found.get("data_quality") is True}
    if status != "Completed" or "dataset_drift" not in found:
        why = (f"drift check job {run.run_id} {status.lower()}" if status != "Completed"
               else f"drift check job {run.run_id} reported no verdict")
        return Verdict(Outcome.INCONCLUSIVE, f"window {key}: {why}", model=model, evidence=evidence)
    result = JobVerdict(found)
    summary = f"window {key} ({found.get('rows', '?')} records, checked by Azure ML job {run.run_id}): {result.reason}"
    return _act(services, key, rule, result, summary, evidence)


def _job_results(services: Services, run: Any, job: Any, marks: dict[str, str]) -> dict[str, Any]:
    """The job's verdict from its tags: on the event, else read from the job in its workspace."""
    tags = {name.removeprefix(VERDICT_TAG): value for name, value in marks.items() if name.startswith(VERDICT_TAG)}
    gateway = services.gateway_in(job.environment if job else None)
    if "dataset_drift" not in tags and gateway is not None:
        try:
            info = gateway.get_job(run.run_id)
        except PermanentError:
            info = None
        if info is not None:
            tags = {name.removeprefix(VERDICT_TAG): value for name, value in {**info.properties, **info.tags}.items()
                    if name.startswith(VERDICT_TAG)}
    found: dict[str, Any] = {}
    for name in ("dataset_drift", "inconclusive", "data_quality"):
        if name in tags:
            found[name] = str(tags[name]).lower() == "true"
    if tags.get("drifted"):
        found["drifted"] = [column for column in str(tags["drifted"]).split(",") if column]
    for name, kind in (("share", float), ("rows", int)):
        try:
            found[name] = kind(tags[name])
        except (KeyError, ValueError):
            pass
    if "reason" in tags:
        found["reason"] = str(tags["reason"])
    return found


@dataclass(frozen=True)
class JobVerdict:
    """A drift-check job's verdict, as ``_act`` reads a check's result."""

    found: dict[str, Any]

    @property
    def inconclusive(self) -> bool:
        return bool(self.found.get("inconclusive"))

    @property
    def dataset_drift(self) -> bool:
        return bool(self.found.get("dataset_drift"))

    @property
    def drifted(self) -> list[str]:
        return list(self.found.get("drifted", []))

    @property
    def share(self) -> float:
        return float(self.found.get("share", 0.0))

    @property
    def reason(self) -> str:
        return str(self.found.get("reason", "dataset drift" if self.dataset_drift else "no dataset drift"))


def _act(services: Services, key: WindowKey, rule: Any, result: DriftVerdict, summary: str,
         evidence: dict[str, Any]) -> Verdict:
    if result.inconclusive:
        return Verdict(Outcome.INCONCLUSIVE, summary, model=key.model, evidence=evidence)
    if not result.dataset_drift:
        return Verdict(Outcome.NO_ACTION, summary, model=key.model, evidence=evidence)
    streak = 1 + _drifted_streak(services, key)
    evidence["streak"] = streak
    if streak < rule.drift.persistence:
        return Verdict(Outcome.NO_ACTION, f"{summary}; drifted {streak} of {rule.drift.persistence} windows in a "
                                          "row needed before acting", model=key.model, evidence=evidence)
    signal = {"kind": "telemetry_window", "monitor": f"{key.model}/{key.deployment}", "window": str(key),
              "drifted_columns": list(result.drifted), "share": result.share}
    return act_on_drift(services, key.model, signal, summary, f"window:{key}", evidence=evidence)


def route_quality(policy: DataQualityPolicy | None, key: WindowKey, verdict: Verdict) -> Verdict:
    """The verdict with the window's data-quality problems sent where the policy says: a notice to its channels and,
    with reviewers, a review. A window with no drift to act on then becomes a ``notify`` (or ``review``) of its
    own; one acted on for drift keeps its outcome and carries the notice and review beside. Shadow-mode verdicts open
    nothing."""
    problems = [(q["column"], issue) for q in verdict.evidence.get("drift", {}).get("quality", [])
                for issue in q.get("issues", ()) if policy is not None and issue in policy.issues]
    if not problems or "shadow" in verdict.evidence:
        return verdict
    said = ", ".join(f"{column} ({issue})" for column, issue in problems)
    text = f"window {key}: data quality: {said}"
    notices = tuple(Notify(channel=channel, event="drift.data_quality", subject=f"Data quality: {key.model}",
                           text=text) for channel in policy.notify)
    reviews = (ReviewDraft(kind=ReviewKind.DRIFT, approvers=tuple(policy.reviewers), quorum=1, ttl=QUALITY_REVIEW_TTL,
                           evidence={**verdict.evidence, "data_quality_review": True},
                           separation_of_duties=False),) if policy.reviewers else ()
    evidence = {**verdict.evidence, "data_quality_routed": {"problems": [list(p) for p in problems],
                                                            "notify": list(policy.notify),
                                                            "reviewers": list(policy.reviewers)}}
    if verdict.outcome in (Outcome.NO_ACTION, Outcome.INCONCLUSIVE):
        outcome = Outcome.REVIEW if reviews else Outcome.NOTIFY
        if verdict.outcome is Outcome.INCONCLUSIVE:
            outcome = Outcome.INCONCLUSIVE  # still a window that could not be checked; people are told why
        return replace(verdict, outcome=outcome, reason=f"{verdict.reason}; sent to {', '.join(policy.notify)}"
                       + (f" and reviewers {', '.join(policy.reviewers)}" if reviews else ""),
                       evidence=evidence, tasks=(*verdict.tasks, *notices), reviews=(*verdict.reviews, *reviews))
    return replace(verdict, evidence=evidence, tasks=(*verdict.tasks, *notices), reviews=(*verdict.reviews, *reviews))


def _check(services: Services, rows: list[dict[str, Any]], policy: Any) -> DriftVerdict:
    """The drift check, in a span, counted by verdict (``failed`` when it raised) with its duration."""
    started, verdict = time.perf_counter(), "failed"
    try:
        with telemetry.span("drift.check", rows=len(rows)):
            result = services.drift.check(rows, policy)
            verdict = "inconclusive" if result.inconclusive else "drift" if result.dataset_drift else "no_drift"
            telemetry.annotate(verdict=verdict, drifted_columns=len(result.drifted))
            return result
    finally:
        instruments = telemetry.instruments()
        instruments.drift_checks.add(1, {"verdict": verdict})
        instruments.drift_duration.record(time.perf_counter() - started, {"verdict": verdict})


def _drifted_streak(services: Services, key: WindowKey) -> int:
    """How many of this deployment's latest decided windows, newest first, drifted in a row."""
    streak = 0
    for decision in services.store.decisions(model=key.model, limit=200, event_types=[EVENT_TYPE, *RUN_EVENTS]):
        window = decision.evidence.get("window")
        if not isinstance(window, dict) or window.get("deployment") != key.deployment:
            continue  # not a window's decision, or another deployment's
        if decision.outcome is Outcome.DUPLICATE or "deferred" in decision.evidence:
            continue  # a window handed to a job counts when the job decides it
        if not decision.evidence.get("drifted"):
            break
        streak += 1
    return streak

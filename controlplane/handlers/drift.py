"""Drift decisions on telemetry windows: when a window closes, check it against the model's
reference data and act per the model's profile, once per window.

Beyond the test itself: a window smaller than ``min_rows`` is ``inconclusive``; ``persistence`` asks
for that many drifted windows in a row before acting; the per-column scores stay on the decision, and so do
the data-quality signals (missing-value rate, invalid values, unseen categories, out-of-range numbers), with
``evidence.data_quality`` true when any was raised.
"""
from __future__ import annotations

import logging
import time
from dataclasses import replace
from datetime import timedelta
from typing import Any

from controlplane.domain.errors import PermanentError, TransientError
from controlplane.domain.ledger import Decision, Outcome, ReviewDraft, Source, Verdict
from controlplane.domain.policy import DataQualityPolicy
from controlplane.domain.requests import Notify
from controlplane.domain.reviews import ReviewKind
from controlplane.domain.windows import WindowKey
from controlplane.handlers.actions import act_on_drift
from controlplane.handlers.record import decide_once
from controlplane.ports import telemetry
from controlplane.ports.store import DriftVerdict, Services

logger = logging.getLogger(__name__)

EVENT_TYPE = "drift.window"
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
    for decision in services.store.decisions(model=key.model, limit=200, event_types=[EVENT_TYPE]):
        window = decision.evidence.get("window", {})
        if decision.event_type != EVENT_TYPE or window.get("deployment") != key.deployment:
            continue
        if decision.outcome is Outcome.DUPLICATE:
            continue
        if not decision.evidence.get("drifted"):
            break
        streak += 1
    return streak

"""What follows a retraining job the control plane started (MLOps v2's loop back to model development).

Its end reaches ``on_registry_event`` through the own-runs subscription: the model's data scientists are told,
and a failed or canceled job opens a review for them. A completed job should register a new version, which then
goes through the gates; one that has not within ``retraining.register_within_hours`` is reported to them by the
sweep. Every decision here carries the correlation id the job was tagged with: the drift's.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from controlplane.domain import events as ev
from controlplane.domain.ledger import Decision, Outcome, ReviewDraft, Source, Verdict
from controlplane.domain.requests import Notify
from controlplane.domain.reviews import ReviewKind
from controlplane.handlers.record import decide_once
from controlplane.ports.store import Services

FAILED = ("Failed", "Canceled")
ENDED = (*FAILED, "Completed")
RUN_EVENTS = (ev.RUN_COMPLETED, ev.RUN_STATUS_CHANGED)
REVIEW_TTL = timedelta(hours=72)
UNREGISTERED = "retraining.unregistered"
CHANNEL = "data-scientists"


def owners(services: Services, model: str) -> tuple[str, ...]:
    """The model's data scientists: its retraining's owners, else the alerts' ml team."""
    rule = services.policy.rule_for(model)
    named = tuple(rule.retraining.owners) if rule and rule.retraining else ()
    return named or tuple(services.policy.document.alerts.teams["ml"])


def retraining_ended(services: Services, run: ev.RunCompleted | ev.RunStatusChanged, model: str,
                     status: str) -> Verdict:
    """A retraining job ended. Azure ML may say so twice (RunCompleted and RunStatusChanged): its data scientists
    hear of it once."""
    told = owners(services, model)
    evidence = {"job": run.run_id, "experiment": run.experiment_name, "status": status,
                "trigger": run.tags.get("controlplane.trigger", ""), "owners": list(told),
                "started_by": run.tags.get("controlplane.idempotency_key", "")}
    earlier = [d for d in services.store.decisions(model=model, limit=50, event_types=RUN_EVENTS,
                                                   outcomes=(Outcome.NOTIFY, Outcome.REVIEW))
               if d.evidence.get("job") == run.run_id]
    if earlier:
        return Verdict(Outcome.NO_ACTION, f"retraining job {run.run_id} of {model} {status.lower()}; already "
                                          f"recorded as decision {earlier[0].id}", model=model, evidence=evidence)
    if status in FAILED:
        reason = f"retraining job {run.run_id} of {model} {status.lower()}: its data scientists review it"
        review = ReviewDraft(kind=ReviewKind.OPERATION, approvers=told, quorum=1, ttl=REVIEW_TTL, evidence=evidence,
                             separation_of_duties=False)
        return Verdict(Outcome.REVIEW, reason, model=model, evidence=evidence, reviews=(review,),
                       tasks=(_notice(model, "failed", reason),))
    reason = f"retraining job {run.run_id} of {model} completed; the version it registers goes through the gates"
    return Verdict(Outcome.NOTIFY, reason, model=model, evidence=evidence, tasks=(_notice(model, "completed", reason),))


def overdue_registrations(services: Services) -> list[Decision]:
    """Completed retraining jobs whose model has registered no version since, past the rule's time: each is
    reported to the model's data scientists once (the sweep calls this)."""
    now = services.clock.now()
    longest = max((r.retraining.register_within_hours for r in services.policy.document.models if r.retraining),
                  default=0)
    if not longest:
        return []
    completed = services.store.decision_page(100, outcomes=(Outcome.NOTIFY,), event_types=RUN_EVENTS,
                                             since=now - timedelta(hours=longest + 24)).items
    reported = []
    for decision in completed:
        job, model = decision.evidence.get("job"), decision.model
        rule = services.policy.rule_for(model) if model else None
        if not job or decision.evidence.get("status") != "Completed" or rule is None or rule.retraining is None:
            continue
        due = decision.decided_at + timedelta(hours=rule.retraining.register_within_hours)
        if now < due or _registered_since(services, model, decision.decided_at) or _reported(services, model, job):
            continue
        reported.append(_report(services, decision, model, job, rule.retraining.register_within_hours))
    return reported


def _registered_since(services: Services, model: str, since: datetime) -> bool:
    return any(d.decided_at >= since for d in services.store.decisions(model=model, limit=20,
                                                                        event_types=(ev.MODEL_REGISTERED,)))


def _reported(services: Services, model: str, job: str) -> bool:
    return any(d.evidence.get("job") == job
               for d in services.store.decisions(model=model, limit=50, event_types=(UNREGISTERED,)))


def _report(services: Services, completed: Decision, model: str, job: str, hours: float) -> Decision:
    reason = (f"retraining job {job} of {model} completed at {completed.decided_at.isoformat(timespec='minutes')} "
              f"and no version of {model} was registered within {hours:g} h")
    evidence: dict[str, Any] = {"job": job, "completed_decision": completed.id, "within_hours": hours,
                                "owners": list(owners(services, model))}
    key = f"retraining:{job}:unregistered"
    return decide_once(services, key=key, event_id=job, source=Source.CONTROLPLANE, event_type=UNREGISTERED,
                       model=model, version=None, received_at=services.clock.now(),
                       decide=lambda: Verdict(Outcome.NOTIFY, reason, model=model, evidence=evidence,
                                              tasks=(_notice(model, "unregistered", reason),)),
                       correlation_id=completed.correlation_id)


def _notice(model: str, what: str, text: str) -> Notify:
    return Notify(channel=CHANNEL, event=f"retraining.{what}", subject=f"Retraining {what}: {model}", text=text)

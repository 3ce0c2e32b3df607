"""Scheduled retraining: a model's ``retraining.schedule`` (6-field NCRONTAB, UTC) fires from the
minute timer and goes through the same storm guard as drift. Each firing is decided once (its key is
the model and the scheduled second), and a sweep looks back two minutes so one late sweep misses nothing."""
from __future__ import annotations

from datetime import datetime, timedelta

from controlplane.domain.ledger import Decision, Source
from controlplane.domain.ncrontab import Schedule
from controlplane.domain.policy import ResolvedRule
from controlplane.handlers.actions import retrain
from controlplane.handlers.record import decide_once
from controlplane.ports.store import Services

LOOKBACK = timedelta(minutes=2)


def run_schedules(services: Services) -> list[Decision]:
    now = services.clock.now().replace(microsecond=0)
    decided = []
    for index, rule in enumerate(services.policy.document.models):
        if rule.retraining is None or rule.retraining.schedule is None or any(c in rule.name for c in "*?["):
            continue  # a schedule retrains one model: its rule must name it exactly
        schedule = Schedule(rule.retraining.schedule)
        for moment in _seconds(now - LOOKBACK, now):
            if schedule.matches(moment):
                decided.append(_fire(services, services.policy.resolve(index), rule.name, moment))
    return decided


def _fire(services: Services, resolved: ResolvedRule, model: str, moment: datetime) -> Decision:
    """The scheduling rule itself decides, even when an earlier rule would match the model's name."""
    key = f"schedule:{model}:{moment.isoformat()}"
    summary = f"scheduled retraining of {model} ({resolved.retraining.schedule}) at {moment.isoformat()}"
    return decide_once(services, key=key, event_id=key, source=Source.CONTROLPLANE, event_type="retraining.scheduled",
                       model=model, version=None, received_at=moment,
                       decide=lambda: retrain(services, resolved, model, summary, key,
                                              {"schedule": resolved.retraining.schedule}, trigger="schedule"))


def _seconds(start: datetime, end: datetime):
    moment = start + timedelta(seconds=1)
    while moment <= end:
        yield moment
        moment += timedelta(seconds=1)

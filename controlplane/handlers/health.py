"""The control plane's own health: what each sweep saw (backlog, dead letters, rollouts, incidents), kept with its
time so ``/api/health`` on any instance reads one row, and set on the gauges the alert rules watch.

``/api/health`` answers 503 when the policy or the store fails, or when no sweep has succeeded for
``CONTROLPLANE_SWEEP_STALE_MINUTES``: an outbox nobody drains is an outage even while every request is answered.
"""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from controlplane.domain.errors import ControlPlaneError
from controlplane.domain.incidents import IncidentState
from controlplane.domain.ledger import TaskState
from controlplane.domain.rollout import ACTIVE, RolloutState
from controlplane.ports import telemetry
from controlplane.ports.store import Beat, Services

SWEEP = "sweep"
COUNT_CAP = 1000  # counts read past this are reported as this many ("at least")
# How often a sweep looks at the whole outbox, rollouts and incidents: Table Storage answers those lists by
# reading every partition, which a sweep a minute should not do each time. Between looks the beat carries the last.
OBSERVE_EVERY = timedelta(minutes=5)
STUCK_AFTER = timedelta(hours=2)  # an unfinished rollout unchanged this long is stuck; a paused one always is
_STARTED = time.monotonic()  # before the first sweep of a new deployment, health waits this process's grace


def observe(services: Services, now: datetime) -> dict[str, Any]:
    """What the store holds that operators watch, as JSON, also set on the gauges."""
    store = services.store
    pending = store.tasks(TaskState.PENDING, COUNT_CAP)
    due = [t for t in pending if t.due_at <= now]
    dead = len(store.tasks(TaskState.DEAD_LETTERED, COUNT_CAP))
    oldest = round((now - min(t.due_at for t in due)).total_seconds(), 3) if due else None
    rollouts = store.rollouts((*ACTIVE, RolloutState.PAUSED), COUNT_CAP)
    since = {r.id: now - (r.applied_at or r.created_at) for r in rollouts}
    stuck = sorted(r.id for r in rollouts if r.state is RolloutState.PAUSED or since[r.id] > STUCK_AFTER)
    oldest_in_state: dict[str, float] = {}
    for rollout in rollouts:
        seconds = since[rollout.id].total_seconds()
        oldest_in_state[rollout.state.value] = max(seconds, oldest_in_state.get(rollout.state.value, 0.0))
    incidents = len(store.incidents(IncidentState.OPEN, COUNT_CAP))
    seen = {"observed_at": now.isoformat(),
            "outbox": {"pending": len(pending), "due": len(due), "dead_lettered": dead, "oldest_due_age_s": oldest},
            "rollouts": dict(Counter(r.state.value for r in rollouts)), "stuck_rollouts": stuck,
            "incidents_open": incidents}
    gauges = telemetry.instruments()
    for state, count in (("pending", len(pending)), ("dead_lettered", dead)):
        gauges.outbox_tasks.set(count, {"state": state})
    gauges.outbox_oldest_due_age.set(oldest or 0.0)
    for state in (*ACTIVE, RolloutState.PAUSED):
        gauges.rollouts.set(seen["rollouts"].get(state.value, 0), {"state": state.value})
        gauges.rollout_time_in_state.set(round(oldest_in_state.get(state.value, 0.0), 3), {"state": state.value})
    gauges.incidents_open.set(incidents)
    return seen


def record_sweep(services: Services, report: dict[str, Any]) -> Beat:
    """A sweep succeeded: keep what it did and what it saw (looked at again every ``OBSERVE_EVERY``), as the sweep's
    beat."""
    now = services.clock.now()
    last = services.store.last_beat(SWEEP)
    seen = {k: v for k, v in last.details.items() if k != "report"} if last else {}
    if not seen.get("observed_at") or now - datetime.fromisoformat(seen["observed_at"]) >= OBSERVE_EVERY:
        seen = observe(services, now)
    beat = Beat(SWEEP, now, {"report": report, **seen})
    services.store.beat(beat)
    return beat


@dataclass(frozen=True)
class Health:
    healthy: bool
    checks: dict[str, str]
    details: dict[str, Any] = field(default_factory=dict)  # the last sweep's, without secrets


def check_health(build_services: Callable[[], Services]) -> Health:
    """Build (or reuse) the services, ping the store and read the last sweep; a failure is named, never raised."""
    from controlplane.handlers.queries import public_reason

    try:
        services = build_services()
    except ControlPlaneError as error:
        return Health(False, {"services": public_reason(error)})
    checks = {"policy": services.policy.version}
    try:
        services.store.ping()
        beat = services.store.last_beat(SWEEP)
    except ControlPlaneError as error:
        return Health(False, {**checks, "store": public_reason(error)})
    checks["store"] = f"ok ({services.store.name})"
    now, stale = services.clock.now(), services.sweep_stale
    if beat is None:
        young = time.monotonic() - _STARTED < stale.total_seconds()
        checks["sweep"] = "not run yet" if young else f"no sweep has succeeded in {_minutes(stale)}"
        return Health(young, checks)
    age = now - beat.at
    telemetry.instruments().last_sweep_age.set(round(age.total_seconds(), 3))
    fresh = age <= stale
    checks["sweep"] = (f"ok (last {beat.at.isoformat(timespec='seconds')}, {int(age.total_seconds())} s ago)" if fresh
                       else f"stale: the last successful sweep was {_minutes(age)} ago, at "
                            f"{beat.at.isoformat(timespec='seconds')} (limit {_minutes(stale)})")
    details = {key: value for key, value in beat.details.items() if key != "report"}
    return Health(fresh, checks, {"last_sweep": beat.at.isoformat(), **details})


def _minutes(span: timedelta) -> str:
    return f"{span.total_seconds() / 60:.0f} min"

"""Decisions and the tasks they open: the record that answers "why is this model in production?".

A ``Decision`` is written exactly once per idempotency key (plus one ``duplicate`` record per
redelivery). Its ``tasks`` go to the outbox in the same write, each with the exact request a
dispatcher will send, so the ledger and the outbox never disagree.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta
from enum import Enum, StrEnum
from typing import Any

import orjson

from controlplane.domain.requests import Notify, PublishDecision, Request, TaskKind, correlated
from controlplane.domain.reviews import Review, ReviewKind, ReviewState


class Outcome(StrEnum):
    PROMOTE = "promote"
    REQUEST_APPROVAL = "request_approval"
    REJECT = "reject"
    RETRAIN = "retrain"
    REVIEW = "review"
    ROLLBACK = "rollback"
    SCALE = "scale"
    NOTIFY = "notify"
    NO_ACTION = "no_action"
    INCONCLUSIVE = "inconclusive"
    DUPLICATE = "duplicate"
    INVALID = "invalid"


class TaskState(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    DEAD_LETTERED = "dead_lettered"
    CANCELLED = "cancelled"


class Source(StrEnum):
    EVENTGRID = "eventgrid"
    CLOUDEVENTS = "cloudevents"
    ALERT = "alert"
    TELEMETRY = "telemetry"
    CONTROLPLANE = "controlplane"  # the control plane's own events: votes, expiries, dispatch results


def digest(*parts: str, length: int = 32) -> str:
    """A stable hex digest of the parts; the one way ids are derived from keys."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:length]


@dataclass(frozen=True)
class Task:
    """One unit of outbound work, with the exact request its dispatcher sends."""

    id: str
    kind: TaskKind
    target: str
    request: Mapping[str, Any]
    decision_id: str
    idempotency_key: str
    created_at: datetime
    due_at: datetime
    model: str | None = None
    state: TaskState = TaskState.PENDING
    attempts: int = 0
    last_error: str = ""
    result: Mapping[str, Any] = field(default_factory=dict)
    updated_at: datetime | None = None
    traceparent: str = ""  # the span of the decision that opened it: its dispatch continues that trace

    @property
    def correlation_id(self) -> str:
        return self.request.get("correlation_id") or self.decision_id

    def to_json(self) -> dict[str, Any]:
        return _shallow_json(self)

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> Task:
        return Task(**{**data, "kind": TaskKind(data["kind"]), "state": TaskState(data["state"]),
                       "created_at": _time(data["created_at"]), "due_at": _time(data["due_at"]),
                       "updated_at": _time(data.get("updated_at"))})


@dataclass(frozen=True)
class ReviewDraft:
    """A review as a handler decides it; the ledger gives it its id, times and decision."""

    kind: ReviewKind
    approvers: tuple[str, ...]
    quorum: int
    ttl: timedelta
    evidence: Mapping[str, Any] = field(default_factory=dict)
    registrant: str = ""
    separation_of_duties: bool = True
    on_approval: Request | None = None  # what an approval opens
    # Mixed into the review's id when the decision's key is public (a drift window's model, deployment and
    # hour), so the id cannot be computed from it; never stored.
    secret: str = ""


@dataclass(frozen=True)
class Verdict:
    """What a use case decided about one event, before it is recorded."""

    outcome: Outcome
    reason: str
    model: str | None = None
    version: str | None = None
    evidence: Mapping[str, Any] = field(default_factory=dict)
    tasks: tuple[Request, ...] = ()  # what the outbox is to do, in order
    reviews: tuple[ReviewDraft, ...] = ()


def shadowed(verdict: Verdict) -> Verdict:
    """Shadow mode: the verdict as decided, what it would have opened kept in its evidence, nothing opened."""
    if not verdict.tasks and not verdict.reviews:
        return verdict
    shadow = {"tasks": [{"kind": r.KIND.value, "target": r.target, "request": r.to_json()} for r in verdict.tasks],
              "reviews": [{"kind": r.kind.value, "approvers": list(r.approvers)} for r in verdict.reviews]}
    return replace(verdict, reason=f"{verdict.reason} (shadow mode: nothing dispatched)",
                   evidence={**verdict.evidence, "shadow": shadow}, tasks=(), reviews=())


@dataclass(frozen=True)
class Decision:
    id: str
    idempotency_key: str
    event_id: str
    source: Source
    event_type: str
    model: str | None
    version: str | None
    outcome: Outcome
    reason: str
    policy_version: str
    evidence: Mapping[str, Any]
    tasks: tuple[Task, ...]
    received_at: datetime
    decided_at: datetime
    reviews: tuple[Review, ...] = ()
    # The id shared by everything one event set going: its decisions, tasks, reviews, Azure ML jobs and notices.
    # The first decision's own id, carried on by the decisions a review or a rollout of it records later.
    correlation_id: str = ""

    def to_json(self) -> dict[str, Any]:
        data = _shallow_json(self)
        data["tasks"] = [task.to_json() for task in self.tasks]
        data["reviews"] = [review.to_json() for review in self.reviews]
        return data

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> Decision:
        return Decision(**{**data, "source": Source(data["source"]), "outcome": Outcome(data["outcome"]),
                           "tasks": tuple(Task.from_json(t) for t in data.get("tasks", ())),
                           "reviews": tuple(Review.from_json(r) for r in data.get("reviews", ())),
                           "received_at": _time(data["received_at"]), "decided_at": _time(data["decided_at"]),
                           "correlation_id": data.get("correlation_id", data["id"])})  # written before it existed


def record(verdict: Verdict, *, key: str, event_id: str, source: Source, event_type: str, policy_version: str,
           received_at: datetime, decided_at: datetime, attempt: str = "", publish: bool = False,
           correlation_id: str = "", traceparent: str = "") -> Decision:
    """Turn a verdict into a decision with ids derived from the idempotency key.

    ``attempt`` distinguishes records that share a key (a ``duplicate`` per redelivery); the first,
    authoritative decision of a key has none, so a retried write lands on the same ids. Every review
    it opens is announced to its approvers (a notify task), and with ``publish`` the decision itself
    is published as a CloudEvent (a publish task). ``correlation_id`` is the one of the decision this one follows
    from (none: its own id); ``traceparent`` is the span deciding it, which its tasks' dispatches continue.
    """
    decision_id = digest(key, attempt, length=24)
    correlation_id = correlation_id or decision_id
    reviews = tuple(
        Review(id=digest(decision_id, "review", str(index), *filter(None, [draft.secret]), length=24),
               kind=draft.kind, state=ReviewState.OPEN,
               model=verdict.model, version=verdict.version, approvers=draft.approvers, quorum=draft.quorum,
               created_at=decided_at, expires_at=decided_at + draft.ttl, decision_id=decision_id,
               evidence=draft.evidence, registrant=draft.registrant,
               separation_of_duties=draft.separation_of_duties,
               on_approval=draft.on_approval.to_json() if draft.on_approval else {}, correlation_id=correlation_id)
        for index, draft in enumerate(verdict.reviews)
    )
    requests = list(verdict.tasks) + [review_notice(review, "opened", verdict.reason) for review in reviews]
    if publish:
        requests.append(PublishDecision(subject=f"models/{verdict.model or '-'}", data={
            "decision_id": decision_id, "event_id": event_id, "event_type": event_type,
            "outcome": verdict.outcome.value, "reason": verdict.reason, "model": verdict.model,
            "version": verdict.version, "policy_version": policy_version, "correlation_id": correlation_id}))
    tasks = tuple(
        Task(id=digest(decision_id, str(index), request.KIND.value, length=24), kind=request.KIND,
             target=request.target, request=correlated(request, correlation_id), decision_id=decision_id,
             idempotency_key=key, created_at=decided_at, due_at=decided_at, model=verdict.model,
             traceparent=traceparent)
        for index, request in enumerate(requests)
    )
    return Decision(id=decision_id, idempotency_key=key, event_id=event_id, source=source, event_type=event_type,
                    model=verdict.model, version=verdict.version, outcome=verdict.outcome, reason=verdict.reason,
                    policy_version=policy_version, evidence=verdict.evidence, tasks=tasks, received_at=received_at,
                    decided_at=decided_at, reviews=reviews, correlation_id=correlation_id)


def review_notice(review: Review, change: str, text: str) -> Notify:
    """Tell a review's approvers that it was opened, approved, rejected or expired."""
    subject = f"Review {change}: {review.kind.value} of {review.model or '-'}:{review.version or '-'}"
    return Notify(channel="reviewers", event=f"review.{change}", subject=subject, text=text, review_id=review.id,
                  approvers=tuple(review.approvers) if change == "opened" else ())


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def _shallow_json(value: Any) -> dict[str, Any]:
    """A dataclass's fields as JSON values, without ``asdict``'s deep copies (this is on the hot path)."""
    return {f.name: _jsonable(getattr(value, f.name)) for f in fields(value)}


def _jsonable(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


# Sorted keys keep the JSON deterministic; records are converted by _json_default, not field by field.
_DUMPS_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS


def dumps(value: Any) -> str:
    """Compact, deterministic JSON of any ledger value (one pass: only what JSON lacks is converted)."""
    return orjson.dumps(value, default=_json_default, option=_DUMPS_OPTIONS).decode()


def loads(text: str | bytes) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:  # JSON written by earlier versions may hold NaN or Infinity
        return json.loads(text)


def _json_default(value: Any) -> Any:
    if isinstance(value, (Decision, Task)):  # plain records: the encoder converts their fields as it goes
        return vars(value)
    if hasattr(value, "to_json"):
        return value.to_json()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    return str(value)

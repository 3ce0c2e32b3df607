"""Record a verdict exactly once per idempotency key, and invalid payloads as ``invalid`` decisions.

This is the one path by which every intake use case writes to the ledger: claim the key
(INPROGRESS with a lease), decide, then complete the claim together with the decision and its
tasks; or, for cheap decisions with no effect of their own, decide first and write the completed
claim with the decision. A redelivery of a completed key is recorded as a ``duplicate`` and
dispatches nothing; a failure releases the claim so the host's retry can decide at once.
"""
from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import replace
from datetime import datetime
from typing import Any

from controlplane.domain.errors import ControlPlaneError, InvalidEvent
from controlplane.domain.ledger import Decision, Outcome, Source, Verdict, digest, dumps, record
from controlplane.parsing.fields import MAX_INT, MAX_NAME_CHARS, MAX_STORED_CHARS, MIN_INT, clip
from controlplane.ports import telemetry
from controlplane.ports.store import Services

logger = logging.getLogger(__name__)


def own_decision(services: Services, verdict: Verdict, *, key: str, event_id: str, event_type: str,
                 correlation_id: str) -> Decision:
    """A decision the control plane takes about its own state (a vote, an expiry, a rollout step), stamped now
    with the policy in force, under the correlation id of what it follows from. The caller writes it with the state
    change it records, in one guarded update, and hands it to ``recorded``."""
    now = services.clock.now()
    return record(verdict, key=key, event_id=event_id, source=Source.CONTROLPLANE, event_type=event_type,
                  policy_version=services.policy.version, received_at=now, decided_at=now,
                  publish=services.publish_decisions, correlation_id=correlation_id,
                  traceparent=telemetry.traceparent())


def decide_once(services: Services, *, key: str, event_id: str, source: Source, event_type: str,
                model: str | None, version: str | None, received_at: datetime,
                decide: Callable[[], Verdict], claim_first: bool = True, correlation_id: str = "") -> Decision:
    """Claim ``key``, run ``decide`` and record its verdict, or record a ``duplicate``; in a span of its own, counted.

    ``claim_first=False`` is for decisions that are cheap and do nothing until recorded: decide, then
    write the completed claim with the decision in one go (one write instead of two). A redelivery
    decides again and its write, finding the first decision, records the ``duplicate`` instead; so do
    two instances deciding the same key at once. ``correlation_id`` is that of the decision this one follows
    from, if any.
    """
    started = time.perf_counter()
    with telemetry.span("decision", idempotency_key=key, event_id=event_id, event_type=event_type, model=model,
                        source=source.value):
        decision = _decide_once(services, key=key, event_id=event_id, source=source, event_type=event_type,
                                model=model, version=version, received_at=received_at, decide=decide,
                                claim_first=claim_first, correlation_id=correlation_id)
        telemetry.instruments().intake_duration.record(time.perf_counter() - started, {"source": source.value})
        return decision


def _decide_once(services: Services, *, key: str, event_id: str, source: Source, event_type: str,
                 model: str | None, version: str | None, received_at: datetime, decide: Callable[[], Verdict],
                 claim_first: bool, correlation_id: str) -> Decision:
    cut: dict[str, Any] = {}
    key = key if len(key) <= MAX_NAME_CHARS else f"{key[:MAX_NAME_CHARS - 33]}#{digest(key)}"
    event_id, event_type = _name(event_id, "event_id", cut), _name(event_type, "event_type", cut)
    model, version = _name(model, "model", cut), _name(version, "version", cut)
    store, partition = services.store, model or "_"
    stamp = dict(key=key, event_id=event_id, source=source, event_type=event_type,
                 policy_version=services.policy.version, received_at=received_at, correlation_id=correlation_id,
                 traceparent=telemetry.traceparent())

    def bounded() -> Verdict:
        return bounded_verdict(decide(), dict(cut))

    if not claim_first:
        decision = record(bounded(), **stamp, decided_at=services.clock.now(), publish=services.publish_decisions)
        original = store.complete_unclaimed(key, partition, decision)
        return recorded(decision) if original is None else _duplicate(services, stamp, original, model, version)
    claim = store.claim(key, partition, services.clock.now(), services.lease)
    if claim.is_duplicate:
        return _duplicate(services, stamp, claim.original, model, version)
    if claim.taken_over:
        telemetry.instruments().lease_takeovers.add(1)
    try:
        verdict = bounded()
        decision = record(verdict, **stamp, decided_at=services.clock.now(), publish=services.publish_decisions)
        store.complete(claim, decision)
    except BaseException:
        with suppress(ControlPlaneError):
            store.release(claim)
        raise
    return recorded(decision)


def _duplicate(services: Services, stamp: dict, original: str, model: str | None, version: str | None) -> Decision:
    """A redelivery of a decided key: recorded under an attempt id of its own, dispatching nothing."""
    verdict = Verdict(Outcome.DUPLICATE, f"already decided as {original}; nothing dispatched",
                      model=model, version=version, evidence={"duplicate_of": original})
    decision = record(verdict, **stamp, decided_at=services.clock.now(), attempt=uuid.uuid4().hex)
    services.store.append(decision)
    return recorded(decision)


def record_invalid(services: Services, *, source: Source, payload: bytes, error: InvalidEvent,
                   event_id: str = "", event_type: str = "", key: str = "") -> Decision:
    """Keep a payload that broke its contract, with the field and reason, instead of losing it.

    ``key`` is the payload's idempotency key when its position is known (telemetry); otherwise the
    payload's hash stands in, so a redelivered bad payload is a ``duplicate``.
    """
    now = services.clock.now()
    verdict = Verdict(
        Outcome.INVALID,
        f"{error.subject}: {error.reason}",
        evidence={"field": error.subject, "error": error.reason, "payload_bytes": len(payload),
                  "payload_sha256": hashlib.sha256(payload).hexdigest(),
                  "payload": payload[:MAX_STORED_CHARS].decode("utf-8", "replace")},
    )
    key = key or f"invalid:{source.value}:{digest(payload.decode('latin-1'))}"
    return decide_once(services, key=key, event_id=event_id,
                       source=source, event_type=event_type or "invalid", model=None, version=None,
                       received_at=now, decide=lambda: verdict, claim_first=False)


def bounded_verdict(verdict: Verdict, cut: dict[str, Any]) -> Verdict:
    """The verdict as it may be stored: every text of its reason, model, version and evidence cut to its
    limit, lone surrogates escaped, integers past 64 bits kept as text. What was cut is listed in the
    evidence's ``truncated``, by path, with its original length and SHA-256."""
    evidence = _bounded(verdict.evidence, "evidence", cut)
    reason = _text(verdict.reason, "reason", MAX_STORED_CHARS, cut)
    model, version = _name(verdict.model, "model", cut), _name(verdict.version, "version", cut)
    if cut:
        evidence = {**evidence, "truncated": cut}
    if cut or evidence is not verdict.evidence:
        return replace(verdict, reason=reason, model=model, version=version, evidence=evidence)
    return verdict


def _bounded(value: Any, path: str, cut: dict[str, Any]) -> Any:
    """``value`` with every string bounded; the same object when nothing had to change."""
    if isinstance(value, str):
        return _text(value, path, MAX_STORED_CHARS, cut)
    if isinstance(value, Mapping):
        items = {_text(str(k), f"{path}.<key>", MAX_NAME_CHARS, cut): _bounded(v, f"{path}.{clip(str(k), 64)}", cut)
                 for k, v in value.items()}
        same = len(items) == len(value) and all(k in value and value[k] is v for k, v in items.items())
        return value if same else items
    if isinstance(value, (list, tuple)):
        items = [_bounded(v, f"{path}[{i}]", cut) for i, v in enumerate(value)]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    if isinstance(value, int) and not isinstance(value, bool) and not MIN_INT <= value <= MAX_INT:
        cut[path] = {"bits": value.bit_length()}
        return f"{value:.6e}" if value.bit_length() < 1000 else "out-of-range integer"
    return value


def _text(text: str, path: str, limit: int, cut: dict[str, Any]) -> str:
    stored = clip(text, limit)
    if len(stored) < len(text):
        cut[path] = {"chars": len(text), "sha256": hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()}
    return stored


def _name(text: str | None, path: str, cut: dict[str, Any]) -> str | None:
    return None if text is None else _text(text, path, MAX_NAME_CHARS, cut)


def recorded(decision: Decision) -> Decision:
    """A decision written: counted, put on the current span, and logged as one JSON record. The record holds ids,
    names and the reason, never the evidence (it may quote a payload) nor anything from the settings."""
    fields = {"decision_id": decision.id, "correlation_id": decision.correlation_id, "event_id": decision.event_id,
              "idempotency_key": decision.idempotency_key, "source": decision.source.value,
              "event_type": decision.event_type, "outcome": decision.outcome.value, "model": decision.model,
              "version": decision.version, "policy_version": decision.policy_version,
              "tasks": [task.kind.value for task in decision.tasks], "reviews": len(decision.reviews),
              "reason": decision.reason}
    telemetry.instruments().decisions.add(1, {"source": decision.source.value, "outcome": decision.outcome.value})
    telemetry.annotate(decision_id=decision.id, correlation_id=decision.correlation_id,
                       outcome=decision.outcome.value)
    attributes = {f"controlplane.{key}": value for key, value in fields.items() if value is not None}
    logger.info("decision %s", dumps(fields), extra=attributes)
    return decision

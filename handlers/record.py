"""Record a verdict exactly once per idempotency key, and invalid payloads as ``invalid`` decisions.

This is the one path by which every intake use case writes to the ledger: claim the key
(INPROGRESS with a lease), decide, then complete the claim together with the decision and its
tasks; or, for cheap decisions with no effect of their own, decide first and write the completed
claim with the decision. A redelivery of a completed key is recorded as a ``duplicate`` and
dispatches nothing; a failure releases the claim so the host's retry can decide at once.
"""
from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from contextlib import suppress
from datetime import datetime

from controlplane.errors import ControlPlaneError, InvalidEvent
from controlplane.ledger import Decision, Outcome, Source, Verdict, digest, record
from controlplane.ports import Services

logger = logging.getLogger(__name__)

PAYLOAD_EXCERPT_BYTES = 4096


def decide_once(services: Services, *, key: str, event_id: str, source: Source, event_type: str,
                model: str | None, version: str | None, received_at: datetime,
                decide: Callable[[], Verdict], claim_first: bool = True) -> Decision:
    """Claim ``key``, run ``decide`` and record its verdict, or record a ``duplicate``.

    ``claim_first=False`` is for decisions that are cheap and do nothing until recorded: decide, then
    write the completed claim with the decision in one go (one write instead of two). A redelivery
    decides again and its write, finding the first decision, records the ``duplicate`` instead; so do
    two instances deciding the same key at once.
    """
    store, partition = services.store, model or "_"
    stamp = dict(key=key, event_id=event_id, source=source, event_type=event_type,
                 policy_version=services.policy.version, received_at=received_at)
    if not claim_first:
        decision = record(decide(), **stamp, decided_at=services.clock.now(), publish=services.publish_decisions)
        original = store.complete_unclaimed(key, partition, decision)
        return _logged(decision) if original is None else _duplicate(services, stamp, original, model, version)
    claim = store.claim(key, partition, services.clock.now(), services.lease)
    if claim.is_duplicate:
        return _duplicate(services, stamp, claim.original, model, version)
    try:
        verdict = decide()
        decision = record(verdict, **stamp, decided_at=services.clock.now(), publish=services.publish_decisions)
        store.complete(claim, decision)
    except BaseException:
        with suppress(ControlPlaneError):
            store.release(claim)
        raise
    return _logged(decision)


def _duplicate(services: Services, stamp: dict, original: str, model: str | None, version: str | None) -> Decision:
    """A redelivery of a decided key: recorded under an attempt id of its own, dispatching nothing."""
    verdict = Verdict(Outcome.DUPLICATE, f"already decided as {original}; nothing dispatched",
                      model=model, version=version, evidence={"duplicate_of": original})
    decision = record(verdict, **stamp, decided_at=services.clock.now(), attempt=uuid.uuid4().hex)
    services.store.append(decision)
    return _logged(decision)


def record_invalid(services: Services, *, source: Source, payload: bytes, error: InvalidEvent,
                   event_id: str = "", event_type: str = "", key: str = "") -> Decision:
    """Keep a payload that broke its contract, with the field and reason, instead of losing it.

    ``key`` is the payload's idempotency key when its position is known (telemetry); otherwise the
    payload's hash stands in, so a redelivered bad payload is a ``duplicate``.
    """
    now = services.clock.now()
    verdict = Verdict(
        Outcome.INVALID,
        f"{error.path}: {error.reason}",
        evidence={"field": error.path, "error": error.reason, "payload_bytes": len(payload),
                  "payload": payload[:PAYLOAD_EXCERPT_BYTES].decode("utf-8", "replace")},
    )
    key = key or f"invalid:{source.value}:{digest(payload.decode('latin-1'))}"
    return decide_once(services, key=key, event_id=event_id,
                       source=source, event_type=event_type or "invalid", model=None, version=None,
                       received_at=now, decide=lambda: verdict, claim_first=False)


def _logged(decision: Decision) -> Decision:
    logger.info(
        "decision %s outcome=%s model=%s version=%s event=%s tasks=%d reason=%s",
        decision.id, decision.outcome.value, decision.model, decision.version, decision.event_id,
        len(decision.tasks), decision.reason,
        extra={"custom_dimensions": {"correlation_id": decision.event_id, "decision_id": decision.id,
                                     "outcome": decision.outcome.value, "model": decision.model or "",
                                     "policy_version": decision.policy_version}},
    )
    return decision

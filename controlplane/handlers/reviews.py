"""The human gate: votes through signed single-use links, expiry, and what an approval opens.

Every state change of a review is written together with the decision recording it (and the tasks it
opens) in one conditional store update, so of two concurrent votes exactly one counts; the other
answers 409.
"""
from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import Any

from controlplane.domain.errors import (
    ReviewNotFound,
    TokenRequired,
    TransientError,
    VoteConflict,
    VoteError,
    VoteForbidden,
)
from controlplane.domain.ledger import Decision, Outcome, Verdict, review_notice
from controlplane.domain.requests import Request, SubmitPipeline, parse_request
from controlplane.domain.reviews import (
    Review,
    ReviewKind,
    ReviewState,
    approval_url,
    cast_vote,
    identity,
    verify_token,
)
from controlplane.domain.signals import Signals
from controlplane.handlers.record import own_decision, recorded
from controlplane.ports.store import Services

logger = logging.getLogger(__name__)

MAX_COMMENT = 2000


def get_review(services: Services, review_id: str) -> Review:
    review = services.store.review(review_id)
    if review is None:
        raise ReviewNotFound("id", f"no review {review_id[:64]!r}")
    return review


def review_signals(services: Services, review: Review) -> Signals | None:
    """An alert review's target signals as the outbox read and kept them; None until it has."""
    spec = review.evidence.get("signals")
    if not isinstance(spec, dict) or services.artifacts is None:
        return None
    try:
        kept = services.artifacts.load(spec["artifact"])
    except TransientError as error:  # the page shows the rest and says the signals are not there yet
        logger.warning("signals of review %s unreadable for now: %s", review.id, error)
        return None
    return Signals.from_json(json.loads(kept)) if kept else None


def approval_link(services: Services, review_id: str, approver: str) -> str:
    """The approver's own link to the review page, carrying a signed single-use token."""
    return approval_url(services.approval_key, services.public_url, get_review(services, review_id), approver)


def vote(services: Services, review_id: str, *, token: str, decision: str, comment: str = "",
         principal: str | None = None) -> tuple[Review, Decision]:
    """Count one vote; raises ``VoteError`` (a subclass saying why) when it must not count."""
    if not token:
        raise TokenRequired("token", "an approval token is required")
    if len(comment) > MAX_COMMENT:
        raise VoteError("comment", f"comment is longer than {MAX_COMMENT} characters")
    now = services.clock.now()
    claims = verify_token(services.approval_key, token, review_id, now)
    if principal is not None and identity(principal) != identity(claims.approver):
        raise VoteForbidden("token", f"signed-in user {principal} is not the approver this link was issued to")
    current = get_review(services, review_id)
    updated = cast_vote(current, approver=claims.approver, decision=decision, comment=comment, nonce=claims.nonce,
                        now=now)
    decision = _record_change(services, current, updated, voter=claims.approver, comment=comment)
    if not services.store.update_review(current, updated, decision):
        raise VoteConflict("review", "the review changed while this vote was cast; reload and try again")
    recorded(decision)
    logger.info("review %s vote by %s: %s -> %s", review_id, claims.approver, decision, updated.state.value)
    return updated, decision


def expire_reviews(services: Services) -> list[Review]:
    """Close open reviews whose time is up; each becomes ``expired`` and its approvers are told."""
    now = services.clock.now()
    expired = []
    for review in services.store.reviews(ReviewState.OPEN, limit=500):
        if review.expires_at > now:
            continue
        updated = replace(review, state=ReviewState.EXPIRED, revision=review.revision + 1)
        decision = _record_change(services, review, updated)
        if services.store.update_review(review, updated, decision):
            recorded(decision)
            expired.append(updated)
    return expired


def _record_change(services: Services, before: Review, after: Review, voter: str = "",
                   comment: str = "") -> Decision:
    """The decision a review's change makes: a vote, an approval (opening what it gates), a
    rejection or an expiry."""
    label = f"{before.kind.value} review of {after.model or '-'}:{after.version or '-'}"
    evidence: dict[str, Any] = {"review_id": after.id, "state": after.state.value, "voter": voter,
                                "comment": comment, "votes": len(after.votes), "quorum": after.quorum}
    tasks: list[Request] = []
    if after.state is ReviewState.APPROVED:
        approvers = sorted(after.approvals)
        outcome = Outcome.PROMOTE if after.kind is ReviewKind.PROMOTION and after.on_approval else Outcome.NO_ACTION
        reason = f"{label} approved by {', '.join(approvers)}"
        if after.kind is ReviewKind.DRIFT:
            reason += ": the labelled data goes back to model development"
        if after.on_approval:
            opened = parse_request(after.on_approval)
            tasks.append(opened)
            if isinstance(opened, SubmitPipeline):
                outcome, reason = Outcome.RETRAIN, f"{reason}; retraining {opened.name} opened with it"
            else:
                reason += f"; {getattr(opened, 'stage', 'next')} promotion opened"
    elif after.state is ReviewState.REJECTED:
        outcome, reason = Outcome.REJECT, f"{label} rejected by {voter}" + (f": {comment}" if comment else "")
    elif after.state is ReviewState.EXPIRED:
        outcome, reason = Outcome.NOTIFY, f"{label} expired with {len(after.approvals)} of {after.quorum} approvals"
    else:
        outcome = Outcome.NO_ACTION
        reason = f"{label}: {voter} approved ({len(after.approvals)} of {after.quorum})"
    if after.state is not ReviewState.OPEN:
        tasks.append(review_notice(after, after.state.value, reason))
    verdict = Verdict(outcome, reason, model=after.model, version=after.version, evidence=evidence,
                      tasks=tuple(tasks))
    return own_decision(services, verdict, key=f"review:{after.id}:{after.revision}", event_id=after.id,
                        event_type=f"review.{after.state.value if after.state is not ReviewState.OPEN else 'vote'}",
                        correlation_id=after.correlation_id)

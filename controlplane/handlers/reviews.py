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
    NotFound,
    PermanentError,
    ReviewNotFound,
    TokenRequired,
    TransientError,
    VoteConflict,
    VoteError,
    VoteForbidden,
)
from controlplane.domain.ledger import Decision, Outcome, Verdict, review_notice
from controlplane.domain.promotion import test_stage_of
from controlplane.domain.requests import DeployBatch, DeployModel, Request, SubmitPipeline, parse_request
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


def promotion_context(services: Services, review: Review) -> dict[str, Any] | None:
    """What a promotion review's page needs besides its evidence, read when the page is asked for: the staging
    deployment's live state, the endpoint's rollout policy (online) and the resource id of each workspace on the
    route, for studio links. None for other reviews, and for rollbacks (their page shows the rollout's health)."""
    evidence = review.evidence
    if review.kind is not ReviewKind.PROMOTION or "rollout" in evidence:
        return None
    route, staging, test = (evidence.get(key) or {} for key in ("route", "staging", "test_stage"))
    staged_in = staging.get("environment") if "environment" in staging else route.get("staging")
    endpoint = staging.get("endpoint") or evidence.get("endpoint")
    online = staging.get("target", "online") == "online"
    roles = {"source": route.get("source"), "staging": staged_in, "production": route.get("production"),
             "test": test.get("environment") if "environment" in test else staged_in}
    ids = {environment: _workspace_id(services, environment) for environment in set(roles.values())}
    context: dict[str, Any] = {
        "plan": services.policy.rollout_for(endpoint).model_dump() if endpoint and online else None,
        "workspaces": {role: ids[environment] for role, environment in roles.items()}}
    if staging.get("endpoint") and staging.get("deployment"):
        context["staging_state"] = _staging_state(services, staging, evidence.get("stage"))
    return context


def _staging_state(services: Services, staging: dict[str, Any], stage: str | None) -> dict[str, Any]:
    """The staging deployment as its workspace reports it now: ``found`` with its provisioning state and size,
    ``missing`` (not deployed yet, while staging awaits this review's approval; else not found) or ``unknown`` with
    why: a workspace that cannot be read must not keep an approver from the rest of the page."""
    environment = staging.get("environment")
    where = f"the {environment} workspace" if environment else "the home workspace"
    batch = staging.get("target") == "batch"
    try:
        gateway = services.gateway_in(environment)
        read = getattr(gateway, "get_batch_deployment" if batch else "get_deployment", None)
        if read is None:
            reason = (f"no Azure ML workspace is configured for {where}" if gateway is None
                      else f"{where} cannot be asked about {'batch ' if batch else ''}deployments")
            return {"state": "unknown", "reason": reason}
        info = read(staging["endpoint"], staging["deployment"])
    except NotFound:
        return {"state": "missing", "reason": "not deployed yet" if stage == "staging" else f"not found in {where}"}
    except (PermanentError, TransientError) as error:
        logger.warning("staging deployment %s/%s unreadable: %s", staging["endpoint"], staging["deployment"], error)
        return {"state": "unknown", "reason": str(error)}
    return {"state": "found", "provisioning_state": info.provisioning_state, "instance_type": info.instance_type,
            "instance_count": info.instance_count, "model": info.model, "error": info.error}


def _workspace_id(services: Services, environment: str | None) -> str | None:
    """The Azure resource id of an environment's workspace, when its gateway is a real workspace's."""
    try:
        gateway = services.gateway_in(environment)
    except (PermanentError, TransientError):
        return None
    parts = [getattr(gateway, name, None) for name in ("subscription_id", "resource_group", "workspace")]
    if not all(isinstance(part, str) and part for part in parts):
        return None
    subscription, group, workspace = parts
    return (f"/subscriptions/{subscription}/resourceGroups/{group}/providers/Microsoft.MachineLearningServices"
            f"/workspaces/{workspace}")


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
            stage = test_stage_of(opened) if isinstance(opened, DeployModel | DeployBatch) else None
            if stage is not None:  # gated CI: the test stage's deadline counts from this approval
                evidence["test_stage"] = stage
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

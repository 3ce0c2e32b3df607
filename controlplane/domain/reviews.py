"""Human reviews: the gate a person passes (production promotion) or the look a person takes
(drifted computer-vision or NLP data, infrastructure alerts), with the votes that decide it.

A review is written with the decision that opens it and changes state only through a conditional
update (its ``revision``), so concurrent votes cannot both win.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import unicodedata
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from controlplane.domain.errors import ConfigurationError, VoteConflict, VoteError, VoteForbidden


class ReviewKind(StrEnum):
    PROMOTION = "promotion"
    DRIFT = "drift"
    ALERT = "alert"
    OPERATION = "operation"  # an Azure ML operation failed or ran past its deadline


REVIEWERS_ONLY = ("report", "report_url")  # evidence shown only with a reviewer's token or the function key


class ReviewState(StrEnum):
    OPEN = "open"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"


def identity(name: str) -> str:
    """The form in which approvers, registrants and signed-in users are compared: Unicode NFKC
    (fullwidth and other compatibility letters become plain ones), then case-folded, with every
    whitespace and invisible format character (zero-width space, joiners, BOM) removed: no principal
    name contains them, so they can only disguise one."""
    text = unicodedata.normalize("NFKC", name).casefold()
    return "".join(c for c in text if not c.isspace() and unicodedata.category(c) != "Cf")


@dataclass(frozen=True)
class Vote:
    approver: str
    decision: str  # approve | reject
    comment: str
    at: datetime
    token: str  # the token's nonce: each token counts once


@dataclass(frozen=True)
class Review:
    id: str
    kind: ReviewKind
    state: ReviewState
    model: str | None
    version: str | None
    approvers: tuple[str, ...]
    quorum: int
    created_at: datetime
    expires_at: datetime
    decision_id: str
    evidence: Mapping[str, Any] = field(default_factory=dict)
    registrant: str = ""
    separation_of_duties: bool = True
    on_approval: Mapping[str, Any] = field(default_factory=dict)  # the task request approval opens
    votes: tuple[Vote, ...] = ()
    revision: int = 0
    correlation_id: str = ""  # the opening decision's (see ``Decision.correlation_id``)

    @property
    def approvals(self) -> set[str]:
        return {identity(vote.approver) for vote in self.votes if vote.decision == "approve"}

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}  # the evidence is JSON already: no deep copy
        data.update(kind=self.kind.value, state=self.state.value, approvers=list(self.approvers),
                    created_at=self.created_at.isoformat(), expires_at=self.expires_at.isoformat(),
                    votes=[{**asdict(v), "at": v.at.isoformat()} for v in self.votes])
        return data

    def public_json(self) -> dict[str, Any]:
        """The JSON anyone who knows the id may read: without what only reviewers may follow (the report)."""
        return {**self.to_json(), "evidence": {k: v for k, v in self.evidence.items() if k not in REVIEWERS_ONLY}}

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> Review:
        return Review(**{**data, "kind": ReviewKind(data["kind"]), "state": ReviewState(data["state"]),
                         "approvers": tuple(data["approvers"]),
                         "created_at": datetime.fromisoformat(data["created_at"]),
                         "expires_at": datetime.fromisoformat(data["expires_at"]),
                         "votes": tuple(Vote(**{**v, "at": datetime.fromisoformat(v["at"])}) for v in data["votes"]),
                         "correlation_id": data.get("correlation_id", data["decision_id"])})


def cast_vote(review: Review, *, approver: str, decision: str, comment: str, nonce: str, now: datetime) -> Review:
    """The review after one vote, or ``VoteError`` saying why the vote does not count."""
    if review.state is not ReviewState.OPEN:
        raise VoteConflict("review", f"review is {review.state.value}")
    if now >= review.expires_at:
        raise VoteConflict("review", "review has expired")
    if decision not in ("approve", "reject"):
        raise VoteError("decision", f"decision must be 'approve' or 'reject', got {decision!r}")
    who = identity(approver)
    if who not in {identity(a) for a in review.approvers}:
        raise VoteForbidden("token", f"{approver} is not an approver of this review")
    if (decision == "approve" and review.separation_of_duties and review.registrant
            and who == identity(review.registrant)):
        raise VoteForbidden("token", f"{approver} registered this model and may not approve it (separation of duties)")
    if any(vote.token == nonce for vote in review.votes):
        raise VoteConflict("review", "this approval link was used already")
    if any(identity(vote.approver) == who for vote in review.votes):
        raise VoteConflict("review", f"{approver} has voted already")
    votes = review.votes + (Vote(approver=approver, decision=decision, comment=comment, at=now, token=nonce),)
    state = ReviewState.OPEN
    if decision == "reject":
        state = ReviewState.REJECTED  # one reject closes the review
    elif len({identity(v.approver) for v in votes if v.decision == "approve"}) >= review.quorum:
        state = ReviewState.APPROVED
    return replace(review, votes=votes, state=state, revision=review.revision + 1)


# -- approval links -------------------------------------------------------------------------------
SCOPE = "review:vote"
MAX_TOKEN = 1024


@dataclass(frozen=True)
class ApprovalToken:
    review_id: str
    approver: str
    scope: str
    expires: int  # epoch seconds
    nonce: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _require(key: bytes) -> None:
    if not key:
        raise ConfigurationError("APPROVAL_SIGNING_KEY", "not set: approval links can be neither issued nor checked")


def approval_url(key: bytes, public_url: str, review: Review, approver: str) -> str:
    """The approver's own link to the review page. The signed single-use token is in the fragment,
    which browsers never send: no server, proxy or access log sees it; the page posts it."""
    if identity(approver) not in {identity(a) for a in review.approvers}:
        raise VoteForbidden("token", f"{approver} is not an approver of review {review.id}")
    return f"{public_url.rstrip('/')}/api/reviews/{review.id}#token={sign_token(key, review, approver)}"


def sign_token(key: bytes, review: Review, approver: str) -> str:
    """An approver's single-use link token: HMAC-SHA256 over review, approver, scope and expiry."""
    _require(key)
    claims = {"r": review.id, "a": approver, "s": SCOPE, "e": int(review.expires_at.timestamp()),
              "n": secrets.token_hex(8)}
    payload = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    signature = _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())
    return f"{payload}.{signature}"


def verify_token(key: bytes, token: str, review_id: str, now: datetime) -> ApprovalToken:
    """The token's claims, or ``VoteForbidden`` for a forged, foreign, malformed or expired one."""
    _require(key)
    if not isinstance(token, str) or len(token) > MAX_TOKEN or not token.isascii():
        raise VoteForbidden("token", "malformed approval token")
    try:
        payload, signature = token.split(".")
    except ValueError:
        raise VoteForbidden("token", "malformed approval token") from None
    expected = _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        raise VoteForbidden("token", "approval token signature is not valid")
    try:
        claims = json.loads(_unb64(payload))
        parsed = ApprovalToken(review_id=str(claims["r"]), approver=str(claims["a"]), scope=str(claims["s"]),
                               expires=int(claims["e"]), nonce=str(claims["n"]))
    except (ValueError, KeyError, TypeError):
        raise VoteForbidden("token", "malformed approval token") from None
    if parsed.review_id != review_id or parsed.scope != SCOPE:
        raise VoteForbidden("token", "approval token is for another review")
    if now >= datetime.fromtimestamp(parsed.expires, UTC):
        raise VoteForbidden("token", "approval token has expired")
    return parsed

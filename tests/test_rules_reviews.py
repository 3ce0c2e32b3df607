"""The review rules as promised: who may vote, once, before the deadline, and what each change records."""
from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest

from controlplane.domain.errors import (
    ConfigurationError,
    ReviewNotFound,
    TokenRequired,
    VoteConflict,
    VoteError,
    VoteForbidden,
)
from controlplane.domain.ledger import Outcome
from controlplane.domain.reviews import (
    MAX_TOKEN,
    Review,
    ReviewKind,
    ReviewState,
    Vote,
    approval_url,
    cast_vote,
    identity,
    sign_token,
    verify_token,
)
from controlplane.handlers import reviews as handler
from controlplane.handlers.registry import receive_registry_event
from tests.fakes import FakeGateway
from tests.support import load_event

KEY = b"r" * 32
NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def review(**changes) -> Review:
    base = Review(id="rev-1", kind=ReviewKind.PROMOTION, state=ReviewState.OPEN, model="churn", version="4",
                  approvers=("ana@contoso.com", "bo@contoso.com", "Alice@Contoso.com"), quorum=2,
                  created_at=NOW, expires_at=NOW + timedelta(hours=1), decision_id="d-1",
                  registrant="Alice@Contoso.com")
    return replace(base, **changes)


def vote(r: Review, approver: str, decision: str = "approve", nonce: str = "n1", now: datetime = NOW,
         comment: str = "") -> Review:
    return cast_vote(r, approver=approver, decision=decision, comment=comment, nonce=nonce, now=now)


# ---- identity -----------------------------------------------------------------------------------------------------

def test_identity_folds_case_compatibility_letters_spaces_and_invisible_characters():
    assert identity("Ana@Contoso.COM") == "ana@contoso.com"
    assert identity("\uff21na@contoso.com") == "ana@contoso.com"  # fullwidth A
    assert identity(" ana@con\u200btoso.com\ufeff ") == "ana@contoso.com"  # spaces, zero-width space, BOM
    assert identity("ana @ contoso.com") == "ana@contoso.com"
    assert identity("ana@contoso.com") != identity("anna@contoso.com")


# ---- separation of duties -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("approver", ["alice@contoso.com", "ALICE@CONTOSO.COM", "Alice@Contoso.com"])
def test_the_registrant_may_not_approve_in_any_casing(approver):
    with pytest.raises(VoteForbidden, match="may not approve it \\(separation of duties\\)") as raised:
        vote(review(), approver)
    assert raised.value.subject == "token"


def test_the_registrant_may_reject_and_one_reject_closes_the_review():
    after = vote(review(), "alice@contoso.com", decision="reject", comment="not yet")
    assert after.state is ReviewState.REJECTED
    assert after.votes == (Vote("alice@contoso.com", "reject", "not yet", NOW, "n1"),)


def test_without_separation_of_duties_the_registrant_counts_like_any_approver():
    after = vote(review(separation_of_duties=False), "alice@contoso.com")
    assert after.state is ReviewState.OPEN and after.approvals == {"alice@contoso.com"}


def test_an_unknown_registrant_blocks_nobody():
    assert vote(review(registrant=""), "alice@contoso.com").approvals == {"alice@contoso.com"}


# ---- one vote per approver, one use per link ----------------------------------------------------------------------

def test_one_approver_voting_twice_with_two_links_counts_once():
    once = vote(review(), "ana@contoso.com", nonce="link-1")
    with pytest.raises(VoteConflict, match="ANA@contoso.com has voted already") as raised:
        vote(once, "ANA@contoso.com", nonce="link-2")
    assert raised.value.subject == "review"
    with pytest.raises(VoteConflict, match="voted already"):
        vote(once, "ana@contoso.com", decision="reject", nonce="link-3")


def test_a_link_counts_once_even_for_another_approver():
    once = vote(review(), "ana@contoso.com", nonce="link-1")
    with pytest.raises(VoteConflict, match="this approval link was used already") as raised:
        vote(once, "bo@contoso.com", nonce="link-1")
    assert raised.value.subject == "review"


def test_only_listed_approvers_vote_whatever_their_casing():
    assert vote(review(), "BO@contoso.com").approvals == {"bo@contoso.com"}
    with pytest.raises(VoteForbidden, match="mallory@contoso.com is not an approver of this review") as raised:
        vote(review(), "mallory@contoso.com")
    assert raised.value.subject == "token"


@pytest.mark.parametrize("decision", ["Approve", "yes", "", "approved"])
def test_a_decision_is_approve_or_reject_exactly(decision):
    with pytest.raises(VoteError, match="decision must be") as raised:
        vote(review(), "ana@contoso.com", decision=decision)
    assert type(raised.value) is VoteError and raised.value.subject == "decision"


@pytest.mark.parametrize("state", [ReviewState.APPROVED, ReviewState.REJECTED, ReviewState.EXPIRED])
def test_a_closed_review_takes_no_vote(state):
    with pytest.raises(VoteConflict, match=f"review is {state.value}") as raised:
        vote(review(state=state), "ana@contoso.com")
    assert raised.value.subject == "review"


# ---- expiry -------------------------------------------------------------------------------------------------------

def test_a_vote_at_exactly_the_expiry_time_does_not_count():
    r = review()
    with pytest.raises(VoteConflict, match="review has expired") as raised:
        vote(r, "ana@contoso.com", now=r.expires_at)
    assert raised.value.subject == "review"
    assert vote(r, "ana@contoso.com", now=r.expires_at - timedelta(microseconds=1)).votes


# ---- quorum -------------------------------------------------------------------------------------------------------

def test_quorum_counts_distinct_approvals_and_each_vote_bumps_the_revision():
    first = vote(review(), "ana@contoso.com", nonce="a", comment="ok")
    assert first.state is ReviewState.OPEN and first.revision == 1
    assert first.votes == (Vote("ana@contoso.com", "approve", "ok", NOW, "a"),)
    second = vote(first, "bo@contoso.com", nonce="b")
    assert second.state is ReviewState.APPROVED and second.revision == 2
    assert second.approvals == {"ana@contoso.com", "bo@contoso.com"}


def test_a_quorum_of_one_approves_at_the_first_approval():
    assert vote(review(quorum=1), "ana@contoso.com").state is ReviewState.APPROVED


def test_rejections_are_not_approvals():
    r = review(quorum=3, votes=(Vote("ana@contoso.com", "reject", "", NOW, "x"),))
    assert r.approvals == set()
    r = review(quorum=3, votes=(Vote("Ana@contoso.com", "approve", "", NOW, "x"),))
    assert r.approvals == {"ana@contoso.com"}


# ---- JSON ---------------------------------------------------------------------------------------------------------

def test_a_review_survives_json_and_the_public_form_hides_the_report():
    r = vote(review(evidence={"report": "r.html", "report_url": "https://x", "gates": [1]}), "ana@contoso.com")
    data = json.loads(json.dumps(r.to_json()))
    assert Review.from_json(data) == r
    assert data["kind"] == "promotion" and data["state"] == "open" and data["votes"][0]["at"] == NOW.isoformat()
    public = r.public_json()
    assert public["evidence"] == {"gates": [1]} and public["id"] == "rev-1"


# ---- approval links -----------------------------------------------------------------------------------------------

def test_a_signed_token_verifies_to_its_claims_until_the_review_expires():
    r = review()
    token = sign_token(KEY, r, "ana@contoso.com")
    claims = verify_token(KEY, token, r.id, NOW)
    assert (claims.review_id, claims.approver, claims.scope) == (r.id, "ana@contoso.com", "review:vote")
    assert claims.expires == int(r.expires_at.timestamp()) and len(claims.nonce) == 16
    assert sign_token(KEY, r, "ana@contoso.com") != token  # each link its own nonce
    assert "=" not in token and token.isascii()  # unpadded base64url: safe in a URL fragment
    assert verify_token(KEY, token, r.id, r.expires_at - timedelta(seconds=1)).nonce == claims.nonce
    with pytest.raises(VoteForbidden, match="approval token has expired") as raised:
        verify_token(KEY, token, r.id, r.expires_at)
    assert raised.value.subject == "token"


def test_a_token_is_refused_for_another_review_key_or_shape():
    r = review()
    token = sign_token(KEY, r, "ana@contoso.com")
    with pytest.raises(VoteForbidden, match="approval token is for another review") as raised:
        verify_token(KEY, token, "rev-2", NOW)
    assert raised.value.subject == "token"
    with pytest.raises(VoteForbidden, match="approval token signature is not valid") as raised:
        verify_token(b"s" * 32, token, r.id, NOW)
    assert raised.value.subject == "token"
    payload, signature = token.split(".")
    with pytest.raises(VoteForbidden, match="signature"):
        verify_token(KEY, f"{payload}.{signature[:-2]}", r.id, NOW)
    for bad in (payload, f"{token}.x", "é" + token, "a" * (MAX_TOKEN + 1), None):
        with pytest.raises(VoteForbidden, match="^token: malformed approval token$") as raised:
            verify_token(KEY, bad, r.id, NOW)
        assert raised.value.subject == "token"


def test_a_token_of_exactly_the_longest_length_is_read():
    token = sign_token(KEY, review(), "ana@contoso.com")
    assert len(token) <= MAX_TOKEN
    with pytest.raises(VoteForbidden, match="malformed"):
        verify_token(KEY, token + "A" * (MAX_TOKEN + 1 - len(token)), "rev-1", NOW)


def test_without_a_signing_key_no_link_is_issued_or_checked():
    with pytest.raises(ConfigurationError, match="not set: approval links can be neither issued nor checked"):
        sign_token(b"", review(), "ana@contoso.com")
    with pytest.raises(ConfigurationError):
        verify_token(b"", "a.b", "rev-1", NOW)


def test_an_approval_url_carries_the_token_in_its_fragment_and_only_for_approvers():
    url = approval_url(KEY, "https://cp.example/", review(), "Bo@Contoso.com")
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == "https://cp.example/api/reviews/rev-1"
    assert parts.query == "" and parts.fragment.startswith("token=")
    assert verify_token(KEY, parts.fragment.removeprefix("token="), "rev-1", NOW).approver == "Bo@Contoso.com"
    with pytest.raises(VoteForbidden, match="mallory@contoso.com is not an approver of review rev-1") as raised:
        approval_url(KEY, "https://cp.example", review(), "mallory@contoso.com")
    assert raised.value.subject == "token"


# ---- the use case: votes through links, expiry, what each change records -----------------------------------------

@pytest.fixture
def wired(services):
    return replace(services, approval_key=KEY, public_url="https://cp.example", gateway=FakeGateway())


def open_review(services, registrant="alice@contoso.com"):
    services.gateway.add_model("churn", "4", registered_by=registrant)
    event = json.loads(json.dumps(load_event("eg_model_registered_sdk.json")))
    event["data"].update(modelVersion="4", modelTags={"accuracy": "0.93", "auc": "0.88"})
    decision = receive_registry_event(services, event)
    assert decision.outcome is Outcome.REQUEST_APPROVAL, decision.reason
    return decision.reviews[0]


def token(services, review_id, approver):
    return urlsplit(handler.approval_link(services, review_id, approver)).fragment.removeprefix("token=")


def test_votes_record_who_voted_and_the_approval_opens_the_production_rollout(wired):
    r = open_review(wired)
    first, recorded = handler.vote(wired, r.id, token=token(wired, r.id, "ana@contoso.com"), decision="approve",
                                   comment="metrics ok")
    assert first.state is ReviewState.OPEN and recorded.outcome is Outcome.NO_ACTION
    assert recorded.event_type == "review.vote" and recorded.idempotency_key == f"review:{r.id}:1"
    assert "ana@contoso.com approved (1 of 2)" in recorded.reason and recorded.tasks == ()
    assert recorded.evidence == {"review_id": r.id, "state": "open", "voter": "ana@contoso.com",
                                 "comment": "metrics ok", "votes": 1, "quorum": 2}
    second, approved = handler.vote(wired, r.id, token=token(wired, r.id, "bo@contoso.com"), decision="approve")
    assert second.state is ReviewState.APPROVED and approved.outcome is Outcome.PROMOTE
    assert approved.event_type == "review.approved" and approved.idempotency_key == f"review:{r.id}:2"
    assert "approved by ana@contoso.com, bo@contoso.com" in approved.reason
    assert "production promotion opened" in approved.reason
    kinds = [t.kind.value for t in approved.tasks]
    assert kinds[0] == "rollout" and kinds[-1] == "notify"
    assert wired.store.review(r.id) == second


def test_a_rejection_records_the_voter_and_comment(wired):
    r = open_review(wired)
    after, recorded = handler.vote(wired, r.id, token=token(wired, r.id, "carla@contoso.com"), decision="reject",
                                   comment="drift last week")
    assert after.state is ReviewState.REJECTED and recorded.outcome is Outcome.REJECT
    assert recorded.reason.endswith("rejected by carla@contoso.com: drift last week")
    assert recorded.event_type == "review.rejected"
    assert [t.kind.value for t in recorded.tasks] == ["notify"]


def test_the_vote_checks_token_comment_and_signed_in_user_before_anything_counts(wired):
    r = open_review(wired)
    link = token(wired, r.id, "ana@contoso.com")
    with pytest.raises(TokenRequired):
        handler.vote(wired, r.id, token="", decision="approve")
    with pytest.raises(VoteError, match="longer than 2000") as raised:
        handler.vote(wired, r.id, token=link, decision="approve", comment="x" * 2001)
    assert raised.value.subject == "comment"
    with pytest.raises(VoteForbidden, match="not the approver"):
        handler.vote(wired, r.id, token=link, decision="approve", principal="bo@contoso.com")
    assert wired.store.review(r.id).votes == ()
    after, _ = handler.vote(wired, r.id, token=link, decision="approve", comment="x" * 2000,
                            principal=" ANA@contoso.com")
    assert after.approvals == {"ana@contoso.com"}


def test_a_vote_that_loses_a_concurrent_update_is_refused_not_dropped(wired, monkeypatch):
    r = open_review(wired)
    monkeypatch.setattr(wired.store, "update_review", lambda current, updated, decision: False)
    with pytest.raises(VoteConflict, match="changed while this vote was cast"):
        handler.vote(wired, r.id, token=token(wired, r.id, "ana@contoso.com"), decision="approve")


def test_an_unknown_review_is_404(wired):
    with pytest.raises(ReviewNotFound, match="no review") as raised:
        handler.get_review(wired, "nope")
    assert raised.value.subject == "id"


def test_a_review_expiring_later_does_not_hold_back_one_expiring_now(wired, clock):
    first = open_review(wired)
    clock.advance(hours=1)
    wired.gateway.add_model("churn", "5", registered_by="alice@contoso.com")
    event = json.loads(json.dumps(load_event("eg_model_registered_sdk.json")))
    event["id"] = "reg-5"
    event["data"].update(modelVersion="5", modelTags={"accuracy": "0.95", "auc": "0.9"})
    later = receive_registry_event(wired, event).reviews[0]
    assert [r.id for r in wired.store.reviews(ReviewState.OPEN)] == [later.id, first.id]  # newest first
    clock.moment = first.expires_at
    assert [r.id for r in handler.expire_reviews(wired)] == [first.id]
    assert wired.store.review(later.id).state is ReviewState.OPEN


def test_reviews_expire_at_exactly_their_expiry_time_and_not_before(wired, clock):
    r = open_review(wired)
    clock.moment = r.expires_at - timedelta(microseconds=1)
    assert handler.expire_reviews(wired) == []
    clock.moment = r.expires_at
    [expired] = handler.expire_reviews(wired)
    assert expired.state is ReviewState.EXPIRED and expired.revision == r.revision + 1
    assert wired.store.review(r.id) == expired
    recorded = wired.store.decisions(model="churn", limit=5)[0]
    assert recorded.outcome is Outcome.NOTIFY and recorded.event_type == "review.expired"
    assert recorded.reason.endswith("expired with 0 of 2 approvals")
    assert handler.expire_reviews(wired) == []


def test_the_review_label_reason_and_counts_follow_the_votes(wired, clock):
    r = open_review(wired)
    _, first = handler.vote(wired, r.id, token=token(wired, r.id, "ana@contoso.com"), decision="approve")
    assert first.reason == "promotion review of churn:4: ana@contoso.com approved (1 of 2)"
    clock.moment = r.expires_at
    [expired] = handler.expire_reviews(wired)
    recorded = wired.store.decisions(model="churn", limit=5)[0]
    assert recorded.reason == "promotion review of churn:4 expired with 1 of 2 approvals"
    assert recorded.evidence["votes"] == 1 and recorded.evidence["voter"] == ""
    assert [t.kind.value for t in recorded.tasks] == ["notify"]


def test_approving_a_review_that_gates_nothing_opens_nothing(wired):
    r = open_review(wired)
    bare = replace(wired.store.review(r.id), kind=ReviewKind.ALERT, on_approval={}, quorum=1, model=None,
                   version=None)
    decision = handler._record_change(wired, bare, cast_vote(bare, approver="ana@contoso.com", decision="approve",
                                                             comment="", nonce="n", now=NOW))
    assert decision.outcome is Outcome.NO_ACTION
    assert decision.reason == "alert review of -:- approved by ana@contoso.com"
    assert [t.kind.value for t in decision.tasks] == ["notify"] and decision.event_type == "review.approved"


class Artifacts:
    def __init__(self, kept=None, error=None):
        self.kept, self.error, self.asked = kept, error, []

    def load(self, name):
        self.asked.append(name)
        if self.error:
            raise self.error
        return self.kept


def test_an_alert_reviews_signals_are_read_from_the_artifact_the_outbox_kept(wired, caplog):
    from controlplane.domain.errors import StoreUnavailable
    from controlplane.domain.signals import Signals

    signals = Signals(summary="p95 up", series=(), source="log-analytics:w", start=NOW, end=NOW + timedelta(hours=1))
    r = review(evidence={"signals": {"artifact": "signals/rev-1.json"}})
    kept = Artifacts(json.dumps(signals.to_json()))
    assert handler.review_signals(replace(wired, artifacts=kept), r) == signals and kept.asked == ["signals/rev-1.json"]
    assert handler.review_signals(replace(wired, artifacts=Artifacts("")), r) is None
    down = Artifacts(error=StoreUnavailable("blob", "down"))
    with caplog.at_level("WARNING", logger=handler.__name__):
        assert handler.review_signals(replace(wired, artifacts=down), r) is None
    assert caplog.messages == [f"signals of review rev-1 unreadable for now: {StoreUnavailable('blob', 'down')}"]
    assert handler.review_signals(replace(wired, artifacts=None), r) is None
    assert handler.review_signals(replace(wired, artifacts=kept), review(evidence={"signals": "x"})) is None

"""The review use cases (votes, quorum, expiry, lookups) on the stores production runs: SQLite and Table
Storage (Azurite). Every change is one conditional write of the review with the decision recording it."""
from __future__ import annotations

import json
import threading
from dataclasses import replace
from datetime import timedelta

import pytest

from controlplane.domain.errors import ReviewNotFound, VoteConflict, VoteForbidden
from controlplane.domain.ledger import Outcome, TaskKind, TaskState
from controlplane.domain.reviews import ReviewState, sign_token
from controlplane.handlers.registry import receive_registry_event
from controlplane.handlers.reviews import approval_link, expire_reviews, get_review, vote
from tests.fakes import FakeGateway
from tests.support import load_event

KEY = b"s" * 32


@pytest.fixture(params=["sqlite", "tables"])
def wired(request, services, make_store):
    return replace(services, store=make_store(request.param), approval_key=KEY, public_url="https://cp.example",
                   gateway=FakeGateway())


def open_review(services, registrant="dan@contoso.com", version="4"):
    """A production promotion review of churn:<version> (quorum 2 of ana, bo and carla)."""
    services.gateway.add_model("churn", version, registered_by=registrant)
    event = json.loads(json.dumps(load_event("eg_model_registered_sdk.json")))
    event["id"] = f"reg-{version}"
    event["data"].update(modelVersion=version, modelTags={"accuracy": "0.93", "auc": "0.88"})
    decision = receive_registry_event(services, event)
    assert decision.outcome is Outcome.REQUEST_APPROVAL, decision.reason
    return decision.reviews[0]


def token(services, review, who):
    return approval_link(services, review.id, who).split("#token=", 1)[1]


def cast(services, review, who, decision="approve", comment=""):
    return vote(services, review.id, token=token(services, review, who), decision=decision, comment=comment)


def review_decisions(store):
    return sorted((d.event_type, d.outcome) for d in store.decisions(limit=100) if d.event_type.startswith("review."))


def test_a_quorum_approves_and_opens_the_rollout_with_every_change_recorded(wired):
    review = open_review(wired)
    assert get_review(wired, review.id) == review and wired.store.reviews(ReviewState.OPEN) == [review]

    first, counted = cast(wired, review, "ana@contoso.com", comment="metrics ok")
    assert first.state is ReviewState.OPEN and first.revision == 1 and counted.outcome is Outcome.NO_ACTION
    assert wired.store.review(review.id) == first

    approved, promoted = cast(wired, review, "bo@contoso.com")
    stored = wired.store.review(review.id)
    assert stored == approved and stored.state is ReviewState.APPROVED and stored.revision == 2
    assert [(v.approver, v.comment) for v in stored.votes] == [("ana@contoso.com", "metrics ok"),
                                                                ("bo@contoso.com", "")]
    assert promoted.outcome is Outcome.PROMOTE and "ana@contoso.com, bo@contoso.com" in promoted.reason
    assert wired.store.decision(promoted.id) == promoted
    [rollout] = [t for t in wired.store.tasks(limit=100) if t.kind is TaskKind.ROLLOUT]
    assert rollout.decision_id == promoted.id and rollout.state is TaskState.PENDING
    assert rollout.request["operation"] == "rollout.start" and rollout.request["stage"] == "production"
    assert review_decisions(wired.store) == [("review.approved", Outcome.PROMOTE), ("review.vote", Outcome.NO_ACTION)]
    assert wired.store.reviews(ReviewState.OPEN) == [] and wired.store.reviews(ReviewState.APPROVED) == [stored]


def test_one_reject_closes_the_review_and_opens_nothing(wired):
    review = open_review(wired)
    rejected, decision = cast(wired, review, "carla@contoso.com", "reject", "drift on age")
    assert wired.store.review(review.id).state is ReviewState.REJECTED == rejected.state
    assert decision.outcome is Outcome.REJECT and "drift on age" in decision.reason
    assert [t.kind for t in decision.tasks] == [TaskKind.NOTIFY]  # the approvers are told; nothing is promoted
    assert not any(t.kind is TaskKind.ROLLOUT for t in wired.store.tasks(limit=100))
    with pytest.raises(VoteConflict):
        cast(wired, review, "ana@contoso.com")
    assert wired.store.review(review.id) == rejected


def test_a_replayed_link_and_a_second_link_of_the_same_person_count_once(wired):
    review = open_review(wired)
    link = token(wired, review, "ana@contoso.com")
    counted, _ = vote(wired, review.id, token=link, decision="approve")
    with pytest.raises(VoteConflict) as replayed:
        vote(wired, review.id, token=link, decision="approve")
    assert "used already" in replayed.value.reason
    other_spelling = sign_token(KEY, review, " Ana@Contoso.com")  # a fresh, validly signed link for her
    with pytest.raises(VoteConflict) as again:
        vote(wired, review.id, token=other_spelling, decision="approve")
    assert "voted already" in again.value.reason
    assert wired.store.review(review.id) == counted and len(counted.votes) == 1
    assert review_decisions(wired.store) == [("review.vote", Outcome.NO_ACTION)]


def test_the_registrant_in_any_spelling_may_reject_but_not_approve(wired):
    review = open_review(wired, registrant="ANA@contoso.com ")
    with pytest.raises(VoteForbidden) as refused:
        cast(wired, review, "ana@contoso.com")
    assert "separation of duties" in refused.value.reason
    assert wired.store.review(review.id) == review
    rejected, decision = cast(wired, review, "ana@contoso.com", "reject", "I found a leak")
    assert rejected.state is ReviewState.REJECTED and decision.outcome is Outcome.REJECT


def test_a_review_expires_at_exactly_its_expiry_time_and_only_once(wired):
    review = open_review(wired)
    cast(wired, review, "ana@contoso.com")
    wired.clock.moment = review.expires_at - timedelta(seconds=1)
    assert expire_reviews(wired) == [] and wired.store.review(review.id).state is ReviewState.OPEN

    wired.clock.moment = review.expires_at
    [expired] = expire_reviews(wired)
    assert expired.id == review.id and expired.state is ReviewState.EXPIRED and expired.revision == 2
    assert wired.store.review(review.id) == expired
    [notice] = [d for d in wired.store.decisions(limit=100) if d.event_type == "review.expired"]
    assert notice.outcome is Outcome.NOTIFY and "1 of 2 approvals" in notice.reason
    assert any(t.request.get("event") == "review.expired" for t in notice.tasks)
    with pytest.raises(VoteForbidden) as late:
        vote(wired, review.id, token=sign_token(KEY, review, "bo@contoso.com"), decision="approve")
    assert "expired" in late.value.reason
    wired.clock.advance(hours=1)
    assert expire_reviews(wired) == [] and wired.store.review(review.id) == expired


def test_unknown_reviews_and_unlisted_approvers_are_refused(wired):
    review = open_review(wired)
    with pytest.raises(ReviewNotFound) as missing:
        get_review(wired, "0" * 24)
    assert missing.value.subject == "id"
    with pytest.raises(VoteForbidden):
        approval_link(wired, review.id, "mallory@contoso.com")
    with pytest.raises(VoteForbidden):
        vote(wired, review.id, token=sign_token(KEY, review, "mallory@contoso.com"), decision="approve")
    assert wired.store.review(review.id) == review


def test_a_vote_racing_the_expiry_sweep_either_counts_or_is_refused(wired, monkeypatch):
    review = open_review(wired)
    link = token(wired, review, "ana@contoso.com")
    wired.clock.moment = review.expires_at - timedelta(seconds=1)
    sweep_services = replace(wired, clock=type(wired.clock)(review.expires_at))  # the sweep's clock has passed it
    both_read, real_update, outcomes = threading.Barrier(2), type(wired.store).update_review, {}

    def update_after_both_read(self, *args):
        both_read.wait(timeout=30)
        return real_update(self, *args)

    monkeypatch.setattr(type(wired.store), "update_review", update_after_both_read)

    def cast_vote():
        try:
            outcomes["vote"] = vote(wired, review.id, token=link, decision="approve")[0]
        except VoteConflict:
            outcomes["vote"] = "conflict"

    def sweep():
        outcomes["sweep"] = expire_reviews(sweep_services)

    threads = [threading.Thread(target=cast_vote), threading.Thread(target=sweep)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    final = wired.store.review(review.id)
    assert final.revision == 1  # exactly one of the two changes was written
    if outcomes["vote"] == "conflict":
        assert outcomes["sweep"] == [final] and final.state is ReviewState.EXPIRED and final.votes == ()
    else:
        assert outcomes["sweep"] == [] and outcomes["vote"] == final and len(final.votes) == 1

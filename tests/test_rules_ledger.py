"""The ledger's rules as promised: ids derived from the idempotency key, one authoritative decision per key, every
opened review announced, the decision published when asked, and records that survive JSON unchanged."""
from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

from controlplane.domain.ledger import (
    Decision,
    Outcome,
    ReviewDraft,
    Source,
    Task,
    TaskState,
    Verdict,
    digest,
    dumps,
    loads,
    record,
    review_notice,
)
from controlplane.domain.requests import Notify, PublishDecision, TaskKind, correlated
from controlplane.domain.reviews import ReviewKind, ReviewState

RECEIVED = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
DECIDED = RECEIVED + timedelta(seconds=2)
DRAFT = ReviewDraft(kind=ReviewKind.PROMOTION, approvers=("ana@contoso.com", "bo@contoso.com"), quorum=2,
                    ttl=timedelta(hours=72), evidence={"gates": []}, registrant="alice@contoso.com")


def decide(verdict: Verdict, key: str = "eg:evt-1", attempt: str = "", publish: bool = False) -> Decision:
    return record(verdict, key=key, event_id="evt-1", source=Source.EVENTGRID, event_type="ModelRegistered",
                  policy_version="p7", received_at=RECEIVED, decided_at=DECIDED, attempt=attempt, publish=publish)


def test_digest_is_a_stable_prefix_of_the_sha256_of_the_separated_parts():
    assert digest("a", "b") == digest("a", "b") != digest("ab") != digest("a", "b", length=16)
    assert len(digest("a")) == 32 and len(digest("a", length=12)) == 12
    assert digest("a", "b", length=64).startswith(digest("a", "b"))


def test_a_decision_carries_the_verdict_and_where_it_came_from():
    d = decide(Verdict(Outcome.REJECT, "accuracy too low", model="churn", version="4", evidence={"a": 1}))
    assert d.id == digest("eg:evt-1", "", length=24) and d.idempotency_key == "eg:evt-1" and d.event_id == "evt-1"
    assert (d.source, d.event_type, d.policy_version) == (Source.EVENTGRID, "ModelRegistered", "p7")
    assert (d.model, d.version, d.outcome, d.reason, d.evidence) == ("churn", "4", Outcome.REJECT,
                                                                     "accuracy too low", {"a": 1})
    assert (d.received_at, d.decided_at, d.tasks, d.reviews) == (RECEIVED, DECIDED, (), ())


def test_the_same_key_gives_the_same_ids_and_an_attempt_gives_new_ones():
    verdict = Verdict(Outcome.REQUEST_APPROVAL, "r", model="churn", reviews=(DRAFT,))
    first, again = decide(verdict), decide(verdict)
    assert first.id == again.id and first.reviews[0].id == again.reviews[0].id
    assert [t.id for t in first.tasks] == [t.id for t in again.tasks]
    duplicate = decide(verdict, attempt="2")
    assert duplicate.id != first.id and duplicate.reviews[0].id != first.reviews[0].id
    assert decide(verdict, key="eg:evt-2").id != first.id


def test_a_review_opens_with_its_draft_its_expiry_and_an_announcement_to_its_approvers():
    d = decide(Verdict(Outcome.REQUEST_APPROVAL, "gates passed", model="churn", version="4", reviews=(DRAFT,)))
    [review] = d.reviews
    assert review.id == digest(d.id, "review", "0", length=24) and review.decision_id == d.id
    assert (review.kind, review.state, review.model, review.version) == (ReviewKind.PROMOTION, ReviewState.OPEN,
                                                                         "churn", "4")
    assert (review.approvers, review.quorum, review.registrant) == (DRAFT.approvers, 2, "alice@contoso.com")
    assert review.created_at == DECIDED and review.expires_at == DECIDED + timedelta(hours=72)
    assert review.evidence == {"gates": []} and review.separation_of_duties and review.on_approval == {}
    [notice] = d.tasks
    assert notice.kind is TaskKind.NOTIFY
    assert notice.request == correlated(review_notice(review, "opened", "gates passed"), d.id)
    assert review.correlation_id == d.correlation_id == d.id
    assert notice.id == digest(d.id, "0", "notify", length=24)
    assert (notice.decision_id, notice.idempotency_key, notice.model) == (d.id, "eg:evt-1", "churn")
    assert (notice.created_at, notice.due_at, notice.state, notice.attempts) == (DECIDED, DECIDED,
                                                                                 TaskState.PENDING, 0)


def test_a_secret_makes_the_review_id_unguessable_from_the_key():
    plain = decide(Verdict(Outcome.REVIEW, "r", reviews=(DRAFT,))).reviews[0]
    secret = decide(Verdict(Outcome.REVIEW, "r", reviews=(ReviewDraft(**{**vars(DRAFT), "secret": "s3"}),)))
    assert secret.reviews[0].id == digest(secret.id, "review", "0", "s3", length=24) != plain.id


def test_the_verdicts_tasks_come_first_in_order_then_announcements_then_the_publication():
    ask = Notify(channel="ops", event="x", subject="s", text="t")
    d = decide(Verdict(Outcome.REQUEST_APPROVAL, "why", model=None, version="4", tasks=(ask,), reviews=(DRAFT,)),
               publish=True)
    assert [t.kind for t in d.tasks] == [TaskKind.NOTIFY, TaskKind.NOTIFY, TaskKind.PUBLISH]
    assert d.tasks[0].request == correlated(ask, d.id) and d.tasks[1].request["review_id"] == d.reviews[0].id
    assert len({t.id for t in d.tasks}) == 3
    publication = PublishDecision(subject="models/-", data={
        "decision_id": d.id, "event_id": "evt-1", "event_type": "ModelRegistered", "outcome": "request_approval",
        "reason": "why", "model": None, "version": "4", "policy_version": "p7", "correlation_id": d.id})
    assert d.tasks[2].request == correlated(publication, d.id) and d.tasks[2].target == publication.target
    assert [t.kind for t in decide(Verdict(Outcome.NO_ACTION, "n"), publish=False).tasks] == []


def test_a_notice_names_the_change_and_only_an_opening_lists_the_approvers():
    review = decide(Verdict(Outcome.REVIEW, "r", model="churn", version="4", reviews=(DRAFT,))).reviews[0]
    opened = review_notice(review, "opened", "text").to_json()
    assert opened["subject"] == "Review opened: promotion of churn:4" and opened["event"] == "review.opened"
    assert list(opened["approvers"]) == ["ana@contoso.com", "bo@contoso.com"] and opened["text"] == "text"
    assert opened["review_id"] == review.id and opened["channel"] == "reviewers"
    closed = review_notice(review, "approved", "done").to_json()
    assert list(closed["approvers"]) == [] and closed["subject"] == "Review approved: promotion of churn:4"
    anonymous = decide(Verdict(Outcome.REVIEW, "r", reviews=(DRAFT,))).reviews[0]
    assert review_notice(anonymous, "expired", "").to_json()["subject"] == "Review expired: promotion of -:-"


def test_a_decision_and_its_tasks_survive_json():
    d = decide(Verdict(Outcome.REQUEST_APPROVAL, "r", model="churn", version="4", evidence={"n": [1, 2]},
                       reviews=(DRAFT,)), publish=True)
    data = json.loads(dumps(d.to_json()))
    assert Decision.from_json(data) == d
    task = d.tasks[0]
    assert Task.from_json(json.loads(dumps(task.to_json()))) == task
    assert task.to_json()["kind"] == "notify" and task.to_json()["created_at"] == DECIDED.isoformat()
    assert Task.from_json({**task.to_json(), "updated_at": None}).updated_at is None


def test_ledger_json_is_compact_sorted_and_reads_what_earlier_versions_wrote():
    assert dumps({"b": 1, "a": [RECEIVED, Outcome.PROMOTE, {3, 1, 2}, ReviewKind.DRIFT]}) == (
        '{"a":["2026-11-22T10:00:00+00:00","promote",[1,2,3],"drift"],"b":1}')
    assert dumps({1: "x"}) == '{"1":"x"}' and dumps(timedelta(seconds=1)) == '"0:00:01"'
    d = decide(Verdict(Outcome.NO_ACTION, "n"))
    assert json.loads(dumps(d))["id"] == d.id and json.loads(dumps(d))["outcome"] == "no_action"
    assert loads('{"a": 1}') == {"a": 1} and loads(b"[1]") == [1]
    assert math.isnan(loads('{"p": NaN}')["p"]) and loads('[Infinity]') == [math.inf]

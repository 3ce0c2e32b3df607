"""The human gate over HTTP: approval links, votes, quorum, expiry, and every way a vote must fail."""
from __future__ import annotations

import json
import threading
from dataclasses import replace
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import azure.functions as func
import pytest

from controlplane import bootstrap
from controlplane.domain.ledger import Outcome, TaskKind, TaskState
from controlplane.domain.reviews import ReviewState, sign_token
from controlplane.handlers.registry import receive_registry_event
from controlplane.handlers.reviews import approval_link
from controlplane.handlers.sweep import sweep
from tests.fakes import FakeGateway
from tests.support import load_event

KEY = b"k" * 32


@pytest.fixture
def wired(services):
    services = replace(services, approval_key=KEY, public_url="https://cp.example", gateway=FakeGateway())
    bootstrap.reset(services)
    yield services
    bootstrap.reset()


def open_review(services, version="4", registrant="alice@contoso.com", **tags):
    """A promotion review of churn:<version>, registered in the workspace by ``registrant``."""
    services.gateway.add_model("churn", version, registered_by=registrant)
    event = json.loads(json.dumps(load_event("eg_model_registered_sdk.json")))
    event["id"] = f"reg-{version}"
    event["data"].update(modelVersion=version, modelTags={"accuracy": "0.93", "auc": "0.88", **tags})
    decision = receive_registry_event(services, event)
    assert decision.outcome is Outcome.REQUEST_APPROVAL, decision.reason
    return decision.reviews[0]


def token_of(link):
    """The token of an approval link: in its fragment, which browsers never send."""
    assert urlsplit(link).query == ""
    return parse_qs(urlsplit(link).fragment)["token"][0]


def open_page(fn, review_id, token, accept="text/html"):
    """The approver's page, as the review page's script posts the link's token."""
    return fn["review"](func.HttpRequest("POST", f"/api/reviews/{review_id}", body=f"token={token}".encode(),
                                         route_params={"id": review_id},
                                         headers={"Content-Type": "application/x-www-form-urlencoded",
                                                  "Accept": accept}))


def post_vote(fn, review_id, body, content_type="application/json", headers=None):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = func.HttpRequest("POST", f"/api/reviews/{review_id}/decision", body=data,
                           headers={"Content-Type": content_type, **(headers or {})},
                           route_params={"id": review_id})
    return fn["review_decision"](req)


def status_and_review(fn, wired, review_id, body, **kwargs):
    before = wired.store.review(review_id)
    reply = post_vote(fn, review_id, body, **kwargs)
    return reply.status_code, before, wired.store.review(review_id)


def test_quorum_of_distinct_approvers_approves_and_opens_the_production_promotion(fn, wired):
    review = open_review(wired)
    first = post_vote(fn, review.id, {"decision": "approve", "comment": "metrics ok",
                                      "token": token_of(approval_link(wired, review.id, "ana@contoso.com"))})
    assert first.status_code == 200 and json.loads(first.get_body())["review"]["state"] == "open"
    second = post_vote(fn, review.id, {"decision": "approve", "comment": "ship it",
                                       "token": token_of(approval_link(wired, review.id, "bo@contoso.com"))})
    body = json.loads(second.get_body())
    assert second.status_code == 200 and body["review"]["state"] == "approved"

    decision = body["decision"]
    assert decision["outcome"] == "promote" and "ana@contoso.com, bo@contoso.com" in decision["reason"]
    assert decision["evidence"]["voter"] == "bo@contoso.com" and decision["evidence"]["comment"] == "ship it"
    [production] = [t for t in decision["tasks"] if t["kind"] == "rollout"]  # the progressive rollout starts
    assert production["request"]["stage"] == "production" and production["request"]["operation"] == "rollout.start"
    assert any(t["request"].get("event") == "review.approved" for t in decision["tasks"])
    votes = wired.store.review(review.id).votes
    assert [(v.approver, v.comment) for v in votes] == [("ana@contoso.com", "metrics ok"),
                                                         ("bo@contoso.com", "ship it")]


def test_one_reject_closes_the_review(fn, wired):
    review = open_review(wired)
    reply = post_vote(fn, review.id, {"decision": "reject", "comment": "drift on age",
                                      "token": token_of(approval_link(wired, review.id, "carla@contoso.com"))})
    body = json.loads(reply.get_body())
    assert body["review"]["state"] == "rejected" and body["decision"]["outcome"] == "reject"
    assert "drift on age" in body["decision"]["reason"]
    assert not any(t["kind"] == "promotion" for t in body["decision"]["tasks"])


def forged(token):
    payload, signature = token.split(".")
    return payload + "." + ("A" if signature[0] != "A" else "B") + signature[1:]


@pytest.mark.parametrize("case", ["forged", "foreign_key", "expired", "other_review", "garbage", "missing"])
def test_bad_tokens_are_refused_and_change_nothing(fn, wired, case):
    review = open_review(wired)
    other = open_review(wired, version="5")
    good = token_of(approval_link(wired, review.id, "ana@contoso.com"))
    token = {
        "forged": forged(good),
        "foreign_key": sign_token(b"x" * 32, review, "ana@contoso.com"),
        "expired": sign_token(KEY, replace(review, expires_at=review.created_at - timedelta(seconds=1)),
                              "ana@contoso.com"),
        "other_review": token_of(approval_link(wired, other.id, "ana@contoso.com")),
        "garbage": "not-a-token",
        "missing": "",
    }[case]
    status, before, after = status_and_review(fn, wired, review.id, {"decision": "approve", "token": token})
    assert status in (401, 403) and after == before


def test_a_replayed_link_counts_once(fn, wired):
    review = open_review(wired)
    token = token_of(approval_link(wired, review.id, "ana@contoso.com"))
    assert post_vote(fn, review.id, {"decision": "approve", "token": token}).status_code == 200
    status, before, after = status_and_review(fn, wired, review.id, {"decision": "approve", "token": token})
    assert status == 409 and after == before and len(after.votes) == 1


def test_approvers_must_be_listed(wired):
    review = open_review(wired)
    from controlplane.domain.errors import VoteForbidden
    with pytest.raises(VoteForbidden):
        approval_link(wired, review.id, "mallory@contoso.com")


def test_a_token_for_an_unlisted_approver_is_refused(fn, wired):
    review = open_review(wired)
    token = sign_token(KEY, review, "mallory@contoso.com")
    status, before, after = status_and_review(fn, wired, review.id, {"decision": "approve", "token": token})
    assert status == 403 and after == before


def test_the_registrant_may_not_approve_their_own_model(fn, wired):
    review = open_review(wired, registrant="ana@contoso.com")
    token = token_of(approval_link(wired, review.id, "ana@contoso.com"))
    reply = post_vote(fn, review.id, {"decision": "approve", "token": token})
    assert reply.status_code == 403 and "separation of duties" in json.loads(reply.get_body())["error"]["reason"]
    assert wired.store.review(review.id).votes == ()


def test_the_signed_in_principal_must_be_the_links_approver(fn, wired):
    review = open_review(wired)
    token = token_of(approval_link(wired, review.id, "ana@contoso.com"))
    status, before, after = status_and_review(fn, wired, review.id, {"decision": "approve", "token": token},
                                              headers={"X-MS-CLIENT-PRINCIPAL-NAME": "bo@contoso.com"})
    assert status == 403 and after == before
    ok = post_vote(fn, review.id, {"decision": "approve", "token": token},
                   headers={"X-MS-CLIENT-PRINCIPAL-NAME": "Ana@Contoso.com"})
    assert ok.status_code == 200


@pytest.mark.parametrize("body, content_type, status", [
    (b"x" * (17 * 1024), "application/x-www-form-urlencoded", 413),
    (b"decision=approve&&&token", "application/x-www-form-urlencoded", 400),
    (b"{not json", "application/json", 400),
    (b"[1, 2]", "application/json", 400),
    (json.dumps({"decision": "maybe"}).encode(), "application/json", 401),
    (b"\xff\xfe", "application/json", 400),
])
def test_malformed_or_oversized_votes_are_refused(fn, wired, body, content_type, status):
    review = open_review(wired)
    code, before, after = status_and_review(fn, wired, review.id, body, content_type=content_type)
    assert code == status and after == before


def test_an_unknown_decision_word_is_refused(fn, wired):
    review = open_review(wired)
    token = token_of(approval_link(wired, review.id, "ana@contoso.com"))
    status, before, after = status_and_review(fn, wired, review.id, {"decision": "maybe", "token": token})
    assert status == 400 and after == before


@pytest.mark.parametrize("kind", ["sqlite", "tables"])
def test_concurrent_approve_and_reject_have_one_winner_and_the_loser_gets_409(fn, wired, make_store, monkeypatch,
                                                                             kind):
    wired = replace(wired, store=make_store(kind))
    bootstrap.reset(wired)
    review = open_review(wired)
    voters = [("approve", "ana@contoso.com"), ("reject", "bo@contoso.com"), ("approve", "carla@contoso.com")]
    tokens = [(choice, token_of(approval_link(wired, review.id, who))) for choice, who in voters]
    # Every voter has read the review (and Table Storage its row and ETag) before any of them writes: a real
    # race for one revision, decided by the store's conditional write alone.
    write = "update_review" if kind == "sqlite" else "_submit"
    all_read, real_write, held = threading.Barrier(len(tokens)), getattr(type(wired.store), write), set()

    def write_after_all_read(self, *args):
        if threading.get_ident() not in held:
            held.add(threading.get_ident())
            all_read.wait(timeout=30)
        return real_write(self, *args)

    monkeypatch.setattr(type(wired.store), write, write_after_all_read)
    replies = {}

    def cast(choice, token):
        replies[token] = post_vote(fn, review.id, {"decision": choice, "token": token})

    threads = [threading.Thread(target=cast, args=pair) for pair in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    statuses = sorted(reply.status_code for reply in replies.values())
    assert statuses == [200, 409, 409], [reply.get_body() for reply in replies.values()]
    [winner] = [json.loads(reply.get_body()) for reply in replies.values() if reply.status_code == 200]
    final = wired.store.review(review.id)
    assert final.revision == 1 and [v.approver for v in final.votes] == [winner["decision"]["evidence"]["voter"]]
    assert final.state.value == winner["review"]["state"]
    votes = [d for d in wired.store.decisions(limit=100) if d.event_type.startswith("review.")]
    assert [d.id for d in votes] == [winner["decision"]["id"]]  # the losers recorded nothing


def test_a_review_left_alone_expires_in_the_sweep_and_notifies(wired):
    review = open_review(wired)
    wired.clock.advance(hours=73)
    assert sweep(wired).expired_reviews == 1
    expired = wired.store.review(review.id)
    assert expired.state is ReviewState.EXPIRED
    [decision] = [d for d in wired.store.decisions() if d.event_type == "review.expired"]
    assert decision.outcome is Outcome.NOTIFY and "0 of 2 approvals" in decision.reason
    assert any(t.request.get("event") == "review.expired" for t in decision.tasks)
    assert sweep(wired).expired_reviews == 0


def test_staging_is_recorded_when_dispatched_and_approval_starts_the_rollout(fn, wired):
    review = open_review(wired)
    for who in ("ana@contoso.com", "bo@contoso.com"):
        post_vote(fn, review.id, {"decision": "approve", "token": token_of(approval_link(wired, review.id, who))})
    sweep(wired)
    dispatched = [d for d in wired.store.decisions() if d.event_type == "promotion.dispatched"]
    assert [d.evidence["stage"] for d in dispatched] == ["staging"]
    assert all(t.state is TaskState.SUCCEEDED for t in wired.store.tasks()
               if t.kind in (TaskKind.PROMOTION, TaskKind.ROLLOUT))
    [rollout] = wired.store.rollouts()
    assert (rollout.model, rollout.version, rollout.endpoint) == ("churn", "4", "churn-ep")
    assert rollout.approvers == ("ana@contoso.com", "bo@contoso.com", "carla@contoso.com")


def test_review_pages_escape_everything_from_events(fn, wired):
    review = open_review(wired, note="<script>alert(1)</script>")
    token = token_of(approval_link(wired, review.id, "ana@contoso.com"))
    page = open_page(fn, review.id, token).get_body().decode()
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "id='approve'" in page and "ana@contoso.com" in page


def test_review_json_carries_the_contract_fields(fn, wired):
    review = open_review(wired)
    req = func.HttpRequest("GET", f"/api/reviews/{review.id}", body=b"", route_params={"id": review.id},
                           headers={"Accept": "application/json"})
    data = json.loads(fn["review"](req).get_body())["review"]
    assert {"id", "kind", "state", "model", "version", "approvers", "quorum", "votes", "created_at", "expires_at",
            "evidence"} <= set(data)
    listing = fn["reviews"](func.HttpRequest("GET", "/api/reviews", body=b"", params={"state": "open"}))
    assert [r["id"] for r in json.loads(listing.get_body())["reviews"]] == [review.id]
    missing = fn["review"](func.HttpRequest("GET", "/api/reviews/nope", body=b"", route_params={"id": "nope"}))
    assert missing.status_code == 404


def test_the_registrant_may_reject_their_own_model(fn, wired):
    review = open_review(wired, registrant="ana@contoso.com")
    token = token_of(approval_link(wired, review.id, "ana@contoso.com"))
    reply = post_vote(fn, review.id, {"decision": "reject", "comment": "I found a leak", "token": token})
    assert reply.status_code == 200 and json.loads(reply.get_body())["review"]["state"] == "rejected"


def test_approving_a_drift_review_is_not_a_promotion(wired):
    from controlplane.handlers.reviews import vote

    event = load_event("eg_monitor_breach.json")[0]
    event["data"]["experimentName"] = "defect-detector-drift"
    [review] = receive_registry_event(wired, event).reviews
    token = token_of(approval_link(wired, review.id, "vision-reviewers@contoso.com"))
    updated, decision = vote(wired, review.id, token=token, decision="approve", comment="labelled")
    assert updated.state is ReviewState.APPROVED and decision.outcome is Outcome.NO_ACTION
    assert not any(t.kind in (TaskKind.PROMOTION, TaskKind.ROLLOUT) for t in decision.tasks)


def test_a_form_vote_that_does_not_count_shows_the_page_with_the_reason(fn, wired):
    review = open_review(wired)
    body = f"decision=approve&comment=ok&token={forged(token_of(approval_link(wired, review.id, 'ana@contoso.com')))}"
    reply = post_vote(fn, review.id, body.encode(), content_type="application/x-www-form-urlencoded")
    page = reply.get_body().decode()
    assert reply.status_code == 403 and reply.mimetype == "text/html"
    assert "Your vote was not counted: approval token signature is not valid" in page


def test_errors_name_the_field_at_fault(fn, wired):
    review = open_review(wired)
    token = token_of(approval_link(wired, review.id, "ana@contoso.com"))
    long = post_vote(fn, review.id, {"decision": "approve", "comment": "x" * 2001, "token": token})
    assert long.status_code == 400 and json.loads(long.get_body())["error"]["field"] == "comment"
    missing = post_vote(fn, "nope", {"decision": "approve", "token": token})
    assert missing.status_code in (403, 404)  # the token names another review: refused before any lookup


def test_a_review_page_without_a_signing_key_answers_503_naming_it(fn, wired):
    review = open_review(wired)
    token = token_of(approval_link(wired, review.id, "ana@contoso.com"))
    bootstrap.reset(replace(wired, approval_key=b""))
    reply = open_page(fn, review.id, token)
    assert reply.status_code == 503 and "APPROVAL_SIGNING_KEY" in json.loads(reply.get_body())["error"]["reason"]


def test_a_vote_from_the_page_redirects_so_a_reload_sends_nothing_again(fn, wired):
    from urllib.parse import urlencode

    review = open_review(wired)
    token = token_of(approval_link(wired, review.id, "ana@contoso.com"))
    form = urlencode({"decision": "approve", "comment": "fine", "token": token}).encode()
    reply = post_vote(fn, review.id, form, content_type="application/x-www-form-urlencoded")

    assert reply.status_code == 303 and reply.headers["Location"] == f"/api/reviews/{review.id}?voted=1"
    landed = fn["review"](func.HttpRequest("GET", f"/api/reviews/{review.id}", body=b"", params={"voted": "1"},
                                           route_params={"id": review.id}))
    assert landed.status_code == 200 and "Recorded: ana@contoso.com approved (1 of 2)" in landed.get_body().decode()
    for _ in range(2):  # what a reload does: the page again, and still one vote
        fn["review"](func.HttpRequest("GET", f"/api/reviews/{review.id}", body=b"", params={"voted": "1"},
                                      route_params={"id": review.id}))
    assert len(wired.store.review(review.id).votes) == 1


def test_the_message_after_a_vote_is_read_from_the_review_not_from_the_address(fn, wired):
    review = open_review(wired)
    for voted in ("1", "<script>alert(1)</script>"):
        page = fn["review"](func.HttpRequest("GET", f"/api/reviews/{review.id}", body=b"", params={"voted": voted},
                                             route_params={"id": review.id})).get_body().decode()
        assert "Recorded" not in page and "<script>alert(1)" not in page  # no vote yet: nothing to say


def test_the_dashboard_filters_decisions_and_pages_them_with_the_filter_kept(fn, wired, monkeypatch):
    from controlplane import bootstrap as boot
    from controlplane.domain.ledger import Outcome

    monkeypatch.setattr(boot, "services", lambda: wired)
    for version in ("4", "5", "6"):
        open_review(wired, version=version)

    def dashboard(**params):
        reply = fn["ui"](func.HttpRequest("GET", "/api/ui", body=b"", params=params))
        return reply.status_code, reply.get_body().decode()

    status, page = dashboard(model="churn", outcome="request_approval", hours="24")
    assert status == 200 and page.count("request_approval</td>") == 3 and "value='churn'" in page
    status, page = dashboard(model="fraud")
    assert "No decisions match." in page
    status, page = dashboard(hours="lots")
    assert status == 400 and '"field": "hours"' in page
    for outcome in Outcome:
        assert f"<option value='{outcome.value}'" in dashboard()[1]


def test_the_dashboards_older_decisions_link_keeps_its_filters_and_continues_where_the_page_ended(fn, wired,
                                                                                                  monkeypatch):
    import html
    import re

    from controlplane import bootstrap as boot
    from controlplane.domain.ledger import Outcome, Source, Verdict, record

    monkeypatch.setattr(boot, "services", lambda: wired)
    now = wired.clock.now()
    for n in range(60):
        wired.store.append(record(Verdict(Outcome.NO_ACTION, f"d{n}", model="churn"), key=f"k{n}", event_id=f"e{n}",
                                  source=Source.EVENTGRID, event_type="t", policy_version="v",
                                  received_at=now - timedelta(minutes=n), decided_at=now - timedelta(minutes=n)))
    first = fn["ui"](func.HttpRequest("GET", "/api/ui", body=b"", params={"model": "churn", "hours": "24"}))
    page = first.get_body().decode()
    [following] = re.findall(r"rel='next' href='\?([^']+)'", page)
    params = {k: v[0] for k, v in parse_qs(html.unescape(following)).items()}
    assert params["model"] == "churn" and "since" in params and "hours" not in params  # the same query, fixed
    second = fn["ui"](func.HttpRequest("GET", "/api/ui", body=b"", params=params)).get_body().decode()
    assert second.count("no_action</td>") == 10 and "rel='next'" not in second

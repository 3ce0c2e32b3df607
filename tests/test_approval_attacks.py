"""Attacks on the human gate: disguised registrants, unknown registrants under both policy choices, hostile
tokens, tokens in URLs, unknown reviews, and the reviewers' drift reports."""
from __future__ import annotations

import copy
import json
from dataclasses import replace
from datetime import timedelta
from urllib.parse import quote, urlsplit

import azure.functions as func
import pytest

from controlplane import bootstrap
from controlplane.adapters.artifacts import LocalArtifacts
from controlplane.domain.errors import VoteConflict, VoteForbidden
from controlplane.domain.ledger import Outcome, ReviewDraft, Source, Verdict, record
from controlplane.domain.policy import parse_policy
from controlplane.domain.reviews import ReviewKind, ReviewState, VoteError, identity, sign_token
from controlplane.handlers.registry import receive_registry_event
from controlplane.handlers.reviews import approval_link, vote
from tests.fakes import FakeGateway
from tests.support import load_event

KEY = b"k" * 32
APPROVERS = ["ana@contoso.com", "bo@contoso.com", "carla@contoso.com"]


def policy(**production):
    production = {"approvers": APPROVERS, "quorum": 2, **production}
    return parse_policy(json.dumps({"models": [{"name": "churn", "promotion": {
        "endpoint": "churn-ep", "gates": {"accuracy": ">= 0.85"}, "production": production}}]}))


@pytest.fixture
def wired(services):
    services = replace(services, approval_key=KEY, public_url="https://cp.example", gateway=FakeGateway(),
                       policy=policy())
    bootstrap.reset(services)
    yield services
    bootstrap.reset()


def register(services, version="4", registered_by="", **tags):
    """churn:<version> registered in the workspace by ``registered_by`` (nobody it knows when empty)."""
    if registered_by is not None:
        services.gateway.add_model("churn", version, registered_by=registered_by)
    event = copy.deepcopy(load_event("eg_model_registered_sdk.json"))
    event["id"] = f"reg-{version}"
    event["data"].update(modelName="churn", modelVersion=version, modelTags={"accuracy": "0.93", **tags})
    return receive_registry_event(services, event)


def token_of(link):
    return link.split("#token=", 1)[1]


def approve(services, review, who):
    return vote(services, review.id, token=token_of(approval_link(services, review.id, who)), decision="approve")


# -- identities ---------------------------------------------------------------------------------------------------

DISGUISES = [" Ana@Contoso.com ", "ANA@CONTOSO.COM", "ana@contoso.com\u200b", "\ufeffana@contoso.com",
             "ana@contoso.com\u2060", "ana@contoso.com\t", "Ana@Contoso.com\u00a0", "ａｎａ@ｃｏｎｔｏｓｏ.ｃｏｍ",
             "ＡＮＡ@contoso.com", "a\u200dna@contoso.com", "ana@contoso.com\n"]


@pytest.mark.parametrize("name", DISGUISES)
def test_one_normalisation_sees_through_case_space_invisible_and_fullwidth_disguises(name):
    assert identity(name) == identity("ana@contoso.com") == "ana@contoso.com"


@pytest.mark.parametrize("name", ["anna@contoso.com", "\u0430na@contoso.com", "ana@contoso.co"])
def test_different_people_stay_different(name):
    assert identity(name) != identity("ana@contoso.com")  # a Cyrillic look-alike is another name


@pytest.mark.parametrize("registrant", DISGUISES)
def test_a_disguised_workspace_registrant_may_not_approve(wired, registrant):
    [review] = register(wired, registered_by=registrant).reviews
    with pytest.raises(VoteError) as refused:
        approve(wired, review, "ana@contoso.com")
    assert isinstance(refused.value, VoteForbidden) and "separation of duties" in refused.value.reason
    assert wired.store.review(review.id).votes == ()


@pytest.mark.parametrize("registrant", DISGUISES)
def test_a_disguised_tag_registrant_may_not_approve_when_the_policy_trusts_tags(wired, registrant):
    wired = replace(wired, policy=policy(registrant_from_tags=True))
    [review] = register(wired, registered_by=None, created_by=registrant).reviews
    assert wired.store.decisions()[0].evidence["registrant_source"] == "tags"
    with pytest.raises(VoteError) as refused:
        approve(wired, review, "ana@contoso.com")
    assert isinstance(refused.value, VoteForbidden) and "separation of duties" in refused.value.reason


@pytest.mark.parametrize("listed", [" Ana@Contoso.com ", "ａｎａ@contoso.com"])
def test_a_disguised_approver_listing_is_still_the_registrant(wired, listed):
    wired = replace(wired, policy=policy(approvers=[listed, "bo@contoso.com", "carla@contoso.com"]))
    [review] = register(wired, registered_by="ana@contoso.com").reviews
    with pytest.raises(VoteError) as refused:
        approve(wired, review, listed)
    assert isinstance(refused.value, VoteForbidden) and "separation of duties" in refused.value.reason


def test_one_approver_in_two_spellings_counts_once(wired):
    [review] = register(wired, registered_by="dan@contoso.com").reviews
    approve(wired, review, "ana@contoso.com")
    disguised = sign_token(KEY, review, " ANA@contoso.com\u200b")  # validly signed, for the same person
    with pytest.raises(VoteError) as refused:
        vote(wired, review.id, token=disguised, decision="approve")
    assert isinstance(refused.value, VoteConflict) and wired.store.review(review.id).state is ReviewState.OPEN


def test_the_workspace_record_wins_over_a_tag(wired):
    wired = replace(wired, policy=policy(registrant_from_tags=True))
    decision = register(wired, registered_by="ana@contoso.com", created_by="mallory@contoso.com")
    assert decision.reviews[0].registrant == "ana@contoso.com"
    assert decision.evidence["registrant_source"] == "workspace"


# -- the workspace's record, through the real adapter ----------------------------------------------------------

def azureml_gateway(answer):
    from controlplane.adapters.azureml import AzureMLGateway
    from tests.azure_http import AzureTransport, FixedCredential, body

    azure = AzureTransport().on("GET", "/workspaces/ws-mlops", body("ml_workspace"))
    azure.on("GET", "/models/churn/versions/4", answer)
    return AzureMLGateway("00000000-1111-2222-3333-444444444444", "rg-mlops", "ws-mlops",
                          credential=FixedCredential(), transport=azure, retry_total=0)


def model_version(created_by_property="pipeline:retrain-churn-41", system_creator="alice@contoso.com"):
    from tests.azure_http import body

    answer = body("ml_model_version")
    answer["properties"]["properties"] = {"created_by": created_by_property} if created_by_property else {}
    if system_creator is None:
        del answer["systemData"]
    else:
        answer["systemData"]["createdBy"] = system_creator
    return answer


def test_the_adapter_takes_the_registrant_from_system_data_only():
    model = azureml_gateway(model_version()).get_model("churn", "4")
    assert model.registered_by == "alice@contoso.com" and model.created_by == "pipeline:retrain-churn-41"
    assert azureml_gateway(model_version(system_creator=None)).get_model("churn", "4").registered_by == ""


def test_a_created_by_property_cannot_hide_the_registrant_azure_recorded(wired):
    wired = replace(wired, gateway=azureml_gateway(model_version(created_by_property="bo@contoso.com",
                                                                 system_creator=" ANA@contoso.com")))
    decision = register(wired, registered_by=None, created_by="carla@contoso.com")
    [review] = decision.reviews
    assert review.registrant == "ANA@contoso.com" and decision.evidence["registrant_source"] == "workspace"
    with pytest.raises(VoteError):
        approve(wired, review, "ana@contoso.com")
    approve(wired, review, "bo@contoso.com")
    assert approve(wired, review, "carla@contoso.com")[0].state is ReviewState.APPROVED


# -- unknown registrants -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("tags", [{}, {"created_by": "alice@contoso.com"}, {"created_by": "  "}])
def test_tags_are_not_trusted_by_default_and_an_unknown_registrant_needs_one_more_approval(wired, tags):
    decision = register(wired, registered_by=None, **tags)
    [review] = decision.reviews
    assert review.registrant == "" and review.quorum == 3 and "needs 3 approval(s)" in decision.reason
    assert decision.evidence["unknown_registrant"] == "extra_approval" and decision.evidence["registrant_source"] == ""
    approve(wired, review, "ana@contoso.com")
    assert approve(wired, review, "bo@contoso.com")[0].state is ReviewState.OPEN  # the quorum of 2 is not enough
    assert approve(wired, review, "carla@contoso.com")[0].state is ReviewState.APPROVED


def test_a_look_alike_tag_registrant_counts_as_unknown(wired):
    wired = replace(wired, policy=policy(registrant_from_tags=True))
    decision = register(wired, registered_by=None, created_by="\u0430na@contoso.com")  # Cyrillic a
    assert decision.reviews[0].registrant == "" and decision.reviews[0].quorum == 3
    assert decision.evidence["unknown_registrant"] == "extra_approval"


def test_an_unknown_registrant_is_refused_when_the_policy_says_so(wired):
    wired = replace(wired, policy=policy(unknown_registrant="refuse"))
    decision = register(wired, registered_by="")
    assert decision.outcome is Outcome.REJECT and decision.reviews == () and decision.tasks == ()
    assert "registrant of churn:4 cannot be established" in decision.reason
    assert decision.evidence["unknown_registrant"] == "refuse"
    assert wired.store.reviews(ReviewState.OPEN) == []


def test_one_approval_beyond_an_unreachable_quorum_refuses(wired):
    wired = replace(wired, policy=policy(approvers=["ana@contoso.com", "bo@contoso.com"]))
    decision = register(wired, registered_by="")
    assert decision.outcome is Outcome.REJECT and decision.reviews == ()
    assert "needs 3 approvers, 2 are listed" in decision.reason and decision.evidence["unknown_registrant"] == "refuse"


def test_a_known_registrant_keeps_the_quorum_under_either_choice(wired):
    for choice in ("refuse", "extra_approval"):
        services = replace(wired, policy=policy(unknown_registrant=choice))
        decision = register(services, version=f"4{len(choice)}", registered_by="dan@contoso.com")
        assert decision.reviews[0].quorum == 2 and "unknown_registrant" not in decision.evidence


def test_without_separation_of_duties_the_registrant_does_not_matter(wired):
    wired = replace(wired, policy=policy(separation_of_duties=False, unknown_registrant="refuse"))
    decision = register(wired, registered_by="")
    assert decision.reviews[0].quorum == 2 and "unknown_registrant" not in decision.evidence


def test_without_separation_of_duties_the_registrant_may_approve_their_own_model(wired):
    wired = replace(wired, policy=policy(separation_of_duties=False))
    [review] = register(wired, registered_by="Ana@Contoso.com").reviews
    approve(wired, review, "ana@contoso.com")
    approved, decision = approve(wired, review, "bo@contoso.com")
    assert approved.state is ReviewState.APPROVED and decision.outcome is Outcome.PROMOTE
    assert [v.approver for v in approved.votes] == ["ana@contoso.com", "bo@contoso.com"]


def test_the_missing_metrics_review_follows_the_same_rule(wired):
    wired = replace(wired, policy=policy(unknown_registrant="refuse"))
    event = copy.deepcopy(load_event("eg_model_registered_sdk.json"))
    event["data"].update(modelName="churn", modelVersion="9", modelTags={})
    decision = receive_registry_event(wired, event)
    assert decision.outcome is Outcome.REJECT and decision.reviews == ()
    assert "metrics missing" in decision.reason and "cannot be established" in decision.reason


def test_without_production_a_candidate_lacking_metrics_goes_to_review_for_staging_only(wired):
    wired = replace(wired, policy=parse_policy(json.dumps({"models": [{"name": "churn", "promotion": {
        "endpoint": "churn-ep", "gates": {"accuracy": ">= 0.85"}}}]})))
    event = copy.deepcopy(load_event("eg_model_registered_sdk.json"))
    event["data"].update(modelName="churn", modelVersion="9", modelTags={})
    decision = receive_registry_event(wired, event)
    [review] = decision.reviews
    assert decision.outcome is Outcome.INCONCLUSIVE and review.quorum == 1 and review.approvers == ("ml-leads",)
    assert review.on_approval["stage"] == "staging" and "unknown_registrant" not in decision.evidence


# -- tokens over HTTP ---------------------------------------------------------------------------------------------

def post(fn, name, path, body, content_type="application/json", review_id="", accept="application/json"):
    data = body if isinstance(body, bytes) else (json.dumps(body).encode() if isinstance(body, dict) else body.encode())
    return fn[name](func.HttpRequest("POST", path, body=data, route_params={"id": review_id},
                                     headers={"Content-Type": content_type, "Accept": accept}))


def hostile_tokens(good):
    payload, signature = good.split(".")
    return [good + "é", "é" + good, payload + "." + "ü" + signature[1:], payload + "\uff0e" + signature,
            good[:10] + "\u200b" + good[10:], good + "\U0001f600", good.replace(".", "\u2024"), "ä", "\u00e9.\u00e9",
            payload + "." + signature + "\ud800", "x" * 5000, good + "." + signature, good.encode().hex()]


def test_hostile_tokens_answer_4xx_on_every_route_and_change_nothing(fn, wired):
    [review] = register(wired, registered_by="dan@contoso.com").reviews
    good = token_of(approval_link(wired, review.id, "ana@contoso.com"))
    answers = []
    for token in hostile_tokens(good):
        form = f"decision=approve&token={quote(token.encode('utf-8', 'surrogatepass'))}"
        answers += [
            post(fn, "review_decision", "/d", {"decision": "approve", "token": token}, review_id=review.id),
            post(fn, "review_decision", "/d", form, "application/x-www-form-urlencoded", review.id, "text/html"),
            post(fn, "review", "/r", {"token": token}, review_id=review.id),
            post(fn, "review", "/r", form, "application/x-www-form-urlencoded", review.id, "text/html"),
            post(fn, "review_report", "/p", {"token": token}, review_id=review.id),
        ]
    statuses = {reply.status_code for reply in answers}
    assert statuses <= {400, 401, 403}, statuses
    assert wired.store.review(review.id).votes == ()


@pytest.mark.parametrize("body", [b"[" * 5000 + b"]" * 5000, b'{"token": ' + b"1" * 5000 + b"}",
                                  b'{"token": "\\ud800"}', b'{"token": NaN}', b"\xff"])
def test_hostile_bodies_answer_4xx_on_every_review_route(fn, wired, body):
    [review] = register(wired, registered_by="dan@contoso.com").reviews
    for name in ("review_decision", "review", "review_report"):
        assert 400 <= post(fn, name, "/x", body, review_id=review.id).status_code < 500, name


@pytest.mark.parametrize("limit", ["1" * 5000, "²", "-1", "0", "501", "1e3"])
def test_a_hostile_limit_on_decisions_answers_400(fn, wired, limit):
    reply = fn["decisions"](func.HttpRequest("GET", "/api/decisions", body=b"", params={"limit": limit}))
    assert reply.status_code == 400 and len(reply.get_body()) < 300


def test_a_token_in_the_query_string_is_never_read(fn, wired):
    [review] = register(wired, registered_by="dan@contoso.com").reviews
    token = token_of(approval_link(wired, review.id, "ana@contoso.com"))
    page = fn["review"](func.HttpRequest("GET", f"/api/reviews/{review.id}", body=b"", params={"token": token},
                                         route_params={"id": review.id}, headers={"Accept": "text/html"}))
    assert page.status_code == 200 and "id='approve'" not in page.get_body().decode()
    voted = fn["review_decision"](func.HttpRequest(
        "POST", f"/api/reviews/{review.id}/decision", body=b'{"decision": "approve"}', params={"token": token},
        route_params={"id": review.id}, headers={"Content-Type": "application/json"}))
    assert voted.status_code == 401 and wired.store.review(review.id).votes == ()


def test_links_carry_the_token_in_the_fragment_only(wired):
    [review] = register(wired, registered_by="dan@contoso.com").reviews
    link = urlsplit(approval_link(wired, review.id, "ana@contoso.com"))
    assert link.query == "" and link.path == f"/api/reviews/{review.id}" and link.fragment.startswith("token=")


@pytest.mark.parametrize("content_type", ["application/json", "application/x-www-form-urlencoded"])
def test_a_vote_page_or_report_for_an_unknown_review_answers_404(fn, wired, content_type):
    [review] = register(wired, registered_by="dan@contoso.com").reviews
    unknown = "0" * 24
    token = sign_token(KEY, replace(review, id=unknown), "ana@contoso.com")  # validly signed for no review
    body = (f"decision=approve&token={token}" if content_type != "application/json"
            else {"decision": "approve", "token": token})
    for name in ("review_decision", "review", "review_report"):
        reply = post(fn, name, "/x", body, content_type, review_id=unknown, accept="text/html")
        assert reply.status_code == 404, (name, reply.status_code)
    foreign = token_of(approval_link(wired, review.id, "ana@contoso.com"))  # for another review: refused first
    assert post(fn, "review_decision", "/x", {"decision": "approve", "token": foreign}, review_id=unknown
                ).status_code == 403


# -- drift reports --------------------------------------------------------------------------------------------------

@pytest.fixture
def drift_review(wired, tmp_path):
    name = "defect-detector-blue-2026112210.0-0123456789abcdef"
    artifacts = LocalArtifacts(tmp_path / "artifacts")
    artifacts.save(f"reports/{name}.html", b"<html>production inputs</html>", "text/html")
    services = replace(wired, artifacts=artifacts)
    bootstrap.reset(services)
    draft = ReviewDraft(kind=ReviewKind.DRIFT, approvers=("vision-reviewers@contoso.com",), quorum=1,
                        ttl=timedelta(days=7), separation_of_duties=False,
                        evidence={"report": name, "report_url": f"https://cp.example/api/reports/{name}"})
    now = services.clock.now()
    decision = record(Verdict(Outcome.REVIEW, "drift", model="defect-detector", reviews=(draft,)), key="window:x",
                      event_id="x", source=Source.TELEMETRY, event_type="drift.window", policy_version="p",
                      received_at=now, decided_at=now)
    services.store.append(decision)
    return services, decision.reviews[0], name


def test_the_anonymous_review_json_and_page_do_not_hand_out_the_report(fn, drift_review):
    services, review, name = drift_review
    for accept in ("application/json", "text/html"):
        reply = fn["review"](func.HttpRequest("GET", f"/api/reviews/{review.id}", body=b"",
                                              route_params={"id": review.id}, headers={"Accept": accept}))
        assert reply.status_code == 200 and name not in reply.get_body().decode()
    listing = fn["reviews"](func.HttpRequest("GET", "/api/reviews", body=b""))  # behind the function key
    assert name in listing.get_body().decode()


def test_the_reviewer_reaches_the_report_with_the_token_in_the_body(fn, drift_review):
    services, review, name = drift_review
    token = token_of(approval_link(services, review.id, "vision-reviewers@contoso.com"))
    page = post(fn, "review", "/r", f"token={token}", "application/x-www-form-urlencoded", review.id, "text/html")
    assert f"action='{review.id}/report'" in page.get_body().decode()
    served = post(fn, "review_report", "/p", f"token={token}", "application/x-www-form-urlencoded", review.id)
    assert served.status_code == 200 and served.get_body() == b"<html>production inputs</html>"
    assert post(fn, "review_report", "/p", "token=", "application/x-www-form-urlencoded", review.id).status_code == 401
    other = sign_token(b"x" * 32, review, "vision-reviewers@contoso.com")
    assert post(fn, "review_report", "/p", {"token": other}, review_id=review.id).status_code == 403


@pytest.mark.parametrize("name", ["a" * 251, "../../etc/passwd", "a/b", "..", "x" * 5000, "é", "nope"])
def test_report_errors_name_no_server_path(fn, drift_review, tmp_path, name):
    reply = fn["report"](func.HttpRequest("GET", f"/api/reports/{quote(name)}", body=b"", route_params={"name": name}))
    text = reply.get_body().decode()
    assert reply.status_code in (400, 404) and str(tmp_path) not in text and "/" not in json.loads(text)["error"][
        "reason"]


def test_a_drift_review_id_cannot_be_computed_from_the_window(services, policy):
    # GIVEN two control planes with different signing keys and the same drifted window (public: model,
    # deployment, hour)
    from controlplane.handlers.actions import act_on_drift

    window = {"model": "defect-detector", "deployment": "blue", "bucket": 498976, "part": 0}
    key = "window:defect-detector/blue/498976.0"

    def review_id(signing_key: bytes) -> str:
        wired = replace(services, policy=policy, approval_key=signing_key)
        verdict = act_on_drift(wired, "defect-detector", {"kind": "window"}, "drifted", key, {"window": window})
        [review] = record(verdict, key=key, event_id=key, source=Source.TELEMETRY, event_type="drift.window",
                          policy_version="p", received_at=wired.clock.now(), decided_at=wired.clock.now()).reviews
        return review.id

    # THEN the review ids differ: the id mixes in a part keyed by the signing key, as the report name does
    assert review_id(b"k" * 40) != review_id(b"j" * 40)
    assert review_id(b"k" * 40) == review_id(b"k" * 40)  # and a retried write lands on the same id

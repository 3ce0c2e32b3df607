"""The human gate over HTTP: review pages, the vote webhook and the dashboard.

- ``reviews``: GET /api/reviews?state=&limit=&continuation= - reviews, newest first, a page at a time (JSON with
  the next page's ``continuation``, or HTML for browsers)
- ``review``: GET /api/reviews/{id} - the review page (JSON with ``Accept: application/json``);
  POST with the approver's token - the page with the approver's form
- ``review_decision``: POST /api/reviews/{id}/decision - a vote (form or JSON: decision, comment, token)
- ``review_report``: POST /api/reviews/{id}/report - the review's drift report, for the approver's token
- ``ui``: GET /api/ui - pending reviews and recent decisions

The review page and the vote are anonymous at the function level: the signed single-use token in
the approver's link is what authorises a vote, and with App Service authentication on, the signed-in
principal (``X-MS-CLIENT-PRINCIPAL-NAME``) must be the token's approver. Tokens travel in request
bodies only, never in a URL: the link keeps its token in the fragment, which browsers do not send.
"""
from __future__ import annotations

import json
from urllib.parse import parse_qs

import azure.functions as func

from triggers.http import answers_errors, html_response, json_response, status_of
from triggers.traced import traced

bp = func.Blueprint()

MAX_FORM_BYTES = 16 * 1024
PRINCIPAL_HEADER = "X-MS-CLIENT-PRINCIPAL-NAME"


def _wants_html(req: func.HttpRequest) -> bool:
    accept = req.headers.get("Accept", "")
    return "text/html" in accept and "application/json" not in accept


@bp.function_name("reviews")
@bp.route(route="reviews", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@traced
@answers_errors
def reviews(req: func.HttpRequest) -> func.HttpResponse:
    from controlplane import bootstrap
    from controlplane.domain.errors import InvalidEvent
    from controlplane.domain.reviews import ReviewState
    from controlplane.handlers.queries import list_reviews, parse_limit
    from controlplane.web.pages import reviews_page

    state = req.params.get("state") or None
    if state is not None and state not in {s.value for s in ReviewState}:
        raise InvalidEvent("state", f"expected one of {', '.join(s.value for s in ReviewState)}")
    wanted = ReviewState(state) if state else None
    if _wants_html(req):  # a person: the latest 200, newest first on every store
        return html_response(reviews_page(bootstrap.services().store.reviews(wanted, limit=200)))
    page = list_reviews(bootstrap.services(), wanted, parse_limit(req.params.get("limit"), default=200),
                        req.params.get("continuation"))
    return json_response(200, {"reviews": [review.to_json() for review in page.items],
                               "continuation": page.continuation})


@bp.function_name("review")
@bp.route(route="reviews/{id}", methods=["GET", "POST"], auth_level=func.AuthLevel.ANONYMOUS)
@traced
@answers_errors
def review(req: func.HttpRequest) -> func.HttpResponse:
    from controlplane import bootstrap
    from controlplane.domain.errors import VoteError
    from controlplane.domain.reviews import verify_token
    from controlplane.handlers.reviews import get_review, promotion_context, review_signals
    from controlplane.web.pages import review_page

    token = ""
    if req.method == "POST":  # the approver's page: the token comes in the body, never in the URL
        token = _token(_form(req), link=True)
    services = bootstrap.services()
    found = get_review(services, req.route_params["id"])
    signals = review_signals(services, found)
    try:
        approver = verify_token(services.approval_key, token, found.id, services.clock.now()).approver if token else ""
    except VoteError as error:  # a person at the page: show it and why the link cannot be used
        return html_response(review_page(found, message=f"This link cannot be used: {error.reason}", signals=signals,
                                         promotion=promotion_context(services, found)), status_of(error))
    if "application/json" in req.headers.get("Accept", ""):
        return json_response(200, {"review": found.to_json() if approver else found.public_json()})
    message = _last_vote(found) if req.method == "GET" and req.params.get("voted") and found.votes else ""
    promotion = promotion_context(services, found)  # the staging deployment now, the rollout plan, studio links
    return html_response(review_page(found, token=token, approver=approver, signals=signals, message=message,
                                     promotion=promotion))


def _last_vote(review) -> str:
    """What the page says after a vote it was redirected from: read from the review, never from the address."""
    vote = review.votes[-1]
    said = f"{vote.approver} {'approved' if vote.decision == 'approve' else 'rejected'}"
    state = f"; the review is {review.state.value}" if review.state.value != "open" else ""
    return f"Recorded: {said} ({len(review.approvals)} of {review.quorum}){state}"


@bp.function_name("review_report")
@bp.route(route="reviews/{id}/report", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@traced
@answers_errors
def review_report(req: func.HttpRequest) -> func.HttpResponse:
    from controlplane import bootstrap
    from controlplane.domain.reviews import verify_token
    from controlplane.handlers.reviews import get_review

    token = _token(_form(req))
    services = bootstrap.services()
    found = get_review(services, req.route_params["id"])
    verify_token(services.approval_key, token, found.id, services.clock.now())
    from triggers.reports import serve_report

    return serve_report(str(found.evidence.get("report") or ""))


@bp.function_name("review_decision")
@bp.route(route="reviews/{id}/decision", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@traced
@answers_errors
def review_decision(req: func.HttpRequest) -> func.HttpResponse:
    from controlplane import bootstrap
    from controlplane.domain.errors import VoteError
    from controlplane.handlers.reviews import get_review, promotion_context, vote
    from controlplane.web.pages import review_page

    form = _form(req)
    try:
        updated, decision = vote(bootstrap.services(), req.route_params["id"], token=form.get("token", ""),
                                 decision=form.get("decision", ""), comment=form.get("comment", ""),
                                 principal=req.headers.get(PRINCIPAL_HEADER))
    except VoteError as error:
        if not _is_form(req):  # a program: answered as JSON naming the field
            raise
        current = get_review(bootstrap.services(), req.route_params["id"])
        return html_response(review_page(current, message=f"Your vote was not counted: {error.reason}",  # a person
                                         promotion=promotion_context(bootstrap.services(), current)),
                             status_of(error))
    if _is_form(req):  # post/redirect/get: reloading the page it lands on sends nothing again
        return func.HttpResponse(status_code=303, headers={"Location": f"/api/reviews/{updated.id}?voted=1",
                                                           "Cache-Control": "no-store"})
    return json_response(200, {"review": updated.to_json(), "decision": decision.to_json()})


@bp.function_name("ui")
@bp.route(route="ui", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@traced
@answers_errors
def ui(req: func.HttpRequest) -> func.HttpResponse:
    from controlplane import bootstrap
    from controlplane.domain.incidents import IncidentState
    from controlplane.domain.reviews import ReviewState
    from controlplane.handlers.queries import DecisionQuery, list_decisions
    from controlplane.web.pages import reviews_page

    services = bootstrap.services()
    query = DecisionQuery.parse(req.params, now=services.clock.now())
    page = list_decisions(services, query, 50, req.params.get("continuation"))
    pending = services.store.reviews(ReviewState.OPEN, limit=100)
    incidents = services.store.incidents(IncidentState.OPEN, limit=50)
    return html_response(reviews_page(pending, page.decisions, title="MLOps control plane", incidents=incidents,
                                      filters=query.params(), continuation=page.continuation))


def _is_form(req: func.HttpRequest) -> bool:
    return req.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded")


def _token(form: dict[str, str], link: bool = False) -> str:
    """The approval token of a form (``link``: or of a whole approval link pasted); ``TokenRequired`` when it
    has none."""
    from controlplane.domain.errors import TokenRequired

    token = form.get("token", "")
    if link:
        token = token.strip().rsplit("#token=", 1)[-1]
    if not token:
        raise TokenRequired("token", "an approval token is required")
    return token


def _form(req: func.HttpRequest) -> dict[str, str]:
    """The fields of a form or a JSON object (decision, comment, token); a malformed or oversized body
    raises ``InvalidEvent`` naming it."""
    from controlplane.domain.errors import InvalidEvent, PayloadTooLarge

    body = req.get_body()
    if len(body) > MAX_FORM_BYTES:
        raise PayloadTooLarge("body", f"{len(body)} bytes exceeds the {MAX_FORM_BYTES}-byte limit")
    try:
        text = body.decode("utf-8")
        if _is_form(req):
            fields = parse_qs(text, keep_blank_values=True, strict_parsing=bool(text), max_num_fields=10)
            return {key: values[-1] for key, values in fields.items()}
        data = json.loads(text or "{}")
    except (UnicodeDecodeError, ValueError, RecursionError) as error:  # RecursionError: JSON nested too deep
        raise InvalidEvent("body", f"malformed form or JSON: {str(error)[:200]}") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise InvalidEvent("body", "expected a JSON object of strings: decision, comment, token")
    return data

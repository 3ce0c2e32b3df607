"""The human gate over HTTP: review pages, the vote webhook and the dashboard.

- ``reviews``: GET /api/reviews - open and recent reviews (JSON, or HTML for browsers)
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

from triggers.http import error_response, json_response

bp = func.Blueprint()

MAX_FORM_BYTES = 16 * 1024
PRINCIPAL_HEADER = "X-MS-CLIENT-PRINCIPAL-NAME"


def _wants_html(req: func.HttpRequest) -> bool:
    accept = req.headers.get("Accept", "")
    return "text/html" in accept and "application/json" not in accept


def _html(body: str, status: int = 200) -> func.HttpResponse:
    from controlplane.web.pages import OPEN_SCRIPT_HASH

    return func.HttpResponse(body, status_code=status, mimetype="text/html", charset="utf-8", headers={
        "Content-Security-Policy": f"default-src 'none'; style-src 'unsafe-inline'; script-src '{OPEN_SCRIPT_HASH}'; "
                                   "form-action 'self'",
        "X-Frame-Options": "DENY", "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})


@bp.function_name("reviews")
@bp.route(route="reviews", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def reviews(req: func.HttpRequest) -> func.HttpResponse:
    from controlplane import bootstrap
    from controlplane.domain.errors import ControlPlaneError
    from controlplane.domain.reviews import ReviewState
    from controlplane.handlers.queries import public_reason
    from controlplane.web.pages import reviews_page

    state = req.params.get("state") or None
    if state is not None and state not in {s.value for s in ReviewState}:
        return error_response(400, "state", f"expected one of {', '.join(s.value for s in ReviewState)}")
    try:
        found = bootstrap.services().store.reviews(ReviewState(state) if state else None, limit=200)
    except ControlPlaneError as error:
        return error_response(503, "service", public_reason(error))
    if _wants_html(req):
        return _html(reviews_page(found))
    return json_response(200, {"reviews": [review.to_json() for review in found]})


@bp.function_name("review")
@bp.route(route="reviews/{id}", methods=["GET", "POST"], auth_level=func.AuthLevel.ANONYMOUS)
def review(req: func.HttpRequest) -> func.HttpResponse:
    from controlplane import bootstrap
    from controlplane.domain.errors import ControlPlaneError
    from controlplane.domain.reviews import VoteError, verify_token
    from controlplane.handlers.queries import public_reason
    from controlplane.handlers.reviews import get_review, review_signals
    from controlplane.web.pages import review_page

    token = ""
    if req.method == "POST":  # the approver's page: the token comes in the body, never in the URL
        form = _form(req)
        if isinstance(form, func.HttpResponse):
            return form
        token = form.get("token", "").strip().rsplit("#token=", 1)[-1]  # a pasted whole link works too
        if not token:
            return error_response(401, "token", "an approval token is required")
    try:
        services = bootstrap.services()
        found = get_review(services, req.route_params["id"])
        signals = review_signals(services, found)
        approver = verify_token(services.approval_key, token, found.id, services.clock.now()).approver if token else ""
    except VoteError as error:
        if error.field == "id":
            return error_response(error.status, "id", error.reason)
        return _html(review_page(found, message=f"This link cannot be used: {error.reason}", signals=signals),
                     error.status)
    except ControlPlaneError as error:  # the store, a setting, or no signing key configured
        return error_response(503, "service", public_reason(error))
    if "application/json" in req.headers.get("Accept", ""):
        return json_response(200, {"review": found.to_json() if approver else found.public_json()})
    return _html(review_page(found, token=token, approver=approver, signals=signals))


@bp.function_name("review_report")
@bp.route(route="reviews/{id}/report", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def review_report(req: func.HttpRequest) -> func.HttpResponse:
    from controlplane import bootstrap
    from controlplane.domain.errors import ControlPlaneError
    from controlplane.domain.reviews import VoteError, verify_token
    from controlplane.handlers.queries import public_reason
    from controlplane.handlers.reviews import get_review

    form = _form(req)
    if isinstance(form, func.HttpResponse):
        return form
    if not form.get("token"):
        return error_response(401, "token", "an approval token is required")
    try:
        services = bootstrap.services()
        found = get_review(services, req.route_params["id"])
        verify_token(services.approval_key, form["token"], found.id, services.clock.now())
    except VoteError as error:
        return error_response(error.status, error.field, error.reason)
    except ControlPlaneError as error:
        return error_response(503, "service", public_reason(error))
    from triggers.reports import serve_report

    return serve_report(str(found.evidence.get("report") or ""))


@bp.function_name("review_decision")
@bp.route(route="reviews/{id}/decision", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def review_decision(req: func.HttpRequest) -> func.HttpResponse:
    from controlplane import bootstrap
    from controlplane.domain.errors import ControlPlaneError
    from controlplane.domain.reviews import VoteError
    from controlplane.handlers.queries import public_reason
    from controlplane.handlers.reviews import vote
    from controlplane.web.pages import review_page

    form = _form(req)
    if isinstance(form, func.HttpResponse):
        return form
    token = form.get("token", "")
    try:
        updated, decision = vote(bootstrap.services(), req.route_params["id"], token=token,
                                 decision=form.get("decision", ""), comment=form.get("comment", ""),
                                 principal=req.headers.get(PRINCIPAL_HEADER))
    except VoteError as error:
        if _is_form(req):  # a person at the page: show the page and why
            current = bootstrap.services().store.review(req.route_params["id"])
            if current is None:
                return error_response(404, "id", f"no review {req.route_params['id'][:64]!r}")
            return _html(review_page(current, message=f"Your vote was not counted: {error.reason}"), error.status)
        return error_response(error.status, error.field, error.reason)
    except ControlPlaneError as error:
        return error_response(503, "service", public_reason(error))
    if _is_form(req):
        return _html(review_page(updated, message=f"Recorded: {decision.reason}"))
    return json_response(200, {"review": updated.to_json(), "decision": decision.to_json()})


@bp.function_name("ui")
@bp.route(route="ui", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def ui(req: func.HttpRequest) -> func.HttpResponse:
    from controlplane import bootstrap
    from controlplane.domain.errors import ControlPlaneError
    from controlplane.domain.incidents import IncidentState
    from controlplane.domain.reviews import ReviewState
    from controlplane.handlers.queries import public_reason
    from controlplane.web.pages import reviews_page

    try:
        store = bootstrap.services().store
        pending, recent = store.reviews(ReviewState.OPEN, limit=100), store.decisions(limit=50)
        incidents = store.incidents(IncidentState.OPEN, limit=50)
    except ControlPlaneError as error:
        return error_response(503, "service", public_reason(error))
    return _html(reviews_page(pending, recent, title="MLOps control plane", incidents=incidents))


def _is_form(req: func.HttpRequest) -> bool:
    return req.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded")


def _form(req: func.HttpRequest) -> dict[str, str] | func.HttpResponse:
    """The fields of a form or a JSON object (decision, comment, token); a malformed or oversized body
    is a 4xx naming it."""
    body = req.get_body()
    if len(body) > MAX_FORM_BYTES:
        return error_response(413, "body", f"{len(body)} bytes exceeds the {MAX_FORM_BYTES}-byte limit")
    try:
        text = body.decode("utf-8")
        if _is_form(req):
            fields = parse_qs(text, keep_blank_values=True, strict_parsing=bool(text), max_num_fields=10)
            return {key: values[-1] for key, values in fields.items()}
        data = json.loads(text or "{}")
    except (UnicodeDecodeError, ValueError, RecursionError) as error:  # RecursionError: JSON nested too deep
        return error_response(400, "body", f"malformed form or JSON: {str(error)[:200]}")
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        return error_response(400, "body", "expected a JSON object of strings: decision, comment, token")
    return data

"""Shared answers for the HTTP triggers: JSON bodies, errors that name the field, size limits, and the one
mapping from an error's class to the HTTP status it is answered with.

The status is chosen here, at the edge, from the class alone (the most specific class mapped wins):
a caller's mistake is a 4xx naming the field at fault; whatever is the service's own (a setting, the
policy, the store, Azure ML) is 503 with ``Retry-After``, its text stripped of server paths.
"""
from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import azure.functions as func

if TYPE_CHECKING:
    from controlplane.domain.errors import ControlPlaneError

MAX_BODY_BYTES = 512 * 1024  # common-alert-schema payloads are at most 256 KB
SERVICE_UNAVAILABLE = 503


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body, default=str), status_code=status, mimetype="application/json",
                             headers=headers)


def html_response(body: str, status: int = 200) -> func.HttpResponse:
    """A page: no framing, no caching, no referrer, and a Content-Security-Policy that lets run only the review
    page's one script (by its hash) and inline styles."""
    from controlplane.web.pages import OPEN_SCRIPT_HASH

    return func.HttpResponse(body, status_code=status, mimetype="text/html", charset="utf-8", headers={
        "Content-Security-Policy": f"default-src 'none'; style-src 'unsafe-inline'; script-src '{OPEN_SCRIPT_HASH}'; "
                                   "form-action 'self'",
        "X-Frame-Options": "DENY", "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})


def error_response(status: int, field: str, reason: str, **extra: Any) -> func.HttpResponse:
    headers = {"Retry-After": "30"} if status in (429, 503) else None
    if status == 401:
        headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
    return json_response(status, {"error": {"field": field, "reason": reason}, **extra}, headers)


@functools.cache
def statuses() -> dict[type[ControlPlaneError], int]:
    """Every error class of the tree and the status it is answered with (imported on first use: cold start)."""
    from controlplane.domain import errors as e
    from controlplane.domain.requests import RequestError

    ours = SERVICE_UNAVAILABLE  # not the caller's to fix; action groups and browsers retry a 503
    return {
        e.ControlPlaneError: ours,
        e.PermanentError: ours,
        e.TransientError: ours,
        # the caller's payload
        e.InvalidEvent: 400,
        e.UnsupportedEvent: 400,
        e.PayloadTooLarge: 413,
        e.LengthRequired: 411,
        # the caller's credentials
        e.Unauthorized: 401,
        e.Forbidden: 403,
        # the caller's vote
        e.VoteError: 400,
        e.TokenRequired: 401,
        e.VoteForbidden: 403,
        e.ReviewNotFound: 404,
        e.VoteConflict: 409,
        # the caller's outbox task
        e.TaskNotFound: 404,
        e.TaskRefused: 409,
        e.TaskChanged: 409,
        # the service's own configuration, state and dependencies
        e.PolicyError: ours,
        e.ConfigurationError: ours,
        e.DriftConfigError: ours,
        e.ReferenceLoadError: ours,
        e.ReferenceUnreachable: ours,
        e.GatewayError: ours,
        e.NotFound: ours,  # a model or deployment missing in the workspace, not a resource of this API
        e.OperationFailed: ours,
        e.StoreRefused: ours,
        e.StoreUnavailable: ours,
        e.EventInProgress: ours,
        RequestError: ours,
    }


def status_of(error: ControlPlaneError) -> int:
    """The status ``error`` is answered with: that of its most specific class in ``statuses()``."""
    mapped = statuses()
    return next(mapped[cls] for cls in type(error).__mro__ if cls in mapped)


def error_answer(error: ControlPlaneError, **extra: Any) -> func.HttpResponse:
    """The JSON answer to ``error``: a 4xx names the field and the reason; a 5xx names the service and a
    reason without server paths (the whole message goes to the log)."""
    from controlplane.handlers.queries import public_reason

    status = status_of(error)
    if status >= 500:
        return error_response(status, "service", public_reason(error), **extra)
    return error_response(status, error.subject, error.reason, **extra)


def answers_errors(trigger: Callable[[func.HttpRequest], func.HttpResponse]) -> Callable[..., func.HttpResponse]:
    """An HTTP trigger whose control-plane errors are answered by ``error_answer``; any other exception
    propagates to the host (a 500), as a bug should."""

    @functools.wraps(trigger)
    def answered(req: func.HttpRequest) -> func.HttpResponse:
        from controlplane.domain.errors import ControlPlaneError

        try:
            return trigger(req)
        except ControlPlaneError as error:
            return error_answer(error)

    return answered

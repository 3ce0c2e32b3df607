"""``report``: GET /api/reports/{name} - a drift report kept for reviewers (HTML), with the function key.

Reviewers reach their review's report without the key: POST /api/reviews/{id}/report with their
approval token (see triggers/reviews.py).
"""
from __future__ import annotations

import re

import azure.functions as func

from triggers.http import error_response

bp = func.Blueprint()

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


@bp.function_name("report")
@bp.route(route="reports/{name}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def report(req: func.HttpRequest) -> func.HttpResponse:
    return serve_report(req.route_params["name"])


def serve_report(name: str) -> func.HttpResponse:
    """The report's HTML, or an error that names no server path, store address or setting value."""
    import logging

    from controlplane import bootstrap
    from controlplane.domain.errors import ControlPlaneError, PermanentError
    from controlplane.handlers.queries import public_reason

    if not name:
        return error_response(404, "name", "this review has no report")
    if not _NAME.fullmatch(name) or ".." in name:
        return error_response(400, "name", "not a report name")
    try:
        artifacts = bootstrap.services().artifacts
    except ControlPlaneError as error:  # a setting or the store: named, with no secret value
        return error_response(503, "service", public_reason(error))
    try:
        found = artifacts.load(f"reports/{name}.html")
    except (PermanentError, OSError) as error:  # a name the store refuses: its message may carry a path
        logging.getLogger(__name__).warning("report unreadable: %s", type(error).__name__)
        found = None
    except ControlPlaneError as error:  # transient: its message carries the store's address
        logging.getLogger(__name__).warning("report unreadable for now: %s", type(error).__name__)
        return error_response(503, "service", "reports cannot be read now")
    if found is None:
        return error_response(404, "name", "no such report")
    # Evidently's report runs its own scripts: served as is, but never framed by another site.
    return func.HttpResponse(found, mimetype="text/html", charset="utf-8",
                             headers={"X-Frame-Options": "DENY", "Cache-Control": "no-store",
                                      "Referrer-Policy": "no-referrer"})

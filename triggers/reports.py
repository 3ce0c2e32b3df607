"""``report``: GET /api/reports/{name} - a drift report kept for reviewers (HTML), with the function key.

Reviewers reach their review's report without the key: POST /api/reviews/{id}/report with their
approval token (see triggers/reviews.py).
"""
from __future__ import annotations

import re

import azure.functions as func

from triggers.http import answers_errors, error_response, status_of
from triggers.traced import traced

bp = func.Blueprint()

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


@bp.function_name("report")
@bp.route(route="reports/{name}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@traced
@answers_errors
def report(req: func.HttpRequest) -> func.HttpResponse:
    return serve_report(req.route_params["name"])


def serve_report(name: str) -> func.HttpResponse:
    """The report's HTML, or an error that names no server path, store address or setting value (the
    callers answer errors of ``bootstrap.services()`` with ``answers_errors``)."""
    import logging

    from controlplane import bootstrap
    from controlplane.domain.errors import ControlPlaneError, PermanentError

    if not name:
        return error_response(404, "name", "this review has no report")
    if not _NAME.fullmatch(name) or ".." in name:
        return error_response(400, "name", "not a report name")
    artifacts = bootstrap.services().artifacts
    try:
        found = artifacts.load(f"reports/{name}.html")
    except (PermanentError, OSError) as error:  # a name the store refuses: its message may carry a path
        logging.getLogger(__name__).warning("report unreadable: %s", type(error).__name__)
        found = None
    except ControlPlaneError as error:  # transient: its message carries the store's address
        logging.getLogger(__name__).warning("report unreadable for now: %s", type(error).__name__)
        return error_response(status_of(error), "service", "reports cannot be read now")
    if found is None:
        return error_response(404, "name", "no such report")
    # Evidently's report runs its own scripts: served as is, but never framed by another site.
    return func.HttpResponse(found, mimetype="text/html", charset="utf-8",
                             headers={"X-Frame-Options": "DENY", "Cache-Control": "no-store",
                                      "Referrer-Policy": "no-referrer"})

"""``report``: GET /api/reports/{name} - a drift report kept for reviewers (HTML)."""
from __future__ import annotations

import azure.functions as func

from triggers.http import error_response

bp = func.Blueprint()


@bp.function_name("report")
@bp.route(route="reports/{name}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def report(req: func.HttpRequest) -> func.HttpResponse:
    from controlplane import bootstrap
    from controlplane.errors import ControlPlaneError, PermanentError

    try:
        found = bootstrap.services().artifacts.load(f"reports/{req.route_params['name']}.html")
    except PermanentError as error:
        return error_response(400, "name", str(error))
    except ControlPlaneError as error:
        return error_response(503, "service", str(error))
    if found is None:
        return error_response(404, "name", f"no report {req.route_params['name']!r}")
    # Evidently's report runs its own scripts: served as is, but never framed by another site.
    return func.HttpResponse(found, mimetype="text/html", charset="utf-8", headers={"X-Frame-Options": "DENY"})

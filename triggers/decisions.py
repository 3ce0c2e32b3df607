"""``decisions``: GET /api/decisions?model=&limit= - the decision ledger, newest first."""
from __future__ import annotations

import azure.functions as func

from triggers.http import error_response, json_response

bp = func.Blueprint()


@bp.function_name("decisions")
@bp.route(route="decisions", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def decisions(req: func.HttpRequest) -> func.HttpResponse:
    from controlplane import bootstrap
    from controlplane.errors import ControlPlaneError, InvalidEvent
    from handlers.queries import list_decisions, parse_limit

    try:
        limit = parse_limit(req.params.get("limit"))
        found = list_decisions(bootstrap.services(), req.params.get("model"), limit)
    except InvalidEvent as error:
        return error_response(400, error.path, error.reason)
    except ControlPlaneError as error:
        return error_response(503, "service", str(error))
    return json_response(200, {"decisions": [d.to_json() for d in found]})

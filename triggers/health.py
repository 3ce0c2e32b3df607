"""``health``: GET /api/health - 200 when the policy loads and the store answers, else 503 naming why."""
from __future__ import annotations

import azure.functions as func

from triggers.http import json_response

bp = func.Blueprint()


@bp.function_name("health")
@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    from controlplane import bootstrap
    from controlplane.handlers.queries import check_health

    result = check_health(bootstrap.services)
    return json_response(200 if result.healthy else 503,
                         {"status": "ok" if result.healthy else "unavailable", "checks": result.checks})

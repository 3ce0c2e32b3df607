"""``health``: GET /api/health - 200 when the policy loads, the store answers and the sweep ran lately, else 503
naming why; with the last sweep's view of the outbox, rollouts and incidents."""
from __future__ import annotations

import azure.functions as func

from triggers.http import json_response
from triggers.traced import traced

bp = func.Blueprint()


@bp.function_name("health")
@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@traced
def health(req: func.HttpRequest) -> func.HttpResponse:
    from controlplane import bootstrap
    from controlplane.handlers.health import check_health

    result = check_health(bootstrap.services)
    return json_response(200 if result.healthy else 503,
                         {"status": "ok" if result.healthy else "unavailable", "checks": result.checks,
                          **result.details})

"""``decisions``: GET /api/decisions?model=&outcome=&since=&until=&limit=&continuation= - the decision ledger,
newest first, a page at a time."""
from __future__ import annotations

import azure.functions as func

from triggers.http import answers_errors, json_response
from triggers.traced import traced

bp = func.Blueprint()


@bp.function_name("decisions")
@bp.route(route="decisions", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@traced
@answers_errors
def decisions(req: func.HttpRequest) -> func.HttpResponse:
    from controlplane import bootstrap
    from controlplane.handlers.queries import DecisionQuery, list_decisions, parse_limit

    limit = parse_limit(req.params.get("limit"))
    page = list_decisions(bootstrap.services(), DecisionQuery.parse(req.params), limit, req.params.get("continuation"))
    return json_response(200, {"decisions": [d.to_json() for d in page.decisions],
                               "continuation": page.continuation})

"""``lists``: GET /api/ui/{list}?state=&limit=&continuation= - outbox tasks, rollouts, incidents or telemetry
windows, a page at a time: HTML for people, JSON with ``Accept: application/json``."""
from __future__ import annotations

import azure.functions as func

from triggers.http import answers_errors, html_response, json_response
from triggers.traced import traced

bp = func.Blueprint()


@bp.function_name("lists")
@bp.route(route="ui/{list}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@traced
@answers_errors
def lists(req: func.HttpRequest) -> func.HttpResponse:
    from controlplane import bootstrap
    from controlplane.handlers.queries import list_named, parse_limit
    from controlplane.web.lists import list_page

    name, state = req.route_params.get("list", ""), req.params.get("state") or ""
    page = list_named(bootstrap.services(), name, state, parse_limit(req.params.get("limit")),
                      req.params.get("continuation"))
    if "application/json" in req.headers.get("Accept", ""):
        return json_response(200, {name: [item.to_json() for item in page.items], "continuation": page.continuation})
    return html_response(list_page(name, page.items, state=state, continuation=page.continuation))

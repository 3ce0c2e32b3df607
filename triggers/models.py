"""``model``: GET /api/models/{name} - one model's whole story, newest first: where it serves and since when, its
decisions, reviews and rollouts. HTML for people; JSON with ``Accept: application/json`` or ``?format=json``."""
from __future__ import annotations

import azure.functions as func

from triggers.http import answers_errors, html_response, json_response
from triggers.traced import traced

bp = func.Blueprint()


@bp.function_name("model")
@bp.route(route="models/{name}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@traced
@answers_errors
def model(req: func.HttpRequest) -> func.HttpResponse:
    from controlplane import bootstrap
    from controlplane.handlers.queries import model_story, parse_limit, story_json
    from controlplane.web.pages import model_page

    name = req.route_params.get("name", "")[:256]
    story = model_story(bootstrap.services(), name, parse_limit(req.params.get("limit"), default=100))
    if req.params.get("format") == "json" or "application/json" in req.headers.get("Accept", ""):
        return json_response(200, story_json(story))
    serving = [vars(s) for s in story.serving]
    return html_response(model_page(story.name, serving, story.decisions, story.reviews, story.rollouts))

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
    from controlplane.handlers import taskops
    from controlplane.handlers.queries import list_named, parse_limit
    from controlplane.web.lists import list_page

    services = bootstrap.services()
    name, state = req.route_params.get("list", ""), req.params.get("state") or ""
    page = list_named(services, name, state, parse_limit(req.params.get("limit")), req.params.get("continuation"))
    if "application/json" in req.headers.get("Accept", ""):
        return json_response(200, {name: [item.to_json() for item in page.items], "continuation": page.continuation})
    dead = len(taskops.dead_letters(services)) if name == "tasks" else 0
    return html_response(list_page(name, page.items, state=state, continuation=page.continuation,
                                   key=req.params.get("code") or "", message=_after_action(services, req.params, dead),
                                   dead_letters=dead))


def _after_action(services, params, dead: int) -> str:
    """What the outbox page says after a button sent it back: a task's state is read from the task, never from the
    address; after a replay the address holds only how many were replayed, and ``dead`` (from the store) how many
    are left."""
    from controlplane.web.lists import replay_message

    for action in ("retry", "cancel"):
        task_id = params.get(action) or ""
        task = services.store.task(task_id) if task_id.isalnum() and len(task_id) <= 64 else None
        if task is not None:
            return f"{action.title()} of task {task.id}: it is now {task.state.value}."
    replayed = params.get("replay") or ""
    counted = replayed.isascii() and replayed.isdigit() and len(replayed) <= 4
    return replay_message(int(replayed), dead) if counted else ""


@bp.function_name("task_action")
@bp.route(route="ui/tasks/{id}/{action}", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@traced
@answers_errors
def task_action(req: func.HttpRequest) -> func.HttpResponse:
    """POST /api/ui/tasks/{id}/retry|cancel and /api/ui/tasks/dead-letters/replay - the outbox page's buttons.
    Done, the browser goes back to the page (post/redirect/get), which reads the task's new state from the store
    (or says how many tasks a replay put back); refused, the page says why (409)."""
    from urllib.parse import urlencode

    from controlplane import bootstrap
    from controlplane.domain.errors import TaskRefused
    from controlplane.handlers import taskops
    from controlplane.handlers.queries import list_named
    from controlplane.web.lists import list_page

    task_id, action = req.route_params.get("id", ""), req.route_params.get("action", "")
    back = {k: v for k, v in (("code", req.params.get("code")), ("state", req.params.get("state"))) if v}
    services = bootstrap.services()
    try:
        done, said = taskops.outbox_action(services, task_id, action)
    except TaskRefused as refused:
        page = list_named(services, "tasks", back.get("state", ""), 50)
        return html_response(list_page("tasks", page.items, state=back.get("state", ""),
                                       continuation=page.continuation, key=back.get("code", ""),
                                       message=f"Task {task_id} was not changed: {refused.reason}",
                                       dead_letters=len(taskops.dead_letters(services))), 409)
    location = f"/api/ui/tasks?{urlencode({**back, done: said})}"
    return func.HttpResponse(status_code=303, headers={"Location": location, "Cache-Control": "no-store"})

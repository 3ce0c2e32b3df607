"""The local host's routing and scheduling, in process, on a small app of its own."""
from __future__ import annotations

import json
from datetime import UTC, datetime

import azure.functions as func

from controlplane.dev.localhost import LocalHost


def small_app(calls):
    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @app.function_name("tick")
    @app.timer_trigger(arg_name="timer", schedule="0 */1 * * * *")
    def tick(timer: func.TimerRequest) -> None:
        calls.append(("tick", timer.past_due))

    @app.function_name("item")
    @app.route(route="items/{id}", methods=["GET"])
    def item(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(json.dumps({"id": req.route_params["id"], "q": req.params.get("q")}),
                                 mimetype="application/json")

    @app.function_name("boom")
    @app.route(route="boom", methods=["POST"])
    def boom(req: func.HttpRequest) -> func.HttpResponse:
        raise RuntimeError("broken function")

    return app


def epoch(*parts):
    return int(datetime(*parts, tzinfo=UTC).timestamp())


def test_timers_fire_on_their_schedule_and_late_ones_are_past_due():
    calls = []
    host = LocalHost(small_app(calls))
    schedules = host.timers()

    assert host.fire_due_timers(schedules, epoch(2026, 11, 22, 10, 0, 1), epoch(2026, 11, 22, 10, 0, 59)) == []
    assert host.fire_due_timers(schedules, epoch(2026, 11, 22, 10, 0, 59), epoch(2026, 11, 22, 10, 1, 0)) == ["tick"]
    assert host.fire_due_timers(schedules, epoch(2026, 11, 22, 10, 1, 0), epoch(2026, 11, 22, 10, 3, 30)) == [
        "tick", "tick"]
    assert calls == [("tick", False), ("tick", True), ("tick", True)]


def test_route_templates_methods_and_failures():
    host = LocalHost(small_app([]))
    reply = host.handle("GET", "/api/items/42?q=x", {}, b"")
    assert reply.status == 200 and json.loads(reply.body) == {"id": "42", "q": "x"}
    assert host.handle("POST", "/api/items/42", {}, b"").status == 405
    failed = host.handle("POST", "/api/boom", {}, b"")
    assert failed.status == 500 and json.loads(failed.body)["message"] == "broken function"
    assert host.handle("GET", "/api/items/42", {}, b"").status == 200  # still serving
    assert host.handle("POST", "/admin/functions/tick", {}, b'{"input": ""}').status == 202
    assert host.handle("POST", "/admin/functions/item", {}, b'{}').status == 400  # HTTP functions are not admin-invoked

"""A local Functions host for machines without Core Tools.

It loads the ``app`` object from ``function_app.py`` and serves its functions at the URLs Core Tools
uses. Each request becomes the input the Functions host sends the Python worker (a ``Datum`` plus
trigger metadata, built by the ``*_input`` functions below), decoded as the worker decodes it: the
``azure.functions`` converter registered for the trigger, or the value as sent when the parameter is
``str`` or ``bytes`` (the worker's generic binding). So a local run exercises Azure's decoding.

- ``/api/<route>``: HTTP functions (every request is anonymous, as with Core Tools);
- ``POST /runtime/webhooks/EventGrid?functionName=<name>``: Event Grid deliveries (header
  ``aeg-event-type``), including the subscription-validation handshake and CloudEvents' OPTIONS;
- ``POST /admin/functions/<name>`` with ``{"input": "<payload>"}``: any other trigger (Event Hubs,
  timer); answers 202 like Core Tools;
- ``GET /admin/host/status``: readiness.

Timer functions also run on their NCRONTAB schedule. Like the host, it serves on while functions
fail: an exception becomes a 500 for that request only. Besides its role as a host, this module is
the one place outside ``triggers/`` that imports ``azure.functions``.
"""
from __future__ import annotations

import importlib
import itertools
import json
import logging
import os
import re
import threading
import time
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import azure.functions as func
from azure.functions import meta

from controlplane.ncrontab import Schedule
from controlplane.settings import load_local_settings

logger = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 100 * 1024 * 1024  # the Functions host's default request limit
LOCAL_DEFAULTS = {"TELEMETRY_EVENTHUB_NAME": "telemetry", "TELEMETRY_CONSUMER_GROUP": "$Default"}


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()

    @staticmethod
    def json(status: int, body: Any, *headers: tuple[str, str]) -> Reply:
        return Reply(status, json.dumps(body, default=str).encode(), (("Content-Type", "application/json"),) + headers)


@dataclass(frozen=True)
class Function:
    name: str
    trigger: dict[str, Any]
    call: Callable[..., Any]

    @property
    def type(self) -> str:
        return self.trigger["type"]

    @staticmethod
    def of(indexed: Any) -> Function:
        """One of ``app.get_functions()``, with the trigger binding the host reads from its function.json."""
        bindings = json.loads(indexed.get_function_json())["bindings"]
        trigger = next(b for b in bindings if b["type"].endswith("Trigger"))
        return Function(indexed.get_function_name(), trigger, indexed.get_user_function())

    def invoke(self, datum: meta.Datum, metadata: Mapping[str, meta.Datum] | None = None) -> Any:
        """Run the function on one host input, decoded as the worker decodes it."""
        return self.call(decode_input(self, datum, metadata or {}))


def decode_input(function: Function, datum: meta.Datum, metadata: Mapping[str, meta.Datum]) -> Any:
    """The trigger argument the worker builds: a ``str`` or ``bytes`` parameter gets the value as the host
    sent it (the worker's generic binding); any other the trigger's ``azure.functions`` converter output."""
    annotation = typing.get_type_hints(function.call).get(function.trigger["name"])
    if annotation in (str, bytes):
        value = datum.value
        if annotation is bytes and isinstance(value, str):
            return value.encode()
        return value.decode() if annotation is str and isinstance(value, bytes) else value
    converter = func.get_binding_registry().get(function.type)
    return converter.decode(datum, trigger_metadata=metadata)


class LocalHost:
    """Dispatches local requests to the functions of one ``func.FunctionApp``."""

    def __init__(self, app: func.FunctionApp | None = None, functions: Iterable[Function] = ()) -> None:
        """Serve ``app``'s functions (``app.get_functions()`` runs once per app), or functions taken already."""
        found = map(Function.of, app.get_functions()) if app is not None else functions
        self.functions = {function.name: function for function in found}
        self._routes = [
            (_route_pattern(f.trigger.get("route") or f.name), {m.upper() for m in f.trigger.get("methods") or ()}, f)
            for f in self.functions.values() if f.type == "httpTrigger"
        ]
        self._sequence = itertools.count(time.time_ns() // 1000)
        self._last_fired: dict[str, datetime] = {}

    # -- request routing ------------------------------------------------------------------------
    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Reply:
        url = urlsplit(target)
        path = url.path.rstrip("/") or "/"
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        try:
            if path.lower() == "/runtime/webhooks/eventgrid":
                return self._event_grid(method, query.get("functionName", ""), headers, body)
            if path.lower().startswith("/admin/functions/") and method == "POST":
                return self._admin(path.split("/", 3)[3], body)
            if path.lower() == "/admin/host/status":
                return Reply.json(200, {"state": "Running", "functions": sorted(self.functions)})
            if path.lower().startswith("/api/") or path.lower() == "/api":
                return self._http(method, target, path[len("/api/"):], query, headers, body)
        except Exception as error:  # the host keeps serving whatever a function does
            logger.exception("function failed for %s %s", method, path)
            return Reply.json(500, {"error": type(error).__name__, "message": str(error)})
        return Reply.json(404, {"error": "not found", "path": path})

    def _http(self, method: str, target: str, route: str, query: dict[str, str], headers: dict[str, str],
              body: bytes) -> Reply:
        for pattern, methods, function in self._routes:
            match = pattern.fullmatch(route)
            if match is None:
                continue
            if methods and method not in methods:
                return Reply.json(405, {"error": f"{method} not allowed", "allowed": sorted(methods)})
            response = function.invoke(http_input(method, f"http://localhost{target}", headers, query,
                                                  match.groupdict(), body))
            response_headers = tuple((k, v) for k, v in response.headers.items() if k.lower() != "content-type")
            content_type = response.mimetype + (f"; charset={response.charset}" if response.charset else "")
            headers_out = (("Content-Type", content_type),) + response_headers
            return Reply(response.status_code, response.get_body(), headers_out)
        return Reply.json(404, {"error": "no function serves this route", "route": route})

    def _event_grid(self, method: str, name: str, headers: dict[str, str], body: bytes) -> Reply:
        function = self.functions.get(name)
        if function is None or function.type != "eventGridTrigger":
            return Reply.json(404, {"error": f"no Event Grid function named {name!r}"})
        if method == "OPTIONS":  # CloudEvents webhook validation
            origin = headers.get("webhook-request-origin", "*")
            return Reply(200, b"", (("WebHook-Allowed-Origin", origin), ("WebHook-Allowed-Rate", "*")))
        if method != "POST":
            return Reply.json(405, {"error": f"{method} not allowed"})
        kind = headers.get("aeg-event-type", "")
        try:
            payload = json.loads(body)
        except ValueError as error:
            return Reply.json(400, {"error": f"body is not JSON: {error}"})
        items = payload if isinstance(payload, list) else [payload]
        if kind == "SubscriptionValidation":
            code = (items[0].get("data") or {}).get("validationCode") if items and isinstance(items[0], dict) else None
            if not code:
                return Reply.json(400, {"error": "validation event carries no data.validationCode"})
            return Reply.json(200, {"validationResponse": code})
        if kind != "Notification":
            return Reply.json(400, {"error": "header aeg-event-type must be Notification or SubscriptionValidation"})
        failed, rejected = [], []
        for index, item in enumerate(items):
            if not isinstance(item, dict):  # not an event: the host's extension refuses it
                rejected.append(index)
                continue
            try:  # each event is its own invocation, decoded on its own, as with the real host
                function.invoke(event_grid_input(item))
            except Exception as error:
                logger.exception("%s failed on event %s (index %d)", name, item.get("id"), index)
                failed.append({"index": index, "id": item.get("id"), "error": f"{type(error).__name__}: {error}"})
        if failed:
            return Reply.json(500, {"failed": failed, "events": len(items)})
        if rejected:
            return Reply.json(400, {"error": "events must be JSON objects", "indexes": rejected})
        return Reply(202)

    def _admin(self, name: str, body: bytes) -> Reply:
        function = self.functions.get(name)
        if function is None:
            return Reply.json(404, {"error": f"no function named {name!r}"})
        try:
            request = json.loads(body or b"{}")
        except ValueError as error:
            return Reply.json(400, {"error": f"body is not JSON: {error}"})
        if not isinstance(request, dict):
            return Reply.json(400, {"error": "body must be an object like {\"input\": \"...\"}"})
        payload = request.get("input", "")
        if function.type == "timerTrigger":
            function.invoke(timer_input(past_due=False))
        elif function.type == "eventHubTrigger":
            sequence = request.get("sequenceNumber")
            function.invoke(*event_hub_input(
                [payload if isinstance(payload, str) else json.dumps(payload)],
                partition=str(request.get("partitionId", "local")),
                first_sequence=next(self._sequence) if sequence is None else int(sequence)))
        elif function.type == "eventGridTrigger":
            function.invoke(event_grid_input(payload))
        else:
            return Reply.json(400, {"error": f"{function.type} functions are not invoked through /admin"})
        return Reply(202)

    # -- timers -----------------------------------------------------------------------------------
    def timers(self) -> list[tuple[Schedule, Function]]:
        return [(Schedule(f.trigger["schedule"]), f) for f in self.functions.values() if f.type == "timerTrigger"]

    def fire_due_timers(self, schedules: list[tuple[Schedule, Function]], after: int, until: int) -> list[str]:
        """Run the timers scheduled in the whole seconds (after, until]; a late one is marked past due."""
        fired, last = [], self._last_fired
        for second in range(after + 1, until + 1):
            moment = datetime.fromtimestamp(second, UTC)
            for schedule, function in schedules:
                if schedule.matches(moment):
                    fired.append(function.name)
                    try:
                        function.invoke(timer_input(past_due=second < until, last=last.get(function.name),
                                                    now=moment))
                        last[function.name] = moment
                    except Exception:
                        logger.exception("timer %s failed", function.name)
        return fired

    def run_timers(self, stop: threading.Event) -> None:
        schedules = self.timers()
        last = int(time.time())
        while not stop.wait(0.2):
            now = int(time.time())
            self.fire_due_timers(schedules, last, now)
            last = now


# -- what the host sends the worker, per trigger ----------------------------------------------------------

def http_input(method: str, url: str, headers: Mapping[str, str], query: Mapping[str, str],
               route_params: Mapping[str, str], body: bytes) -> meta.Datum:
    """An HTTP request as the host sends it (``RpcHttp``, with the raw body as bytes)."""
    def strings(values: Mapping[str, str]) -> dict[str, meta.Datum]:
        return {name: meta.Datum(value, "string") for name, value in values.items()}

    return meta.Datum({"method": meta.Datum(method, "string"), "url": meta.Datum(url, "string"),
                       "headers": strings(headers), "query": strings(query), "params": strings(route_params),
                       "body": meta.Datum(body, "bytes")}, "http")


def event_grid_input(event: Any) -> meta.Datum:
    """One element of an Event Grid delivery, as JSON text: the host invokes the function once per event."""
    return meta.Datum(event if isinstance(event, str) else json.dumps(event), "json")


def timer_input(past_due: bool, last: datetime | None = None, now: datetime | None = None,
                every: timedelta = timedelta(minutes=1)) -> meta.Datum:
    """A timer tick as the host sends it: ``IsPastDue``, ``Schedule`` and ``ScheduleStatus`` (when monitored)."""
    now = now or datetime.now(UTC)
    status = {"Last": (last or datetime.min.replace(tzinfo=UTC)).isoformat(), "Next": (now + every).isoformat(),
              "LastUpdated": now.isoformat()}
    return meta.Datum(json.dumps({"Schedule": {"AdjustForDST": True}, "ScheduleStatus": status,
                                  "IsPastDue": past_due}), "json")


def event_hub_input(bodies: list[str | bytes], partition: str, first_sequence: int,
                    properties: list[dict[str, Any]] | None = None,
                    enqueued: datetime | None = None) -> tuple[meta.Datum, dict[str, meta.Datum]]:
    """A batch as the Event Hubs extension hands it to a cardinality-many function: the bodies as one
    collection, and the trigger metadata arrays (one entry per event) with the shared partition context."""
    moment = (enqueued or datetime.now(UTC)).isoformat()
    count = len(bodies)
    sequences = [first_sequence + i for i in range(count)]
    system = [{"SequenceNumber": sequence, "Offset": str(sequence), "EnqueuedTimeUtc": moment, "PartitionKey": None}
              for sequence in sequences]
    metadata = {
        "SequenceNumberArray": meta.Datum(json.dumps(sequences), "json"),
        "OffsetArray": meta.Datum(json.dumps([str(sequence) for sequence in sequences]), "json"),
        "EnqueuedTimeUtcArray": meta.Datum(json.dumps([moment] * count), "json"),
        "PartitionKeyArray": meta.Datum(json.dumps([None] * count), "json"),
        "SystemPropertiesArray": meta.Datum(json.dumps(system), "json"),
        "PropertiesArray": meta.Datum(json.dumps(properties or [{} for _ in bodies]), "json"),
        "PartitionContext": meta.Datum(json.dumps({"PartitionId": partition, "EventHubName": "local",
                                                   "ConsumerGroup": "$Default"}), "json"),
    }
    encoded = [body if isinstance(body, bytes) else body.encode() for body in bodies]
    return meta.Datum(SimpleNamespace(bytes=encoded), "collection_bytes"), metadata


def event_hub_events(bodies: list[str | bytes], partition: str, first_sequence: int,
                     properties: list[dict[str, Any]] | None = None) -> list[func.EventHubEvent]:
    """The events ``azure.functions``' Event Hubs converter makes of such a batch."""
    datum, metadata = event_hub_input(bodies, partition, first_sequence, properties)
    return func.get_binding_registry().get("eventHubTrigger").decode(datum, trigger_metadata=metadata)


def _route_pattern(route: str) -> re.Pattern[str]:
    """A Functions route template (``reviews/{id}``, ``{name:alpha?}``) as a regex."""
    parts = []
    for piece in re.split(r"(\{[^}]+\})", route.strip("/")):
        if piece.startswith("{"):
            name = piece[1:-1].split(":", 1)[0].rstrip("?")
            parts.append(f"(?P<{name}>[^/]+)")
        else:
            parts.append(re.escape(piece))
    return re.compile("".join(parts), re.IGNORECASE)


class _Handler(BaseHTTPRequestHandler):
    host: LocalHost
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_REQUEST_BYTES:
            reply = Reply.json(413, {"error": f"request body over {MAX_REQUEST_BYTES} bytes"})
            self.close_connection = True
        else:
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            reply = self.host.handle(self.command, self.path, headers, body)
        self.send_response(reply.status)
        for key, value in reply.headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _serve

    def log_message(self, format: str, *args: Any) -> None:
        logger.info("%s %s", self.address_string(), format % args)


def serve(port: int = 7071, bind: str = "127.0.0.1", app_module: str = "function_app", timers: bool = True,
          ready: Callable[[ThreadingHTTPServer], None] | None = None) -> None:
    """Run the host until interrupted."""
    load_local_settings()
    for key, value in LOCAL_DEFAULTS.items():
        os.environ.setdefault(key, value)
    app = importlib.import_module(app_module).app
    host = LocalHost(app)
    handler = type("Handler", (_Handler,), {"host": host})
    server = ThreadingHTTPServer((bind, port), handler)
    server.daemon_threads = True
    stop = threading.Event()
    if timers:
        threading.Thread(target=host.run_timers, args=(stop,), name="timers", daemon=True).start()
    logger.info("local host on http://%s:%d serving %s", bind, server.server_address[1], ", ".join(host.functions))
    if ready:
        ready(server)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        stop.set()
        server.server_close()

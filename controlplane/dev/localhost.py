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
fail: an exception becomes a 500 for that request only; a malformed request (its length, its JSON, its
shape) is answered 4xx and never reaches a function. Requests are served by a bounded pool of worker
threads, each connection with a read timeout, behind a listen backlog sized for bursts of clients.
Besides its role as a host, this module is the one place outside ``triggers/`` that imports
``azure.functions``.
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import azure.functions as func
from azure.functions import meta

from controlplane.domain.errors import InvalidEvent, LengthRequired, PayloadTooLarge
from controlplane.domain.ncrontab import Schedule
from controlplane.settings import load_local_settings
from triggers.http import status_of

logger = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 100 * 1024 * 1024  # the Functions host's default request limit
WORKERS = 16  # requests served at once; more connections wait for a worker
LISTEN_BACKLOG = 128  # connections the kernel queues before the server accepts them
READ_TIMEOUT_SECONDS = 10.0  # a client silent this long mid-request (or idle between requests) is dropped
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
        except InvalidEvent as refused:  # refused by the host (functions record invalid input instead of raising)
            return Reply.json(status_of(refused), {"error": str(refused)})
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
        if kind == "SubscriptionValidation":
            payload = decode_json(body)
            first = payload[0] if isinstance(payload, list) and payload else payload
            data = first.get("data") if isinstance(first, dict) else None
            code = data.get("validationCode") if isinstance(data, dict) else None
            if not isinstance(code, str) or not code:
                return Reply.json(400, {"error": "validation event carries no data.validationCode"})
            return Reply.json(200, {"validationResponse": code})
        if kind != "Notification":
            return Reply.json(400, {"error": "header aeg-event-type must be Notification or SubscriptionValidation"})
        failed, rejected = [], []
        items = delivery_events(body)
        for index, item in enumerate(items):
            datum = _event_datum(item)
            if datum is None:  # not an event: the host's extension refuses it
                rejected.append(index)
                continue
            event_id = item.get("id") if isinstance(item, dict) else None
            try:  # each event is its own invocation, decoded on its own, as with the real host
                function.invoke(datum)
            except Exception as error:
                logger.exception("%s failed on event %.100r (index %d)", name, event_id, index)
                failed.append({"index": index, "id": event_id, "error": f"{type(error).__name__}: {error}"})
        if failed:
            return Reply.json(500, {"failed": failed, "events": len(items)})
        if rejected:
            return Reply.json(400, {"error": "events must be JSON objects", "indexes": rejected})
        return Reply(202)

    def _admin(self, name: str, body: bytes) -> Reply:
        function = self.functions.get(name)
        if function is None:
            return Reply.json(404, {"error": f"no function named {name!r}"})
        request = decode_json(body or b"{}")
        if not isinstance(request, dict):
            return Reply.json(400, {"error": "body must be an object like {\"input\": \"...\"}"})
        payload = request.get("input", "")
        if function.type == "timerTrigger":
            function.invoke(timer_input(past_due=False))
        elif function.type == "eventHubTrigger":
            sequence = request.get("sequenceNumber")
            if sequence is not None and (type(sequence) is not int or not 0 <= sequence < 2**63):
                return Reply.json(400, {"error": "sequenceNumber must be a whole number from 0 to 2^63-1"})
            partition = request.get("partitionId", "local")
            if type(partition) not in (str, int) or not 0 < len(str(partition)) <= 64:
                return Reply.json(400, {"error": "partitionId must be a string or number of 1 to 64 characters"})
            function.invoke(*event_hub_input(
                [payload if isinstance(payload, str) else encode_json(payload)], partition=str(partition),
                first_sequence=next(self._sequence) if sequence is None else sequence))
        elif function.type == "eventGridTrigger":
            function.invoke(event_grid_input(payload if isinstance(payload, str) else encode_json(payload)))
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


# -- decoding what clients post ------------------------------------------------------------------------------

def decode_json(body: bytes) -> Any:
    """A request body as JSON, or ``InvalidEvent`` saying why not."""
    try:
        return json.loads(body)
    except RecursionError:
        raise InvalidEvent("body", "not JSON the host can read: nested too deeply") from None
    except ValueError as error:  # not UTF-8, not JSON, or a number past Python's digit limit
        raise InvalidEvent("body", f"not JSON: {str(error)[:200]}") from None


def encode_json(value: Any) -> str:
    """``value`` as JSON text again, or ``InvalidEvent`` when it is too deep to encode."""
    try:
        return json.dumps(value)
    except (RecursionError, ValueError):
        raise InvalidEvent("input", "nested too deeply to pass on") from None


class EventText(str):
    """One event of a delivery kept as its JSON text (it could not be decoded whole here)."""


def _event_datum(item: Any) -> meta.Datum | None:
    """The input of one invocation for an event of a delivery; None for what is not an event."""
    if not isinstance(item, (dict, EventText)):
        return None
    try:
        return event_grid_input(item)
    except InvalidEvent:
        return None


_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{},]')


def delivery_events(body: bytes) -> list[Any]:
    """The events of an Event Grid delivery: one event or an array of them, each decoded, or kept as its JSON
    text when it cannot be decoded whole (nested or numbered past Python's limits) so that the function
    records it as invalid and the other events of the delivery are still handled."""
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InvalidEvent("body", f"not JSON: {str(error)[:200]}") from None
    except (RecursionError, ValueError):  # well-formed as far as read, but past Python's limits
        return [_decoded_or_text(item) for item in split_array(body.decode("utf-8-sig", "replace"))]
    return payload if isinstance(payload, list) else [payload]


def _decoded_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except (RecursionError, ValueError):
        return EventText(text) if text.startswith("{") else None  # an event is an object; anything else is refused


def split_array(text: str) -> list[str]:
    """The items of a top-level JSON array as texts, found without decoding them; any other text is one item."""
    stripped = text.strip()
    if not stripped.startswith("["):
        return [stripped]
    items, depth, start = [], 0, 1
    for token in _TOKENS.finditer(stripped):
        mark = token.group()
        if mark in ("[", "{"):
            depth += 1
        elif mark in ("]", "}"):
            depth -= 1
            if depth == 0:
                items.append(stripped[start:token.start()])
                break
        elif mark == "," and depth == 1:
            items.append(stripped[start:token.start()])
            start = token.end()
    return [item.strip() for item in items if item.strip()]


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
    return meta.Datum(event if isinstance(event, str) else encode_json(event), "json")


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
    default_request_version = "HTTP/1.0"  # so that a request line too broken to name its version gets a status line
    timeout = READ_TIMEOUT_SECONDS  # set on the connection's socket: a stalled client frees its worker

    def _serve(self) -> None:
        head = self.command == "HEAD"  # answered as GET, without the body
        try:
            body = self._body()
        except InvalidEvent as refused:
            reply = Reply.json(status_of(refused), {"error": str(refused)})
            self.close_connection = True  # the rest of what the client sent cannot be told from the next request
        except TimeoutError:
            reply = Reply.json(408, {"error": f"no request body within {self.timeout:g} s"})
            self.close_connection = True
        else:
            headers = {k.lower(): v for k, v in self.headers.items()}
            reply = self.host.handle("GET" if head else self.command, self.path, headers, body)
        self.send_response(reply.status)
        for key, value in reply.headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if not head:
            self.wfile.write(reply.body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        if code == 505:  # a request line naming HTTP/2 or later is a client's mistake here, like any other
            code, message = 400, "HTTP version not supported: send HTTP/1.1"
        super().send_error(code, message, explain)

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise LengthRequired("Transfer-Encoding", "chunked bodies are not read here: send Content-Length")
        declared = self.headers.get_all("Content-Length") or []
        if len(set(declared)) > 1:
            raise InvalidEvent("Content-Length", "conflicting headers")
        text = declared[0].strip() if declared else "0"
        if not (text.isascii() and text.isdigit()):
            raise InvalidEvent("Content-Length", f"must be a whole number, got {text[:40]!r}")
        length = int(text) if len(text) <= 18 else MAX_REQUEST_BYTES + 1
        if length > MAX_REQUEST_BYTES:
            raise PayloadTooLarge("body", f"over {MAX_REQUEST_BYTES} bytes")
        body = self.rfile.read(length) if length else b""
        if len(body) < length:
            raise InvalidEvent("body", f"ended after {len(body)} of {length} bytes")
        return body

    def __getattr__(self, name: str) -> Any:
        if name.startswith("do_"):  # every method reaches the routing, which answers 405 where it does not apply
            return self._serve
        raise AttributeError(name)

    def log_message(self, format: str, *args: Any) -> None:
        logger.info("%s %s", self.address_string(), redact(format % args))


_QUERY_VALUE = re.compile(r"([?&][^=\s&?#'\"]*=)[^&\s#'\"]*")


def redact(line: str) -> str:
    """An access-log line with every query value replaced: a query string can carry a function key
    (``code=``) or an old approval link's token, and neither belongs in a log."""
    return _QUERY_VALUE.sub(r"\1<redacted>", line)


class PooledHTTPServer(HTTPServer):
    """An HTTP server whose connections are served by a bounded pool of threads."""

    request_queue_size = LISTEN_BACKLOG

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], workers: int = WORKERS):
        # the pool first: a failed bind calls server_close, which shuts it down
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="http")
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        self._pool.submit(self._serve_connection, request, client_address)

    def _serve_connection(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def server_close(self) -> None:
        super().server_close()
        self._pool.shutdown(wait=False, cancel_futures=True)


def make_server(host: LocalHost, port: int = 7071, bind: str = "127.0.0.1", workers: int = WORKERS,
                read_timeout: float = READ_TIMEOUT_SECONDS) -> PooledHTTPServer:
    """The HTTP server of ``host`` (not started: call ``serve_forever``)."""
    handler = type("Handler", (_Handler,), {"host": host, "timeout": read_timeout})
    return PooledHTTPServer((bind, port), handler, workers)


def serve(port: int = 7071, bind: str = "127.0.0.1", app_module: str = "function_app", timers: bool = True,
          ready: Callable[[PooledHTTPServer], None] | None = None) -> None:
    """Run the host until interrupted."""
    load_local_settings()
    for key, value in LOCAL_DEFAULTS.items():
        os.environ.setdefault(key, value)
    app = importlib.import_module(app_module).app
    host = LocalHost(app)
    server = make_server(host, port, bind)
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

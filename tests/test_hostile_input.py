"""Hostile input at every intake route: never a 5xx, never a crash, never a good event lost.

Named families (times, nesting, numbers, Unicode, sizes, mixed batches, odd headers and methods) and a
property-based family run through the local host in process, over the app's own functions: the Event Grid
webhook, ``/api/alerts``, telemetry through ``/admin/functions/on_telemetry`` (and as Event Hubs batches
handed to the function the way the extension hands them), and the other HTTP routes. Every Event Grid
delivery and every telemetry batch carries good events around the hostile one, and each good event must be
recorded. The tally is written to ``test-artifacts/hostile-input.json`` and asserted by the last test;
``tests/test_localhost_hostile.py`` runs families over a real local host process.
"""
from __future__ import annotations

import itertools
import json
import logging
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controlplane import bootstrap
from controlplane.dev.localhost import LocalHost, event_hub_input
from controlplane.domain.ledger import Outcome, digest
from controlplane.parsing import parse_telemetry_body
from controlplane.parsing.fields import MAX_STORED_CHARS
from tests.support import ROOT, load_event

ARTIFACT = ROOT / "test-artifacts" / "hostile-input.json"
WEBHOOK = "/runtime/webhooks/EventGrid?functionName=on_registry_event"
NOTIFY = {"aeg-event-type": "Notification", "content-type": "application/json"}
_ids = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}"


def now() -> str:
    return datetime.now(UTC).isoformat()


# -- hostile JSON literals, by family (raw JSON text, so that what json.dumps cannot write is sent too) ---------

def recent(offset_hours: float = 0) -> datetime:
    """Now, in the given offset: a valid time a telemetry window is still open for."""
    return datetime.now(timezone(timedelta(hours=offset_hours)))


def nested(depth: int, open_: str = "[", close: str = "]") -> str:
    return open_ * depth + close * depth


LITERALS: dict[str, dict[str, str]] = {
    "nesting": {
        "array_65": nested(65), "object_200": '{"a":' * 200 + "1" + "}" * 200, "array_5000": nested(5000),
        "array_100000": nested(100_000), "mixed_3000": '[{"a":' * 1500 + "0" + "}]" * 1500,
    },
    "numbers": {
        "int_5000_digits": "9" * 5000, "int_4300_digits": "8" * 4300, "int_2_64": str(2**64),
        "int_below_int64": str(-(2**63) - 1), "float_1e999": "1e999", "float_minus_1e999": "-1e999",
        "nan": "NaN", "infinity": "Infinity", "minus_infinity": "-Infinity", "tiny": "1e-400",
        "long_fraction": "0." + "1" * 20_000, "minus_zero": "-0",
    },
    "unicode": {
        "lone_high": '"\\ud800"', "lone_low": '"x\\udfff"', "reversed_pair": '"\\udc00\\ud800"', "nul": '"a\\u0000b"',
        "noncharacter": '"\\uffff"', "bidi": '"\\u202egnp.exe"', "emoji": '"\\ud83d\\ude00"', "bom": '"\\ufeffchurn"',
        "surrogate_key": '{"\\ud800": 1}', "escaped_quote": '"\\"}]"',
    },
    "sizes": {
        "str_100k": json.dumps("e" * 100_000), "str_1m_plus": json.dumps("m" * (1024 * 1024 + 1)),
        "key_100k": json.dumps({"k" * 100_000: 1}), "array_100k": json.dumps([0] * 100_000),
    },
    "times": {
        "offset": f'"{recent(1).isoformat()}"', "negative_offset": f'"{recent(-5.5).isoformat()}"',
        "date_only": '"2026-11-22"', "epoch_seconds": "1763805600", "epoch_millis": "1763805600000",
        "epoch_string": '"1763805600"', "year_1_offset": '"0001-01-01T00:00:00+01:00"',
        "year_9999_offset": '"9999-12-31T23:59:59-01:00"', "year_9999": '"9999-12-31T23:59:59.9999999Z"',
        "year_1": '"0001-01-01T00:00:00Z"', "year_0": '"0000-01-01T00:00:00Z"', "leap_second": '"2026-12-31T23:59:60Z"',
        "month_13": '"2026-13-01T00:00:00Z"', "offset_24h": '"2026-11-22T10:00:00+24:00"',
        "week_date": '"{}-W{:02d}-{}T{:%H:%M:%S}Z"'.format(*recent().isocalendar(), recent()),
        "many_fraction_digits": f'"{recent():%Y-%m-%dT%H:%M:%S}.' + "1" * 5000 + 'Z"',
        "blank": '" "', "null": "null", "true": "true", "object": "{}", "words": '"yesterday"',
    },
}
TIME_FIELDS = {"eg": [("eventTime",)], "ce": [("time",)], "alert": [("data", "essentials", "firedDateTime"),
                                                                     ("data", "essentials", "resolvedDateTime")],
               "telemetry": [("timestamp",)]}
VALUE_FIELDS = {
    "eg": [("id",), ("eventType",), ("data",), ("data", "ServiceName"), ("data", "ServiceTags", "team"),
           ("data", "ServiceTags"), ("data", "ModelIds")],
    "ce": [("type",), ("data", "modelName"), ("data", "modelVersion"), ("data", "modelTags", "note"), ("specversion",)],
    "alert": [("data", "essentials", "alertId"), ("data", "essentials", "alertRule"), ("data", "customProperties"),
              ("data", "essentials", "alertTargetIDs"), ("data", "alertContext")],
    "telemetry": [("inputs", "age"), ("inputs",), ("model",), ("version",), ("request_id",)],
}


# -- good events, and one with a hostile literal in a field ----------------------------------------------------

def good(kind: str, model: str = "churn") -> dict:
    if kind == "eg":
        event = load_event("eg_model_deployed_docs.json")[0]
        event["id"] = unique("good-eg")
    elif kind == "ce":
        event = load_event("ce_model_registered.json")
        event["id"], event["data"]["modelVersion"] = unique("good-ce"), str(next(_ids))
    elif kind == "alert":
        event = load_event("alert_metric_fired.json")
        event["data"]["essentials"]["alertId"] = unique("/alerts/good")
    else:
        event = load_event("telemetry_record.json")
        event.update(model=model, timestamp=now(), request_id=unique("req"))
    return event


def with_literal(event: dict, path: tuple[str, ...], literal: str) -> str:
    """The event's JSON text with the field at ``path`` replaced by the raw JSON ``literal``."""
    marker = "\u2063HOSTILE\u2063"
    target = event
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = marker
    return json.dumps(event, ensure_ascii=False).replace(json.dumps(marker, ensure_ascii=False), literal)


# -- the host and the tally ------------------------------------------------------------------------------------

class Tally:
    def __init__(self) -> None:
        self.payloads = Counter()  # (family, route) -> payloads tried
        self.statuses = Counter()
        self.server_errors: list[tuple] = []
        self.crashes: list[str] = []
        self.good_sent = self.good_recorded = 0
        self.lost: list[str] = []

    def answer(self, family: str, route: str, status: int, what: str) -> None:
        self.payloads[(family, route)] += 1
        self.statuses[status] += 1
        if status >= 500:
            self.server_errors.append((family, route, status, what[:200]))

    def good(self, recorded: bool, what: str) -> None:
        self.good_sent += 1
        self.good_recorded += recorded
        if not recorded:
            self.lost.append(what[:200])

    def report(self) -> dict:
        by_family, by_route = Counter(), Counter()
        for (family, route), count in self.payloads.items():
            by_family[family] += count
            by_route[route] += count
        return {"payloads": sum(self.payloads.values()), "by_family": dict(sorted(by_family.items())),
                "by_route": dict(sorted(by_route.items())),
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
                "5xx": len(self.server_errors), "crashes": len(self.crashes),
                "mixed_batches": {"good_sent": self.good_sent, "good_recorded": self.good_recorded},
                "server_errors": self.server_errors[:20], "crash_messages": self.crashes[:20], "lost": self.lost[:20]}


class _Crashes(logging.Handler):
    """Every exception a function let escape (the host logs it and answers 500)."""

    def __init__(self, tally: Tally) -> None:
        super().__init__(logging.ERROR)
        self.tally = tally

    def emit(self, record: logging.LogRecord) -> None:
        self.tally.crashes.append(record.getMessage()[:300])


@pytest.fixture(scope="module")
def tally():
    found = Tally()
    handler = _Crashes(found)
    logging.getLogger("controlplane.dev.localhost").addHandler(handler)
    yield found
    logging.getLogger("controlplane.dev.localhost").removeHandler(handler)
    ARTIFACT.parent.mkdir(exist_ok=True)
    ARTIFACT.write_text(json.dumps(found.report(), indent=2) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def host(in_process_host):
    return in_process_host


@pytest.fixture(scope="module")
def store(host):
    return bootstrap.services().store


def decision_of(store, key: str):
    return store.decision(digest(key, "", length=24))


# -- the routes --------------------------------------------------------------------------------------------------

class Intake:
    """Posts hostile payloads, each among good events, and checks the answers and the ledger."""

    def __init__(self, host: LocalHost, store, tally: Tally) -> None:
        self.host, self.store, self.tally = host, store, tally
        self.sequence = itertools.count(1)

    def delivery(self, family: str, hostile_text: str, kind: str = "eg") -> int:
        """An Event Grid delivery [good, hostile, good]: every good event is decided."""
        goods = [good(kind), good(kind)]
        body = f"[{json.dumps(goods[0])},{hostile_text},{json.dumps(goods[1])}]".encode("utf-8", "surrogatepass")
        reply = self.host.handle("POST", WEBHOOK, dict(NOTIFY), body)
        self.tally.answer(family, "eventgrid", reply.status, body[:200].decode("utf-8", "replace"))
        for event in goods:
            decision = decision_of(self.store, f"ml:{event['id']}")
            self.tally.good(decision is not None and decision.outcome is not Outcome.INVALID, event["id"])
        return reply.status

    def alert(self, family: str, text: str) -> int:
        body = text.encode("utf-8", "surrogatepass")
        reply = self.host.handle("POST", "/api/alerts", {"content-type": "application/json"}, body)
        self.tally.answer(family, "alerts", reply.status, text[:200])
        if reply.status in (200, 400):  # decided, or kept as an invalid decision
            assert "decision" in json.loads(reply.body), reply.body[:300]
        return reply.status

    def telemetry(self, family: str, hostile: str | Callable[[str], str]) -> None:
        """One hostile event (its text, or made for a model) through the admin endpoint, and as a batch [good,
        hostile, good] handed to the function twice (a delivery and its retry): the good records are stored,
        the hostile one is stored or dead-lettered at its position, and neither delivery fails."""
        def text_for(model: str) -> str:
            return hostile(model) if callable(hostile) else hostile

        admin = json.dumps({"input": text_for(unique("tm-admin")), "partitionId": "h"}).encode()
        reply = self.host.handle("POST", "/admin/functions/on_telemetry", {}, admin)
        self.tally.answer(family, "telemetry-admin", reply.status, admin[:200].decode())
        model = unique("tm")
        hostile_text = text_for(model)

        partition, first = "hostile", next(self.sequence) * 10
        bodies = [json.dumps(good("telemetry", model)).encode(), hostile_text.encode("utf-8", "surrogatepass"),
                  json.dumps(good("telemetry", model)).encode()]
        function = self.host.functions["on_telemetry"]
        for _ in range(2):
            try:
                function.invoke(*event_hub_input(bodies, partition, first))
                status = 200
            except Exception as error:  # the batch would be retried, and fail again
                self.tally.crashes.append(f"on_telemetry batch: {type(error).__name__}: {str(error)[:200]}")
                status = 500
            self.tally.answer(family, "telemetry-batch", status, hostile_text[:200])
        stored = self.store.telemetry_count(model, "green")
        for _ in range(2):
            self.tally.good(stored >= 2, f"telemetry {model}")
        dead = decision_of(self.store, f"telemetry:{partition}:{first + 1}")
        if dead is None:  # then it was a valid record, kept under its own model and deployment
            parse_telemetry_body(hostile_text.encode("utf-8", "surrogatepass"))
        else:
            assert dead.outcome is Outcome.INVALID and stored == 2
            assert dead.event_id == f"{partition}:{first + 1}" and dead.evidence["field"] and dead.evidence["error"]


@pytest.fixture(scope="module")
def intake(host, store, tally):
    return Intake(host, store, tally)


def run_family(intake: Intake, family: str, fields: dict[str, list[tuple[str, ...]]]) -> None:
    for literal in LITERALS[family].values():
        for kind, paths in fields.items():
            for path in paths:
                text = with_literal(good(kind), path, literal)
                if kind in ("eg", "ce"):
                    intake.delivery(family, text, kind)
                elif kind == "alert":
                    intake.alert(family, text)
                else:
                    intake.telemetry(family, lambda model, k=kind, p=path, text=literal:
                                     with_literal(good(k, model), p, text))


# -- the named families ------------------------------------------------------------------------------------------

def test_times(intake):
    run_family(intake, "times", TIME_FIELDS)


def test_times_with_offsets_are_kept_in_utc(intake, store):
    event = good("eg")
    event["eventTime"] = "2026-11-22T10:00:00+01:00"
    assert intake.delivery("times", json.dumps(event)) == 202
    decided = decision_of(store, f"ml:{event['id']}")
    assert decided.outcome is Outcome.NO_ACTION
    assert decided.received_at.isoformat() == "2026-11-22T09:00:00+00:00"


@pytest.mark.parametrize("value", ["2026-11-22", 1763805600, "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59Z"])
def test_ambiguous_or_limit_times_are_invalid_naming_the_field(intake, store, value):
    event = good("eg")
    event["eventTime"] = value
    assert intake.delivery("times", json.dumps(event)) == 202
    invalid = store.decisions(limit=5, outcomes=[Outcome.INVALID])
    mine = next(d for d in invalid if d.event_id == event["id"])
    assert mine.evidence["field"] == "eventTime"


def test_nesting(intake):
    run_family(intake, "nesting", VALUE_FIELDS)


def test_numbers(intake):
    run_family(intake, "numbers", VALUE_FIELDS)


def test_unicode(intake):
    run_family(intake, "unicode", VALUE_FIELDS)


def test_sizes(intake):
    run_family(intake, "sizes", {kind: paths[:3] for kind, paths in VALUE_FIELDS.items()})


def test_whole_bodies_past_the_limits(intake):
    """The hostile text is the whole body (or the whole event), not one field."""
    for name, literal in itertools.chain(LITERALS["nesting"].items(), LITERALS["numbers"].items()):
        intake.delivery("nesting" if name in LITERALS["nesting"] else "numbers", literal)
        intake.alert("nesting", literal)
        intake.telemetry("nesting", literal)
    for body in (b"\xff\xfe not utf-8", b"\xef\xbb\xbf[]", b"", b"[", b"[1,2,", b'{"a":1}{"b":2}', b"null"):
        reply = intake.host.handle("POST", WEBHOOK, dict(NOTIFY), body)
        intake.tally.answer("unicode", "eventgrid", reply.status, repr(body))
        intake.alert("unicode", body.decode("utf-8", "replace"))


def test_an_invalid_event_type_of_100k_characters_is_stored_cut_with_its_hash(intake, store):
    event = good("eg")
    event["eventType"] = "T" * 100_000
    assert intake.delivery("sizes", json.dumps(event)) == 202
    mine = next(d for d in store.decisions(limit=5, outcomes=[Outcome.INVALID]) if d.event_id == event["id"])
    stored = json.dumps(mine.to_json())
    assert len(stored) < 3 * MAX_STORED_CHARS + 4000
    assert len(mine.event_type) <= 256 and mine.evidence["truncated"]["event_type"]["chars"] == 100_000
    assert mine.evidence["truncated"]["reason"]["chars"] > MAX_STORED_CHARS
    assert len(mine.evidence["payload_sha256"]) == 64 and mine.evidence["payload_bytes"] > 100_000


def test_a_valid_event_with_a_10_mb_tag_is_decided_with_the_tag_cut(intake, store):
    event = good("eg")
    event["data"]["ServiceTags"]["team"] = "t" * (10 * 1024 * 1024)
    assert intake.delivery("sizes", json.dumps(event)) == 202
    decided = decision_of(store, f"ml:{event['id']}")
    assert decided.outcome is Outcome.NO_ACTION
    assert len(decided.evidence["tags"]["team"]) == MAX_STORED_CHARS
    cut = decided.evidence["truncated"]["evidence.tags.team"]
    assert cut["chars"] == 10 * 1024 * 1024 and len(cut["sha256"]) == 64
    assert len(json.dumps(decided.to_json())) < 4 * MAX_STORED_CHARS


def test_mixed_batches_of_every_poison_lose_no_good_event(intake):
    poisons = {"deep": nested(5000), "huge_int": "9" * 5000, "limit_time": '"0001-01-01T00:00:00+01:00"',
               "surrogate": '"\\ud800"', "nan": "NaN", "not_an_object": "42", "garbage": "{]"}
    for name, literal in poisons.items():
        if name != "garbage":  # a syntax error makes the whole delivery unreadable: 400, as the host answers
            intake.delivery("mixed batches", literal)
        for path in (("timestamp",), ("inputs", "age")):
            intake.telemetry("mixed batches",
                             lambda model, p=path, text=literal: with_literal(good("telemetry", model), p, text))
        intake.telemetry("mixed batches", literal)
        intake.delivery("mixed batches", with_literal(good("eg"), ("data", "ServiceTags", "team"), literal)
                        if name != "garbage" else json.dumps(good("eg")))


METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT", "PROPFIND", "FOO"]
ROUTES = ["/api/alerts", "/api/decisions", "/api/health", "/api/reviews", "/api/reviews/x", "/api/reviews/x/decision",
          "/api/ui", "/api/reports/x", WEBHOOK, "/runtime/webhooks/EventGrid?functionName=nope",
          "/admin/functions/on_telemetry", "/admin/functions/on_registry_event", "/admin/functions/sweep",
          "/admin/functions/on_alert", "/admin/functions/nope", "/admin/host/status", "/", "/api", "/api/nope"]
ODD_BODIES = [b"", b"null", b"[]", b"{}", b"[1]", b'"x"', b'{"input": 5}', b'{"input": {"a": NaN}}',
              b'{"sequenceNumber": "x"}', b'{"sequenceNumber": 1e99}', b'{"sequenceNumber": -1}',
              b'{"sequenceNumber": true}', b'{"partitionId": {}}', b'{"partitionId": ""}', b'[{"data": []}]',
              b'[{"data": {"validationCode": 5}}]', b'{"data": "x"}', b"\xff", nested(5000).encode(),
              ("9" * 5000).encode(), b'{"input": "' + b"[" * 5000 + b'"}']
ODD_HEADERS = [{}, {"aeg-event-type": "Notification"}, {"aeg-event-type": "SubscriptionValidation"},
               {"aeg-event-type": "notification "}, {"content-type": "text/plain\x00"},
               {"content-type": "application/x-www-form-urlencoded"}, {"x-long": "h" * 10_000}]


def test_odd_headers_and_methods(intake):
    for route, method, body, headers in itertools.product(ROUTES, METHODS, ODD_BODIES[:6], ODD_HEADERS[:3]):
        reply = intake.host.handle(method, route, dict(headers), body)
        intake.tally.answer("odd headers and methods", route.split("?")[0], reply.status, f"{method} {body[:60]!r}")
    for route, body, headers in itertools.product(ROUTES, ODD_BODIES, ODD_HEADERS):
        reply = intake.host.handle("POST", route, dict(headers), body)
        intake.tally.answer("odd headers and methods", route.split("?")[0], reply.status, f"POST {body[:60]!r}")


def test_http_routes_with_hostile_queries_and_ids(intake):
    texts = ["", "x" * 100_000, "\x00", "%", "%ZZ", "../../etc/passwd", "\u202e", "\ud800", "-1", "1e999", "NaN",
             "9" * 5000, "<script>", "' OR 1=1 --"]
    for text in texts:
        value = quote(text, safe="", errors="surrogatepass")
        for template in ("/api/decisions?model={}", "/api/decisions?limit={}", "/api/reviews?state={}",
                         "/api/reviews/{}", "/api/reviews/{}?token=x", "/api/reports/{}", "/api/ui?x={}"):
            target = template.format(value)
            reply = intake.host.handle("GET", target, {}, b"")
            intake.tally.answer("http routes", template.split("?")[0], reply.status, target[:200])
        reply = intake.host.handle("POST", f"/api/reviews/{value}/decision",
                                   {"content-type": "application/x-www-form-urlencoded"},
                                   f"token={value}&vote=approve".encode("utf-8", "surrogatepass"))
        intake.tally.answer("http routes", "/api/reviews/{}/decision", reply.status, text[:200])


# -- property-based: hostile values anywhere in real-shaped events ---------------------------------------------

ALL_LITERALS = [text for family in ("nesting", "numbers", "unicode", "times") for text in LITERALS[family].values()]
hostile_leaf = st.sampled_from(ALL_LITERALS) | st.integers().map(str) | st.text(max_size=20).map(
    lambda text: json.dumps(text)) | st.floats().map(lambda number: json.dumps(number))
ALL_FIELDS = [(kind, path) for fields in (VALUE_FIELDS, TIME_FIELDS) for kind, paths in fields.items()
              for path in paths]


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(target=st.sampled_from(ALL_FIELDS), leaf=hostile_leaf,
       wrap=st.sampled_from(["{}", "[{}]", '{{"x": {}}}', "{}"]))
def test_property_hostile_values_anywhere(intake, target, leaf, wrap):
    kind, path = target
    text = with_literal(good(kind), path, wrap.format(leaf))
    if kind in ("eg", "ce"):
        intake.delivery("property-based", text, kind)
    elif kind == "alert":
        intake.alert("property-based", text)
    else:
        intake.telemetry("property-based", lambda model: with_literal(good(kind, model), path, wrap.format(leaf)))


# -- the tally, asserted last -------------------------------------------------------------------------------------

def test_report_no_5xx_no_crash_no_good_event_lost(tally):
    report = tally.report()
    shown = ("payloads", "by_family", "5xx", "crashes", "mixed_batches")
    print(json.dumps({key: report[key] for key in shown}, indent=2))
    assert report["payloads"] > 1000
    assert report["5xx"] == 0, report["server_errors"]
    assert report["crashes"] == 0, report["crash_messages"]
    assert report["mixed_batches"]["good_recorded"] == report["mixed_batches"]["good_sent"] > 0, report["lost"]


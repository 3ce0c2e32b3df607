"""The intake limits, one by one: times, nesting, numbers, Unicode and sizes are refused with ``InvalidEvent``
naming the field, what is stored is cut and says so, and one event the store refuses never holds back its batch."""
from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from controlplane.domain.errors import InvalidEvent, StoreUnavailable
from controlplane.domain.ledger import Outcome, Source, Verdict
from controlplane.handlers.record import bounded_verdict, decide_once, record_invalid
from controlplane.handlers.telemetry import RawTelemetry, receive_telemetry
from controlplane.parsing.fields import MAX_DEPTH, MAX_NAME_CHARS, MAX_STORED_CHARS, check_json, parse_json, parse_time
from tests.support import load_event


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-11-22T10:00:00+01:00", datetime(2026, 11, 22, 9, tzinfo=UTC)),
    ("2026-11-22T10:00:00-05:30", datetime(2026, 11, 22, 15, 30, tzinfo=UTC)),
    ("2026-11-22T10:00:00.1234567Z", datetime(2026, 11, 22, 10, 0, 0, 123456, tzinfo=UTC)),
    ("2026-11-22T10:00:00", datetime(2026, 11, 22, 10, tzinfo=UTC)),
    ("2026-11-22 10:00:00z", datetime(2026, 11, 22, 10, tzinfo=UTC)),
])
def test_unambiguous_times_are_normalised_to_utc(text, expected):
    assert parse_time(text, "eventTime") == expected


@pytest.mark.parametrize("value", [
    "2026-11-22", "20261122", "2026-W47-1", 1763805600, 1763805600000, 1.7e9, "1763805600", True, None, [], {},
    "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z",
    "1969-12-31T23:59:59Z", "2026-12-31T23:59:60Z", "2026-11-22T10:00:00+24:00", "", "  ", "x" * 100_000,
    "2026-11-22T10:00:00." + "1" * 5000 + "Z",
])
def test_other_times_are_invalid_naming_the_field(value):
    with pytest.raises(InvalidEvent) as raised:
        parse_time(value, "data.essentials.firedDateTime")
    assert raised.value.subject == "data.essentials.firedDateTime" and len(raised.value.reason) < 200


def test_an_aware_datetime_at_the_limits_is_invalid_not_an_overflow():
    from datetime import timedelta, timezone

    with pytest.raises(InvalidEvent):
        parse_time(datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1))), "t")


@pytest.mark.parametrize(("text", "path", "reason"), [
    ("[" * 100_000 + "]" * 100_000, "$", "nested deeper"),
    ('{"a": ' + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1) + "}", "a" + "[0]" * (MAX_DEPTH - 1), "nested deeper"),
    ('{"n": ' + "9" * 5000 + "}", "$", "number is too long"),
    ('{"data": {"v": ' + str(2**64) + "}}", "data.v", "64-bit"),
    ('{"data": {"v": ' + str(-(2**63) - 1) + "}}", "data.v", "64-bit"),
    ('{"v": 1e999}', "v", "finite"),
    ('{"v": NaN}', "$", "NaN is not a JSON number"),
    ('{"v": -Infinity}', "$", "-Infinity is not a JSON number"),
    ('{"tags": {"t": "\\ud800"}}', "tags.t", "lone surrogate"),
    ('{"tags": {"\\udfff": 1}}', "tags.\udfff", "lone surrogate"),
    ('[{"k": 1}, {"' + "k" * 2000 + '": 1}]', "[1]." + "k" * 64 + "…", "1024-character limit"),
])
def test_json_past_the_limits_is_invalid_naming_the_field(text, path, reason):
    with pytest.raises(InvalidEvent) as raised:
        parse_json(text)
    assert raised.value.subject == path and reason in raised.value.reason


def test_json_within_the_limits_is_kept_as_sent():
    text = json.dumps({"v": [2**64 - 1, -(2**63), 1e308, "\ud83d\ude00", "x" * 300_000, -0.0]})
    assert parse_json(text) == json.loads(text)
    check_json(json.loads(text))


def test_a_document_over_the_total_size_is_invalid():
    with pytest.raises(InvalidEvent, match="byte limit"):
        parse_json(b" " * (16 * 1024 * 1024 + 1))


def test_stored_texts_are_cut_with_length_and_hash_and_the_rest_kept():
    verdict = Verdict(Outcome.NO_ACTION, "r" * 10_000, model="m" * 1000, version="1",
                      evidence={"tags": {"big": "t" * 10_000, "small": "s", "\ud800": "\udc00"}, "n": 2**70})
    stored = bounded_verdict(verdict, {})
    assert len(stored.reason) == MAX_STORED_CHARS and len(stored.model) == MAX_NAME_CHARS
    assert stored.evidence["tags"]["big"] == "t" * MAX_STORED_CHARS and stored.evidence["tags"]["small"] == "s"
    assert stored.evidence["tags"]["\\ud800"] == "\\udc00"
    cut = stored.evidence["truncated"]
    assert cut["reason"]["chars"] == 10_000 and len(cut["reason"]["sha256"]) == 64
    assert cut["evidence.tags.big"]["chars"] == 10_000 and cut["model"]["chars"] == 1000
    assert cut["evidence.n"] == {"bits": 71} and isinstance(stored.evidence["n"], str)
    plain = Verdict(Outcome.NO_ACTION, "fine", evidence={"tags": {"a": "b"}})
    assert bounded_verdict(plain, {}) is plain


def test_an_invalid_payload_is_stored_cut_with_its_hash(services):
    payload = json.dumps({"eventType": "T" * 100_000}).encode()
    decision = record_invalid(services, source=Source.EVENTGRID, payload=payload,
                              error=InvalidEvent("eventType", f"unsupported event type {'T' * 100_000!r}"),
                              event_id="i" * 5000, event_type="T" * 100_000)
    assert len(decision.event_type) == len(decision.event_id) == MAX_NAME_CHARS
    assert len(decision.reason) == MAX_STORED_CHARS and len(decision.evidence["payload"]) == MAX_STORED_CHARS
    assert decision.evidence["payload_bytes"] == len(payload) and len(decision.evidence["payload_sha256"]) == 64
    assert set(decision.evidence["truncated"]) >= {"event_type", "event_id", "reason", "evidence.error"}
    assert len(json.dumps(decision.to_json())) < 4 * MAX_STORED_CHARS


def test_a_long_idempotency_key_is_kept_whole_by_its_hash(services):
    decide = lambda: Verdict(Outcome.NO_ACTION, "ok")  # noqa: E731
    first = decide_once(services, key="ml:" + "a" * 5000, event_id="a" * 5000, source=Source.EVENTGRID,
                        event_type="t", model=None, version=None, received_at=services.clock.now(), decide=decide)
    other = decide_once(services, key="ml:" + "a" * 4999 + "b", event_id="a", source=Source.EVENTGRID,
                        event_type="t", model=None, version=None, received_at=services.clock.now(), decide=decide)
    assert len(first.idempotency_key) <= MAX_NAME_CHARS and first.idempotency_key != other.idempotency_key
    assert other.outcome is Outcome.NO_ACTION


def batch(*bodies: bytes) -> list[RawTelemetry]:
    return [RawTelemetry("0", 100 + index, None, body) for index, body in enumerate(bodies)]


def record_body(**changes) -> bytes:
    record = load_event("telemetry_record.json")
    record.update({"timestamp": datetime.now(UTC).isoformat(), **changes})
    return json.dumps(record).encode()


@pytest.mark.parametrize("poison", [
    b'{"inputs": ' + b"[" * 5000 + b"]" * 5000 + b"}", record_body(inputs={"x": 2**70}),
    record_body(timestamp="9999-12-31T23:59:59-01:00"), record_body(inputs={"x": "\ud800"}),
    b'{"model": "churn", "inputs": {"x": NaN}}', b"9" * 5000,
])
def test_a_poison_record_is_dead_lettered_alone_on_every_delivery(services, poison):
    for _ in range(2):  # the delivery and its retry
        report = receive_telemetry(services, batch(record_body(), poison, record_body()))
        assert [d.event_id for d in report.invalid] == ["0:101"]
        assert report.invalid[0].outcome in (Outcome.INVALID, Outcome.DUPLICATE)
    assert services.store.telemetry_count("churn", "green") == 2
    dead = services.store.decisions(outcomes=[Outcome.INVALID])
    assert len(dead) == 1 and dead[0].evidence["field"] and dead[0].evidence["error"]


def test_an_event_the_store_refuses_is_dead_lettered_and_the_others_kept(services, monkeypatch):
    store, real = services.store, services.store.append_telemetry

    def refuse_sequence_101(events, spec, now):
        if any(event.sequence_number == 101 for event in events):
            raise TypeError("Integer exceeds 64-bit range")
        return real(events, spec, now)

    monkeypatch.setattr(store, "append_telemetry", refuse_sequence_101)
    report = receive_telemetry(services, batch(record_body(), record_body(), record_body()))
    assert report.stored == 2 and [d.event_id for d in report.invalid] == ["0:101"]
    assert "store cannot keep" in report.invalid[0].reason


def test_an_outage_still_fails_the_batch_for_the_retry(services, monkeypatch):
    def outage(events, spec, now):
        raise StoreUnavailable("store", "down")

    monkeypatch.setattr(services.store, "append_telemetry", outage)
    with pytest.raises(StoreUnavailable):
        receive_telemetry(services, batch(record_body(), record_body()))


def test_a_write_table_storage_refuses_for_good_is_permanent_not_an_outage(make_store):
    # GIVEN Table Storage (Azurite), which refuses a property over 64 KiB with 400, as Azure refuses an entity
    # over 1 MiB: a write that fails again every time it is sent
    from controlplane.domain.errors import PermanentError, StoreRefused

    store = make_store("tables")
    with pytest.raises(StoreRefused, match="refused the write") as refused, store._errors():
        store._telemetry.create_entity({"PartitionKey": "p", "RowKey": "r", "Body": "x" * 70_000})
    # THEN it is permanent, so the telemetry intake dead-letters that event alone instead of retrying the batch
    assert isinstance(refused.value, PermanentError) and not isinstance(refused.value, StoreUnavailable)

"""The telemetry producer: records the control plane's own parser accepts, batched the way Event Hubs needs."""
from __future__ import annotations

import gzip
import json
import math
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta, timezone

import azure.eventhub
import azure.identity
import pytest
from azure.eventhub import EventDataBatch
from controlplane_telemetry import MAX_INFLATED_BYTES, RecordTooLargeError, SendCounts, TelemetrySender

from controlplane.parsing import parse_telemetry_body

DEPLOYMENT = {"model": "churn", "version": 3, "endpoint": "churn-ep", "deployment": "green"}


class RecordingBatch(EventDataBatch):
    """A real EventDataBatch (its size accounting decides what fits) that remembers the events it took."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.events = []

    def add(self, event_data):
        super().add(event_data)
        self.events.append(event_data)


class StandInClient:
    """The producer client's surface, with real batches and no network."""

    def __init__(self, max_size_in_bytes: int | None = None):
        self.max_size_in_bytes = max_size_in_bytes
        self.create_calls: list[dict] = []
        self.sent: list[RecordingBatch] = []
        self.closed = False

    def create_batch(self, **kwargs):
        self.create_calls.append(kwargs)
        return RecordingBatch(max_size_in_bytes=self.max_size_in_bytes, partition_key=kwargs.get("partition_key"))

    def send_batch(self, batch):
        self.sent.append(batch)

    def close(self):
        self.closed = True

    def events(self):
        return [event for batch in self.sent for event in batch.events]


def body_of(event) -> bytes:
    return b"".join(event.body)


def parsed(event):
    """The event as the control plane reads it."""
    return parse_telemetry_body(body_of(event), event.properties.get("Content-Encoding"))


def parsed_records(client: StandInClient):
    return [record for event in client.events() for record in parsed(event)]


def sender(**overrides) -> TelemetrySender:
    return TelemetrySender(**{**DEPLOYMENT, "client": StandInClient(), **overrides})


def padded_records(producer: TelemetrySender, count: int, size: int, prefix: str = "r"):
    """Records whose inputs hold ``size`` bytes of text that does not compress."""
    return [
        producer.record(f"{prefix}-{index}", {"blob": f"{index:04d}" + "".join(f"{(index * 7919 + n) % 9973:04x}"
                                                                          for n in range(size // 4))}, {"score": 0.5})
        for index in range(count)
    ]


def test_records_round_trip_through_the_control_plane_parser_with_every_field_intact():
    client = StandInClient()
    producer = sender(client=client)
    scored_at = datetime(2026, 11, 22, 11, 30, 15, 123456, tzinfo=timezone(timedelta(hours=1)))
    inputs = {"age": 42, "plan": "pro", "name": "Zoë ✓", "ratio": 0.25, "flags": [True, None, 1.5e-9],
              "nested": {"a": [1, {"b": "c"}]}}
    outputs = {"score": 0.81, "label": "churn"}
    records = [producer.record("7b1c4e9a", inputs, outputs, timestamp=scored_at),
               producer.record("second", {"age": 7}, None)]
    inputs["age"] = 99  # the record keeps the values it was given

    counts = producer.send(records)

    assert counts == SendCounts(events=1, batches=1, records=2)
    first, second = parsed_records(client)
    assert (first.model, first.version, first.endpoint, first.deployment) == ("churn", "3", "churn-ep", "green")
    assert first.request_id == "7b1c4e9a"
    assert first.timestamp == scored_at and first.timestamp.tzinfo == UTC
    assert records[0]["timestamp"] == "2026-11-22T10:30:15.123456Z"
    assert first.inputs == {**inputs, "age": 42} and first.outputs == outputs
    assert second.request_id == "second" and second.inputs == {"age": 7} and second.outputs == {}
    assert records[1]["timestamp"].endswith("Z")
    assert abs(second.timestamp - datetime.now(UTC)) < timedelta(minutes=1)


def test_each_model_and_deployment_gets_its_own_partition_key_and_keeps_its_order():
    client = StandInClient()
    green = sender(client=client)
    blue = sender(client=client, deployment="blue")
    records = [green.record("g1", {"x": 1}, {}), blue.record("b1", {"x": 2}, {}),
               green.record("g2", {"x": 3}, {}), blue.record("b2", {"x": 4}, {})]

    assert green.send(records) == SendCounts(events=2, batches=2, records=4)

    assert client.create_calls == [{"partition_key": "churn/green"}, {"partition_key": "churn/blue"}]
    for batch in client.sent:
        deployments = {record.deployment for event in batch.events for record in parsed(event)}
        assert batch._partition_key == f"churn/{deployments.pop()}" and not deployments
    assert [r.request_id for r in parsed_records(client)] == ["g1", "g2", "b1", "b2"]


def test_a_full_batch_is_sent_and_a_new_one_started():
    client = StandInClient(max_size_in_bytes=1500)
    producer = sender(client=client, max_records_per_event=2, compress=False)
    records = padded_records(producer, 12, size=200)

    counts = producer.send(records)

    assert counts.records == 12 and counts.events == 6
    assert counts.batches == len(client.sent) > 1
    assert all(len(batch) > 0 and batch.size_in_bytes <= 1500 for batch in client.sent)
    assert [r.request_id for r in parsed_records(client)] == [f"r-{i}" for i in range(12)]
    assert all(event.properties == {} or not event.properties for event in client.events())


def test_an_event_too_large_for_an_empty_batch_is_split_in_half_until_it_fits():
    client = StandInClient(max_size_in_bytes=1200)
    producer = sender(client=client, max_records_per_event=100, compress=False)
    records = padded_records(producer, 9, size=200)  # one event of nine would be about 3 KB

    counts = producer.send(records)

    sizes = [len(parsed(event)) for event in client.events()]
    assert sum(sizes) == counts.records == 9 and counts.events == len(sizes) > 1
    assert max(sizes) < 9
    assert [r.request_id for r in parsed_records(client)] == [f"r-{i}" for i in range(9)]
    assert all(batch.size_in_bytes <= 1200 for batch in client.sent)


def test_a_record_too_large_on_its_own_is_named_and_the_others_are_still_sent():
    client = StandInClient(max_size_in_bytes=1200)
    producer = sender(client=client, compress=False)
    small = padded_records(producer, 4, size=100)
    huge = padded_records(producer, 1, size=2000, prefix="huge")[0]

    with pytest.raises(ValueError, match="huge-0") as caught:
        producer.send([small[0], small[1], huge, small[2], small[3]])

    assert isinstance(caught.value, RecordTooLargeError)
    assert caught.value.request_ids == ["huge-0"] and caught.value.counts.records == 4
    assert [r.request_id for r in parsed_records(client)] == ["r-0", "r-1", "r-2", "r-3"]


def test_gzip_is_used_and_marked_only_when_it_makes_the_body_smaller():
    client = StandInClient()
    producer = sender(client=client)
    # The smallest record the contract allows: gzip's 18 bytes of framing outweigh what it saves.
    minimal = {"model": "m", "version": "1", "endpoint": "e", "deployment": "d",
               "timestamp": "2026-11-22T10:00:00Z", "inputs": {}}
    producer.send([minimal])
    repetitive = [producer.record(f"id-{i}", {"plan": "pro", "region": "westeurope"}, {"score": 0.5})
                  for i in range(50)]
    producer.send(repetitive)

    tiny, packed = client.events()
    assert not tiny.properties and body_of(tiny).startswith(b"[")  # gzip would have made it larger
    assert packed.properties == {"Content-Encoding": "gzip"} and body_of(packed)[:2] == b"\x1f\x8b"
    plain = json.dumps(repetitive, ensure_ascii=False, separators=(",", ":")).encode()
    assert len(body_of(packed)) < len(plain) and gzip.decompress(body_of(packed)) == plain
    assert [r.request_id for r in parsed(packed)] == [f"id-{i}" for i in range(50)]

    uncompressed = StandInClient()
    off = sender(client=uncompressed, compress=False)
    off.send(repetitive)
    [event] = uncompressed.events()
    assert not event.properties and body_of(event) == plain
    assert MAX_INFLATED_BYTES == 16 * 1024 * 1024  # what the control plane's parser inflates at most


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda p: p.record(7, {}, {}), "request_id"),
        (lambda p: p.record("r", [1, 2], {}), "inputs"),
        (lambda p: p.record("r", None, {}), "inputs"),
        (lambda p: p.record("r", {"age": math.nan}, {}), "inputs.age"),
        (lambda p: p.record("r", {"tags": {"a", "b"}}, {}), "inputs.tags"),
        (lambda p: p.record("r", {"when": datetime.now(UTC)}, {}), "inputs.when"),
        (lambda p: p.record("r", {"rows": [1, object()]}, {}), r"inputs.rows\[1\]"),
        (lambda p: p.record("r", {1: "x"}, {}), "inputs"),
        (lambda p: p.record("r", {}, "0.8"), "outputs"),
        (lambda p: p.record("r", {}, {"score": math.inf}), "outputs.score"),
        (lambda p: p.record("r", {}, {}, timestamp="2026-11-22T10:00:00Z"), "timestamp"),
        (lambda p: p.record("r", {}, {}, timestamp=datetime(2026, 11, 22)), "timestamp"),
        (lambda p: p.send([{"model": "churn"}, "not a record"]), r"records\[1\]"),
        (lambda p: p.send_in_background(["not a record"]), r"records\[0\]"),
    ],
)
def test_a_bad_record_raises_value_error_naming_the_field(call, field):
    with pytest.raises(ValueError, match=f"^{field}: "):
        call(sender())


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"model": ""}, "model"),
        ({"version": True}, "version"),
        ({"version": None}, "version"),
        ({"endpoint": 5}, "endpoint"),
        ({"deployment": "  "}, "deployment"),
        ({"max_records_per_event": 0}, "max_records_per_event"),
        ({"client": None}, "fully_qualified_namespace"),
        ({"client": None, "fully_qualified_namespace": "ns.servicebus.windows.net"}, "eventhub_name"),
    ],
)
def test_a_bad_setting_raises_value_error_naming_it(overrides, field):
    with pytest.raises(ValueError, match=f"^{field}: "):
        sender(**overrides)


class GatedClient(StandInClient):
    """A client whose send_batch waits for the test to open the gate."""

    def __init__(self):
        super().__init__()
        self.entered = threading.Event()
        self.gate = threading.Event()

    def send_batch(self, batch):
        self.entered.set()
        assert self.gate.wait(5)
        super().send_batch(batch)


def test_background_sending_drops_and_counts_records_when_the_queue_is_full_and_flush_waits():
    client = GatedClient()
    producer = sender(client=client, queue_size=3)
    first = producer.record("first", {"x": 0}, {})
    assert producer.send_in_background([first]) == 1
    assert client.entered.wait(5)  # the worker holds "first" and waits on the hub

    later = [producer.record(f"later-{i}", {"x": i}, {}) for i in range(5)]
    assert producer.send_in_background(later) == 3  # returns at once although the hub is stuck
    assert producer.dropped_records == 2
    assert producer.flush(timeout=0.05) is False

    client.gate.set()
    assert producer.flush(timeout=5) is True
    assert [r.request_id for r in parsed_records(client)] == ["first", "later-0", "later-1", "later-2"]
    assert (producer.sent_records, producer.failed_records, producer.dropped_records) == (4, 0, 2)
    producer.close()
    assert client.closed and producer.send_in_background([first]) == 0 and producer.dropped_records == 3


def test_background_failures_are_counted_and_logged_without_raising(caplog):
    class FailingClient(StandInClient):
        def send_batch(self, batch):
            raise ConnectionError("hub unreachable")

    producer = sender(client=FailingClient())
    producer.send_in_background([producer.record("a", {}, {}), producer.record("b", {}, {})])
    assert producer.flush(timeout=5)
    assert (producer.sent_records, producer.failed_records) == (0, 2)
    assert "2 records not sent" in caplog.text
    producer.close()


@pytest.fixture
def fake_sdk(monkeypatch):
    """Stand in for EventHubProducerClient and DefaultAzureCredential; ``built`` lists every construction."""
    built = []

    class FakeCredential:
        def __init__(self):
            built.append(("credential",))
            self.closed = False

        def close(self):
            self.closed = True

    class FakeProducerClient(StandInClient):
        def __init__(self, **kwargs):
            super().__init__()
            built.append(("client", kwargs))

        @classmethod
        def from_connection_string(cls, conn_str, **kwargs):
            built.append(("from_connection_string", conn_str, kwargs))
            return StandInClient()

    monkeypatch.setattr(azure.eventhub, "EventHubProducerClient", FakeProducerClient)
    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", FakeCredential)
    return built


def test_the_client_is_built_with_identity_only_when_the_first_records_are_sent(fake_sdk):
    producer = TelemetrySender("bogus.servicebus.windows.net", "telemetry", **DEPLOYMENT)
    record = producer.record("r", {"x": 1}, {})
    assert producer.send([]) == SendCounts(0, 0, 0)
    assert fake_sdk == []  # nothing built, nothing connected

    producer.send([record])
    producer.send([record])

    [(kind,), (what, client_kwargs)] = fake_sdk
    assert kind == "credential" and what == "client"
    assert client_kwargs["fully_qualified_namespace"] == "bogus.servicebus.windows.net"
    assert client_kwargs["eventhub_name"] == "telemetry"
    credential = client_kwargs["credential"]
    assert type(credential).__name__ == "FakeCredential"
    producer.close()
    assert credential.closed


def test_a_given_credential_is_used_and_left_open(fake_sdk):
    class Credential:
        closed = False

    mine = Credential()
    producer = TelemetrySender("bogus.servicebus.windows.net", "telemetry", credential=mine, **DEPLOYMENT)
    producer.send([producer.record("r", {}, {})])
    producer.close()
    [(what, kwargs)] = fake_sdk
    assert what == "client" and kwargs["credential"] is mine


def test_the_client_is_built_from_a_connection_string_for_the_emulator(fake_sdk):
    conn = "Endpoint=sb://localhost;SharedAccessKeyName=k;SharedAccessKey=s;UseDevelopmentEmulator=true;"
    producer = TelemetrySender(connection_string=conn, eventhub_name="telemetry", **DEPLOYMENT)
    assert fake_sdk == []
    producer.send([producer.record("r", {}, {})])
    assert fake_sdk == [("from_connection_string", conn, {"eventhub_name": "telemetry"})]


def test_the_installed_package_imports_without_the_azure_sdk(tmp_path):
    # the package as a scoring environment installs it (make test installs clients/telemetry), away from the repo
    code = ("import sys, controlplane_telemetry, importlib.metadata as m; "
            "print(m.version('controlplane-telemetry'), sorted(n for n in sys.modules if n.startswith('azure')))")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1.0.0 []"

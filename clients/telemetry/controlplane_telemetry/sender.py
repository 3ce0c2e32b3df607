"""Send inference telemetry from a scoring script to the control plane's Event Hub.

A scoring script builds one record per scored request with ``TelemetrySender.record`` and hands the
records to ``send_in_background`` (or to ``send`` from its own background thread). Records follow the
contract in docs/telemetry.md and travel as JSON arrays, gzip-compressed (application property
``Content-Encoding: gzip``) when that makes the body smaller. Every batch of one model's deployment
uses the partition key ``<model>/<deployment>``, so that deployment's records stay in order on one
partition.

``send`` talks to Event Hubs and can take seconds when the network is slow (the SDK retries), so never
call it on the scoring path: call ``send_in_background``, which only queues the records (dropping and
counting them when its small queue is full) and returns at once, or call ``send`` from a thread of
your own or after the response has been returned.

The module needs only the standard library to import; ``azure-eventhub`` (and ``azure-identity`` for
the default credential) are imported when the first batch is sent, so it can be copied next to a
scoring script as a single file.
"""
from __future__ import annotations

import gzip
import json
import logging
import math
import threading
from collections import deque
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any, NamedTuple

_LOGGER = logging.getLogger(__name__)

#: The control plane rejects a gzip body that inflates beyond this many bytes.
MAX_INFLATED_BYTES = 16 * 1024 * 1024
#: How many ids an error message lists before it abbreviates.
_IDS_SHOWN = 5


class SendCounts(NamedTuple):
    """What one ``send`` call delivered."""

    events: int
    batches: int
    records: int


class RecordTooLargeError(ValueError):
    """Records that do not fit in one event even on their own; every other record was sent.

    ``request_ids`` names the records left out and ``counts`` says what was sent.
    """

    def __init__(self, request_ids: list[str], counts: SendCounts) -> None:
        self.request_ids = request_ids
        self.counts = counts
        shown = ", ".join(repr(request_id) for request_id in request_ids[:_IDS_SHOWN])
        more = f" and {len(request_ids) - _IDS_SHOWN} more" if len(request_ids) > _IDS_SHOWN else ""
        super().__init__(
            f"request_id {shown}{more}: record too large for one event; not sent "
            f"(sent {counts.records} other records in {counts.events} events)"
        )


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{field}: expected a non-empty string, got {_describe(value)}")
    return value


def _describe(value: Any) -> str:
    return "null" if value is None else f"{type(value).__name__} {value!r:.60}"


def _json_copy(value: Any, path: str, depth: int = 0) -> Any:
    """A copy of ``value`` made of JSON types only; ValueError names the path of the first bad value."""
    if depth > 100:
        raise ValueError(f"{path}: nested more than 100 levels deep")
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{path}: expected a finite number, got {value!r}")
        return value
    if isinstance(value, Mapping):
        copy = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{path}: expected string keys, got {_describe(key)}")
            copy[key] = _json_copy(item, f"{path}.{key}", depth + 1)
        return copy
    if isinstance(value, (list, tuple)):
        return [_json_copy(item, f"{path}[{index}]", depth + 1) for index, item in enumerate(value)]
    raise ValueError(f"{path}: expected a JSON value, got {type(value).__name__}")


def _json_object(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{field}: expected a dict, got {_describe(value)}")
    return _json_copy(value, field)


def _timestamp(value: datetime | None) -> str:
    if value is None:
        value = datetime.now(timezone.utc)
    elif not isinstance(value, datetime):
        raise ValueError(f"timestamp: expected a datetime, got {_describe(value)}")
    elif value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("timestamp: expected a timezone-aware datetime (naive datetimes are ambiguous)")
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class TelemetrySender:
    """Build telemetry records for one deployment and send them to an Event Hub.

    Connect with identity (``fully_qualified_namespace`` + ``eventhub_name``, with ``credential`` or
    ``DefaultAzureCredential()``), with a ``connection_string`` (the Event Hubs emulator), or pass a
    ready ``client`` with ``create_batch``, ``send_batch`` and ``close``. Nothing connects until the
    first ``send``. One sender is safe to use from several threads.
    """

    def __init__(
        self,
        fully_qualified_namespace: str | None = None,
        eventhub_name: str | None = None,
        connection_string: str | None = None,
        credential: Any = None,
        *,
        model: str,
        version: str | int,
        endpoint: str,
        deployment: str,
        max_records_per_event: int = 100,
        compress: bool = True,
        client: Any = None,
        queue_size: int = 1000,
    ) -> None:
        self.model = _text(model, "model")
        if isinstance(version, bool) or not isinstance(version, (str, int)) or not str(version).strip():
            raise ValueError(f"version: expected a non-empty string or an integer, got {_describe(version)}")
        self.version = str(version).strip()
        self.endpoint = _text(endpoint, "endpoint")
        self.deployment = _text(deployment, "deployment")
        for name, number in (("max_records_per_event", max_records_per_event), ("queue_size", queue_size)):
            if isinstance(number, bool) or not isinstance(number, int) or number < 1:
                raise ValueError(f"{name}: expected a positive integer, got {_describe(number)}")
        if client is None and not connection_string:
            if not fully_qualified_namespace:
                raise ValueError("fully_qualified_namespace: required unless connection_string or client is given")
            if not eventhub_name:
                raise ValueError("eventhub_name: required with fully_qualified_namespace")
        self.fully_qualified_namespace = fully_qualified_namespace
        self.eventhub_name = eventhub_name
        self.max_records_per_event = max_records_per_event
        self.compress = compress
        self.queue_size = queue_size
        self._connection_string = connection_string
        self._credential = credential
        self._owned_credential: Any = None
        self._client = client
        self._client_lock = threading.Lock()
        self._send_lock = threading.Lock()  # the SDK does not promise its clients are thread-safe
        # Background sending: records waiting, records being sent, the worker and its counters.
        self._cond = threading.Condition()
        self._queue: deque[dict[str, Any]] = deque()
        self._in_flight = 0
        self._worker: threading.Thread | None = None
        self._closed = False
        self.dropped_records = 0
        self.failed_records = 0
        self.sent_records = 0

    # -- records ---------------------------------------------------------------------------------

    def record(
        self,
        request_id: str,
        inputs: Mapping[str, Any],
        outputs: Mapping[str, Any] | None,
        timestamp: datetime | None = None,
    ) -> dict[str, Any]:
        """One contract record for a scored request; ``timestamp`` defaults to now (UTC).

        ``inputs`` and ``outputs`` are copied, so the caller may reuse them. Raises ValueError naming
        the field (``inputs.age: expected a finite number, got nan``) when a value does not fit the
        contract.
        """
        if not isinstance(request_id, str):
            raise ValueError(f"request_id: expected a string, got {_describe(request_id)}")
        return {
            "model": self.model,
            "version": self.version,
            "endpoint": self.endpoint,
            "deployment": self.deployment,
            "request_id": request_id,
            "timestamp": _timestamp(timestamp),
            "inputs": _json_object(inputs, "inputs"),
            "outputs": {} if outputs is None else _json_object(outputs, "outputs"),
        }

    # -- sending ---------------------------------------------------------------------------------

    def send(self, records: Iterable[Mapping[str, Any]]) -> SendCounts:
        """Send records now and return what was sent; blocks on the network, so keep it off the scoring path.

        Records go in JSON-array events of at most ``max_records_per_event`` records, in batches keyed
        ``<model>/<deployment>``; a full batch is sent and a new one started, and an event too large for
        an empty batch is split in half until it fits. A record too large on its own is left out and,
        once every other record has been sent, reported by ``RecordTooLargeError`` (a ValueError).
        Event Hubs errors propagate after the SDK's own retries; batches sent before them stay sent.
        """
        if self._closed:
            raise RuntimeError("the telemetry sender is closed")
        groups: dict[str, list[tuple[str, bytes]]] = {}
        for index, record in enumerate(records):
            if not isinstance(record, Mapping):
                raise ValueError(f"records[{index}]: expected a record dict, got {_describe(record)}")
            try:
                encoded = json.dumps(record, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"records[{index}]: not JSON-serialisable ({exc})") from None
            key = f"{record.get('model', self.model)}/{record.get('deployment', self.deployment)}"
            groups.setdefault(key, []).append((str(record.get("request_id", "")), encoded.encode("utf-8")))
        if not groups:
            return SendCounts(0, 0, 0)
        totals = [0, 0, 0]
        too_large: list[str] = []
        with self._send_lock:
            client = self._get_client()
            for key, encoded_records in groups.items():
                self._send_group(client, key, encoded_records, totals, too_large)
        counts = SendCounts(*totals)
        if too_large:
            raise RecordTooLargeError(too_large, counts)
        return counts

    def _send_group(
        self, client: Any, key: str, records: list[tuple[str, bytes]], totals: list[int], too_large: list[str]
    ) -> None:
        """Send one partition key's records in order: fill batches, split events too large for an empty one."""
        size = self.max_records_per_event
        pending = deque(records[start:start + size] for start in range(0, len(records), size))
        batch = client.create_batch(partition_key=key)
        in_batch = 0  # records carried by the events in ``batch``
        while pending:
            chunk = pending.popleft()
            event = self._event([encoded for _, encoded in chunk])
            if _try_add(batch, event):
                in_batch += len(chunk)
                continue
            if len(batch):  # full: send it and try the event in a new, empty batch
                _ship(client, batch, in_batch, totals)
                batch, in_batch = client.create_batch(partition_key=key), 0
                if _try_add(batch, event):
                    in_batch += len(chunk)
                    continue
            if len(chunk) == 1:  # a record too large on its own
                too_large.append(chunk[0][0])
                continue
            half = len(chunk) // 2
            pending.appendleft(chunk[half:])
            pending.appendleft(chunk[:half])
        if len(batch):
            _ship(client, batch, in_batch, totals)

    def _event(self, encoded_records: list[bytes]) -> Any:
        """One event whose body is the records as a JSON array, gzip-compressed when that is smaller."""
        from azure.eventhub import EventData

        body = b"[" + b",".join(encoded_records) + b"]"
        if self.compress and len(body) <= MAX_INFLATED_BYTES:
            compressed = gzip.compress(body, compresslevel=6, mtime=0)
            if len(compressed) < len(body):
                event = EventData(compressed)
                event.properties = {"Content-Encoding": "gzip"}
                return event
        return EventData(body)

    def _get_client(self) -> Any:
        """The producer client, built on first use (identity by default, or the connection string)."""
        with self._client_lock:
            if self._client is None:
                from azure.eventhub import EventHubProducerClient

                if self._connection_string:
                    self._client = EventHubProducerClient.from_connection_string(
                        self._connection_string, eventhub_name=self.eventhub_name
                    )
                else:
                    credential = self._credential
                    if credential is None:
                        from azure.identity import DefaultAzureCredential

                        credential = self._owned_credential = DefaultAzureCredential()
                    self._client = EventHubProducerClient(
                        fully_qualified_namespace=self.fully_qualified_namespace,
                        eventhub_name=self.eventhub_name,
                        credential=credential,
                    )
            return self._client

    # -- background sending ----------------------------------------------------------------------

    def send_in_background(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Queue records for a daemon thread to send and return how many were queued; never blocks.

        When the queue already holds ``queue_size`` records (the hub is slow or unreachable), the extra
        records are dropped and counted in ``dropped_records`` rather than slowing the scoring path.
        The thread counts what it delivered in ``sent_records`` and what it could not in ``failed_records``
        (and logs why). Pass records made by ``record``.
        """
        records = list(records)
        for index, record in enumerate(records):
            if not isinstance(record, Mapping):
                raise ValueError(f"records[{index}]: expected a record dict, got {_describe(record)}")
        queued = 0
        with self._cond:
            for record in records:
                if self._closed or len(self._queue) >= self.queue_size:
                    self.dropped_records += 1
                    continue
                self._queue.append(record)
                queued += 1
            if queued:
                if self._worker is None:
                    self._worker = threading.Thread(target=self._work, name="telemetry-sender", daemon=True)
                    self._worker.start()
                self._cond.notify_all()
        return queued

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return
                chunk = list(self._queue)
                self._queue.clear()
                self._in_flight = len(chunk)
            sent, failed = 0, len(chunk)
            try:
                sent, failed = self.send(chunk).records, 0
            except RecordTooLargeError as exc:
                sent, failed = exc.counts.records, len(exc.request_ids)
                _LOGGER.warning("telemetry: %s", exc)
            except Exception:  # telemetry must never take the scoring process down
                _LOGGER.exception("telemetry: %d records not sent", len(chunk))
            finally:
                with self._cond:
                    self.sent_records += sent
                    self.failed_records += failed
                    self._in_flight = 0
                    self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued record has been sent (or has failed); False if ``timeout`` ran out first."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._in_flight, timeout)

    def close(self, timeout: float | None = 5.0) -> None:
        """Send what is queued (waiting at most ``timeout`` seconds), stop the thread and close the client."""
        self.flush(timeout)
        with self._cond:
            self._closed = True
            self.dropped_records += len(self._queue)  # still queued after the timeout: never sent
            self._queue.clear()
            self._cond.notify_all()
            worker = self._worker
        if worker is not None:
            worker.join(timeout)
        with self._client_lock:
            client, self._client = self._client, None
            credential, self._owned_credential = self._owned_credential, None
        if client is not None:
            client.close()
        if credential is not None:
            credential.close()

    def __enter__(self) -> TelemetrySender:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _try_add(batch: Any, event: Any) -> bool:
    """Add ``event`` to ``batch``; False when the batch has no room for it (``add`` raises ValueError)."""
    try:
        batch.add(event)
    except ValueError:
        return False
    return True


def _ship(client: Any, batch: Any, records: int, totals: list[int]) -> None:
    client.send_batch(batch)
    totals[0] += len(batch)
    totals[1] += 1
    totals[2] += records


__all__ = ["MAX_INFLATED_BYTES", "RecordTooLargeError", "SendCounts", "TelemetrySender"]

"""Inference telemetry: the event body a scoring script sends (contract in docs/telemetry.md)."""
from __future__ import annotations

import zlib
from typing import Any

from controlplane.domain.errors import InvalidEvent
from controlplane.domain.events import TelemetryRecord
from controlplane.parsing.fields import MAX_JSON_BYTES, Fields, parse_json, parse_time


def decode_body(body: bytes, content_encoding: str | None = None) -> bytes:
    """The event body as JSON bytes; gzip is accepted when the event says so (or starts with its magic)."""
    if (content_encoding or "").lower() == "gzip" or body[:2] == b"\x1f\x8b":
        try:
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            data = inflater.decompress(body, MAX_JSON_BYTES)
        except zlib.error as exc:
            raise InvalidEvent("$", f"body is not valid gzip ({exc})") from None
        if inflater.unconsumed_tail:
            raise InvalidEvent("$", f"gzip body inflates beyond {MAX_JSON_BYTES} bytes")
        return data
    return body


def parse_telemetry_body(body: bytes, content_encoding: str | None = None) -> tuple[TelemetryRecord, ...]:
    """One event body (a record or an array of records) as telemetry records."""
    payload = parse_json(decode_body(body, content_encoding))
    if isinstance(payload, list):
        if not payload:
            raise InvalidEvent("$", "the array holds no records")
        return tuple(parse_record(item, f"[{index}]") for index, item in enumerate(payload))
    return (parse_record(payload, "$"),)


def parse_record(raw: Any, path: str = "$") -> TelemetryRecord:
    """One record; the common, well-formed case is read directly, anything else by the strict reader
    (which names the bad field)."""
    fast = _well_formed(raw)
    return fast if fast is not None else _strict_record(raw, path)


def _well_formed(raw: Any) -> TelemetryRecord | None:
    """The record when it is exactly as scoring scripts write it (lower-case keys, right types), else None."""
    if type(raw) is not dict:
        return None
    get = raw.get
    model, version, endpoint, deployment = get("model"), get("version"), get("endpoint"), get("deployment")
    request_id, timestamp, inputs, outputs = get("request_id", ""), get("timestamp"), get("inputs"), get("outputs", {})
    if not (type(model) is str and model.strip() and type(endpoint) is str and endpoint.strip()
            and type(deployment) is str and deployment.strip() and type(request_id) is str
            and type(inputs) is dict and type(outputs) is dict and type(timestamp) is str):
        return None
    if type(version) is int:
        version = str(version)
    elif type(version) is not str or not version.strip():
        return None
    try:
        moment = parse_time(timestamp, "timestamp")
    except InvalidEvent:
        return None
    return TelemetryRecord(model=model, version=version.strip(), endpoint=endpoint, deployment=deployment,
                           request_id=request_id, timestamp=moment, inputs=inputs, outputs=outputs)


def _strict_record(raw: Any, path: str) -> TelemetryRecord:
    record = Fields(raw, path)
    return TelemetryRecord(
        model=record.text("model"),
        version=record.version("version"),
        endpoint=record.text("endpoint"),
        deployment=record.text("deployment"),
        request_id=record.text("request_id", default=""),
        timestamp=record.time("timestamp"),
        inputs=record.obj("inputs").as_dict(),
        outputs=record.obj("outputs", required=False).as_dict(),
    )


__all__ = ["decode_body", "parse_record", "parse_telemetry_body"]

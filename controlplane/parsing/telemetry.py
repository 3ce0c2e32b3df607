"""Inference telemetry: the event body a scoring script sends (contract in docs/telemetry.md)."""
from __future__ import annotations

import zlib
from typing import Any

from controlplane.errors import InvalidEvent
from controlplane.events import TelemetryRecord
from controlplane.parsing.fields import Fields, parse_json

MAX_DECOMPRESSED_BYTES = 16 * 1024 * 1024


def decode_body(body: bytes, content_encoding: str | None = None) -> bytes:
    """The event body as JSON bytes; gzip is accepted when the event says so (or starts with its magic)."""
    if (content_encoding or "").lower() == "gzip" or body[:2] == b"\x1f\x8b":
        try:
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            data = inflater.decompress(body, MAX_DECOMPRESSED_BYTES)
        except zlib.error as exc:
            raise InvalidEvent("$", f"body is not valid gzip ({exc})") from None
        if inflater.unconsumed_tail:
            raise InvalidEvent("$", f"gzip body inflates beyond {MAX_DECOMPRESSED_BYTES} bytes")
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

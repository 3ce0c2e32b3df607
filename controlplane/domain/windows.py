"""Telemetry windows: tumbling per model and deployment, durable, safe under concurrent appenders.

A record falls in the event-time bucket ``floor(timestamp / minutes)``; a bucket's window also closes
early when it has counted ``records`` records, and the bucket's later records open its next part.
A window closes by time once its bucket has ended and the grace period for late records has passed.

Windows keep an exact count and a bounded, uniform sample: a record is kept when the hash of its
position in the hub falls under ``sample / records`` of the hash space, and a check reads the
``sample`` smallest hashes. Hash sampling is deterministic, so concurrent appenders and redelivered
batches keep exactly the same rows, whatever the order.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from controlplane.domain.events import TelemetryEvent, TelemetryRecord

HASH_SPACE = 2 ** 63


@dataclass(frozen=True)
class WindowSpec:
    """How a model's telemetry is cut into windows (its policy's ``drift.window``, see ``WindowPolicy``)."""

    records: int  # close after this many records
    minutes: float  # or when the event-time bucket ends (plus grace)
    grace_minutes: float  # late records within this are still counted in their window
    sample: int  # rows kept for the check

    @property
    def keep_below(self) -> int:
        """Records whose hash is below this are kept: ``sample / records`` of the hash space."""
        return HASH_SPACE if self.sample >= self.records else HASH_SPACE * self.sample // self.records

    def bucket(self, moment: datetime) -> int:
        return int(moment.timestamp() // (self.minutes * 60))

    def bucket_end(self, bucket: int) -> datetime:
        return datetime.fromtimestamp((bucket + 1) * self.minutes * 60, UTC)

    def closes_at(self, bucket: int) -> datetime:
        return self.bucket_end(bucket) + timedelta(minutes=self.grace_minutes)


@dataclass(frozen=True)
class WindowKey:
    model: str
    deployment: str
    bucket: int
    part: int

    def __str__(self) -> str:
        return f"{self.model}/{self.deployment}/{self.bucket}.{self.part}"

    @staticmethod
    def parse(text: str) -> WindowKey:
        """The key ``str(key)`` wrote (Azure ML names hold no '/'); ``ValueError`` for anything else."""
        model, deployment, position = text.rsplit("/", 2)
        bucket, part = position.split(".")
        if not model or not deployment:
            raise ValueError(f"not a window key: {text!r}")
        return WindowKey(model, deployment, int(bucket), int(part))


@dataclass(frozen=True)
class Window:
    key: WindowKey
    count: int
    closed: bool
    reason: str = ""  # records | time

    def to_json(self) -> dict[str, object]:
        return {"model": self.key.model, "deployment": self.key.deployment, "bucket": self.key.bucket,
                "part": self.key.part, "count": self.count, "closed": self.closed, "reason": self.reason}


def record_hash(partition: str, sequence: int, index: int) -> int:
    """A uniform 63-bit hash of a record's position in the hub: the same record, the same hash."""
    digest = hashlib.blake2b(f"{partition}\x1f{sequence}\x1f{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def sample_row(record: TelemetryRecord) -> dict[str, Any]:
    """What a window keeps of a record for the drift check: its inputs, and its outputs as
    ``outputs.<name>`` so prediction drift can be checked beside feature drift."""
    return {**record.inputs, **{f"outputs.{name}": value for name, value in record.outputs.items()}}


@dataclass(frozen=True)
class Placement:
    """Where one record of an event goes: its window's bucket, its hash, and whether the sample keeps it."""

    index: int
    record: TelemetryRecord
    spec: WindowSpec
    bucket: int
    hash: int

    @property
    def kept(self) -> bool:
        return self.hash < self.spec.keep_below


def by_deployment(event: TelemetryEvent) -> dict[tuple[str, str], list[tuple[int, TelemetryRecord]]]:
    """An event's records, with their index in the event, grouped by (model, deployment)."""
    groups: dict[tuple[str, str], list[tuple[int, TelemetryRecord]]] = {}
    for index, record in enumerate(event.records):
        groups.setdefault((record.model, record.deployment), []).append((index, record))
    return dict(sorted(groups.items()))


def place(event: TelemetryEvent, records: list[tuple[int, TelemetryRecord]], spec_for, now: datetime
          ) -> tuple[list[Placement], int]:
    """The records' placements, and how many came too late: their window closed, grace period included."""
    placements, late = [], 0
    for index, record in records:
        spec = spec_for(record.model)
        bucket = spec.bucket(record.timestamp)
        if now >= spec.closes_at(bucket):
            late += 1
            continue
        placements.append(Placement(index, record, spec, bucket,
                                    record_hash(event.partition, event.sequence_number, index)))
    return placements, late

"""Inference telemetry from Event Hubs: parse each event on its own, keep the good records durably
(deduplicated by partition and sequence number) and dead-letter the bad ones as ``invalid``
decisions with their position and raw body, so one poison event never blocks the batch."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from controlplane.domain.errors import InvalidEvent, TransientError
from controlplane.domain.events import TelemetryEvent
from controlplane.domain.ledger import Decision, Source
from controlplane.domain.policy import WindowPolicy
from controlplane.domain.windows import WindowSpec
from controlplane.handlers.drift import evaluate_closed_windows
from controlplane.handlers.record import record_invalid
from controlplane.parsing import parse_telemetry_body
from controlplane.ports import telemetry
from controlplane.ports.store import AppendResult, Services

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RawTelemetry:
    """One Event Hubs event as the trigger received it."""

    partition: str
    sequence_number: int
    enqueued_time: datetime | None
    body: bytes
    content_encoding: str | None = None


@dataclass(frozen=True)
class TelemetryReport:
    events: int
    records: int
    stored: int
    duplicates: int
    invalid: tuple[Decision, ...] = field(default_factory=tuple)
    late: int = 0
    windows: tuple[Decision, ...] = ()  # decisions on the windows this batch closed


def receive_telemetry(services: Services, batch: Sequence[RawTelemetry]) -> TelemetryReport:
    good: list[tuple[RawTelemetry, TelemetryEvent]] = []
    invalid: list[Decision] = []
    for raw in batch:
        try:
            records = parse_telemetry_body(raw.body, raw.content_encoding)
        except InvalidEvent as error:
            invalid.append(dead_letter(services, raw, error))
            continue
        good.append((raw, TelemetryEvent(raw.partition, raw.sequence_number, raw.enqueued_time, records)))
    result = append(services, good, invalid) if good else None
    decided = tuple(evaluate_closed_windows(services, list(result.closed))) if result else ()
    report = TelemetryReport(events=len(batch), records=sum(len(e.records) for _, e in good),
                             stored=result.stored if result else 0, duplicates=result.duplicates if result else 0,
                             invalid=tuple(invalid), late=result.late if result else 0, windows=decided)
    logger.info("telemetry batch events=%d records=%d stored=%d duplicates=%d late=%d invalid=%d windows=%d",
                report.events, report.records, report.stored, report.duplicates, report.late, len(report.invalid),
                len(report.windows))
    counter = telemetry.instruments().telemetry_records
    for kind, count in (("stored", report.stored), ("duplicate", report.duplicates), ("late", report.late),
                        ("invalid", len(report.invalid))):
        if count:
            counter.add(count, {"result": kind})
    return report


def dead_letter(services: Services, raw: RawTelemetry, error: InvalidEvent) -> Decision:
    """Keep one bad event as an ``invalid`` decision keyed by its position, so a retry finds it decided."""
    return record_invalid(services, source=Source.TELEMETRY, payload=raw.body, error=error,
                          event_id=f"{raw.partition}:{raw.sequence_number}", event_type="telemetry",
                          key=f"telemetry:{raw.partition}:{raw.sequence_number}")


def append(services: Services, good: list[tuple[RawTelemetry, TelemetryEvent]], invalid: list[Decision]
           ) -> AppendResult:
    """Append the parsed events in one write. Should the store refuse the batch for anything but a
    transient failure (which is raised, for the retry), each event is appended on its own and the ones it
    refuses are dead-lettered: one event the store cannot keep never holds back the others, on this
    delivery or any retry."""
    spec, now = window_spec(services), services.clock.now()
    try:
        return services.store.append_telemetry([event for _, event in good], spec, now)
    except TransientError:
        raise
    except Exception:
        logger.warning("telemetry batch refused by the store; appending its %d events one by one", len(good))
    results = []
    for raw, event in good:
        try:
            results.append(services.store.append_telemetry([event], spec, now))
        except TransientError:
            raise
        except Exception as error:
            invalid.append(dead_letter(services, raw, InvalidEvent("$", f"the store cannot keep this event "
                                                                         f"({type(error).__name__}: {error})")))
    return AppendResult(stored=sum(r.stored for r in results), duplicates=sum(r.duplicates for r in results),
                        late=sum(r.late for r in results), closed=tuple(k for r in results for k in r.closed))


def window_spec(services: Services):
    """Each model's window settings from its drift policy (the defaults when it has none), looked up
    once per model per batch."""
    found: dict[str, WindowSpec] = {}

    def spec_for(model: str) -> WindowSpec:
        if model not in found:
            rule = services.policy.rule_for(model)
            found[model] = (rule.drift.window if rule and rule.drift else WindowPolicy()).spec()
        return found[model]
    return spec_for

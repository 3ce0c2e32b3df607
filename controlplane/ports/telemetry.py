"""Traces and metrics, through the OpenTelemetry API: what the control plane reports about itself.

The API does nothing until providers are installed, so handlers use it unconditionally; the composition root
installs them (``controlplane.adapters.telemetry``) when telemetry is configured: the Azure Monitor distro with
``APPLICATIONINSIGHTS_CONNECTION_STRING``, or a console exporter. Every name, unit and attribute here is listed in
docs/operations.md, which the alert rules and the workbook query; attributes stay low-cardinality (a source, an
outcome, a task kind, a state), never an id. Ids go on spans.

A decision's span context is kept on each task it opens (``Task.traceparent``), so the sweep that dispatches the
task later, in another invocation, continues the event's trace: one trace from event to Azure ML request.
"""
from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

NAME = "controlplane"
_PROPAGATOR = TraceContextTextMapPropagator()
# Seconds: intake and drift checks take milliseconds to a minute.
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


def tracer() -> trace.Tracer:
    return trace.get_tracer(NAME)


@contextmanager
def span(name: str, *, parent: str = "", kind: trace.SpanKind = trace.SpanKind.INTERNAL,
         link_current: bool = False, **attributes: Any) -> Iterator[trace.Span]:
    """A span ``name`` with ``controlplane.*`` attributes (None values left out). ``parent`` is a stored W3C
    ``traceparent`` to continue instead of the current span; ``link_current`` then links the current span (the
    invocation that resumed the work) so both traces lead to each other."""
    context, links = None, ()
    if parent:
        context = _PROPAGATOR.extract({"traceparent": parent})
        current = trace.get_current_span().get_span_context()
        links = (trace.Link(current),) if link_current and current.is_valid else ()
    with tracer().start_as_current_span(name, context=context, kind=kind, links=links,
                                        attributes=attributes_of(attributes)) as current:
        yield current


def attributes_of(values: Mapping[str, Any]) -> dict[str, Any]:
    return {f"{NAME}.{key}": value if isinstance(value, (bool, int, float)) else str(value)
            for key, value in values.items() if value is not None and value != ""}


def annotate(**values: Any) -> None:
    """Add attributes to the current span."""
    trace.get_current_span().set_attributes(attributes_of(values))


def traceparent() -> str:
    """The current span as a W3C ``traceparent`` (empty when nothing is traced)."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent", "")


@dataclass(frozen=True)
class Instruments:
    decisions: metrics.Counter
    intake_duration: metrics.Histogram
    outbox_tasks: metrics.Gauge
    outbox_oldest_due_age: metrics.Gauge
    dispatch_attempts: metrics.Counter
    dead_letters: metrics.Counter
    rollouts: metrics.Gauge
    rollout_time_in_state: metrics.Gauge
    drift_checks: metrics.Counter
    drift_duration: metrics.Histogram
    lease_takeovers: metrics.Counter
    telemetry_records: metrics.Counter
    incidents_open: metrics.Gauge
    sweeps: metrics.Counter
    last_sweep_age: metrics.Gauge


@functools.cache
def instruments() -> Instruments:
    """The instruments, created once on first use (a provider installed later still receives them)."""
    meter = metrics.get_meter(NAME)
    return Instruments(
        decisions=meter.create_counter("controlplane.decisions", "{decision}",
                                       "Decisions recorded, by source and outcome (invalid and duplicate included)"),
        intake_duration=meter.create_histogram(
            "controlplane.intake.duration", "s", "From an event's receipt to its decision written",
            explicit_bucket_boundaries_advisory=_SECONDS),
        outbox_tasks=meter.create_gauge("controlplane.outbox.tasks", "{task}",
                                        "Outbox tasks by state, as a sweep last saw them"),
        outbox_oldest_due_age=meter.create_gauge("controlplane.outbox.oldest_due_age", "s",
                                                 "How long the oldest due task had waited, as a sweep last saw it"),
        dispatch_attempts=meter.create_counter("controlplane.dispatch.attempts", "{attempt}",
                                               "Outbox dispatches, by operation and result"),
        dead_letters=meter.create_counter("controlplane.dispatch.dead_letters", "{task}",
                                          "Tasks dead-lettered, by operation"),
        rollouts=meter.create_gauge("controlplane.rollouts", "{rollout}", "Rollouts not finished, by state"),
        rollout_time_in_state=meter.create_gauge("controlplane.rollouts.time_in_state", "s",
                                                 "The oldest unfinished rollout's time in its state, by state"),
        drift_checks=meter.create_counter("controlplane.drift.checks", "{check}", "Drift checks, by verdict"),
        drift_duration=meter.create_histogram("controlplane.drift.duration", "s", "Drift check duration",
                                              explicit_bucket_boundaries_advisory=_SECONDS),
        lease_takeovers=meter.create_counter("controlplane.leases.takeovers", "{takeover}",
                                             "Claims taken over after their holder's lease ran out"),
        telemetry_records=meter.create_counter("controlplane.telemetry.records", "{record}",
                                               "Telemetry records, by result (stored, duplicate, late, invalid)"),
        incidents_open=meter.create_gauge("controlplane.incidents.open", "{incident}",
                                          "Open incidents, as a sweep last saw them"),
        sweeps=meter.create_counter("controlplane.sweeps", "{sweep}", "Sweeps, by result (ok, failed)"),
        last_sweep_age=meter.create_gauge("controlplane.sweep.last_success_age", "s",
                                          "Time since the last successful sweep, when health is read"),
    )

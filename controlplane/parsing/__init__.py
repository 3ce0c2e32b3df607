"""Strict parsers from raw payloads to ``controlplane.domain.events``.

Every parser raises ``InvalidEvent`` naming the path of the first bad field; keys are matched
case-insensitively because real Azure sources disagree on casing, and unknown fields are ignored.
"""
from controlplane.parsing.alerts import parse_alert
from controlplane.parsing.eventgrid import parse_registry_event
from controlplane.parsing.telemetry import parse_telemetry_body

__all__ = ["parse_alert", "parse_registry_event", "parse_telemetry_body"]

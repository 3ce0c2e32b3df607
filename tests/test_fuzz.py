"""Property-based fuzzing: whatever arrives, parsers answer with a typed event or one InvalidEvent."""
from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controlplane.domain.errors import InvalidEvent
from controlplane.parsing import parse_alert, parse_registry_event, parse_telemetry_body
from tests.support import load_event

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)


def mutations(fixture):
    """The fixture with one field replaced by arbitrary JSON, at any depth."""
    base = load_event(fixture)
    base = base[0] if isinstance(base, list) else base
    paths = []

    def walk(node, path):
        if isinstance(node, dict):
            for key, value in node.items():
                paths.append(path + (key,))
                walk(value, path + (key,))

    walk(base, ())

    @st.composite
    def mutated(draw):
        event = json.loads(json.dumps(base))
        path = draw(st.sampled_from(paths))
        target = event
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = draw(json_values)
        return event

    return mutated()


def only_invalid_event(parse, value):
    try:
        parse(value)
    except InvalidEvent as error:
        assert error.subject and error.reason


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutations("eg_monitor_breach.json") | mutations("ce_model_registered.json")
       | mutations("eg_model_deployed_docs.json") | mutations("eg_dataset_drift_detected.json") | json_values)
def test_registry_parser_never_fails_unexpectedly(event):
    only_invalid_event(parse_registry_event, event)


@settings(max_examples=300, deadline=None)
@given(mutations("alert_metric_fired.json") | mutations("alert_log_legacy.json")
       | mutations("alert_activity_log.json") | json_values)
def test_alert_parser_never_fails_unexpectedly(alert):
    only_invalid_event(parse_alert, alert)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | mutations("telemetry_record.json").map(lambda r: json.dumps(r).encode()))
def test_telemetry_parser_never_fails_unexpectedly(body):
    only_invalid_event(parse_telemetry_body, body)

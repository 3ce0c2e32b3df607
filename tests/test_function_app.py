"""The app's contract with the Functions host: names, bindings, retry, and a cheap import."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support import ROOT


@pytest.fixture(scope="module")
def functions(app_functions):
    return app_functions


def bindings(function):
    return json.loads(function.get_function_json())["bindings"]


def test_the_functions_are_registered(functions):
    assert sorted(functions) == ["decisions", "health", "on_alert", "on_registry_event", "on_telemetry", "report",
                                 "review", "review_decision", "reviews", "sweep", "ui"]


def test_registry_events_come_from_event_grid(functions):
    [trigger] = bindings(functions["on_registry_event"])
    assert trigger == {"direction": "IN", "type": "eventGridTrigger", "name": "event"}


def test_telemetry_is_an_event_hubs_batch_with_exponential_retry(functions):
    [trigger] = bindings(functions["on_telemetry"])
    assert trigger["type"] == "eventHubTrigger" and trigger["connection"] == "TelemetryEventHub"
    assert trigger["eventHubName"] == "%TELEMETRY_EVENTHUB_NAME%"
    assert trigger["consumerGroup"] == "%TELEMETRY_CONSUMER_GROUP%"
    assert (trigger["cardinality"], trigger["dataType"]) == ("MANY", "BINARY")
    retry = functions["on_telemetry"].get_settings_dict("retry_policy")
    assert retry["strategy"] == "exponential_backoff" and int(retry["max_retry_count"]) == 5
    assert (retry["minimum_interval"], retry["maximum_interval"]) == ("00:00:04", "00:15:00")


@pytest.mark.parametrize("name, route, methods, auth", [
    ("on_alert", "alerts", ["POST"], "FUNCTION"),
    ("decisions", "decisions", ["GET"], "FUNCTION"),
    ("health", "health", ["GET"], "ANONYMOUS"),
    ("reviews", "reviews", ["GET"], "FUNCTION"),
    ("review", "reviews/{id}", ["GET"], "ANONYMOUS"),  # the signed token in the link authorises
    ("review_decision", "reviews/{id}/decision", ["POST"], "ANONYMOUS"),
    ("ui", "ui", ["GET"], "FUNCTION"),
    ("report", "reports/{name}", ["GET"], "ANONYMOUS"),  # the name carries a secret-derived part
])
def test_http_routes(functions, name, route, methods, auth):
    trigger = bindings(functions[name])[0]
    assert trigger["type"] == "httpTrigger"
    assert (trigger["route"], trigger["methods"], trigger["authLevel"]) == (route, methods, auth)


def test_sweep_runs_every_minute(functions):
    [trigger] = bindings(functions["sweep"])
    assert trigger["type"] == "timerTrigger" and trigger["schedule"] == "0 */1 * * * *"


def test_importing_the_app_loads_nothing_heavy():
    probe = ("import sys, function_app; "
             "print(','.join(m for m in ('evidently', 'pandas', 'azure.ai.ml', 'azure.data.tables', 'pydantic', "
             "'yaml', 'numpy', 'scipy') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == ""


def test_function_app_only_registers_blueprints():
    source = (ROOT / "function_app.py").read_text()
    assert "def " not in source and "register_blueprint" in source

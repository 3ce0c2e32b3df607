"""The app as the Functions host's Python worker loads it: its own indexing and function-loading code.

``tests/worker/index_app.py`` runs under the worker's interpreter (``.tools/worker``, azure-functions-runtime
on Python 3.13, installed by ``make test``) and reports, per function, what the worker hands the host. One
binding annotation the worker refuses fails indexing for the whole app ("0 functions found"), which only
this loader shows: ``app.get_functions()`` in the app's own interpreter accepts it.
"""
from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.support import ROOT

WORKER_PYTHON = ROOT / ".tools" / "worker" / "bin" / "python"
INDEX_APP = ROOT / "tests" / "worker" / "index_app.py"

FUNCTIONS = ["decisions", "health", "lists", "model", "on_alert", "on_registry_event", "on_telemetry", "report",
             "review", "review_decision", "review_report", "reviews", "sweep", "task_action", "ui"]


def index(app_dir: Path) -> subprocess.CompletedProcess:
    if not WORKER_PYTHON.exists():
        pytest.fail(f"{WORKER_PYTHON.relative_to(ROOT)} is missing: run `make .tools/worker/bin/python`")
    return subprocess.run([str(WORKER_PYTHON), str(INDEX_APP), str(app_dir)], capture_output=True, text=True,
                          timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"})


@pytest.fixture(scope="module")
def indexed() -> dict[str, dict]:
    run = index(ROOT)
    assert run.returncode == 0, f"the worker refused the app:\n{run.stdout}\n{run.stderr}"
    functions = [json.loads(line) for line in run.stdout.splitlines()]
    return {function["name"]: function for function in functions}


def trigger_of(function: dict) -> dict:
    [trigger] = [b for b in function["raw_bindings"] if b["type"].endswith("Trigger")]
    return trigger


def test_the_worker_loads_every_function(indexed):
    assert sorted(indexed) == FUNCTIONS


def test_registry_events_reach_the_function_as_the_text_event_grid_sent(indexed):
    # ``str`` selects the worker's generic binding: no azure.functions converter runs (and fails) before our parser.
    function = indexed["on_registry_event"]
    assert function["raw_bindings"] == [{"direction": "IN", "type": "eventGridTrigger", "name": "event"}]
    assert function["inputs"] == {"event": {"binding": "generic", "type": "str"}}
    assert function["retry"] is None  # Event Grid retries come from the subscription


def test_telemetry_is_an_event_hubs_batch_with_exponential_retry(indexed):
    function = indexed["on_telemetry"]
    trigger = trigger_of(function)
    assert trigger == {"direction": "IN", "type": "eventHubTrigger", "name": "events", "dataType": "BINARY",
                       "cardinality": "MANY", "connection": "TelemetryEventHub",
                       "eventHubName": "%TELEMETRY_EVENTHUB_NAME%", "consumerGroup": "%TELEMETRY_CONSUMER_GROUP%"}
    assert function["bindings"]["events"] == {"type": "eventHubTrigger", "data_type": 2, "direction": 0}
    assert function["inputs"] == {"events": {"binding": "eventHubTrigger", "type": "List"}}
    assert function["retry"] == {"retry_strategy": "exponential_backoff", "max_retry_count": 5,
                                 "minimum_interval": 4.0, "maximum_interval": 900.0}


@pytest.mark.parametrize("name, route, methods, auth", [
    ("on_alert", "alerts", ["POST"], "FUNCTION"),
    ("decisions", "decisions", ["GET"], "FUNCTION"),
    ("model", "models/{name}", ["GET"], "FUNCTION"),
    ("health", "health", ["GET"], "ANONYMOUS"),
    ("reviews", "reviews", ["GET"], "FUNCTION"),
    ("review", "reviews/{id}", ["GET", "POST"], "ANONYMOUS"),  # the signed token in the link authorises
    ("review_decision", "reviews/{id}/decision", ["POST"], "ANONYMOUS"),
    ("review_report", "reviews/{id}/report", ["POST"], "ANONYMOUS"),  # with the reviewer's token
    ("ui", "ui", ["GET"], "FUNCTION"),
    ("report", "reports/{name}", ["GET"], "FUNCTION"),
])
def test_http_routes(indexed, name, route, methods, auth):
    function = indexed[name]
    trigger = trigger_of(function)
    assert (trigger["route"], trigger["methods"], trigger["authLevel"]) == (route, methods, auth)
    assert function["inputs"] == {"req": {"binding": "httpTrigger", "type": "HttpRequest"}}
    assert function["return"] == "http"
    assert {b["name"]: b["direction"] for b in function["raw_bindings"]} == {"req": "IN", "$return": "OUT"}


def test_sweep_runs_every_minute_and_is_not_retried_by_the_host(indexed):
    function = indexed["sweep"]
    assert trigger_of(function) == {"direction": "IN", "type": "timerTrigger", "name": "timer",
                                    "schedule": "0 */1 * * * *", "runOnStartup": False, "useMonitor": True}
    assert function["inputs"] == {"timer": {"binding": "timerTrigger", "type": "TimerRequest"}}
    assert function["retry"] is None


def test_the_worker_refuses_a_pep_585_binding_annotation(tmp_path):
    # The check this suite relies on is live: the annotation the app once had fails the whole app.
    (tmp_path / "function_app.py").write_text(textwrap.dedent("""
        import azure.functions as func

        app = func.FunctionApp()

        @app.function_name("ok")
        @app.route(route="ok")
        def ok(req: func.HttpRequest) -> func.HttpResponse:
            return func.HttpResponse("ok")

        @app.function_name("batch")
        @app.event_hub_message_trigger(arg_name="events", connection="C", event_hub_name="h",
                                       cardinality=func.Cardinality.MANY)
        def batch(events: list[func.EventHubEvent]) -> None:
            pass
    """))
    run = index(tmp_path)
    assert run.returncode == 1
    assert "binding events has invalid non-type annotation list[" in run.stdout

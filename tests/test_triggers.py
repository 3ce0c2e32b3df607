"""Triggers called as the Python worker calls them, with the worker's own converters."""
from __future__ import annotations

import gzip
import json

import azure.functions as func
import pytest
from azure.functions import meta
from azure.functions.eventgrid import EventGridEventInConverter
from azure.functions.timer import TimerRequest

from controlplane import bootstrap
from controlplane.ledger import Outcome
from controlplane.localhost import event_hub_events
from tests.support import event_bytes, load_event


@pytest.fixture(autouse=True)
def wired(services):
    bootstrap.reset(services)
    yield services
    bootstrap.reset()


@pytest.fixture(scope="module")
def functions(app_functions):
    return {name: f.get_user_function() for name, f in app_functions.items()}


def grid_event(payload):
    return EventGridEventInConverter.decode(meta.Datum(json.dumps(payload), "json"), trigger_metadata={})


def test_event_grid_schema_and_cloudevents_reach_the_same_handler(functions, wired):
    functions["on_registry_event"](grid_event(load_event("eg_monitor_breach.json")[0]))
    cloud = grid_event(load_event("ce_model_registered.json"))
    assert isinstance(cloud, func.CloudEvent)
    functions["on_registry_event"](cloud)

    outcomes = {d.event_type.rsplit(".", 1)[1]: d.outcome for d in wired.store.decisions()}
    assert outcomes == {"RunStatusChanged": Outcome.RETRAIN, "ModelRegistered": Outcome.NO_ACTION}


def test_a_malformed_grid_event_is_recorded_not_raised(functions, wired):
    functions["on_registry_event"](grid_event(load_event("eg_batch_mixed.json")[2]))
    [decision] = wired.store.decisions()
    assert decision.outcome is Outcome.INVALID and decision.evidence["field"] == "data.ModelName"


def test_a_store_outage_is_raised_so_event_grid_retries(functions, wired):
    wired.store.down = True
    with pytest.raises(Exception, match="down"):
        functions["on_registry_event"](grid_event(load_event("eg_monitor_breach.json")[0]))


def test_telemetry_batch_with_partition_context_and_gzip_property(functions, wired):
    bodies = [event_bytes("telemetry_batch.json"), gzip.compress(event_bytes("telemetry_record.json")),
              b"not json"]
    events = event_hub_events(bodies, partition="3", first_sequence=100,
                              properties=[{}, {"Content-Encoding": "gzip"}, {}])
    functions["on_telemetry"](events)
    functions["on_telemetry"](events)  # redelivered after a lost checkpoint

    assert wired.store.telemetry_count("churn", "green") == 6
    [dead] = [d for d in wired.store.decisions() if d.outcome is Outcome.INVALID]
    assert dead.event_id == "3:102"


def http(method, url, body=b"", params=None):
    return func.HttpRequest(method=method, url=url, body=body, params=params or {}, headers={})


def test_alert_webhook_answers_200_400_413_and_503(functions, wired):
    on_alert = functions["on_alert"]
    ok = on_alert(http("POST", "/api/alerts", event_bytes("alert_metric_fired.json")))
    assert ok.status_code == 200 and json.loads(ok.get_body())["decision"]["outcome"] == "notify"

    bad = on_alert(http("POST", "/api/alerts", b'{"schemaId": "azureMonitorCommonAlertSchema", "data": 3}'))
    assert bad.status_code == 400 and json.loads(bad.get_body())["error"]["field"] == "data"

    huge = on_alert(http("POST", "/api/alerts", b" " * (600 * 1024)))
    assert huge.status_code == 413

    wired.store.down = True
    down = on_alert(http("POST", "/api/alerts", event_bytes("alert_cpu_fired.json")))
    assert down.status_code == 503 and down.headers["Retry-After"]


def test_a_misconfigured_app_answers_alerts_with_503_so_action_groups_retry(functions, monkeypatch):
    bootstrap.reset()
    monkeypatch.setenv("CONTROLPLANE_POLICY", "/nonexistent/policy.yaml")
    reply = functions["on_alert"](http("POST", "/api/alerts", event_bytes("alert_cpu_fired.json")))
    assert reply.status_code == 503 and "policy" in json.loads(reply.get_body())["error"]["reason"]


def test_decisions_filters_by_model_and_validates_limit(functions, wired):
    functions["on_registry_event"](grid_event(load_event("eg_monitor_breach.json")[0]))
    functions["on_registry_event"](grid_event(load_event("ce_model_registered.json")))

    reply = functions["decisions"](http("GET", "/api/decisions", params={"model": "churn", "limit": "5"}))
    assert reply.status_code == 200
    assert [d["model"] for d in json.loads(reply.get_body())["decisions"]] == ["churn"]

    bad = functions["decisions"](http("GET", "/api/decisions", params={"limit": "lots"}))
    assert bad.status_code == 400 and json.loads(bad.get_body())["error"]["field"] == "limit"


def test_health_reports_the_store(functions, wired):
    assert functions["health"](http("GET", "/api/health")).status_code == 200
    wired.store.down = True
    reply = functions["health"](http("GET", "/api/health"))
    assert reply.status_code == 503 and "down" in json.loads(reply.get_body())["checks"]["store"]


def test_health_names_a_bad_setting(functions, monkeypatch):
    bootstrap.reset()
    monkeypatch.setenv("CONTROLPLANE_STORE", "postgres://db")
    reply = functions["health"](http("GET", "/api/health"))
    assert reply.status_code == 503 and "CONTROLPLANE_STORE" in json.loads(reply.get_body())["checks"]["services"]


def test_sweep_timer_drains_the_outbox(functions, wired):
    functions["on_registry_event"](grid_event(load_event("eg_monitor_breach.json")[0]))
    functions["sweep"](TimerRequest(past_due=False))
    assert [t.state.value for t in wired.store.tasks()] == ["succeeded"]
    assert len(wired.dispatcher.sent) == 1

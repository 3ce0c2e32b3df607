"""Triggers invoked as the Python worker invokes them: from the input the host sends (a ``Datum`` and its
trigger metadata, built by ``controlplane.dev.localhost``'s ``*_input`` functions) through the worker's decoding
(``azure.functions``' converters, or the generic binding for ``str`` parameters)."""
from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime

import azure.functions as func
import pytest
from azure.functions.eventgrid import EventGridEventInConverter

from controlplane import bootstrap
from controlplane.dev.localhost import (
    Function,
    LocalHost,
    event_grid_input,
    event_hub_input,
    http_input,
    timer_input,
)
from controlplane.domain.ledger import Outcome
from tests.support import event_bytes, load_event


@pytest.fixture(autouse=True)
def wired(services):
    bootstrap.reset(services)
    yield services
    bootstrap.reset()


@pytest.fixture(scope="module")
def functions(app_functions):
    return {name: Function.of(f) for name, f in app_functions.items()}


def deliver(functions, payload):
    return functions["on_registry_event"].invoke(event_grid_input(payload))


def test_event_grid_schema_and_cloudevents_reach_the_same_handler(functions, wired):
    deliver(functions, load_event("eg_monitor_breach.json")[0])
    deliver(functions, load_event("ce_model_registered.json"))

    outcomes = {d.event_type.rsplit(".", 1)[1]: d.outcome for d in wired.store.decisions()}
    assert outcomes == {"RunStatusChanged": Outcome.RETRAIN, "ModelRegistered": Outcome.NO_ACTION}


def test_a_malformed_grid_event_is_recorded_not_raised(functions, wired):
    deliver(functions, load_event("eg_batch_mixed.json")[2])
    [decision] = wired.store.decisions()
    assert decision.outcome is Outcome.INVALID and decision.evidence["field"] == "data.ModelName"


def test_an_event_time_the_sdk_converter_refuses_is_read_and_kept_in_utc(functions, wired):
    # GIVEN a registration whose eventTime carries an offset, which azure.functions' Event Grid converter raises on
    event = {**load_event("eg_model_registered_docs.json")[0], "eventTime": "2026-11-22T11:00:00.1234567+01:00"}
    with pytest.raises(ValueError):
        EventGridEventInConverter.decode(event_grid_input(event), trigger_metadata={})
    # WHEN the host delivers it to on_registry_event (a ``str`` parameter: no converter runs)
    deliver(functions, event)
    # THEN it is decided like any other, at the same instant in UTC
    [decision] = wired.store.decisions()
    assert decision.outcome is not Outcome.INVALID
    assert decision.received_at == datetime(2026, 11, 22, 10, 0, 0, 123456, tzinfo=UTC)


@pytest.mark.parametrize("text, field", [
    ('{"id": "e1", "eventType": "Microsoft.MachineLearningServices.ModelRegistered", "eventTime": "yesterday", '
     '"data": {}, "subject": "models/m:1", "topic": "t", "dataVersion": "2"}', "eventTime"),
    ('{"id": "e2", "eventType": ', "$"),
    ('[1, 2]', "$"),
])
def test_an_event_nothing_can_decode_is_invalid_and_names_the_field(functions, wired, text, field):
    deliver(functions, text)
    [decision] = wired.store.decisions()
    assert decision.outcome is Outcome.INVALID and decision.evidence["field"] == field


def test_one_undecodable_event_in_a_delivery_leaves_the_others_decided(app_functions, wired):
    # GIVEN a delivery [good, undecodable, good] to the local host's Event Grid webhook
    host = LocalHost(functions=[Function.of(app_functions["on_registry_event"])])
    first, second = load_event("eg_model_registered_docs.json")[0], load_event("eg_monitor_breach.json")[0]
    bad = {**first, "id": "bad-time", "eventTime": "2026-13-45T99:00:00Z"}
    body = json.dumps([first, bad, second]).encode()
    # WHEN it is delivered
    reply = host.handle("POST", "/runtime/webhooks/EventGrid?functionName=on_registry_event",
                        {"aeg-event-type": "Notification"}, body)
    # THEN every event has its decision, the bad one as invalid, and the delivery is acknowledged
    assert reply.status == 202
    outcomes = {d.event_id: d.outcome for d in wired.store.decisions()}
    assert outcomes[first["id"]] is not Outcome.INVALID and outcomes[second["id"]] is Outcome.RETRAIN
    assert outcomes["bad-time"] is Outcome.INVALID


def test_a_store_outage_is_raised_so_event_grid_retries(functions, wired):
    wired.store.down = True
    with pytest.raises(Exception, match="down"):
        deliver(functions, load_event("eg_monitor_breach.json")[0])


def test_telemetry_batch_with_partition_context_and_gzip_property(functions, wired):
    bodies = [event_bytes("telemetry_batch.json"), gzip.compress(event_bytes("telemetry_record.json")),
              b"not json"]
    datum, metadata = event_hub_input(bodies, partition="3", first_sequence=100,
                                      properties=[{}, {"Content-Encoding": "gzip"}, {}])
    assert {"SequenceNumberArray", "EnqueuedTimeUtcArray", "PropertiesArray", "SystemPropertiesArray",
            "PartitionContext"} <= set(metadata)
    functions["on_telemetry"].invoke(datum, metadata)
    functions["on_telemetry"].invoke(datum, metadata)  # redelivered after a lost checkpoint

    assert wired.store.telemetry_count("churn", "green") == 6
    [dead] = [d for d in wired.store.decisions() if d.outcome is Outcome.INVALID]
    assert dead.event_id == "3:102"


def call(function, method, url, body=b"", params=None, headers=None) -> func.HttpResponse:
    return function.invoke(http_input(method, f"http://localhost{url}", headers or {}, params or {}, {}, body))


def test_alert_webhook_answers_200_400_413_and_503(functions, wired):
    on_alert = functions["on_alert"]
    ok = call(on_alert, "POST", "/api/alerts", event_bytes("alert_metric_fired.json"))
    assert ok.status_code == 200 and json.loads(ok.get_body())["decision"]["outcome"] == "notify"

    bad = call(on_alert, "POST", "/api/alerts", b'{"schemaId": "azureMonitorCommonAlertSchema", "data": 3}')
    assert bad.status_code == 400 and json.loads(bad.get_body())["error"]["field"] == "data"

    huge = call(on_alert, "POST", "/api/alerts", b" " * (600 * 1024))
    assert huge.status_code == 413

    wired.store.down = True
    down = call(on_alert, "POST", "/api/alerts", event_bytes("alert_cpu_fired.json"))
    assert down.status_code == 503 and down.headers["Retry-After"]


def test_a_misconfigured_app_answers_alerts_with_503_so_action_groups_retry(functions, monkeypatch):
    bootstrap.reset()
    monkeypatch.setenv("CONTROLPLANE_POLICY", "/nonexistent/policy.yaml")
    reply = call(functions["on_alert"], "POST", "/api/alerts", event_bytes("alert_cpu_fired.json"))
    assert reply.status_code == 503 and "policy" in json.loads(reply.get_body())["error"]["reason"]


def test_decisions_filters_by_model_and_validates_limit(functions, wired):
    deliver(functions, load_event("eg_monitor_breach.json")[0])
    deliver(functions, load_event("ce_model_registered.json"))

    reply = call(functions["decisions"], "GET", "/api/decisions", params={"model": "churn", "limit": "5"})
    assert reply.status_code == 200
    assert [d["model"] for d in json.loads(reply.get_body())["decisions"]] == ["churn"]

    bad = call(functions["decisions"], "GET", "/api/decisions", params={"limit": "lots"})
    assert bad.status_code == 400 and json.loads(bad.get_body())["error"]["field"] == "limit"


def test_decisions_come_a_page_at_a_time_and_a_bad_continuation_is_a_400_naming_it(functions, wired):
    for n in range(5):
        event = load_event("eg_monitor_breach.json")[0]
        deliver(functions, {**event, "id": f"{event['id']}-{n}"})

    def get(**params):
        reply = call(functions["decisions"], "GET", "/api/decisions", params=params)
        return reply.status_code, json.loads(reply.get_body())

    status, first = get(limit="2", model="churn")
    _, second = get(limit="2", model="churn", continuation=first["continuation"])
    _, third = get(limit="2", model="churn", continuation=second["continuation"])
    assert status == 200 and third["continuation"] is None
    ids = [d["id"] for page in (first, second, third) for d in page["decisions"]]
    assert len(ids) == len(set(ids)) == 5

    token = first["continuation"]
    for params, field in [({"continuation": token[:-3] + "AAA"}, "continuation"),  # edited
                          ({"continuation": "%%%"}, "continuation"),
                          ({"continuation": token, "model": "other"}, "continuation"),  # another query's token
                          ({"outcome": "maybe"}, "outcome"), ({"since": "yesterday"}, "since"),
                          ({"until": "2026-11-22T10:00:00"}, "until")]:
        status, body = get(**{"model": "churn", "limit": "2", **params})
        assert (status, body["error"]["field"]) == (400, field), params


def test_health_reports_the_store(functions, wired):
    assert call(functions["health"], "GET", "/api/health").status_code == 200
    wired.store.down = True
    reply = call(functions["health"], "GET", "/api/health")
    assert reply.status_code == 503 and "down" in json.loads(reply.get_body())["checks"]["store"]


def test_health_names_a_bad_setting(functions, monkeypatch):
    bootstrap.reset()
    monkeypatch.setenv("CONTROLPLANE_STORE", "postgres://db")
    reply = call(functions["health"], "GET", "/api/health")
    assert reply.status_code == 503 and "CONTROLPLANE_STORE" in json.loads(reply.get_body())["checks"]["services"]


def test_sweep_timer_drains_the_outbox(functions, wired):
    deliver(functions, load_event("eg_monitor_breach.json")[0])
    functions["sweep"].invoke(timer_input(past_due=True))
    assert [t.state.value for t in wired.store.tasks()] == ["succeeded"]
    assert len(wired.dispatcher.sent) == 1

"""The local host as a user runs it: ``python -m controlplane serve``, at Core Tools' URLs."""
from __future__ import annotations

import json
import threading
import uuid

import pytest

from tests.support import event_bytes, load_event, local_host, request


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("host")
    with local_host({"CONTROLPLANE_STORE": f"sqlite:///{workdir}/cp.db"}, workdir) as running:
        yield running


def test_status_and_health(host):
    assert request("GET", f"{host.url}/admin/host/status").json()["state"] == "Running"
    health = request("GET", f"{host.url}/api/health")
    assert health.status == 200 and health.json()["checks"]["store"] == "ok (sqlite)"


def test_subscription_validation_handshake(host):
    payload = load_event("eg_subscription_validation.json")
    reply = request("POST", f"{host.url}/runtime/webhooks/EventGrid?functionName=on_registry_event",
                    json.dumps(payload), {"aeg-event-type": "SubscriptionValidation"})
    assert reply.status == 200
    assert reply.json() == {"validationResponse": payload[0]["data"]["validationCode"]}


def test_cloudevents_webhook_validation(host):
    reply = request("OPTIONS", f"{host.url}/runtime/webhooks/EventGrid?functionName=on_registry_event",
                    headers={"WebHook-Request-Origin": "eventgrid.azure.net"})
    assert reply.status == 200 and reply.headers["WebHook-Allowed-Origin"] == "eventgrid.azure.net"


def test_same_event_posted_twice_gives_one_decision_and_one_duplicate(host):
    event = load_event("eg_model_registered_docs.json")
    assert host.post_events(event).status == 202
    assert host.post_events(event).status == 202
    mine = [d for d in host.decisions(limit=100) if d["event_id"] == event[0]["id"]]
    assert sorted(d["outcome"] for d in mine) == ["duplicate", "inconclusive"]  # no auc tag: a person looks


def test_a_bad_event_in_a_delivery_loses_none_of_the_others(host):
    batch = load_event("eg_batch_mixed.json")
    assert host.post_events(batch).status == 202
    by_id = {d["event_id"]: d for d in host.decisions(limit=100)}
    assert by_id[batch[0]["id"]]["outcome"] == "inconclusive"
    assert by_id[batch[1]["id"]]["outcome"] == "no_action"
    assert by_id[batch[2]["id"]]["outcome"] == "invalid"
    assert by_id[batch[2]["id"]]["evidence"]["field"] == "data.ModelName"


def test_unknown_event_type_is_an_invalid_decision_naming_the_field(host):
    event = load_event("eg_unknown_type.json")
    assert host.post_events(event).status == 202
    [decision] = [d for d in host.decisions(limit=100) if d["event_id"] == event[0]["id"]]
    assert decision["outcome"] == "invalid" and decision["evidence"]["field"] == "eventType"


@pytest.mark.parametrize("body, headers, status", [
    (b"{not json", {"aeg-event-type": "Notification"}, 400),
    (b"[1, 2]", {"aeg-event-type": "Notification"}, 400),
    (b"[]", {}, 400),  # no aeg-event-type header
])
def test_malformed_deliveries_get_a_clear_4xx(host, body, headers, status):
    reply = request("POST", f"{host.url}/runtime/webhooks/EventGrid?functionName=on_registry_event", body, headers)
    assert reply.status == status and reply.json()["error"]


def test_alerts_over_http(host):
    fired = request("POST", f"{host.url}/api/alerts", event_bytes("alert_log_v2.json"))
    assert fired.status == 200 and fired.json()["decision"]["outcome"] == "notify"
    for _ in range(2):  # a resent bad body is answered the same way
        bad = request("POST", f"{host.url}/api/alerts", b'{"schemaId": "azureMonitorCommonAlertSchema"}')
        assert bad.status == 400 and bad.json()["error"] == {"field": "data", "reason": "required field is missing"}
    huge = request("POST", f"{host.url}/api/alerts", b"x" * (1024 * 1024))
    assert huge.status == 413
    assert request("GET", f"{host.url}/api/alerts").status == 405
    assert request("GET", f"{host.url}/api/health").status == 200  # still serving


def test_telemetry_and_timer_through_the_admin_endpoint(host):
    body = {"input": event_bytes("telemetry_batch.json").decode(), "partitionId": "7", "sequenceNumber": 1}
    assert request("POST", f"{host.url}/admin/functions/on_telemetry", json.dumps(body)).status == 202
    assert request("POST", f"{host.url}/admin/functions/on_telemetry", json.dumps(body)).status == 202
    poison = {"input": "garbage", "partitionId": "7", "sequenceNumber": 2}
    assert request("POST", f"{host.url}/admin/functions/on_telemetry", json.dumps(poison)).status == 202
    [dead] = [d for d in host.decisions(limit=100) if d["event_id"] == "7:2"]
    assert dead["outcome"] == "invalid" and dead["evidence"]["payload"] == "garbage"
    assert request("POST", f"{host.url}/admin/functions/sweep", '{"input": ""}').status == 202
    assert request("POST", f"{host.url}/admin/functions/nope", "{}").status == 404


def test_decisions_query_validation(host):
    assert request("GET", f"{host.url}/api/decisions?limit=0").status == 400
    assert request("GET", f"{host.url}/api/decisions?limit=501").json()["error"]["field"] == "limit"
    assert request("GET", f"{host.url}/api/nothing-here").status == 404


def post_until_accepted(host, event, outcomes):
    """Post like Event Grid does: retry while another instance holds the event (500)."""
    for _ in range(200):
        reply = host.post_events([event])
        if reply.status == 202:
            outcomes.append(event["id"])
            return
    raise AssertionError(f"event {event['id']} never accepted")


def overlapping_events(count):
    template = load_event("eg_model_registered_sdk.json")
    events = []
    for n in range(count):
        event = json.loads(json.dumps(template))
        event["id"] = f"evt-{n:04d}"
        event["data"]["modelVersion"] = str(n)
        events.append(event)
    return events


@pytest.mark.parametrize("store", ["sqlite", "tables"])
def test_eight_posters_with_overlapping_events_get_one_decision_per_event(store, tmp_path, request):
    env = {"CONTROLPLANE_STORE": f"sqlite:///{tmp_path}/cp.db"}
    if store == "tables":
        env = {"CONTROLPLANE_STORE": "tables", "CONTROLPLANE_TABLE_PREFIX": f"posters{uuid.uuid4().hex[:8]}",
               "AzureWebJobsStorage": request.getfixturevalue("azurite").connection_string}
    events = overlapping_events(40)
    with local_host(env, tmp_path) as host:
        accepted = run_posters(host, events)
        decisions = host.decisions(limit=500)

    assert len(accepted) == 8 * len(events)
    firsts = sorted(d["event_id"] for d in decisions if d["outcome"] != "duplicate")
    assert firsts == sorted(e["id"] for e in events)
    assert sum(d["outcome"] == "duplicate" for d in decisions) == 7 * len(events)


def run_posters(host, events, posters=8):
    accepted, errors = [], []

    def poster(offset):
        try:
            for n in range(len(events)):
                post_until_accepted(host, events[(n + offset) % len(events)], accepted)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=poster, args=(i * 3,)) for i in range(posters)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)
    assert errors == []
    return accepted

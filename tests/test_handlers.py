"""Use cases with hand-written fakes: what each event decides, exactly once."""
from __future__ import annotations

import copy
import json
from dataclasses import replace
from datetime import timedelta

import pytest

from controlplane.domain.errors import EventInProgress, PermanentError, StoreUnavailable, TransientError
from controlplane.domain.ledger import Outcome, TaskKind, TaskState
from controlplane.handlers.alerts import receive_alert
from controlplane.handlers.registry import receive_registry_event
from controlplane.handlers.sweep import MAX_ATTEMPTS, sweep
from controlplane.handlers.telemetry import RawTelemetry, receive_telemetry
from tests.fakes import RecordingDispatcher
from tests.support import event_bytes, load_event


def first(name):
    payload = load_event(name)
    return payload[0] if isinstance(payload, list) else payload


def test_classical_model_breach_opens_one_retraining_task_with_a_deterministic_job_name(services):
    decision = receive_registry_event(services, first("eg_monitor_breach.json"))

    assert decision.outcome is Outcome.RETRAIN and decision.model == "churn"
    assert "age, tenure_months, plan" in decision.reason
    [task] = decision.tasks
    assert task.kind is TaskKind.RETRAINING and task.state is TaskState.PENDING
    job = task.request["job"]
    assert job["name"].startswith("retrain-churn-") and job["source"] == "pipelines/retrain-churn.yml"
    assert job["inputs"] == {"model_name": "churn", "training_data": "azureml:churn-training@latest"}
    assert decision.evidence["signal"]["features"][0]["feature"] == "age"
    assert decision.policy_version == services.policy.version
    assert services.store.outbox == {task.id: task}


def test_the_same_event_twice_gives_one_decision_and_one_duplicate(services):
    original = receive_registry_event(services, first("eg_monitor_breach.json"))
    again = receive_registry_event(services, first("eg_monitor_breach.json"))

    assert again.outcome is Outcome.DUPLICATE and again.tasks == ()
    assert again.evidence == {"duplicate_of": original.id} and again.model == "churn"
    assert len(services.store.outbox) == 1
    assert [d.outcome for d in services.store.decisions()] == [Outcome.DUPLICATE, Outcome.RETRAIN]


def test_cv_model_breach_goes_to_human_review(services):
    event = copy.deepcopy(first("eg_monitor_breach.json"))
    event["data"]["experimentName"] = "defect-detector-drift"
    decision = receive_registry_event(services, event)

    assert decision.outcome is Outcome.REVIEW and decision.model == "defect-detector"
    [review] = decision.reviews
    assert review.kind.value == "drift" and review.approvers == ("vision-reviewers@contoso.com",)
    assert review.evidence["signal"]["features"][0]["feature"] == "age"
    [notice] = decision.tasks  # the reviewers are told
    assert notice.kind is TaskKind.NOTIFY and notice.request["review_id"] == review.id


def test_shadow_mode_records_the_verdict_and_dispatches_nothing(services):
    decision = receive_registry_event(services, first("ce_monitor_breach.json"))  # ticket-classifier: shadow

    assert decision.outcome is Outcome.REVIEW and decision.tasks == () and decision.reviews == ()
    assert "shadow mode" in decision.reason and decision.evidence["shadow"]["reviews"][0]["kind"] == "drift"
    assert services.store.outbox == {} and services.store.review_book == {}


def test_breach_from_an_unmapped_monitor_is_inconclusive_not_silently_dropped(services):
    event = copy.deepcopy(first("eg_monitor_breach.json"))
    event["data"]["experimentName"] = "someone-elses-monitor"
    decision = receive_registry_event(services, event)
    assert decision.outcome is Outcome.INCONCLUSIVE and "someone-elses-monitor" in decision.reason


def test_legacy_dataset_drift_enters_the_same_action_path(services):
    decision = receive_registry_event(services, first("eg_dataset_drift_detected.json"))
    assert decision.outcome in (Outcome.RETRAIN, Outcome.REVIEW, Outcome.INCONCLUSIVE)
    assert decision.evidence["signal"]["kind"] == "dataset_monitor"


@pytest.mark.parametrize("name, model, version", [
    ("eg_model_deployed_docs.json", "churn", "3"),
    ("ce_run_completed_sdk.json", "defect-detector", None),  # from the run's model_name tag
    ("eg_run_status_changed_docs.json", None, None),
])
def test_lifecycle_events_are_recorded_with_their_evidence(services, name, model, version):
    decision = receive_registry_event(services, first(name))
    assert decision.outcome is Outcome.NO_ACTION and decision.tasks == ()
    assert (decision.model, decision.version) == (model, version)
    assert decision.evidence


def test_invalid_event_becomes_an_invalid_decision_naming_the_field(services):
    decision = receive_registry_event(services, load_event("eg_batch_mixed.json")[2])
    assert decision.outcome is Outcome.INVALID and decision.evidence["field"] == "data.ModelName"
    assert '"ModelName": 42' in decision.evidence["payload"]
    again = receive_registry_event(services, load_event("eg_batch_mixed.json")[2])
    assert again.outcome is Outcome.DUPLICATE


def test_unknown_event_type_is_recorded_invalid(services):
    decision = receive_registry_event(services, first("eg_unknown_type.json"))
    assert decision.outcome is Outcome.INVALID and decision.evidence["field"] == "eventType"
    assert decision.event_type.endswith("SomethingNew")


@pytest.mark.parametrize("kind", ["fake", "sqlite", "tables"])
def test_a_failed_decision_releases_its_claim_so_the_retry_decides(services, make_store, monkeypatch, kind):
    import controlplane.handlers.alerts as alerts

    services = replace(services, store=make_store(kind))
    body = event_bytes("alert_metric_fired.json")  # alerts claim their key before deciding
    claims = []
    real_claim = type(services.store).claim

    def claim(self, *args, **kwargs):
        claims.append(real_claim(self, *args, **kwargs))
        return claims[-1]

    def broken(*args, **kwargs):
        raise StoreUnavailable("workspace lookup", "timed out")

    real_decide = alerts.decide_alert
    monkeypatch.setattr(type(services.store), "claim", claim)
    monkeypatch.setattr(alerts, "decide_alert", broken)
    with pytest.raises(StoreUnavailable):
        receive_alert(services, body)
    monkeypatch.setattr(alerts, "decide_alert", real_decide)
    # the retry comes within the lease: a claim left held would answer "in progress" for five minutes
    decision = receive_alert(services, body).decision
    assert decision.outcome is Outcome.NOTIFY and len(claims) == 2
    assert not claims[1].is_duplicate and not claims[1].taken_over
    assert [d.id for d in services.store.decisions()] == [decision.id]


def test_an_event_held_by_another_instance_is_retried_not_duplicated(services):
    key = "ml:" + first("eg_monitor_breach.json")["id"]
    services.store.claim(key, "churn", services.clock.now(), timedelta(minutes=5))
    with pytest.raises(EventInProgress):
        receive_registry_event(services, first("eg_monitor_breach.json"))
    services.clock.advance(minutes=6)  # the holder crashed: its lease runs out
    assert receive_registry_event(services, first("eg_monitor_breach.json")).outcome is Outcome.RETRAIN


def test_alert_fired_and_resolved_are_two_decisions_each_notifying(services):
    fired = receive_alert(services, event_bytes("alert_metric_fired.json")).decision
    resolved = receive_alert(services, event_bytes("alert_metric_resolved.json")).decision
    refired = receive_alert(services, event_bytes("alert_metric_fired.json")).decision

    assert fired.outcome is Outcome.NOTIFY and fired.idempotency_key.endswith(":Fired")
    assert resolved.outcome is Outcome.NOTIFY and "resolved" in resolved.reason
    assert refired.outcome is Outcome.DUPLICATE
    [task] = fired.tasks
    assert task.kind is TaskKind.NOTIFY and task.request["channel"] == "infrastructure"
    assert fired.evidence["conditions"][0]["threshold"] == 500.0


def test_bad_alert_body_is_invalid_with_its_field_every_time_it_comes(services):
    body = b'{"schemaId": "azureMonitorCommonAlertSchema", "data": {}}'
    first_receipt, second_receipt = receive_alert(services, body), receive_alert(services, body)
    assert first_receipt.decision.outcome is Outcome.INVALID
    assert first_receipt.decision.evidence["field"] == first_receipt.error.subject == "data.essentials"
    assert second_receipt.decision.outcome is Outcome.DUPLICATE and second_receipt.error.subject == "data.essentials"


def raw(name_or_body, sequence, partition="0"):
    body = name_or_body if isinstance(name_or_body, bytes) else event_bytes(name_or_body)
    return RawTelemetry(partition=partition, sequence_number=sequence, enqueued_time=None, body=body)


def test_telemetry_keeps_good_events_and_dead_letters_the_poison_one(services):
    batch = [raw("telemetry_batch.json", 10), raw("telemetry_bad_records.json", 11), raw("telemetry_record.json", 12)]
    report = receive_telemetry(services, batch)

    assert (report.events, report.records, report.stored, report.duplicates) == (3, 6, 6, 0)
    [dead] = report.invalid
    assert dead.outcome is Outcome.INVALID and dead.event_id == "0:11"
    assert dead.evidence["field"] == "[1].timestamp" and "yesterday" in dead.evidence["payload"]
    assert services.store.telemetry_count("churn", "green") == 6


def test_bad_telemetry_is_deduplicated_by_its_position_not_its_content(services):
    receive_telemetry(services, [raw(b"garbage", 40), raw(b"garbage", 41)])
    again = receive_telemetry(services, [raw(b"garbage", 41)])
    outcomes = sorted((d.event_id, d.outcome.value) for d in services.store.decisions())
    assert outcomes == [("0:40", "invalid"), ("0:41", "duplicate"), ("0:41", "invalid")]
    assert again.invalid[0].outcome is Outcome.DUPLICATE


def test_a_redelivered_telemetry_batch_changes_nothing(services):
    batch = [raw("telemetry_batch.json", 20), raw("telemetry_record.json", 21)]
    receive_telemetry(services, batch)
    again = receive_telemetry(services, batch)
    assert (again.stored, again.duplicates) == (0, 6)
    assert services.store.telemetry_count("churn", "green") == 6


def test_telemetry_store_outage_is_raised_for_the_retry_policy(services):
    services.store.down = True
    with pytest.raises(TransientError):
        receive_telemetry(services, [raw("telemetry_record.json", 30)])


def test_sweep_dispatches_due_tasks_once_and_records_the_result(services):
    receive_registry_event(services, first("eg_monitor_breach.json"))
    report = sweep(services)

    assert (report.due, report.succeeded) == (1, 1)
    [task] = services.store.tasks()
    assert task.state is TaskState.SUCCEEDED and task.attempts == 1 and task.result == {"sent": task.id}
    assert sweep(services).due == 0 and len(services.dispatcher.sent) == 1


def test_sweep_backs_off_on_transient_errors_and_dead_letters_permanent_ones(services):
    services = replace(services, dispatcher=RecordingDispatcher([TransientError("submit_pipeline", "429 throttled"),
                                                                 PermanentError("get_model", "model not found")]))
    receive_registry_event(services, first("eg_monitor_breach.json"))

    assert sweep(services).retrying == 1
    [task] = services.store.tasks()
    assert task.state is TaskState.PENDING and task.attempts == 1 and "throttled" in task.last_error
    assert timedelta(seconds=15) <= task.due_at - services.clock.now() <= timedelta(seconds=45)  # 30 s, jittered
    assert sweep(services).due == 0  # not due yet
    services.clock.advance(seconds=45)
    assert sweep(services).dead_lettered == 1
    [task] = services.store.tasks()
    assert task.state is TaskState.DEAD_LETTERED and task.last_error == "get_model: model not found"


def test_sweep_gives_up_after_the_maximum_attempts(services):
    services = replace(services, dispatcher=RecordingDispatcher([TransientError("workspace", "503")] * MAX_ATTEMPTS))
    receive_registry_event(services, first("eg_monitor_breach.json"))
    for _ in range(MAX_ATTEMPTS):
        sweep(services)
        services.clock.advance(hours=2)
    [task] = services.store.tasks()
    assert task.state is TaskState.DEAD_LETTERED and task.attempts == MAX_ATTEMPTS


def test_decision_json_round_trips(services):
    decision = receive_registry_event(services, first("eg_monitor_breach.json"))
    from controlplane.domain.ledger import Decision
    assert Decision.from_json(json.loads(json.dumps(decision.to_json()))) == decision

"""Promotion on ModelRegistered: each gate outcome, the champion, shadow mode, missing metrics."""
from __future__ import annotations

import copy
from dataclasses import replace

import pytest

from controlplane.domain.ledger import Outcome, TaskKind
from controlplane.domain.policy import parse_policy
from controlplane.domain.reviews import ReviewKind
from controlplane.handlers.registry import receive_registry_event
from tests.fakes import FakeGateway
from tests.support import load_event

POLICY = """
models:
  - name: churn
    promotion:
      endpoint: churn-ep
      gates: {accuracy: ">= 0.85", rmse: "<= 3.2"}
      min_improvement: 0.01
      production: {approvers: [ana@contoso.com, bo@contoso.com], quorum: 2, approval_ttl_hours: 48,
                   registrant_from_tags: true}
  - name: churn-shadow
    mode: shadow
    promotion:
      endpoint: churn-ep
      gates: {accuracy: ">= 0.85"}
      production: {approvers: [ana@contoso.com], registrant_from_tags: true}
  - name: churn-staging-only
    promotion:
      endpoint: churn-staging
      gates: {accuracy: ">= 0.85"}
"""


@pytest.fixture
def services(services):
    return replace(services, policy=parse_policy(POLICY))


def registered(version="4", model="churn", event_id=None, **tags):
    event = copy.deepcopy(load_event("eg_model_registered_sdk.json"))
    event["id"] = event_id or f"reg-{model}-{version}"
    event["data"].update(modelName=model, modelVersion=version, modelTags={"created_by": "alice@contoso.com", **tags})
    return event


def test_passing_gates_deploy_to_staging_at_zero_and_open_the_production_review(services):
    decision = receive_registry_event(services, registered(accuracy="0.91", rmse="2.9"))

    assert decision.outcome is Outcome.REQUEST_APPROVAL
    assert "accuracy >= 0.85" in decision.reason and "2 approval(s)" in decision.reason
    staging = next(t for t in decision.tasks if t.kind is TaskKind.PROMOTION)
    assert staging.request["traffic"] == 0 and staging.request["stage"] == "staging"
    assert staging.request["model"] == "azureml:churn:4" and staging.request["endpoint"] == "churn-ep"
    assert 3 <= len(staging.request["deployment"]) <= 32 and staging.request["deployment"][0].isalpha()
    [review] = decision.reviews
    assert review.kind is ReviewKind.PROMOTION and review.quorum == 2 and review.registrant == "alice@contoso.com"
    assert review.expires_at - review.created_at == __import__("datetime").timedelta(hours=48)
    assert review.on_approval["stage"] == "production" and review.on_approval["operation"] == "rollout.start"
    assert [g["passed"] for g in decision.evidence["gates"]] == [True, True]
    notice = next(t for t in decision.tasks if t.kind is TaskKind.NOTIFY)
    assert notice.request["event"] == "review.opened" and notice.request["review_id"] == review.id


@pytest.mark.parametrize("tags, words", [
    ({"accuracy": "0.81", "rmse": "2.9"}, "accuracy 0.81 fails accuracy >= 0.85"),
    ({"accuracy": "0.9", "rmse": "3.5"}, "rmse 3.5 fails rmse <= 3.2"),
])
def test_a_failing_gate_rejects_naming_the_metric_and_both_values(services, tags, words):
    decision = receive_registry_event(services, registered(**tags))
    assert decision.outcome is Outcome.REJECT and words in decision.reason
    assert decision.tasks == () and decision.reviews == ()


def test_missing_metrics_are_inconclusive_and_open_a_review_never_a_promotion(services):
    decision = receive_registry_event(services, registered(accuracy="0.91"))
    assert decision.outcome is Outcome.INCONCLUSIVE and "rmse" in decision.reason
    assert not any(t.kind is TaskKind.PROMOTION for t in decision.tasks)
    [review] = decision.reviews
    assert review.on_approval["stage"] == "staging"  # a person who vouches for it sends it to staging only


def test_metrics_missing_from_the_event_are_read_from_the_workspace(services):
    gateway = FakeGateway()
    gateway.add_model("churn", "4", properties={"rmse": "2.5", "accuracy": "0.92"}, created_by="dan@contoso.com")
    services = replace(services, gateway=gateway)
    event = registered()
    event["data"]["modelTags"] = {}
    decision = receive_registry_event(services, event)
    assert decision.outcome is Outcome.REQUEST_APPROVAL and decision.evidence["metrics_from_gateway"] is True
    assert decision.reviews[0].registrant == "dan@contoso.com"


def test_the_champion_must_be_beaten_by_the_minimum_improvement(services):
    gateway = FakeGateway()
    gateway.serve("churn-ep", "blue", "azureml:churn:3")
    gateway.add_model("churn", "3", tags={"accuracy": "0.905", "rmse": "3.0"})
    services = replace(services, gateway=gateway)

    small = receive_registry_event(services, registered("4", accuracy="0.91", rmse="2.9"))
    assert small.outcome is Outcome.REJECT and "gain 0.005 is less than 0.01" in small.reason
    assert small.evidence["champion"] == "churn:3"

    big = receive_registry_event(services, registered("5", accuracy="0.93", rmse="2.9"))
    assert big.outcome is Outcome.REQUEST_APPROVAL and big.evidence["improvement"]["gain"] == pytest.approx(0.025)


def test_a_version_not_newer_than_the_champion_is_not_promoted(services):
    gateway = FakeGateway()
    gateway.serve("churn-ep", "blue", "azureml:churn:7")
    services = replace(services, gateway=gateway)
    decision = receive_registry_event(services, registered("6", accuracy="0.99", rmse="1"))
    assert decision.outcome is Outcome.NO_ACTION and "not newer than the champion churn:7" in decision.reason


def test_the_champion_comes_from_the_ledger_without_a_workspace(services):
    deployed = copy.deepcopy(load_event("eg_model_deployed_docs.json")[0])
    deployed["data"].update(ServiceName="churn-ep", ModelIds="churn:8")
    receive_registry_event(services, deployed)
    decision = receive_registry_event(services, registered("8", accuracy="0.99", rmse="1"))
    assert decision.outcome is Outcome.NO_ACTION and "champion churn:8" in decision.reason


def test_a_version_already_decided_is_not_promoted_again(services):
    first = receive_registry_event(services, registered("4", accuracy="0.91", rmse="2.9"))
    again = receive_registry_event(services, registered("4", event_id="another-event", accuracy="0.91", rmse="2.9"))
    assert again.outcome is Outcome.NO_ACTION and first.id in again.reason and again.tasks == ()


def test_a_version_is_remembered_however_many_decisions_follow_it(services):
    first = receive_registry_event(services, registered("4", accuracy="0.91", rmse="2.9"))
    run = load_event("eg_run_status_changed_docs.json")[0]
    for n in range(600):  # run events of the same model pile up in its history
        receive_registry_event(services, {**run, "id": f"run-{n}", "data": {**run["data"],
                                                                           "runTags": {"model_name": "churn"}}})
    again = receive_registry_event(services, registered("4", event_id="much-later", accuracy="0.91", rmse="2.9"))
    assert again.outcome is Outcome.NO_ACTION and first.id in again.reason and again.tasks == ()


def test_shadow_mode_records_the_verdict_and_opens_nothing(services):
    decision = receive_registry_event(services, registered(model="churn-shadow", accuracy="0.91"))
    assert decision.outcome is Outcome.REQUEST_APPROVAL and "shadow mode" in decision.reason
    assert decision.tasks == () and decision.reviews == ()
    assert decision.evidence["shadow"]["tasks"][0]["request"]["stage"] == "staging"
    assert services.store.review_book == {} and services.store.outbox == {}


def test_without_a_production_stage_promotion_stops_at_staging(services):
    decision = receive_registry_event(services, registered(model="churn-staging-only", accuracy="0.91"))
    assert decision.outcome is Outcome.PROMOTE and decision.reviews == ()
    [task] = decision.tasks
    assert task.request["endpoint"] == "churn-staging" and task.request["traffic"] == 0


def test_beating_the_champion_by_exactly_the_minimum_improvement_passes(services):
    gateway = FakeGateway()
    gateway.serve("churn-ep", "blue", "azureml:churn:3")
    gateway.add_model("churn", "3", tags={"accuracy": "0.86", "rmse": "3.0"})
    services = replace(services, gateway=gateway)
    decision = receive_registry_event(services, registered("4", accuracy="0.87", rmse="2.9"))  # 0.87 - 0.86 = 0.01
    assert decision.outcome is Outcome.REQUEST_APPROVAL, decision.reason


def test_a_champion_of_another_model_is_compared_on_its_own_metrics(services):
    receive_registry_event(services, registered("4", accuracy="0.99", rmse="1"))  # churn:4 in churn's history
    gateway = FakeGateway()
    gateway.serve("churn-ep", "blue", "azureml:legacy-churn:4")
    gateway.add_model("legacy-churn", "4", tags={"accuracy": "0.90"})
    services = replace(services, gateway=gateway)
    decision = receive_registry_event(services, registered("5", accuracy="0.92", rmse="2"))
    assert decision.evidence["champion_metrics"] == {"accuracy": 0.90}
    assert decision.outcome is Outcome.REQUEST_APPROVAL


def test_a_version_seen_in_shadow_mode_is_decided_when_the_rule_enforces(services):
    shadowed = receive_registry_event(services, registered(model="churn-shadow", accuracy="0.91"))
    assert "shadow" in shadowed.evidence
    enforcing = replace(services, policy=parse_policy(POLICY.replace("    mode: shadow\n", "")))
    decision = receive_registry_event(enforcing, registered(model="churn-shadow", accuracy="0.91",
                                                            event_id="again"))
    assert decision.outcome is Outcome.REQUEST_APPROVAL and decision.reviews

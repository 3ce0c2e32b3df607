"""The promotion rules as promised: gates in their own direction, the champion beaten by the minimum improvement
(a lower-is-better metric included), and the approvals a candidate needs when its registrant is unknown."""
from __future__ import annotations

import copy
import re
from dataclasses import replace

import pytest

from controlplane.domain.ledger import Outcome
from controlplane.domain.policy import parse_policy
from controlplane.domain.promotion import deployment_name, version_key
from controlplane.handlers.registry import receive_registry_event
from tests.fakes import FakeGateway
from tests.support import load_event

POLICY = """
models:
  - name: churn
    promotion:
      endpoint: churn-ep
      gates: {accuracy: ">= 0.85", rmse: "<= 3.2"}
      primary_metric: rmse
      min_improvement: 0.1
      production: {approvers: [ana@contoso.com, bo@contoso.com, carla@contoso.com], quorum: 2}
  - name: refusing
    promotion:
      endpoint: refusing-ep
      gates: {accuracy: ">= 0.85"}
      production: {approvers: [ana@contoso.com, bo@contoso.com], unknown_registrant: refuse}
  - name: tight
    promotion:
      endpoint: tight-ep
      gates: {accuracy: ">= 0.85"}
      production: {approvers: [ana@contoso.com, bo@contoso.com], quorum: 2}
  - name: staged
    promotion:
      endpoint: staged-ep
      gates: {accuracy: ">= 0.85"}
  - name: shared
    promotion:
      endpoint: shared-ep
      gates: {accuracy: ">= 0.85"}
      production: {approvers: [ana@contoso.com, bo@contoso.com], quorum: 2, separation_of_duties: false}
"""


@pytest.fixture
def gateway():
    return FakeGateway()


@pytest.fixture
def wired(services, gateway):
    return replace(services, policy=parse_policy(POLICY), gateway=gateway)


def register(services, model="churn", version="4", registrant="alice@contoso.com", **tags):
    if registrant is not None:
        services.gateway.add_model(model, version, registered_by=registrant)
    event = copy.deepcopy(load_event("eg_model_registered_sdk.json"))
    event["id"] = f"reg-{model}-{version}"
    event["data"].update(modelName=model, modelVersion=version, modelTags=tags)
    return receive_registry_event(services, event)


# ---- gates --------------------------------------------------------------------------------------------------------

def test_each_gate_holds_in_its_own_direction_at_its_threshold(wired):
    at = register(wired, accuracy="0.85", rmse="3.2")
    assert at.outcome is Outcome.REQUEST_APPROVAL
    assert [g["passed"] for g in at.evidence["gates"]] == [True, True]
    assert at.reason.startswith("gates passed (accuracy >= 0.85, rmse <= 3.2); staging at 0% on churn-ep")
    over = register(wired, version="5", accuracy="0.9", rmse="3.21")
    assert over.outcome is Outcome.REJECT and over.reason == "rmse 3.21 fails rmse <= 3.2"
    under = register(wired, version="6", accuracy="0.849", rmse="1")
    assert under.outcome is Outcome.REJECT and under.reason == "accuracy 0.849 fails accuracy >= 0.85"


@pytest.mark.parametrize("value", ["nan", "inf", "-Infinity", "high", ""])
def test_a_metric_that_is_not_a_finite_number_is_missing_and_a_person_must_look(wired, value):
    decision = register(wired, accuracy="0.9", rmse=value)
    assert decision.outcome is Outcome.INCONCLUSIVE
    assert decision.reason == "metrics missing for churn:4: rmse; a person must look"
    assert decision.evidence["metrics"] == {"accuracy": 0.9} and len(decision.reviews) == 1


# ---- the champion -------------------------------------------------------------------------------------------------

def serve_champion(gateway, **metrics):
    gateway.serve("churn-ep", "blue", "azureml:churn:3")
    gateway.add_model("churn", "3", tags={k: str(v) for k, v in metrics.items()})


def test_a_lower_is_better_primary_metric_must_go_down_by_the_minimum_improvement(wired, gateway):
    serve_champion(gateway, accuracy=0.9, rmse=3.0)
    exactly = register(wired, accuracy="0.9", rmse="2.9")
    assert exactly.outcome is Outcome.REQUEST_APPROVAL
    assert exactly.evidence["improvement"] == {"metric": "rmse", "gain": 0.1, "required": 0.1}
    assert exactly.evidence["champion_metrics"] == {"accuracy": 0.9, "rmse": 3.0}
    small = register(wired, version="5", accuracy="0.9", rmse="2.95")
    assert small.outcome is Outcome.REJECT
    assert small.reason == "rmse 2.95 vs champion churn:3 3: gain 0.05 is less than 0.1"
    worse = register(wired, version="6", accuracy="0.99", rmse="3.1")
    assert worse.outcome is Outcome.REJECT and worse.evidence["improvement"]["gain"] == -0.1


def test_a_champion_without_the_primary_metric_is_not_compared(wired, gateway):
    serve_champion(gateway, accuracy=0.99)
    decision = register(wired, accuracy="0.9", rmse="3.0")
    assert decision.outcome is Outcome.REQUEST_APPROVAL and "improvement" not in decision.evidence
    assert decision.evidence["champion"] == "churn:3"


def test_only_a_newer_version_than_the_champion_is_considered(wired, gateway):
    gateway.serve("churn-ep", "blue", "azureml:churn:10")
    older = register(wired, version="9", accuracy="0.99", rmse="0.1")
    assert older.outcome is Outcome.NO_ACTION and "not newer than the champion churn:10" in older.reason
    same = register(wired, version="10", accuracy="0.99", rmse="0.1")
    assert same.outcome is Outcome.NO_ACTION
    assert register(wired, version="11", accuracy="0.99", rmse="0.1").outcome is Outcome.REQUEST_APPROVAL


def test_versions_order_numbers_by_value_and_before_names():
    assert version_key("9") < version_key("10") < version_key("1a") < version_key("b")
    assert version_key("10") == (0, 10) and version_key("v2") == (1, "v2")


# ---- the registrant and the approvals ------------------------------------------------------------------------------

def test_a_known_registrant_is_kept_on_the_review_which_needs_the_quorum(wired):
    decision = register(wired, accuracy="0.9", rmse="3.0")
    [review] = decision.reviews
    assert review.quorum == 2 and review.registrant == "alice@contoso.com" and review.separation_of_duties
    assert decision.evidence["registrant_source"] == "workspace" and "unknown_registrant" not in decision.evidence
    assert decision.reason.endswith("production needs 2 approval(s)")


def test_an_unknown_registrant_needs_one_approval_beyond_the_quorum(wired):
    decision = register(wired, registrant=None, accuracy="0.9", rmse="3.0")
    [review] = decision.reviews
    assert decision.outcome is Outcome.REQUEST_APPROVAL and review.quorum == 3 and review.registrant == ""
    assert decision.evidence["unknown_registrant"] == "extra_approval"
    assert decision.reason.endswith("production needs 3 approval(s)")


def test_a_look_alike_registrant_counts_as_unknown(wired):
    decision = register(wired, registrant="\u0430lice@contoso.com", accuracy="0.9", rmse="3.0")  # Cyrillic a
    assert decision.reviews[0].quorum == 3 and decision.evidence["registrant"] == ""


def test_an_unknown_registrant_is_refused_when_the_policy_says_so(wired):
    decision = register(wired, model="refusing", registrant=None, accuracy="0.9")
    assert decision.outcome is Outcome.REJECT and decision.reviews == () and decision.tasks == ()
    assert decision.reason.endswith("but the registrant of refusing:4 cannot be established and the policy refuses "
                                    "a review without one: no promotion review opened")
    assert decision.evidence["unknown_registrant"] == "refuse"


def test_an_unknown_registrant_is_refused_when_no_extra_approver_is_listed(wired):
    decision = register(wired, model="tight", registrant=None, accuracy="0.9")
    assert decision.outcome is Outcome.REJECT and decision.reviews == ()
    assert "one approval beyond the quorum needs 3 approvers, 2 are listed" in decision.reason


def test_without_separation_of_duties_an_unknown_registrant_needs_only_the_quorum(wired):
    decision = register(wired, model="shared", registrant=None, accuracy="0.9")
    assert decision.outcome is Outcome.REQUEST_APPROVAL and decision.reviews[0].quorum == 2
    assert not decision.reviews[0].separation_of_duties and "unknown_registrant" not in decision.evidence


def test_a_candidate_missing_metrics_still_needs_the_extra_approval(wired):
    decision = register(wired, registrant=None, accuracy="0.9")
    assert decision.outcome is Outcome.INCONCLUSIVE and decision.reviews[0].quorum == 3


# ---- deployment names ---------------------------------------------------------------------------------------------

def test_a_deployment_name_is_a_valid_azure_name_derived_from_the_key():
    name = deployment_name("Churn_Model", "12", "key-1")
    assert re.fullmatch(r"churn-model-v12-[0-9a-f]{12}", name)
    assert name == deployment_name("Churn_Model", "12", "key-1") != deployment_name("Churn_Model", "12", "key-2")
    long = deployment_name("a-very-long-model-name-indeed", "1234", "k")
    assert len(long) <= 32 and long.startswith("a-very-long-model-") and "--" not in long
    assert deployment_name("7up", "1", "k").startswith("m7up-v1-")
    assert deployment_name("--x--", "1", "k").startswith("x-v1-")
    assert re.fullmatch(r"[a-z][a-z0-9-]{2,31}", deployment_name("___", "2", "k"))


def test_the_champions_metrics_come_from_its_own_recorded_registration_first(wired, gateway):
    register(wired, version="3", accuracy="0.9", rmse="3.0")  # recorded with its metrics; the workspace has no tags
    gateway.serve("churn-ep", "blue", "azureml:churn:3")
    decision = register(wired, version="4", accuracy="0.9", rmse="2.95")
    assert decision.evidence["champion_metrics"] == {"accuracy": 0.9, "rmse": 3.0}
    assert decision.outcome is Outcome.REJECT and "gain 0.05 is less than 0.1" in decision.reason


def test_a_champion_known_only_to_the_workspace_is_compared_on_its_numeric_tags(wired, gateway):
    gateway.serve("churn-ep", "blue", "azureml:churn:3")
    gateway.add_model("churn", "3", tags={"rmse": "3.0", "owner": "ana", "accuracy": "nan"})
    decision = register(wired, version="4", accuracy="0.9", rmse="2.8")
    assert decision.evidence["champion_metrics"] == {"rmse": 3.0}
    assert decision.evidence["improvement"]["gain"] == 0.2


def test_every_verdict_names_the_version_it_is_about(wired, gateway):
    missing = register(wired, accuracy="0.9")
    assert (missing.model, missing.version) == ("churn", "4") and missing.reviews[0].registrant == "alice@contoso.com"
    again = register(wired, accuracy="0.9", rmse="3.0")  # the same event id: the ledger answers
    assert again.version == "4"
    twice = receive_registry_event(wired, {**_event("churn", "4", {"accuracy": "0.9", "rmse": "3.0"}), "id": "other"})
    assert twice.outcome is Outcome.NO_ACTION and (twice.model, twice.version) == ("churn", "4")
    assert twice.evidence["earlier_decision"] == missing.id and "was decided already" in twice.reason
    serve_champion(gateway, accuracy=0.9, rmse=3.0)
    small = register(wired, version="5", accuracy="0.9", rmse="2.99")
    assert (small.model, small.version, small.outcome) == ("churn", "5", Outcome.REJECT)
    refused = register(wired, model="refusing", registrant=None, accuracy="0.9")
    assert (refused.model, refused.version) == ("refusing", "4")


def _event(model, version, tags):
    event = copy.deepcopy(load_event("eg_model_registered_sdk.json"))
    event["data"].update(modelName=model, modelVersion=version, modelTags=tags)
    return event


def test_every_failing_gate_is_named(wired):
    decision = register(wired, accuracy="0.5", rmse="9")
    assert decision.reason == "accuracy 0.5 fails accuracy >= 0.85; rmse 9 fails rmse <= 3.2"
    assert decision.evidence["champion"] is None


def test_without_a_production_stage_passing_gates_deploy_to_staging_only(wired):
    decision = register(wired, model="staged", accuracy="0.9")
    assert decision.outcome is Outcome.PROMOTE and decision.reviews == ()
    assert decision.reason == "gates passed (accuracy >= 0.85); deploying to staging at 0% on staged-ep"
    [staging] = decision.tasks
    assert staging.request["deployment"] == deployment_name("staged", "4", decision.idempotency_key)


def test_the_staging_and_production_requests_name_the_candidate(wired):
    decision = register(wired, accuracy="0.9", rmse="3.0")
    staging = decision.tasks[0].request
    assert staging["deployment"] == deployment_name("churn", "4", decision.idempotency_key)
    opened = decision.reviews[0].on_approval
    assert "churn" in str(opened["model"]) and "4" in str(opened["model"])
    assert opened["deployment"] == staging["deployment"]
    inconclusive = register(wired, version="5", accuracy="0.9")
    assert inconclusive.reviews[0].on_approval["deployment"] == deployment_name("churn", "5",
                                                                                inconclusive.idempotency_key)


def test_the_lineage_names_the_job_that_trained_the_version_from_its_properties(wired):
    decision = register(wired, accuracy="0.9", rmse="3.0", training_data="azureml:churn-training:4")
    assert decision.evidence["lineage"] == {"job": "quiet_lemon_9vd2kr71hw", "job_from": "azureml.runId",
                                            "training_data": "azureml:churn-training:4",
                                            "registrant": "alice@contoso.com"}

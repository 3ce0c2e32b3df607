"""The MLOps v2 topology as the policy states it: which workspace a candidate comes from, where it is staged and
tested, what its test results decide, and the policies that cannot work refused when they load."""
from __future__ import annotations

import copy
from dataclasses import replace

import pytest

from controlplane.domain.errors import PolicyError
from controlplane.domain.ledger import Outcome
from controlplane.domain.policy import parse_policy
from controlplane.domain.promotion import judge_test_stage
from controlplane.domain.requests import DeployBatch, DeployModel, StartRollout, SubmitPipeline, parse_request
from controlplane.handlers.registry import receive_registry_event
from tests.fakes import FakeGateway
from tests.support import load_event

WORKSPACE = "/subscriptions/s1/resourceGroups/rg-ml/providers/Microsoft.MachineLearningServices/workspaces/{}"
ENVIRONMENTS = """
registry: shared-models
environments:
  dev: {workspace: mlw-dev}
  staging: {workspace: mlw-staging}
  prod: {workspace: mlw-prod}
"""
POLICY = ENVIRONMENTS + """
models:
  - name: fraud
    promotion:
      endpoint: fraud-ep
      from: dev
      gates: {auc: ">= 0.8"}
      staging:
        environment: staging
        test:
          pipeline: pipelines/test-stage.yml
          inputs: {model: "{model}", deployment: "{deployment}", test_data: "azureml:fraud-holdout@latest"}
          gates: {auc: ">= 0.8", demographic_parity_difference: "<= 0.1"}
          timeout_hours: 4
      production: {environment: prod, approvers: [ana@contoso.com, bo@contoso.com], quorum: 2}
  - name: gated
    promotion:
      endpoint: gated-ep
      from: dev
      gates: {auc: ">= 0.8"}
      staging:
        environment: staging
        approval: {approvers: [lead@contoso.com]}
        test: {pipeline: pipelines/test-stage.yml}
      production: {environment: prod, approvers: [ana@contoso.com]}
  - name: demand
    promotion:
      target: batch
      endpoint: demand-batch
      from: dev
      gates: {mape: "<= 0.15"}
      batch: {compute: cpu-cluster, mini_batch_size: 4}
      staging: {environment: staging, sample_input: "azureml:demand-sample:1"}
      production: {environment: prod, approvers: [ana@contoso.com]}
"""


@pytest.fixture
def wired(services):
    return replace(services, policy=parse_policy(POLICY), gateway=FakeGateway())


def register(services, model="fraud", version="4", workspace="mlw-dev", **tags):
    services.gateway.add_model(model, version, registered_by="alice@contoso.com")
    event = copy.deepcopy(load_event("eg_model_registered_sdk.json"))
    event["id"], event["topic"] = f"reg-{model}-{version}-{workspace}", WORKSPACE.format(workspace)
    event["data"].update(modelName=model, modelVersion=version, modelTags=tags)
    return receive_registry_event(services, event)


# ---- the policy ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("change, message", [
    ({"from": "qa"}, "models[0].promotion.from: 'qa' is not one of the environments (dev, staging, prod)"),
    ({"staging": {"environment": "test"}}, "models[0].promotion.staging.environment: 'test' is not one of"),
    ({"production": {"environment": "live", "approvers": ["a"]}}, "production.environment: 'live' is not one of"),
    ({"target": "batch"}, "target batch needs batch.compute"),
    ({"target": "batch", "batch": {"compute": "c"}}, "target batch needs staging.sample_input"),
    ({"staging": {"approval": {"approvers": ["a"]}}}, "staging.approval needs staging.test"),
    ({"staging": {"test": {"pipeline": "p.yml", "gates": {"auc": "about 0.8"}}}}, "gate 'auc': expected"),
])
def test_a_promotion_that_cannot_work_is_refused_naming_its_key(change, message):
    import yaml

    rule = {"name": "m", "promotion": {"endpoint": "ep", "gates": {"auc": ">= 0.8"}, **change}}
    with pytest.raises(PolicyError) as refused:
        parse_policy(ENVIRONMENTS + yaml.safe_dump({"models": [rule]}))
    assert message in str(refused.value)


def test_moving_between_workspaces_needs_a_registry_and_retraining_a_known_environment():
    rule = ("models:\n  - name: m\n    promotion: {endpoint: ep, from: dev, gates: {auc: '>= 0.8'}, "
            "staging: {environment: staging}}\n")
    without_registry = ENVIRONMENTS.replace("registry: shared-models\n", "")
    with pytest.raises(PolicyError, match="moves models between environments .*dev, staging.*: name the registry"):
        parse_policy(without_registry + rule)
    assert parse_policy(ENVIRONMENTS + rule).document.registry == "shared-models"
    with pytest.raises(PolicyError, match=r"retraining.environment: 'lab' is not one of"):
        parse_policy(ENVIRONMENTS + "models:\n  - name: m\n    retraining: {pipeline: p.yml, experiment: e, "
                     "environment: lab}\n")


# ---- registration -------------------------------------------------------------------------------------------------

def test_a_version_registered_outside_the_source_workspace_is_recorded_not_promoted(wired):
    decision = register(wired, workspace="mlw-staging", auc="0.9")
    assert decision.outcome is Outcome.NO_ACTION and decision.tasks == ()
    assert decision.reason == "fraud:4 was registered in staging; candidates for fraud-ep come from dev"
    unknown = register(wired, version="5", workspace="mlw-sandbox", auc="0.9")
    assert "registered in a workspace no environment names" in unknown.reason


def test_a_candidate_from_dev_is_shared_staged_in_staging_and_tested_there_before_production_is_asked(wired):
    decision = register(wired, auc="0.9")
    assert decision.outcome is Outcome.PROMOTE and decision.reviews == ()
    assert decision.reason == ("gates passed (auc >= 0.8); staging at 0% on fraud-ep in staging from registry "
                               "shared-models; the test stage decides whether production is asked")
    [task] = decision.tasks
    staging = parse_request(task.request, DeployModel)
    assert (staging.environment, staging.source, staging.registry) == ("staging", "dev", "shared-models")
    test = parse_request(staging.test, SubmitPipeline)
    assert test.name == f"{staging.deployment}-test" and test.experiment_name == "fraud-ep-test-stage"
    assert test.inputs == {"model": "azureml://registries/shared-models/models/fraud/versions/4",
                           "deployment": staging.deployment, "test_data": "azureml:fraud-holdout@latest"}
    assert test.tags["controlplane.stage"] == "test" and test.tags["controlplane.version"] == "4"
    assert decision.evidence["route"] == {"source": "dev", "staging": "staging", "production": "prod",
                                          "registry": "shared-models"}
    assert decision.evidence["test_stage"] == {"job": test.name, "kind": "pipeline", "environment": "staging",
                                               "endpoint": "fraud-ep", "deployment": staging.deployment}


def test_gated_ci_asks_people_before_staging_and_the_approval_carries_the_staging_request(wired):
    decision = register(wired, model="gated", auc="0.9")
    assert decision.outcome is Outcome.REQUEST_APPROVAL
    assert [task.request["event"] for task in decision.tasks] == ["review.opened"]  # nothing staged yet
    [review] = decision.reviews
    assert review.approvers == ("lead@contoso.com",) and review.evidence["stage"] == "staging"
    staging = parse_request(review.on_approval, DeployModel)
    assert staging.environment == "staging" and staging.test is not None


def test_a_batch_candidate_is_tried_on_the_sample_beside_the_default(wired):
    decision = register(wired, model="demand", mape="0.1")
    [task] = decision.tasks
    staging = parse_request(task.request, DeployBatch)
    assert (staging.stage, staging.compute, staging.mini_batch_size) == ("staging", "cpu-cluster", 4)
    assert staging.sample_input == "azureml:demand-sample:1" and staging.test is None
    assert decision.evidence["test_stage"]["kind"] == "batch_scoring"
    assert decision.evidence["test_stage"]["job"] == f"{staging.deployment}-score"
    assert "beside the default on demand-batch in staging" in decision.reason


# ---- the test stage's results -------------------------------------------------------------------------------------

def judged(services, status="Completed", model="fraud", version="4", **results):
    registered = register(services, model=model, version=version, auc="0.9", mape="0.1")
    rule = services.policy.rule_for(model)
    job = registered.evidence["test_stage"]["job"]
    return judge_test_stage(model, version, rule.promotion, services.policy, registered.idempotency_key,
                            registered.evidence, {"job": job, "status": status, "results": results,
                                                  "environment": "staging"})


def test_passing_results_open_the_production_review_which_deploys_from_the_registry_in_prod(wired):
    verdict = judged(wired, auc=0.91, demographic_parity_difference=0.04)
    assert verdict.outcome is Outcome.REQUEST_APPROVAL
    assert verdict.reason.endswith("test stage passed (auc >= 0.8, demographic_parity_difference <= 0.1); "
                                   "production on fraud-ep in prod needs 2 approval(s)")
    [review] = verdict.reviews
    assert review.quorum == 2 and review.evidence["test_stage"]["gates"][1] == {
        "gate": "demographic_parity_difference <= 0.1", "metric": "demographic_parity_difference", "value": 0.04,
        "passed": True}
    assert review.evidence["gates"][0]["metric"] == "auc"  # the registration's own gates stay in view
    production = review.on_approval
    assert isinstance(production, StartRollout)
    assert (production.environment, production.registry) == ("prod", "shared-models")


def test_a_failing_result_rejects_the_candidate_naming_it(wired):
    verdict = judged(wired, auc=0.91, demographic_parity_difference=0.2)
    assert verdict.outcome is Outcome.REJECT and verdict.reviews == ()
    assert verdict.reason.endswith("demographic_parity_difference 0.2 fails demographic_parity_difference <= 0.1")


@pytest.mark.parametrize("status", ["Failed", "Canceled"])
def test_a_test_job_that_did_not_complete_rejects(wired, status):
    verdict = judged(wired, status=status)
    assert verdict.outcome is Outcome.REJECT and verdict.reason.endswith(f"{status.lower()}: not promoted further")


def test_a_missing_result_or_no_result_in_time_leaves_it_to_the_production_review(wired):
    missing = judged(wired, auc=0.91)
    assert missing.outcome is Outcome.INCONCLUSIVE and len(missing.reviews) == 1
    assert "completed without reporting demographic_parity_difference; a person must look" in missing.reason
    late = judged(wired, status="", version="5")
    assert late.outcome is Outcome.INCONCLUSIVE and "gave no result within 4 h" in late.reason
    assert late.reviews[0].on_approval.environment == "prod"


def test_a_batch_candidates_approval_deploys_it_in_prod_and_makes_it_the_default(wired):
    verdict = judged(wired, model="demand")
    assert verdict.outcome is Outcome.REQUEST_APPROVAL
    production = verdict.reviews[0].on_approval
    assert isinstance(production, DeployBatch)
    assert (production.stage, production.environment, production.registry) == ("production", "prod", "shared-models")
    assert production.sample_input is None and production.test is None

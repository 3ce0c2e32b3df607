"""The dry run's MLOps v2 topology: a simulated workspace per environment, a registry they share models through,
and batch endpoints, each changing as Azure ML would and recording what the real gateway would send."""
from __future__ import annotations

import json

import pytest

from controlplane.adapters.simulated import SimulatedWorkspace
from controlplane.ports.gateway import (
    BatchDeploymentRequest,
    DeploymentRequest,
    DeploymentSpec,
    GatewayError,
    NotFound,
    PipelineRequest,
    registry_model,
)
from tests.fakes import FakeClock


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def dev(tmp_path, clock):
    return SimulatedWorkspace.of(tmp_path / "simulated-workspace.json", "dev", clock)


@pytest.fixture
def prod(tmp_path, clock):
    return SimulatedWorkspace(tmp_path / "simulated-workspace.json", clock)


def operations(workspace, prefix=""):
    return [r for r in workspace.requests() if r["operation"].startswith(prefix)]


# -- environments ------------------------------------------------------------------------------------------------


def test_each_environment_has_its_own_file_beside_the_home_one(tmp_path, dev, prod):
    dev.register_model("churn", "4", "alice@contoso.com")

    assert dev.path == tmp_path / "simulated-workspace.dev.json"
    assert SimulatedWorkspace.of(tmp_path / "simulated-workspace.json").path == tmp_path / "simulated-workspace.json"
    assert dev.get_model("churn", "4").registered_by == "alice@contoso.com"
    with pytest.raises(NotFound):
        prod.get_model("churn", "4")


def test_health_is_scripted_per_workspace(dev, prod, clock):
    dev.set_health("churn-ep", "blue", 400, 90.0, 0.01)

    assert dev.deployment_health("churn-ep", ["blue"], clock.now(), clock.now())["blue"].requests == 400
    assert prod.deployment_health("churn-ep", ["blue"], clock.now(), clock.now())["blue"].requests == 0


# -- jobs ----------------------------------------------------------------------------------------------------------


def test_a_job_keeps_its_tags_and_reports_the_properties_its_run_wrote(dev):
    request = PipelineRequest("test-churn-4", "churn-tests", "pipelines/test.yml", tags={"controlplane.model": "churn"})
    submitted = dev.submit_pipeline(request)
    dev.set_job_status("test-churn-4", "Completed")
    dev.set_job_properties("test-churn-4", {"accuracy": "0.91"})
    dev.set_job_properties("test-churn-4", {"auc": "0.88"})

    job = dev.get_job("test-churn-4")
    assert submitted.tags == {"controlplane.model": "churn"} and submitted.properties == {}
    assert (job.status, job.tags, job.properties) == ("Completed", {"controlplane.model": "churn"},
                                                      {"accuracy": "0.91", "auc": "0.88"})
    assert operations(dev, "jobs.")[0]["tags"] == {"controlplane.model": "churn"}


# -- the registry ------------------------------------------------------------------------------------------------


def test_a_model_is_shared_once_into_the_registry_every_workspace_reads(tmp_path, dev, prod):
    dev.register_model("churn", "4", "alice@contoso.com", tags={"auc": "0.88"}, properties={"run": "r1"})

    first = dev.share_model("churn", "4", "mlops-registry")
    dev.tag_model("churn", "4", {"auc": "0.5"})  # the workspace's version changes; the registry's copy does not
    again = dev.share_model("churn", "4", "mlops-registry")

    assert (first.tags, first.properties, first.registered_by) == ({"auc": "0.88"}, {"run": "r1"},
                                                                   "alice@contoso.com")
    assert again == first
    assert operations(dev, "models.share") == [
        {"operation": "models.share", "name": "churn", "version": "4", "registry": "mlops-registry"}]
    shared = json.loads((tmp_path / "simulated-registry-mlops-registry.json").read_text())
    assert shared["models"]["churn:4"]["tags"] == {"auc": "0.88"}
    # Another workspace deploys the registry's copy without holding the model itself.
    prod.create_endpoint("churn-ep", "key")
    deployed = prod.deploy(DeploymentRequest("churn-ep", "green", registry_model("mlops-registry", "churn", "4"),
                                             "Standard_DS3_v2"))
    assert deployed.model == "azureml://registries/mlops-registry/models/churn/versions/4"
    assert prod.get_deployment("churn-ep", "green").model == deployed.model


def test_sharing_a_model_the_workspace_does_not_hold_is_not_found_and_sends_nothing(tmp_path, dev):
    with pytest.raises(NotFound, match="churn:4"):
        dev.share_model("churn", "4", "mlops-registry")

    assert operations(dev, "models.share") == []
    assert not (tmp_path / "simulated-registry-mlops-registry.json").exists()


def test_a_deployment_of_a_version_the_registry_does_not_hold_is_refused(dev, prod):
    dev.register_model("churn", "4", "alice@contoso.com")
    dev.share_model("churn", "4", "mlops-registry")
    prod.create_endpoint("churn-ep", "key")

    for missing in (registry_model("mlops-registry", "churn", "5"), registry_model("other-registry", "churn", "4")):
        with pytest.raises(GatewayError, match="Could not find asset") as refused:
            prod.deploy(DeploymentRequest("churn-ep", "green", missing, "Standard_DS3_v2"))
        assert missing in str(refused.value) and not isinstance(refused.value, NotFound)
    assert operations(prod, "online_deployments") == []


# -- batch endpoints -----------------------------------------------------------------------------------------------


def batch(name="blue", model="azureml:churn:4", **fields):
    return BatchDeploymentRequest("churn-batch", name, model, "cpu-cluster", **fields)


def test_a_batch_deployment_is_recorded_as_sent_and_provisions_like_an_online_one(prod, clock):
    prod.set_provisioning(600)
    created = prod.create_batch_endpoint("churn-batch")
    begun = prod.deploy_batch(batch(instance_count=2, mini_batch_size=5, tags={"controlplane.model": "churn"},
                                    spec=DeploymentSpec(environment="azureml:sklearn:1", scoring_script="score.py")))

    assert (created.name, created.default_deployment, created.provisioning_state) == ("churn-batch", None, "Creating")
    assert (begun.provisioning_state, begun.instance_type, begun.instance_count) == ("Creating", "cpu-cluster", 2)
    assert prod.get_batch_deployment("churn-batch", "blue").provisioning_state == "Creating"
    clock.advance(minutes=11)
    assert prod.get_batch_deployment("churn-batch", "blue").provisioning_state == "Succeeded"
    assert operations(prod, "batch_") == [
        {"operation": "batch_endpoints.begin_create_or_update", "endpoint": "churn-batch", "auth_mode": "AADToken"},
        {"operation": "batch_deployments.begin_create_or_update", "endpoint": "churn-batch", "name": "blue",
         "model": "azureml:churn:4", "compute": "cpu-cluster", "instance_count": 2, "mini_batch_size": 5,
         "max_concurrency_per_instance": 1, "output_file_name": "predictions.csv",
         "tags": {"controlplane.model": "churn"},
         "spec": {"environment": "azureml:sklearn:1", "scoring_script": "score.py"}}]


def test_a_failed_batch_deployment_says_why(prod, clock):
    prod.set_provisioning(60, fail_with="ImageBuildFailure")
    prod.create_batch_endpoint("churn-batch")
    prod.deploy_batch(batch())
    clock.advance(minutes=2)

    state = prod.get_batch_endpoint("churn-batch")
    assert [(d.name, d.provisioning_state, d.error) for d in state.deployments] == [
        ("blue", "Failed", "ImageBuildFailure")]


def test_the_first_batch_deployment_is_the_default_and_only_set_batch_default_changes_it(prod):
    prod.create_batch_endpoint("churn-batch")
    prod.deploy_batch(batch("blue"))
    prod.deploy_batch(batch("green", model="azureml:churn:5"))
    assert prod.get_batch_endpoint("churn-batch").default_deployment == "blue"

    updating = prod.set_batch_default("churn-batch", "green")

    assert (updating.default_deployment, updating.provisioning_state) == ("green", "Updating")
    assert prod.get_batch_endpoint("churn-batch").default_deployment == "green"
    assert {d.name: d.model for d in prod.get_batch_endpoint("churn-batch").deployments} == {
        "blue": "azureml:churn:4", "green": "azureml:churn:5"}
    assert operations(prod, "batch_endpoints")[-1] == {
        "operation": "batch_endpoints.begin_create_or_update", "endpoint": "churn-batch",
        "defaults": {"deployment_name": "green"}}


def test_batch_refusals_match_the_real_gateway(prod, dev):
    with pytest.raises(NotFound):
        prod.get_batch_endpoint("churn-batch")
    with pytest.raises(NotFound, match="churn-batch"):
        prod.deploy_batch(batch())
    prod.create_batch_endpoint("churn-batch")
    with pytest.raises(NotFound, match="blue"):
        prod.get_batch_deployment("churn-batch", "blue")
    with pytest.raises(NotFound, match="blue"):
        prod.set_batch_default("churn-batch", "blue")
    with pytest.raises(NotFound, match="blue"):
        prod.invoke_batch("churn-batch", "blue", "azureml:scoring-data:1", "score-1")
    with pytest.raises(GatewayError, match="Could not find asset"):
        prod.deploy_batch(batch(model=registry_model("mlops-registry", "churn", "4")))
    assert [r["operation"] for r in prod.requests()] == ["batch_endpoints.begin_create_or_update"]

    dev.register_model("churn", "4", "alice@contoso.com")
    dev.share_model("churn", "4", "mlops-registry")
    assert prod.deploy_batch(batch(model=registry_model("mlops-registry", "churn", "4"))).model == registry_model(
        "mlops-registry", "churn", "4")


def test_a_scoring_job_starts_once_by_name_with_its_tags_as_properties(prod, tmp_path, clock):
    prod.create_batch_endpoint("churn-batch")
    prod.deploy_batch(batch())

    first = prod.invoke_batch("churn-batch", "blue", "azureml:scoring-data:1", "score-churn-4", "churn-scoring",
                              {"controlplane.model": "churn"})
    again = SimulatedWorkspace(tmp_path / "simulated-workspace.json", clock).invoke_batch(
        "churn-batch", "blue", "azureml:scoring-data:1", "score-churn-4", "churn-scoring")

    assert (first.created, again.created) == (True, False)
    assert (first.status, first.experiment, first.properties) == ("NotStarted", "churn-scoring",
                                                                  {"controlplane.model": "churn"})
    assert again.properties == {"controlplane.model": "churn"}
    assert operations(prod, "batch_endpoints.invoke") == [
        {"operation": "batch_endpoints.invoke", "endpoint": "churn-batch", "deployment": "blue",
         "input": "azureml:scoring-data:1", "job_name": "score-churn-4", "experiment": "churn-scoring",
         "properties": {"controlplane.model": "churn"}}]
    prod.set_job_status("score-churn-4", "Completed")
    assert prod.get_job("score-churn-4").status == "Completed"

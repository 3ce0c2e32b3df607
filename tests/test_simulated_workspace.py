"""The dry run's simulated workspace: it changes like Azure ML would and records what it was asked."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest

from controlplane.adapters.simulated import SimulatedWorkspace
from controlplane.domain.signals import DeploymentHealth
from controlplane.ports.gateway import DeploymentRequest, GatewayError, NotFound, PipelineRequest

T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


@pytest.fixture
def workspace(tmp_path):
    return SimulatedWorkspace(tmp_path / "simulated-workspace.json")


def test_deployments_and_traffic_change_as_azure_would_and_every_request_is_recorded(workspace):
    workspace.seed_endpoint("churn-ep", "blue", "azureml:churn:3")
    workspace.deploy(DeploymentRequest("churn-ep", "green", "azureml:churn:4", "Standard_DS3_v2", 2))
    state = workspace.set_traffic("churn-ep", {"blue": 90, "green": 10}, {})

    assert dict(state.traffic) == {"blue": 90, "green": 10} and state.serving() == "blue"
    assert {d.name: d.model for d in state.deployments} == {"blue": "azureml:churn:3", "green": "azureml:churn:4"}
    workspace.scale("churn-ep", "blue", 1)
    workspace.delete_deployment("churn-ep", "blue")
    assert [d.name for d in workspace.get_endpoint("churn-ep").deployments] == ["green"]
    operations = [r["operation"] for r in workspace.requests()]
    assert operations == ["online_endpoints.begin_create_or_update",
                          "online_deployments.begin_create_or_update", "online_endpoints.begin_create_or_update",
                          "online_deployments.begin_create_or_update", "online_endpoints.begin_create_or_update",
                          "online_deployments.scale", "online_deployments.begin_delete"]
    assert workspace.requests()[4]["traffic"] == {"blue": 90, "green": 10}


def test_it_survives_a_restart_because_it_is_a_file(workspace, tmp_path):
    workspace.seed_endpoint("churn-ep", "blue", "azureml:churn:3")
    again = SimulatedWorkspace(tmp_path / "simulated-workspace.json")
    assert again.get_endpoint("churn-ep").serving() == "blue"


def test_jobs_are_submitted_once_by_name_and_models_tagged(workspace):
    request = PipelineRequest("retrain-churn-1", "churn-retraining", "pipelines/retrain.yml", {"model_name": "churn"})
    assert workspace.submit_pipeline(request).created is True
    assert workspace.submit_pipeline(request).created is False
    assert workspace.get_job("retrain-churn-1").experiment == "churn-retraining"
    tagged = workspace.tag_model("churn", "4", {"controlplane.stage": "production"}, stage="Production")
    assert tagged.stage == "Production"
    assert workspace.get_model("churn", "4").tags == {"controlplane.stage": "production"}


def test_refusals_match_the_real_gateway(workspace):
    with pytest.raises(NotFound):
        workspace.get_endpoint("nope")
    with pytest.raises(NotFound):
        workspace.get_model("churn", "9")
    workspace.seed_endpoint("churn-ep", "blue", "azureml:churn:3")
    with pytest.raises(GatewayError, match="sum to 100"):
        workspace.set_traffic("churn-ep", {"blue": 60})
    with pytest.raises(GatewayError, match="between 0 and 50"):
        workspace.set_traffic("churn-ep", {"blue": 100}, {"green": 70})


def test_health_is_what_the_file_scripts_and_nothing_without_a_script(workspace):
    workspace.set_health("churn-ep", "green", 400, 95.0, 0.002)
    health = workspace.deployment_health("churn-ep", ["green", "blue"], T0, T0)
    assert health == {"green": DeploymentHealth("green", 400, 95.0, 0.002),
                      "blue": DeploymentHealth("blue", 0, None, None)}


def test_a_labelling_export_is_registered_once_and_the_request_recorded_as_it_would_be_sent(workspace, tmp_path):
    path = str(tmp_path / "labelling" / "defects-blue-1.jsonl")
    first = workspace.register_data("labels-labelling", "blue-1-0", path, tags={"controlplane.model": "defects"})
    again = SimulatedWorkspace(tmp_path / "simulated-workspace.json").register_data("labels-labelling", "blue-1-0",
                                                                                      path)

    assert (first.created, again.created) == (True, False)
    assert [r for r in workspace.requests() if r["operation"] == "data.create_or_update"] == [
        {"operation": "data.create_or_update", "name": "labels-labelling", "version": "blue-1-0", "path": path,
         "type": "uri_file", "tags": {"controlplane.model": "defects"}}]
    with pytest.raises(GatewayError, match="exists at"):
        workspace.register_data("labels-labelling", "blue-1-0", path + ".other")

"""The Azure ML gateway against the real azure-ai-ml SDK, answered at the HTTP boundary.

``MLClient`` gets an azure-core transport that serves Azure ML REST (ARM, api-versions 2022-02 .. 2024-10) response
bodies from ``tests/azure_responses`` and records every request, so each test shows what the SDK sent (method,
path, JSON body) and what the gateway made of the answer. No network, no retries, no polling.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError

from controlplane.adapters.azureml import AzureMLGateway
from controlplane.domain.errors import TransientError
from controlplane.ports.gateway import DeploymentRequest, DeploymentSpec, GatewayError, NotFound, PipelineRequest
from tests.azure_http import AzureTransport, FixedCredential, arm_error, body

SUBSCRIPTION, GROUP, WORKSPACE = "00000000-1111-2222-3333-444444444444", "rg-mlops", "ws-mlops"
WS = (f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}"
      f"/providers/Microsoft.MachineLearningServices/workspaces/{WORKSPACE}")


@pytest.fixture
def azure() -> AzureTransport:
    return AzureTransport().on("GET", "/workspaces/ws-mlops", body("ml_workspace"))


@pytest.fixture
def gateway(azure) -> AzureMLGateway:
    return AzureMLGateway(SUBSCRIPTION, GROUP, WORKSPACE, credential=FixedCredential(), transport=azure,
                          retry_total=0)


def deployment(name: str, capacity: int = 1, state: str = "Succeeded") -> dict:
    answer = body("ml_online_deployment")
    answer["id"] = answer["id"].rsplit("/", 1)[0] + f"/{name}"
    answer["name"] = name
    answer["sku"]["capacity"] = capacity
    answer["properties"]["provisioningState"] = state
    return answer


def job(name: str, status: str = "NotStarted") -> dict:
    answer = json.loads(json.dumps(body("ml_pipeline_job")).replace("retrain-churn-42", name))
    answer["properties"]["status"] = status
    return answer


# -- cold start -----------------------------------------------------------------------------------------------


def test_importing_the_adapter_and_constructing_the_gateway_leave_azure_ai_ml_unimported():
    code = ("import sys; from controlplane.adapters.azureml import AzureMLGateway; "
            "AzureMLGateway('s', 'g', 'w', credential=object()); "
            "assert 'azure.ai.ml' not in sys.modules, 'azure.ai.ml imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent.parent)


def test_the_client_is_built_on_first_use_and_reused(gateway, azure):
    azure.on("GET", "/models/churn/versions/3", body("ml_model_version"))
    assert azure.sent == []

    gateway.get_model("churn", "3")
    client = gateway._ml()
    gateway.get_model("churn", "3")

    assert gateway._ml() is client and len(azure.requests("GET")) == 2


# -- models ---------------------------------------------------------------------------------------------------


def test_get_model_reads_the_model_version_with_tags_properties_stage_and_creator(gateway, azure):
    azure.on("GET", "/models/churn/versions/3", body("ml_model_version"))

    model = gateway.get_model("churn", "3")

    sent = azure.one("GET", "/models/churn/versions/3")
    assert sent.path == f"{WS}/models/churn/versions/3" and sent.query["api-version"]
    assert (model.name, model.version, model.stage) == ("churn", "3", "Development")
    assert model.tags == {"team": "growth"}
    assert model.created_by == "pipeline:retrain-churn-41"  # the properties' created_by wins over systemData


def test_get_model_falls_back_to_the_creator_azure_recorded(gateway, azure):
    answer = body("ml_model_version")
    answer["properties"]["properties"] = {}
    azure.on("GET", "/models/churn/versions/3", answer)

    assert gateway.get_model("churn", "3").created_by == "alice@contoso.com"


def test_tag_model_merges_tags_and_stage_into_the_fetched_version_and_puts_it_back(gateway, azure):
    updated = body("ml_model_version")
    updated["properties"]["tags"] = {"team": "growth", "approved": "true"}
    updated["properties"]["stage"] = "Production"
    azure.on("GET", "/models/churn/versions/3", body("ml_model_version"))
    azure.on("GET", "/models/churn/versions", {"value": [body("ml_model_version")]})
    azure.on("PUT", "/models/churn/versions/3", updated)

    model = gateway.tag_model("churn", "3", {"approved": "true"}, stage="Production")

    put = azure.one("PUT", "/models/churn/versions/3")
    assert put.body["properties"]["tags"] == {"team": "growth", "approved": "true"}
    assert put.body["properties"]["stage"] == "Production"
    assert put.body["properties"]["modelUri"] == body("ml_model_version")["properties"]["modelUri"]
    assert model.tags == {"team": "growth", "approved": "true"} and model.stage == "Production"


# -- data assets ----------------------------------------------------------------------------------------------

EXPORT = "https://stcp.blob.core.windows.net/artifacts/labelling/defects-blue-491234.0-9f2c.jsonl"


def data_version(path: str, version: str = "blue-491234-0") -> dict:
    answer = body("ml_data_version")
    answer["id"] = answer["id"].replace("/data/churn-training/versions/7", f"/data/labels-labelling/versions/{version}")
    answer["name"] = version
    answer["properties"].update(dataType="uri_file", dataUri=path, description="defects rows of window to label")
    return answer


def test_register_data_puts_a_uri_file_version_at_the_exported_path(gateway, azure):
    azure.on("PUT", "/data/labels-labelling/versions/blue-491234-0", (201, data_version(EXPORT)))

    asset = gateway.register_data("labels-labelling", "blue-491234-0", EXPORT, description="defects rows",
                                  tags={"controlplane.model": "defects"})

    put = azure.one("PUT", "/data/labels-labelling/versions/blue-491234-0")
    assert put.body["properties"]["dataType"] == "uri_file" and put.body["properties"]["dataUri"] == EXPORT
    assert put.body["properties"]["tags"] == {"controlplane.model": "defects"}
    assert (asset.name, asset.version, asset.path, asset.created) == ("labels-labelling", "blue-491234-0", EXPORT,
                                                                      True)


def test_registering_an_export_again_finds_the_version_and_puts_nothing(gateway, azure):
    azure.on("GET", "/data/labels-labelling/versions/blue-491234-0", data_version(EXPORT))

    asset = gateway.register_data("labels-labelling", "blue-491234-0", EXPORT)

    assert asset.created is False and asset.path == EXPORT and azure.requests("PUT") == []


def test_a_version_registered_at_another_path_is_refused_not_overwritten(gateway, azure):
    azure.on("GET", "/data/labels-labelling/versions/blue-491234-0", data_version(EXPORT.replace("9f2c", "0000")))

    with pytest.raises(GatewayError, match="exists at .*0000.jsonl"):
        gateway.register_data("labels-labelling", "blue-491234-0", EXPORT)
    assert azure.requests("PUT") == []


# -- pipeline jobs --------------------------------------------------------------------------------------------

PIPELINE_YAML = """\
$schema: https://azuremlschemas.azureedge.net/latest/pipelineJob.schema.json
type: pipeline
display_name: retrain-churn
inputs:
  training_data:
    type: mltable
    path: azureml:churn-training:1
  model_name: churn
settings:
  default_compute: azureml:cpu-cluster
jobs:
  train:
    type: command
    component: azureml:train-churn:2
    inputs:
      training_data: ${{parent.inputs.training_data}}
      model_name: ${{parent.inputs.model_name}}
"""


@pytest.fixture
def pipeline_yaml(tmp_path) -> str:
    path = tmp_path / "retrain.yml"
    path.write_text(PIPELINE_YAML, encoding="utf-8")
    return str(path)


def test_submit_pipeline_from_yaml_puts_a_pipeline_job_under_the_request_name(gateway, azure, pipeline_yaml):
    azure.on("PUT", "/jobs/retrain-churn-42", (201, job("retrain-churn-42")))
    request = PipelineRequest(name="retrain-churn-42", experiment="churn-retrain", source=pipeline_yaml,
                              inputs={"training_data": "azureml:churn-training:4", "model_name": "churn"},
                              compute="gpu-cluster", tags={"trigger": "drift"})

    info = gateway.submit_pipeline(request)

    assert azure.one("GET", "/jobs/retrain-churn-42")  # looked for the job first
    put = azure.one("PUT", "/jobs/retrain-churn-42")
    props = put.body["properties"]
    assert props["jobType"] == "Pipeline" and props["experimentName"] == "churn-retrain"
    assert props["inputs"]["training_data"] == {"jobInputType": "mltable",
                                                "uri": f"{WS}/data/churn-training/versions/4"}
    assert props["inputs"]["model_name"] == {"jobInputType": "literal", "value": "churn"}
    assert props["tags"]["trigger"] == "drift"
    assert props["settings"]["default_compute"] == f"{WS}/computes/gpu-cluster"
    assert props["jobs"]["train"]["componentId"] == f"{WS}/components/train-churn/versions/2"
    assert info.name == "retrain-churn-42" and info.created and info.status == "NotStarted"
    assert info.experiment == "churn-retrain" and info.studio_url.startswith("https://ml.azure.com/runs/retrain-churn-42")


def test_submit_pipeline_from_a_registered_component_wraps_it_in_a_one_step_pipeline(gateway, azure):
    azure.on("GET", "/components/train-churn/versions/2", body("ml_component_version"))
    azure.on("PUT", "/jobs/retrain-churn-43", (201, job("retrain-churn-43")))
    request = PipelineRequest(name="retrain-churn-43", experiment="churn-retrain", source="azureml:train-churn:2",
                              inputs={"training_data": "azureml:churn-training:4", "model_name": "churn"},
                              compute="cpu-cluster", tags={"trigger": "drift"})

    info = gateway.submit_pipeline(request)

    assert azure.one("GET", "/components/train-churn/versions/2")
    props = azure.one("PUT", "/jobs/retrain-churn-43").body["properties"]
    (step,) = props["jobs"].values()
    assert step["componentId"] == f"{WS}/components/train-churn/versions/2"
    assert step["inputs"]["training_data"] == {"job_input_type": "uri_folder",
                                              "uri": f"{WS}/data/churn-training/versions/4"}
    assert step["inputs"]["model_name"] == {"job_input_type": "literal", "value": "churn"}
    assert props["jobType"] == "Pipeline" and props["experimentName"] == "churn-retrain"
    assert props["tags"]["trigger"] == "drift" and props["settings"]["default_compute"] == f"{WS}/computes/cpu-cluster"
    assert info.created and info.name == "retrain-churn-43"


def test_a_labelled_data_reference_is_resolved_to_the_version_it_names_today(gateway, azure, pipeline_yaml):
    azure.on("GET", "/data/churn-training", body("ml_data_container"))
    azure.on("GET", "/data/churn-training/versions/7", body("ml_data_version"))
    azure.on("PUT", "/jobs/retrain-churn-44", (201, job("retrain-churn-44")))
    request = PipelineRequest(name="retrain-churn-44", experiment="churn-retrain", source=pipeline_yaml,
                              inputs={"training_data": "azureml:churn-training@latest"})

    gateway.submit_pipeline(request)

    assert azure.one("GET", "/data/churn-training") and azure.one("GET", "/data/churn-training/versions/7")
    inputs = azure.one("PUT", "/jobs/retrain-churn-44").body["properties"]["inputs"]
    assert inputs["training_data"]["uri"] == f"{WS}/data/churn-training/versions/7"


@pytest.mark.parametrize("status, expected", [(404, NotFound), (503, TransientError)])
def test_a_failed_lookup_of_a_labelled_reference_keeps_its_http_meaning(gateway, azure, pipeline_yaml, status,
                                                                       expected):
    azure.on("GET", "/data/churn-training", (status, arm_error("Failure", f"HTTP {status} for churn-training")))
    request = PipelineRequest(name="retrain-churn-44", experiment="churn-retrain", source=pipeline_yaml,
                              inputs={"training_data": "azureml:churn-training@latest"})

    with pytest.raises(expected):  # the SDK wraps the 404 in its own exception; the status still decides
        gateway.submit_pipeline(request)

    assert azure.requests("PUT") == []


def test_a_repeated_submission_finds_the_existing_job_and_sends_nothing_else(gateway, azure, pipeline_yaml):
    azure.on("GET", "/jobs/retrain-churn-42", job("retrain-churn-42", status="Running"))

    info = gateway.submit_pipeline(PipelineRequest(name="retrain-churn-42", experiment="churn-retrain",
                                                   source=pipeline_yaml))

    assert [(s.method, s.path) for s in azure.sent] == [("GET", f"{WS}/jobs/retrain-churn-42")]
    assert not info.created and info.status == "Running"


def test_a_conflict_on_create_returns_the_job_another_attempt_created(gateway, azure, pipeline_yaml):
    azure.on("GET", "/jobs/retrain-churn-42", (404, arm_error("UserError", "job not found")),
             job("retrain-churn-42", status="Queued"))
    azure.on("PUT", "/jobs/retrain-churn-42", (409, arm_error("Conflict", "job retrain-churn-42 already exists")))

    info = gateway.submit_pipeline(PipelineRequest(name="retrain-churn-42", experiment="churn-retrain",
                                                   source=pipeline_yaml))

    job_requests = [s.method for s in azure.sent if s.path.endswith("/jobs/retrain-churn-42")]
    assert job_requests == ["GET", "PUT", "GET"]
    assert not info.created and info.status == "Queued"


def test_a_conflict_about_something_else_is_a_gateway_error(gateway, azure, pipeline_yaml):
    azure.on("PUT", "/jobs/retrain-churn-42", (409, arm_error("Conflict", "experiment is being deleted")))

    with pytest.raises(GatewayError) as raised:
        gateway.submit_pipeline(PipelineRequest(name="retrain-churn-42", experiment="churn-retrain",
                                                source=pipeline_yaml))

    assert type(raised.value) is GatewayError and raised.value.azure_status == 409
    assert [s.method for s in azure.sent if s.path.endswith("/jobs/retrain-churn-42")] == ["GET", "PUT", "GET"]


def test_a_job_the_service_refuses_is_a_gateway_error_with_its_reason(gateway, azure, pipeline_yaml):
    azure.on("PUT", "/jobs/retrain-churn-42", (400, arm_error("UserError", "Compute gpu-cluster is not found")))

    with pytest.raises(GatewayError) as raised:
        gateway.submit_pipeline(PipelineRequest(name="retrain-churn-42", experiment="churn-retrain",
                                                source=pipeline_yaml, compute="gpu-cluster"))

    assert type(raised.value) is GatewayError and raised.value.azure_status == 400
    assert "Compute gpu-cluster is not found" in raised.value.reason


@pytest.mark.parametrize("source, inputs, reason", [
    ("missing.yml", {}, "cannot load pipeline"),
    ("{yaml}", {"learning_rate": "0.1"}, "declares no input 'learning_rate'"),
    ("azureml:train-churn", {}, "azureml:<name>:<version>"),
])
def test_a_pipeline_that_cannot_be_built_is_a_gateway_error_and_nothing_is_put(gateway, azure, pipeline_yaml,
                                                                              source, inputs, reason):
    request = PipelineRequest(name="retrain-churn-42", experiment="churn-retrain",
                              source=source.format(yaml=pipeline_yaml), inputs=inputs)

    with pytest.raises(GatewayError, match=re.escape(reason)):
        gateway.submit_pipeline(request)

    assert azure.requests("PUT") == []


def test_get_job_reports_status_experiment_and_studio_url(gateway, azure):
    azure.on("GET", "/jobs/retrain-churn-42", job("retrain-churn-42", status="Completed"))

    info = gateway.get_job("retrain-churn-42")

    assert azure.one("GET", "/jobs/retrain-churn-42").path == f"{WS}/jobs/retrain-churn-42"
    assert (info.name, info.status, info.experiment, info.created) == ("retrain-churn-42", "Completed",
                                                                       "churn-retrain", False)
    assert info.studio_url.startswith("https://ml.azure.com/runs/retrain-churn-42")


# -- online endpoints -----------------------------------------------------------------------------------------


@pytest.fixture
def endpoint(azure) -> AzureTransport:
    """An endpoint with blue (90 %) and green (10 %)."""
    azure.on("GET", "/onlineEndpoints/churn-ep", body("ml_online_endpoint"))
    azure.on("GET", "/onlineEndpoints/churn-ep/deployments", {"value": [deployment("blue"), deployment("green", 2)]})
    return azure


def test_deploy_puts_a_managed_deployment_with_model_instance_type_count_and_tags(gateway, endpoint):
    endpoint.on("PUT", "/onlineEndpoints/churn-ep/deployments/green", deployment("green", capacity=2))

    info = gateway.deploy(DeploymentRequest(endpoint="churn-ep", name="green", model="azureml:churn:3",
                                            instance_type="Standard_DS3_v2", instance_count=2,
                                            tags={"candidate": "true"}))

    put = endpoint.one("PUT", "/onlineEndpoints/churn-ep/deployments/green")
    assert put.body["sku"]["capacity"] == 2 and put.body["location"] == "westeurope"
    assert put.body["properties"]["endpointComputeType"] == "Managed"
    assert put.body["properties"]["model"] == f"{WS}/models/churn/versions/3"
    assert put.body["properties"]["instanceType"] == "Standard_DS3_v2"
    assert put.body["tags"] == {"candidate": "true"}
    assert (info.endpoint, info.name, info.model) == ("churn-ep", "green", "azureml:churn:3")
    # begun, not awaited: the deployment is being created when the call returns
    assert (info.instance_type, info.instance_count, info.provisioning_state) == ("Standard_DS3_v2", 2, "Creating")


def test_scale_puts_the_current_deployment_back_with_the_new_instance_count(gateway, endpoint):
    endpoint.on("GET", "/onlineEndpoints/churn-ep/deployments/blue", deployment("blue", capacity=1))
    endpoint.on("PUT", "/onlineEndpoints/churn-ep/deployments/blue", deployment("blue", capacity=4))

    info = gateway.scale("churn-ep", "blue", 4)

    put = endpoint.one("PUT", "/onlineEndpoints/churn-ep/deployments/blue")
    assert put.body["sku"]["capacity"] == 4
    assert put.body["properties"]["model"] == f"{WS}/models/churn/versions/3"  # everything else unchanged
    assert put.body["properties"]["instanceType"] == "Standard_DS3_v2"
    assert (info.name, info.instance_count) == ("blue", 4)


@pytest.mark.parametrize("answer", [(204, None), (200, None), (404, arm_error("NotFound", "deployment not found"))],
                         ids=["deleted", "deleted-200", "already-gone"])
def test_delete_deployment_sends_a_delete_and_counts_not_found_as_done(gateway, azure, answer):
    azure.on("DELETE", "/onlineEndpoints/churn-ep/deployments/green", answer)

    assert gateway.delete_deployment("churn-ep", "green") is None

    assert azure.one("DELETE", "/onlineEndpoints/churn-ep/deployments/green")


def test_get_endpoint_reports_live_and_mirror_traffic_and_each_deployment(gateway, endpoint):
    state = gateway.get_endpoint("churn-ep")

    assert state.name == "churn-ep"
    assert state.traffic == {"blue": 90, "green": 10} and state.mirror_traffic == {}
    assert [(d.name, d.model, d.instance_count) for d in state.deployments] == [
        ("blue", "azureml:churn:3", 1), ("green", "azureml:churn:3", 2)]
    assert state.serving() == "blue"


def test_set_traffic_puts_the_endpoint_with_the_new_live_and_mirror_shares(gateway, endpoint):
    updated = body("ml_online_endpoint")
    updated["properties"]["traffic"] = {"blue": 100, "green": 0}
    updated["properties"]["mirrorTraffic"] = {"green": 20}
    endpoint.on("PUT", "/onlineEndpoints/churn-ep", updated)

    state = gateway.set_traffic("churn-ep", {"blue": 100, "green": 0}, mirror={"green": 20})

    put = endpoint.one("PUT", "/onlineEndpoints/churn-ep")
    assert put.body["properties"]["traffic"] == {"blue": 100}  # the SDK leaves zero shares out: absent is 0
    assert put.body["properties"]["mirrorTraffic"] == {"green": 20}
    assert put.body["properties"]["authMode"] == "Key"  # the rest of the endpoint goes back unchanged
    assert state.traffic == {"blue": 100, "green": 0} and state.mirror_traffic == {"green": 20}
    assert state.provisioning_state == "Updating"  # begun, not awaited


def test_set_traffic_without_mirror_leaves_the_mirror_shares_alone(gateway, endpoint):
    current = body("ml_online_endpoint")
    current["properties"]["traffic"] = {"blue": 100}
    current["properties"]["mirrorTraffic"] = {"green": 10}
    endpoint.on("GET", "/onlineEndpoints/churn-ep", current)
    endpoint.on("PUT", "/onlineEndpoints/churn-ep", current)

    gateway.set_traffic("churn-ep", {"blue": 100})

    assert endpoint.one("PUT", "/onlineEndpoints/churn-ep").body["properties"]["mirrorTraffic"] == {"green": 10}


@pytest.mark.parametrize("traffic, mirror, reason", [
    ({"blue": 90, "green": 20}, None, "sum to 100"),
    ({"blue": 50}, None, "sum to 100"),
    ({"blue": 110, "green": -10}, None, "between 0 and 100"),
    ({"blue": 90.5, "green": 9.5}, None, "must be an integer"),
    ({"blue": 100}, {"green": 60}, "between 0 and 50"),
    ({"blue": 90, "green": 10}, {"green": 10}, "while it serves live traffic"),
    ({"blue": 100}, {"green": 10, "red": 10}, "one deployment only"),
])
def test_set_traffic_refuses_an_invalid_split_before_sending_anything(gateway, azure, traffic, mirror, reason):
    with pytest.raises(GatewayError, match=reason):
        gateway.set_traffic("churn-ep", traffic, mirror=mirror)

    assert azure.sent == []


def test_set_traffic_accepts_all_zero_live_shares(gateway, endpoint):
    endpoint.on("PUT", "/onlineEndpoints/churn-ep", body("ml_online_endpoint"))

    gateway.set_traffic("churn-ep", {"blue": 0, "green": 0})

    assert endpoint.one("PUT", "/onlineEndpoints/churn-ep").body["properties"]["traffic"] == {}  # absent is 0


# -- error mapping --------------------------------------------------------------------------------------------

OPERATIONS = {
    "get_model": lambda g: g.get_model("churn", "3"),
    "tag_model": lambda g: g.tag_model("churn", "3", {"approved": "true"}),
    "get_job": lambda g: g.get_job("retrain-churn-42"),
    "submit_pipeline": lambda g: g.submit_pipeline(PipelineRequest(
        name="retrain-churn-42", experiment="churn-retrain", source="azureml:train-churn:2")),
    "deploy": lambda g: g.deploy(DeploymentRequest(endpoint="churn-ep", name="green", model="azureml:churn:3",
                                                   instance_type="Standard_DS3_v2")),
    "scale": lambda g: g.scale("churn-ep", "blue", 2),
    "delete_deployment": lambda g: g.delete_deployment("churn-ep", "blue"),
    "get_endpoint": lambda g: g.get_endpoint("churn-ep"),
    "set_traffic": lambda g: g.set_traffic("churn-ep", {"blue": 100}),
}
ENDPOINT_OPERATIONS = {"deploy", "scale", "delete_deployment", "set_traffic"}  # 409: busy with another operation
FAILURES = {
    404: (NotFound, "NotFound"),
    409: (GatewayError, "Conflict"),
    400: (GatewayError, "BadRequest"),
    401: (GatewayError, "InvalidAuthenticationToken"),
    403: (GatewayError, "AuthorizationFailed"),
    429: (TransientError, "TooManyRequests"),
    500: (TransientError, "InternalServerError"),
    503: (TransientError, "ServiceUnavailable"),
}


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("status", FAILURES)
def test_an_http_failure_becomes_not_found_gateway_error_or_transient_error(operation, status):
    expected, code = FAILURES[status]
    if status == 409 and operation in ENDPOINT_OPERATIONS:
        expected = TransientError
    azure = AzureTransport()
    for method in ("GET", "PUT", "DELETE"):
        azure.on(method, "/.*", (status, arm_error(code, f"{code} from the service")))
    gateway = AzureMLGateway(SUBSCRIPTION, GROUP, WORKSPACE, credential=FixedCredential(), transport=azure,
                             retry_total=0)

    if operation == "delete_deployment" and status == 404:
        assert OPERATIONS[operation](gateway) is None  # deleting what is gone succeeds
        return
    with pytest.raises(expected) as raised:
        OPERATIONS[operation](gateway)

    assert type(raised.value) is expected
    assert operation in str(raised.value) and str(status) in str(raised.value)
    assert raised.value.__cause__ is not None
    assert len(azure.sent) == 1 + (operation == "submit_pipeline" and status == 404)  # no retry


@pytest.mark.parametrize("operation", OPERATIONS)
def test_a_connection_failure_is_a_transient_error(operation):
    azure = AzureTransport()
    for method in ("GET", "PUT", "DELETE"):
        azure.on(method, "/.*", ServiceRequestError("Connection refused"))
    gateway = AzureMLGateway(SUBSCRIPTION, GROUP, WORKSPACE, credential=FixedCredential(), transport=azure,
                             retry_total=0)

    with pytest.raises(TransientError, match=operation) as raised:
        OPERATIONS[operation](gateway)

    assert isinstance(raised.value.__cause__, ServiceRequestError)


def test_a_credential_that_cannot_get_a_token_is_a_gateway_error(azure):
    class NoIdentity:
        def get_token(self, *scopes, **kwargs):
            raise ClientAuthenticationError("ManagedIdentityCredential: no managed identity endpoint found")

    gateway = AzureMLGateway(SUBSCRIPTION, GROUP, WORKSPACE, credential=NoIdentity(), transport=azure,
                             retry_total=0)

    with pytest.raises(GatewayError, match="no managed identity"):
        gateway.get_model("churn", "3")

    assert azure.sent == []


def test_an_error_outside_the_azure_boundary_propagates_unchanged(gateway, azure):
    azure.on("GET", "/models/churn/versions/3", body("ml_model_version"))

    with pytest.raises(AttributeError):
        gateway.tag_model("churn", "3", None)  # a programming error, not a workspace refusal



# -- data assets ----------------------------------------------------------------------------------------------


def reference_asset(data_uri: str, data_type: str = "uri_file") -> dict:
    answer = json.loads(json.dumps(body("ml_data_version")))
    answer["properties"].update(dataUri=data_uri, dataType=data_type)
    return answer


def test_a_file_data_asset_resolves_to_its_blob_url_through_the_datastore(gateway, azure):
    azure.on("GET", "/data/churn-reference/versions/3", reference_asset(
        "azureml://subscriptions/s/resourcegroups/g/workspaces/w/datastores/workspaceblobstore/paths/ref/churn.csv"))
    azure.on("GET", "/datastores/workspaceblobstore", body("ml_blob_datastore"))

    url = gateway.data_asset_url("churn-reference", "3")

    assert url == "https://stmlopsprod.blob.core.windows.net/azureml-blobstore-5b2f1c0e/ref/churn.csv"
    assert [s.method for s in azure.requests()][-2:] == ["GET", "GET"]


def test_a_folder_data_asset_is_not_a_reference(gateway, azure):
    azure.on("GET", "/data/churn-training/versions/7", body("ml_data_version"))  # a uri_folder
    with pytest.raises(GatewayError, match="one csv or parquet file"):
        gateway.data_asset_url("churn-training", "7")


def test_a_missing_data_asset_is_not_found(gateway, azure):
    azure.on("GET", "/data/nope/versions/1", (404, arm_error("UserError", "not found")))
    with pytest.raises(NotFound):
        gateway.data_asset_url("nope", "1")


def custom_deployment(name: str) -> dict:
    """A deployment of a custom (non-MLflow) model: environment, scoring script, variables, probes, insights."""
    answer = deployment(name)
    answer["properties"].update({
        "environmentId": f"{WS}/environments/churn-env/versions/4",
        "codeConfiguration": {"codeId": f"{WS}/codes/churn-score/versions/2", "scoringScript": "score.py"},
        "environmentVariables": {"TELEMETRY_EVENTHUB_NAMESPACE": "evhns-mlops", "LOG_LEVEL": "info"},
        "readinessProbe": {"initialDelay": "PT30S", "period": "PT10S", "timeout": "PT2S", "failureThreshold": 3,
                           "successThreshold": 1},
        "appInsightsEnabled": True})
    return answer


def test_a_new_deployment_copies_environment_scoring_script_and_settings_from_the_one_it_replaces(gateway, endpoint):
    # GIVEN blue serves a custom model with its environment, scoring script and telemetry settings
    endpoint.on("GET", "/onlineEndpoints/churn-ep/deployments/blue", custom_deployment("blue"))
    endpoint.on("PUT", "/onlineEndpoints/churn-ep/deployments/green", deployment("green", state="Creating"))
    # WHEN green is deployed in its place
    gateway.deploy(DeploymentRequest(endpoint="churn-ep", name="green", model="azureml:churn:4",
                                     instance_type="Standard_DS3_v2", instance_count=2, copy_from="blue"))
    # THEN the request body carries all of it, with the new model
    sent = endpoint.one("PUT", "/onlineEndpoints/churn-ep/deployments/green").body["properties"]
    assert sent["model"] == f"{WS}/models/churn/versions/4"
    assert sent["environmentId"] == f"{WS}/environments/churn-env/versions/4"
    assert sent["codeConfiguration"] == {"codeId": f"{WS}/codes/churn-score/versions/2", "scoringScript": "score.py"}
    assert sent["environmentVariables"] == {"TELEMETRY_EVENTHUB_NAMESPACE": "evhns-mlops", "LOG_LEVEL": "info"}
    assert sent["readinessProbe"]["initialDelay"] == "PT30S" and sent["livenessProbe"]["initialDelay"] == "PT10M"
    assert sent["requestSettings"]["requestTimeout"] == "PT5S" and sent["appInsightsEnabled"] is True


def test_the_policy_spec_overrides_what_is_copied(gateway, endpoint):
    endpoint.on("GET", "/onlineEndpoints/churn-ep/deployments/blue", custom_deployment("blue"))
    endpoint.on("PUT", "/onlineEndpoints/churn-ep/deployments/green", deployment("green", state="Creating"))
    spec = DeploymentSpec(environment=f"{WS}/environments/churn-env/versions/5", scoring_script="score_v2.py",
                          environment_variables={"LOG_LEVEL": "debug"}, request_settings={"request_timeout_ms": 3000},
                          app_insights_enabled=False)

    gateway.deploy(DeploymentRequest(endpoint="churn-ep", name="green", model="azureml:churn:4",
                                     instance_type="Standard_DS3_v2", instance_count=2, copy_from="blue", spec=spec))

    sent = endpoint.one("PUT", "/onlineEndpoints/churn-ep/deployments/green").body["properties"]
    assert sent["environmentId"] == f"{WS}/environments/churn-env/versions/5"
    assert sent["codeConfiguration"] == {"codeId": f"{WS}/codes/churn-score/versions/2",
                                         "scoringScript": "score_v2.py"}  # the copied code, the given script
    assert sent["environmentVariables"] == {"TELEMETRY_EVENTHUB_NAMESPACE": "evhns-mlops", "LOG_LEVEL": "debug"}
    assert sent["requestSettings"]["requestTimeout"] == "PT3S" and sent["appInsightsEnabled"] is False


def test_an_absent_endpoint_is_created_with_the_policy_auth_mode(gateway, azure):
    azure.on("PUT", "/onlineEndpoints/churn-ep", body("ml_online_endpoint"))

    state = gateway.create_endpoint("churn-ep", "aml_token")

    sent = azure.one("PUT", "/onlineEndpoints/churn-ep").body
    assert sent["properties"]["authMode"] == "AMLToken" and sent["location"] == "westeurope"
    assert state.provisioning_state == "Creating"


@pytest.mark.parametrize("state", ["Creating", "Updating", "Succeeded"])
def test_get_deployment_reads_the_provisioning_state(gateway, endpoint, state):
    endpoint.on("GET", "/onlineEndpoints/churn-ep/deployments/green", deployment("green", 2, state=state))

    info = gateway.get_deployment("churn-ep", "green")

    assert (info.name, info.instance_count, info.provisioning_state, info.error) == ("green", 2, state, "")


def test_a_failed_deployment_says_why_with_its_container_log(gateway, endpoint):
    endpoint.on("GET", "/onlineEndpoints/churn-ep/deployments/green", deployment("green", state="Failed"))
    endpoint.on("POST", "/onlineEndpoints/churn-ep/deployments/green/getLogs",
                {"content": "loading model\nTraceback ...\nModuleNotFoundError: No module named 'lightgbm'\n"})

    info = gateway.get_deployment("churn-ep", "green")

    assert info.provisioning_state == "Failed" and "No module named 'lightgbm'" in info.error


# -- Kubernetes online endpoints (an attached AKS or Arc compute) ---------------------------------------------

def test_an_endpoint_on_an_attached_kubernetes_compute_is_created_there(gateway, azure):
    azure.on("PUT", "/onlineEndpoints/churn-k8s", (201, body("ml_online_endpoint")))

    gateway.create_endpoint("churn-k8s", "key", compute="aks-prod")

    put = azure.one("PUT", "/onlineEndpoints/churn-k8s")
    assert put.body["properties"]["compute"] == f"{WS}/computes/aks-prod"
    assert put.body["properties"]["authMode"] == "Key"


def test_a_deployment_with_a_kubernetes_compute_is_a_kubernetes_deployment_of_the_clusters_instance_type(gateway,
                                                                                                        endpoint):
    endpoint.on("PUT", "/onlineEndpoints/churn-ep/deployments/green", deployment("green", capacity=2))

    gateway.deploy(DeploymentRequest(endpoint="churn-ep", name="green", model="azureml:churn:3",
                                     instance_type="gpu-small", instance_count=2, compute="aks-prod"))

    put = endpoint.one("PUT", "/onlineEndpoints/churn-ep/deployments/green")
    assert put.body["properties"]["endpointComputeType"] == "Kubernetes"
    assert put.body["properties"]["instanceType"] == "gpu-small" and put.body["sku"]["capacity"] == 2

"""The Azure ML gateway across workspaces: models shared through an Azure ML registry, deployments of a registry's
model, batch endpoints and their scoring jobs, against the real azure-ai-ml SDK answered at the HTTP boundary by
``AzureMLService`` (documented REST bodies from ``tests/azure_responses``).

``ModelOperations.share`` and the SDK's resolution of a registry model build their registry clients without the
``MLClient``'s keyword arguments, so without its transport: those clients get azure-core's default transport, which
these tests route to the same in-memory service (nothing reaches the network).
"""
from __future__ import annotations

import pytest
from azure.core.exceptions import ServiceRequestError
from azure.core.pipeline.transport import RequestsTransport

from controlplane.adapters.azureml import AzureMLGateway
from controlplane.domain.errors import TransientError
from controlplane.ports.gateway import (
    BatchDeploymentRequest,
    DeploymentRequest,
    DeploymentSpec,
    GatewayError,
    NotFound,
    registry_model,
)
from tests.azure_http import (
    GROUP,
    SUBSCRIPTION,
    WORKSPACE,
    WS,
    AzureMLService,
    AzureTransport,
    FixedCredential,
    arm_error,
    body,
)

REGISTRY = "mlops-shared"
SHARED = registry_model(REGISTRY, "churn", "3")
REGISTRY_SCOPE = ("/subscriptions/00000000-1111-2222-3333-555555555555/resourceGroups/rg-mlops-registry"
                  f"/providers/Microsoft.MachineLearningServices/registries/{REGISTRY}")
SAMPLE = "azureml://datastores/workspaceblobstore/paths/samples/churn-sample.csv"


@pytest.fixture
def service(monkeypatch):
    service = AzureMLService()
    monkeypatch.setattr(RequestsTransport, "send", lambda self, request, **kwargs: service.transport.send(request))
    yield service
    service.close()


@pytest.fixture
def gateway(service) -> AzureMLGateway:
    return AzureMLGateway(SUBSCRIPTION, GROUP, WORKSPACE, credential=FixedCredential(), transport=service.transport,
                          retry_total=0)


def sent(service: AzureMLService, method: str, path: str) -> list:
    return [s for s in service.transport.requests(method) if s.path.endswith(path)]


# -- sharing a model through a registry -----------------------------------------------------------------------


def test_share_copies_the_workspace_version_into_the_registry_once(gateway, service):
    service.add_model("churn", "3", tags={"team": "growth"})
    service.add_registry(REGISTRY)

    model = gateway.share_model("churn", "3", REGISTRY)

    (copy,) = sent(service, "POST", f"/registries/{REGISTRY}/import")
    assert copy.path == f"/mferp/managementfrontend{REGISTRY_SCOPE}/import"
    assert copy.body == {"properties": {
        "referenceType": "Id", "destinationName": "churn", "destinationVersion": "3",
        # the workspace's asset by its region and GUID, as the workspace GET tells them
        "sourceAssetId": "azureml://locations/westeurope/workspaces/00000000-aaaa-bbbb-cccc-000000000003"
                         "/models/churn/versions/3"}}
    assert (REGISTRY, "churn", "3") in service.registry_models
    assert (model.name, model.version, model.registered_by) == ("churn", "3", "controlplane")

    again = gateway.share_model("churn", "3", REGISTRY)

    assert len(sent(service, "POST", "/import")) == 1  # the registry holds it: nothing copied twice
    assert again == model


def test_a_version_the_registry_holds_is_returned_without_sharing(gateway, service):
    service.add_registry_model(REGISTRY, "churn", "3")

    model = gateway.share_model("churn", "3", REGISTRY)

    assert [s.path for s in service.transport.requests()] == [
        f"/registrymanagement/v1.0/registries/{REGISTRY}/discovery",
        f"/mferp/managementfrontend{REGISTRY_SCOPE}/models/churn/versions/3"]
    assert model.tags == {"team": "growth"} and model.created_by == "pipeline:retrain-churn-41"


def test_the_registry_client_is_built_once_per_registry(gateway, service):
    service.add_registry_model(REGISTRY, "churn", "3")
    service.add_registry_model("other-registry", "churn", "3")

    for registry in (REGISTRY, REGISTRY, "other-registry"):
        gateway.share_model("churn", "3", registry)

    assert [s.path.split("/")[-2] for s in sent(service, "GET", "/discovery")] == [REGISTRY, "other-registry"]
    assert gateway._registry(REGISTRY) is gateway._registry(REGISTRY)


def test_sharing_a_version_the_workspace_does_not_have_is_not_found(gateway, service):
    service.add_registry(REGISTRY)

    with pytest.raises(NotFound, match="share_model"):
        gateway.share_model("churn", "9", REGISTRY)

    assert (REGISTRY, "churn", "9") not in service.registry_models


def test_a_copy_another_attempt_made_meanwhile_is_returned(gateway, service):
    service.add_model("churn", "3")
    service.add_registry(REGISTRY)
    # absent when this attempt looks, and when the SDK looks before copying; there when the copy is refused
    service.transport.on("GET", f"/registries/{REGISTRY}/models/churn/versions/3",
                         (404, arm_error("UserError", "not found")), (404, arm_error("UserError", "not found")),
                         body("ml_registry_model_version"))
    service.transport.on("POST", f"/registries/{REGISTRY}/import",
                         (409, arm_error("Conflict", "churn:3 already exists in the registry")))

    model = gateway.share_model("churn", "3", REGISTRY)

    assert len(sent(service, "POST", "/import")) == 1 and (model.name, model.version) == ("churn", "3")


def test_a_refused_copy_the_registry_does_not_hold_stays_an_error(gateway, service):
    service.add_model("churn", "3")
    service.add_registry(REGISTRY)
    service.transport.on("POST", f"/registries/{REGISTRY}/import",
                         (403, arm_error("AuthorizationFailed", "no AzureML Registry User role")))

    with pytest.raises(GatewayError, match="AzureML Registry User") as raised:
        gateway.share_model("churn", "3", REGISTRY)

    assert raised.value.azure_status == 403


@pytest.mark.parametrize("status, expected", [(404, NotFound), (403, GatewayError), (503, TransientError)])
def test_a_failed_registry_lookup_keeps_its_http_meaning(gateway, service, status, expected):
    service.transport.on("GET", "/registries/[^/]+/discovery", (status, arm_error("Failure", f"HTTP {status}")))

    with pytest.raises(expected) as raised:
        gateway.share_model("churn", "3", REGISTRY)

    assert type(raised.value) is expected and sent(service, "POST", "/import") == []


# -- online deployments of a registry's model -----------------------------------------------------------------


def test_a_deployment_of_a_registry_model_is_sent_and_read_back_as_the_registry_reference(gateway, service):
    service.serve("churn-ep", {"blue": ("azureml:churn:2", 1)}, {"blue": 100})

    info = gateway.deploy(DeploymentRequest(endpoint="churn-ep", name="green", model=SHARED,
                                            instance_type="Standard_DS3_v2"))

    (put,) = sent(service, "PUT", "/onlineEndpoints/churn-ep/deployments/green")
    assert put.body["properties"]["model"] == SHARED
    assert info.model == SHARED
    assert gateway.get_deployment("churn-ep", "green").model == SHARED
    assert [d.model for d in gateway.get_endpoint("churn-ep").deployments] == ["azureml:churn:2", SHARED]


def test_a_registry_model_named_by_its_arm_id_reads_as_the_registry_reference(gateway, service):
    service.serve("churn-ep", {"green": ("azureml:churn:2", 1)}, {"green": 100})
    service.deployments[("churn-ep", "green")]["properties"]["model"] = f"{REGISTRY_SCOPE}/models/churn/versions/3"

    assert gateway.get_deployment("churn-ep", "green").model == SHARED


# -- batch endpoints ------------------------------------------------------------------------------------------


def batch_request(**overrides) -> BatchDeploymentRequest:
    fields = dict(endpoint="churn-batch", name="green", model="azureml:churn:4", compute="cpu-cluster",
                  instance_count=2, mini_batch_size=20, max_concurrency_per_instance=4,
                  output_file_name="scores.csv", tags={"candidate": "true"})
    return BatchDeploymentRequest(**{**fields, **overrides})


def test_create_batch_endpoint_puts_an_entra_id_endpoint_and_does_not_wait(gateway, service):
    state = gateway.create_batch_endpoint("churn-batch")

    (put,) = sent(service, "PUT", "/batchEndpoints/churn-batch")
    assert put.path == f"{WS}/batchEndpoints/churn-batch"
    assert put.body["properties"]["authMode"] == "AADToken" and put.body["location"] == "westeurope"
    assert put.body["tags"] == {"controlplane.created": "true"}
    assert (state.name, state.default_deployment, state.provisioning_state) == ("churn-batch", None, "Creating")


def test_deploy_batch_puts_a_model_deployment_whose_jobs_fail_on_any_failed_mini_batch(gateway, service):
    service.serve_batch("churn-batch", {"blue": ("azureml:churn:3", 1)}, default="blue")
    spec = DeploymentSpec(environment="azureml:churn-env:4", code="azureml:churn-score:2", scoring_script="batch.py",
                          environment_variables={"LOG_LEVEL": "info"})

    info = gateway.deploy_batch(batch_request(spec=spec))

    (put,) = sent(service, "PUT", "/batchEndpoints/churn-batch/deployments/green")
    props = put.body["properties"]
    assert props["model"] == {"referenceType": "Id", "assetId": f"{WS}/models/churn/versions/4"}
    assert props["compute"] == f"{WS}/computes/cpu-cluster"
    assert props["resources"]["instanceCount"] == 2
    assert (props["miniBatchSize"], props["maxConcurrencyPerInstance"], props["errorThreshold"]) == (20, 4, 0)
    assert (props["outputAction"], props["outputFileName"]) == ("AppendRow", "scores.csv")
    assert props["environmentId"] == f"{WS}/environments/churn-env/versions/4"
    assert props["codeConfiguration"] == {"codeId": f"{WS}/codes/churn-score/versions/2", "scoringScript": "batch.py"}
    assert props["environmentVariables"] == {"LOG_LEVEL": "info"}
    assert put.body["tags"] == {"candidate": "true"}
    assert (info.model, info.instance_type, info.instance_count, info.provisioning_state) == (
        "azureml:churn:4", "cpu-cluster", 2, "Creating")
    # the endpoint's default is left as it was
    assert sent(service, "PUT", "/batchEndpoints/churn-batch") == []
    assert gateway.get_batch_endpoint("churn-batch").default_deployment == "blue"


def test_an_mlflow_batch_deployment_of_a_registry_model_sends_neither_environment_nor_code(gateway, service):
    service.serve_batch("churn-batch", {}, default=None)
    service.add_registry_model(REGISTRY, "churn", "3")

    gateway.deploy_batch(batch_request(model=SHARED))

    props = sent(service, "PUT", "/batchEndpoints/churn-batch/deployments/green")[0].body["properties"]
    assert props["model"] == {"referenceType": "Id", "assetId": SHARED}
    assert "environmentId" not in props and "codeConfiguration" not in props
    info = gateway.get_batch_deployment("churn-batch", "green")
    assert (info.model, info.instance_type, info.instance_count) == (SHARED, "cpu-cluster", 2)


def test_get_batch_deployment_reads_state_and_the_model_as_requested(gateway, service):
    service.serve_batch("churn-batch", {"blue": ("azureml:churn:3", 2)}, default="blue")
    service.batch_deployments[("churn-batch", "blue")]["properties"]["provisioningState"] = "Failed"

    info = gateway.get_batch_deployment("churn-batch", "blue")

    assert (info.name, info.model, info.instance_count, info.provisioning_state) == ("blue", "azureml:churn:3", 2,
                                                                                     "Failed")
    assert info.error == "batch deployment provisioning failed"
    with pytest.raises(NotFound):
        gateway.get_batch_deployment("churn-batch", "nope")


def test_set_batch_default_puts_the_endpoint_with_the_new_default_deployment(gateway, service):
    service.serve_batch("churn-batch", {"blue": ("azureml:churn:3", 1), "green": ("azureml:churn:4", 1)},
                        default="blue")

    state = gateway.set_batch_default("churn-batch", "green")

    (put,) = sent(service, "PUT", "/batchEndpoints/churn-batch")
    assert put.body["properties"]["defaults"] == {"deploymentName": "green"}
    assert put.body["properties"]["authMode"].lower() == "aadtoken"  # the rest goes back unchanged
    assert (state.default_deployment, state.provisioning_state) == ("green", "Updating")
    read = gateway.get_batch_endpoint("churn-batch")
    assert read.default_deployment == "green"
    assert [(d.name, d.model) for d in read.deployments] == [("blue", "azureml:churn:3"), ("green", "azureml:churn:4")]


def test_get_batch_endpoint_of_a_missing_endpoint_is_not_found(gateway, service):
    with pytest.raises(NotFound, match="get_batch_endpoint"):
        gateway.get_batch_endpoint("churn-batch")


# -- batch scoring jobs ---------------------------------------------------------------------------------------


def test_invoke_batch_posts_a_scoring_job_whose_properties_carry_the_tags_and_the_experiment(gateway, service):
    service.serve_batch("churn-batch", {"blue": ("azureml:churn:3", 1), "green": ("azureml:churn:4", 1)},
                        default="blue")

    job = gateway.invoke_batch("churn-batch", "green", SAMPLE, job_name="green-score", experiment="churn-staging",
                               tags={"controlplane.model": "churn", "controlplane.version": "4"})

    (post,) = sent(service, "POST", "/jobs")
    assert post.path == "/jobs"  # the endpoint's scoring URI
    assert post.headers["Authorization"].startswith("Bearer ") and post.headers["azureml-model-deployment"] == "green"
    assert post.body == {"properties": {
        "inputData": {"UriFile": {"jobInputType": "UriFile", "uri": SAMPLE}},
        "name": "green-score",
        "properties": {"controlplane.model": "churn", "controlplane.version": "4", "experimentName": "churn-staging"}}}
    assert (job.name, job.status, job.experiment, job.created) == ("green-score", "NotStarted", "churn-staging", True)
    marked = {"controlplane.model": "churn", "controlplane.version": "4", "experimentName": "churn-staging"}
    assert (job.tags, job.properties) == ({}, marked)

    read = gateway.get_job("green-score")  # the job, as the workspace knows it
    assert (read.tags, read.properties, read.experiment) == ({}, marked, "churn-staging")


def test_a_repeated_invoke_finds_the_job_and_posts_nothing(gateway, service):
    service.serve_batch("churn-batch", {"green": ("azureml:churn:4", 1)}, default="green")
    service.add_job("green-score", status="Running", experiment="churn-staging")

    job = gateway.invoke_batch("churn-batch", "green", SAMPLE, job_name="green-score", experiment="churn-staging")

    assert service.transport.requests("POST") == []
    assert (job.name, job.status, job.created) == ("green-score", "Running", False)


@pytest.mark.parametrize("path, kind", [
    ("azureml://datastores/workspaceblobstore/paths/samples/", "UriFolder"),
    ("azureml://datastores/workspaceblobstore/paths/samples", "UriFolder"),
    ("https://stmlops.blob.core.windows.net/samples/churn.parquet", "UriFile"),
])
def test_an_input_path_ending_in_a_file_name_is_a_file_else_a_folder(gateway, service, path, kind):
    service.serve_batch("churn-batch", {"green": ("azureml:churn:4", 1)}, default="green")

    gateway.invoke_batch("churn-batch", "green", path, job_name="green-score")

    body = sent(service, "POST", "/jobs")[0].body["properties"]
    assert body["inputData"] == {kind: {"jobInputType": kind, "uri": path}}
    assert "properties" not in body  # neither tags nor an experiment given


def test_invoking_a_deployment_the_endpoint_does_not_have_is_a_gateway_error(gateway, service):
    service.serve_batch("churn-batch", {"blue": ("azureml:churn:3", 1)}, default="blue")

    with pytest.raises(GatewayError, match="green"):
        gateway.invoke_batch("churn-batch", "green", SAMPLE, job_name="green-score")

    assert service.transport.requests("POST") == []


def test_a_scoring_uri_that_refuses_every_connection_is_a_transient_error(gateway, service):
    service.serve_batch("churn-batch", {"green": ("azureml:churn:4", 1)}, default="green")
    service.transport.on("POST", "/jobs", ServiceRequestError("Connection refused"))

    with pytest.raises(TransientError, match="invoke_batch"):
        gateway.invoke_batch("churn-batch", "green", SAMPLE, job_name="green-score")

    assert len(service.transport.requests("POST")) == 5  # the SDK's own attempts, then it gives up


def test_get_job_reports_tags_and_properties(gateway, service):
    service.add_job("retrain-churn-42", status="Completed")
    service.jobs["retrain-churn-42"]["properties"]["properties"]["test.auc"] = 0.91

    job = gateway.get_job("retrain-churn-42")

    assert job.tags == {"trigger": "drift"}
    assert job.properties == {"azureml.runsource": "azureml.PipelineRun", "test.auc": "0.91"}


# -- error mapping --------------------------------------------------------------------------------------------

OPERATIONS = {
    "create_batch_endpoint": lambda g: g.create_batch_endpoint("churn-batch"),
    "get_batch_endpoint": lambda g: g.get_batch_endpoint("churn-batch"),
    "deploy_batch": lambda g: g.deploy_batch(batch_request()),
    "get_batch_deployment": lambda g: g.get_batch_deployment("churn-batch", "green"),
    "set_batch_default": lambda g: g.set_batch_default("churn-batch", "green"),
    "invoke_batch": lambda g: g.invoke_batch("churn-batch", "green", SAMPLE, job_name="green-score"),
    "share_model": lambda g: g.share_model("churn", "3", REGISTRY),
}
CHANGES = {"create_batch_endpoint", "deploy_batch", "set_batch_default", "invoke_batch"}  # 409: busy
FAILURES = {
    404: (NotFound, "NotFound"),
    409: (GatewayError, "Conflict"),
    400: (GatewayError, "BadRequest"),
    403: (GatewayError, "AuthorizationFailed"),
    429: (TransientError, "TooManyRequests"),
    503: (TransientError, "ServiceUnavailable"),
}


def failing(answer) -> AzureMLGateway:
    azure = AzureTransport()
    for method in ("GET", "PUT", "POST"):
        azure.on(method, "/.*", answer)
    return AzureMLGateway(SUBSCRIPTION, GROUP, WORKSPACE, credential=FixedCredential(), transport=azure,
                          retry_total=0)


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("status", FAILURES)
def test_an_http_failure_becomes_not_found_gateway_error_or_transient_error(operation, status):
    expected, code = FAILURES[status]
    if status == 409 and operation in CHANGES:
        expected = TransientError
    gateway = failing((status, arm_error(code, f"{code} from the service")))

    with pytest.raises(expected) as raised:
        OPERATIONS[operation](gateway)

    assert type(raised.value) is expected
    assert operation in str(raised.value) and raised.value.__cause__ is not None


@pytest.mark.parametrize("operation", OPERATIONS)
def test_a_connection_failure_is_a_transient_error(operation):
    gateway = failing(ServiceRequestError("Connection refused"))

    with pytest.raises(TransientError, match=operation):
        OPERATIONS[operation](gateway)


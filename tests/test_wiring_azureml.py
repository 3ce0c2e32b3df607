"""Production wiring with ``CONTROLPLANE_DISPATCH=azureml``, and the app's Azure identity.

The services are built the way an invocation builds them in Azure: from app settings (the names of
``local.settings.sample.json``) by ``controlplane.bootstrap`` on the first invocation of a trigger. Only the
network is replaced: azure-ai-ml's HTTP transport answers from ``tests.azure_http.AzureMLService`` and the
process-wide credential is a fixed token. ``DefaultAzureCredential`` itself is built for real (azure-identity),
without a token being asked for.
"""
from __future__ import annotations

import json
import threading
from functools import partial

import pytest
from azure.functions.timer import TimerRequest

from controlplane import bootstrap
from controlplane.adapters import azureml, identity, monitor_logs
from controlplane.adapters.azureml import AzureMLGateway
from controlplane.adapters.monitor_logs import MonitorLogsProbe
from controlplane.domain.ledger import Outcome, TaskKind, TaskState
from tests.azure_http import GROUP, SUBSCRIPTION, WORKSPACE, WS, AzureMLService, FixedCredential
from tests.support import EVENTS, ROOT

LOGS_WORKSPACE = "00000000-aaaa-bbbb-cccc-000000000009"
IDENTITY_VARIABLES = ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_FEDERATED_TOKEN_FILE",
                      "IDENTITY_ENDPOINT", "IDENTITY_HEADER", "MSI_ENDPOINT", "MSI_SECRET")


@pytest.fixture
def azure():
    service = AzureMLService()
    service.serve("churn-ep", {"blue": ("azureml:churn:3", 1)}, {"blue": 100})
    service.add_model("churn", "3", {"accuracy": "0.90", "auc": "0.86"}, registered_by="dan@contoso.com")
    service.add_model("churn", "4", {"auc": "0.89"}, registered_by="alice@contoso.com")
    yield service
    service.close()


@pytest.fixture
def app_settings(tmp_path, monkeypatch, azure):
    """The sample's settings, as the Functions host exports them, for a workspace with ``azureml`` dispatch."""
    values = json.loads((ROOT / "local.settings.sample.json").read_text(encoding="utf-8"))["Values"]
    values.update({"CONTROLPLANE_DISPATCH": "azureml", "CONTROLPLANE_STORE": f"sqlite:///{tmp_path}/cp.db",
                   "CONTROLPLANE_POLICY": str(ROOT / "policy.yaml"), "APPROVAL_SIGNING_KEY": "s" * 40,
                   "AZUREML_SUBSCRIPTION_ID": SUBSCRIPTION, "AZUREML_RESOURCE_GROUP": GROUP,
                   "AZUREML_WORKSPACE": WORKSPACE, "CONTROLPLANE_LOGS_WORKSPACE_ID": LOGS_WORKSPACE,
                   "CONTROLPLANE_ARTIFACTS": str(tmp_path / "artifacts")})
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    credential = FixedCredential()
    monkeypatch.setattr(identity, "_credential", credential)  # the process-wide credential every client uses
    for module, client in ((azureml, AzureMLGateway), (monitor_logs, MonitorLogsProbe)):
        monkeypatch.setattr(module, client.__name__, partial(client, transport=azure.transport, retry_total=0))
    bootstrap.reset()
    yield credential
    bootstrap.reset()


def test_a_registry_events_promotion_is_dispatched_to_azure_ml_as_the_documented_rest_request(app_settings, azure,
                                                                                              fn):
    # WHEN Event Grid delivers a registration, then the sweep timer fires, in a host built from the settings
    fn["on_registry_event"]((EVENTS / "eg_model_registered_sdk.json").read_text(encoding="utf-8"))
    services = bootstrap.services()
    [decision] = services.store.decisions(model="churn")
    assert decision.outcome is Outcome.REQUEST_APPROVAL, decision.reason
    [task] = [t for t in services.store.tasks() if t.kind is TaskKind.PROMOTION]
    fn["sweep"](TimerRequest(past_due=False))

    # THEN the services are the production ones, the promotion went to Azure ML, and the request is Azure ML's REST
    assert isinstance(services.gateway, AzureMLGateway) and isinstance(services.health, MonitorLogsProbe)
    assert "promotion=azureml" in services.dispatcher.name and "retraining=azureml" in services.dispatcher.name
    name = task.request["deployment"]
    put = azure.transport.one("PUT", f"/onlineEndpoints/churn-ep/deployments/{name}")
    assert put.path == f"{WS}/onlineEndpoints/churn-ep/deployments/{name}"
    assert put.query["api-version"] and put.headers["Authorization"].startswith("Bearer ")
    assert ("https://management.azure.com/.default",) in app_settings.scopes
    assert put.body["location"] == "westeurope" and put.body["sku"]["capacity"] == 1
    properties = put.body["properties"]
    assert properties["endpointComputeType"] == "Managed" and properties["instanceType"] == "Standard_DS3_v2"
    assert properties["model"] == f"{WS}/models/churn/versions/4"
    assert azure.transport.requests("PUT") == [put]  # no traffic change for a staging deployment
    assert services.store.task(task.id).state is TaskState.SUCCEEDED

    # AND a second sweep sends nothing again
    fn["sweep"](TimerRequest(past_due=False))
    assert azure.transport.requests("PUT") == [put]


def test_the_same_event_with_dry_run_dispatch_sends_nothing_to_azure(app_settings, azure, monkeypatch, fn):
    monkeypatch.setenv("CONTROLPLANE_DISPATCH", "dry-run")

    fn["on_registry_event"]((EVENTS / "eg_model_registered_sdk.json").read_text(encoding="utf-8"))
    fn["sweep"](TimerRequest(past_due=False))

    services = bootstrap.services()
    assert type(services.gateway).__name__ == "SimulatedWorkspace" and services.dispatcher.name.startswith("dry-run")
    assert [d.event_type for d in services.store.decisions(model="churn")] == [
        "Microsoft.MachineLearningServices.ModelRegistered"]
    assert azure.transport.sent == []  # the simulated workspace answered every lookup


# -- the app's identity -----------------------------------------------------------------------------------------


@pytest.fixture
def fresh_identity(monkeypatch):
    for name in IDENTITY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(identity, "_credential", None)
    return monkeypatch


def managed_identity(credential):
    from azure.identity import ManagedIdentityCredential

    [found] = [c for c in credential.credentials if isinstance(c, ManagedIdentityCredential)]
    inner = found._credential
    return type(inner).__name__, inner._msal_client._managed_identity


def test_without_a_client_id_the_system_assigned_identity_or_a_developer_login_is_used(fresh_identity):
    from azure.identity import AzureCliCredential, DefaultAzureCredential

    credential = identity.app_credential()

    assert type(credential) is DefaultAzureCredential
    assert managed_identity(credential) == ("ImdsCredential", {"ManagedIdentityIdType": "SystemAssigned", "Id": None})
    assert any(isinstance(c, AzureCliCredential) for c in credential.credentials)  # `az login` locally


def test_the_client_id_the_template_sets_selects_the_user_assigned_identity(fresh_identity):
    fresh_identity.setenv("AZURE_CLIENT_ID", "5e1f0c3a-0000-4000-8000-00000000c11d")

    credential = identity.app_credential()

    assert managed_identity(credential) == ("ImdsCredential", {"ManagedIdentityIdType": "ClientId",
                                                               "Id": "5e1f0c3a-0000-4000-8000-00000000c11d"})


def test_in_a_function_app_the_hosts_identity_endpoint_serves_the_user_assigned_identity(fresh_identity):
    fresh_identity.setenv("AZURE_CLIENT_ID", "5e1f0c3a-0000-4000-8000-00000000c11d")
    fresh_identity.setenv("IDENTITY_ENDPOINT", "http://127.0.0.1:41741/msi/token/")
    fresh_identity.setenv("IDENTITY_HEADER", "header-from-the-host")

    kind, chosen = managed_identity(identity.app_credential())

    assert kind == "AppServiceCredential" and chosen["Id"] == "5e1f0c3a-0000-4000-8000-00000000c11d"


def test_one_credential_serves_every_client_of_the_process(fresh_identity):
    first = identity.app_credential()

    gateway = AzureMLGateway(SUBSCRIPTION, GROUP, WORKSPACE)  # no credential given: the app's

    assert identity.app_credential() is first
    assert gateway._ml()._credential is first  # MLClient is built without a network call


def test_a_lazy_client_is_built_once_however_many_threads_ask_at_once():
    built = []
    gate = threading.Barrier(8)

    def build():
        built.append(object())
        return built[-1]

    lazy = identity.Lazy(build)
    got = []

    def ask():
        gate.wait()
        got.append(lazy.get())

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(built) == 1 and got == built * 8

"""Event Hubs Capture of the telemetry hub to ADLS Gen2, so that an Azure ML job can check a window too large for
the function over the captured Avro files: the account, the hub's capture settings, the identity Capture writes
with, the switch, the outputs and app setting, and the hook's identity-based datastore and reader roles.

The Bicep is parsed with pycep (as tests/test_infra.py does); the POSIX hook runs against the fake ``az`` of
tests/test_infra.py, taught the two answers the capture step asks for.
"""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests import test_infra
from tests.test_infra import HOOKS, INFRA, checkov_report, run_posix_hook  # noqa: F401  (checkov_report is a fixture)
from tests.test_infra_environments import parse, role_assignments

BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
BLOB_DATA_READER = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"
ARCHIVE_NAME_FORMAT = "{Namespace}/{EventHub}/{PartitionId}/{Year}/{Month}/{Day}/{Hour}/{Minute}/{Second}"
CAPTURE_ACCOUNT_ID = "/subscriptions/3f9c/resourceGroups/rg-cp/providers/Microsoft.Storage/storageAccounts/stcaptoken"
CAPTURE = {
    "AZURE_TELEMETRY_CAPTURE_ACCOUNT": "stcaptoken",
    "AZURE_TELEMETRY_CAPTURE_ACCOUNT_ID": CAPTURE_ACCOUNT_ID,
    "AZURE_TELEMETRY_CAPTURE_CONTAINER": "telemetry-capture",
}


@pytest.fixture(scope="module")
def app() -> dict:
    return parse(INFRA / "app" / "controlplane.bicep")


@pytest.fixture(scope="module")
def main() -> dict:
    return parse(INFRA / "main.bicep")


def accessor(value) -> list[str]:
    """`a.b.c` as ['a', 'b', 'c'] from pycep's nested property accessors."""
    if not isinstance(value, dict):
        return [value]
    operator = value["operator"]
    assert operator["type"] == "property_accessor"
    return [operator["operands"]["operand_1"], *accessor(operator["operands"]["operand_2"])]


def conditional(value: dict) -> tuple:
    operator = value["operator"]
    assert operator["type"] == "conditional"
    operands = operator["operands"]
    return operands["condition"], operands["true_value"], operands["false_value"]


def render(template: str, values: dict[str, str]) -> str:
    """A Bicep interpolated string with each `${expression}` replaced by its value in ``values``."""
    return re.sub(r"\$\{([^}]+)\}", lambda match: values[match[1]], template)


def test_the_capture_account_is_adls_gen2_with_entra_id_only_and_switched_by_the_parameter(app):
    account = app["resources"]["captureStorage"]
    assert account["type"] == "Microsoft.Storage/storageAccounts"
    assert account["config"]["condition"] == "telemetryCapture"
    config = account["config"]["config"]
    assert config["kind"] == "StorageV2" and config["name"] == "captureAccountName"
    assert config["properties"] == {"isHnsEnabled": True, "allowSharedKeyAccess": False, "allowBlobPublicAccess": False,
                                    "minimumTlsVersion": "TLS1_2", "supportsHttpsTrafficOnly": True}
    blobs = config["__child_resource__"]
    container = blobs["__attrs__"]["config"]["__child_resource__"]
    assert blobs["__attrs__"]["config"]["name"] == "default"
    assert container["__attrs__"]["type"] == "containers"
    assert container["__attrs__"]["config"]["name"] == "captureContainer"
    variables = app["variables"]
    assert variables["captureContainer"]["value"] == "telemetry-capture"
    assert variables["captureAccountName"]["value"] == "stcap${resourceToken}"


def test_the_hub_is_captured_as_avro_every_five_minutes_or_300_mb(app):
    hub = app["resources"]["eventHubs__hub"]["config"]
    condition, capture, switched_off = conditional(hub["properties"]["captureDescription"])
    assert condition == "telemetryCapture" and switched_off is None
    destination = capture["destination"]
    settings = {key: value for key, value in capture.items() if key != "destination"}
    assert settings == {"enabled": True, "encoding": "Avro", "intervalInSeconds": 300, "sizeLimitInBytes": 314572800,
                        "skipEmptyArchives": True}
    assert destination["name"] == "EventHubArchive.AzureBlockBlob"
    properties = destination["properties"]
    assert properties["blobContainer"] == "captureContainer"
    assert accessor(properties["storageAccountResourceId"]) == ["captureStorage", "id"]
    assert properties["archiveNameFormat"] == ARCHIVE_NAME_FORMAT
    # The retention and partitions the function relies on are unchanged.
    assert hub["properties"]["partitionCount"] == 4 and hub["properties"]["messageRetentionInDays"] == 1


def test_capture_writes_with_the_namespace_s_own_identity_which_holds_its_role_first(app):
    resources = app["resources"]
    namespace = resources["eventHubs"]["config"]
    assert namespace["sku"]["tier"] == "Standard", "Capture is not available on Basic"
    assert namespace["identity"] == {"type": "SystemAssigned"}
    assert namespace["properties"]["disableLocalAuth"] is True
    _, capture, _ = conditional(resources["eventHubs__hub"]["config"]["properties"]["captureDescription"])
    assert capture["destination"]["identity"] == {"type": "SystemAssigned"}

    writer = resources["captureWriter"]
    assert writer["type"] == "Microsoft.Authorization/roleAssignments"
    assert writer["config"]["condition"] == "telemetryCapture"
    config = writer["config"]["config"]
    assert config["scope"] == "captureStorage"
    assert accessor(config["properties"]["principalId"]) == ["eventHubs", "identity", "principalId"]
    assert config["properties"]["principalType"] == "ServicePrincipal"
    role = config["properties"]["roleDefinitionId"]["function"]["parameters"]["resource_name_1"]
    assert app["variables"][role]["value"] == BLOB_DATA_CONTRIBUTOR
    assert "captureWriter" in resources["eventHubs__hub"]["config"]["dependsOn"]


def test_the_app_s_identity_gets_no_role_on_the_capture_account(app):
    scoped_to_capture = [resource["config"]["config"] for resource in app["resources"].values()
                         if resource["type"] == "Microsoft.Authorization/roleAssignments"
                         and resource["config"].get("config", {}).get("scope") == "captureStorage"]
    assert [accessor(config["properties"]["principalId"]) for config in scoped_to_capture] == [
        ["eventHubs", "identity", "principalId"]]
    for path in (INFRA / "app").glob("*.bicep"):
        assert BLOB_DATA_READER not in path.read_text(), path.name


def test_the_switch_is_on_by_default_and_reaches_the_module(main, app):
    parameter = main["parameters"]["telemetryCapture"]
    assert parameter["type"] == "bool" and parameter["default"] is True
    assert main["modules"]["app"]["config"]["params"]["telemetryCapture"] == "telemetryCapture"
    assert app["parameters"]["telemetryCapture"]["type"] == "bool"
    passed = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert passed["telemetryCapture"] == {"value": "${AZURE_TELEMETRY_CAPTURE=true}"}


def test_the_outputs_name_the_account_the_container_and_the_hub_s_adls_path(main, app):
    outputs = {name: accessor(output["value"]) for name, output in main["outputs"].items() if "CAPTURE" in name}
    assert outputs == {
        "AZURE_TELEMETRY_CAPTURE_ACCOUNT": ["app", "outputs", "captureAccountName"],
        "AZURE_TELEMETRY_CAPTURE_ACCOUNT_ID": ["app", "outputs", "captureAccountId"],
        "AZURE_TELEMETRY_CAPTURE_CONTAINER": ["app", "outputs", "captureContainerName"],
        "AZURE_TELEMETRY_CAPTURE_PATH": ["app", "outputs", "capturePath"],
    }
    values = {"captureContainer": "telemetry-capture", "captureAccountName": "stcaptoken",
              "environment().suffixes.storage": "core.windows.net", "eventHubs.name": "evhns-cp-token",
              "telemetryEventHubName": "telemetry", "resourceToken": "token"}
    values["capturePrefix"] = render(app["variables"]["capturePrefix"]["value"], values)
    for name in ("captureAccountName", "captureAccountId", "captureContainerName", "capturePath"):
        condition, _, switched_off = conditional(app["outputs"][name]["value"])
        assert condition == "telemetryCapture" and switched_off == "", name
    _, path, _ = conditional(app["outputs"]["capturePath"]["value"])
    assert render(path, values) == "abfss://telemetry-capture@stcaptoken.dfs.core.windows.net/evhns-cp-token/telemetry/"
    # Capture names its files after the namespace and the hub first: the prefix is exactly the hub's files.
    assert ARCHIVE_NAME_FORMAT.startswith("{Namespace}/{EventHub}/")


def test_the_app_setting_gives_the_job_the_datastore_path_with_a_workspace_only(app):
    setting = app["resources"]["appSettings"]["config"]["properties"]["CONTROLPLANE_TELEMETRY_CAPTURE"]
    condition, value, otherwise = conditional(setting)
    assert condition == {"operator": {"type": "and", "operands": {
        "operand_1": "telemetryCapture",
        "operand_2": {"operator": {"type": "not", "operands": {"bool_value": {
            "function": {"type": "empty", "parameters": {"item_to_test": "azureMlWorkspace"}}}}}}}}}
    assert otherwise == ""
    values = {"eventHubs.name": "evhns-cp-token", "telemetryEventHubName": "telemetry"}
    values["capturePrefix"] = render(app["variables"]["capturePrefix"]["value"], values)
    assert render(app["variables"][value]["value"], values) == (
        "azureml://datastores/telemetry_capture/paths/evhns-cp-token/telemetry/")


def test_checkov_passes_the_capture_account_with_only_the_skips_it_cannot_check(checkov_report):  # noqa: F811
    results = checkov_report["results"]
    capture = "Microsoft.Storage/storageAccounts.captureStorage"
    assert not [check["check_id"] for check in results["failed_checks"]
                if check["resource"] in (capture, "Microsoft.EventHub/namespaces.eventHubs")]
    assert {check["check_id"] for check in results["passed_checks"] if check["resource"] == capture} >= {
        "CKV_AZURE_3", "CKV_AZURE_59"}
    assert {check["check_id"] for check in results["skipped_checks"] if check["resource"] == capture} == {
        "CKV_AZURE_35", "CKV_AZURE_43", "CKV_AZURE_44", "CKV_AZURE_206"}


# The fake az of tests/test_infra.py, also answering the workspace's identity and recording the files sent.
ANSWERS_ANCHOR = '    "role assignment list":'
CALLS_ANCHOR = 'with open(os.environ["FAKE_AZ_CALLS"]'
WORKSPACE_ANSWER = '    "resource show": os.environ.get("FAKE_WORKSPACE_PRINCIPAL", ""),\n'
RECORD_FILE = 'if "--file" in args:\n    call["file"] = open(args[args.index("--file") + 1], encoding="utf-8").read()\n'
CAPTURE_FAKE_AZ = test_infra.FAKE_AZ.replace(ANSWERS_ANCHOR, WORKSPACE_ANSWER + ANSWERS_ANCHOR, 1).replace(
    CALLS_ANCHOR, RECORD_FILE + CALLS_ANCHOR, 1)


def run_capture_hook(monkeypatch, directory, **overrides: str | None) -> dict:
    assert ANSWERS_ANCHOR in test_infra.FAKE_AZ and CALLS_ANCHOR in test_infra.FAKE_AZ
    monkeypatch.setattr(test_infra, "FAKE_AZ", CAPTURE_FAKE_AZ)
    return run_posix_hook(directory, **{"FAKE_WORKSPACE_PRINCIPAL": "workspace-principal", **CAPTURE, **overrides})


def datastore_calls(run: dict) -> list[dict]:
    return [call for call in run["calls"] if call["args"][:2] == ["ml", "datastore"]]


def option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_the_hook_creates_the_identity_based_datastore_in_the_home_workspace(monkeypatch, tmp_path):
    run = run_capture_hook(monkeypatch, tmp_path, FAKE_ROLE_ASSIGNMENTS="0")
    [call] = datastore_calls(run)
    args = call["args"]
    assert args[2] == "create"
    # The workspace of AZURE_ML_WORKSPACE_ID in tests/test_infra.py.
    assert (option(args, "--subscription"), option(args, "--resource-group"), option(args, "--workspace-name")) == (
        "3f9c", "rg-ml", "mlw-prod")
    spec = yaml.safe_load(call["file"])
    assert {key: spec[key] for key in ("name", "type", "account_name", "filesystem")} == {
        "name": "telemetry_capture", "type": "azure_data_lake_gen2", "account_name": "stcaptoken",
        "filesystem": "telemetry-capture"}
    assert "credentials" not in spec, "identity-based: the datastore holds no credentials"
    assert not Path(option(args, "--file")).exists(), "the hook removes the file it wrote"


def test_the_datastore_file_loads_as_an_adls_gen2_datastore_without_credentials(monkeypatch, tmp_path):
    from azure.ai.ml import load_datastore
    from azure.ai.ml.entities import AzureDataLakeGen2Datastore, NoneCredentialConfiguration

    [call] = datastore_calls(run_capture_hook(monkeypatch, tmp_path))
    spec = tmp_path / "datastore.yml"
    spec.write_text(call["file"])
    datastore = load_datastore(spec)
    assert isinstance(datastore, AzureDataLakeGen2Datastore)
    assert (datastore.name, datastore.account_name, datastore.filesystem) == (
        "telemetry_capture", "stcaptoken", "telemetry-capture")
    assert datastore.credentials is None or isinstance(datastore.credentials, NoneCredentialConfiguration)


def test_the_readers_get_storage_blob_data_reader_on_the_capture_account_and_the_app_does_not(monkeypatch, tmp_path):
    run = run_capture_hook(monkeypatch, tmp_path, FAKE_ROLE_ASSIGNMENTS="0",
                           TELEMETRY_CAPTURE_READER_PRINCIPAL_IDS="compute-a compute-b")
    readers = [option(call["args"], "--assignee-object-id") for call in run["calls"]
               if call["args"][:3] == ["role", "assignment", "create"]
               and option(call["args"], "--role") == BLOB_DATA_READER]
    assert readers == ["workspace-principal", "compute-a", "compute-b"]
    assert ("resource show --ids " + run["env"]["AZURE_ML_WORKSPACE_ID"]) in [
        " ".join(call["args"][:4]) for call in run["calls"]]
    for verb in ("list", "create"):
        scopes = {scope for role, scope in role_assignments(run, verb) if role == BLOB_DATA_READER}
        assert scopes == {CAPTURE_ACCOUNT_ID}, verb
    app_principal = run["env"]["AZURE_CONTROLPLANE_PRINCIPAL_ID"]
    assert not [call for call in run["calls"] if call["args"][:3] == ["role", "assignment", "create"]
                and option(call["args"], "--scope") == CAPTURE_ACCOUNT_ID
                and option(call["args"], "--assignee-object-id") == app_principal]


def test_a_second_run_updates_the_datastore_in_place_and_assigns_nothing_again(monkeypatch, tmp_path):
    run = run_capture_hook(monkeypatch, tmp_path, FAKE_ROLE_ASSIGNMENTS="1",
                           TELEMETRY_CAPTURE_READER_PRINCIPAL_IDS="compute-a")
    assert [call["args"][2] for call in datastore_calls(run)] == ["create"]  # create or update, never delete
    assert [role for role, _ in role_assignments(run, "list")].count(BLOB_DATA_READER) == 2
    assert role_assignments(run, "create") == []


def test_a_workspace_without_its_own_identity_is_reported_and_the_listed_readers_still_granted(monkeypatch, tmp_path):
    run = run_capture_hook(monkeypatch, tmp_path, FAKE_ROLE_ASSIGNMENTS="0", FAKE_WORKSPACE_PRINCIPAL="",
                           TELEMETRY_CAPTURE_READER_PRINCIPAL_IDS="compute-a")
    assert "has no system-assigned identity" in run["stdout"]
    assert [scope for role, scope in role_assignments(run, "create") if role == BLOB_DATA_READER] == [
        CAPTURE_ACCOUNT_ID]


@pytest.mark.parametrize("missing", ["AZURE_TELEMETRY_CAPTURE_ACCOUNT", "AZURE_ML_WORKSPACE_ID"])
def test_without_capture_or_a_workspace_the_hook_creates_no_datastore(monkeypatch, tmp_path, missing):
    # Capture switched off leaves the outputs empty; without a workspace there is nowhere to put a datastore.
    run = run_capture_hook(monkeypatch, tmp_path, FAKE_ROLE_ASSIGNMENTS="0", **{missing: ""})
    assert datastore_calls(run) == []
    assert not [role for role, _ in role_assignments(run, "list") if role == BLOB_DATA_READER]


def test_the_powershell_hook_does_the_same():
    script = HOOKS["windows"].read_text()
    assert f"$blobReader = '{BLOB_DATA_READER}'" in script
    assert "if ($env:AZURE_ML_WORKSPACE_ID -and $captureAccount)" in script
    assert ("Invoke-Az ml datastore create --file $datastore --subscription $mlSubscription "
            "--resource-group $mlGroup") in script
    for line in ("'name: telemetry_capture'", "'type: azure_data_lake_gen2'", '"account_name: $captureAccount"',
                 '"filesystem: $captureContainer"'):
        assert line in script
    assert not re.search(r"['\"]credentials:", script), "identity-based: the datastore holds no credentials"
    assert "resource show --ids $env:AZURE_ML_WORKSPACE_ID --query identity.principalId" in script
    assert "Split-List $env:TELEMETRY_CAPTURE_READER_PRINCIPAL_IDS" in script
    assert "Grant-Role $blobReader 'Storage Blob Data Reader' $captureAccountId $reader" in script
    # The datastore step comes after Split-List is defined (PowerShell defines functions as it runs).
    assert script.index("function Split-List") < script.index("Split-List $env:TELEMETRY_CAPTURE_READER_PRINCIPAL_IDS")


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_the_posix_hook_is_valid_syntax(shell):
    subprocess.run([shell, "-n", str(HOOKS["posix"])], check=True)


def test_the_deployment_guide_describes_capture():
    guide = (INFRA.parent / "docs" / "deploy.md").read_text()
    section = guide.split("## Telemetry capture\n")[1].split("\n## ")[0]
    for needle in ("telemetry_capture", "Storage Blob Data Reader", "TELEMETRY_CAPTURE_READER_PRINCIPAL_IDS",
                   "azd env set AZURE_TELEMETRY_CAPTURE false", "CONTROLPLANE_TELEMETRY_CAPTURE", "Standard",
                   "az role assignment create", "Cost"):
        assert needle in section, needle

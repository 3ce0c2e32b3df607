"""The infrastructure: Bicep that parses, passes checkov, sets every setting the code reads, names no public-cloud
host, and the azd hooks that connect what needs the deployed function's keys (run here against a fake ``az``).

pycep-parser and checkov live in their own virtualenv (``make .tools/checkov/bin/checkov``) so their pins never
touch the app's.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from controlplane import settings as names
from controlplane.domain import events as ev
from controlplane.handlers.actions import deterministic_name
from tests.support import ROOT, load_event
from tests.test_policy_settings import bicep_app_settings, sample_values

INFRA = ROOT / "infra"
TOOLS = ROOT / ".tools" / "checkov" / "bin"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))
HOOKS = {"posix": INFRA / "hooks" / "postdeploy.sh", "windows": INFRA / "hooks" / "postdeploy.ps1"}
SUBSCRIPTIONS = INFRA / "hooks" / "event-subscriptions"
SUBSCRIPTION_NAMES = ["on-registry-event-models", "on-registry-event-monitor-breaches", "on-registry-event-own-runs"]
EVENT_GRID_API = "2022-06-15"
# Host names of Azure's public cloud: other clouds (US Government, China) have their own, which the templates
# read from environment() or from the resources themselves.
PUBLIC_CLOUD_HOST = re.compile(
    r"[\w.-]*\.(?:windows\.net|azure\.com|azure\.net|microsoftonline\.com|microsoft\.com|azurewebsites\.net|"
    r"azurecr\.io|azure-api\.net|azureedge\.net|azurefd\.net|cloudapp\.net)\b", re.IGNORECASE)
# Settings the platform reads, not the code: the sample has them for Core Tools only.
LOCAL_ONLY = {"FUNCTIONS_WORKER_RUNTIME", "AzureWebJobsFeatureFlags"}
# Setting families the code owns: each one Bicep sets must be documented in the sample.
OWNED_PREFIXES = ("CONTROLPLANE_", "AZUREML_", "NOTIFY_", "EVENTGRID_", "APPROVAL_", "TELEMETRY_", "ALERTS_")

PARSE_ALL = """
import json, sys
from pathlib import Path
from pycep import BicepParser

parser = BicepParser()
result = {}
for path in sys.argv[1:]:
    try:
        parsed = parser.parse(file_path=Path(path))
        parameters = parsed.get("parameters") or {}
        result[path] = {"parameters": sorted(parameters), "error": None,
                        "required": sorted(name for name, value in parameters.items() if value.get("default") is None)}
    except Exception as error:  # report every file, not only the first broken one
        result[path] = {"parameters": [], "required": [], "error": f"{type(error).__name__}: {error}"}
print(json.dumps(result))
"""


def tool(name: str) -> Path:
    path = TOOLS / name
    if not path.exists():
        pytest.fail(f"{path.relative_to(ROOT)} is missing: run `make .tools/checkov/bin/checkov`")
    return path


@pytest.fixture(scope="module")
def parsed_bicep() -> dict[str, dict]:
    completed = subprocess.run([str(tool("python")), "-c", PARSE_ALL, *map(str, BICEP_FILES)],
                               capture_output=True, text=True, timeout=120, check=True)
    return {str(Path(path).relative_to(ROOT)): value for path, value in json.loads(completed.stdout).items()}


@pytest.fixture(scope="module")
def checkov_report() -> dict:
    completed = subprocess.run(
        # No --quiet: with it the JSON report leaves out the passed and skipped checks.
        [str(tool("checkov")), "--directory", str(INFRA), "--framework", "bicep", "--compact", "--skip-download",
         "--output", "json"],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    report = json.loads(completed.stdout)
    return report[0] if isinstance(report, list) else report


def test_there_is_bicep_to_check():
    assert {"main.bicep", "controlplane.bicep", "rbac.bicep", "registry-events.bicep"} <= {
        path.name for path in BICEP_FILES}


def test_every_bicep_file_parses(parsed_bicep):
    errors = {path: value["error"] for path, value in parsed_bicep.items() if value["error"]}
    assert not errors
    assert len(parsed_bicep) == len(BICEP_FILES)


def test_the_parameters_file_names_only_parameters_of_main_bicep(parsed_bicep):
    declared = set(parsed_bicep["infra/main.bicep"]["parameters"])
    passed = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert set(passed) <= declared
    assert {"environmentName", "location", "azureMlResourceGroup", "azureMlWorkspace", "approvalSigningKey"} <= set(
        passed)


def test_every_parameter_without_a_default_and_the_workspace_region_come_from_the_azd_environment(parsed_bicep):
    main = parsed_bicep["infra/main.bicep"]
    passed = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert {"environmentName", "location"} <= set(main["required"])
    assert set(main["required"]) <= set(passed), "azd would prompt for these on every new environment"
    assert passed["azureMlLocation"] == {"value": "${AZURE_ML_LOCATION}"}
    # azd leaves an unset variable empty: the Bicep falls back to the deployment's region.
    source = (INFRA / "main.bicep").read_text()
    assert "param azureMlLocation string = ''" in source
    assert "var mlLocation = empty(azureMlLocation) ? location : azureMlLocation" in source
    assert "location: mlLocation" in source


def test_checkov_finds_no_failed_check(checkov_report):
    summary = checkov_report["summary"]
    failed = [(check["check_id"], check["resource"], check["file_path"])
              for check in checkov_report["results"]["failed_checks"]]
    assert summary["failed"] == 0, failed
    assert summary["parsing_errors"] == 0 and summary["passed"] > 0


def test_every_skipped_check_says_why(checkov_report):
    for check in checkov_report["results"]["skipped_checks"]:
        reason = check["check_result"].get("suppress_comment", "")
        assert len(reason.strip()) > 20 and reason != "No comment provided", check["check_id"]


def settings_read_by_the_app(app_functions) -> set[str]:
    """Setting names in controlplane/settings.py and those the function bindings reference."""
    read = {value for key, value in vars(names).items() if key.isupper() and isinstance(value, str)
            and not key.startswith("DEFAULT") and key != "DISPATCHERS"}
    for function in app_functions.values():
        for binding in json.loads(function.get_function_json())["bindings"]:
            if "connection" in binding:
                read.add(binding["connection"])
            read.update(value.strip("%") for value in binding.values()
                        if isinstance(value, str) and value.startswith("%") and value.endswith("%"))
    return read


def test_bicep_sets_every_setting_the_code_and_the_bindings_read(app_functions):
    in_bicep = bicep_app_settings()
    read = settings_read_by_the_app(app_functions)
    assert {"TelemetryEventHub", "TELEMETRY_EVENTHUB_NAME", "TELEMETRY_CONSUMER_GROUP"} <= read
    missing = {name for name in read
               if name not in in_bicep and not any(setting.startswith(name + "__") for setting in in_bicep)}
    assert not missing, f"read by the app but not set by infra/app/controlplane.bicep: {sorted(missing)}"


@pytest.mark.parametrize("connection", ["AzureWebJobsStorage", "TelemetryEventHub"])
def test_connections_use_the_user_assigned_identity(connection):
    in_bicep = bicep_app_settings()
    assert {f"{connection}__credential", f"{connection}__clientId"} <= in_bicep
    source = (INFRA / "app" / "controlplane.bicep").read_text()
    assert f"{connection}__credential: 'managedidentity'" in source


def test_every_setting_the_code_owns_in_bicep_is_in_the_sample():
    owned = {name.split("__")[0] for name in bicep_app_settings() if name.startswith(OWNED_PREFIXES)}
    assert owned - set(sample_values()) == set()
    assert set(sample_values()) - LOCAL_ONLY - {"AzureWebJobsStorage", "TelemetryEventHub"} <= bicep_app_settings()


def test_every_role_is_a_named_and_commented_variable():
    for path in BICEP_FILES:
        for line in path.read_text().splitlines():
            for guid in re.findall(r"'([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})'", line):
                assert re.match(r"^\s*var \w+ = '" + guid + r"' // \w", line), f"{path.name}: {line.strip()}"
        for assignment in re.findall(r"roleAssignments@[^']+' = [^{]*\{\s*name: ([^\n]+)", path.read_text()):
            assert assignment.startswith("guid("), f"{path.name}: role assignment named {assignment}"


def test_the_dead_letter_container_exists_and_the_system_topic_may_write_to_it():
    app = (INFRA / "app" / "controlplane.bicep").read_text()
    events = (INFRA / "app" / "registry-events.bicep").read_text()
    assert "var deadLetterContainer = 'eventgrid-deadletter'" in app
    assert "topicType: 'Microsoft.MachineLearningServices.Workspaces'" in events
    assert "identity: { type: 'SystemAssigned' }" in events and "scope: storage::blobs::deadLetters" in events


def test_azure_yaml_runs_the_postdeploy_hook_in_both_shells():
    hooks = yaml.safe_load((ROOT / "azure.yaml").read_text())["hooks"]["postdeploy"]
    for shell, path in HOOKS.items():
        assert path.is_file()
        assert (ROOT / hooks[shell]["run"]).resolve() == path.resolve()
    assert hooks["posix"]["shell"] == "sh" and hooks["windows"]["shell"] == "pwsh"


@pytest.mark.parametrize("shell", sorted(HOOKS))
def test_the_hook_subscribes_on_registry_event_and_points_the_action_group_at_alerts(shell, app_functions):
    script = HOOKS[shell].read_text()
    [trigger] = json.loads(app_functions["on_registry_event"].get_function_json())["bindings"]
    assert trigger["type"] == "eventGridTrigger"
    assert "/runtime/webhooks/eventgrid?functionName=on_registry_event&code=" in script
    assert "eventgrid_extension" in script and "event-subscriptions" in script
    assert f"'{EVENT_GRID_API}'" in script or f"={EVENT_GRID_API}\n" in script
    assert "rest --method put" in script and "eventSubscriptions/" in script
    # One create call per subscription, nothing patched afterwards, no CLI defaults in between.
    assert "event-subscription create" not in script and "--method patch" not in script
    assert "{{endpointUrl}}" in script and "{{deadLetterAccountId}}" in script and "{{deadLetterContainer}}" in script

    alert_route = json.loads(app_functions["on_alert"].get_function_json())["bindings"][0]["route"]
    assert f"/api/{alert_route}?code=" in script and "--function-name on_alert" in script
    assert "monitor action-group create" in script and "usecommonalertschema" in script


def subscription_templates() -> dict[str, dict]:
    return {path.stem: json.loads(path.read_text()) for path in sorted(SUBSCRIPTIONS.glob("*.json"))}


def test_each_subscription_template_is_a_complete_arm_body():
    templates = subscription_templates()
    assert sorted(templates) == SUBSCRIPTION_NAMES
    for name, body in templates.items():
        properties = body["properties"]
        assert properties["destination"]["endpointType"] == "WebHook", name
        assert properties["destination"]["properties"]["endpointUrl"] == "{{endpointUrl}}", name
        assert properties["eventDeliverySchema"] == "EventGridSchema", name
        assert properties["retryPolicy"] == {"maxDeliveryAttempts": 30, "eventTimeToLiveInMinutes": 1440}, name
        assert properties["deadLetterWithResourceIdentity"] == {
            "identity": {"type": "SystemAssigned"},
            "deadLetterDestination": {"endpointType": "StorageBlob", "properties": {
                "resourceId": "{{deadLetterAccountId}}", "blobContainerName": "{{deadLetterContainer}}"}}}, name
        event_types = properties["filter"]["includedEventTypes"]
        assert event_types and set(event_types) <= {ev.ML_PREFIX + kind for kind in (
            "ModelRegistered", "ModelDeployed", "RunCompleted", "RunStatusChanged", "DatasetDriftDetected")}, name
        # Event Grid ANDs a subscription's advanced filters and ORs each one's values, 25 of either at most.
        advanced_filters = properties["filter"].get("advancedFilters", [])
        assert len(advanced_filters) + sum(len(item.get("values", [])) for item in advanced_filters) <= 25, name
        for advanced in advanced_filters:
            assert advanced["key"].startswith("data.") and advanced["operatorType"] in OPERATORS, name
            # Dots in a key are levels: a tag whose own name holds a dot (controlplane.*) cannot be addressed.
            tag = advanced["key"].partition("data.RunTags.")[2]
            assert "." not in tag, f"{name}: {advanced['key']}"


def test_the_monitor_breach_filter_uses_the_tag_the_parser_reads():
    [advanced] = subscription_templates()["on-registry-event-monitor-breaches"]["properties"]["filter"][
        "advancedFilters"]
    assert advanced == {"operatorType": "IsNotNull", "key": f"data.RunTags.{ev.MONITOR_BREACH_TAG}"}


def _field(envelope: dict, key: str):
    """The value an advanced filter's key names: dots separate levels; names match whatever their case (Azure
    ML documents its event data in PascalCase, events captured with the SDK show camelCase)."""
    value = envelope
    for part in key.split("."):
        if not isinstance(value, dict):
            return None
        value = next((item for name, item in value.items() if name.lower() == part.lower()), None)
    return value


OPERATORS = {
    "IsNotNull": lambda value, _: value is not None,
    "StringBeginsWith": lambda value, wanted: isinstance(value, str) and value.lower().startswith(
        tuple(item.lower() for item in wanted)),
    "StringIn": lambda value, wanted: isinstance(value, str) and value.lower() in {item.lower() for item in wanted},
}


def delivered_by(envelope: dict) -> list[str]:
    """The subscriptions whose filter lets this Event Grid event through."""
    names = []
    for name, body in subscription_templates().items():
        event_filter = body["properties"]["filter"]
        if envelope["eventType"].lower() not in {kind.lower() for kind in event_filter["includedEventTypes"]}:
            continue
        if all(OPERATORS[advanced["operatorType"]](_field(envelope, advanced["key"]), advanced.get("values"))
               for advanced in event_filter.get("advancedFilters", [])):
            names.append(name)
    return names


def _one(name: str) -> dict:
    events = load_event(name)
    return events[0] if isinstance(events, list) else events


def _own_run(kind: str) -> dict:
    """A run event of a retraining job the control plane submitted (handlers/actions.py names it)."""
    envelope = _one("eg_run_completed_docs.json" if kind == "RunCompleted" else "eg_run_status_changed_docs.json")
    job = deterministic_name("retrain", "churn", "ml:2a8d5f13-9c47-4e6b-b1d0-7f3e5a9c2b84")
    data = {**envelope["data"], "RunId": job, "RunType": "azureml.PipelineRun",
            "RunTags": {"controlplane.trigger": "model_monitor", "controlplane.idempotency_key": "ml:2a8d5f13"}}
    return {**envelope, "subject": f"experiments/{data['ExperimentId']}/runs/{job}", "data": data}


@pytest.mark.parametrize(("event", "subscription"), [
    ("eg_model_registered_docs.json", "on-registry-event-models"),
    ("eg_model_registered_sdk.json", "on-registry-event-models"),
    ("eg_model_deployed_docs.json", "on-registry-event-models"),
    ("eg_dataset_drift_detected.json", "on-registry-event-models"),
    ("eg_monitor_breach.json", "on-registry-event-monitor-breaches"),
    ("own RunStatusChanged", "on-registry-event-own-runs"),
    ("own RunCompleted", "on-registry-event-own-runs"),
])
def test_every_event_the_control_plane_acts_on_arrives_once(event, subscription):
    envelope = _own_run(event.split()[1]) if event.startswith("own ") else _one(event)
    assert delivered_by(envelope) == [subscription]


@pytest.mark.parametrize("event", ["eg_run_status_changed_docs.json", "eg_run_completed_docs.json"])
def test_the_workspace_s_other_runs_do_not_invoke_the_function(event):
    # A pipeline step of someone else's job, and a scheduled training run: recorded as no_action before, and
    # one invocation for every step of every job in the workspace.
    assert delivered_by(_one(event)) == []


FAKE_AZ = """#!{python}
import json, os, sys

args = sys.argv[1:]
call = {{"args": args}}
if "--body" in args:
    call["body"] = open(args[args.index("--body") + 1].removeprefix("@"), encoding="utf-8").read()
with open(os.environ["FAKE_AZ_CALLS"], "a", encoding="utf-8") as calls:
    calls.write(json.dumps(call) + "\\n")
line = " ".join(args)
topics = os.environ["FAKE_TOPIC_ID"].rsplit("/", 1)[0]
answers = {{
    "functionapp keys list": os.environ["FAKE_EVENTGRID_KEY"],
    "functionapp function keys list": "alert-key",
    "eventgrid system-topic show": topics + "/" + args[args.index("--name") + 1] if "--name" in args else "",
    # How many assignments of the role the identity already holds on the scope.
    "role assignment list": os.environ.get("FAKE_ROLE_ASSIGNMENTS", "1"),
}}
for command, answer in answers.items():
    if line.startswith(command):
        print(answer)
        sys.exit(0)
if line.startswith("rest --method get"):
    url = args[args.index("--url") + 1]
    if "provisioningState" in line:
        print("Succeeded")
    elif "/eventSubscriptions/on-registry-event?" in url:
        print("on-registry-event")  # the unfiltered subscription of an earlier deployment
    else:
        print("ERROR: (ResourceNotFound)", file=sys.stderr)
        sys.exit(3)
"""


def run_posix_hook(directory: Path, **overrides: str | None) -> dict:
    """The POSIX hook run against a fake az that records every call and the bodies it was sent; ``overrides``
    change the azd environment the hook sees (None removes a value)."""
    fake = directory / "az"
    fake.write_text(FAKE_AZ.format(python=sys.executable))
    fake.chmod(0o755)
    topic_id = ("/subscriptions/3f9c2b7e-5a41-4d8e-9b6a-2c7e1f04a9d3/resourceGroups/rg-cp/providers/"
                "Microsoft.EventGrid/systemTopics/evgst-aml-token")
    env = {
        "PATH": f"{directory}{os.pathsep}/usr/bin{os.pathsep}/bin", "HOME": str(directory),
        "FAKE_AZ_CALLS": str(directory / "calls.jsonl"), "FAKE_TOPIC_ID": topic_id,
        # Characters that mean something to JSON, sed and URLs: the hook must pass them through unchanged.
        "FAKE_EVENTGRID_KEY": 'k3y/with+slash==&pipe|back\\slash"quote',
        "AZURE_RESOURCE_GROUP": "rg-cp", "AZURE_FUNCTION_APP_NAME": "func-cp-token",
        "AZURE_FUNCTION_APP_HOSTNAME": "func-cp-token.example.net", "AZURE_ML_SYSTEM_TOPIC_NAME": "evgst-aml-token",
        "AZURE_ML_WORKSPACE_ID": "/subscriptions/3f9c/resourceGroups/rg-ml/providers/"
                                 "Microsoft.MachineLearningServices/workspaces/mlw-prod",
        "AZURE_CONTROLPLANE_PRINCIPAL_ID": "00000000-0000-0000-0000-000000000001",
        "AZURE_STORAGE_ACCOUNT_ID": "/subscriptions/3f9c/resourceGroups/rg-cp/providers/"
                                    "Microsoft.Storage/storageAccounts/stcptoken",
        "AZURE_ACTION_GROUP_NAME": "ag-cp-token", "AZURE_ENV_NAME": "cp-test",
    }
    env = {name: value for name, value in {**env, **overrides}.items() if value is not None}
    completed = subprocess.run(["sh", str(HOOKS["posix"])], cwd=ROOT, env=env, capture_output=True, text=True,
                               timeout=60)
    assert completed.returncode == 0, completed.stderr
    calls = [json.loads(line) for line in (directory / "calls.jsonl").read_text().splitlines()]
    return {"calls": calls, "env": env, "topic_id": topic_id, "stdout": completed.stdout}


@pytest.fixture(scope="module")
def hook_run(tmp_path_factory) -> dict:
    """The POSIX hook run once with the home workspace only."""
    return run_posix_hook(tmp_path_factory.mktemp("fake-az"))


def test_the_posix_hook_creates_each_subscription_in_one_arm_call_with_its_filter_and_dead_lettering(hook_run):
    env, topic_id = hook_run["env"], hook_run["topic_id"]
    puts = [call for call in hook_run["calls"] if call["args"][:3] == ["rest", "--method", "put"]]
    urls = [call["args"][call["args"].index("--url") + 1] for call in puts]
    assert urls == [f"{topic_id}/eventSubscriptions/{name}?api-version={EVENT_GRID_API}"
                    for name in SUBSCRIPTION_NAMES]
    endpoint = (f"https://{env['AZURE_FUNCTION_APP_HOSTNAME']}/runtime/webhooks/eventgrid"
                f"?functionName=on_registry_event&code={env['FAKE_EVENTGRID_KEY']}")
    for name, call in zip(SUBSCRIPTION_NAMES, puts, strict=True):
        sent = json.loads(call["body"])
        expected = subscription_templates()[name]
        expected["properties"]["destination"]["properties"]["endpointUrl"] = endpoint
        expected["properties"]["deadLetterWithResourceIdentity"]["deadLetterDestination"]["properties"] = {
            "resourceId": env["AZURE_STORAGE_ACCOUNT_ID"], "blobContainerName": "eventgrid-deadletter"}
        assert sent == expected, name
        assert "{{" not in call["body"]
    every = [" ".join(call["args"]) for call in hook_run["calls"]]
    assert not [line for line in every if "event-subscription create" in line or "--method patch" in line]


def test_the_posix_hook_waits_for_each_subscription_then_removes_the_unfiltered_one(hook_run):
    lines = [" ".join(call["args"]) for call in hook_run["calls"] if call["args"][0] == "rest"]
    for name in SUBSCRIPTION_NAMES:
        put = next(i for i, line in enumerate(lines) if "--method put" in line and f"/{name}?" in line)
        assert "properties.provisioningState" in lines[put + 1] and f"/{name}?" in lines[put + 1]
    delete = [line for line in lines if line.startswith("rest --method delete")]
    assert len(delete) == 1 and "/eventSubscriptions/on-registry-event?" in delete[0]
    assert lines.index(delete[0]) > max(i for i, line in enumerate(lines) if "--method put" in line)


def test_the_posix_hook_still_points_the_action_group_at_alerts(hook_run):
    [group] = [call["args"] for call in hook_run["calls"] if call["args"][:3] == ["monitor", "action-group", "create"]]
    assert "https://func-cp-token.example.net/api/alerts?code=alert-key" in group and "usecommonalertschema" in group


def test_the_powershell_hook_fills_the_same_templates_in_the_same_way():
    script = HOOKS["windows"].read_text()
    assert "Join-Path $PSScriptRoot 'event-subscriptions'" in script
    assert f"$eventGridApi = '{EVENT_GRID_API}'" in script
    assert "Invoke-Az rest --method put --url $url --body \"@$body\"" in script
    for placeholder in ("{{endpointUrl}}", "{{deadLetterAccountId}}", "{{deadLetterContainer}}"):
        assert f"'{placeholder}'" in script and "ConvertTo-JsonText" in script
    assert "Wait-Provisioned $name $url" in script and "eventSubscriptions/on-registry-event?" in script


def test_the_deployment_guide_names_every_subscription_and_its_filter():
    guide = (ROOT / "docs" / "deploy.md").read_text()
    for name in SUBSCRIPTION_NAMES:
        assert f"`{name}`" in guide
    assert f"data.RunTags.{ev.MONITOR_BREACH_TAG}" in guide and "AZURE_ML_LOCATION" in guide


def _without_schema_references(path: Path) -> str:
    """The file's text, less the JSON schema URLs editors read (they are documents, not endpoints)."""
    text = path.read_text()
    return re.sub(r'("\$schema"\s*:\s*"[^"]*"|# yaml-language-server: \$schema=\S+)', "", text)


def test_no_infra_file_names_a_public_cloud_host():
    files = [path for path in INFRA.rglob("*") if path.is_file()] + [ROOT / "azure.yaml"]
    assert any(path.suffix == ".bicep" for path in files) and any(path.suffix == ".ps1" for path in files)
    found = {str(path.relative_to(ROOT)): PUBLIC_CLOUD_HOST.findall(_without_schema_references(path))
             for path in files}
    assert not {path: hosts for path, hosts in found.items() if hosts}


def test_cloud_specific_endpoints_come_from_the_environment_or_the_resources():
    source = (INFRA / "app" / "controlplane.bicep").read_text()
    assert "ALERTS_AUTH_AUTHORITY: environment().authentication.loginEndpoint" in source
    assert "eventHubs.properties.serviceBusEndpoint" in source
    assert "TelemetryEventHub__fullyQualifiedNamespace: eventHubsHost" in source
    # The 'tables' store reads AzureWebJobsStorage__tableServiceUri before it derives a URL from the name.
    assert "AzureWebJobsStorage__tableServiceUri: storage.properties.primaryEndpoints.table" in source


def test_the_posix_hook_is_valid_sh():
    subprocess.run(["sh", "-n", str(HOOKS["posix"])], check=True)

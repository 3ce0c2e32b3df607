"""The infrastructure: Bicep that parses, passes checkov, sets every setting the code reads, and the azd hooks
that connect what needs the deployed function's keys.

pycep-parser and checkov live in their own virtualenv (``make .tools/checkov/bin/checkov``) so their pins never
touch the app's.
"""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from controlplane import settings as names
from tests.support import ROOT
from tests.test_policy_settings import bicep_app_settings, sample_values

INFRA = ROOT / "infra"
TOOLS = ROOT / ".tools" / "checkov" / "bin"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))
HOOKS = {"posix": INFRA / "hooks" / "postdeploy.sh", "windows": INFRA / "hooks" / "postdeploy.ps1"}
AZURE_ML_EVENTS = ["ModelRegistered", "ModelDeployed", "RunCompleted", "RunStatusChanged", "DatasetDriftDetected"]
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
        result[path] = {"parameters": sorted(parsed.get("parameters") or {}), "error": None}
    except Exception as error:  # report every file, not only the first broken one
        result[path] = {"parameters": [], "error": f"{type(error).__name__}: {error}"}
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
    assert "eventgrid_extension" in script and "system-topic event-subscription create" in script
    for event in AZURE_ML_EVENTS:
        assert f"Microsoft.MachineLearningServices.{event}" in script
    assert "--max-delivery-attempts 30" in script and "--event-ttl 1440" in script
    assert "deadLetterWithResourceIdentity" in script and "eventgrid-deadletter" in script

    alert_route = json.loads(app_functions["on_alert"].get_function_json())["bindings"][0]["route"]
    assert f"/api/{alert_route}?code=" in script and "--function-name on_alert" in script
    assert "monitor action-group create" in script and "usecommonalertschema" in script


def test_the_posix_hook_is_valid_sh():
    subprocess.run(["sh", "-n", str(HOOKS["posix"])], check=True)

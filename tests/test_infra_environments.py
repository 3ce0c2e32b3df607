"""The MLOps v2 topology in infra: further Azure ML workspaces (dev, staging, ...) beside the home (production)
one, each with its own Event Grid system topic, and an optional Azure ML registry; the hooks give the app's
identity its roles on all of them and subscribe on_registry_event to every topic.

The Bicep is parsed with pycep (the same parser checkov uses, see tests/test_infra.py); the POSIX hook runs
against the fake ``az`` of tests/test_infra.py.
"""
from __future__ import annotations

import json
import re
import subprocess

import pytest
import yaml

from tests.test_infra import (
    BICEP_FILES,
    EVENT_GRID_API,
    HOOKS,
    INFRA,
    SUBSCRIPTION_NAMES,
    run_posix_hook,
    subscription_templates,
    tool,
)

DATA_SCIENTIST = "f6c7c914-8db3-469d-8ca1-694a8f32e121"
REGISTRY_USER = "1823dd4f-9b8c-4ab6-ab4e-7397a3684615"
ML = "/subscriptions/3f9c/resourceGroups/{rg}/providers/Microsoft.MachineLearningServices/{kind}/{name}"
DEV = ML.format(rg="rg-ml-dev", kind="workspaces", name="mlw-dev")
STAGING = ML.format(rg="rg-ml-staging", kind="workspaces", name="mlw-staging")
PROD = ML.format(rg="rg-ml", kind="workspaces", name="mlw-prod")
REGISTRY = ML.format(rg="rg-ml", kind="registries", name="mlops-registry")
ENVIRONMENTS = {
    "AZURE_ML_ENVIRONMENT_NAMES": "dev staging",
    "AZURE_ML_ENVIRONMENT_TOPIC_NAMES": "evgst-aml-dev-token evgst-aml-staging-token",
    "AZURE_ML_ENVIRONMENT_WORKSPACE_IDS": f"{DEV} {STAGING}",
    "AZURE_ML_REGISTRY_ID": REGISTRY,
}

PARSE_MAIN = """
import json, sys
from pathlib import Path
from pycep import BicepParser

print(json.dumps(BicepParser().parse(file_path=Path(sys.argv[1])), default=str))
"""


def parse(path) -> dict:
    completed = subprocess.run([str(tool("python")), "-c", PARSE_MAIN, str(path)],
                               capture_output=True, text=True, timeout=120, check=True)
    return json.loads(completed.stdout)


@pytest.fixture(scope="module")
def main() -> dict:
    return parse(INFRA / "main.bicep")


def loop_over(value: dict) -> str:
    """The array a Bicep for-expression iterates, checking it has no `if` that would skip entries."""
    assert value["condition"] is None, "every entry must give one item"
    assert value["loop_type"]["type"] == "array"
    return value["loop_type"]["detail"]["array_name"]


def accessor(value: dict) -> tuple[str, str]:
    operands = value["operator"]["operands"]
    assert value["operator"]["type"] == "property_accessor"
    return operands["operand_1"], operands["operand_2"]


def test_main_bicep_takes_the_environments_and_the_registry_with_empty_defaults(main):
    parameters = main["parameters"]
    assert parameters["azureMlEnvironments"]["type"] == "array" and parameters["azureMlEnvironments"]["default"] == []
    for name in ("azureMlRegistry", "azureMlRegistryResourceGroup"):
        assert parameters[name]["type"] == "string" and parameters[name]["default"] == "", name


def test_the_parameters_file_reads_them_from_the_azd_environment():
    passed = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    # azd (1.23.4 and later) parses the value of an array parameter as JSON; unset or empty, the default applies.
    assert passed["azureMlEnvironments"] == {"value": "${AZURE_ML_ENVIRONMENTS=[]}"}
    assert passed["azureMlRegistry"] == {"value": "${AZURE_ML_REGISTRY}"}
    assert passed["azureMlRegistryResourceGroup"] == {"value": "${AZURE_ML_REGISTRY_RESOURCE_GROUP}"}


def test_every_environment_entry_gets_one_system_topic_of_its_own(main):
    variables = main["variables"]
    # azureMlEnvironments -> mlEnvironmentsGiven (defaults) -> mlEnvironments -> one module each, none skipped.
    assert loop_over(variables["mlEnvironmentsGiven"]["value"]) == "azureMlEnvironments"
    assert loop_over(variables["mlEnvironments"]["value"]) == "mlEnvironmentsGiven"
    module = main["modules"]["environmentEvents"]
    assert module["detail"]["path"] == "app/registry-events.bicep"
    assert loop_over(module["config"]) == "mlEnvironments"
    config = module["config"]["config"]
    assert config["scope"] == "rg" and "${environment.name}" in config["name"]
    params = config["params"]
    assert accessor(params["name"]) == ("environment", "topicName")
    assert accessor(params["workspaceId"]) == ("environment", "workspaceId")
    assert accessor(params["location"]) == ("environment", "location")
    # The same dead-letter container as the home workspace's topic.
    home = main["modules"]["registryEvents"]["config"]["config"]["params"]
    for name in ("storageAccountName", "deadLetterContainerName", "resourceToken", "tags"):
        assert params[name] == home[name], name
    # Distinct names: the environment's name and the deployment's token; the home topic keeps its own name.
    entry = variables["mlEnvironments"]["value"]["config"]
    assert entry["topicName"] == "evgst-aml-${environment.name}-${resourceToken}"
    assert "name" not in home


def test_an_entry_may_leave_out_its_resource_group_and_region():
    source = (INFRA / "main.bicep").read_text()
    given = "union({ resourceGroup: '', location: '' }, environment)"
    assert given in source
    assert "location: empty(environment.location) ? mlLocation : environment.location" in source
    assert "empty(environment.resourceGroup) ? mlResourceGroup : environment.resourceGroup" in source
    assert "'Microsoft.MachineLearningServices/workspaces', environment.workspace)" in source


def test_the_system_topic_module_names_its_topic_and_defaults_to_the_home_name():
    source = (INFRA / "app" / "registry-events.bicep").read_text()
    assert "param name string = 'evgst-aml-${resourceToken}'" in source
    assert re.search(r"resource topic 'Microsoft\.EventGrid/systemTopics@[^']+' = \{\s*name: name\n", source)


@pytest.mark.parametrize(("output", "items"), [
    ("AZURE_ML_ENVIRONMENT_NAMES", "mlEnvironmentNames"),
    ("AZURE_ML_ENVIRONMENT_TOPIC_NAMES", "mlEnvironmentTopicNames"),
    ("AZURE_ML_ENVIRONMENT_WORKSPACE_IDS", "mlEnvironmentWorkspaceIds"),
])
def test_the_hooks_get_every_environment_as_a_space_separated_output(main, output, items):
    assert main["outputs"][output]["type"] == "string"
    assert main["outputs"][output]["value"] == {"function": {"type": "join", "parameters": {
        "input_array": items, "delimiter": " "}}}
    assert loop_over(main["variables"][items]["value"]) == "mlEnvironments"


def test_the_registry_is_an_output_and_nothing_is_deployed_into_its_resource_group(main):
    assert main["outputs"]["AZURE_ML_REGISTRY_ID"]["value"] == "mlRegistryId"
    source = (INFRA / "main.bicep").read_text()
    assert "'Microsoft.MachineLearningServices/registries', azureMlRegistry)" in source
    assert "empty(azureMlRegistryResourceGroup) ? mlResourceGroup : azureMlRegistryResourceGroup" in source
    # Every module runs in the control plane's own group: `azd down` never touches the ML resource groups.
    for name, module in main["modules"].items():
        config = module["config"].get("config", module["config"])  # a loop or a condition wraps it
        assert config["scope"] == "rg", name
    assert not [path.name for path in BICEP_FILES if "registries" in path.read_text() and path.name != "main.bicep"]


def puts_by_topic(run: dict) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for call in run["calls"]:
        if call["args"][:3] == ["rest", "--method", "put"]:
            url = call["args"][call["args"].index("--url") + 1]
            topic = re.search(r"/systemTopics/([^/]+)/eventSubscriptions/", url)[1]
            found.setdefault(topic, []).append({"url": url, "body": json.loads(call["body"])})
    return found


def role_assignments(run: dict, verb: str) -> list[tuple[str, str]]:
    return [(call["args"][call["args"].index("--role") + 1], call["args"][call["args"].index("--scope") + 1])
            for call in run["calls"] if call["args"][:3] == ["role", "assignment", verb]]


@pytest.fixture(scope="module")
def three_workspaces(tmp_path_factory) -> dict:
    """The hook for prod (home), dev and staging and a registry, with no role assigned yet."""
    return run_posix_hook(tmp_path_factory.mktemp("fake-az-v2"), FAKE_ROLE_ASSIGNMENTS="0", **ENVIRONMENTS)


def test_the_hook_subscribes_every_environment_s_topic_like_the_home_one(three_workspaces):
    found = puts_by_topic(three_workspaces)
    assert list(found) == ["evgst-aml-token", "evgst-aml-dev-token", "evgst-aml-staging-token"]
    home = found["evgst-aml-token"]
    for topic, puts in found.items():
        assert [put["url"].rsplit("/", 1)[1] for put in puts] == [
            f"{name}?api-version={EVENT_GRID_API}" for name in SUBSCRIPTION_NAMES], topic
        # Same webhook, filters, retry policy and dead-lettering (through the topic's identity) on every topic.
        assert [put["body"] for put in puts] == [put["body"] for put in home], topic
    templates = subscription_templates()
    for name, put in zip(SUBSCRIPTION_NAMES, found["evgst-aml-dev-token"], strict=True):
        properties = put["body"]["properties"]
        assert properties["filter"] == templates[name]["properties"]["filter"]
        assert properties["retryPolicy"] == {"maxDeliveryAttempts": 30, "eventTimeToLiveInMinutes": 1440}
        assert properties["deadLetterWithResourceIdentity"]["identity"] == {"type": "SystemAssigned"}
        assert properties["deadLetterWithResourceIdentity"]["deadLetterDestination"]["properties"] == {
            "resourceId": three_workspaces["env"]["AZURE_STORAGE_ACCOUNT_ID"],
            "blobContainerName": "eventgrid-deadletter"}


def test_the_hook_waits_for_every_subscription_and_removes_the_legacy_one_on_the_home_topic_only(three_workspaces):
    lines = [" ".join(call["args"]) for call in three_workspaces["calls"] if call["args"][0] == "rest"]
    puts = [i for i, line in enumerate(lines) if "--method put" in line]
    assert len(puts) == 3 * len(SUBSCRIPTION_NAMES)
    for i in puts:
        url = lines[i].split("--url ")[1].split(" ")[0]
        assert "properties.provisioningState" in lines[i + 1] and url in lines[i + 1]
    legacy = [line for line in lines if "/eventSubscriptions/on-registry-event?" in line]
    assert legacy and all("/systemTopics/evgst-aml-token/" in line for line in legacy)


def test_the_hook_gives_the_identity_its_role_on_every_workspace_and_on_the_registry(three_workspaces):
    expected = [(DATA_SCIENTIST, PROD), (DATA_SCIENTIST, DEV), (DATA_SCIENTIST, STAGING), (REGISTRY_USER, REGISTRY)]
    assert role_assignments(three_workspaces, "list") == expected
    assert role_assignments(three_workspaces, "create") == expected
    principal = three_workspaces["env"]["AZURE_CONTROLPLANE_PRINCIPAL_ID"]
    for call in three_workspaces["calls"]:
        if call["args"][:3] == ["role", "assignment", "create"]:
            args = call["args"]
            assert args[args.index("--assignee-object-id") + 1] == principal
            assert args[args.index("--assignee-principal-type") + 1] == "ServicePrincipal"


def test_the_hook_assigns_nothing_the_identity_already_holds(tmp_path):
    run = run_posix_hook(tmp_path, FAKE_ROLE_ASSIGNMENTS="1", **ENVIRONMENTS)
    assert len(role_assignments(run, "list")) == 4
    assert role_assignments(run, "create") == []


def test_environments_without_a_home_workspace_or_registry_are_subscribed_too(tmp_path):
    run = run_posix_hook(tmp_path, FAKE_ROLE_ASSIGNMENTS="0", AZURE_ML_SYSTEM_TOPIC_NAME=None,
                         AZURE_ML_WORKSPACE_ID=None, AZURE_ML_ENVIRONMENT_TOPIC_NAMES="evgst-aml-dev-token",
                         AZURE_ML_ENVIRONMENT_WORKSPACE_IDS=DEV)
    assert list(puts_by_topic(run)) == ["evgst-aml-dev-token"]
    assert role_assignments(run, "create") == [(DATA_SCIENTIST, DEV)]
    assert not [call for call in run["calls"] if "on-registry-event?" in " ".join(call["args"])]


def test_the_powershell_hook_does_the_same_for_every_environment_and_the_registry():
    script = HOOKS["windows"].read_text()
    assert f"$dataScientist = '{DATA_SCIENTIST}'" in script and f"$registryUser = '{REGISTRY_USER}'" in script
    assert "Grant-Role $registryUser 'AzureML Registry User' $env:AZURE_ML_REGISTRY_ID" in script
    assert "Grant-Role $dataScientist 'AzureML Data Scientist' $env:AZURE_ML_WORKSPACE_ID" in script
    assert re.search(r"foreach \(\$environmentWorkspaceId in @\(Split-List \$env:AZURE_ML_ENVIRONMENT_WORKSPACE_IDS\)\)"
                     r" \{\s*Grant-Role \$dataScientist 'AzureML Data Scientist' \$environmentWorkspaceId", script)
    assert "$environmentTopics = @(Split-List $env:AZURE_ML_ENVIRONMENT_TOPIC_NAMES)" in script
    assert re.search(r"foreach \(\$environmentTopic in \$environmentTopics\) \{\s*"
                     r"Add-Subscriptions \$environmentTopic \$placeholders", script)
    assert "$topicId = Add-Subscriptions $topic $placeholders" in script
    # Checks before it creates, like the POSIX hook.
    assert "role assignment list --assignee $principal --role $Role --scope $Scope" in script
    assert "if (\"$existing\".Trim() -eq '0')" in script


def test_the_posix_hook_names_the_same_roles_and_outputs():
    script = HOOKS["posix"].read_text()
    assert f"data_scientist={DATA_SCIENTIST}" in script and f"registry_user={REGISTRY_USER}" in script
    assert 'grant "$registry_user" "AzureML Registry User" "$registry_id"' in script
    assert "for environment_workspace_id in ${AZURE_ML_ENVIRONMENT_WORKSPACE_IDS:-}; do" in script
    assert "for environment_topic in $environment_topics; do" in script


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_the_posix_hook_is_valid_syntax(shell):
    subprocess.run([shell, "-n", str(HOOKS["posix"])], check=True)


# Ways to a shared key or a connection string: the managed identity is the only credential.
SHARED_KEYS = re.compile(
    r"listKeys\(|listConnectionStrings|storage account keys|--account-key|connection-string|AccountKey=|"
    r"eventgrid (?:system-)?topic key|allowSharedKeyAccess: true|disableLocalAuth: false|"
    r"ml (?:workspace|registry) .*keys|--sas-token", re.IGNORECASE)


def test_no_infra_file_reaches_for_a_shared_key():
    files = [*BICEP_FILES, *HOOKS.values(), INFRA / "main.parameters.json",
             *(INFRA / "hooks" / "event-subscriptions").glob("*.json")]
    found = {path.name: SHARED_KEYS.findall(path.read_text()) for path in files}
    assert not {name: hits for name, hits in found.items() if hits}
    # The only keys the hooks read are the deployed function's own (its webhook URLs carry them).
    for path in HOOKS.values():
        for line in path.read_text().splitlines():
            if "keys list" in line:
                assert "functionapp keys list" in line or "functionapp function keys list" in line, line


def test_the_deployment_guide_shows_a_dev_staging_prod_deployment_and_its_policy():
    guide = (INFRA.parent / "docs" / "deploy.md").read_text()
    section = guide.split("## Three workspaces and a registry (MLOps v2)\n")[1].split("\n## ")[0]
    commands = re.search(r"```bash\n(.*?)```", section, re.DOTALL)[1]
    environments = re.search(r"azd env set AZURE_ML_ENVIRONMENTS '([^']+)'", commands)[1]
    dev, staging = json.loads(environments)
    assert {"azd env set AZURE_ML_WORKSPACE mlw-prod", "azd env set AZURE_ML_REGISTRY mlops-registry"} <= {
        line.split("#")[0].strip() for line in commands.splitlines()}
    policy = yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.DOTALL)[1])
    assert policy["registry"] == "mlops-registry"
    assert policy["environments"] == {
        dev["name"]: {"workspace": dev["workspace"], "resource_group": dev["resourceGroup"]},
        staging["name"]: {"workspace": staging["workspace"], "resource_group": staging["resourceGroup"]},
        "prod": {"workspace": "mlw-prod", "resource_group": "rg-ml-prod"}}
    for role in ("AzureML Data Scientist", "AzureML Registry User"):
        assert role in section
    assert "evgst-aml-dev-<token>" in section and "on_registry_event" in section

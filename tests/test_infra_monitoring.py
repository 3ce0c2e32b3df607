"""The control plane's own health in Azure (infra/app/monitoring.bicep): the platform team's action group, the four
alert rules, the workbook, checked against the metric table in docs/operations.md, which in turn must list exactly
the instruments the code creates. So the code, the doc, the alerts and the workbook cannot drift apart.

The Bicep is read with pycep-parser from the checkov virtualenv, as tests/test_infra.py does.
"""
from __future__ import annotations

import contextlib
import io
import itertools
import json
import re
import subprocess

import pytest

from controlplane.ports import telemetry
from tests.support import ROOT
from tests.test_infra import HOOKS, INFRA, parsed_bicep, tool  # noqa: F401  (parsed_bicep is a fixture)

MONITORING = INFRA / "app" / "monitoring.bicep"
WORKBOOK = INFRA / "app" / "workbook.json"
OPERATIONS = ROOT / "docs" / "operations.md"
METRIC = re.compile(r"controlplane\.[a-z_]+(?:\.[a-z_]+)*")
# customDimensions.<attribute> compared with a value, in a KQL filter.
FILTER = re.compile(r'customDimensions\.(\w+)\)?\s*==\s*"(\w+)"')
GROUPED = re.compile(r"customDimensions\.(\w+)")

# What each rule must say: docs/operations.md gives the same thresholds and windows in words.
ALERTS = {
    "dead-letters": {"metric": "controlplane.dispatch.dead_letters", "filter": {}, "dimensions": ["operation"],
                     "windowSize": "PT15M", "timeAggregation": "Total", "operator": "GreaterThan", "threshold": 0},
    "no-successful-sweep": {"metric": "controlplane.sweeps", "filter": {"result": "ok"}, "dimensions": [],
                            "windowSize": "PT10M", "timeAggregation": "Count", "operator": "LessThan", "threshold": 1},
    "outbox-oldest-due": {"metric": "controlplane.outbox.oldest_due_age", "filter": {}, "dimensions": [],
                          "windowSize": "PT15M", "timeAggregation": "Maximum", "operator": "GreaterThan",
                          "threshold": 1800},
    "function-failures": {"metric": None, "filter": {}, "dimensions": ["operation_Name"], "windowSize": "PT15M",
                          "timeAggregation": "Count", "operator": "GreaterThan", "threshold": 0},
}

DUMP = """
import json, sys
from pathlib import Path
from pycep import BicepParser

print(json.dumps(BicepParser().parse(file_path=Path(sys.argv[1])), default=str))
"""


@pytest.fixture(scope="module")
def monitoring() -> dict:
    completed = subprocess.run([str(tool("python")), "-c", DUMP, str(MONITORING)],
                               capture_output=True, text=True, timeout=120, check=True)
    return json.loads(completed.stdout)


def _accessor(value) -> tuple[str, str] | None:
    operator = value.get("operator", {}) if isinstance(value, dict) else {}
    if operator.get("type") == "property_accessor":
        return operator["operands"]["operand_1"], operator["operands"]["operand_2"]
    return None


def _resolve(value, item: dict):
    """A loop body with ``rule.<field>`` replaced by that rule's field and ``empty(x) ? a : b`` decided."""
    if isinstance(value, list):
        return [_resolve(element, item) for element in value]
    if not isinstance(value, dict):
        return value
    accessor = _accessor(value)
    if accessor and accessor[0] == "rule":
        return item[accessor[1]]
    operator = value.get("operator", {})
    if operator.get("type") == "conditional" and operator["operands"]["condition"]["function"]["type"] == "empty":
        tested = _resolve(operator["operands"]["condition"]["function"]["parameters"]["item_to_test"], item)
        branch = "true_value" if tested in ("", [], {}) else "false_value"
        return _resolve(operator["operands"][branch], item)
    return {key: _resolve(element, item) for key, element in value.items()}


@pytest.fixture(scope="module")
def rules(monitoring) -> dict[str, dict]:
    """Each alert rule as deployed: its name suffix mapped to its properties."""
    resource = monitoring["resources"]["alerts"]
    assert resource["type"] == "Microsoft.Insights/scheduledQueryRules"
    loop = resource["config"]["loop_type"]["detail"]
    assert loop == {"item_name": "rule", "array_name": "rules"}
    body = resource["config"]["config"]
    assert body["name"] == "alert-cp-${rule.name}-${resourceToken}"
    return {item["name"]: _resolve(body["properties"], item)
            for item in monitoring["variables"][loop["array_name"]]["value"]}


def documented_metrics() -> dict[str, dict]:
    """docs/operations.md's metric table: name -> kind, unit and {attribute: [values]}."""
    rows = {}
    lines = OPERATIONS.read_text().splitlines()
    start = lines.index("| metric | kind | unit | attributes | meaning |")
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        name, kind, unit, attributes, _meaning = [cell.strip() for cell in line.strip("|").split("|")]
        parsed = {}
        # "`state`: `pending`, `dead_lettered`; `operation` (the task kind)": each attribute and its values.
        for part in [] if attributes == "-" else attributes.split(";"):
            attribute = re.match(r"\s*`(\w+)`", part)
            assert attribute, line
            parsed[attribute.group(1)] = re.findall(r"`(\w+)`", part.partition(":")[2])
        rows[name.strip("`")] = {"kind": kind.split()[0], "unit": unit.strip("`"), "attributes": parsed}
    return rows


class RecordingMeter:
    """Stands in for the OpenTelemetry meter: records every instrument the code creates."""

    def __init__(self):
        self.created: dict[str, tuple[str, str]] = {}

    def __getattr__(self, method: str):
        kind = method.removeprefix("create_")

        def create(name, unit="", description="", **_):
            self.created[name] = (kind, unit)

        return create


def test_the_metric_table_lists_exactly_the_instruments_the_code_creates(monkeypatch):
    meter = RecordingMeter()
    monkeypatch.setattr(telemetry.metrics, "get_meter", lambda name, *args, **kwargs: meter)
    telemetry.instruments.__wrapped__()
    documented = {name: (row["kind"], row["unit"]) for name, row in documented_metrics().items()}
    assert len(meter.created) == 15
    assert documented == meter.created


def test_main_bicep_deploys_the_monitoring_module_with_an_optional_ops_email(parsed_bicep):  # noqa: F811
    assert parsed_bicep["infra/app/monitoring.bicep"]["error"] is None
    main = parsed_bicep["infra/main.bicep"]
    assert "opsEmail" in main["parameters"] and "opsEmail" not in main["required"]
    source = (INFRA / "main.bicep").read_text()
    assert "module monitoring 'app/monitoring.bicep'" in source
    assert "insightsName: app.outputs.insightsName" in source and "opsEmail: opsEmail" in source
    passed = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert passed["opsEmail"] == {"value": "${AZURE_OPS_EMAIL}"}


def test_the_rules_query_the_app_s_application_insights(monitoring, rules):
    insights = monitoring["resources"]["insights"]
    assert insights["existing"] and insights["type"] == "Microsoft.Insights/components"
    assert "output insightsName string = insights.name" in (INFRA / "app" / "controlplane.bicep").read_text()
    for name, properties in rules.items():
        assert properties["scopes"] == [{"operator": {"type": "property_accessor", "operands": {
            "operand_1": "insights", "operand_2": "id"}}}], name
        assert properties["enabled"] is True and properties["autoMitigate"] is True, name
        assert properties["evaluationFrequency"] == "PT5M", name


@pytest.mark.parametrize("name", sorted(ALERTS))
def test_each_alert_has_its_threshold_window_and_filter(rules, name):
    expected = ALERTS[name]
    properties = rules[name]
    [criterion] = properties["criteria"]["allOf"]
    assert properties["windowSize"] == expected["windowSize"]
    assert (criterion["timeAggregation"], criterion["operator"], criterion["threshold"]) == (
        expected["timeAggregation"], expected["operator"], expected["threshold"])
    query = criterion["query"]
    if expected["metric"]:
        assert f'where name == "{expected["metric"]}"' in query
        assert METRIC.findall(query) == [expected["metric"]]
    else:
        assert query.lstrip().startswith("requests") and "success == false" in query
    assert dict(FILTER.findall(query)) == expected["filter"]
    if criterion["timeAggregation"] == "Count":
        # Counting rows: an empty result is a count of 0, which is how "no successful sweep" fires at all.
        assert criterion["metricMeasureColumn"] is None
    else:
        assert re.search(rf"\b{criterion['metricMeasureColumn']} = value(Sum)?\n", query)
    # One alert per value of each dimension (per task kind, per function), each column the query projects.
    assert [dimension["name"] for dimension in criterion["dimensions"]] == expected["dimensions"]
    for dimension in criterion["dimensions"]:
        assert dimension["operator"] == "Include" and dimension["values"] == ["*"]
        assert re.search(rf"project timestamp, .*\b{dimension['name']}\b", query)


def test_every_alert_goes_to_the_platform_action_group_only(rules):
    assert sorted(rules) == sorted(ALERTS)
    for name, properties in rules.items():
        assert properties["actions"] == {"actionGroups": [{"operator": {"type": "property_accessor", "operands": {
            "operand_1": "opsGroup", "operand_2": "id"}}}]}, name


def test_the_platform_action_group_never_calls_the_control_plane(monitoring):
    group = monitoring["resources"]["opsGroup"]
    assert group["type"] == "Microsoft.Insights/actionGroups" and not group["existing"]
    properties = group["config"]["properties"]
    # People only: no webhook, function, logic app, runbook or other receiver that could reach /api/alerts.
    assert {key for key in properties if key.endswith("Receivers")} == {"emailReceivers"}
    receivers = properties["emailReceivers"]["operator"]["operands"]
    assert receivers["true_value"] == [] and [receiver["emailAddress"] for receiver in receivers["false_value"]] == [
        "opsEmail"]
    # Not the group the postdeploy hook points at /api/alerts (AZURE_ACTION_GROUP_NAME, ag-cp-<token>).
    assert group["config"]["name"] == "ag-cp-ops-${resourceToken}"
    assert "output AZURE_ACTION_GROUP_NAME string = 'ag-cp-${resourceToken}'" in (INFRA / "main.bicep").read_text()
    code = "\n".join(line.split("//")[0] for line in MONITORING.read_text().splitlines())
    for forbidden in ("api/alerts", "webhook", "Webhook", "functionApp", "defaultHostName", "serviceUri"):
        assert forbidden not in code
    for script in HOOKS.values():
        assert "AZURE_OPS_ACTION_GROUP_NAME" not in script.read_text() and "ag-cp-ops" not in script.read_text()


def workbook() -> dict:
    return json.loads(WORKBOOK.read_text())


def workbook_queries() -> dict[str, str]:
    queries = {item["name"]: item["content"]["query"] for item in workbook()["items"] if item["type"] == 3}
    assert queries
    return queries


def test_the_workbook_is_a_valid_workbook_on_the_component(monitoring):
    document = workbook()
    assert document["version"] == "Notebook/1.0"
    [parameters] = [item for item in document["items"] if item["type"] == 9]
    assert [parameter["name"] for parameter in parameters["content"]["parameters"]] == ["TimeRange"]
    names = [item["name"] for item in document["items"]]
    assert len(names) == len(set(names))
    for item in document["items"]:
        if item["type"] == 3:
            content = item["content"]
            assert content["version"] == "KqlItem/1.0" and content["queryType"] == 0, item["name"]
            assert content["resourceType"] == "microsoft.insights/components", item["name"]
            assert content["timeContextFromParameter"] == "TimeRange", item["name"]
    # The Bicep puts the component's id where the file holds the placeholder.
    assert document["fallbackResourceIds"] == ["__APPLICATION_INSIGHTS_ID__"]
    resource = monitoring["resources"]["workbook"]
    assert resource["type"] == "Microsoft.Insights/workbooks" and resource["config"]["kind"] == "shared"
    replaced = resource["config"]["properties"]["serializedData"]["function"]
    assert replaced["type"] == "replace" and replaced["parameters"]["old_string"] == "__APPLICATION_INSIGHTS_ID__"
    assert replaced["parameters"]["original_string"]["function"]["parameters"]["file_path"] == WORKBOOK.name


def test_the_workbook_shows_every_documented_metric():
    shown = {metric for query in workbook_queries().values() for metric in METRIC.findall(query)}
    assert shown == set(documented_metrics())


def test_workbook_and_alerts_use_only_documented_metrics_attributes_and_values(rules):
    documented = documented_metrics()
    queries = dict(workbook_queries())
    queries.update({f"alert {name}": properties["criteria"]["allOf"][0]["query"] for name, properties in rules.items()})
    for name, query in queries.items():
        metrics = METRIC.findall(query)
        assert len(metrics) <= 1, name
        attributes = documented[metrics[0]]["attributes"] if metrics else {}
        assert set(metrics) <= set(documented), name
        assert set(GROUPED.findall(query)) <= set(attributes), name
        for attribute, value in FILTER.findall(query):
            assert value in attributes[attribute], (name, attribute, value)


def test_the_operations_doc_describes_each_alert_and_the_health_endpoint():
    doc = OPERATIONS.read_text()
    for name in ALERTS:
        assert f"`alert-cp-{name}-<token>`" in doc
    assert "/api/health" in doc and "503" in doc and "CONTROLPLANE_SWEEP_STALE_MINUTES" in doc
    assert "CONTROLPLANE_TELEMETRY_EXPORTER=console" in doc and "APPLICATIONINSIGHTS_CONNECTION_STRING" in doc
    assert "[docs/operations.md](docs/operations.md)" in (ROOT / "README.md").read_text()


def _help(path: list[str]) -> str:
    """``python -m controlplane <path> --help``: argparse exits 0 only when every word of the path is a command."""
    from controlplane.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        main([*path, "--help"])
    assert exit_.value.code == 0, path
    return out.getvalue()


def test_every_cli_command_in_the_runbooks_exists():
    commands = {command.strip() for command in re.findall(r"python -m controlplane ([^`\n]+)", OPERATIONS.read_text())}
    assert len(commands) >= 5
    for command in commands:
        words = [word for word in command.split() if not word.startswith("<")]
        path = list(itertools.takewhile(lambda word: not word.startswith("-"), words))[:2]
        helptext = _help(path)
        for option in (word.split("=")[0] for word in words if word.startswith("--")):
            assert option in helptext, (command, option)


def _anchors(path) -> set[str]:
    """The section anchors of a Markdown file, as GitHub makes them from its headings."""
    headings = re.findall(r"^#+ (.+)$", path.read_text(), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def test_each_alert_links_to_its_runbook_and_the_doc_s_links_reach_their_sections(rules):
    for name, properties in rules.items():
        [anchor] = re.findall(r"docs/operations\.md#([\w-]+)", properties["description"])
        assert anchor in _anchors(OPERATIONS), name
    links = re.findall(r"\]\(([\w.]*)#([\w-]+)\)", OPERATIONS.read_text())
    assert len(links) >= 5
    for target, anchor in links:
        assert anchor in _anchors(OPERATIONS.parent / target if target else OPERATIONS), (target, anchor)

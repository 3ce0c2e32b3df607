"""The policy file, the settings contract and the local scheduler."""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from controlplane import settings as names
from controlplane.domain.errors import ConfigurationError, PolicyError
from controlplane.domain.ncrontab import Schedule
from controlplane.domain.policy import Mode, Profile, load_policy, parse_policy, schema
from controlplane.settings import Settings
from tests.support import ROOT


def test_the_shipped_policy_is_valid_and_resolves_rules(policy):
    churn = policy.rule_for("churn")
    assert churn.profile is Profile.CLASSICAL and churn.mode is Mode.ENFORCE and churn.retraining
    assert policy.rule_for("ticket-classifier").mode is Mode.SHADOW
    assert policy.rule_for("unknown-model") is None
    assert policy.model_for_monitor("churn-monitor") == "churn"


def test_tags_narrow_a_rule():
    policy = parse_policy('models:\n  - name: "*"\n    tags: {team: growth}\n    profile: cv\n')
    assert policy.rule_for("churn", {"team": "growth"}).profile is Profile.CV
    assert policy.rule_for("churn", {"team": "risk"}) is None


def test_the_version_is_the_content_hash():
    a, b = parse_policy("models: []\n"), parse_policy("models: []\n# changed\n")
    assert a.version.startswith("sha256:") and a.version != b.version
    assert a.version == parse_policy("models: []\n").version


@pytest.mark.parametrize("text, path, words", [
    ("models:\n  - name: x\n    profile: tabular\n", "models[0].profile", "'classical', 'cv' or 'nlp'"),
    ("models:\n  - profile: cv\n", "models[0].name", "required"),
    ("models:\n  - name: x\n    retraining: {pipeline: p.yml}\n", "models[0].retraining.experiment", "required"),
    ("models:\n  - name: x\n    review: {assignees: []}\n", "models[0].review.assignees", "at least 1"),
    ("modles: []\n", "modles", "not permitted"),
    ("version: 2\n", "version", "version 1"),
    ("models: [\n", "line 2 column 1", "malformed YAML"),
    ("- a\n- b\n", "$", "mapping"),
    ("models:\n  - name: x\n    drift: {reference: r.csv, columns: {a: numerical}, methods: {a: wasserstien}}\n",
     "models[0].drift.methods", "unknown drift method 'wasserstien'"),
    ("models:\n  - name: x\n    drift: {reference: r.csv, columns: {a: numerical}, min_rows: 500,"
     " window: {sample: 100}}\n", "models[0].drift", "every window would be inconclusive"),
    ("models:\n  - name: x\n    drift: {reference: r.csv, columns: {a: image}}\n", "models[0].drift.columns",
     "one of 'numerical', 'categorical', 'text', 'embedding'"),
    ("models:\n  - name: x\n    retraining: {pipeline: p, experiment: e, schedule: '0 0 3 * *'}\n",
     "models[0].retraining.schedule", "6 fields"),
])
def test_an_invalid_policy_names_the_key_path(text, path, words):
    with pytest.raises(PolicyError) as error:
        parse_policy(text)
    assert error.value.subject == path and words in error.value.reason


def test_a_missing_policy_file_is_a_policy_error(tmp_path):
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "absent.yaml")


def test_the_committed_schema_matches_the_model():
    committed = json.loads((ROOT / "policy.schema.json").read_text())
    assert committed == schema(), "regenerate with: python -m controlplane policy schema > policy.schema.json"


def sample_values() -> dict[str, str]:
    return json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]


def test_the_sample_settings_hold_every_setting_the_code_reads_and_load_cleanly():
    read_by_code = {value for key, value in vars(names).items() if key.isupper() and isinstance(value, str)
                    and not key.startswith("DEFAULT") and key != "DISPATCHERS"}
    assert read_by_code <= set(sample_values())
    settings = Settings.from_env(sample_values())
    assert settings.store_kind == "sqlite" and settings.policy_path == "policy.yaml"


def test_function_bindings_reference_only_settings_in_the_sample(app_functions):
    referenced = set()
    for function in app_functions.values():
        for binding in json.loads(function.get_function_json())["bindings"]:
            for key in ("connection",):
                if key in binding:
                    referenced.add(binding[key])
            referenced.update(v.strip("%") for v in binding.values() if isinstance(v, str) and v.startswith("%"))
    assert referenced <= set(sample_values())


@pytest.mark.parametrize("env, setting", [
    ({"CONTROLPLANE_STORE": "postgres://x"}, "CONTROLPLANE_STORE"),
    ({"CONTROLPLANE_STORE": "sqlite:///"}, "CONTROLPLANE_STORE"),
    ({"CONTROLPLANE_STORE": "tables"}, "AzureWebJobsStorage"),
    ({"CONTROLPLANE_DISPATCH": "carrier-pigeon"}, "CONTROLPLANE_DISPATCH"),
    ({"CONTROLPLANE_LEASE_SECONDS": "-1"}, "CONTROLPLANE_LEASE_SECONDS"),
    ({"CONTROLPLANE_TABLE_PREFIX": "bad-name"}, "CONTROLPLANE_TABLE_PREFIX"),
])
def test_bad_settings_name_the_setting(env, setting):
    with pytest.raises(ConfigurationError) as error:
        Settings.from_env(env)
    assert error.value.subject == setting


def test_identity_based_storage_connection():
    settings = Settings.from_env({"CONTROLPLANE_STORE": "tables", "AzureWebJobsStorage__accountName": "stcp"})
    assert settings.storage_account_url == "https://stcp.table.core.windows.net"


@pytest.mark.parametrize("expression, moment, expected", [
    ("0 */1 * * * *", datetime(2026, 11, 22, 10, 5, 0), True),
    ("0 */1 * * * *", datetime(2026, 11, 22, 10, 5, 1), False),
    ("0 30 9 * * 1-5", datetime(2026, 11, 23, 9, 30, 0), True),  # a Monday
    ("0 30 9 * * 1-5", datetime(2026, 11, 22, 9, 30, 0), False),  # a Sunday
    ("*/15 * * * * *", datetime(2026, 11, 22, 0, 0, 45), True),
    ("0 0 0,12 1 * *", datetime(2026, 12, 1, 12, 0, 0), True),
])
def test_ncrontab_schedules(expression, moment, expected):
    assert Schedule(expression).matches(moment) is expected


@pytest.mark.parametrize("expression", ["* * * * *", "61 * * * * *", "0 */0 * * * *", "a * * * * *"])
def test_bad_ncrontab_is_rejected(expression):
    with pytest.raises(ValueError):
        Schedule(expression)


def test_the_docs_show_the_shipped_policy_as_it_is():
    docs = Path(ROOT / "docs" / "policy.md").read_text()
    shown = docs.split("## The shipped example", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    assert shown == (ROOT / "policy.yaml").read_text()


def test_every_policy_example_in_the_docs_is_valid():
    docs = Path(ROOT / "docs" / "policy.md").read_text()
    blocks = [block.split("\n", 1)[1] for block in docs.split("```yaml")[1:]]
    assert blocks, "docs/policy.md shows policy examples"
    for block in blocks:
        parse_policy(block.split("```", 1)[0])


def bicep_app_settings() -> set[str]:
    import re

    source = (ROOT / "infra" / "app" / "controlplane.bicep").read_text()
    block = source.split("name: 'appsettings'", 1)[1].split("properties: {", 1)[1].split("\n  }", 1)[0]
    return set(re.findall(r"^\s+(\w+):", block, re.MULTILINE))


def test_bicep_sets_every_setting_the_code_reads_with_identity_based_connections():
    in_bicep = bicep_app_settings()
    for setting in set(sample_values()) - {"FUNCTIONS_WORKER_RUNTIME", "AzureWebJobsFeatureFlags"}:
        identity_based = any(name.startswith(setting + "__") for name in in_bicep)
        assert setting in in_bicep or identity_based, f"{setting} is not set by infra/app/controlplane.bicep"
    assert not {"AzureWebJobsStorage", "TelemetryEventHub"} & in_bicep, "connections are identity-based in Azure"
    assert not {name.split("__")[0] for name in in_bicep if name.startswith("CONTROLPLANE_")} - set(sample_values())

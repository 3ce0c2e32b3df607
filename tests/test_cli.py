"""The command line, run as users run it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from urllib.parse import urlsplit

from tests.support import ROOT, load_event


def cli(*args, env):
    return subprocess.run([sys.executable, "-m", "controlplane", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=60)


def test_reviews_link_prints_one_url_that_opens_the_review(tmp_path):
    env = {"CONTROLPLANE_STORE": f"sqlite:///{tmp_path}/cp.db", "CONTROLPLANE_PUBLIC_URL": "http://127.0.0.1:7071"}
    from controlplane import bootstrap
    from controlplane.handlers.registry import receive_registry_event
    from controlplane.settings import Settings

    services = bootstrap.build(Settings.from_env({**env, "CONTROLPLANE_POLICY": str(ROOT / "policy.yaml")}))
    event = load_event("eg_model_registered_sdk.json")
    event["data"]["modelTags"].update(auc="0.9")
    review = receive_registry_event(services, event).reviews[0]

    done = cli("reviews", "link", review.id, "--approver", "bo@contoso.com", env=env)
    assert done.returncode == 0, done.stderr
    [line] = done.stdout.splitlines()
    url = urlsplit(line)
    # the token travels in the fragment, which browsers and curl never send: no server or access log sees it
    assert url.path == f"/api/reviews/{review.id}" and url.query == "" and url.fragment.startswith("token=")

    from controlplane.domain.reviews import verify_token
    token = url.fragment.removeprefix("token=")
    assert verify_token(services.approval_key, token, review.id, services.clock.now()).approver == "bo@contoso.com"

    refused = cli("reviews", "link", review.id, "--approver", "mallory@contoso.com", env=env)
    assert refused.returncode == 2 and "not an approver" in refused.stderr and refused.stdout == ""


def test_policy_check_and_schema(tmp_path):
    ok = cli("policy", "check", str(ROOT / "policy.yaml"), env={})
    assert ok.returncode == 0 and "valid, version sha256:" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  - name: x\n    profile: tabular\n")
    refused = cli("policy", "check", str(bad), env={})
    assert refused.returncode == 2 and "models[0].profile" in refused.stderr
    schema = json.loads(cli("policy", "schema", env={}).stdout)
    assert schema["title"] == "MLOps control plane policy"


def test_tasks_and_rollouts_commands(tmp_path):
    env = {"CONTROLPLANE_STORE": f"sqlite:///{tmp_path}/cp.db"}
    from controlplane import bootstrap
    from controlplane.handlers.registry import receive_registry_event
    from controlplane.settings import Settings

    services = bootstrap.build(Settings.from_env({**env, "CONTROLPLANE_POLICY": str(ROOT / "policy.yaml")}))
    decision = receive_registry_event(services, load_event("eg_monitor_breach.json")[0])
    [task] = decision.tasks

    listed = [json.loads(line) for line in cli("tasks", "list", "--state", "pending", "--json",
                                               env=env).stdout.splitlines()]
    assert [t["id"] for t in listed] == [task.id]
    shown = json.loads(cli("tasks", "show", task.id, "--json", env=env).stdout)
    assert shown["request"]["job"]["name"].startswith("retrain-")
    cancelled = cli("tasks", "cancel", task.id, "--json", env=env)
    assert json.loads(cancelled.stdout)["state"] == "cancelled"
    refused = cli("tasks", "retry", task.id, env=env)
    assert refused.returncode == 2 and "cancelled" in refused.stderr
    missing = cli("tasks", "show", "nope", env=env)
    assert missing.returncode == 2 and "nope" in missing.stderr
    assert cli("tasks", "replay", env=env).returncode == 0
    assert cli("rollouts", "list", env=env).stdout == ""
    assert cli("rollouts", "resume", "nope", env=env).returncode == 2


def test_the_demo_tells_the_whole_story():
    done = subprocess.run([sys.executable, "-m", "controlplane", "demo"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={k: v for k, v in os.environ.items() if not k.startswith("CONTROLPLANE_")})
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    for expected in ("request_approval", "reject        accuracy 0.8 fails", "duplicate", "retrain", "review",
                     "drift.window", "retraining held back: cooldown", "defect-detector    review",
                     "labelling.export", "report.render",
                     "approved by ana@contoso.com, bo@contoso.com", "rollout.completed", "rollout.rolled_back",
                     "rolled back at 10%", "rollback: incident opened; rolling churn-ep back from churn-v3-",
                     "no_action: incident repeated (alert 2 of this incident)",
                     "notify: incident resolved; told oncall, infrastructure",
                     "scale: incident opened; scaling churn-ep/blue from 2 to 3 instances; review by the "
                     "infrastructure team", "recorded invalid: data: required field is missing",
                     "churn-ep live {'blue': 100}", "the on-call notice carries the target's last hour",
                     "infrastructure review",
                     # the retraining loop: the pipeline's steps run, and the version they register enters the gates
                     "evaluate: accuracy 0.8", "churn:5 is registered by the pipeline",
                     "request_approval: gates passed (accuracy >= 0.85, auc >= 0.8)",
                     # MLOps v2 across workspaces: dev -> registry -> staging and its test stage -> prod
                     "staging at 0% on retention-ep in staging from registry mlops-registry",
                     "at 0% from azureml://registries/mlops-registry/models/retention/versions/7",
                     "test stage passed (auc >= 0.8, tpr_gap <= 0.3", "production review, with the test results",
                     "bo@contoso.com approves retention:7 for production", "rollout of retention:7: completed",
                     "scoring job demand-forecast-v3-", "default deployment is demand-forecast-v3-",
                     "(was demand-v2, kept for a rollback)",
                     "review: retraining job retrain-churn-", "failed: its data scientists review it"):
        assert expected in out, expected
    assert "-> 500" not in out


def test_incidents_lists_open_and_closed_incidents(tmp_path):
    env = {"CONTROLPLANE_STORE": f"sqlite:///{tmp_path}/cp.db"}
    from controlplane import bootstrap
    from controlplane.handlers.alerts import receive_alert
    from controlplane.settings import Settings
    from tests.support import event_bytes

    services = bootstrap.build(Settings.from_env({**env, "CONTROLPLANE_POLICY": str(ROOT / "policy.yaml")}))
    for name in ("alert_latency_blue_fired.json", "alert_latency_blue_resolved.json", "alert_cpu_blue_fired.json"):
        receive_alert(services, event_bytes(name))

    every = [json.loads(line) for line in cli("incidents", "--json", env=env).stdout.splitlines()]
    assert sorted((i["target"], i["state"]) for i in every) == [("churn-ep/blue", "closed"), ("churn-ep/blue", "open")]
    [open_one] = [json.loads(line) for line in cli("incidents", "--state", "open", "--json",
                                                                  env=env).stdout.splitlines()]
    assert open_one["rule"] == "churn-ep-blue-cpu" and open_one["fired"] == 1 and open_one["id"].endswith("-1")


def test_decisions_print_a_page_and_the_token_of_the_next(tmp_path):
    env = {"CONTROLPLANE_STORE": f"sqlite:///{tmp_path}/cp.db"}
    from controlplane import bootstrap
    from controlplane.handlers.registry import receive_registry_event
    from controlplane.settings import Settings

    services = bootstrap.build(Settings.from_env({**env, "CONTROLPLANE_POLICY": str(ROOT / "policy.yaml")}))
    template = load_event("eg_monitor_breach.json")[0]
    for n in range(3):
        receive_registry_event(services, {**template, "id": f"cli-{n}"})

    first = cli("decisions", "--limit", "2", "--json", env=env)
    assert first.returncode == 0, first.stderr
    token = first.stderr.split("--continuation ", 1)[1].split()[0]
    rest = cli("decisions", "--limit", "2", "--continuation", token, "--json", env=env)
    ids = [json.loads(line)["id"] for line in first.stdout.splitlines() + rest.stdout.splitlines()]
    assert len(ids) == len(set(ids)) == 3 and "--continuation" not in rest.stderr

    refused = cli("decisions", "--continuation", token, "--outcome", "retrain", env=env)
    assert refused.returncode == 2 and "continuation" in refused.stderr
    assert cli("index", "backfill", env=env).stdout.strip() == "indexed 0 records"


def test_records_print_as_a_table_for_people_and_as_json_lines_with_json(tmp_path):
    from controlplane import bootstrap
    from controlplane.handlers.registry import receive_registry_event
    from controlplane.settings import Settings

    env = {"CONTROLPLANE_STORE": f"sqlite:///{tmp_path}/cp.db"}
    services = bootstrap.build(Settings.from_env({**env, "CONTROLPLANE_POLICY": str(ROOT / "policy.yaml")}))
    decision = receive_registry_event(services, load_event("eg_monitor_breach.json")[0])
    [task] = [t for t in decision.tasks if t.kind.value == "retraining"]

    header, *rows = cli("tasks", "list", env=env).stdout.splitlines()
    assert header.split() == ["ID", "KIND", "STATE", "ATTEMPTS", "DUE", "(UTC)", "TARGET", "LAST", "ERROR"]
    [row] = [r for r in rows if r.startswith(task.id)]
    assert row.split()[1:4] == ["retraining", "pending", "0"] and task.target in row
    assert header.index("TARGET") == row.index(task.target)  # columns line up
    table = cli("decisions", env=env).stdout
    assert table.splitlines()[0].startswith("DECIDED (UTC)") and decision.id in table and "retrain" in table
    assert "{" not in table
    [line] = cli("decisions", "--json", env=env).stdout.splitlines()
    assert json.loads(line)["id"] == decision.id


def test_windows_list_the_telemetry_windows_as_a_table_or_as_json(tmp_path):
    from controlplane.adapters.sqlite_store import SqliteStore
    from controlplane.domain.windows import WindowSpec
    from tests.test_store_contract import T0, telemetry_event

    env = {"CONTROLPLANE_STORE": f"sqlite:///{tmp_path}/cp.db"}
    spec = WindowSpec(records=4, minutes=60, grace_minutes=5, sample=4)
    SqliteStore(f"{tmp_path}/cp.db").append_telemetry([telemetry_event(s, n=3) for s in range(3)], lambda m: spec, T0)

    header, *rows = cli("windows", env=env).stdout.splitlines()
    assert header.split() == ["MODEL", "DEPLOYMENT", "WINDOW", "RECORDS", "STATE", "CLOSED", "BY"]
    assert [row.split()[3:5] for row in rows] == [["4", "closed"], ["4", "closed"], ["1", "open"]]
    closed = [json.loads(line) for line in cli("windows", "--state", "closed", "--json", env=env).stdout.splitlines()]
    assert [(w["part"], w["reason"]) for w in closed] == [(0, "records"), (1, "records")]
    assert cli("windows", "--state", "done", env=env).returncode == 2  # argparse names the choices

"""``python -m controlplane demo``: replay a realistic day against a fresh local host and print the
decision timeline. Every step goes over HTTP to the URLs Core Tools serves, so the demo exercises
exactly what Azure would call. Its state (store, policy, approval key, simulated workspace) stays in
``.controlplane/demo/``, and the command it prints last serves it."""
from __future__ import annotations

import json
import os
import random
import shutil
import threading
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

WORKSPACE = ("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-ml-prod/providers/"
             "Microsoft.MachineLearningServices/workspaces/mlw-prod")
WEBHOOK = "/runtime/webhooks/EventGrid?functionName=on_registry_event"
PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"
BREACH = ("The signal 'data-drift-signal' has failed due to one or more features violating metric thresholds.\n"
          "The feature names and their corresponding computed metric values violating the threshold are \n{}\n")


def _now() -> str:
    return datetime.now(UTC).isoformat()


def grid(event_type: str, subject: str, data: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    return {"id": event_id or str(uuid.uuid4()), "topic": WORKSPACE, "subject": subject,
            "eventType": f"Microsoft.MachineLearningServices.{event_type}", "eventTime": _now(), "data": data,
            "dataVersion": "2", "metadataVersion": "1"}


def breach(monitor: str, features: list[tuple[str, str, float, float]]) -> dict[str, Any]:
    items = [json.dumps({"group": f, "metric_value": v, "metric_name": m, "threshold_value": t},
                        separators=(",", ":")) for f, m, v, t in features]
    run = str(uuid.uuid4())
    return grid("RunStatusChanged", f"experiments/{uuid.uuid4()}/runs/{run}", {
        "runStatus": "Failed", "experimentName": monitor, "runId": run, "runType": "azureml.StepRun",
        "runTags": {"azureml_modelmonitor_threshold_breached": BREACH.format(str(items))}})


def alert(condition: str, alert_id: str, *, rule: str, metric: str, value: float, threshold: str,
          severity: str, target: str, dimensions: dict[str, str]) -> dict[str, Any]:
    """A metric alert in the common alert schema, as an Azure Monitor action group posts it."""
    return {"schemaId": "azureMonitorCommonAlertSchema", "data": {
        "essentials": {"alertId": f"/subscriptions/0/providers/Microsoft.AlertsManagement/alerts/{alert_id}",
                       "alertRule": rule, "severity": severity, "signalType": "Metric",
                       "monitorCondition": condition, "monitoringService": "Platform",
                       "alertTargetIDs": [f"{WORKSPACE.lower()}/onlineendpoints/{target}"], "firedDateTime": _now(),
                       **({"resolvedDateTime": _now()} if condition == "Resolved" else {}),
                       "description": f"{metric} of {target} above {threshold}"},
        "alertContext": {"conditionType": "SingleResourceMultipleMetricCriteria", "condition": {
            "windowSize": "PT5M", "allOf": [{"metricName": metric, "operator": "GreaterThan", "threshold": threshold,
                                             "timeAggregation": "Average", "metricValue": value,
                                             "dimensions": [{"name": k, "value": v}
                                                            for k, v in dimensions.items()]}]}}}}


def latency(condition: str, alert_id: str, deployment: str) -> dict[str, Any]:
    return alert(condition, alert_id, rule="churn-ep-latency-p95", metric="RequestLatency_P95", value=1250.0,
                 threshold="500", severity="Sev1", target="churn-ep", dimensions={"deployment": deployment})


def cpu(alert_id: str, deployment: str) -> dict[str, Any]:
    return alert("Fired", alert_id, rule="churn-ep-cpu", metric="CpuUtilizationPercentage", value=94.2,
                 threshold="85", severity="Sev2", target=f"churn-ep/deployments/{deployment}",
                 dimensions={"instanceId": f"{deployment}-6d8f7c9b54-k2x7p"})


def script_signals(workspace: Any, fresh: str) -> None:
    """What the simulated workspace's logs say about the last hour: the fresh deployment slowed down
    twenty minutes ago; the old one runs hot on the traffic it took back."""
    from datetime import timedelta

    from controlplane.domain.signals import Series

    now = datetime.now(UTC)
    at = [now - timedelta(minutes=55 - 5 * n) for n in range(12)]
    p95 = [96, 98, 95, 99, 97, 101, 240, 610, 890, 1040, 1190, 1250]
    workspace.set_signals(f"churn-ep/{fresh}", [
        Series("p95 latency", "ms", tuple(zip(at, map(float, p95), strict=True))),
        Series("requests", "count", tuple((t, 400.0) for t in at))])
    workspace.set_signals("churn-ep/blue", [Series("CpuUtilizationPercentage", "Percent", tuple(
        (t, float(v)) for t, v in zip(at, [12, 11, 13, 12, 12, 14, 15, 18, 64, 88, 93, 94], strict=True)))])


def telemetry(model: str, deployment: str, inputs, n: int) -> list[dict[str, Any]]:
    return [{"model": model, "version": "3", "endpoint": f"{model}-ep", "deployment": deployment,
             "request_id": str(uuid.uuid4()), "timestamp": _now(), "inputs": inputs(i),
             "outputs": {"score": 0.5}} for i in range(n)]


def drifted_churn(i: int) -> dict[str, Any]:
    """Customers now older and on bigger plans than the ones churn was trained on."""
    rng = random.Random(i)
    return {"age": round(rng.gauss(56, 8)), "tenure_months": round(rng.expovariate(1 / 20)),
            "monthly_charges": round(rng.gauss(58, 18), 2),
            "plan": rng.choices(["basic", "pro", "enterprise"], weights=[20, 40, 40])[0]}


def darker_images(i: int) -> dict[str, Any]:
    """A camera on the line got dimmer: brightness and contrast fell."""
    rng = random.Random(10_000 + i)
    return {"brightness": round(rng.gauss(0.40, 0.06), 4), "contrast": round(rng.gauss(0.26, 0.05), 4),
            "sharpness": round(rng.gauss(0.74, 0.08), 4)}


def window_events(model: str, deployment: str, inputs, partition: str) -> list[tuple[str, str, str, Any]]:
    """Two Event Hubs events of 100 records each: one full telemetry window."""
    records = telemetry(model, deployment, inputs, 200)
    return [(f"{model} telemetry ({'first' if n == 0 else 'second'} 100 records)", "POST",
             "/admin/functions/on_telemetry", {"input": json.dumps(records[n * 100:(n + 1) * 100]),
                                                "partitionId": partition, "sequenceNumber": n})
            for n in range(2)]


def scenario() -> list[tuple[str, str, str, Any]]:
    """(description, method, path, body) steps of a day in the life of three models."""
    registered = grid("ModelRegistered", "models/churn:3", {
        "ModelName": "churn", "ModelVersion": 3,
        "ModelTags": {"accuracy": "0.91", "auc": "0.87", "created_by": "alice@contoso.com"}})
    webhook = "/runtime/webhooks/EventGrid?functionName=on_registry_event"
    return [
        ("churn:3 is registered (accuracy 0.91, auc 0.87)", "POST", webhook, [registered]),
        ("churn:2 is registered below the accuracy gate", "POST", webhook, [grid(
            "ModelRegistered", "models/churn:2", {"ModelName": "churn", "ModelVersion": 2,
                                                  "ModelTags": {"accuracy": "0.80", "auc": "0.86"}})]),
        ("churn:3 is deployed to churn-ep", "POST", webhook, [grid("ModelDeployed", "endpoints/churn-ep", {
            "ServiceName": "churn-ep", "ServiceComputeType": "Managed", "ModelIds": "churn:3"})]),
        ("Event Grid redelivers the registration", "POST", webhook, [registered]),
        *window_events("churn", "green", drifted_churn, "0"),
        ("a poison telemetry event arrives", "POST", "/admin/functions/on_telemetry",
         {"input": '{"model": "churn"}', "partitionId": "0", "sequenceNumber": 2}),
        ("churn's Azure ML monitor breaches too", "POST", webhook, [breach("churn-monitor", [
            ("age", "NormalizedWassersteinDistance", 0.23, 0.1),
            ("plan", "JensenShannonDistance", 0.13, 0.1)])]),
        *window_events("defect-detector", "blue", darker_images, "1"),
        ("ticket-classifier drifts (NLP, shadow mode)", "POST", webhook, [breach("ticket-classifier-monitor", [
            ("channel", "JensenShannonDistance", 0.18, 0.1)])]),
    ]


def alerts(fresh: str) -> list[tuple[str, str, str, Any]]:
    """The infrastructure loop: a latency alert on a fresh deployment, then CPU pressure on the old one."""
    sweep = ("the sweep timer drains the outbox", "POST", "/admin/functions/sweep", {"input": ""})
    return [
        (f"p95 latency alert fires on {fresh[:22]}", "POST", "/api/alerts", latency("Fired", "lat-1", fresh)),
        ("it fires again while the incident is open", "POST", "/api/alerts", latency("Fired", "lat-2", fresh)),
        sweep,
        ("the latency alert resolves", "POST", "/api/alerts", latency("Resolved", "lat-1", fresh)),
        ("CPU alert fires on blue", "POST", "/api/alerts", cpu("cpu-1", "blue")),
        sweep,
        ("a malformed alert is posted", "POST", "/api/alerts", {"schemaId": "azureMonitorCommonAlertSchema"}),
    ]


def approvals(base: str, version: str = "3") -> list[tuple[str, str, str, Any]]:
    """The production gate of churn:<version>: each approver follows their own signed link."""
    from controlplane import bootstrap
    from controlplane.handlers.reviews import approval_link

    _, listing = call(base, "GET", "/api/reviews?state=open", None)
    review = next(r for r in listing["reviews"] if r["kind"] == "promotion" and r["version"] == version)
    steps = []
    for approver in ("ana@contoso.com", "bo@contoso.com"):
        url = approval_link(bootstrap.services(), review["id"], approver)
        print(f"    approval link for {approver}: {url[:90]}...")
        token = url.split("token=", 1)[1]
        steps.append((f"{approver} approves churn:{version} for production", "POST",
                      f"/api/reviews/{review['id']}/decision",
                      {"decision": "approve", "comment": "gates and champion check look right", "token": token}))
    return steps + [("the sweep timer drains the outbox (dry run)", "POST", "/admin/functions/sweep",
                     {"input": ""})]


def run_pipeline(workdir: Path, job: str, model_name: str) -> dict[str, Any] | None:
    """The retraining pipeline's steps (pipelines/src), chained as pipelines/retrain-churn.yml chains them, on the
    shipped training sample; returns the model entity the register step would register."""
    import importlib.util
    import subprocess
    import sys

    if importlib.util.find_spec("sklearn") is None:
        print("    (scikit-learn is not installed, so the pipeline is not run here: make demo installs it, as does "
              "pip install -r requirements-dev.txt)")
        return None
    data = PIPELINES / "data" / "churn-training.csv"
    # In Azure ML the pipeline job's name, here the control plane's, is the root run id of each of its steps.
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "AZUREML_ROOT_RUN_ID": job}
    steps = [("prep", "--data", str(data), "--train-out", "train", "--test-out", "test"),
             ("train", "--train", "train", "--model-out", "model"),
             ("evaluate", "--model", "model", "--test", "test", "--metrics-out", "metrics"),
             ("register", "--model", "model", "--metrics", "metrics", "--model-name", model_name,
              "--training-data", str(data.relative_to(PIPELINES.parent)), "--out", "registration", "--dry-run")]
    workdir.mkdir(parents=True, exist_ok=True)
    for name, *args in steps:
        done = subprocess.run([sys.executable, str(PIPELINES / "src" / f"{name}.py"), *args], cwd=workdir, env=env,
                              capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"pipeline step {name} failed: {done.stderr.strip()[-1000:]}")
        print(f"    {done.stdout.strip()}")
    return json.loads((workdir / "registration" / "model.json").read_text(encoding="utf-8"))


def retraining(base: str, first: int, workdir: Path) -> None:
    """The loop closed: the retraining the drifting churn window dispatched runs its pipeline's steps, and the
    version they register goes through the promotion gates."""
    from controlplane import bootstrap

    services = bootstrap.services()
    task = next(t for t in services.store.tasks(limit=200) if t.kind.value == "retraining" and t.result)
    job = task.result["would_send"]["job"]
    inputs = ", ".join(f"{k}={v}" for k, v in job["inputs"].items())
    print(f"    retraining: {job['name']} was dispatched in dry run: {job['source']} on {job['compute']}, {inputs}")
    print("    the pipeline's steps, run here on pipelines/data/churn-training.csv:")
    entity = run_pipeline(workdir / "retrain-churn", job["name"], job["inputs"]["model_name"])
    if entity is None:
        return
    model = entity["name"]
    versions = [int(d.version) for d in services.store.decisions(model=model, limit=200) if str(d.version).isdigit()]
    version = str(max(versions, default=0) + 1)
    services.gateway.register_model(model, version, registered_by="retraining-pipeline", tags=entity["tags"],
                                    properties=entity["properties"])  # the job's identity registers it
    registered = grid("ModelRegistered", f"models/{model}:{version}", {
        "ModelName": model, "ModelVersion": int(version), "ModelTags": entity["tags"],
        "ModelProperties": entity["properties"]})
    steps = [(f"{model}:{version} is registered by the pipeline", "POST", WEBHOOK, [registered]),
             ("the sweep timer drains the outbox (dry run)", "POST", "/admin/functions/sweep", {"input": ""})]
    for step, (description, method, path, body) in enumerate(steps, first):
        status, _ = call(base, method, path, body)
        print(f"{step:>2}. {description:<50} {method} {path.split('?')[0][:40]:<40} -> {status}")
        if path != WEBHOOK:
            continue
        decided = services.store.decisions(model=model, limit=1, version=version)[0]
        print(f"    {decided.outcome.value}: {decided.reason}")
        gates = [f"{g['metric']} {g['value']:g} {'passes' if g['passed'] else 'fails'} {g['gate']}"
                 for g in decided.evidence.get("gates", [])]
        gain = decided.evidence.get("improvement")
        if gain:
            gates.append(f"{gain['metric']} gains {gain['gain']:g} on the champion {decided.evidence['champion']} "
                         f"(at least {gain['required']:g})")
        if gates:
            print(f"    gates: {'; '.join(gates)}")


def call(base: str, method: str, path: str, body: Any) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json", "aeg-event-type": "Notification"}
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as reply:
            status, raw = reply.status, reply.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    return status, json.loads(raw) if raw else None


def demo_policy(workdir: str) -> str:
    """The shipped policy with each rollout step watched for one second instead of minutes."""
    import yaml

    source = os.path.abspath(os.environ.get("CONTROLPLANE_POLICY", "policy.yaml"))
    with open(source, encoding="utf-8") as file:
        policy = yaml.safe_load(file)
    endpoints = policy.setdefault("endpoints", {})
    for rule in policy.get("models", []):  # every online endpoint a rule promotes to rolls out at the demo's pace
        promotion = rule.get("promotion") or {}
        if promotion and promotion.get("target", "online") == "online":
            endpoints.setdefault(promotion["endpoint"], {})
    for endpoint in endpoints.values():
        endpoint.setdefault("rollout", {})["interval_minutes"] = STEP_SECONDS / 60
    for rule in policy.get("models", []):  # the copy lives elsewhere: its references stay where they are
        if "drift" in rule and not rule["drift"]["reference"].startswith(("azureml:", "https://", "/")):
            rule["drift"]["reference"] = os.path.join(os.path.dirname(source), rule["drift"]["reference"])
    path = f"{workdir}/policy.yaml"
    with open(path, "w", encoding="utf-8") as file:
        yaml.safe_dump(policy, file, sort_keys=False)
    return path


STEP_SECONDS = 1.0


def rollout(base: str, healthy_until: int, version: str, endpoint: str = "churn-ep", model: str = "churn") -> None:
    """Sweep until the model's latest rollout ends, scripting the new deployment's health as it goes."""
    import time

    from controlplane import bootstrap

    services = bootstrap.services()
    workspace = services.gateway
    for _ in range(12):
        call(base, "POST", "/admin/functions/sweep", {"input": ""})
        found = services.store.rollouts(limit=1, model=model)
        if not found:
            continue
        current = found[0]
        good = current.step < healthy_until
        workspace.set_health(endpoint, current.deployment, 400, 95.0 if good else 420.0, 0.002 if good else 0.04)
        state = workspace.get_endpoint(endpoint)
        live = {k: v for k, v in state.traffic.items() if v}
        print(f"    rollout of {model}:{version}: {current.state.value:<11} step {current.step + 1}/"
              f"{len(current.steps)}  live {live}  mirror {dict(state.mirror_traffic)}")
        if current.state.value in ("completed", "rolled_back", "paused"):
            return
        time.sleep(STEP_SECONDS * 1.1)


DEMO_DIR = ".controlplane/demo"  # under the working directory; each run starts it afresh


def serve_command(port: int) -> str:
    """The command that serves the demo's state once it has run."""
    return (f"CONTROLPLANE_STORE=sqlite:///{DEMO_DIR}/demo.db CONTROLPLANE_POLICY={DEMO_DIR}/policy.yaml "
            f".venv/bin/python -m controlplane serve --port {port}")


def run(port: int = 7071) -> int:
    """Replay the scenario on a host of its own (a free port), with links pointing at ``port``, where
    :func:`serve_command` serves the state afterwards."""
    from controlplane import bootstrap
    from controlplane.dev.localhost import serve

    workdir = DEMO_DIR
    if os.path.abspath(os.environ.get("CONTROLPLANE_POLICY", "")).startswith(os.path.abspath(workdir) + os.sep):
        del os.environ["CONTROLPLANE_POLICY"]  # the last demo's copy, about to go: start from the shipped policy
    shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(workdir)
    os.environ["CONTROLPLANE_STORE"] = f"sqlite:///{workdir}/demo.db"
    os.environ["CONTROLPLANE_POLICY"] = demo_policy(workdir)
    bootstrap.reset()
    started = threading.Event()
    servers: list[Any] = []

    def ready(server) -> None:
        servers.append(server)
        started.set()

    threading.Thread(target=serve, kwargs=dict(port=0, timers=False, ready=ready), daemon=True).start()
    started.wait(30)
    base = f"http://127.0.0.1:{servers[0].server_address[1]}"
    public = f"http://127.0.0.1:{port}"
    os.environ["CONTROLPLANE_PUBLIC_URL"] = public  # links point where the state is served afterwards
    print(f"local host {base}, store {os.environ['CONTROLPLANE_STORE']}\n")
    # Azure ML records who registered each version (the control plane reads it for separation of duties)
    workspace = bootstrap.services().gateway
    for version in ("2", "3", "4"):
        workspace.register_model("churn", version, registered_by="alice@contoso.com")
    steps = scenario()
    for step, (description, method, path, body) in enumerate(steps, 1):
        status, _ = call(base, method, path, body)
        print(f"{step:>2}. {description:<50} {method} {path.split('?')[0][:40]:<40} -> {status}")
    bootstrap.services().gateway.seed_endpoint("churn-ep", "blue", "azureml:churn:2")
    print("    (simulated workspace: churn-ep serves churn:2 from deployment 'blue' at 100%)")
    for step, (description, method, path, body) in enumerate(approvals(base), len(steps) + 1):
        status, _ = call(base, method, path, body)
        print(f"{step:>2}. {description:<50} {method} {path.split('?')[0][:40]:<40} -> {status}")
    print("    production rollout of churn:3, healthy at every step:")
    rollout(base, healthy_until=99, version="3")
    print("    churn:4 is registered, passes its gates, is approved; its rollout turns unhealthy at 10%:")
    call(base, "POST", WEBHOOK, [grid(
        "ModelRegistered", "models/churn:4", {"ModelName": "churn", "ModelVersion": 4, "ModelTags": {
            "accuracy": "0.93", "auc": "0.88", "created_by": "alice@contoso.com"}})])
    for _, method, path, body in approvals(base, version="4"):
        call(base, method, path, body)
    rollout(base, healthy_until=1, version="4")

    services = bootstrap.services()
    fresh = next(r.deployment for r in services.store.rollouts() if r.version == "3")
    script_signals(services.gateway, fresh)
    print(f"    alerts: churn:3 serves churn-ep from {fresh}, rolled out minutes ago")
    first = len(steps) + 4
    chapter = alerts(fresh)
    for step, (description, method, path, body) in enumerate(chapter, first):
        status, reply = call(base, method, path, body)
        print(f"{step:>2}. {description:<50} {method} {path.split('?')[0][:40]:<40} -> {status}")
        decided = reply.get("decision") if isinstance(reply, dict) else None
        if isinstance(decided, dict):
            print(f"    {decided['outcome']}: {decided['reason'].split(': ', 1)[-1]}")
        elif isinstance(reply, dict) and "error" in reply:
            print(f"    recorded invalid: {reply['error']['field']}: {reply['error']['reason']}")
        endpoint = services.gateway.get_endpoint("churn-ep")
        if path.endswith("sweep"):
            sizes = {d.name[:22]: d.instance_count for d in endpoint.deployments}
            print(f"    churn-ep live {({k[:22]: v for k, v in endpoint.traffic.items() if v})}  instances {sizes}")
    [told] = [t for t in services.store.tasks(limit=200) if t.request.get("event") == "incident.opened"
              and t.request.get("channel") == "oncall"]
    summary = told.result["would_send"]["text"].splitlines()[-1]
    print(f"    the on-call notice carries the target's last hour: {summary}")
    [review] = [r for r in services.store.reviews() if r.kind.value == "alert"]
    print(f"    infrastructure review {review.id} for {', '.join(review.approvers)}: "
          f"{public}/api/reviews/{review.id}")
    retraining(base, first + len(chapter), Path(workdir))
    from controlplane.dev import topology

    topology.run(base, public, first + len(chapter) + 2)

    _, listing = call(base, "GET", "/api/decisions?limit=100", None)
    decisions = list(reversed(listing["decisions"]))
    print(f"\nDecision timeline ({len(decisions)} decisions, policy {decisions[0]['policy_version']}):")
    for d in decisions:
        event = d["event_type"].removeprefix("Microsoft.MachineLearningServices.")
        print(f"  {d['decided_at'][11:23]}  {event:<20} {str(d['model'] or '-'):<18} {d['outcome']:<13} "
              f"{d['reason'][:90]}")
    tasks = bootstrap.services().store.tasks(limit=100)
    print(f"\nOutbox ({len(tasks)} tasks, dispatcher {bootstrap.services().dispatcher.name}):")
    for task in tasks:
        sent = task.result.get("would_send") or task.request
        detail = (sent.get("job", {}).get("name") or sent.get("deployment") or sent.get("event")
                  or " -> ".join(task.result.get("steps", [])))
        print(f"  {task.kind.value:<11} {task.state.value:<10} {task.target:<40} {sent.get('operation', '')} "
              f"{sent.get('stage', '')} {detail}")
    servers[0].shutdown()
    make = "make demo-serve" + ("" if port == 7071 else f" PORT={port}")
    print(f"\nThe state is kept in {DEMO_DIR}/. To open the links above, serve it ({make} does the same):\n"
          f"  {serve_command(port)}")
    return 0

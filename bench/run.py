"""``make bench``: the control plane's figures, each beside a baseline measured in the same run.

Machines are noisy, so every figure is a ratio to something measured seconds earlier on the same
machine. Prints a table and writes ``bench/results.json``.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.drift_bench import _figure, _table  # noqa: E402
from bench.drift_bench import run as drift_figures  # noqa: E402
from bench.store_bench import run as store_figures  # noqa: E402


def _fresh_import_seconds(module: str, runs: int = 7, env: dict[str, str] | None = None) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import {module}"], cwd=ROOT, check=True, env=env)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


# Telemetry as in Azure: the distro is configured by the first invocation, never by the import.
TELEMETRY_ENV = {"APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=00000000-0000-0000-0000-000000000000",
                 "CONTROLPLANE_TELEMETRY_EXPORTER": "azuremonitor"}


FIRST_INVOCATION = """
import time
started = time.perf_counter()
import function_app
from controlplane import bootstrap
with bootstrap.invocation("health"):
    bootstrap.services().store.ping()
print(time.perf_counter() - started)
"""


def _first_invocation_seconds(env: dict[str, str], runs: int = 5) -> float:
    """A fresh process's import of the app and first invocation (services built, telemetry installed)."""
    times = []
    with tempfile.TemporaryDirectory() as workdir:
        env = {**os.environ, "CONTROLPLANE_STORE": f"sqlite:///{workdir}/cp.db", **env}
        for _ in range(runs):
            done = subprocess.run([sys.executable, "-c", FIRST_INVOCATION], cwd=ROOT, env=env, check=True,
                                  capture_output=True, text=True)
            times.append(float(done.stdout.split()[-1]))
    return statistics.median(times)


def cold_start() -> list[dict]:
    print("cold start: fresh interpreters importing the app ...", flush=True)
    bare = _fresh_import_seconds("azure.functions")
    app = _fresh_import_seconds("function_app")
    traced = _fresh_import_seconds("function_app", env={**os.environ, **TELEMETRY_ENV})
    first, first_traced = _first_invocation_seconds({}), _first_invocation_seconds(TELEMETRY_ENV)
    return [_figure("cold_start.import_function_app", app, "s", bare, "<= 1.5x import azure.functions",
                    app <= 1.5 * bare),
            _figure("cold_start.import_function_app_with_telemetry", traced, "s", bare,
                    "<= 1.5x import azure.functions", traced <= 1.5 * bare),
            # Informational: the Azure Monitor distro is installed by each instance's first invocation.
            _figure("cold_start.first_invocation_with_telemetry", first_traced, "s", first,
                    "<= first invocation without telemetry + 0.5 s", first_traced <= first + 0.5)]


def _services(workdir: str, policy_text: str):
    from controlplane.adapters.clock import SystemClock
    from controlplane.adapters.dry_run import DryRunDispatcher
    from controlplane.adapters.sqlite_store import SqliteStore
    from controlplane.domain.policy import parse_policy
    from controlplane.ports.store import Services

    return Services(store=SqliteStore(f"{workdir}/bench.db"), clock=SystemClock(), dispatcher=DryRunDispatcher(),
                    policy=parse_policy(policy_text))


REGISTRY_POLICY = """
models:
  - name: churn
    promotion: {endpoint: churn-ep, gates: {accuracy: ">= 0.85"},
                production: {approvers: [ana@contoso.com, bo@contoso.com], quorum: 2}}
    retraining: {pipeline: p.yml, experiment: e, cooldown_hours: 0, daily_budget: 5}
monitors: {churn-monitor: churn}
"""
# What a workspace sends, by share: run status changes (pipelines and their steps) dominate, then
# completions; registrations (each a new version through the gates, opening a review), deployments
# and model-monitor breaches (retraining behind the storm guard) are rarer.
REGISTRY_MIX = (("eg_run_status_changed_docs.json", 45), ("ce_run_status_changed_sdk.json", 10),
                ("eg_run_completed_docs.json", 20), ("eg_model_registered_docs.json", 10),
                ("eg_model_deployed_docs.json", 10), ("eg_monitor_breach.json", 5))


def _registry_stream(n: int) -> list[dict]:
    from tests.support import load_event

    stream = []
    for name, share in REGISTRY_MIX:
        template = load_event(name)
        template = template[0] if isinstance(template, list) else template
        for i in range(n * share // 100):
            event = json.loads(json.dumps(template))
            event["id"] = f"{name}-{i}"
            if "ModelVersion" in event["data"]:
                event["data"]["ModelVersion"] = 100 + i  # a new version each time: the whole promotion path
            stream.append(event)
    return [stream[i] for i in sorted(range(len(stream)), key=lambda i: (i * 7919) % len(stream))]  # interleaved


def _handled_per_second(events: list[dict], policy: str = REGISTRY_POLICY) -> float:
    from controlplane.handlers.registry import receive_registry_event

    with tempfile.TemporaryDirectory() as workdir:
        services = _services(workdir, policy)
        started = time.perf_counter()
        for event in events:
            receive_registry_event(services, event)
        rate = len(events) / (time.perf_counter() - started)
        _settle()
        return rate


def _settle() -> None:
    """Let SQLite's background checkpoints finish before the next figure is measured."""
    for thread in threading.enumerate():
        if thread.name == "sqlite-checkpoint":
            thread.join()


def _ledger_writes_per_second(events: list[dict]) -> float:
    """The same events' decisions, decided beforehand, written straight to the store as the intake writes
    them (the completed claim with the decision, one transaction each): the storage floor under the
    intake on this machine's disk."""
    from controlplane.adapters.sqlite_store import SqliteStore
    from controlplane.handlers.registry import receive_registry_event

    with tempfile.TemporaryDirectory() as workdir:
        services = _services(workdir, REGISTRY_POLICY)
        decided = [receive_registry_event(services, event) for event in events]
        store = SqliteStore(f"{workdir}/floor.db")
        started = time.perf_counter()
        for decision in decided:
            store.complete_unclaimed(decision.idempotency_key, decision.model or "_", decision)
        rate = len(decided) / (time.perf_counter() - started)
        _settle()
        return rate


def _single_row_transactions_per_second(n: int) -> float:
    """One single-row SQLite transaction per event, on a connection the store opens (WAL, its pragmas): what
    this machine's disk allows at the least, the baseline the intake is measured against."""
    from controlplane.adapters.sqlite_store import connect

    with tempfile.TemporaryDirectory() as workdir:
        db = connect(f"{workdir}/floor.db")
        db.execute("CREATE TABLE floor (key TEXT PRIMARY KEY, body TEXT NOT NULL)")
        body = "x" * 600  # about a stored decision's size
        started = time.perf_counter()
        for index in range(n):
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO floor VALUES (?, ?)", (f"event-{index}", body))
            db.execute("COMMIT")
        rate = n / (time.perf_counter() - started)
        db.close()
        return rate


# The intake's speed as a share of one single-row transaction per event on the same disk, as measured when
# this target was set (0.20 on the 2-core build machine). The ratio must not fall.
INTAKE_RATIO_TARGET = 0.20


def registry_events() -> list[dict]:
    """Azure ML events through the whole intake (parse, claim, policy, ledger, outbox) on SQLite: a
    workspace's mix of event types, and the heaviest path alone (a breach retraining behind the guard)."""
    from controlplane.parsing import parse_registry_event

    print("registry events through the handler on SQLite ...", flush=True)
    mix = _registry_stream(10_000)
    started = time.perf_counter()
    for event in mix:
        parse_registry_event(event)
    parse = time.perf_counter() - started
    template = json.loads((ROOT / "tests/events/eg_monitor_breach.json").read_text())[0]
    breaches = [{**template, "id": f"bench-{n}"} for n in range(3000)]
    mix_rate, breach_rate = _handled_per_second(mix), _handled_per_second(breaches)
    floor, single_row = _ledger_writes_per_second(mix), _single_row_transactions_per_second(len(mix))
    ratio = mix_rate / single_row
    return [_figure("registry.events_per_second", mix_rate, "events/s", single_row,
                    f">= {INTAKE_RATIO_TARGET:.2f} x single-row transactions", ratio >= INTAKE_RATIO_TARGET),
            _figure("registry.parse_per_second", len(mix) / parse, "events/s", mix_rate, "-", None),
            _figure("registry.ledger_writes_per_second", floor, "events/s", mix_rate, "-", None),
            _figure("registry.breach_events_per_second", breach_rate, "events/s", mix_rate, "-", None)]


def local_host_http() -> list[dict]:
    """The same intake over HTTP through the local host (8 concurrent posters), and the time from the
    telemetry event that fills a window to its retraining task dispatched (dry run)."""
    import threading
    import urllib.request

    from tests.support import local_host

    print("local host over HTTP ...", flush=True)
    template = json.loads((ROOT / "tests/events/eg_model_deployed_docs.json").read_text())[0]
    events = [{**template, "id": f"http-{n}"} for n in range(2000)]

    def post(base: str, path: str, body, headers=None) -> int:
        request = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json", **(headers or {})})
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status

    with tempfile.TemporaryDirectory() as workdir:
        policy = Path(workdir) / "policy.yaml"
        policy.write_text("models:\n  - name: churn\n    retraining: {pipeline: p.yml, experiment: e, "
                          "cooldown_hours: 0, daily_budget: 10}\n"
                          "    drift: {reference: %s, columns: {age: numerical}, min_rows: 50,\n"
                          "            window: {records: 200, minutes: 600, sample: 200}}\n"
                          % (ROOT / "data/reference/churn.csv"))
        env = {"CONTROLPLANE_STORE": f"sqlite:///{workdir}/cp.db", "CONTROLPLANE_POLICY": str(policy)}
        with local_host(env, Path(workdir)) as host:
            webhook = "/runtime/webhooks/EventGrid?functionName=on_registry_event"
            shares = [events[i::8] for i in range(8)]
            started = time.perf_counter()
            threads = [threading.Thread(target=lambda share=share: [
                post(host.url, webhook, [e], {"aeg-event-type": "Notification"}) for e in share]) for share in shares]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            http_rate = len(events) / (time.perf_counter() - started)

            now = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")

            def window_to_task(first_sequence: int) -> float:
                """Seconds from the event that fills a window to its retraining task dispatched by the timer."""
                records = [{"model": "churn", "version": "3", "endpoint": "churn-ep", "deployment": "green",
                            "request_id": f"{first_sequence}-{n}", "timestamp": now, "inputs": {"age": 60 + n % 20},
                            "outputs": {}} for n in range(200)]
                post(host.url, "/admin/functions/on_telemetry", {"input": json.dumps(records[:100]),
                                                                 "partitionId": "0", "sequenceNumber": first_sequence})
                started = time.perf_counter()
                post(host.url, "/admin/functions/on_telemetry", {"input": json.dumps(records[100:]),
                                                                 "partitionId": "0",
                                                                 "sequenceNumber": first_sequence + 1})
                post(host.url, "/admin/functions/sweep", {"input": ""})
                return time.perf_counter() - started

            cold = window_to_task(1)  # this process's first check imports pandas, scipy and the reference
            warm = window_to_task(3)
            with urllib.request.urlopen(f"{host.url}/api/decisions?model=churn&limit=5", timeout=30) as reply:
                decided = [d for d in json.loads(reply.read())["decisions"] if d["event_type"] == "drift.window"]
    assert [d["outcome"] for d in decided] == ["retrain", "retrain"], decided  # both windows opened a task
    in_process = _handled_per_second(events, "models: []\n")
    return [_figure("localhost.http_events_per_second", http_rate, "events/s", in_process, "-", None),
            _figure("telemetry.window_to_dispatched_task", warm, "s", cold, "<= 1 s (warm instance)", warm <= 1.0)]


def telemetry_ingestion() -> list[dict]:
    """Telemetry records into durable windows against a raw JSON parse of the same bytes."""
    from controlplane.handlers.telemetry import RawTelemetry, receive_telemetry

    print("telemetry ingestion into durable windows ...", flush=True)
    now = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    bodies = [json.dumps([{"model": "churn", "version": "3", "endpoint": "churn-ep", "deployment": "green",
                           "request_id": f"{e}-{i}", "timestamp": now, "outputs": {"score": 0.5},
                           "inputs": {f"f{j}": (e * i + j) % 97 / 7 for j in range(20)}} for i in range(100)]).encode()
              for e in range(300)]
    records = 300 * 100

    def parse_once() -> float:
        started = time.perf_counter()
        for body in bodies:
            json.loads(body)
        return time.perf_counter() - started

    def ingest_once() -> float:  # into a fresh database each time
        with tempfile.TemporaryDirectory() as workdir:
            services = _services(workdir, "models:\n  - name: churn\n    drift: {reference: r.csv, "
                                          "columns: {f0: numerical}, window: {records: 1000000, minutes: 600, "
                                          "sample: 10000}}\n")
            started = time.perf_counter()
            report = receive_telemetry(services, [RawTelemetry("0", n, None, body) for n, body in enumerate(bodies)])
            elapsed = time.perf_counter() - started
        assert report.stored == records
        return elapsed

    # Each a median of three: one large transaction is exposed to the disk's other work of the moment.
    parse = statistics.median(parse_once() for _ in range(3))
    ingest = statistics.median(ingest_once() for _ in range(3))
    return [_figure("telemetry.ingest_records_per_second", records / ingest, "records/s", records / parse,
                    "within 3x of raw JSON parse", ingest <= 3 * parse)]


def main() -> int:
    figures = (cold_start() + registry_events() + local_host_http() + telemetry_ingestion() + drift_figures()
               + store_figures())
    print()
    print(_table(figures))
    results = {"figures": figures, "machine": {
        "python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds")}}
    out = ROOT / "bench" / "results.json"
    out.write_text(json.dumps(results, indent=2))
    targeted = [f for f in figures if f["met"] is not None]
    print(f"\nwrote {out.relative_to(ROOT)}; {sum(1 for f in targeted if f['met'])} of {len(targeted)} targets met")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

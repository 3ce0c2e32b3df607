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
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.drift_bench import _figure, _table  # noqa: E402
from bench.drift_bench import run as drift_figures  # noqa: E402


def _fresh_import_seconds(module: str, runs: int = 7) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import {module}"], cwd=ROOT, check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def cold_start() -> list[dict]:
    print("cold start: fresh interpreters importing the app ...", flush=True)
    bare = _fresh_import_seconds("azure.functions")
    app = _fresh_import_seconds("function_app")
    return [_figure("cold_start.import_function_app", app, "s", bare, "<= 1.5x import azure.functions",
                    app <= 1.5 * bare)]


def _services(workdir: str, policy_text: str):
    from controlplane.adapters.clock import SystemClock
    from controlplane.adapters.dry_run import DryRunDispatcher
    from controlplane.adapters.sqlite_store import SqliteStore
    from controlplane.policy import parse_policy
    from controlplane.ports import Services

    return Services(store=SqliteStore(f"{workdir}/bench.db"), clock=SystemClock(), dispatcher=DryRunDispatcher(),
                    policy=parse_policy(policy_text))


def registry_events() -> list[dict]:
    """Azure ML events through the whole intake (parse, claim, policy, ledger, outbox) on SQLite."""
    from controlplane.parsing import parse_registry_event
    from handlers.registry import receive_registry_event

    print("registry events through the handler on SQLite ...", flush=True)
    template = json.loads((ROOT / "tests/events/eg_monitor_breach.json").read_text())[0]
    events = [{**template, "id": f"bench-{n}"} for n in range(3000)]
    started = time.perf_counter()
    for event in events:
        parse_registry_event(event)
    parse = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as workdir:
        services = _services(workdir, "models:\n  - name: churn\n    retraining: {pipeline: p.yml, experiment: e, "
                                      "cooldown_hours: 0, daily_budget: 5}\nmonitors: {churn-monitor: churn}\n")
        started = time.perf_counter()
        for event in events:
            receive_registry_event(services, event)
        handled = time.perf_counter() - started
    rate = len(events) / handled
    return [_figure("registry.events_per_second", rate, "events/s", len(events) / parse, ">= 3000/s", rate >= 3000)]


def telemetry_ingestion() -> list[dict]:
    """Telemetry records into durable windows against a raw JSON parse of the same bytes."""
    from handlers.telemetry import RawTelemetry, receive_telemetry

    print("telemetry ingestion into durable windows ...", flush=True)
    now = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    bodies = [json.dumps([{"model": "churn", "version": "3", "endpoint": "churn-ep", "deployment": "green",
                           "request_id": f"{e}-{i}", "timestamp": now, "outputs": {"score": 0.5},
                           "inputs": {f"f{j}": (e * i + j) % 97 / 7 for j in range(20)}} for i in range(100)]).encode()
              for e in range(300)]
    records = 300 * 100
    started = time.perf_counter()
    for body in bodies:
        json.loads(body)
    parse = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as workdir:
        services = _services(workdir, "models:\n  - name: churn\n    drift: {reference: r.csv, "
                                      "columns: {f0: numerical}, window: {records: 1000000, minutes: 600, "
                                      "sample: 10000}}\n")
        started = time.perf_counter()
        report = receive_telemetry(services, [RawTelemetry("0", n, None, body) for n, body in enumerate(bodies)])
        ingest = time.perf_counter() - started
    assert report.stored == records
    return [_figure("telemetry.ingest_records_per_second", records / ingest, "records/s", records / parse,
                    "within 3x of raw JSON parse", ingest <= 3 * parse)]


def main() -> int:
    figures = cold_start() + registry_events() + telemetry_ingestion() + drift_figures()
    print()
    print(_table(figures))
    results = {"figures": figures, "machine": {
        "python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds")}}
    out = ROOT / "bench" / "results.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {out.relative_to(ROOT)}; {sum(1 for f in figures if f['met'])}/{len(figures)} targets met")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The control plane watched like production software: its spans and metrics, read back with the OpenTelemetry SDK's
in-memory exporters, over the app's real functions in the local host; the correlation id in what it sends; health.

The SDK providers are global to a process and set once, here, for the whole test session: counters are cumulative,
so each test compares snapshots taken before and after what it does.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from controlplane.dev import demo
from controlplane.domain.ledger import Outcome, Source, TaskKind, TaskState
from controlplane.domain.requests import CORRELATION_TAG
from tests.support import ROOT

SPANS = InMemorySpanExporter()
READER = InMemoryMetricReader()
KEY = "controlplane.idempotency_key"


class _WhileRecording(SimpleSpanProcessor):
    """Keeps spans only while this module's tests run, not those of every test after it."""

    recording = False

    def on_end(self, span):
        if self.recording:
            super().on_end(span)


_PROCESSOR = _WhileRecording(SPANS)


@pytest.fixture(scope="module", autouse=True)
def sdk():
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(_PROCESSOR)
        trace.set_tracer_provider(provider)
        metrics.set_meter_provider(MeterProvider(metric_readers=[READER]))
    assert isinstance(trace.get_tracer_provider(), TracerProvider), "another test installed providers first"
    _PROCESSOR.recording = True
    yield
    _PROCESSOR.recording = False
    SPANS.clear()


@pytest.fixture
def host(in_process_host):
    SPANS.clear()
    return in_process_host


def points() -> dict[tuple[str, frozenset], float]:
    """Every data point now: (metric, attributes) -> its value (a counter's total, a gauge's last, a histogram's
    count)."""
    found = {}
    data = READER.get_metrics_data()
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    value = point.count if hasattr(point, "bucket_counts") else point.value
                    found[(metric.name, frozenset(point.attributes.items()))] = value
    return found


def grown(before: dict, after: dict, name: str) -> Counter:
    """How much each series of ``name`` grew, keyed by its attributes as a sorted tuple."""
    return Counter({tuple(sorted(attrs)): after[(n, attrs)] - before.get((n, attrs), 0)
                    for (n, attrs) in after if n == name and after[(n, attrs)] != before.get((n, attrs), 0)})


def play(host, steps):
    replies = []
    for _, method, path, body in steps:
        headers = {"content-type": "application/json"}
        if "webhooks/EventGrid" in path:
            headers["aeg-event-type"] = "Notification"
        replies.append(host.handle(method, path, headers, json.dumps(body).encode()))
    return replies


SWEEP = ("the sweep", "POST", "/admin/functions/sweep", {"input": ""})


def test_a_scripted_day_moves_every_metric_as_documented(host):
    from controlplane import bootstrap

    store = bootstrap.services().store
    ledger_before = Counter((d.source.value, d.outcome.value) for d in store.decisions(limit=500))
    before = points()
    replies = play(host, [*demo.scenario(), *demo.alerts("churn-green"), SWEEP])
    after = points()

    assert all(reply.status < 500 for reply in replies), [r.status for r in replies]
    ledger = Counter((d.source.value, d.outcome.value) for d in store.decisions(limit=500)) - ledger_before
    # Every decision the day wrote is counted once, under its source and outcome: invalid and duplicate included.
    assert grown(before, after, "controlplane.decisions") == Counter(
        {(("outcome", outcome), ("source", source)): n for (source, outcome), n in ledger.items()})
    assert ledger[(Source.EVENTGRID.value, Outcome.DUPLICATE.value)] == 1  # the redelivered registration
    assert ledger[(Source.TELEMETRY.value, Outcome.INVALID.value)] == 1  # the poison telemetry event
    assert ledger[(Source.ALERT.value, Outcome.INVALID.value)] == 1  # the malformed alert
    by_source = Counter()
    for (source, _), n in ledger.items():
        by_source[(("source", source),)] += n
    assert grown(before, after, "controlplane.intake.duration") == by_source  # the day holds no vote nor rollout
    # Four telemetry events of 100 records each were kept; the poison one is an invalid event.
    assert grown(before, after, "controlplane.telemetry.records") == Counter(
        {(("result", "stored"),): 400, (("result", "invalid"),): 1})
    checks = grown(before, after, "controlplane.drift.checks")
    assert sum(checks.values()) == 2 and set(checks) <= {(("verdict", v),) for v in ("drift", "no_drift",
                                                                                     "inconclusive", "failed")}
    assert sum(grown(before, after, "controlplane.drift.duration").values()) == 2
    # Three sweeps (two in the alerts, one after), each counted and each dispatching what was due.
    assert grown(before, after, "controlplane.sweeps") == Counter({(("result", "ok"),): 3})
    tasks = store.tasks(limit=1000)
    attempts = grown(before, after, "controlplane.dispatch.attempts")
    assert sum(attempts.values()) >= sum(1 for t in tasks if t.state is not TaskState.PENDING) > 0
    assert {dict(a)["operation"] for a in attempts} <= {k.value for k in TaskKind}
    # The gauges hold what the last sweep saw, as /api/health reports it.
    health = json.loads(host.handle("GET", "/api/health", {}, b"").body)
    outbox = health["outbox"]
    assert after[("controlplane.outbox.tasks", frozenset({"state": "pending"}.items()))] == outbox["pending"]
    assert after[("controlplane.outbox.tasks", frozenset({"state": "dead_lettered"}.items()))] == \
        outbox["dead_lettered"] == sum(1 for t in tasks if t.state is TaskState.DEAD_LETTERED)
    assert after[("controlplane.incidents.open", frozenset())] == health["incidents_open"] >= 1  # CPU on blue


def test_one_trace_runs_from_a_registry_event_to_the_dispatch_of_what_it_decided(host):
    from controlplane import bootstrap

    event = demo.grid("ModelRegistered", "models/churn:31", {
        "ModelName": "churn", "ModelVersion": 31, "ModelTags": {"accuracy": "0.93", "auc": "0.9",
                                                                "created_by": "alice@contoso.com"}})
    play(host, [("registered", "POST", "/runtime/webhooks/EventGrid?functionName=on_registry_event", [event])])
    key = f"ml:{event['id']}"
    [decided] = [s for s in SPANS.get_finished_spans() if s.name == "decision" and s.attributes.get(KEY) == key]
    [intake] = [s for s in SPANS.get_finished_spans() if s.name == "on_registry_event"]
    assert decided.parent.span_id == intake.context.span_id
    decision = bootstrap.services().store.decision(decided.attributes["controlplane.decision_id"])
    assert decision.idempotency_key == key and decision.tasks and decided.attributes["controlplane.model"] == "churn"
    [write] = [s for s in SPANS.get_finished_spans() if s.name.startswith("store.")]
    assert write.name == "store.complete_unclaimed" and write.parent.span_id == decided.context.span_id

    SPANS.clear()
    play(host, [SWEEP])
    [sweep] = [s for s in SPANS.get_finished_spans() if s.name == "sweep"]
    dispatched = [s for s in SPANS.get_finished_spans() if s.name.startswith("dispatch ")
                  and s.attributes.get(KEY) == key]
    # Each of the decision's tasks is dispatched in the event's trace, under the decision, linked to the sweep.
    assert sorted(s.attributes["controlplane.task_id"] for s in dispatched) == sorted(t.id for t in decision.tasks)
    for span in dispatched:
        assert span.context.trace_id == decided.context.trace_id != sweep.context.trace_id
        assert span.parent.span_id == decided.context.span_id
        assert [link.context.span_id for link in span.links] == [sweep.context.span_id]
        assert span.attributes["controlplane.correlation_id"] == decision.correlation_id
        assert span.attributes["controlplane.result"] == "succeeded"


def test_a_retraining_decision_carries_its_correlation_id_into_the_dry_run_azure_ml_job(tmp_path):
    from controlplane import bootstrap
    from controlplane.handlers.registry import receive_registry_event
    from controlplane.handlers.sweep import sweep
    from controlplane.settings import Settings

    services = bootstrap.build(Settings.from_env({"CONTROLPLANE_STORE": f"sqlite:///{tmp_path}/cp.db",
                                                  "APPROVAL_SIGNING_KEY": "r" * 40}))
    breach = demo.breach("churn-monitor", [("age", "NormalizedWassersteinDistance", 0.4, 0.1)])
    receive_registry_event(services, json.dumps(breach))
    sweep(services)
    store = services.store
    [decision] = [d for d in store.decisions(model="churn", limit=50) if d.event_id == breach["id"]]
    assert decision.outcome is Outcome.RETRAIN
    [job] = [store.task(t.id) for t in decision.tasks if t.kind is TaskKind.RETRAINING]
    sent = job.result["would_send"]  # the dry run keeps exactly what it would have sent
    assert job.state is TaskState.SUCCEEDED and sent["correlation_id"] == decision.correlation_id == decision.id
    assert sent["job"]["tags"][CORRELATION_TAG] == decision.correlation_id


def test_health_reports_the_last_sweep_and_fails_once_it_is_stale(services, clock):
    from controlplane.handlers.health import check_health
    from controlplane.handlers.sweep import sweep

    services = type(services)(**{**vars(services), "sweep_stale": timedelta(minutes=10)})
    fresh = check_health(lambda: services)
    assert fresh.healthy and fresh.checks["sweep"] == "not run yet"  # this process started moments ago

    sweep(services)
    clock.advance(minutes=9)
    healthy = check_health(lambda: services)
    assert healthy.healthy and healthy.checks["sweep"].startswith("ok (last ")
    assert healthy.details["outbox"] == {"pending": 0, "due": 0, "dead_lettered": 0, "oldest_due_age_s": None}
    assert healthy.details["last_sweep"] == (clock.now() - timedelta(minutes=9)).isoformat()

    clock.advance(minutes=2)
    stale = check_health(lambda: services)
    assert not stale.healthy and stale.checks["sweep"].startswith("stale: the last successful sweep was 11 min ago")


def test_health_counts_the_backlog_dead_letters_and_stuck_rollouts(services, clock):
    from dataclasses import replace

    from controlplane.domain.ledger import Verdict, record
    from controlplane.domain.requests import Notify
    from controlplane.domain.rollout import Rollout, RolloutState, Step
    from controlplane.handlers.health import check_health, record_sweep

    decision = record(Verdict(Outcome.NOTIFY, "tell", tasks=(Notify(channel="ops", event="a"),
                                                             Notify(channel="ops", event="b"))),
                      key="k", event_id="e", source=Source.ALERT, event_type="t", policy_version="v",
                      received_at=clock.now(), decided_at=clock.now())
    services.store.append(decision)
    first, second = decision.tasks
    services.store.update_task(second, replace(second, state=TaskState.DEAD_LETTERED))
    paused = Rollout(id="r1", endpoint="churn-ep", model="churn", version="4", deployment="green",
                     model_ref="azureml:churn:4", steps=(Step("traffic", 10),), policy={}, created_at=clock.now(),
                     state=RolloutState.PAUSED)
    services.store.create_rollout(paused)
    clock.advance(minutes=45)
    record_sweep(services, {"due": 0})

    details = check_health(lambda: services).details
    assert details["outbox"] == {"pending": 1, "due": 1, "dead_lettered": 1, "oldest_due_age_s": 45 * 60.0}
    assert details["rollouts"] == {"paused": 1} and details["stuck_rollouts"] == ["r1"]
    assert "report" not in details  # the sweep's own counts stay in the store


def test_the_console_exporter_prints_the_spans_of_a_decision(tmp_path):
    script = (
        "from controlplane import bootstrap\n"
        "from controlplane.handlers.registry import receive_registry_event\n"
        "from tests.support import event_bytes\n"
        "with bootstrap.invocation('on_registry_event'):\n"
        "    receive_registry_event(bootstrap.services(), event_bytes('eg_model_registered_docs.json').decode())\n"
        "from opentelemetry import trace\n"
        "trace.get_tracer_provider().shutdown()\n")
    env = {**os.environ, "CONTROLPLANE_TELEMETRY_EXPORTER": "console",
           "CONTROLPLANE_STORE": f"sqlite:///{tmp_path}/cp.db", "APPROVAL_SIGNING_KEY": "c" * 40}
    env.pop("APPLICATIONINSIGHTS_CONNECTION_STRING", None)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    names = [json.loads(chunk)["name"] for chunk in _json_objects(done.stdout) if "name" in json.loads(chunk)]
    assert {"on_registry_event", "decision", "store.complete_unclaimed"} <= set(names)
    assert "SharedAccessKey" not in done.stdout and "c" * 40 not in done.stdout


def _json_objects(text: str) -> list[str]:
    """The top-level JSON objects the console exporter printed one after another."""
    objects, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char == "{":
            start = index if depth == 0 else start
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                objects.append(text[start:index + 1])
    return objects


def test_azure_monitor_is_configured_with_entra_id_and_only_the_instrumentations_it_needs(monkeypatch):
    import azure.monitor.opentelemetry as distro

    from controlplane.adapters import telemetry
    from controlplane.settings import Settings

    calls = []
    monkeypatch.setattr(distro, "configure_azure_monitor", lambda **options: calls.append(options))
    monkeypatch.setattr(telemetry, "_installed", None)
    settings = Settings.from_env({"APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=00000000-0000-0000-"
                                                                           "0000-000000000000",
                                  "AZURE_CLIENT_ID": "11111111-2222-3333-4444-555555555555"})
    assert settings.telemetry_exporter == "azuremonitor"  # the default once a connection string is set
    assert telemetry.configure(lambda: settings) == "azuremonitor"
    assert telemetry.configure(lambda: pytest.fail("settings read twice")) == "azuremonitor"  # once per process
    [options] = calls
    credential = options["credential"]
    assert type(credential).__name__ == "ManagedIdentityCredential"
    assert options["connection_string"] == settings.appinsights_connection and options["logger_name"] == "controlplane"
    assert all(not options["instrumentation_options"][name]["enabled"] for name in ("django", "flask", "fastapi"))


def test_a_telemetry_setup_that_fails_leaves_the_work_running(monkeypatch, caplog):
    from controlplane.adapters import telemetry
    from controlplane.domain.errors import ConfigurationError
    from controlplane.settings import Settings

    def broken():
        return Settings.from_env({"CONTROLPLANE_TELEMETRY_EXPORTER": "azuremonitor"})

    with pytest.raises(ConfigurationError, match="APPLICATIONINSIGHTS_CONNECTION_STRING"):
        broken()
    monkeypatch.setattr(telemetry, "_installed", None)
    assert telemetry.configure(broken) == "none"
    assert "telemetry is off" in caplog.text


@pytest.fixture
def azure_sdk_tracing():
    """azure-core's OpenTelemetry plugin switched on, as both exporters do, and off again after."""
    from azure.core.settings import settings as azure_core

    azure_core.tracing_implementation = "opentelemetry"
    yield
    azure_core.tracing_implementation.unset_value()


def test_azure_sdk_calls_are_child_spans_of_the_work_that_made_them(make_store, azure_sdk_tracing):
    from controlplane.adapters.telemetry import TracedStore
    from controlplane.ports.store import Beat
    from controlplane.ports.telemetry import span

    store = TracedStore(make_store("tables"))  # Table Storage in Azurite, through azure-data-tables
    SPANS.clear()
    with span("decision"):
        store.beat(Beat("sweep", datetime.now(UTC), {"due": 1}))
    finished = SPANS.get_finished_spans()
    [decided] = [s for s in finished if s.name == "decision"]
    [write] = [s for s in finished if s.name == "store.beat"]
    assert write.parent.span_id == decided.context.span_id
    sdk_calls = [s.name for s in finished if s.parent and s.parent.span_id == write.context.span_id]
    assert any("upsert_entity" in name for name in sdk_calls), sdk_calls


def test_each_decision_is_one_json_log_record_with_its_ids_and_no_evidence(services, caplog):
    from controlplane.handlers.registry import receive_registry_event
    from tests.support import event_bytes

    caplog.set_level("INFO", logger="controlplane.handlers.record")
    decision = receive_registry_event(services, event_bytes("eg_model_registered_docs.json").decode())
    [logged] = [r for r in caplog.records if r.name == "controlplane.handlers.record"]
    fields = json.loads(logged.getMessage().removeprefix("decision "))
    assert fields["decision_id"] == decision.id and fields["correlation_id"] == decision.correlation_id
    assert (fields["outcome"], fields["idempotency_key"]) == (decision.outcome.value, decision.idempotency_key)
    assert fields["tasks"] == [t.kind.value for t in decision.tasks] and "evidence" not in fields
    # The same fields as attributes, which the Azure Monitor log exporter sends as custom dimensions.
    assert getattr(logged, "controlplane.correlation_id") == decision.correlation_id


def test_a_sweep_looks_at_the_whole_store_every_five_minutes_and_carries_what_it_saw_between(services, clock):
    from controlplane.domain.ledger import Verdict, record
    from controlplane.domain.requests import Notify
    from controlplane.handlers.health import OBSERVE_EVERY, SWEEP, record_sweep

    first = record_sweep(services, {"due": 0})
    services.store.append(record(Verdict(Outcome.NOTIFY, "tell", tasks=(Notify(channel="ops", event="a"),)),
                                 key="k", event_id="e", source=Source.ALERT, event_type="t", policy_version="v",
                                 received_at=clock.now(), decided_at=clock.now()))
    clock.advance(minutes=1)
    carried = record_sweep(services, {"due": 1})
    assert carried.at == clock.now() and carried.details["report"] == {"due": 1}
    assert carried.details["observed_at"] == first.details["observed_at"] and carried.details["outbox"]["pending"] == 0
    clock.advance(seconds=OBSERVE_EVERY.total_seconds() - 60)
    looked = record_sweep(services, {"due": 0})
    assert looked.details["observed_at"] == clock.now().isoformat() and looked.details["outbox"]["pending"] == 1
    assert services.store.last_beat(SWEEP) == looked

"""The store's figures for ``make bench``: requests per event on Table Storage (Azurite) beside store operations
on SQLite, and the decision pages of a 200,000-decision ledger beside the same pages of a 2,000-decision one.

``python bench/store_bench.py [decisions]`` runs them alone (fewer decisions for a quick look).
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.drift_bench import _figure, _table  # noqa: E402

SCALE = 200_000
MODELS = 200
DAYS = 400
BASELINE = 2_000
_T0 = datetime(2025, 10, 1, tzinfo=UTC)


class _Counted:
    """A store whose port calls are counted (each a transaction or a query on SQLite)."""

    def __init__(self, store):
        self._store, self.calls = store, Counter()

    def __getattr__(self, name):
        attribute = getattr(self._store, name)
        if not callable(attribute):
            return attribute

        def counted(*args, **kwargs):
            self.calls[name] += 1
            return attribute(*args, **kwargs)

        return counted


def _table_store(connection: str):
    """A TableStore on Azurite whose HTTP requests are counted."""
    from azure.core.pipeline.transport import RequestsTransport
    from azure.data.tables import TableServiceClient

    from controlplane.adapters.table_store import TableStore

    class Counting(RequestsTransport):
        requests = 0

        def send(self, request, **kwargs):
            Counting.requests += 1
            return super().send(request, **kwargs)

    service = TableServiceClient.from_connection_string(connection, transport=Counting())
    store = TableStore(service, prefix=f"bench{uuid.uuid4().hex[:8]}")
    return store, Counting


def _services(store):
    from bench.run import REGISTRY_POLICY
    from controlplane.adapters.clock import SystemClock
    from controlplane.adapters.dry_run import DryRunDispatcher
    from controlplane.domain.policy import parse_policy
    from controlplane.ports.store import Services

    return Services(store=store, clock=SystemClock(), dispatcher=DryRunDispatcher(), policy=parse_policy(
        REGISTRY_POLICY))


def _intake(services, events) -> None:
    from controlplane.handlers.registry import receive_registry_event
    from controlplane.handlers.sweep import sweep

    for event in events:
        receive_registry_event(services, event)
    while sweep(services).due:  # dispatch the outbox the events filled
        pass


def requests_per_event(azurite, n: int = 300) -> list[dict]:
    """The registry mix through the intake and the sweeps that dispatch its tasks, on both stores."""
    from bench.run import _registry_stream
    from controlplane.adapters.sqlite_store import SqliteStore

    print(f"requests per event: {n} registry events on Azurite and SQLite ...", flush=True)
    events = _registry_stream(n)
    store, transport = _table_store(azurite.connection_string)
    counted = _Counted(store)
    transport.requests = 0
    _intake(_services(counted), events)
    tables = transport.requests / len(events)
    with tempfile.TemporaryDirectory() as workdir:
        sqlite = _Counted(SqliteStore(f"{workdir}/bench.db"))
        _intake(_services(sqlite), events)
    operations = sum(sqlite.calls.values()) / len(events)
    return [_figure("tables.requests_per_registry_event", tables, "requests", operations,
                    "beside SQLite's store operations per event (same events, same sweeps)", None)]


def requests_per_telemetry_event(azurite, events: int = 300) -> list[dict]:
    """Event Hubs batches of 100 events (20 records each) through the telemetry intake, on both stores."""
    import json

    from controlplane.adapters.sqlite_store import SqliteStore
    from controlplane.domain.policy import parse_policy
    from controlplane.handlers.telemetry import RawTelemetry, receive_telemetry
    from controlplane.ports.store import Services

    print(f"requests per telemetry event: {events} events on Azurite and SQLite ...", flush=True)
    now = datetime.now(UTC).replace(microsecond=0).isoformat()
    bodies = [json.dumps([{"model": "churn", "version": "3", "endpoint": "churn-ep", "deployment": "green",
                           "request_id": f"{e}-{i}", "timestamp": now, "outputs": {"score": 0.5},
                           "inputs": {"age": (e * i) % 90}} for i in range(20)]).encode() for e in range(events)]
    policy = parse_policy("models:\n  - name: churn\n    drift: {reference: r.csv, columns: {age: numerical}, "
                          "window: {records: 1000000, minutes: 600, sample: 200}}\n")

    def ingest(store) -> None:
        from controlplane.adapters.clock import SystemClock
        from controlplane.adapters.dry_run import DryRunDispatcher

        services = Services(store=store, clock=SystemClock(), dispatcher=DryRunDispatcher(), policy=policy)
        for start in range(0, events, 100):
            receive_telemetry(services, [RawTelemetry("0", n, None, bodies[n]) for n in range(start, start + 100)])

    store, transport = _table_store(azurite.connection_string)
    transport.requests = 0
    ingest(store)
    tables = transport.requests / events
    with tempfile.TemporaryDirectory() as workdir:
        sqlite = _Counted(SqliteStore(f"{workdir}/bench.db"))
        ingest(sqlite)
    operations = sum(sqlite.calls.values()) / events
    return [_figure("tables.requests_per_telemetry_event", tables, "requests", operations,
                    "beside SQLite's store operations per event (batches of 100 events)", None)]


def _decisions(n: int, seed: int = 0):
    """``n`` decisions over MODELS models and DAYS days, the registry's outcomes, oldest first."""
    from controlplane.domain.ledger import Outcome, Source, Verdict, record

    outcomes = (Outcome.NO_ACTION, Outcome.NO_ACTION, Outcome.NO_ACTION, Outcome.REQUEST_APPROVAL, Outcome.RETRAIN,
                Outcome.REJECT)
    spacing = timedelta(days=DAYS) / n
    for i in range(n):
        at = _T0 + spacing * i
        verdict = Verdict(outcomes[i % len(outcomes)], "bench", model=f"model-{(i * 7) % MODELS:03d}",
                          version=str(i % 9), evidence={"n": i})
        yield record(verdict, key=f"bench:{seed}:{i}", event_id=f"e{i}", source=Source.EVENTGRID,
                     event_type="Microsoft.MachineLearningServices.RunStatusChanged", policy_version="v1",
                     received_at=at, decided_at=at)


def load(store, n: int) -> None:
    """Write ``n`` decisions as the store writes them (the decision in its model's partition, its index rows in
    its day's, the day and model listed) as a repaired ledger holds them (no markers left), a transaction of 100
    rows at a time instead of one decision at a time."""
    from azure.data.tables import UpdateMode

    from controlplane.adapters.table_store import _day_partition, _index_entities, partition_of

    models: dict[str, list] = {}
    days: dict[str, list] = {}
    for decision in _decisions(n):
        pk = partition_of(decision.model)
        store._register(decision, pk)
        models.setdefault(pk, []).extend(("create", e) for e in store._decision_entities(pk, decision))
        day = _day_partition(decision.decided_at)
        days.setdefault(day, []).extend(("upsert", e, {"mode": UpdateMode.REPLACE})
                                        for e in _index_entities(day, decision))
    batches = [operations[start:start + 100] for groups in (models, days) for operations in groups.values()
               for start in range(0, len(operations), 100)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(store._ledger.submit_transaction, batches))


def _timed(query, runs: int = 5) -> float:
    """Median seconds of ``query()`` over ``runs``."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        query()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _pages(store, transport) -> dict[str, tuple[float, int]]:
    from controlplane.domain.ledger import Outcome

    first = store.decision_page(50)
    middle = _T0 + timedelta(days=DAYS // 2)
    queries = {
        "first page across models": lambda: store.decision_page(50),
        "second page (continuation)": lambda: store.decision_page(50, first.after),
        "by outcome (retrain)": lambda: store.decision_page(50, outcomes=[Outcome.RETRAIN]),
        "one model's timeline": lambda: store.decision_page(50, model="model-042"),
        "model and outcome": lambda: store.decision_page(50, model="model-042", outcomes=[Outcome.RETRAIN]),
        "a week, mid-ledger": lambda: store.decision_page(50, since=middle, until=middle + timedelta(days=7)),
    }
    found = {}
    for name, query in queries.items():
        seconds = _timed(query)
        transport.requests = 0
        query()
        found[name] = (seconds, transport.requests)
    return found


def scale(azurite, n: int = SCALE) -> list[dict]:
    print(f"scale: {n:,} and {BASELINE:,} decisions over {MODELS} models and {DAYS} days on Azurite ...", flush=True)
    small, small_transport = _table_store(azurite.connection_string)
    load(small, BASELINE)
    baseline = _pages(small, small_transport)
    scan_started = time.perf_counter()  # what the listing across models did before the index
    rows = list(small._ledger.query_entities("Kind eq 'decision'"))
    sorted(rows, key=lambda row: row["RowKey"].split("|")[1])
    scan = time.perf_counter() - scan_started

    large, large_transport = _table_store(azurite.connection_string)
    started = time.perf_counter()
    load(large, n)
    print(f"  loaded {n:,} decisions in {time.perf_counter() - started:.0f} s", flush=True)
    measured = _pages(large, large_transport)
    figures = [_figure("tables.scan_across_models_before_index", scan, "s", None,
                       f"the old listing at {BASELINE:,} decisions (reads every decision row)", None)]
    for name, (seconds, requests) in measured.items():
        base_seconds, _ = baseline[name]
        figures.append(_figure(f"tables.page.{name} ({requests} requests)", seconds, "s", base_seconds,
                               f"within 10x of {BASELINE:,} decisions", seconds <= 10 * base_seconds))
    return figures


def run(n: int = SCALE) -> list[dict]:
    from tests.support import Azurite

    azurite = Azurite().start()
    try:
        return requests_per_event(azurite) + requests_per_telemetry_event(azurite) + scale(azurite, n)
    finally:
        azurite.close()


if __name__ == "__main__":
    print(_table(run(int(sys.argv[1]) if len(sys.argv) > 1 else SCALE)))

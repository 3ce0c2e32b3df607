"""Failures in the middle of work: storage going away mid-batch, a host killed mid-delivery holding a
claim. After recovery the state is the state an undisturbed run reaches: nothing lost, nothing counted twice."""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import closing
from dataclasses import replace
from datetime import datetime

import pytest

from controlplane.domain.errors import TransientError
from controlplane.domain.ledger import Outcome
from tests.support import Azurite, load_event, local_host, request


def telemetry_batch(events=90, per_event=4):
    from controlplane.handlers.telemetry import RawTelemetry

    now = "2026-11-22T10:00:00Z"
    batch = []
    for sequence in range(events):
        records = [{"model": "churn", "version": "3", "endpoint": "churn-ep", "deployment": "green",
                    "request_id": f"{sequence}-{i}", "timestamp": now, "inputs": {"age": 30 + i}, "outputs": {}}
                   for i in range(per_event)]
        batch.append(RawTelemetry("0", sequence, None, json.dumps(records).encode()))
    return batch


def test_storage_going_away_mid_batch_raises_for_the_retry_which_then_lands_exactly(services, monkeypatch):
    from azure.data.tables import TableServiceClient

    from controlplane.adapters.table_store import TableStore
    from controlplane.handlers.telemetry import receive_telemetry

    azurite = Azurite(persistent=True).start()
    try:
        service = TableServiceClient.from_connection_string(azurite.connection_string, retry_total=0,
                                                            connection_timeout=2)
        store = TableStore(service, prefix="outage")
        services = replace(services, store=store)
        services.clock.moment = services.clock.moment.replace(hour=10, minute=1)
        real_chunk, chunks = TableStore._append_chunk, []

        def first_chunk_then_outage(self, *args, **kwargs):
            result = real_chunk(self, *args, **kwargs)
            chunks.append(result)
            if len(chunks) == 1:
                azurite.stop()  # the storage account goes away between two transactions
            return result

        monkeypatch.setattr(TableStore, "_append_chunk", first_chunk_then_outage)
        batch = telemetry_batch()
        with pytest.raises(TransientError):  # the function raises: the host's retry policy runs
            receive_telemetry(services, batch)
        monkeypatch.undo()

        azurite.start()  # the same account comes back with what it had
        retry = receive_telemetry(services, batch)  # the retry redelivers the whole batch
        assert retry.duplicates == chunks[0].stored  # the first transaction's records were kept, once
        assert store.telemetry_count("churn", "green") == 90 * 4  # nothing lost, nothing twice
    finally:
        azurite.close()


def test_a_decision_interrupted_by_an_outage_is_decided_once_after_recovery(services, monkeypatch):
    from azure.data.tables import TableServiceClient

    from controlplane.adapters.table_store import TableStore
    from controlplane.handlers.registry import receive_registry_event

    azurite = Azurite(persistent=True).start()
    try:
        service = TableServiceClient.from_connection_string(azurite.connection_string, retry_total=0,
                                                            connection_timeout=2)
        services = replace(services, store=TableStore(service, prefix="outage2"))
        real_write = TableStore.complete_unclaimed

        def outage_before_writing(self, key, partition, decision):
            azurite.stop()
            return real_write(self, key, partition, decision)

        monkeypatch.setattr(TableStore, "complete_unclaimed", outage_before_writing)
        event = load_event("eg_monitor_breach.json")[0]
        with pytest.raises(TransientError):
            receive_registry_event(services, event)
        monkeypatch.undo()
        azurite.start()

        # Decided and written in one go, the key holds no claim: the retry decides at once.
        decision = receive_registry_event(services, event)
        assert decision.outcome is Outcome.RETRAIN
        assert [d.outcome for d in services.store.decisions(model="churn")] == [Outcome.RETRAIN]
        assert len(services.store.tasks()) == 1  # no orphan task from the interrupted attempt
    finally:
        azurite.close()


def outcomes_by_event(path):
    try:  # read-only: the host creates the database on its first event
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            rows = db.execute("SELECT body FROM decisions").fetchall()
    except sqlite3.OperationalError:
        return {}
    found = {}
    for (body,) in rows:
        decision = json.loads(body)
        if decision["outcome"] != "duplicate":
            assert decision["event_id"] not in found, f"two decisions for {decision['event_id']}"
            found[decision["event_id"]] = (decision["outcome"], decision["reason"])
    return found


def held_claims(path):
    """Keys claimed and not completed, with the end of their lease (epoch seconds)."""
    try:  # read-write (never creating it): a database whose writer was killed is recovered from its log
        with closing(sqlite3.connect(f"file:{path}?mode=rw", uri=True)) as db:
            rows = db.execute("SELECT key, lease_until FROM claims WHERE state = 'INPROGRESS'").fetchall()
    except sqlite3.OperationalError:
        return {}
    return {key: datetime.fromisoformat(until).timestamp() for key, until in rows}


def deliver(host, delivery):
    kind, payload = delivery
    if kind == "alert":
        return request("POST", f"{host.url}/api/alerts", json.dumps(payload), {"Content-Type": "application/json"})
    return host.post_events([payload])


def delivery_id(delivery):
    kind, payload = delivery
    return payload["data"]["essentials"]["alertId"] if kind == "alert" else payload["id"]


def post_all(host, deliveries, log=None, patience=60.0):
    """Deliver like Event Grid and action groups: retry each one until the host accepts it."""
    for delivery in deliveries:
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline:
            try:
                status = deliver(host, delivery).status
            except OSError:
                status = None  # the host is down: the sender keeps retrying
            if log is not None:
                log.append((time.time(), delivery_id(delivery), status))
            if status in (200, 202):
                break
            time.sleep(0.02)
        else:
            raise AssertionError(f"{delivery_id(delivery)} never accepted")


# Run in the host before it serves: each claimed decision (alerts claim their key first) takes half a second
# to complete, so a kill lands while a claim is held.
SLOW_CLAIMED_DECISIONS = """
import time
from controlplane.adapters.sqlite_store import SqliteStore
_complete = SqliteStore.complete
def _complete_slowly(self, claim, decision):
    time.sleep(0.5)
    _complete(self, claim, decision)
SqliteStore.complete = _complete_slowly
"""


def crash_deliveries():
    template, alert = load_event("eg_monitor_breach.json")[0], load_event("alert_metric_fired.json")
    deliveries = []
    for n in range(60):
        event = json.loads(json.dumps(template))
        event["id"] = f"crash-{n:03d}"
        event["data"]["experimentName"] = ["churn-monitor", "defect-detector-drift", "ticket-classifier-monitor"][n % 3]
        deliveries.append(("registry", event))
        if n % 3 == 2:  # an alert of its own rule, so its own incident, after every third event
            fired = json.loads(json.dumps(alert))
            fired["data"]["essentials"].update(alertId=f"crash-alert-{n:03d}", alertRule=f"crash-rule-{n:03d}")
            deliveries.append(("alert", fired))
    return deliveries


def test_a_host_killed_mid_delivery_and_restarted_converges_to_the_undisturbed_decisions(tmp_path):
    deliveries = crash_deliveries()
    calm = tmp_path / "calm"
    calm.mkdir()
    with local_host({"CONTROLPLANE_STORE": f"sqlite:///{calm}/cp.db"}, calm) as host:
        post_all(host, deliveries)
    expected = outcomes_by_event(calm / "cp.db")
    assert len(expected) == len(deliveries)

    stormy = tmp_path / "stormy"
    stormy.mkdir()
    lease = 10
    env = {"CONTROLPLANE_STORE": f"sqlite:///{stormy}/cp.db", "CONTROLPLANE_LEASE_SECONDS": str(lease)}
    log = []
    with local_host(env, stormy, preload=SLOW_CLAIMED_DECISIONS) as host:
        poster = threading.Thread(target=post_all, args=(host, deliveries, log))
        poster.start()
        while len(outcomes_by_event(stormy / "cp.db")) < 20:
            time.sleep(0.01)
        seen = held_claims(stormy / "cp.db")  # a claim held for a while already may complete any moment
        while not (held := held_claims(stormy / "cp.db").keys() - seen.keys()):
            time.sleep(0.002)
        host.kill()  # SIGKILL while an alert's claim is held (just taken): nothing releases it
        killed_at = time.time()
        [(key, lease_until)] = held_claims(stormy / "cp.db").items()
        assert {key} == held and key.startswith("alert:crash-alert-")
        host.start()  # the same store, a new process
        poster.join(timeout=120)
        assert not poster.is_alive()
        post_all(host, deliveries)  # the senders redeliver everything they are unsure about

    # The new process refused the held event while its lease ran, then took the lease over and decided it.
    alert_id = key.split(":")[1]
    answers = [(at, status) for at, delivered, status in log if delivered == alert_id and at > killed_at]
    assert any(status == 503 and at < lease_until for at, status in answers), answers
    assert min(at for at, status in answers if status == 200) >= lease_until
    assert held_claims(stormy / "cp.db") == {}
    assert outcomes_by_event(stormy / "cp.db") == expected


STORM_POLICY = """
models:
  - name: "defect-*"
    profile: cv
    review: {assignees: [vision-reviewers@contoso.com]}
monitors: {defect-detector-drift: defect-detector}
"""


# Table Storage writes each decision's index rows in a second transaction: about 1.6 times the requests of the
# deliveries alone, past the suite's default 300 s on a 2-core machine.
@pytest.mark.timeout(600)
@pytest.mark.parametrize("store", ["sqlite", "tables"])
def test_ten_thousand_deliveries_with_thirty_percent_duplicates_from_eight_posters(store, tmp_path, request):
    import random
    import uuid

    (tmp_path / "policy.yaml").write_text(STORM_POLICY)
    # The host is not measured by coverage (an empty COVERAGE_PROCESS_CONFIG starts none): tracing its ten thousand
    # deliveries would add minutes to the suite and cover nothing the other host tests do not.
    env = {"CONTROLPLANE_STORE": f"sqlite:///{tmp_path}/cp.db", "CONTROLPLANE_POLICY": str(tmp_path / "policy.yaml"),
           "COVERAGE_PROCESS_CONFIG": ""}
    if store == "tables":
        env.update(CONTROLPLANE_STORE="tables", CONTROLPLANE_TABLE_PREFIX=f"storm{uuid.uuid4().hex[:8]}",
                   AzureWebJobsStorage=request.getfixturevalue("azurite").connection_string)
    template = load_event("eg_monitor_breach.json")[0]
    template["data"]["experimentName"] = "defect-detector-drift"
    unique = [{**template, "id": f"storm-{n:05d}"} for n in range(7000)]
    rng = random.Random(8)
    deliveries = unique + [rng.choice(unique) for _ in range(3000)]
    rng.shuffle(deliveries)
    shares = [deliveries[i::8] for i in range(8)]

    with local_host(env, tmp_path) as host:
        threads = [threading.Thread(target=post_all, args=(host, [("registry", event) for event in share]))
                   for share in shares]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=600)
        decisions = host.decisions(limit=500)  # the API's page; the store is read in full below

    assert decisions
    if store == "sqlite":
        with sqlite3.connect(tmp_path / "cp.db") as db:
            outcomes = dict(db.execute("SELECT outcome, count(*) FROM decisions GROUP BY outcome").fetchall())
            tasks = db.execute("SELECT count(*) FROM tasks").fetchone()[0]
            reviews = db.execute("SELECT count(*) FROM reviews").fetchone()[0]
    else:
        from azure.data.tables import TableServiceClient

        from controlplane.adapters.table_store import TableStore

        table_store = TableStore(TableServiceClient.from_connection_string(env["AzureWebJobsStorage"]),
                                 prefix=env["CONTROLPLANE_TABLE_PREFIX"])
        found = table_store.decisions(model="defect-detector", limit=20_000)
        outcomes = {o: sum(d.outcome.value == o for d in found) for o in ("review", "duplicate")}
        tasks, reviews = len(table_store.tasks(limit=100_000)), len(table_store.reviews(limit=100_000))
    assert outcomes["review"] == 7000 and outcomes["duplicate"] == 3000  # none lost, none decided twice
    assert tasks == 7000 and reviews == 7000  # one review (and its notice) per event

"""Four processes append to the same model's window on Table Storage (Azurite) at once: counts stay
exact, every window closes once, and each closed window gets exactly one decision.

The race is forced: in every round each process reads the window, then waits at a barrier shared through
files until all four have read it, and only then writes. So in every round all four write from the same
ETag, one wins and the other three must conflict, re-read and retry."""
from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime

from tests.support import ROOT

POLICY = """
models:
  - name: churn
    drift:
      reference: unused.csv
      columns: {age: numerical}
      window: {records: 100, minutes: 600, grace_minutes: 5, sample: 100}
"""

WORKER = """
import json, sys
from datetime import timedelta
from azure.data.tables import TableServiceClient
from controlplane.adapters.clock import SystemClock
from controlplane.adapters.dry_run import DryRunDispatcher
from controlplane.adapters.table_store import TableStore
from controlplane.domain.policy import parse_policy
from controlplane.ports.store import Services
from controlplane.handlers.telemetry import RawTelemetry, receive_telemetry

import pathlib, time
from azure.data.tables import TableClient
from controlplane.adapters import table_store

connection, prefix, worker, timestamp, policy, rendezvous = sys.argv[1:7]
rendezvous, workers, state = pathlib.Path(rendezvous), 4, {"round": None, "conflicts": 0}
real_submit, real_append = TableClient.submit_transaction, table_store.TableStore._append_chunk


def submit_when_all_have_read(self, operations, **kwargs):
    if state["round"] is not None:  # the round's first write: wait until every process has read
        arrived, state["round"] = f"{state['round']}-", None
        (rendezvous / f"{arrived}{worker}").touch()
        deadline = time.monotonic() + 60
        while len(list(rendezvous.glob(f"{arrived}*"))) < workers and time.monotonic() < deadline:
            time.sleep(0.002)
    return real_submit(self, operations, **kwargs)


def counting_conflicts(self, *args, **kwargs):
    try:
        return real_append(self, *args, **kwargs)
    except table_store._Conflict:
        state["conflicts"] += 1
        raise


TableClient.submit_transaction = submit_when_all_have_read
table_store.TableStore._append_chunk = counting_conflicts
store = TableStore(TableServiceClient.from_connection_string(connection), prefix=prefix)
services = Services(store=store, clock=SystemClock(), dispatcher=DryRunDispatcher(), policy=parse_policy(policy),
                    lease=timedelta(minutes=5))
decided = []
for batch in range(6):
    events = []
    for n in range(5):
        sequence = batch * 5 + n
        records = [{"model": "churn", "version": "3", "endpoint": "churn-ep", "deployment": "green",
                    "request_id": f"{worker}-{sequence}-{i}", "timestamp": timestamp, "inputs": {"age": 30 + i},
                    "outputs": {}} for i in range(4)]
        events.append(RawTelemetry(str(worker), sequence, None, json.dumps(records).encode()))
    state["round"] = batch
    report = receive_telemetry(services, events)
    if batch == 2:  # a redelivered batch, as after a lost checkpoint
        assert receive_telemetry(services, events).stored == 0
    decided += [d.idempotency_key for d in report.windows]
print(json.dumps({"decided": decided, "conflicts": state["conflicts"]}))
"""


def test_four_processes_on_one_window_count_exactly_and_decide_each_window_once(azurite, tmp_path):
    prefix = f"conc{uuid.uuid4().hex[:8]}"
    timestamp = datetime.now(UTC).replace(microsecond=0).isoformat()
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, azurite.connection_string, prefix, str(w), timestamp,
                                 POLICY, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
               for w in range(4)]
    outputs = [worker.communicate(timeout=240) for worker in workers]
    assert all(worker.returncode == 0 for worker in workers), [err[-1500:] for _, err in outputs]
    reports = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    decided = [key for report in reports for key in report["decided"]]
    # every round, three of the four wrote from an ETag another had just moved on: the guard turned them back
    assert sum(report["conflicts"] for report in reports) >= 3 * 6

    from azure.data.tables import TableServiceClient

    from controlplane.adapters.table_store import TableStore

    store = TableStore(TableServiceClient.from_connection_string(azurite.connection_string), prefix=prefix)
    total = 4 * 6 * 5 * 4  # workers x batches x events x records
    assert store.telemetry_count("churn", "green") == total
    assert len(decided) == total // 100 == len(set(decided))  # each full window closed and decided once
    decisions = [d for d in store.decisions(model="churn", limit=500) if d.event_type == "drift.window"]
    assert sorted(d.idempotency_key for d in decisions) == sorted(decided)

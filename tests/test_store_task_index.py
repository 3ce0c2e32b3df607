"""The outbox's reads by state, one contract over the fake, SQLite and Table Storage (on Azurite), and the
task-state index that answers them on Table Storage without scanning the ledger.

Table Storage keeps a row per pending or dead-lettered task in ``_tasks|<state>``, written before the task enters
the state and deleted after it leaves; the later tests count which partitions a read names, stop the process
between the two writes, and check that what is left over is either still found or dropped by a later read.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from controlplane.adapters import table_store
from controlplane.domain.ledger import TaskState
from controlplane.handlers import taskops
from controlplane.ports.store import Services
from tests.fakes import FakeClock, RecordingDispatcher
from tests.test_store_contract import LEASE, T0, decision_for
from tests.test_store_pages import partitions_read

PENDING, DEAD = "_tasks|pending", "_tasks|dead_lettered"


@pytest.fixture(params=["fake", "sqlite", "tables"])
def store(request, make_store):
    return make_store(request.param)


def write(store, key, *, model="churn", at=T0, tasks=1):
    """A decision with ``tasks`` tasks, written as the intake writes it; its tasks."""
    decision = decision_for(key, model=model, at=at, tasks=tasks)
    store.complete(store.claim(key, model, at, LEASE), decision)
    return list(decision.tasks)


def dispatched(store, task, state, *, due=None, at=T0):
    """``task`` after one dispatch, as the sweep writes it: ``state``, one more attempt, due at ``due``."""
    updated = replace(task, state=state, attempts=task.attempts + 1, due_at=due or task.due_at, updated_at=at)
    store.update_task(task, updated)
    return updated


def ids(tasks):
    return [t.id for t in tasks]


def index_rows(store, partition):
    return [(row["RowKey"], row["TaskId"]) for row in store._ledger.query_entities(
        "PartitionKey eq @pk", parameters={"pk": partition})]


# -- the contract ----------------------------------------------------------------------------------------------
def test_pending_and_dead_lettered_tasks_are_read_by_state_soonest_due_first(store):
    a = write(store, "a", at=T0 + timedelta(minutes=3))
    b = write(store, "b", model="fraud", at=T0 + timedelta(minutes=1), tasks=2)
    c = write(store, "c", model="defect", at=T0 + timedelta(minutes=2))
    dispatched(store, a[0], TaskState.SUCCEEDED)
    dead = dispatched(store, b[1], TaskState.DEAD_LETTERED)
    later = dispatched(store, c[0], TaskState.PENDING, due=T0 + timedelta(hours=1))

    assert ids(store.tasks(TaskState.PENDING)) == [b[0].id, later.id]
    assert ids(store.tasks(TaskState.DEAD_LETTERED)) == [dead.id]
    assert store.tasks(TaskState.PENDING)[1] == later
    assert ids(store.due_tasks(T0 + timedelta(minutes=5), 10)) == [b[0].id]
    assert ids(store.due_tasks(T0 + timedelta(hours=1), 10)) == [b[0].id, later.id]
    assert ids(store.due_tasks(T0 + timedelta(hours=1), 1)) == [b[0].id]
    assert ids(store.tasks(TaskState.PENDING, 1)) == [b[0].id]
    assert store.due_tasks(T0, 10) == []


def test_a_task_that_waits_and_fails_on_moves_through_the_states_it_is_read_in(store):
    [task] = write(store, "w")
    backoff = dispatched(store, task, TaskState.PENDING, due=T0 + timedelta(minutes=1))
    assert store.due_tasks(T0 + timedelta(seconds=59), 10) == []
    assert store.due_tasks(T0 + timedelta(minutes=1), 10) == [backoff]
    dead = dispatched(store, backoff, TaskState.DEAD_LETTERED)
    assert store.due_tasks(T0 + timedelta(days=1), 10) == [] and store.tasks(TaskState.PENDING) == []
    assert store.tasks(TaskState.DEAD_LETTERED) == [dead]


def test_a_retried_and_a_replayed_dead_letter_are_pending_and_due_again(store, policy):
    clock = FakeClock(T0 + timedelta(hours=2))
    services = Services(store=store, clock=clock, dispatcher=RecordingDispatcher(), policy=policy)
    first, second = (dispatched(store, t, TaskState.DEAD_LETTERED) for t in write(store, "r", tasks=2))
    assert ids(store.tasks(TaskState.DEAD_LETTERED)) == sorted([first.id, second.id])

    retried = taskops.retry_task(services, first.id)
    assert store.tasks(TaskState.DEAD_LETTERED) == [second] and store.tasks(TaskState.PENDING) == [retried]
    assert store.due_tasks(clock.now(), 10) == [retried] and retried.due_at == clock.now()

    clock.advance(minutes=1)
    [replayed] = taskops.replay_dead_letters(services)
    assert replayed.id == second.id and replayed.attempts == 0
    assert store.tasks(TaskState.DEAD_LETTERED) == []
    assert store.due_tasks(clock.now(), 10) == [retried, replayed]
    if store.name == "tables":
        assert sorted(task for _, task in index_rows(store, PENDING)) == sorted([first.id, second.id])
        assert index_rows(store, DEAD) == []


# -- Table Storage: which partitions the reads name ----------------------------------------------------------
def test_due_tasks_and_lists_by_state_read_only_the_index_and_the_tasks_own_partitions(counted):
    store, requests = counted
    tasks = [t for i, model in enumerate(("churn", "fraud", "churn", "defect")) for t in write(
        store, f"p{i}", model=model, at=T0 + timedelta(minutes=i), tasks=2)]
    dispatched(store, tasks[0], TaskState.DEAD_LETTERED)
    dispatched(store, tasks[1], TaskState.SUCCEEDED)
    for _ in range(40):  # history the reads must not go through
        write(store, f"h{_}", model="churn", at=T0 - timedelta(days=1), tasks=0)

    requests.clear()
    assert len(store.due_tasks(T0 + timedelta(hours=1), 100)) == 6
    assert partitions_read(requests) == [PENDING, "fraud", "churn", "defect"]  # one query per model partition

    requests.clear()
    assert ids(store.due_tasks(T0 + timedelta(minutes=1), 1)) == [min(tasks[2].id, tasks[3].id)]
    assert partitions_read(requests) == [PENDING, "fraud"]  # a page of the limit's size, its tasks alone

    requests.clear()
    assert len(store.tasks(TaskState.PENDING)) == 6 and ids(store.tasks(TaskState.DEAD_LETTERED)) == [tasks[0].id]
    assert None not in partitions_read(requests)
    assert set(partitions_read(requests)) == {PENDING, DEAD, "churn", "fraud", "defect"}


def test_many_due_tasks_of_one_model_are_fetched_a_few_rows_a_query(counted):
    store, requests = counted
    for i in range(3):
        write(store, f"m{i}", at=T0 + timedelta(seconds=i), tasks=10)
    requests.clear()
    due = store.due_tasks(T0 + timedelta(minutes=1), 100)
    assert len(due) == 30 and due == sorted(due, key=lambda t: (t.due_at, t.id))
    assert partitions_read(requests) == [PENDING, "churn", "churn", "churn"]  # 30 rows, 14 a query


def test_the_index_costs_a_transaction_per_decision_with_tasks_and_a_request_or_two_per_change(counted):
    store, requests = counted
    write(store, "first")  # lists the day once
    requests.clear()
    [task] = write(store, "counted", at=T0 + timedelta(minutes=5))
    assert [method for method, _ in requests] == ["POST"] * 4  # claim, task index, decision, decision index

    requests.clear()
    backoff = dispatched(store, task, TaskState.PENDING, due=T0 + timedelta(minutes=6))
    assert [method for method, _ in requests] == ["GET", "PUT", "PUT", "DELETE"]  # read, new row, task, old row
    requests.clear()
    dispatched(store, backoff, TaskState.SUCCEEDED)
    assert [method for method, _ in requests] == ["GET", "PUT", "DELETE"]


# -- Table Storage: crashes between the index and the task ---------------------------------------------------
class _Stopping:
    """The ledger table, except that the process stops at the first call of ``method`` that ``when`` picks."""

    def __init__(self, table, method, when):
        self._table, self._method, self._when = table, method, when

    def __getattr__(self, name):
        attribute = getattr(self._table, name)
        if name != self._method:
            return attribute

        def call(*args, **kwargs):
            if self._when(*args, **kwargs):
                raise SystemExit("the instance stopped")
            return attribute(*args, **kwargs)

        return call


@contextmanager
def stops_at(store, method, when):
    original = store._ledger
    store._ledger = _Stopping(original, method, when)
    try:
        with pytest.raises(SystemExit):
            yield
    finally:
        store._ledger = original


def task_write(entity, **_):
    return entity["RowKey"].startswith("task|")


def test_a_decision_whose_transaction_never_came_leaves_index_rows_dropped_only_after_the_grace(make_store):
    store = make_store("tables")
    decision = decision_for("lost", tasks=2)
    with stops_at(store, "submit_transaction", lambda operations: any(
            op[1]["RowKey"].startswith("task|") for op in operations)):
        store.complete(store.claim("lost", "churn", T0, LEASE), decision)
    assert store.tasks() == [] and len(index_rows(store, PENDING)) == 2

    now = datetime.now(UTC)
    assert store.due_tasks(now, 10) == [] and len(index_rows(store, PENDING)) == 2  # may be a write under way
    assert store.tasks(TaskState.PENDING) == [] and len(index_rows(store, PENDING)) == 2
    assert store.due_tasks(now + table_store.INDEX_GRACE + timedelta(minutes=1), 10) == []
    assert index_rows(store, PENDING) == []


def test_a_change_whose_task_write_never_came_leaves_the_task_found_and_the_new_row_dropped_later(make_store):
    store = make_store("tables")
    [task] = write(store, "stop")
    with stops_at(store, "update_entity", task_write):
        dispatched(store, task, TaskState.PENDING, due=T0 + timedelta(hours=1))
    assert len(index_rows(store, PENDING)) == 2  # the old due time's and the new one's

    assert store.due_tasks(T0, 10) == [task]  # as it was before the change
    now = datetime.now(UTC)
    assert store.due_tasks(now, 10) == [task] and len(index_rows(store, PENDING)) == 2
    assert store.due_tasks(now + table_store.INDEX_GRACE + timedelta(minutes=1), 10) == [task]
    assert [key for key, _ in index_rows(store, PENDING)] == [table_store._task_position(task)]


def test_a_row_left_behind_by_a_task_that_succeeded_is_dropped_by_the_next_read(make_store):
    store = make_store("tables")
    [task] = write(store, "done")
    time.sleep(table_store.INDEX_SKEW.total_seconds() + 0.2)  # the dispatch comes later than the decision
    with stops_at(store, "delete_entity", lambda *args, **_: args[0] == PENDING):
        dispatched(store, task, TaskState.SUCCEEDED)
    assert len(index_rows(store, PENDING)) == 1 and store.task(task.id).state is TaskState.SUCCEEDED

    assert store.due_tasks(T0 + timedelta(minutes=1), 10) == []
    assert index_rows(store, PENDING) == []


def test_a_row_written_for_a_retry_still_under_way_is_kept_until_the_task_is_written(make_store):
    store = make_store("tables")
    [task] = write(store, "retry")
    dead = dispatched(store, task, TaskState.DEAD_LETTERED)
    retry = replace(dead, state=TaskState.PENDING, due_at=T0 + timedelta(hours=1), updated_at=T0)
    with stops_at(store, "update_entity", task_write):  # the row is written, the task not yet
        store.update_task(dead, retry)

    assert store.due_tasks(datetime.now(UTC), 10) == []  # a reader in between: the task is not pending yet
    assert index_rows(store, PENDING) == [(table_store._task_position(retry), task.id)]
    store.update_task(dead, retry)  # the retry's write lands
    assert store.due_tasks(T0 + timedelta(hours=1), 10) == [retry]
    assert index_rows(store, DEAD) == []


def test_a_stale_row_written_again_meanwhile_is_not_deleted(make_store):
    """The reader deletes a stray row under the ETag it read, so a writer that rewrote the row keeps it."""
    store = make_store("tables")
    [task] = write(store, "etag")
    [row] = store._ledger.query_entities("PartitionKey eq @pk", parameters={"pk": PENDING})
    store._ledger.upsert_entity(dict(row))  # written again since the reader read it
    with pytest.raises(table_store.ResourceModifiedError):
        store._ledger.delete_entity(row, etag=row.metadata["etag"],
                                    match_condition=table_store.MatchConditions.IfNotModified)
    assert store.due_tasks(T0, 10) == [task]


# -- Table Storage: ledgers written before the index ---------------------------------------------------------
def test_a_ledger_written_without_the_task_index_is_backfilled_resumably_and_idempotently(make_store):
    store = make_store("tables")
    tasks = [t for i in range(4) for t in write(store, f"b{i}", at=T0 + timedelta(minutes=i), tasks=2)]
    dispatched(store, tasks[0], TaskState.SUCCEEDED)
    dead = dispatched(store, tasks[1], TaskState.DEAD_LETTERED)
    pending = sorted(tasks[2:], key=lambda t: (t.due_at, t.id))
    for row in store._ledger.query_entities("PartitionKey ge '_tasks|' and PartitionKey lt '_tasks}'"):
        store._ledger.delete_entity(row)  # as written before the index
    assert store.due_tasks(T0 + timedelta(days=1), 100) == [] and store.tasks(TaskState.DEAD_LETTERED) == []

    indexed, resume, steps = 0, None, 0
    while True:
        done, resume = store.backfill_indexes(resume, pages=1, page_size=4)
        indexed, steps = indexed + done, steps + 1
        if resume is None:
            break
    assert (indexed, steps) == (4 + 7, 3)  # four decisions, six pending tasks and a dead letter, four a page
    rows = (index_rows(store, PENDING), index_rows(store, DEAD))
    assert store.backfill_indexes(page_size=100) == (indexed, None)  # again: the same rows, none twice
    assert (index_rows(store, PENDING), index_rows(store, DEAD)) == rows
    assert store.due_tasks(T0 + timedelta(days=1), 100) == pending
    assert store.tasks(TaskState.DEAD_LETTERED) == [dead]
    assert store.tasks(TaskState.PENDING) == pending


def test_the_sweeps_backfill_an_older_ledger_a_page_each_until_done_and_then_not_again(make_store):
    store = make_store("tables")
    tasks = [t for i in range(3) for t in write(store, f"s{i}", at=T0 + timedelta(minutes=i), tasks=2)]
    for row in store._ledger.query_entities("PartitionKey ge '_tasks|' and PartitionKey lt '_tasks}'"):
        store._ledger.delete_entity(row)  # as written before the index
    assert store.due_tasks(T0 + timedelta(days=1), 100) == []
    backfill = store.backfill_indexes
    store.backfill_indexes = lambda resume=None: backfill(resume, page_size=4)
    progress = []
    for _ in range(3):  # three decisions and six tasks, four rows a sweep
        store.repair_indexes(T0)
        progress.append(store.last_beat("index-backfill").details)
    assert [p["indexed"] for p in progress] == [4, 8, 9] and [p["done"] for p in progress] == [False, False, True]
    assert ids(store.due_tasks(T0 + timedelta(days=1), 100)) == ids(sorted(tasks, key=lambda t: (t.due_at, t.id)))
    store.backfill_indexes = lambda resume=None: pytest.fail("a finished backfill ran again")
    store.repair_indexes(T0)

"""Azure Table Storage store (``CONTROLPLANE_STORE=tables``), with ``AzureWebJobsStorage`` or its
identity-based form (``AzureWebJobsStorage__tableServiceUri`` / ``__accountName``).

Layout of the ledger table, one partition per model (``_`` when an event names none):

- ``claim|<key digest>``: the idempotency record (INPROGRESS with a lease, then COMPLETED);
- ``decision|<inverted time>|<id>``: a decision, newest first within the partition;
- ``task|<id>``: an outbox task;
- ``review|<id>``: a human review, changed only under its ETag;
- ``rollout|<id>``: a progressive rollout, likewise;
- ``incident|<group>`` in partition ``_incidents``: the latest incident of an alert group, likewise;
- ``unindexed|<id>``: a decision whose index rows may be missing, until the sweep's repair drops it.

The index, for reading decisions across models newest first without scanning: ``t|<inverted time>|<id>`` and
``o|<outcome>|<inverted time>|<id>`` rows in partition ``_day|<YYYYMMDD>``, each with the decision's body;
``d|<inverted day>`` rows in ``_days`` list the days, and rows ``<model partition>`` in ``_models|<YYYYMMDD>`` the
models with decisions that day.

The task-state index, for the sweep and the outbox counts without scanning: a row per pending or dead-lettered task
in partition ``_tasks|<state>``, keyed ``<due time in microseconds>|<task id>`` (so soonest due first) and naming
the task's partition. It is written before a task enters the state and deleted after it leaves, and readers check
every row against the task it names (``_indexed_tasks``).

Completing a claim writes the claim, the decision and its tasks in one entity-group transaction
(same table, same partition), so they land together or not at all. Claims and guarded replaces are
``BaseStore``'s rules; a row's version there is its ETag, so every conditional write is optimistic. Telemetry
rows live in their own table, one partition per model and deployment, keyed by Event Hubs partition and sequence
number so redelivery adds nothing.
"""
from __future__ import annotations

import heapq
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any, TypeVar
from urllib.parse import quote, unquote

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import TableClient, TableServiceClient, TableTransactionError, UpdateMode

from controlplane.adapters.store_base import BaseStore, ClaimRecord, R, Record, Stored, guard
from controlplane.domain.errors import StoreRefused, StoreUnavailable
from controlplane.domain.events import TelemetryEvent
from controlplane.domain.incidents import Incident, IncidentState
from controlplane.domain.ledger import Decision, Outcome, Task, TaskState, digest, dumps, loads
from controlplane.domain.paging import Page, refused
from controlplane.domain.reviews import Review, ReviewState
from controlplane.domain.rollout import Rollout, RolloutState
from controlplane.domain.windows import Window, WindowKey, WindowSpec, by_deployment, place, sample_row
from controlplane.ports.store import AppendResult, Beat, Claim
from controlplane.settings import Settings

AZURITE_CONNECTION = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
    "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"
)
INCIDENTS = "_incidents"  # the partition of incidents (no model name starts with '_')
BEATS = "_beats"  # the partition of heartbeats: one row per name (the sweep), its last success
# A string property holds at most 64 KiB of UTF-16; the ledger's JSON keeps non-ASCII text as it is,
# so a chunk must fit even when every character takes two units.
CHUNK_CHARS = 16_000
EVENTS_PER_TRANSACTION = 30  # a dedupe row and a sample row per event, and the windows they move
SEEN_RANGE = 4  # a chunk's dedupe rows are read as one range when its sequence numbers span < 4x their count
CONFLICT_RETRIES = 50
_MAX_TIME_MS = 10 ** 13 - 1
# The index's partitions: one per day of decisions, the list of those days, and per day the models with decisions.
DAY, DAYS, MODELS = "_day|", "_days", "_models|"
_MAX_DAY = 99_999_999
T = TypeVar("T")
PAGE_REQUESTS = 4  # the most queries one list page makes when the service answers short pages
REPAIR_WINDOW = timedelta(hours=2)  # the sweep repairs the markers of models active this recently
BACKFILL = "index-backfill"  # the beat keeping how far the sweeps' own backfill got
# The task-state index: one partition per state a reader lists (the sweep's pending tasks, the dead letters).
TASKS = "_tasks|"
INDEXED = (TaskState.PENDING, TaskState.DEAD_LETTERED)
# An index row that names a task not in its state is deleted once the task was written after it (its writer is done
# or lost its conditional write), allowing this much skew between partitions' clocks; or, failing that, once the row
# is this old (a decision whose transaction never came, a writer that crashed): far longer than any write takes.
INDEX_SKEW = timedelta(seconds=1)
INDEX_GRACE = timedelta(minutes=10)
# Rows a fetch of tasks names: Table Storage takes at most 15 comparisons in a filter, and one is the partition.
FETCH_ROWS = 14
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def partition_of(model: str | None) -> str:
    """A PartitionKey for a model name: '/', '\\', '#' and '?' are not allowed in keys."""
    return quote(model, safe=" -_.:|@") if model else "_"


class TableStore(BaseStore):
    name = "tables"

    def __init__(self, service: TableServiceClient, prefix: str = "controlplane") -> None:
        self._listed: set[tuple[str, str]] = set()  # rows of ``_days`` and ``_models|`` this instance wrote
        self._backfilled = False  # the sweeps' backfill of a ledger older than the indexes is done
        with self._errors():
            self._ledger = service.create_table_if_not_exists(f"{prefix}ledger")
            self._telemetry = service.create_table_if_not_exists(f"{prefix}telemetry")

    @classmethod
    def from_settings(cls, settings: Settings) -> TableStore:
        options = dict(retry_total=3, retry_backoff_factor=0.5, connection_timeout=5, read_timeout=15)
        if settings.storage_connection:
            connection = settings.storage_connection
            if connection.strip().rstrip(";").lower() == "usedevelopmentstorage=true":
                connection = AZURITE_CONNECTION
            service = TableServiceClient.from_connection_string(connection, **options)
        else:
            from controlplane.adapters.identity import app_credential

            service = TableServiceClient(endpoint=settings.storage_account_url, credential=app_credential(), **options)
        return cls(service, settings.table_prefix)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError, TableTransactionError):
            raise
        except HttpResponseError as exc:
            raise _failed(exc) from exc
        except AzureError as exc:
            raise StoreUnavailable("table storage", f"{type(exc).__name__}: {_first_line(exc)}") from exc

    # -- the primitives of BaseStore -----------------------------------------------------------
    def _stored(self, record: R) -> Stored[R] | None:
        entity = self._entity(record)
        with self._errors():
            try:
                row = self._ledger.get_entity(entity["PartitionKey"], entity["RowKey"])
            except ResourceNotFoundError:
                return None
        if isinstance(record, ClaimRecord):
            found = ClaimRecord(record.key, record.partition, row["State"], _aware(row["LeaseUntil"]),
                                _aware(row.metadata["timestamp"]), row["DecisionId"] or None)
            return Stored(found, row.metadata["etag"])
        return Stored(type(record).from_json(_body(row)), row.metadata["etag"])

    def _put(self, record: Record, version: str | None, decision: Decision | None = None) -> str | None:
        """A row alone is one request; a row with a decision is one transaction in the row's partition."""
        entity = self._entity(record)
        guarded = {"mode": UpdateMode.REPLACE, "etag": version, "match_condition": MatchConditions.IfNotModified}
        with self._errors():
            try:
                if decision is not None:
                    write = ("create", entity) if version is None else ("update", entity, guarded)
                    decided = self._decision_entities(entity["PartitionKey"], decision)
                    return self._submit([write, *(("create", e) for e in decided)], decision)[0].get("etag", "")
                if version is None:
                    return self._ledger.create_entity(entity)["etag"]
                return self._ledger.update_entity(entity, **guarded)["etag"]
            except (TableTransactionError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError) as exc:
                if _status(exc) in (404, 409, 412):  # created, changed or deleted by another writer meanwhile
                    return None
                raise _failed(exc) from exc

    def _delete_claim(self, claim: Claim) -> None:
        with self._errors():
            try:
                self._ledger.delete_entity(*_claim_address(claim.key, claim.partition), etag=claim.token,
                                           match_condition=MatchConditions.IfNotModified)
            except (ResourceModifiedError, ResourceNotFoundError):
                pass  # taken over or gone already: nothing of ours to give back

    def append(self, decision: Decision) -> None:
        pk = partition_of(decision.model)
        with self._errors():
            self._submit([("create", e) for e in self._decision_entities(pk, decision)], decision)

    def _entity(self, record: Record) -> dict[str, Any]:
        """A record's entity: claims, tasks, reviews and rollouts in their model's partition, incidents in theirs."""
        if isinstance(record, ClaimRecord):
            pk, row = _claim_address(record.key, record.partition)
            return {"PartitionKey": pk, "RowKey": row, "Kind": "claim", "Key": record.key, "State": record.state,
                    "LeaseUntil": record.lease_until, "DecisionId": record.decision_id or ""}
        if isinstance(record, Incident):
            return self._incident_entity(record)
        pk = partition_of(record.model)
        if isinstance(record, Task):
            return self._task_entity(pk, record)
        return self._review_entity(pk, record) if isinstance(record, Review) else self._rollout_entity(pk, record)

    def _decision_entities(self, pk: str, decision: Decision) -> list[dict[str, Any]]:
        entities = [{"PartitionKey": pk, "RowKey": _decision_row(decision), "Kind": "decision",
                     "DecisionId": decision.id, "DecidedAt": decision.decided_at, "Outcome": decision.outcome.value,
                     "EventType": decision.event_type, **_chunks(dumps(decision))}]
        entities += [self._task_entity(pk, task) for task in decision.tasks]
        entities += [self._review_entity(pk, review) for review in decision.reviews]
        return entities

    @staticmethod
    def _review_entity(pk: str, review: Review) -> dict[str, Any]:
        return {"PartitionKey": pk, "RowKey": f"review|{review.id}", "Kind": "review", "ReviewId": review.id,
                "State": review.state.value, "CreatedAt": review.created_at, "Revision": review.revision,
                **_chunks(dumps(review))}

    @staticmethod
    def _task_entity(pk: str, task: Task) -> dict[str, Any]:
        return {"PartitionKey": pk, "RowKey": f"task|{task.id}", "Kind": "task", "State": task.state.value,
                "DueAt": task.due_at, "Attempts": task.attempts, **_chunks(dumps(task))}

    def _submit(self, operations: list[tuple], decision: Decision) -> list[Any]:
        """Submit the transaction that writes ``decision`` in its model's partition, then its day's index rows.

        The index rows live in another partition, so they cannot join the transaction; a marker row that does
        (``unindexed|<id>``, carrying the decision) says they may be missing, and ``repair_indexes`` writes them
        again from it and drops it. A crash between the two writes leaves the marker; nothing else does.

        The decision's tasks enter the task-state index before the transaction: a crash or a refused transaction
        then leaves index rows naming no task, which readers drop after ``INDEX_GRACE``, never a pending task
        the sweep cannot find."""
        pk = operations[0][1]["PartitionKey"]
        self._register(decision, pk)
        self._upsert_rows([e for e in (_task_index_entity(pk, task) for task in decision.tasks) if e])
        marker = {"PartitionKey": pk, "RowKey": f"unindexed|{decision.id}", "Kind": "unindexed",
                  **_chunks(dumps(decision))}
        results = self._ledger.submit_transaction([*operations, ("upsert", marker, {"mode": UpdateMode.REPLACE})])
        self._write_index([decision])
        return results

    def _upsert_rows(self, entities: Sequence[dict[str, Any]]) -> None:
        """Upsert rows of the indexes, one transaction per partition and 100 rows."""
        by_partition: dict[str, list[tuple]] = {}
        for entity in entities:
            by_partition.setdefault(entity["PartitionKey"], []).append(("upsert", entity, {"mode": UpdateMode.REPLACE}))
        for operations in by_partition.values():
            for start in range(0, len(operations), 100):
                self._ledger.submit_transaction(operations[start:start + 100])

    def _write_index(self, decisions: Sequence[Decision]) -> None:
        """Write the decisions' index rows: upserts of the same rows however often, so exactly once in effect."""
        self._upsert_rows([entity for decision in decisions
                           for entity in _index_entities(_day_partition(decision.decided_at), decision)])

    def _register(self, decision: Decision, pk: str) -> None:
        """List the decision's day in ``_days`` and its model in ``_models|<day>`` (once per instance), so
        readers and the repair find them without scanning."""
        day = _day_partition(decision.decided_at)
        for entity in ({"PartitionKey": DAYS, "RowKey": f"d|{_MAX_DAY - int(day[len(DAY):]):08d}", "Day": day},
                       {"PartitionKey": f"{MODELS}{day[len(DAY):]}", "RowKey": pk, "Model": pk}):
            address = (entity["PartitionKey"], entity["RowKey"])
            if address not in self._listed:
                self._ledger.upsert_entity({**entity, "Kind": "listing"}, mode=UpdateMode.MERGE)
                self._listed.add(address)

    def repair_indexes(self, now: datetime) -> int:
        """Index the decisions whose markers remain in the partitions of models active since ``now`` minus
        REPAIR_WINDOW, and drop the markers: a query per model, and batches of writes."""
        repaired = 0
        with self._errors():
            for day in self._day_partitions(since=now - REPAIR_WINDOW):
                for listing in self._ledger.query_entities("PartitionKey eq @pk", parameters={
                        "pk": f"{MODELS}{day[len(DAY):]}"}, select=["Model"]):
                    markers = list(self._ledger.query_entities(
                        "PartitionKey eq @pk and RowKey ge 'unindexed|' and RowKey lt 'unindexed}'",
                        parameters={"pk": listing["Model"]}))
                    self._write_index([Decision.from_json(_body(marker)) for marker in markers])
                    for start in range(0, len(markers), 100):
                        self._ledger.submit_transaction([("delete", marker) for marker in markers[start:start + 100]])
                    repaired += len(markers)
        return repaired + self._backfill_step(now)

    def _backfill_step(self, now: datetime) -> int:
        """One page of ``backfill_indexes`` per sweep until it is done, its position kept in the beat
        ``index-backfill``: a ledger written before the indexes gets them without an upgrade step of its own (the
        ``index backfill`` command does the same at once). Once done, one point read per process."""
        if self._backfilled:
            return 0
        progress = self.last_beat(BACKFILL)
        if progress is not None and progress.details.get("done"):
            self._backfilled = True
            return 0
        resume = progress.details.get("resume") if progress is not None else None
        indexed, resume = self.backfill_indexes(resume)
        total = indexed + (progress.details.get("indexed", 0) if progress is not None else 0)
        self.beat(Beat(BACKFILL, now, {"done": resume is None, "resume": resume, "indexed": total}))
        self._backfilled = resume is None
        return indexed

    def backfill_indexes(self, resume: str | None = None, pages: int = 1,
                         page_size: int = 1000) -> tuple[int, str | None]:
        """Index the decisions, and the pending and dead-lettered tasks, of a ledger written before the indexes,
        ``pages`` pages of ``page_size`` such rows at a time: how many rows were indexed, and where to resume (None
        when done). Index rows are upserts, so running it again, or over rows indexed already, writes the same
        rows; a task that moved on meanwhile leaves a row that names it in a state it left, which readers drop."""
        indexed, token = 0, _resume_point(resume) if resume else None
        states = " or ".join(f"State eq '{state.value}'" for state in INDEXED)
        with self._errors():
            listing = self._ledger.query_entities(f"Kind eq 'decision' or (Kind eq 'task' and ({states}))",
                                                  results_per_page=page_size).by_page(continuation_token=token)
            for page in islice(listing, pages):
                decisions: list[Decision] = []
                tasks: list[dict[str, Any]] = []
                for row in page:
                    if row["Kind"] == "task":
                        tasks.append(_task_index_entity(row["PartitionKey"], Task.from_json(_body(row))))
                    else:
                        decisions.append(Decision.from_json(_body(row)))
                for decision in decisions:
                    self._register(decision, partition_of(decision.model))
                self._write_index(decisions)
                self._upsert_rows([entity for entity in tasks if entity])
                indexed += len(decisions) + len(tasks)
            token = listing.continuation_token
        return indexed, (f"{token['PartitionKey']}#{token['RowKey']}" if token else None)

    def decision_page(self, limit: int = 50, after: str | None = None, *, model: str | None = None,
                      outcomes: Sequence[Outcome] = (), event_types: Sequence[str] = (), version: str | None = None,
                      since: datetime | None = None, until: datetime | None = None) -> Page[Decision]:
        """A model's page is a range of its partition; a page across models reads the day partitions of the
        index newest first, only the days ``_days`` lists in the range, until the page is full."""
        low = max(_after(after) if after else "", _newer_than(until) if until else "")
        high = _newer_than(since) if since else "~"
        extra, parameters = _filters(("EventType", list(event_types)),
                                     ("Outcome", [o.value for o in outcomes] if model is not None else []))
        if model is not None:
            partitions, prefixes = [partition_of(model)], ["decision|"]
        else:
            newest = _moment(low) if low else None
            partitions = self._day_partitions(since=since, until=newest)
            prefixes = [f"o|{o.value}|" for o in dict.fromkeys(outcomes)] or ["t|"]
        found: list[tuple[str, Decision]] = []
        with self._errors():
            for row in self._ranges(partitions, prefixes, low, high, extra, parameters, limit + 1):
                decision = Decision.from_json(_body(row))
                if version is None or decision.version == version:
                    found.append((_position(row["RowKey"]), decision))
                    if len(found) > limit:
                        break
        more = len(found) > limit
        return Page([d for _, d in found[:limit]], found[limit - 1][0] if more else None)

    def _ranges(self, partitions: Iterable[str], prefixes: list[str], low: str, high: str, extra: str,
                parameters: dict[str, Any], page: int) -> Iterator[Any]:
        """Rows whose key, past one of ``prefixes``, lies in (``low``, ``high``), partition after partition,
        newest first (several prefixes are merged in key order)."""
        for partition in partitions:
            streams = [self._ledger.query_entities(
                "PartitionKey eq @pk and RowKey gt @low and RowKey lt @high" + extra,
                parameters={"pk": partition, "low": prefix + low, "high": prefix + high, **parameters},
                results_per_page=min(page, 1000)) for prefix in prefixes]
            yield from streams[0] if len(streams) == 1 else heapq.merge(
                *streams, key=lambda row: _position(row["RowKey"]))

    def _day_partitions(self, since: datetime | None = None, until: datetime | None = None) -> Iterator[str]:
        """The index's day partitions from ``until`` back to ``since``, newest first, as ``_days`` lists them."""
        low = f"d|{_MAX_DAY - _day_number(until):08d}" if until else "d|"
        high = f"d|{_MAX_DAY - _day_number(since):08d}" if since else "d|~"
        rows = self._ledger.query_entities("PartitionKey eq @pk and RowKey ge @low and RowKey le @high",
                                           parameters={"pk": DAYS, "low": low, "high": high}, results_per_page=32)
        return (row["Day"] for row in rows)

    def retraining_jobs(self, model: str, limit: int) -> list[tuple[datetime, str]]:
        jobs: list[tuple[datetime, str]] = []
        with self._errors():
            for row in self._model_decisions(model, " and Outcome eq 'retrain'", {}, limit):
                # newest first; a shadow retraining started no job
                job = _body(row)["evidence"].get("job")
                if job:
                    jobs.append((_aware(row["DecidedAt"]), job))
                if len(jobs) == limit:
                    break
        return jobs

    def _model_decisions(self, model: str, extra: str, parameters: dict[str, Any], page: int) -> Iterator[Any]:
        """The model's decision rows matching ``extra``, newest first (its partition, in RowKey order)."""
        return self._ledger.query_entities(
            "PartitionKey eq @pk and RowKey ge 'decision|' and RowKey lt 'decision}'" + extra,
            parameters={"pk": partition_of(model), **parameters}, results_per_page=page)

    def _bodies(self, kind: str, condition: str = "", **parameters: Any) -> list[dict[str, Any]]:
        """The JSON bodies of every row of one kind matching ``condition``, across partitions."""
        query = f"Kind eq '{kind}'" + (f" and {condition}" if condition else "")
        with self._errors():
            return [_body(row) for row in self._ledger.query_entities(query, parameters=parameters)]

    def decision(self, decision_id: str) -> Decision | None:
        found = self._bodies("decision", "DecisionId eq @id", id=decision_id)
        return Decision.from_json(found[0]) if found else None

    def tasks(self, state: TaskState | None = None, limit: int = 100) -> list[Task]:
        """Pending and dead-lettered tasks through their index; the others (and all of them) read every partition:
        the operators' lists, not the sweep's."""
        if state in INDEXED:
            return self._indexed_tasks(state, limit, datetime.now(UTC))
        found = self._bodies("task", "State eq @state", state=state.value) if state else self._bodies("task")
        return sorted(map(Task.from_json, found), key=lambda t: t.due_at)[:limit]

    def task(self, task_id: str) -> Task | None:
        found = self._bodies("task", "RowKey eq @row", row=f"task|{task_id}")
        return Task.from_json(found[0]) if found else None

    def due_tasks(self, now: datetime, limit: int) -> list[Task]:
        """The pending index up to ``now`` (soonest due first), and the tasks it names."""
        return self._indexed_tasks(TaskState.PENDING, limit, now, due=now)

    def _indexed_tasks(self, state: TaskState, limit: int, now: datetime, due: datetime | None = None) -> list[Task]:
        """Up to ``limit`` tasks in ``state`` (due by ``due`` when given), soonest due first: the state's index
        partition page by page, and the tasks its rows name, a query of a few rows per model partition.

        A row counts only when its task is in the state and due when the row says: a row is written before its task
        enters the state, so it may name a task whose write is still under way, lost its race or never came; and
        it is deleted after the task leaves, so it may outlive a crash. Such a row is deleted (under its ETag, so
        a writer that wrote it again meanwhile keeps it) once the task was written after it, or once it is
        ``INDEX_GRACE`` old at ``now``; until then it is skipped."""
        query, parameters = "PartitionKey eq @pk", {"pk": f"{TASKS}{state.value}"}
        if due is not None:
            query, parameters = query + " and RowKey lt @high", {**parameters, "high": f"{_micros(due):017d}}}"}
        found: list[Task] = []
        with self._errors():
            listing = self._ledger.query_entities(query, parameters=parameters,
                                                  results_per_page=min(max(limit, 1), 1000)).by_page()
            for page in listing:
                entries = list(page)
                rows = self._task_rows(entries)
                for entry in entries:
                    row = rows.get((entry["TaskPartition"], entry["TaskId"]))
                    task = Task.from_json(_body(row)) if row is not None else None
                    if task is not None and task.state is state and _task_position(task) == entry["RowKey"]:
                        found.append(task)
                    elif _droppable(entry, row, now):
                        try:
                            self._ledger.delete_entity(entry, etag=entry.metadata["etag"],
                                                       match_condition=MatchConditions.IfNotModified)
                        except ResourceModifiedError:
                            pass  # written again since it was read: its writer's now
                if len(found) >= limit:
                    break
        return found[:limit]

    def _task_rows(self, entries: Sequence[Any]) -> dict[tuple[str, str], Any]:
        """The task rows the index ``entries`` name, by (partition, id): a query per partition and FETCH_ROWS."""
        by_partition: dict[str, list[str]] = {}
        for entry in entries:
            by_partition.setdefault(entry["TaskPartition"], []).append(f"task|{entry['TaskId']}")
        rows = {}
        for pk, keys in by_partition.items():
            keys = list(dict.fromkeys(keys))
            for start in range(0, len(keys), FETCH_ROWS):
                extra, parameters = _filters(("RowKey", keys[start:start + FETCH_ROWS]))
                for row in self._ledger.query_entities("PartitionKey eq @pk" + extra,
                                                       parameters={"pk": pk, **parameters}):
                    rows[(pk, row["RowKey"].removeprefix("task|"))] = row
        return rows

    def update_task(self, current: Task, updated: Task) -> None:
        """``BaseStore``'s guarded replace (the row as read, at its ETag), with the task-state index kept in step
        around it: the row of the state the task enters (or of its new due time) is written before the task, the
        row of the state it leaves deleted after. A crash between leaves a row too many, never a task missing from
        its state's index; readers drop the extra row."""
        stored = self._stored(current)
        if stored is None or guard(stored.record) != guard(current):
            return
        pk = partition_of(updated.model)
        entering, leaving = _task_index_entity(pk, updated), _task_index_entity(pk, stored.record)
        moved = _address(entering) != _address(leaving)
        with self._errors():
            if entering and moved:
                self._ledger.upsert_entity(entering, mode=UpdateMode.REPLACE)
        if self._put(updated, stored.version) is None:
            return  # another writer changed the task first; the row written above names a state it is not in
        with self._errors():
            if leaving and moved:
                self._ledger.delete_entity(leaving["PartitionKey"], leaving["RowKey"])

    def review(self, review_id: str) -> Review | None:
        found = self._bodies("review", "ReviewId eq @id", id=review_id)
        return Review.from_json(found[0]) if found else None

    def reviews(self, state: ReviewState | None = None, limit: int = 100, *,
                model: str | None = None) -> list[Review]:
        """Newest first. One model's are a query of its partition; all of them read every partition."""
        extra, parameters = _filters(("State", [state.value] if state else []),
                                     ("PartitionKey", [partition_of(model)] if model is not None else []))
        found = self._bodies("review", extra.removeprefix(" and "), **parameters)
        return sorted(map(Review.from_json, found), key=lambda r: r.created_at, reverse=True)[:limit]

    @staticmethod
    def _rollout_entity(pk: str, rollout: Rollout) -> dict[str, Any]:
        return {"PartitionKey": pk, "RowKey": f"rollout|{rollout.id}", "Kind": "rollout", "RolloutId": rollout.id,
                "State": rollout.state.value, "CreatedAt": rollout.created_at, "Revision": rollout.revision,
                **_chunks(dumps(rollout))}

    def rollout(self, rollout_id: str) -> Rollout | None:
        found = self._bodies("rollout", "RolloutId eq @id", id=rollout_id)
        return Rollout.from_json(found[0]) if found else None

    def rollouts(self, states: Sequence[RolloutState] | None = None, limit: int = 100, *,
                 model: str | None = None) -> list[Rollout]:
        """Newest first. One model's are a query of its partition; all of them read every partition."""
        extra, parameters = _filters(("State", [s.value for s in dict.fromkeys(states or ())]),
                                     ("PartitionKey", [partition_of(model)] if model is not None else []))
        found = self._bodies("rollout", extra.removeprefix(" and "), **parameters)
        return sorted(map(Rollout.from_json, found), key=lambda r: r.created_at, reverse=True)[:limit]

    @staticmethod
    def _incident_entity(incident: Incident) -> dict[str, Any]:
        return {"PartitionKey": INCIDENTS, "RowKey": f"incident|{incident.group}", "Kind": "incident",
                "State": incident.state.value, "UpdatedAt": incident.updated_at, "Revision": incident.revision,
                **_chunks(dumps(incident))}

    def incident(self, group: str) -> Incident | None:
        with self._errors():
            try:
                return Incident.from_json(_body(self._ledger.get_entity(INCIDENTS, f"incident|{group}")))
            except ResourceNotFoundError:
                return None

    def incidents(self, state: IncidentState | None = None, limit: int = 100) -> list[Incident]:
        found = self._bodies("incident", "State eq @state", state=state.value) if state else self._bodies("incident")
        return sorted(map(Incident.from_json, found), key=lambda i: i.updated_at, reverse=True)[:limit]

    # Pages of tasks, reviews, rollouts and incidents. Table Storage sorts only by its keys, so these pages come
    # in key order, not in the order the other stores give: tasks, reviews and rollouts by their model's partition,
    # then by id; incidents (one partition) by alert group. A page is one query continuing from the service's own
    # continuation token, which the position carries; the service may answer a short page (or an empty last one).
    def task_page(self, limit: int = 50, after: str | None = None, *,
                  state: TaskState | None = None) -> Page[Task]:
        """Tasks in key order: by model partition, then id (not by due time)."""
        extra, parameters = _filters(("State", [state.value] if state else []))
        return self._key_page(self._ledger, _record(Task), "Kind eq 'task'" + extra, parameters, after, limit)

    def review_page(self, limit: int = 50, after: str | None = None, *,
                    state: ReviewState | None = None) -> Page[Review]:
        """Reviews in key order: by model partition, then id (not newest first)."""
        extra, parameters = _filters(("State", [state.value] if state else []))
        return self._key_page(self._ledger, _record(Review), "Kind eq 'review'" + extra, parameters, after, limit)

    def rollout_page(self, limit: int = 50, after: str | None = None, *,
                     states: Sequence[RolloutState] = ()) -> Page[Rollout]:
        """Rollouts in key order: by model partition, then id (not newest first)."""
        extra, parameters = _filters(("State", [s.value for s in dict.fromkeys(states)]))
        return self._key_page(self._ledger, _record(Rollout), "Kind eq 'rollout'" + extra, parameters, after,
                              limit)

    def incident_page(self, limit: int = 50, after: str | None = None, *,
                      state: IncidentState | None = None) -> Page[Incident]:
        """Incidents in key order: by alert group (not by update time); a range of one partition."""
        extra, parameters = _filters(("State", [state.value] if state else []))
        query = "PartitionKey eq @pk and RowKey ge 'incident|' and RowKey lt 'incident}'" + extra
        return self._key_page(self._ledger, _record(Incident), query, {"pk": INCIDENTS, **parameters}, after, limit)

    def _key_page(self, table: TableClient, convert: Callable[[Any], T], query: str, parameters: dict[str, Any],
                  after: str | None, limit: int) -> Page[T]:
        """Up to ``limit`` rows matching ``query`` from the service's continuation ``after``: one request, or a
        few more when the service answers short pages (it may, at partition boundaries or after five seconds)."""
        token = _continuation(after) if after is not None else None
        found: list[T] = []
        with self._errors():
            for _ in range(PAGE_REQUESTS):
                size = min(max(limit - len(found), 1), 1000)
                listing = table.query_entities(query, parameters=parameters, results_per_page=size).by_page(
                    continuation_token=token)
                try:
                    found += [convert(row) for row in next(listing, [])]
                except HttpResponseError as exc:
                    if token is not None and _status(exc) == 400:  # a position the service does not take
                        raise refused() from exc
                    raise
                token = listing.continuation_token
                if not token or len(found) >= limit:
                    break
        return Page(found, dumps([token.get("PartitionKey"), token.get("RowKey")]) if token else None)

    def ping(self) -> None:
        with self._errors():
            next(iter(self._ledger.query_entities("PartitionKey eq 'ping'", results_per_page=1)), None)

    def beat(self, beat: Beat) -> None:
        with self._errors():
            self._ledger.upsert_entity({"PartitionKey": BEATS, "RowKey": beat.name, "At": beat.at,
                                        "Details": dumps(beat.details)}, mode=UpdateMode.REPLACE)

    def last_beat(self, name: str) -> Beat | None:
        with self._errors():
            try:
                row = self._ledger.get_entity(BEATS, name)
            except ResourceNotFoundError:
                return None
        return Beat(name, _aware(row["At"]), loads(row["Details"]))

    # -- TelemetryStore -----------------------------------------------------------------------
    # One partition per model and deployment holds its windows (``w|<bucket>|<part>``), one dedupe row
    # per Event Hubs event (``e|<partition>|<sequence>``) and one sample row per event and window part
    # (``s|<bucket>|<part>|<partition>|<sequence>``, the event's kept records with their hashes). An
    # event's rows and the window counters it moves are one transaction, guarded by the window's ETag:
    # concurrent appenders conflict, re-read and retry, and nothing is counted twice.
    def append_telemetry(self, events: Sequence[TelemetryEvent], spec_for: Callable[[str], WindowSpec],
                         now: datetime) -> AppendResult:
        groups: dict[tuple[str, str], list[tuple[TelemetryEvent, list[tuple[int, Any]]]]] = {}
        for event in events:
            for target, records in by_deployment(event).items():
                groups.setdefault(target, []).append((event, records))
        total = AppendResult(0, 0)
        for target, items in groups.items():
            for start in range(0, len(items), EVENTS_PER_TRANSACTION):
                chunk = items[start:start + EVENTS_PER_TRANSACTION]
                for _ in range(CONFLICT_RETRIES):
                    try:
                        part = self._append_chunk(target, chunk, spec_for, now)
                        break
                    except _Conflict:
                        continue
                else:
                    raise StoreUnavailable("table storage", f"window of {target} stayed contended")
                total = AppendResult(total.stored + part.stored, total.duplicates + part.duplicates,
                                     total.late + part.late, total.closed + part.closed)
        return total

    def _append_chunk(self, target: tuple[str, str], chunk: list, spec_for: Callable[[str], WindowSpec],
                      now: datetime) -> AppendResult:
        pk = partition_of("|".join(target))
        operations: list[tuple] = []
        windows: dict[int, dict[str, Any]] = {}  # bucket -> the open window's entity (as it will be written)
        full: dict[int, int] = {}  # bucket -> the part just filled: the next record opens the next part
        stored = duplicates = late = 0
        closed: list[WindowKey] = []
        with self._errors():
            seen = self._seen(pk, [event for event, _ in chunk])
            for event, records in chunk:
                seen_key = _seen_key(event)
                if seen_key in seen:
                    duplicates += len(records)
                    continue
                operations.append(("create", {"PartitionKey": pk, "RowKey": seen_key, "Kind": "seen"}))
                samples: dict[tuple[int, int], list] = {}
                placements, too_late = place(event, records, spec_for, now)
                late += too_late
                for p in placements:
                    spec, bucket = p.spec, p.bucket
                    window = windows.get(bucket) or (
                        self._new_window(pk, bucket, full[bucket] + 1, spec, operations) if bucket in full
                        else self._open_window(pk, bucket, spec, operations))
                    windows[bucket] = window
                    window["Count"] += 1
                    stored += 1
                    if p.kept:
                        samples.setdefault((bucket, window["Part"]), []).append([p.hash, sample_row(p.record)])
                    if window["Count"] >= spec.records:
                        window.update(Closed=True, Reason="records")
                        closed.append(WindowKey(*target, bucket, window["Part"]))
                        full[bucket] = window["Part"]
                        del windows[bucket]
                for (bucket, part), rows in samples.items():
                    operations.append(("create", {
                        "PartitionKey": pk, "Kind": "sample", **_chunks(dumps(rows)),
                        "RowKey": f"s|{bucket:012d}|{part:05d}|{quote(event.partition, safe='')}|"
                                  f"{event.sequence_number:020d}"}))
            if operations:
                try:
                    self._telemetry.submit_transaction(operations)
                except TableTransactionError as exc:
                    if _status(exc) in (409, 412):
                        raise _Conflict() from exc
                    raise _failed(exc) from exc
        return AppendResult(stored, duplicates, late, tuple(closed))

    def _seen(self, pk: str, events: Sequence[TelemetryEvent]) -> set[str]:
        """The dedupe rows of ``events`` already in the partition: one range query per Event Hubs partition over
        their sequence numbers (point reads instead, when the numbers are too far apart for a range to be small)."""
        found: set[str] = set()
        by_partition: dict[str, list[int]] = {}
        for event in events:
            by_partition.setdefault(event.partition, []).append(event.sequence_number)
        for partition, numbers in by_partition.items():
            low, high = min(numbers), max(numbers)
            if high - low >= SEEN_RANGE * len(numbers):
                found.update(key for key in (_seen_key(e) for e in events if e.partition == partition)
                             if self._exists(pk, key))
                continue
            prefix = f"e|{quote(partition, safe='')}|"
            found.update(row["RowKey"] for row in self._telemetry.query_entities(
                "PartitionKey eq @pk and RowKey ge @low and RowKey le @high", select=["RowKey"],
                parameters={"pk": pk, "low": f"{prefix}{low:020d}", "high": f"{prefix}{high:020d}"}))
        return found

    def _exists(self, pk: str, row_key: str) -> bool:
        try:
            self._telemetry.get_entity(pk, row_key, select=["RowKey"])
        except ResourceNotFoundError:
            return False
        return True

    def _open_window(self, pk: str, bucket: int, spec: WindowSpec, operations: list) -> dict[str, Any]:
        """The bucket's open window entity, queued for an ETag-guarded update; a new part when it is full."""
        rows = list(self._telemetry.query_entities(
            "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
            parameters={"pk": pk, "low": f"w|{bucket:012d}|", "high": f"w|{bucket:012d}}}"}))
        latest = max(rows, key=lambda row: row["Part"], default=None)
        if latest is None or latest["Closed"]:
            return self._new_window(pk, bucket, latest["Part"] + 1 if latest else 0, spec, operations)
        window = dict(latest)
        operations.append(("update", window, {"mode": UpdateMode.REPLACE, "etag": latest.metadata["etag"],
                                              "match_condition": MatchConditions.IfNotModified}))
        return window

    @staticmethod
    def _new_window(pk: str, bucket: int, part: int, spec: WindowSpec, operations: list) -> dict[str, Any]:
        window = {"PartitionKey": pk, "RowKey": f"w|{bucket:012d}|{part:05d}", "Kind": "window", "Bucket": bucket,
                  "Part": part, "Count": 0, "Closed": False, "Reason": "", "ClosesAt": spec.closes_at(bucket),
                  "Decided": False}
        operations.append(("create", window))  # a concurrent creator makes this conflict: re-read and retry
        return window

    def close_due_windows(self, now: datetime) -> list[WindowKey]:
        closed = []
        with self._errors():
            due = list(self._telemetry.query_entities("Kind eq 'window' and Closed eq false and ClosesAt le @now",
                                                      parameters={"now": now}))
            for row in due:
                try:
                    self._telemetry.update_entity({**row, "Closed": True, "Reason": "time"}, mode=UpdateMode.REPLACE,
                                                  etag=row.metadata["etag"],
                                                  match_condition=MatchConditions.IfNotModified)
                except ResourceModifiedError:
                    continue  # an appender or another sweep changed it; the next sweep looks again
                model, deployment = unquote(row["PartitionKey"]).split("|", 1)
                closed.append(WindowKey(model, deployment, row["Bucket"], row["Part"]))
        return closed

    def undecided_windows(self, limit: int = 100) -> list[WindowKey]:
        with self._errors():
            rows = self._telemetry.query_entities("Kind eq 'window' and Closed eq true and Decided eq false")
            keys = []
            for row in rows:
                model, deployment = unquote(row["PartitionKey"]).split("|", 1)
                keys.append(WindowKey(model, deployment, row["Bucket"], row["Part"]))
                if len(keys) >= limit:
                    break
        return keys

    def mark_window_decided(self, key: WindowKey) -> None:
        pk = partition_of(f"{key.model}|{key.deployment}")
        with self._errors():
            self._telemetry.update_entity({"PartitionKey": pk, "RowKey": f"w|{key.bucket:012d}|{key.part:05d}",
                                           "Decided": True}, mode=UpdateMode.MERGE)

    def window_page(self, limit: int = 50, after: str | None = None, *, model: str | None = None,
                    closed: bool | None = None) -> Page[Window]:
        """Windows in key order: by partition (the quoted ``model|deployment``, so ``churn-x|blue`` before
        ``churn|green``), then bucket and part; one model's windows are a range of partitions."""
        query, parameters = "Kind eq 'window'", {}
        if model is not None:
            query = "PartitionKey ge @low and PartitionKey lt @high and " + query
            parameters = {"low": f"{partition_of(model)}|", "high": f"{partition_of(model)}}}"}
        if closed is not None:
            query += f" and Closed eq {'true' if closed else 'false'}"
        return self._key_page(self._telemetry, _window, query, parameters, after, limit)

    def window(self, key: WindowKey) -> Window | None:
        pk = partition_of(f"{key.model}|{key.deployment}")
        with self._errors():
            try:
                row = self._telemetry.get_entity(pk, f"w|{key.bucket:012d}|{key.part:05d}")
            except ResourceNotFoundError:
                return None
        return Window(key, row["Count"], row["Closed"], row["Reason"])

    def window_sample(self, key: WindowKey, limit: int) -> list[dict[str, Any]]:
        pk, prefix = partition_of(f"{key.model}|{key.deployment}"), f"s|{key.bucket:012d}|{key.part:05d}|"
        with self._errors():
            rows = self._telemetry.query_entities("PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
                                                  parameters={"pk": pk, "low": prefix, "high": prefix[:-1] + "}"})
            kept = [item for row in rows for item in _body(row)]
        return [row for _, row in sorted(kept, key=lambda item: item[0])[:limit]]

    def telemetry_count(self, model: str, deployment: str) -> int:
        with self._errors():
            rows = self._telemetry.query_entities("PartitionKey eq @pk and Kind eq 'window'", parameters={
                "pk": partition_of(f"{model}|{deployment}")}, select=["Count"])
            return sum(row["Count"] for row in rows)


class _Conflict(Exception):
    """Another appender moved the window first: re-read and try again."""


def _chunks(text: str) -> dict[str, str]:
    return {f"Body{i // CHUNK_CHARS or ''}": text[i:i + CHUNK_CHARS] for i in range(0, len(text), CHUNK_CHARS)}


def _body(row: dict[str, Any]) -> dict[str, Any]:
    parts, index = [row["Body"]], 1
    while f"Body{index}" in row:
        parts.append(row[f"Body{index}"])
        index += 1
    return loads("".join(parts))


def _task_index_entity(pk: str, task: Task) -> dict[str, Any] | None:
    """The task's row in its state's index (None in a state with no index): enough to find and order the task."""
    if task.state not in INDEXED:
        return None
    return {"PartitionKey": f"{TASKS}{task.state.value}", "RowKey": _task_position(task), "Kind": "taskindex",
            "TaskId": task.id, "TaskPartition": pk, "DueAt": task.due_at, "Model": task.model or ""}


def _task_position(task: Task) -> str:
    return f"{_micros(task.due_at):017d}|{task.id}"


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _address(entity: dict[str, Any] | None) -> tuple[str, str] | None:
    return (entity["PartitionKey"], entity["RowKey"]) if entity else None


def _droppable(entry: Any, row: Any | None, now: datetime) -> bool:
    """Whether an index row that names a task not in its state (or no task) may go: the task was written after
    the row, so the row's writer finished before or lost its conditional write; or the row is INDEX_GRACE old."""
    written = _aware(entry.metadata["timestamp"])
    return bool(row is not None and written + INDEX_SKEW < _aware(row.metadata["timestamp"])) or (
        written + INDEX_GRACE < now)


def _inverted(moment: datetime) -> int:
    return _MAX_TIME_MS - int(moment.timestamp() * 1000)


def _moment(position: str) -> datetime:
    return datetime.fromtimestamp((_MAX_TIME_MS - int(position[:13])) / 1000, UTC)


def _decision_row(decision: Decision) -> str:
    return f"decision|{_inverted(decision.decided_at):013d}|{decision.id}"


def _day_number(moment: datetime) -> int:
    return int(moment.astimezone(UTC).strftime("%Y%m%d"))


def _day_partition(moment: datetime) -> str:
    return f"{DAY}{_day_number(moment)}"


def _index_entities(day: str, decision: Decision) -> list[dict[str, Any]]:
    """The decision's rows in its day's partition: among all (``t|``) and among its outcome's (``o|``)."""
    position = f"{_inverted(decision.decided_at):013d}|{decision.id}"
    fields = {"PartitionKey": day, "Kind": "index", "DecisionId": decision.id, "Model": decision.model or "",
              "DecidedAt": decision.decided_at, "Outcome": decision.outcome.value, "EventType": decision.event_type,
              **_chunks(dumps(decision))}
    return [{**fields, "RowKey": f"t|{position}"}, {**fields, "RowKey": f"o|{decision.outcome.value}|{position}"}]


_POSITION = re.compile(r"\d{13}\|[0-9a-f]{1,64}")


def _position(row_key: str) -> str:
    """``<inverted time>|<decision id>``: where a row stands in a newest-first list, whatever its prefix."""
    return "|".join(row_key.rsplit("|", 2)[-2:])


def _after(position: str) -> str:
    if not _POSITION.fullmatch(position):
        raise refused()
    return position


def _newer_than(moment: datetime) -> str:
    """The lowest position of a decision made before ``moment`` (past every id of the millisecond before)."""
    return f"{_inverted(moment):013d}|~"


def _filters(*columns: tuple[str, list[str]]) -> tuple[str, dict[str, Any]]:
    """An OData clause (`` and (C eq @c0 or ...)`` per column with values) and its parameters."""
    clause, parameters = "", {}
    for n, (column, values) in enumerate(columns):
        if values:
            names = [f"f{n}v{i}" for i in range(len(values))]
            parameters.update(zip(names, values, strict=True))
            # spaces around the parameters: the SDK reads a name up to the next space
            clause += " and ( " + " or ".join(f"{column} eq @{name}" for name in names) + " )"
    return clause, parameters


def _seen_key(event: TelemetryEvent) -> str:
    """The row that says an Event Hubs event was counted in a partition's windows."""
    return f"e|{quote(event.partition, safe='')}|{event.sequence_number:020d}"


def _record(kind: type[R]) -> Callable[[Any], R]:
    return lambda row: kind.from_json(_body(row))


def _window(row: Any) -> Window:
    model, deployment = unquote(row["PartitionKey"]).split("|", 1)
    return Window(WindowKey(model, deployment, row["Bucket"], row["Part"]), row["Count"], row["Closed"], row["Reason"])


def _continuation(position: str) -> dict[str, str | None]:
    """The service's continuation token a list page's position carries (``[next partition, next row]``)."""
    try:
        keys = loads(position)
    except ValueError:
        keys = None
    if not (isinstance(keys, list) and len(keys) == 2 and all(k is None or isinstance(k, str) for k in keys)
            and any(keys)):
        raise refused()
    return {"PartitionKey": keys[0], "RowKey": keys[1]}


def _resume_point(resume: str) -> dict[str, str]:
    partition, separator, row_key = resume.partition("#")  # '#' is in no key
    if not separator:
        raise refused("not a point the backfill printed")
    return {"PartitionKey": partition, "RowKey": row_key}


def _claim_address(key: str, partition: str) -> tuple[str, str]:
    """Where a key's claim lives: in its model's partition, beside the decision that completes it."""
    return partition_of(None if partition == "_" else partition), f"claim|{digest(key)}"


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _failed(exc: Exception) -> StoreRefused | StoreUnavailable:
    """A failed request as the error the control plane acts on: a request Table Storage refuses as such (an
    entity or property over its size limits: 400, 413) fails again whenever it is sent; anything else may not."""
    if _status(exc) in (400, 413):
        return StoreRefused("table storage", f"refused the write: {_first_line(exc)}")
    return StoreUnavailable("table storage", f"{type(exc).__name__}: {_first_line(exc)}")


def _status(exc: Exception) -> int | None:
    return getattr(exc, "status_code", None) or getattr(getattr(exc, "response", None), "status_code", None)


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]

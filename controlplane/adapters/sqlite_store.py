"""SQLite store: the embedded default. One file, WAL mode, safe across threads and processes.

Every write that must be atomic (claim + decision + tasks) runs in one ``BEGIN IMMEDIATE``
transaction, so concurrent instances serialise on the database lock instead of racing. Claims and guarded
replaces are ``BaseStore``'s rules; the primitives here write them as ``INSERT OR IGNORE`` and ``UPDATE ... WHERE``
the row's version is the one read (a claim's token, drawn anew each write, or another row's body).
"""
from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from controlplane.adapters.store_base import BaseStore, ClaimRecord, R, Record, Stored
from controlplane.domain.errors import StoreUnavailable
from controlplane.domain.events import TelemetryEvent
from controlplane.domain.incidents import Incident, IncidentState
from controlplane.domain.ledger import Decision, Outcome, Task, TaskState, dumps, loads
from controlplane.domain.paging import Page, refused
from controlplane.domain.reviews import Review, ReviewState
from controlplane.domain.rollout import Rollout, RolloutState
from controlplane.domain.windows import Window, WindowKey, WindowSpec, by_deployment, place, sample_row
from controlplane.ports.store import AppendResult, Beat, Claim

_SCHEMA = """
CREATE TABLE IF NOT EXISTS claims (
    key TEXT PRIMARY KEY, partition TEXT NOT NULL, state TEXT NOT NULL, token TEXT NOT NULL,
    lease_until TEXT NOT NULL, decision_id TEXT, updated_at TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS decisions (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, model TEXT, decided_at TEXT NOT NULL,
    body TEXT NOT NULL, outcome TEXT NOT NULL DEFAULT '', event_type TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY, decision_id TEXT NOT NULL, state TEXT NOT NULL, due_at TEXT NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS reviews (
    id TEXT PRIMARY KEY, state TEXT NOT NULL, created_at TEXT NOT NULL, revision INTEGER NOT NULL,
    body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rollouts (
    id TEXT PRIMARY KEY, state TEXT NOT NULL, created_at TEXT NOT NULL, revision INTEGER NOT NULL,
    body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS incidents (
    grp TEXT PRIMARY KEY, state TEXT NOT NULL, updated_at TEXT NOT NULL, revision INTEGER NOT NULL,
    body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS beats (name TEXT PRIMARY KEY, at TEXT NOT NULL, details TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS telemetry_events (
    model TEXT NOT NULL, deployment TEXT NOT NULL, partition TEXT NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (model, deployment, partition, seq));
CREATE TABLE IF NOT EXISTS windows (
    model TEXT NOT NULL, deployment TEXT NOT NULL, bucket INTEGER NOT NULL, part INTEGER NOT NULL,
    count INTEGER NOT NULL, closed INTEGER NOT NULL, reason TEXT NOT NULL, closes_at TEXT NOT NULL,
    decided INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (model, deployment, bucket, part));
CREATE TABLE IF NOT EXISTS window_rows (
    model TEXT NOT NULL, deployment TEXT NOT NULL, bucket INTEGER NOT NULL, part INTEGER NOT NULL,
    hash INTEGER NOT NULL, partition TEXT NOT NULL, seq INTEGER NOT NULL, idx INTEGER NOT NULL, row TEXT NOT NULL,
    PRIMARY KEY (model, deployment, bucket, part, hash, partition, seq, idx));
"""


# Checkpoints copy the write-ahead log into the database and sync it: a thread does that every
# CHECKPOINT_EVERY commits, beside the request path; a commit only checkpoints itself (SQLite's
# autocheckpoint) when the log has grown to WAL_PAGES pages (~400 MB) because those fell behind.
CHECKPOINT_EVERY = 1_000
WAL_PAGES = 100_000

# Columns added since the first schema: (table, column, definition, backfill of existing rows).
_ADDED_COLUMNS = (
    ("decisions", "outcome", "TEXT NOT NULL DEFAULT ''",
     "UPDATE decisions SET outcome = json_extract(body, '$.outcome')"),
    ("decisions", "event_type", "TEXT NOT NULL DEFAULT ''",
     "UPDATE decisions SET event_type = json_extract(body, '$.event_type')"),
    ("decisions", "version", "TEXT", "UPDATE decisions SET version = json_extract(body, '$.version')"),
    ("windows", "decided", "INTEGER NOT NULL DEFAULT 0", ""),
    ("reviews", "model", "TEXT", "UPDATE reviews SET model = json_extract(body, '$.model')"),
    ("rollouts", "model", "TEXT", "UPDATE rollouts SET model = json_extract(body, '$.model')"),
)
# The indexes, by name. One whose definition changed is built again when a database is opened. Newest-first
# reads scan them backwards: kept in ascending order, a new row lands at the end of its range, where
# SQLite appends, rather than at the start, where every insert reshuffles the pages.
_INDEXES = {
    "decisions_by_model": "decisions (model, decided_at, seq)",
    "decisions_by_time": "decisions (decided_at, seq)",
    "decisions_by_model_outcome": "decisions (model, outcome, decided_at, seq)",
    "decisions_by_model_event": "decisions (model, event_type, decided_at, seq)",
    "decisions_by_model_version": "decisions (model, version, outcome)",
    "decisions_by_outcome_time": "decisions (outcome, decided_at, seq)",
    "tasks_due": "tasks (state, due_at, id)",  # pages go on from a (time, id) position: the id breaks ties
    "tasks_by_due": "tasks (due_at, id)",
    "reviews_by_state": "reviews (state, created_at, id)",
    "reviews_by_time": "reviews (created_at, id)",
    "reviews_by_model": "reviews (model, created_at)",
    "rollouts_by_model": "rollouts (model, created_at)",
    "rollouts_by_state": "rollouts (state, created_at, id)",
    "rollouts_by_time": "rollouts (created_at, id)",
    "incidents_by_state": "incidents (state, updated_at, grp)",
    "incidents_by_time": "incidents (updated_at, grp)",
    "windows_open": "windows (closed, closes_at)",
}
_DROPPED_INDEXES = ("decisions_by_outcome",)


def connect(path: str, timeout: float = 30.0) -> sqlite3.Connection:
    """A connection as the store uses it: autocommit (transactions are explicit), WAL, normal sync."""
    connection = sqlite3.connect(path, timeout=timeout, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute(f"PRAGMA wal_autocheckpoint={WAL_PAGES}")
    return connection


class SqliteStore(BaseStore):
    name = "sqlite"

    def __init__(self, path: str, timeout: float = 15.0) -> None:
        self.path = path
        self._timeout = timeout
        self._local = threading.local()
        self._commits = 0
        self._checkpointing = threading.Lock()
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        with self._errors():
            self._connection().executescript(_SCHEMA)
            self._migrate()

    def _migrate(self) -> None:
        """Columns added since a database was created (CREATE TABLE IF NOT EXISTS leaves old tables alone),
        filled in for the rows already there, and the indexes as declared now. One transaction, so
        instances opening the database at once upgrade it once."""
        with self._transaction() as db:
            for table, column, definition, backfill in _ADDED_COLUMNS:
                present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
                if column not in present:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
                    if backfill:
                        db.execute(backfill)
            built = dict(db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"))
            for name, definition in _INDEXES.items():
                wanted = f"CREATE INDEX {name} ON {definition}"
                if built.get(name) != wanted:
                    db.execute(f"DROP INDEX IF EXISTS {name}")
                    db.execute(wanted)
            for name in _DROPPED_INDEXES:
                db.execute(f"DROP INDEX IF EXISTS {name}")

    def _connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = connect(self.path, self._timeout)
        return connection

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite {self.path}", str(exc)) from exc

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._errors():
            connection = self._connection()
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
        self._committed()

    def _committed(self) -> None:
        """Count a commit; every CHECKPOINT_EVERY of them, checkpoint in a thread of its own."""
        self._commits += 1
        if self._commits >= CHECKPOINT_EVERY and self.path != ":memory:" and self._checkpointing.acquire(False):
            self._commits = 0
            threading.Thread(target=self._checkpoint_aside, name="sqlite-checkpoint", daemon=True).start()

    def _checkpoint_aside(self) -> None:
        try:
            with closing(sqlite3.connect(self.path, timeout=self._timeout)) as connection:
                connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error:
            pass  # the next one, or the sweep's, copies what this one could not
        finally:
            self._checkpointing.release()

    # -- the primitives of BaseStore -----------------------------------------------------------
    def _stored(self, record: R) -> Stored[R] | None:
        table, key, version, row = _row(record)
        with self._errors():
            found = self._connection().execute(f"SELECT {', '.join(row)} FROM {table} WHERE {key} = ?",
                                               (row[key],)).fetchone()
        if found is None:
            return None
        stored = dict(zip(row, found, strict=True))
        if isinstance(record, ClaimRecord):
            return Stored(ClaimRecord(record.key, record.partition, stored["state"],
                                      datetime.fromisoformat(stored["lease_until"]),
                                      datetime.fromisoformat(stored["updated_at"]), stored["decision_id"]),
                          stored["token"])
        return Stored(type(record).from_json(loads(stored["body"])), stored["body"])

    def _put(self, record: Record, version: str | None, decision: Decision | None = None) -> str | None:
        table, key, column, row = _row(record)
        if version is None:
            statement = _insertion(table, row, "INSERT OR IGNORE")
            values: tuple = tuple(row.values())
        else:
            statement = f"UPDATE {table} SET {', '.join(f'{c} = ?' for c in row)} WHERE {key} = ? AND {column} = ?"
            values = (*row.values(), row[key], version)
        if decision is None:  # one statement: it commits on its own
            with self._errors():
                written = self._connection().execute(statement, values).rowcount == 1
            self._committed()
        else:
            with self._transaction() as db:
                written = db.execute(statement, values).rowcount == 1
                if written:
                    self._insert(db, decision)
        return row[column] if written else None

    def _delete_claim(self, claim: Claim) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM claims WHERE key = ? AND token = ?", (claim.key, claim.token))

    def append(self, decision: Decision) -> None:
        with self._transaction() as db:
            self._insert(db, decision)

    @staticmethod
    def _insert(db: sqlite3.Connection, decision: Decision) -> None:
        db.execute("INSERT INTO decisions (id, model, decided_at, body, outcome, event_type, version) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?)", (decision.id, decision.model, decision.decided_at.isoformat(),
                                                    dumps(decision), decision.outcome.value, decision.event_type,
                                                    decision.version))
        for records in (decision.tasks, decision.reviews):
            rows = [_row(record) for record in records]
            if rows:
                table, _, _, first = rows[0]
                db.executemany(_insertion(table, first), [tuple(row.values()) for *_, row in rows])

    # -- reads ---------------------------------------------------------------------------------
    def decision_page(self, limit: int = 50, after: str | None = None, *, model: str | None = None,
                      outcomes: Sequence[Outcome] = (), event_types: Sequence[str] = (), version: str | None = None,
                      since: datetime | None = None, until: datetime | None = None) -> Page[Decision]:
        newest = "ORDER BY decided_at DESC, seq DESC"
        bounds, bound_values = [], []
        for condition, value in (("decided_at >= ?", since and _utc(since)), ("decided_at < ?", until and _utc(until))):
            if value:
                bounds.append(condition)
                bound_values.append(value)
        if after is not None:
            bounds.append("(decided_at, seq) < (?, ?)")
            bound_values += _position(after)
        scope = "".join(f" AND {condition}" for condition in bounds)
        if version is None and bool(outcomes) != bool(event_types) and (model is not None or outcomes):
            # Some outcomes (or a model's event types): one scan of an index per value, each in the index's
            # order, so only the newest ``limit`` of each are read however long the history is.
            column, values = ("outcome", [o.value for o in outcomes]) if outcomes else ("event_type", list(event_types))
            index = f"decisions_by_model_{column.split('_')[0]}" if model is not None else "decisions_by_outcome_time"
            owner = "model = ? AND " if model is not None else ""
            scan = (f"SELECT * FROM (SELECT seq, decided_at FROM decisions INDEXED BY {index} "
                    f"WHERE {owner}{column} = ?{scope} {newest} LIMIT ?)")
            positions = f"SELECT seq FROM ({' UNION ALL '.join(scan for _ in values)}) {newest} LIMIT ?"
            parameters = [p for value in values
                          for p in ([model] if model is not None else []) + [value, *bound_values, limit + 1]]
        else:
            conditions, parameters = [], []
            for column, values in (("model", [] if model is None else [model]),
                                   ("version", [] if version is None else [version]),
                                   ("outcome", [o.value for o in outcomes]), ("event_type", list(event_types))):
                if values:
                    conditions.append(f"{column} IN ({', '.join('?' for _ in values)})")
                    parameters += values
            conditions += bounds
            parameters += bound_values
            where = f"WHERE {' AND '.join(conditions)} " if conditions else ""
            # A model version's decisions are a handful among the model's many: read them through their index.
            index = "INDEXED BY decisions_by_model_version " if model is not None and version is not None else ""
            positions = f"SELECT seq FROM decisions {index}{where}{newest} LIMIT ?"
        with self._errors():  # the positions come from an index alone; only the rows found are read whole
            rows = self._connection().execute(
                f"SELECT body, decided_at, seq FROM decisions WHERE seq IN ({positions}) {newest}",
                (*parameters, limit + 1)).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        return Page([Decision.from_json(loads(body)) for body, _, _ in rows],
                    f"{rows[-1][1]}|{rows[-1][2]}" if more else None)

    def retraining_jobs(self, model: str, limit: int) -> list[tuple[datetime, str]]:
        with self._errors():
            rows = self._connection().execute(
                "SELECT decided_at, job FROM (SELECT decided_at, seq, json_extract(body, '$.evidence.job') AS job "
                "FROM decisions WHERE model = ? AND outcome = 'retrain') WHERE job IS NOT NULL "
                "ORDER BY decided_at DESC, seq DESC LIMIT ?", (model, limit)).fetchall()
        return [(datetime.fromisoformat(at), job) for at, job in rows]

    def decision(self, decision_id: str) -> Decision | None:
        with self._errors():
            row = self._connection().execute("SELECT body FROM decisions WHERE id = ?", (decision_id,)).fetchone()
        return Decision.from_json(loads(row[0])) if row else None

    def tasks(self, state: TaskState | None = None, limit: int = 100) -> list[Task]:
        with self._errors():
            if state is None:
                rows = self._connection().execute("SELECT body FROM tasks ORDER BY due_at LIMIT ?", (limit,))
            else:
                rows = self._connection().execute(
                    "SELECT body FROM tasks WHERE state = ? ORDER BY due_at LIMIT ?", (state.value, limit))
            return [Task.from_json(loads(body)) for (body,) in rows.fetchall()]

    def task(self, task_id: str) -> Task | None:
        return self._one(Task, "SELECT body FROM tasks WHERE id = ?", task_id)

    def _one(self, kind: type[R], query: str, key: str) -> R | None:
        with self._errors():
            row = self._connection().execute(query, (key,)).fetchone()
        return kind.from_json(loads(row[0])) if row else None

    def due_tasks(self, now: datetime, limit: int) -> list[Task]:
        with self._errors():
            rows = self._connection().execute(
                "SELECT body FROM tasks WHERE state = 'pending' AND due_at <= ? ORDER BY due_at LIMIT ?",
                (now.isoformat(), limit)).fetchall()
        return [Task.from_json(loads(body)) for (body,) in rows]

    def review(self, review_id: str) -> Review | None:
        return self._one(Review, "SELECT body FROM reviews WHERE id = ?", review_id)

    def reviews(self, state: ReviewState | None = None, limit: int = 100, *,
                model: str | None = None) -> list[Review]:
        return [Review.from_json(body) for body in self._newest("reviews", [state] if state else [], limit, model)]

    def _newest(self, table: str, states: Sequence[Any], limit: int, model: str | None) -> list[dict[str, Any]]:
        """The JSON bodies of a table's rows in ``states`` (all when empty), of ``model`` if given, newest first."""
        clauses = [f"state IN ({', '.join('?' for _ in states)})"] if states else []
        clauses += ["model = ?"] if model is not None else []
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._errors():
            rows = self._connection().execute(
                f"SELECT body FROM {table}{where} ORDER BY created_at DESC LIMIT ?",
                (*(state.value for state in states), *([model] if model is not None else []), limit)).fetchall()
        return [loads(body) for (body,) in rows]

    def rollout(self, rollout_id: str) -> Rollout | None:
        return self._one(Rollout, "SELECT body FROM rollouts WHERE id = ?", rollout_id)

    def rollouts(self, states: Sequence[RolloutState] | None = None, limit: int = 100, *,
                 model: str | None = None) -> list[Rollout]:
        return [Rollout.from_json(body) for body in self._newest("rollouts", list(states or ()), limit, model)]

    def incident(self, group: str) -> Incident | None:
        return self._one(Incident, "SELECT body FROM incidents WHERE grp = ?", group)

    def incidents(self, state: IncidentState | None = None, limit: int = 100) -> list[Incident]:
        where, parameters = ("WHERE state = ? ", (state.value,)) if state else ("", ())
        with self._errors():
            rows = self._connection().execute(
                f"SELECT body FROM incidents {where}ORDER BY updated_at DESC LIMIT ?", (*parameters, limit))
            return [Incident.from_json(loads(body)) for (body,) in rows.fetchall()]

    def task_page(self, limit: int = 50, after: str | None = None, *,
                  state: TaskState | None = None) -> Page[Task]:
        return self._keyset(Task, "tasks", "due_at", "id", [state] if state else [], after, limit, newest=False)

    def review_page(self, limit: int = 50, after: str | None = None, *,
                    state: ReviewState | None = None) -> Page[Review]:
        return self._keyset(Review, "reviews", "created_at", "id", [state] if state else [], after, limit)

    def rollout_page(self, limit: int = 50, after: str | None = None, *,
                     states: Sequence[RolloutState] = ()) -> Page[Rollout]:
        return self._keyset(Rollout, "rollouts", "created_at", "id", list(dict.fromkeys(states)), after, limit)

    def incident_page(self, limit: int = 50, after: str | None = None, *,
                      state: IncidentState | None = None) -> Page[Incident]:
        return self._keyset(Incident, "incidents", "updated_at", "grp", [state] if state else [], after, limit)

    def _keyset(self, kind: type[R], table: str, time: str, key: str, states: Sequence[Any], after: str | None,
                limit: int, newest: bool = True) -> Page[R]:
        """One page of a table in (``time``, ``key``) order (``newest``: descending), past the position ``after``
        (``<time>|<key>``), through the (state,) time, key indexes: a range per state, merged."""
        direction, beyond = ("DESC", "<") if newest else ("ASC", ">")
        order = f"ORDER BY t {direction}, k {direction}"
        past, bound = (f" AND ({time}, {key}) {beyond} (?, ?)", list(_position_of(after))) if after else ("", [])
        scan = f"SELECT body, {time} AS t, {key} AS k FROM {table} WHERE {{}}{past} {order} LIMIT ?"
        if len(states) > 1:
            query = " UNION ALL ".join(f"SELECT * FROM ({scan.format('state = ?')})" for _ in states)
            query += f" {order} LIMIT ?"
            parameters = [p for state in states for p in (state.value, *bound, limit + 1)] + [limit + 1]
        else:
            query = scan.format("state = ?" if states else "1")
            parameters = [*(state.value for state in states), *bound, limit + 1]
        with self._errors():
            rows = self._connection().execute(query, parameters).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        return Page([kind.from_json(loads(body)) for body, _, _ in rows],
                    f"{rows[-1][1]}|{rows[-1][2]}" if more else None)

    def ping(self) -> None:
        with self._errors():
            self._connection().execute("SELECT count(*) FROM claims").fetchone()

    def beat(self, beat: Beat) -> None:
        with self._errors():
            self._connection().execute("INSERT OR REPLACE INTO beats (name, at, details) VALUES (?, ?, ?)",
                                       (beat.name, beat.at.isoformat(), dumps(beat.details)))

    def last_beat(self, name: str) -> Beat | None:
        with self._errors():
            row = self._connection().execute("SELECT at, details FROM beats WHERE name = ?", (name,)).fetchone()
        return Beat(name, datetime.fromisoformat(row[0]), loads(row[1])) if row else None

    def checkpoint(self) -> None:
        """Copy the write-ahead log into the database now (the sweep calls it, for what came since the last
        background checkpoint)."""
        with self._errors():
            self._connection().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

    # -- TelemetryStore -----------------------------------------------------------------------
    def append_telemetry(self, events: Sequence[TelemetryEvent], spec_for: Callable[[str], WindowSpec],
                         now: datetime) -> AppendResult:
        stored = duplicates = late = 0
        closed: list[WindowKey] = []
        with self._transaction() as db:
            windows: dict[tuple[str, str, int], list[int]] = {}  # (model, deployment, bucket) -> [part, count]
            full: dict[tuple[str, str, int], int] = {}  # the part just filled: the next record opens the next
            for event in events:
                for target, records in by_deployment(event).items():
                    fresh = db.execute("INSERT OR IGNORE INTO telemetry_events VALUES (?, ?, ?, ?)",
                                       (*target, event.partition, event.sequence_number)).rowcount
                    if not fresh:
                        duplicates += len(records)
                        continue
                    placements, too_late = place(event, records, spec_for, now)
                    late += too_late
                    for p in placements:
                        spec, bucket = p.spec, p.bucket
                        slot = windows.get((*target, bucket)) or self._open_window(
                            db, *target, bucket, spec, full[(*target, bucket)] + 1 if (*target, bucket) in full
                            else None)
                        windows[(*target, bucket)] = slot
                        slot[1] += 1
                        key = WindowKey(*target, bucket, slot[0])
                        if p.kept:
                            db.execute("INSERT OR IGNORE INTO window_rows VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                       (*target, bucket, slot[0], p.hash, event.partition, event.sequence_number,
                                        p.index, dumps(sample_row(p.record))))
                        stored += 1
                        if slot[1] >= spec.records:  # full: close it, the bucket's next records open the next part
                            db.execute("UPDATE windows SET count = ?, closed = 1, reason = 'records' WHERE model = ? "
                                       "AND deployment = ? AND bucket = ? AND part = ?", (slot[1], *target, bucket,
                                                                                         slot[0]))
                            closed.append(key)
                            full[(*target, bucket)] = slot[0]
                            del windows[(*target, bucket)]
            for (model, deployment, bucket), (part, count) in windows.items():
                db.execute("UPDATE windows SET count = ? WHERE model = ? AND deployment = ? AND bucket = ? "
                           "AND part = ?", (count, model, deployment, bucket, part))
        return AppendResult(stored=stored, duplicates=duplicates, late=late, closed=tuple(closed))

    @staticmethod
    def _open_window(db: sqlite3.Connection, model: str, deployment: str, bucket: int, spec: WindowSpec,
                     part: int | None = None) -> list[int]:
        """The bucket's open part as [part, count], created when there is none."""
        if part is None:
            row = db.execute("SELECT part, count, closed FROM windows WHERE model = ? AND deployment = ? AND "
                             "bucket = ? ORDER BY part DESC LIMIT 1", (model, deployment, bucket)).fetchone()
            if row is not None and not row[2]:
                return [row[0], row[1]]
            part = row[0] + 1 if row is not None else 0
        db.execute("INSERT INTO windows VALUES (?, ?, ?, ?, 0, 0, '', ?, 0)",
                   (model, deployment, bucket, part, spec.closes_at(bucket).isoformat()))
        return [part, 0]

    def close_due_windows(self, now: datetime) -> list[WindowKey]:
        with self._transaction() as db:
            due = db.execute("SELECT model, deployment, bucket, part FROM windows WHERE closed = 0 AND closes_at <= ?",
                             (now.isoformat(),)).fetchall()
            db.executemany("UPDATE windows SET closed = 1, reason = 'time' WHERE model = ? AND deployment = ? AND "
                           "bucket = ? AND part = ?", due)
        return [WindowKey(*row) for row in due]

    def undecided_windows(self, limit: int = 100) -> list[WindowKey]:
        with self._errors():
            rows = self._connection().execute("SELECT model, deployment, bucket, part FROM windows WHERE closed = 1 "
                                              "AND decided = 0 ORDER BY closes_at LIMIT ?", (limit,)).fetchall()
        return [WindowKey(*row) for row in rows]

    def mark_window_decided(self, key: WindowKey) -> None:
        with self._transaction() as db:
            db.execute("UPDATE windows SET decided = 1 WHERE model = ? AND deployment = ? AND bucket = ? AND part = ?",
                       (key.model, key.deployment, key.bucket, key.part))

    def window_page(self, limit: int = 50, after: str | None = None, *, model: str | None = None,
                    closed: bool | None = None) -> Page[Window]:
        """In primary key order, past the position ``after`` (``[model, deployment, bucket, part]``)."""
        conditions: list[str] = []
        parameters: list[Any] = []
        for condition, value in (("model = ?", model), ("closed = ?", None if closed is None else int(closed))):
            if value is not None:
                conditions.append(condition)
                parameters.append(value)
        if after is not None:
            conditions.append("(model, deployment, bucket, part) > (?, ?, ?, ?)")
            parameters += _window_position(after)
        where = f"WHERE {' AND '.join(conditions)} " if conditions else ""
        with self._errors():
            rows = self._connection().execute(
                f"SELECT model, deployment, bucket, part, count, closed, reason FROM windows {where}"
                "ORDER BY model, deployment, bucket, part LIMIT ?", (*parameters, limit + 1)).fetchall()
        more = len(rows) > limit
        windows = [Window(WindowKey(*row[:4]), row[4], bool(row[5]), row[6]) for row in rows[:limit]]
        return Page(windows, dumps(list(rows[limit - 1][:4])) if more else None)

    def window(self, key: WindowKey) -> Window | None:
        with self._errors():
            row = self._connection().execute(
                "SELECT count, closed, reason FROM windows WHERE model = ? AND deployment = ? AND bucket = ? AND "
                "part = ?", (key.model, key.deployment, key.bucket, key.part)).fetchone()
        return Window(key, row[0], bool(row[1]), row[2]) if row else None

    def window_sample(self, key: WindowKey, limit: int) -> list[dict[str, Any]]:
        with self._errors():
            rows = self._connection().execute(
                "SELECT row FROM window_rows WHERE model = ? AND deployment = ? AND bucket = ? AND part = ? "
                "ORDER BY hash LIMIT ?", (key.model, key.deployment, key.bucket, key.part, limit)).fetchall()
        return [loads(row) for (row,) in rows]

    def telemetry_count(self, model: str, deployment: str) -> int:
        with self._errors():
            return self._connection().execute(
                "SELECT coalesce(sum(count), 0) FROM windows WHERE model = ? AND deployment = ?",
                (model, deployment)).fetchone()[0]


def _row(record: Record) -> tuple[str, str, str, dict[str, Any]]:
    """A record's table, its key column, its version column and its row. A claim's version is a token drawn anew
    each write; the others' is their body, which every change changes."""
    if isinstance(record, ClaimRecord):
        return "claims", "key", "token", {
            "key": record.key, "partition": record.partition, "state": record.state, "token": uuid.uuid4().hex,
            "lease_until": record.lease_until.isoformat(), "decision_id": record.decision_id,
            "updated_at": record.at.isoformat()}
    body = dumps(record)
    if isinstance(record, Task):
        return "tasks", "id", "body", {"id": record.id, "decision_id": record.decision_id, "state": record.state.value,
                                       "due_at": record.due_at.isoformat(), "body": body}
    if isinstance(record, Incident):
        return "incidents", "grp", "body", {"grp": record.group, "state": record.state.value,
                                            "updated_at": record.updated_at.isoformat(), "revision": record.revision,
                                            "body": body}
    return ("reviews" if isinstance(record, Review) else "rollouts"), "id", "body", {
        "id": record.id, "state": record.state.value, "created_at": record.created_at.isoformat(),
        "revision": record.revision, "model": record.model, "body": body}


def _insertion(table: str, row: dict[str, Any], verb: str = "INSERT") -> str:
    return f"{verb} INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})"


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _position_of(after: str) -> tuple[str, str]:
    """A list page's position, ``<time>|<key>``, as the values the next page starts past."""
    at, separator, key = after.partition("|")
    try:
        datetime.fromisoformat(at)
    except ValueError:
        raise refused() from None
    if not separator or not key:
        raise refused()
    return at, key


def _window_position(after: str) -> list[Any]:
    """A window page's position, ``[model, deployment, bucket, part]``."""
    try:
        key = loads(after)
    except ValueError:
        key = None
    if not (isinstance(key, list) and len(key) == 4 and all(isinstance(k, str) for k in key[:2])
            and all(type(k) is int for k in key[2:])):
        raise refused()
    return key


def _position(after: str) -> tuple[str, int]:
    """A page's position, ``<decided_at>|<seq>``, as the values the next page starts below."""
    at, _, seq = after.rpartition("|")
    try:
        datetime.fromisoformat(at)
        return at, int(seq)
    except ValueError:
        raise refused() from None

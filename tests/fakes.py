"""Hand-written doubles that record what happened, for handler tests."""
from __future__ import annotations

import json
import threading
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from controlplane.adapters.store_base import BaseStore, ClaimRecord, Stored
from controlplane.domain.errors import StoreUnavailable
from controlplane.domain.incidents import Incident
from controlplane.domain.ledger import Decision, Outcome, Task, TaskState
from controlplane.domain.paging import Page, refused
from controlplane.domain.reviews import Review
from controlplane.domain.windows import Window, WindowKey, by_deployment, place, sample_row
from controlplane.ports.gateway import (
    DataAsset,
    DeploymentInfo,
    DeploymentRequest,
    EndpointState,
    GatewayError,
    JobInfo,
    ModelInfo,
    NotFound,
    PipelineRequest,
)
from controlplane.ports.store import AppendResult


def _keyset(items, key, after, limit, newest=True):
    """A page of ``items`` in ``key`` order (a time and an id; ``newest``: descending), past ``after``
    (``<time>|<id>``), as SQLite pages them."""
    if after is not None:
        at, _, name = after.partition("|")
        try:
            past = (datetime.fromisoformat(at), name)
        except ValueError:
            raise refused() from None
        if not name:
            raise refused()
        items = [i for i in items if (key(i) < past if newest else key(i) > past)]
    found = sorted(items, key=key, reverse=newest)
    more = len(found) > limit
    last = key(found[limit - 1]) if more else None
    return Page(found[:limit], f"{last[0].isoformat()}|{last[1]}" if more else None)


class FakeClock:
    def __init__(self, start: datetime = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)) -> None:
        self.moment = start

    def now(self) -> datetime:
        return self.moment

    def advance(self, **delta: float) -> None:
        self.moment += timedelta(**delta)


def _version(held):
    """A fake row's version: a claim's counter, or the record itself (compared by value)."""
    return held.version if isinstance(held, Stored) else held


class FakeStore(BaseStore):
    """An in-memory store with the same contract as the real ones (see test_store_contract). Claims and guarded
    replaces are ``BaseStore``'s; this writes its primitives over dicts, a claim's version a counter, the others'
    the record as stored."""

    name = "fake"

    def __init__(self) -> None:
        self.claims: dict[str, Stored[ClaimRecord]] = {}
        self.ledger: list[Decision] = []
        self.outbox: dict[str, Task] = {}
        self.review_book: dict[str, object] = {}
        self.rollout_book: dict[str, object] = {}
        self.incident_book: dict[str, object] = {}
        self.seen_events: set = set()
        self.windows: dict[tuple, dict] = {}
        self.beats: dict = {}
        self.down = False
        self._lock = threading.Lock()
        self._tokens = 0

    def _check(self) -> None:
        if self.down:
            raise StoreUnavailable("fake store", "down")

    def _book(self, record) -> tuple[dict, str]:
        if isinstance(record, ClaimRecord):
            return self.claims, record.key
        if isinstance(record, Task):
            return self.outbox, record.id
        if isinstance(record, Incident):
            return self.incident_book, record.group
        return (self.review_book if isinstance(record, Review) else self.rollout_book), record.id

    def _stored(self, record):
        with self._lock:
            self._check()
            book, key = self._book(record)
            found = book.get(key)
        return found if found is None or isinstance(found, Stored) else Stored(found, found)

    def _put(self, record, version, decision=None):
        with self._lock:
            self._check()
            book, key = self._book(record)
            held = book.get(key)
            if (held is not None) if version is None else (held is None or _version(held) != version):
                return None
            self._tokens += 1
            book[key] = Stored(record, str(self._tokens)) if isinstance(record, ClaimRecord) else record
            if decision is not None:
                self._insert(decision)
            return _version(book[key])

    def _delete_claim(self, claim):
        with self._lock:
            self._check()
            held = self.claims.get(claim.key)
            if held is not None and held.version == claim.token:
                del self.claims[claim.key]

    def append(self, decision):
        with self._lock:
            self._check()
            self._insert(decision)

    def _insert(self, decision):
        self.ledger.append(decision)
        self.outbox.update({task.id: task for task in decision.tasks})
        self.review_book.update({review.id: review for review in decision.reviews})

    def review(self, review_id):
        self._check()
        return self.review_book.get(review_id)

    def reviews(self, state=None, limit=100, *, model=None):
        self._check()
        found = [r for r in self.review_book.values() if (state is None or r.state is state)
                 and (model is None or r.model == model)]
        return sorted(found, key=lambda r: r.created_at, reverse=True)[:limit]

    def rollout(self, rollout_id):
        self._check()
        return self.rollout_book.get(rollout_id)

    def rollouts(self, states=None, limit=100, *, model=None):
        self._check()
        found = [r for r in self.rollout_book.values() if (not states or r.state in states)
                 and (model is None or r.model == model)]
        return sorted(found, key=lambda r: r.created_at, reverse=True)[:limit]

    def incident(self, group):
        self._check()
        return self.incident_book.get(group)

    def incidents(self, state=None, limit=100):
        self._check()
        found = [i for i in self.incident_book.values() if state is None or i.state is state]
        return sorted(found, key=lambda i: i.updated_at, reverse=True)[:limit]

    def decision_page(self, limit=50, after=None, *, model=None, outcomes=(), event_types=(), version=None,
                      since=None, until=None):
        self._check()
        below = None
        if after is not None:
            at, _, n = after.rpartition("|")
            try:
                below = (datetime.fromisoformat(at), int(n))
            except ValueError:
                raise refused() from None
        found = [((d.decided_at, n), d) for n, d in enumerate(self.ledger)
                 if (model is None or d.model == model) and (not outcomes or d.outcome in outcomes)
                 and (not event_types or d.event_type in event_types) and (version is None or d.version == version)
                 and (since is None or d.decided_at >= since) and (until is None or d.decided_at < until)
                 and (below is None or (d.decided_at, n) < below)]
        found.sort(key=lambda item: item[0], reverse=True)
        more = len(found) > limit
        last = found[limit - 1][0] if more else None
        return Page([d for _, d in found[:limit]], f"{last[0].isoformat()}|{last[1]}" if more else None)

    def task_page(self, limit=50, after=None, *, state=None):
        found = [t for t in self.outbox.values() if state is None or t.state is state]
        return _keyset(found, lambda t: (t.due_at, t.id), after, limit, newest=False)

    def review_page(self, limit=50, after=None, *, state=None):
        self._check()
        found = [r for r in self.review_book.values() if state is None or r.state is state]
        return _keyset(found, lambda r: (r.created_at, r.id), after, limit)

    def rollout_page(self, limit=50, after=None, *, states=()):
        self._check()
        found = [r for r in self.rollout_book.values() if not states or r.state in states]
        return _keyset(found, lambda r: (r.created_at, r.id), after, limit)

    def incident_page(self, limit=50, after=None, *, state=None):
        self._check()
        found = [i for i in self.incident_book.values() if state is None or i.state is state]
        return _keyset(found, lambda i: (i.updated_at, i.group), after, limit)

    def retraining_jobs(self, model, limit):
        found = self.decisions(model=model, limit=len(self.ledger), outcomes=[Outcome.RETRAIN])
        return [(d.decided_at, d.evidence["job"]) for d in found if d.evidence.get("job")][:limit]

    def decision(self, decision_id):
        return next((d for d in self.ledger if d.id == decision_id), None)

    def tasks(self, state=None, limit=100):
        found = [t for t in self.outbox.values() if state is None or t.state is state]
        return sorted(found, key=lambda t: t.due_at)[:limit]

    def task(self, task_id):
        self._check()
        return self.outbox.get(task_id)

    def due_tasks(self, now, limit):
        self._check()
        return [t for t in self.tasks(TaskState.PENDING, 10_000) if t.due_at <= now][:limit]

    def ping(self):
        self._check()

    def beat(self, beat):
        self._check()
        self.beats[beat.name] = beat

    def last_beat(self, name):
        self._check()
        return self.beats.get(name)

    def checkpoint(self):
        self._check()

    def append_telemetry(self, events, spec_for, now) -> AppendResult:
        with self._lock:
            self._check()
            stored = duplicates = late = 0
            closed = []
            for event in events:
                for target, records in by_deployment(event).items():
                    if (target, event.partition, event.sequence_number) in self.seen_events:
                        duplicates += len(records)
                        continue
                    self.seen_events.add((target, event.partition, event.sequence_number))
                    placements, too_late = place(event, records, spec_for, now)
                    late += too_late
                    for p in placements:
                        spec, bucket = p.spec, p.bucket
                        parts = [k for k in self.windows if k[:3] == (*target, bucket)]
                        part = max((k[3] for k in parts), default=-1)
                        if part < 0 or self.windows[(*target, bucket, part)]["closed"]:
                            part += 1
                            self.windows[(*target, bucket, part)] = {"count": 0, "closed": False, "reason": "",
                                                                     "closes_at": spec.closes_at(bucket), "rows": [],
                                                                     "decided": False}
                        window = self.windows[(*target, bucket, part)]
                        window["count"] += 1
                        if p.kept:
                            window["rows"].append((p.hash, sample_row(p.record)))
                        stored += 1
                        if window["count"] >= spec.records:
                            window.update(closed=True, reason="records")
                            closed.append(WindowKey(*target, bucket, part))
            return AppendResult(stored, duplicates, late, tuple(closed))

    def close_due_windows(self, now):
        with self._lock:
            due = [k for k, w in self.windows.items() if not w["closed"] and w["closes_at"] <= now]
            for key in due:
                self.windows[key].update(closed=True, reason="time")
            return [WindowKey(*key) for key in due]

    def undecided_windows(self, limit=100):
        return [WindowKey(*k) for k, w in self.windows.items() if w["closed"] and not w["decided"]][:limit]

    def mark_window_decided(self, key):
        self.windows[(key.model, key.deployment, key.bucket, key.part)]["decided"] = True

    def window_page(self, limit=50, after=None, *, model=None, closed=None):
        past = None
        if after is not None:
            try:
                past = tuple(json.loads(after))
            except (ValueError, TypeError):
                raise refused() from None
            if [type(k) for k in past] != [str, str, int, int]:
                raise refused()
        found = sorted(k for k, w in self.windows.items() if (model is None or k[0] == model)
                       and (closed is None or w["closed"] is closed) and (past is None or k > past))
        more = len(found) > limit
        windows = [self.window(WindowKey(*key)) for key in found[:limit]]
        return Page(windows, json.dumps(list(found[limit - 1])) if more else None)

    def window(self, key):
        found = self.windows.get((key.model, key.deployment, key.bucket, key.part))
        return Window(key, found["count"], found["closed"], found["reason"]) if found else None

    def window_sample(self, key, limit):
        found = self.windows.get((key.model, key.deployment, key.bucket, key.part))
        return [row for _, row in sorted(found["rows"], key=lambda item: item[0])[:limit]] if found else []

    def telemetry_count(self, model, deployment):
        return sum(w["count"] for k, w in self.windows.items() if k[:2] == (model, deployment))


class FakeGateway:
    """An Azure ML workspace in memory: models, jobs, endpoints. Records every call."""

    name = "fake-gateway"

    def __init__(self) -> None:

        self.models: dict[tuple[str, str], object] = {}
        self.jobs: dict[str, object] = {}
        self.data: dict[tuple[str, str], str] = {}
        self.endpoints: dict[str, EndpointState] = {}
        self.calls: list[tuple] = []

    def add_model(self, name, version, tags=None, properties=None, created_by="", registered_by=None):
        """``registered_by`` is the workspace's record of the registrant; by default ``created_by``."""
        from controlplane.ports.gateway import ModelInfo

        self.models[(name, version)] = ModelInfo(name, version, dict(tags or {}), dict(properties or {}), created_by,
                                                 registered_by=created_by if registered_by is None else registered_by)

    def serve(self, endpoint, deployment, model_ref):
        from controlplane.ports.gateway import DeploymentInfo, EndpointState

        self.endpoints[endpoint] = EndpointState(endpoint, {deployment: 100}, {},
                                                 (DeploymentInfo(endpoint, deployment, model_ref,
                                                                 provisioning_state="Succeeded"),))

    def get_model(self, name, version):
        from controlplane.ports.gateway import NotFound

        self.calls.append(("get_model", name, version))
        if (name, version) not in self.models:
            raise NotFound("models.get", f"{name}:{version} not found", 404)
        return self.models[(name, version)]

    def get_endpoint(self, name):
        from controlplane.ports.gateway import NotFound

        self.calls.append(("get_endpoint", name))
        if name not in self.endpoints:
            raise NotFound("online_endpoints.get", f"{name} not found", 404)
        return self.endpoints[name]

    def get_batch_endpoint(self, name):
        from controlplane.ports.gateway import NotFound

        self.calls.append(("get_batch_endpoint", name))
        raise NotFound("batch_endpoints.get", f"{name} not found", 404)


class FakeWorkspace(FakeGateway):
    """FakeGateway with jobs and online deployments: jobs kept by name, every creation counted, calls recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.created: Counter[str] = Counter()
        self.states: dict[tuple[str, str], list[str]] = {}  # scripted provisioning states, one per read
        self.errors: dict[tuple[str, str], str] = {}

    def provision(self, endpoint: str, deployment: str, *states: str, error: str = "") -> None:
        """The provisioning states the next reads of a deployment see, the last one for good."""
        self.states[(endpoint, deployment)] = list(states)
        self.errors[(endpoint, deployment)] = error

    def create_endpoint(self, name: str, auth_mode: str, compute: str | None = None) -> EndpointState:
        self.calls.append(("create_endpoint", name, auth_mode) + ((compute,) if compute else ()))
        self.endpoints[name] = EndpointState(name, {}, {})
        return replace(self.endpoints[name], provisioning_state="Creating")  # begun; done by the next look

    def get_deployment(self, endpoint: str, name: str) -> DeploymentInfo:
        self.calls.append(("get_deployment", endpoint, name))
        state = self.endpoints.get(endpoint)
        found = next((d for d in state.deployments if d.name == name), None) if state else None
        if found is None:
            raise NotFound("online_deployments.get", f"{endpoint}/{name} not found", 404)
        scripted = self.states.get((endpoint, name))
        if scripted:
            current = scripted.pop(0) if len(scripted) > 1 else scripted[0]
            error = self.errors[(endpoint, name)] if current == "Failed" else ""
            return replace(found, provisioning_state=current, error=error)
        return found

    def submit_pipeline(self, request: PipelineRequest) -> JobInfo:
        self.calls.append(("submit_pipeline", request))
        if request.name in self.jobs:
            return replace(self.jobs[request.name], created=False)
        self.created[request.name] += 1
        job = JobInfo(request.name, "NotStarted", request.experiment,
                      f"https://ml.azure.com/runs/{request.name}", created=True)
        self.jobs[request.name] = job
        return job

    def get_job(self, name: str) -> JobInfo:
        self.calls.append(("get_job", name))
        if name not in self.jobs:
            raise NotFound("jobs.get", f"{name} not found", 404)
        return replace(self.jobs[name], created=False)

    def register_data(self, name, version, path, description="", tags=None):
        self.calls.append(("register_data", name, version, path))
        found = self.data.get((name, version))
        if found is None:
            self.data[(name, version)] = path
            return DataAsset(name, version, path, created=True)
        if found != path:
            raise GatewayError("register_data", f"data asset {name}:{version} exists at {found}, not at {path}")
        return DataAsset(name, version, path)

    def _endpoint(self, operation: str, endpoint: str) -> EndpointState:
        if endpoint not in self.endpoints:
            raise NotFound(operation, f"endpoint {endpoint} not found", 404)
        return self.endpoints[endpoint]

    # Each change below finishes at once (reads see it done), but returns what the real gateway returns when it
    # begins one: the operation under way (Creating, Updating).

    def deploy(self, request: DeploymentRequest) -> DeploymentInfo:
        self.calls.append(("deploy", request))
        state = self._endpoint("deploy", request.endpoint)
        info = DeploymentInfo(request.endpoint, request.name, request.model, request.instance_type,
                              request.instance_count, "Succeeded")
        others = tuple(d for d in state.deployments if d.name != request.name)
        self.endpoints[request.endpoint] = replace(state, deployments=(*others, info))
        return replace(info, provisioning_state="Creating")

    def scale(self, endpoint: str, deployment: str, instance_count: int) -> DeploymentInfo:
        self.calls.append(("scale", endpoint, deployment, instance_count))
        state = self._endpoint("scale", endpoint)
        current = next((d for d in state.deployments if d.name == deployment), None)
        if current is None:
            raise NotFound("scale", f"deployment {deployment} not found on {endpoint}", 404)
        scaled = replace(current, instance_count=instance_count)
        self.endpoints[endpoint] = replace(state, deployments=tuple(
            scaled if d.name == deployment else d for d in state.deployments))
        return replace(scaled, provisioning_state="Updating")

    def set_traffic(self, endpoint, traffic, mirror=None):
        from controlplane.ports.gateway import validate_traffic

        validate_traffic(traffic, mirror)  # refused before anything is sent, as Azure ML would refuse it
        self.calls.append(("set_traffic", endpoint, dict(traffic), None if mirror is None else dict(mirror)))
        state = self._endpoint("set_traffic", endpoint)
        self.endpoints[endpoint] = replace(state, traffic=dict(traffic),
                                           mirror_traffic=state.mirror_traffic if mirror is None else dict(mirror))
        return replace(self.endpoints[endpoint], provisioning_state="Updating")

    def delete_deployment(self, endpoint: str, deployment: str) -> None:
        self.calls.append(("delete_deployment", endpoint, deployment))
        state = self.endpoints.get(endpoint)
        if state is not None:  # deleting what is gone is not an error
            self.endpoints[endpoint] = replace(state, deployments=tuple(d for d in state.deployments
                                                                        if d.name != deployment))

    def tag_model(self, name: str, version: str, tags, stage=None) -> ModelInfo:
        self.calls.append(("tag_model", name, version, dict(tags), stage))
        current = self.models.get((name, version)) or ModelInfo(name, version)
        self.models[(name, version)] = replace(current, tags={**current.tags, **tags}, stage=stage or current.stage)
        return self.models[(name, version)]

    def called(self, operation: str) -> list[tuple]:
        return [call for call in self.calls if call[0] == operation]


class RecordingDispatcher:
    """Records every task it is given; fails as scripted."""

    name = "recording"

    def __init__(self, failures: list[Exception] | None = None) -> None:
        self.sent: list[Task] = []
        self.failures = list(failures or [])

    def dispatch(self, task: Task) -> dict:
        self.sent.append(task)
        if self.failures:
            raise self.failures.pop(0)
        return {"sent": task.id}


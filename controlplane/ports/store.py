"""The ports: small protocols the handlers use to reach the outside world.

Adapters in ``controlplane.adapters`` implement them (SQLite, Azure Table Storage, the dry-run
dispatcher, the system clock); tests use hand-written fakes or the real adapters. A store backend does not write
``Store`` whole: it subclasses ``controlplane.adapters.store_base.BaseStore``, which holds the rules of claims,
leases and guarded replaces over four primitives, and writes those, its reads and its telemetry windows.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from controlplane.domain.events import TelemetryEvent
from controlplane.domain.incidents import Incident, IncidentState
from controlplane.domain.ledger import Decision, Outcome, Task, TaskState
from controlplane.domain.paging import Page
from controlplane.domain.reviews import Review, ReviewState
from controlplane.domain.rollout import Rollout, RolloutState
from controlplane.domain.windows import Window, WindowKey, WindowSpec

if TYPE_CHECKING:  # the policy model pulls in pydantic; only the composition root loads it
    from controlplane.domain.policy import DriftPolicy, Policy
    from controlplane.ports.gateway import Gateway, Workspaces
    from controlplane.ports.monitoring import HealthProbe


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""


@dataclass(frozen=True)
class Claim:
    """The right to decide one idempotency key, or the news that it was decided already.

    ``token`` is the store's concurrency token (a row version or an ETag) for the completing write;
    ``original`` is the first decision's id when the key was already completed.
    """

    key: str
    partition: str
    token: str
    original: str | None = None
    taken_over: bool = False

    @property
    def is_duplicate(self) -> bool:
        return self.original is not None


@dataclass(frozen=True)
class AppendResult:
    stored: int  # records counted in a window
    duplicates: int  # records of events seen before
    late: int = 0  # records whose window had closed (after its grace period)
    closed: tuple[WindowKey, ...] = ()  # windows this append filled up


@dataclass(frozen=True)
class Beat:
    """A periodic job's last success (the sweep's), with what it saw: read by /api/health on any instance."""

    name: str
    at: datetime
    details: Mapping[str, Any]


class DecisionStore(Protocol):
    """Idempotency claims, the decision ledger and the task outbox, written together."""

    name: str

    def claim(self, key: str, partition: str, now: datetime, lease: timedelta) -> Claim:
        """Take the key (INPROGRESS until ``now + lease``), or report it done.

        Raises ``EventInProgress`` while another holder's lease runs; an expired lease is taken over.
        """

    def complete(self, claim: Claim, decision: Decision) -> None:
        """Atomically mark the claim COMPLETED and write the decision, its tasks and its reviews."""

    def complete_unclaimed(self, key: str, partition: str, decision: Decision) -> str | None:
        """Claim ``key`` COMPLETED and write the decision, its tasks and its reviews in one atomic write,
        for a decision made without a claim (a cheap one, with no effect until it is recorded).

        None when written. When the key was completed meanwhile nothing is written and the original
        decision's id is returned; ``EventInProgress`` while another holder's lease runs at
        ``decision.decided_at`` (an expired one is taken over).
        """

    def release(self, claim: Claim) -> None:
        """Give the key back after a failed attempt so the retry can take it at once."""

    def append(self, decision: Decision) -> None:
        """Write a decision that needs no claim (``duplicate`` records)."""

    def decisions(self, model: str | None = None, limit: int = 50, outcomes: Sequence[Outcome] = (),
                  event_types: Sequence[str] = (), version: str | None = None) -> list[Decision]:
        """Newest first, optionally for one model (and version), some outcomes and some event types."""

    def decision_page(self, limit: int = 50, after: str | None = None, *, model: str | None = None,
                      outcomes: Sequence[Outcome] = (), event_types: Sequence[str] = (), version: str | None = None,
                      since: datetime | None = None, until: datetime | None = None) -> Page[Decision]:
        """One page of ``decisions``, decided in [``since``, ``until``), going on from ``after`` (the position a
        previous page of the same query returned); ``paging.refused`` for a position the store cannot read."""

    def repair_indexes(self, now: datetime) -> int:
        """Write the index rows of decisions whose write was cut short before them (the sweep calls it); how
        many decisions were repaired."""

    def backfill_indexes(self, resume: str | None = None, pages: int = 1,
                         page_size: int = 1000) -> tuple[int, str | None]:
        """Index what was written before the indexes existed (decisions; on Table Storage also pending and
        dead-lettered tasks), a few pages at a time: how many rows, and the point to resume from (None when done).
        Idempotent: indexing a record again writes the same rows."""

    def decision(self, decision_id: str) -> Decision | None: ...

    def retraining_jobs(self, model: str, limit: int) -> list[tuple[datetime, str]]:
        """When the model's latest retraining jobs were decided, and their names, newest first (the storm
        guard's question, answered without reading whole decisions)."""

    def tasks(self, state: TaskState | None = None, limit: int = 100) -> list[Task]: ...

    def task(self, task_id: str) -> Task | None: ...

    def due_tasks(self, now: datetime, limit: int) -> list[Task]:
        """Pending tasks whose ``due_at`` has come, oldest first."""

    def update_task(self, current: Task, updated: Task) -> None:
        """Replace ``current`` with ``updated``; a no-op when another sweep changed it meanwhile."""

    def review(self, review_id: str) -> Review | None: ...

    def reviews(self, state: ReviewState | None = None, limit: int = 100, *,
                model: str | None = None) -> list[Review]:
        """Newest first; only ``model``'s when given (a query of that model alone)."""

    def update_review(self, current: Review, updated: Review, decision: Decision) -> bool:
        """Replace ``current`` and write ``decision`` (with its tasks) atomically, only if nobody changed
        the review since ``current`` was read; False when somebody did (the caller lost the race)."""

    def create_rollout(self, rollout: Rollout) -> bool:
        """Write a new rollout; False (and nothing written) when one with that id exists already."""

    def rollout(self, rollout_id: str) -> Rollout | None: ...

    def rollouts(self, states: Sequence[RolloutState] | None = None, limit: int = 100, *,
                 model: str | None = None) -> list[Rollout]:
        """Newest first; only ``model``'s when given (a query of that model alone)."""

    def update_rollout(self, current: Rollout, updated: Rollout, decision: Decision) -> bool:
        """Like ``update_review``: replace and record atomically, only from the revision read."""

    def incident(self, group: str) -> Incident | None:
        """The latest incident of an alert group (open, or the last one closed)."""

    def incidents(self, state: IncidentState | None = None, limit: int = 100) -> list[Incident]:
        """Most recently updated first."""

    # Pages of the lists that grow. ``after`` is the position a previous page of the same query returned, a string
    # only this store reads; ``paging.refused`` for one it cannot. Pages concatenate to the whole list, each item
    # once, while nothing changes; a page may be short (and the last one empty) where a store cannot tell sooner.
    # The order is the one each method names, except on Table Storage, which sorts only by its keys (TableStore).
    def task_page(self, limit: int = 50, after: str | None = None, *,
                  state: TaskState | None = None) -> Page[Task]:
        """Soonest due first (due time, then id)."""

    def review_page(self, limit: int = 50, after: str | None = None, *,
                    state: ReviewState | None = None) -> Page[Review]:
        """Newest first (created time, then id)."""

    def rollout_page(self, limit: int = 50, after: str | None = None, *,
                     states: Sequence[RolloutState] = ()) -> Page[Rollout]:
        """Newest first (created time, then id), in ``states`` (all when empty)."""

    def incident_page(self, limit: int = 50, after: str | None = None, *,
                      state: IncidentState | None = None) -> Page[Incident]:
        """Most recently updated first (update time, then group)."""

    def put_incident(self, current: Incident | None, updated: Incident) -> bool:
        """Write ``updated`` for its group: created when ``current`` is None, else replacing ``current`` only if
        nobody changed it since it was read; False when somebody did (re-read and try again)."""

    def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless the store answers."""

    def beat(self, beat: Beat) -> None:
        """Keep ``beat`` as the latest of its name, for every instance to read."""

    def last_beat(self, name: str) -> Beat | None:
        """The latest beat of ``name``; None when it never beat."""

    def checkpoint(self) -> None:
        """Housekeeping the sweep does off the request path (SQLite copies its write-ahead log into the
        database); nothing where there is none."""


class TelemetryStore(Protocol):
    """Telemetry windows: exact counts and hash samples, deduplicated by Event Hubs partition and
    sequence number, safe when several instances append to the same window at once."""

    def append_telemetry(self, events: Sequence[TelemetryEvent], spec_for: Callable[[str], WindowSpec],
                         now: datetime) -> AppendResult: ...

    def close_due_windows(self, now: datetime) -> list[WindowKey]:
        """Close every open window whose bucket and grace period have passed; the keys closed."""

    def undecided_windows(self, limit: int = 100) -> list[WindowKey]:
        """Closed windows whose decision is not recorded yet (a check that failed for now)."""

    def mark_window_decided(self, key: WindowKey) -> None: ...

    def window_page(self, limit: int = 50, after: str | None = None, *, model: str | None = None,
                    closed: bool | None = None) -> Page[Window]:
        """Windows in key order (model, deployment, bucket, part; Table Storage: its partition, the quoted
        ``model|deployment``, then bucket and part), optionally of one model and only closed or open ones; paged
        like ``task_page``."""

    def window(self, key: WindowKey) -> Window | None: ...

    def window_sample(self, key: WindowKey, limit: int) -> list[dict[str, Any]]:
        """The ``limit`` kept rows with the smallest hashes: a uniform sample of the window."""

    def telemetry_count(self, model: str, deployment: str) -> int: ...


class Store(DecisionStore, TelemetryStore, Protocol):
    """What a storage backend provides."""


class DriftVerdict(Protocol):
    """What a drift check answers (``controlplane.drift.engine.DriftResult``), as far as a handler reads it."""

    @property
    def rows(self) -> int: ...

    @property
    def inconclusive(self) -> bool: ...

    @property
    def dataset_drift(self) -> bool: ...

    @property
    def drifted(self) -> Sequence[str]: ...

    @property
    def share(self) -> float: ...

    @property
    def reason(self) -> str: ...

    def to_evidence(self) -> dict[str, Any]:
        """A JSON-safe summary for the decision record."""


class DriftChecker(Protocol):
    """Checks a window's rows against the model's reference data (Evidently behind it).

    ``render`` writes the full HTML report for people and returns where it is. A bad drift policy or unreadable
    reference raises ``PermanentError``.
    """

    def check(self, rows: list[dict[str, Any]], policy: DriftPolicy) -> DriftVerdict: ...

    def render(self, rows: list[dict[str, Any]], policy: DriftPolicy, name: str,
               window: Mapping[str, Any] | None = None) -> str: ...


class Artifacts(Protocol):
    """Files kept for people: drift reports, labelling exports, an alert target's signals (a local directory, or
    a blob container in Azure). Names are plain relative paths such as ``reports/churn-green-491234.0.html``."""

    def save(self, name: str, data: bytes, content_type: str) -> str:
        """Keep ``data`` under ``name``; where it is now (a path or a URL)."""

    def load(self, name: str) -> bytes | None:
        """What is kept under ``name``; None when nothing is."""


class AlertAuth(Protocol):
    """Checks the Entra ID token Azure Monitor's secure webhook sends with each alert (``POST /api/alerts``)."""

    def validate(self, authorization: str | None) -> dict[str, Any]:
        """The verified claims of the bearer token in an ``Authorization`` header; ``Unauthorized`` when refused."""


class Dispatcher(Protocol):
    """Sends a task's request to where it goes (Azure ML, a webhook...) and returns what came back."""

    name: str

    def dispatch(self, task: Task) -> dict: ...


@dataclass(frozen=True)
class Services:
    """The ports and values a handler works with, built once by ``controlplane.bootstrap``."""

    store: Store
    clock: Clock
    dispatcher: Dispatcher
    policy: Policy
    lease: timedelta = timedelta(minutes=5)
    gateway: Gateway | None = None  # Azure ML, when a workspace is configured
    approval_key: bytes = b""  # signs approval links
    public_url: str = "http://127.0.0.1:7071"  # where approval links point
    publish_decisions: bool = False  # an Event Grid topic receives every decision
    health: HealthProbe | None = None  # deployment health for rollout gates
    drift: DriftChecker | None = None  # window drift checks
    artifacts: Artifacts | None = None  # drift reports, labelling exports, alert signals
    alert_auth: AlertAuth | None = None  # Entra secure-webhook tokens on /api/alerts, when configured
    sweep_stale: timedelta = timedelta(minutes=10)  # /api/health fails past this without a successful sweep
    workspaces: Workspaces | None = None  # the policy's environments, each a workspace; None: the home one only
    telemetry_capture: str = ""  # where Event Hubs Capture keeps telemetry, as an Azure ML job reads it

    def gateway_in(self, environment: str | None) -> Gateway | None:
        """The gateway of an environment's workspace (``None``: the home workspace, ``gateway``)."""
        if environment is None or self.workspaces is None:
            return self.gateway
        return self.workspaces.gateway(environment)

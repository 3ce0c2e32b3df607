"""The rules every store backend shares, written once: claims and their leases, and guarded replaces.

A backend subclasses ``BaseStore`` and writes four primitives over its rows: read a row with its version
(``_stored``), write a row on a condition, beside a decision in the same atomic write (``_put``), drop a claim
still at its version (``_delete_claim``) and write a decision with no claim (``append``). Everything that decides
(whether a key is new, a duplicate, still held or taken over once its lease ran out; whether a review, rollout,
incident or task is still as its reader saw it) is here. What is left to a backend is what only it can do well:
reading through its own indexes (decisions, tasks, reviews, rollouts, incidents), the telemetry windows, ``ping``.

Why a base class rather than ``Store`` split by aggregate: a split would give handlers narrower ports but would
leave each rule in each backend, where copies drift apart (a revision compared in one, a whole record in another;
an expired claim taken over in a transaction here, by ETag there). Conditional writes are what every database
offers (a ``WHERE`` on a version, an ETag, a condition expression), so four primitives carry every rule, and the
``Store`` port handlers see stays as it is.

A row's version is the backend's own concurrency token, opaque here: an ETag, a token written with the row, or
the row's body. ``_put`` returns the new one; a claim carries it as ``Claim.token``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Generic, TypeVar

from controlplane.domain.errors import EventInProgress
from controlplane.domain.incidents import Incident
from controlplane.domain.ledger import Decision, Outcome, Task
from controlplane.domain.paging import Page
from controlplane.domain.reviews import Review
from controlplane.domain.rollout import Rollout
from controlplane.ports.store import Claim

INPROGRESS, COMPLETED = "INPROGRESS", "COMPLETED"
CLAIM_ATTEMPTS = 3  # a claim released between our write and our read of it: try again, a few times


@dataclass(frozen=True)
class ClaimRecord:
    """The stored state of one idempotency key: INPROGRESS until ``lease_until``, or COMPLETED with the decision
    that completed it. ``at`` is when it was written."""

    key: str
    partition: str
    state: str
    lease_until: datetime
    at: datetime
    decision_id: str | None = None


Record = ClaimRecord | Task | Review | Rollout | Incident
R = TypeVar("R", ClaimRecord, Task, Review, Rollout, Incident)
G = TypeVar("G", Task, Review, Rollout, Incident)  # the records a guarded replace changes


@dataclass(frozen=True)
class Stored(Generic[R]):
    """A row as read, with the version a conditional write must find to replace it."""

    record: R
    version: str


def guard(record: Task | Review | Rollout | Incident) -> tuple:
    """What a guarded replace must find unchanged: a task's state and attempts (how far the sweep took it), the
    revision of a review, a rollout or an incident."""
    if isinstance(record, Task):
        return record.state, record.attempts
    return (record.revision,)


def completed(key: str, partition: str, decision: Decision) -> ClaimRecord:
    return ClaimRecord(key, partition, COMPLETED, decision.decided_at, decision.decided_at, decision.id)


class BaseStore(ABC):
    """Claims, guarded replaces and the defaults of a store with nothing to repair, over a backend's primitives."""

    name: str

    # -- the primitives ------------------------------------------------------------------------
    @abstractmethod
    def _stored(self, record: R) -> Stored[R] | None:
        """The row stored at ``record``'s address (a claim's key, a task's, review's or rollout's id, an incident's
        group), with its version; None when there is none."""

    @abstractmethod
    def _put(self, record: Record, version: str | None, decision: Decision | None = None) -> str | None:
        """Write ``record`` only if its row is as expected: absent when ``version`` is None, else still at
        ``version``; with ``decision`` (its tasks and reviews too) in the same atomic write. The row's new version,
        or None, with nothing written, when the condition failed."""

    @abstractmethod
    def _delete_claim(self, claim: Claim) -> None:
        """Drop the claim's row if it is still at ``claim.token``; nothing when it is not."""

    @abstractmethod
    def append(self, decision: Decision) -> None:
        """Write a decision (its tasks and reviews too) that needs no claim."""

    @abstractmethod
    def decision_page(self, limit: int = 50, after: str | None = None, *, model: str | None = None,
                      outcomes: Sequence[Outcome] = (), event_types: Sequence[str] = (), version: str | None = None,
                      since: datetime | None = None, until: datetime | None = None) -> Page[Decision]:
        """``Store.decision_page``: the ledger read through the backend's own indexes."""

    # -- claims and their leases ---------------------------------------------------------------
    def claim(self, key: str, partition: str, now: datetime, lease: timedelta) -> Claim:
        mine = ClaimRecord(key, partition, INPROGRESS, now + lease, now)
        for _ in range(CLAIM_ATTEMPTS):
            token = self._put(mine, None)
            if token is not None:
                return Claim(key, partition, token)
            held = self._stored(mine)
            if held is None:
                continue  # released since our write found it
            if held.record.state == COMPLETED:
                return Claim(key, partition, "", original=held.record.decision_id)
            if held.record.lease_until > now:
                raise EventInProgress(key)
            token = self._put(mine, held.version)  # its holder's lease ran out: ours, unless another took it first
            if token is None:
                raise EventInProgress(key)
            return Claim(key, partition, token, taken_over=True)
        raise EventInProgress(key)

    def complete(self, claim: Claim, decision: Decision) -> None:
        if self._put(completed(claim.key, claim.partition, decision), claim.token, decision) is None:
            raise EventInProgress(claim.key)  # our lease ran out and another instance took the key

    def complete_unclaimed(self, key: str, partition: str, decision: Decision) -> str | None:
        done = completed(key, partition, decision)
        if self._put(done, None, decision) is not None:
            return None
        held = self._stored(done)
        if held is None:
            raise EventInProgress(key)  # released since our write found it: the retry writes it
        if held.record.state == COMPLETED:
            return held.record.decision_id
        if held.record.lease_until > decision.decided_at:
            raise EventInProgress(key)
        if self._put(done, held.version, decision) is None:  # an expired claim: ours, unless another took it
            raise EventInProgress(key)
        return None

    def release(self, claim: Claim) -> None:
        self._delete_claim(claim)

    # -- guarded replaces ----------------------------------------------------------------------
    def _replace(self, current: G, updated: G, decision: Decision | None = None) -> bool:
        """Replace ``current`` with ``updated`` (and write ``decision``) only if nobody changed it since it was
        read: its stored row must pass the same ``guard`` and still be at the version read."""
        stored = self._stored(current)
        if stored is None or guard(stored.record) != guard(current):
            return False
        return self._put(updated, stored.version, decision) is not None

    def update_task(self, current: Task, updated: Task) -> None:
        self._replace(current, updated)

    def update_review(self, current: Review, updated: Review, decision: Decision) -> bool:
        return self._replace(current, updated, decision)

    def update_rollout(self, current: Rollout, updated: Rollout, decision: Decision) -> bool:
        return self._replace(current, updated, decision)

    def create_rollout(self, rollout: Rollout) -> bool:
        return self._put(rollout, None) is not None

    def put_incident(self, current: Incident | None, updated: Incident) -> bool:
        if current is None:
            return self._put(updated, None) is not None
        return self._replace(current, updated)

    # -- reads and housekeeping with one answer for most backends --------------------------------
    def decisions(self, model: str | None = None, limit: int = 50, outcomes: Sequence[Outcome] = (),
                  event_types: Sequence[str] = (), version: str | None = None) -> list[Decision]:
        return self.decision_page(limit, model=model, outcomes=outcomes, event_types=event_types,
                                  version=version).items

    def repair_indexes(self, now: datetime) -> int:
        """Nothing to repair where indexes are written in the transaction that writes the row."""
        return 0

    def backfill_indexes(self, resume: str | None = None, pages: int = 1,
                         page_size: int = 1000) -> tuple[int, str | None]:
        """Nothing to backfill where the indexes are built with the rows (or when the store opens)."""
        return 0, None

    def checkpoint(self) -> None:
        """Nothing to do where every write is already where it belongs."""
        return None

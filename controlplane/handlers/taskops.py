"""Operator use cases on the outbox: list, show, retry, cancel and replay tasks (``python -m controlplane tasks``).

Every change is a conditional ``store.update_task(current, updated)`` followed by a re-read: when a sweep
(or another operator) changed the task meanwhile, the store keeps their version and ``TaskChanged`` says
what the task is now. Nothing is ever deleted.

- ``retry_task``: one more go. A pending or dead-lettered task becomes pending and due now, keeping its
  attempts and last error; a dead-lettered task that fails transiently again is dead-lettered again at once.
- ``replay_dead_letters``: a fresh start. Every dead-lettered task becomes pending and due now with its
  attempts reset to 0, so it gets the full retry budget again.
- ``cancel_task``: a pending task is cancelled and never dispatched.

``outbox_action`` is what the outbox page's buttons ask for: retry or cancel one task, or replay every dead letter.

Dispatching a task again is safe because every request carries a name derived from its idempotency key.
"""
from __future__ import annotations

import logging
from dataclasses import replace

from controlplane.domain.errors import InvalidEvent, TaskChanged, TaskNotFound, TaskRefused
from controlplane.domain.ledger import Task, TaskState
from controlplane.ports.store import Services

logger = logging.getLogger(__name__)

DEAD_LETTERS = "dead-letters"  # the outbox page's name for every dead letter at once: no task id has a hyphen


def show_task(services: Services, task_id: str) -> Task:
    task = services.store.task(task_id)
    if task is None:
        raise TaskNotFound(task_id)
    return task


def retry_task(services: Services, task_id: str) -> Task:
    """Make a pending or dead-lettered task pending and due now; attempts and last error are kept."""
    current = show_task(services, task_id)
    if current.state is TaskState.SUCCEEDED:
        raise TaskRefused(current, "retry", "it was dispatched already; a new decision must ask for it again")
    if current.state is TaskState.CANCELLED:
        raise TaskRefused(current, "retry", "a cancelled task stays cancelled")
    now = services.clock.now()
    updated = replace(current, state=TaskState.PENDING, due_at=now, updated_at=now)
    return _write(services, current, updated, "retry")


def cancel_task(services: Services, task_id: str) -> Task:
    """Cancel a pending task so it is never dispatched; the record stays."""
    current = show_task(services, task_id)
    if current.state is not TaskState.PENDING:
        reasons = {TaskState.SUCCEEDED: "it was dispatched already",
                   TaskState.DEAD_LETTERED: "it is not going to be dispatched unless retried or replayed",
                   TaskState.CANCELLED: "it was cancelled already"}
        raise TaskRefused(current, "cancel", reasons.get(current.state, "only pending tasks can be cancelled"))
    updated = replace(current, state=TaskState.CANCELLED, updated_at=services.clock.now())
    return _write(services, current, updated, "cancel")


def act(services: Services, action: str, task_id: str, allowed: tuple[str, ...] = ("show", "retry", "cancel")) -> Task:
    """``show``, ``retry`` or ``cancel`` a task, among ``allowed``; ``InvalidEvent`` naming ``action`` otherwise."""
    operations = {"show": show_task, "retry": retry_task, "cancel": cancel_task}
    if action not in allowed or action not in operations:
        raise InvalidEvent("action", f"expected {' or '.join(allowed)}, got {action[:20]!r}")
    return operations[action](services, task_id)


def dead_letters(services: Services, limit: int = 100) -> list[Task]:
    """Up to ``limit`` dead-lettered tasks: what a replay would take now."""
    return services.store.tasks(TaskState.DEAD_LETTERED, limit)


def outbox_action(services: Services, target: str, action: str) -> tuple[str, str]:
    """One of the outbox page's buttons: ``retry`` or ``cancel`` the task ``target``, or ``replay`` when ``target``
    is ``DEAD_LETTERS``. Returns what the page says afterwards, as the action and the task's id or, for a replay,
    how many tasks were replayed. ``InvalidEvent`` names an action the target does not take."""
    if target == DEAD_LETTERS:
        if action != "replay":
            raise InvalidEvent("action", f"expected replay, got {action[:20]!r}")
        return action, str(len(replay_dead_letters(services)))
    return action, act(services, action, target, allowed=("retry", "cancel")).id


def replay_dead_letters(services: Services, limit: int = 100) -> list[Task]:
    """Give up to ``limit`` dead-lettered tasks the full retry budget again: pending, due now, attempts 0.

    Returns the tasks replayed. A task somebody else changed meanwhile is left as they wrote it, logged and
    not returned.
    """
    now = services.clock.now()
    replayed = []
    for current in dead_letters(services, limit):
        updated = replace(current, state=TaskState.PENDING, attempts=0, due_at=now, updated_at=now)
        try:
            replayed.append(_write(services, current, updated, "replay"))
        except TaskChanged as changed:
            logger.warning("replay skipped: %s", changed)
    return replayed


def _write(services: Services, current: Task, updated: Task, action: str) -> Task:
    services.store.update_task(current, updated)
    found = services.store.task(current.id)
    if found is None:
        raise TaskNotFound(current.id)
    if found != updated:
        raise TaskChanged(action, found)
    logger.info("task %s: %s -> %s (%s)", current.id, current.state.value, found.state.value, action)
    return found

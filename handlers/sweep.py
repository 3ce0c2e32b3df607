"""The minute timer: hand due outbox tasks to the dispatcher.

A success marks the task ``succeeded`` with what the dispatcher returned (the dry-run dispatcher
returns the request it would have sent). A transient failure keeps it ``pending`` and pushes it back
exponentially; after ``MAX_ATTEMPTS``, or on a permanent failure, it is ``dead_lettered`` with the
last error. Nothing is deleted. A crash between dispatch and update dispatches the task again,
which is why every request carries a name derived from its idempotency key.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import timedelta

from controlplane.errors import PermanentError, TransientError
from controlplane.ledger import Task, TaskState
from controlplane.ports import Services

logger = logging.getLogger(__name__)

BATCH = 100
MAX_ATTEMPTS = 8
FIRST_BACKOFF = timedelta(seconds=30)
MAX_BACKOFF = timedelta(hours=1)


@dataclass(frozen=True)
class SweepReport:
    due: int
    succeeded: int
    retrying: int
    dead_lettered: int


def sweep(services: Services) -> SweepReport:
    due = services.store.due_tasks(services.clock.now(), BATCH)
    counts = {TaskState.SUCCEEDED: 0, TaskState.PENDING: 0, TaskState.DEAD_LETTERED: 0}
    for task in due:
        updated = _dispatch(services, task)
        services.store.update_task(task, updated)
        counts[updated.state] += 1
    report = SweepReport(due=len(due), succeeded=counts[TaskState.SUCCEEDED], retrying=counts[TaskState.PENDING],
                         dead_lettered=counts[TaskState.DEAD_LETTERED])
    logger.info("sweep due=%d succeeded=%d retrying=%d dead_lettered=%d", report.due, report.succeeded,
                report.retrying, report.dead_lettered)
    return report


def _dispatch(services: Services, task: Task) -> Task:
    attempts = task.attempts + 1
    try:
        result = services.dispatcher.dispatch(task)
    except TransientError as error:
        now = services.clock.now()
        if attempts >= MAX_ATTEMPTS:
            return replace(task, state=TaskState.DEAD_LETTERED, attempts=attempts, last_error=str(error),
                           updated_at=now)
        backoff = min(FIRST_BACKOFF * 2 ** (attempts - 1), MAX_BACKOFF)
        return replace(task, attempts=attempts, last_error=str(error), due_at=now + backoff, updated_at=now)
    except PermanentError as error:
        return replace(task, state=TaskState.DEAD_LETTERED, attempts=attempts, last_error=str(error),
                       updated_at=services.clock.now())
    return replace(task, state=TaskState.SUCCEEDED, attempts=attempts, result=result, updated_at=services.clock.now())

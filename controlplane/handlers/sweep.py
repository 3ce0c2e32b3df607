"""The minute timer: expire reviews whose time is up, move rollouts on, hand due outbox tasks to the
dispatchers, and let the store do its housekeeping (index rows a crash left unwritten, checkpoints).

A success marks the task ``succeeded`` with what the dispatcher returned (the dry-run dispatcher
returns the request it would have sent). A transient failure keeps it ``pending`` and pushes it back
exponentially, with jitter so tasks that failed together do not retry together; after
``MAX_ATTEMPTS``, or on a permanent failure, it is ``dead_lettered`` with the last error. Nothing is
deleted. A crash between dispatch and update dispatches the task again, which is why every request
carries a name derived from its idempotency key. A promotion that was dispatched is itself recorded
as a decision, and announced; a rollout task opens the rollout the sweep then moves step by step.
"""
from __future__ import annotations

import logging
import random
from dataclasses import asdict, dataclass, replace
from datetime import timedelta

from controlplane.domain.errors import PermanentError, TransientError
from controlplane.domain.ledger import Outcome, ReviewDraft, Source, Task, TaskKind, TaskState, Verdict
from controlplane.domain.policy import Policy
from controlplane.domain.requests import DeployBatch, DeployModel, Notify, StartRollout, parse_request
from controlplane.domain.reviews import ReviewKind
from controlplane.handlers.drift import evaluate_closed_windows
from controlplane.handlers.health import record_sweep
from controlplane.handlers.operations import POLL_EVERY, OperationFailed
from controlplane.handlers.promotion import PROMOTION_DISPATCHED, SETS_CHAMPION
from controlplane.handlers.record import decide_once
from controlplane.handlers.retraining import overdue_registrations
from controlplane.handlers.reviews import expire_reviews
from controlplane.handlers.rollout import advance_rollouts, start_rollout
from controlplane.handlers.schedules import run_schedules
from controlplane.handlers.staging import overdue_test_stages
from controlplane.ports import telemetry
from controlplane.ports.store import Services

logger = logging.getLogger(__name__)

BATCH = 100
MAX_ATTEMPTS = 8
FIRST_BACKOFF = timedelta(seconds=30)
MAX_BACKOFF = timedelta(hours=1)
FAILURE_REVIEW_TTL = timedelta(hours=72)


@dataclass(frozen=True)
class SweepReport:
    due: int
    succeeded: int
    retrying: int
    dead_lettered: int
    expired_reviews: int = 0
    rollouts_moved: int = 0
    windows_closed: int = 0
    scheduled: int = 0
    waiting: int = 0  # of ``retrying``: tasks watching an Azure ML operation under way


def sweep(services: Services) -> SweepReport:
    """One sweep, counted (``ok`` or ``failed``); a success is kept as the sweep's beat with what it saw."""
    sweeps = telemetry.instruments().sweeps
    try:
        report = _sweep(services)
    except BaseException:
        sweeps.add(1, {"result": "failed"})
        raise
    record_sweep(services, asdict(report))
    sweeps.add(1, {"result": "ok"})
    return report


def _sweep(services: Services) -> SweepReport:
    expired = expire_reviews(services)
    closed = services.store.close_due_windows(services.clock.now())
    evaluate_closed_windows(services, services.store.undecided_windows())
    scheduled = run_schedules(services)
    overdue_registrations(services)
    overdue_test_stages(services)
    moved = advance_rollouts(services)
    due = services.store.due_tasks(services.clock.now(), BATCH)
    counts = {TaskState.SUCCEEDED: 0, TaskState.PENDING: 0, TaskState.DEAD_LETTERED: 0}
    waiting = 0
    for task in due:
        with telemetry.span(f"dispatch {task.kind.value}", parent=task.traceparent, link_current=True,
                            task_id=task.id, decision_id=task.decision_id, correlation_id=task.correlation_id,
                            idempotency_key=task.idempotency_key, model=task.model, target=task.target,
                            attempt=task.attempts + 1):
            updated = _dispatch(services, task)
            services.store.update_task(task, updated)
            held = bool(updated.state is TaskState.PENDING and updated.result.get("waiting"))
            _count(task, updated, held)
            counts[updated.state] += 1
            waiting += held
            if updated.state is TaskState.SUCCEEDED and task.kind is TaskKind.PROMOTION:
                _record_promotion(services, updated)
    services.store.checkpoint()
    services.store.repair_indexes(services.clock.now())
    report = SweepReport(due=len(due), succeeded=counts[TaskState.SUCCEEDED], retrying=counts[TaskState.PENDING],
                         dead_lettered=counts[TaskState.DEAD_LETTERED], expired_reviews=len(expired),
                         rollouts_moved=len(moved), windows_closed=len(closed), scheduled=len(scheduled),
                         waiting=waiting)
    logger.info("sweep due=%d succeeded=%d retrying=%d (waiting on Azure ML %d) dead_lettered=%d "
                "expired_reviews=%d rollouts_moved=%d windows_closed=%d scheduled=%d", report.due, report.succeeded,
                report.retrying, report.waiting, report.dead_lettered, report.expired_reviews, report.rollouts_moved,
                report.windows_closed, report.scheduled)
    return report


def _count(task: Task, updated: Task, waiting: bool) -> None:
    result = "waiting" if waiting else "retrying" if updated.state is TaskState.PENDING else updated.state.value
    telemetry.annotate(result=result)
    instruments = telemetry.instruments()
    instruments.dispatch_attempts.add(1, {"operation": task.kind.value, "result": result})
    if updated.state is TaskState.DEAD_LETTERED:
        instruments.dead_letters.add(1, {"operation": task.kind.value})


def _record_promotion(services: Services, task: Task) -> None:
    """A dispatched promotion is a fact worth a decision of its own, and a notification."""
    request, model = parse_request(task.request), task.model
    version = request.model.version if isinstance(request, DeployModel | DeployBatch | StartRollout) else ""
    stage, endpoint = getattr(request, "stage", ""), getattr(request, "endpoint", "")
    dry_run = bool(task.result.get("dry_run"))
    reason = (f"{stage} promotion of {model}:{version} on {endpoint} dispatched"
              + (" (dry run: nothing was sent)" if dry_run else ""))
    evidence = {"task_id": task.id, "stage": stage, "endpoint": endpoint, "dry_run": dry_run,
                "result": dict(task.result)}
    if stage == "production" and not dry_run:
        evidence[SETS_CHAMPION] = endpoint
    notice = Notify(channel="reviewers", event=PROMOTION_DISPATCHED,
                    subject=f"Promotion dispatched: {model}:{version} to {stage}", text=reason)
    verdict = Verdict(Outcome.PROMOTE, reason, model=model, version=version or None, evidence=evidence,
                      tasks=(notice,))
    decide_once(services, key=f"task:{task.id}:succeeded", event_id=task.id, source=Source.CONTROLPLANE,
                event_type=PROMOTION_DISPATCHED, model=model, version=version or None,
                received_at=services.clock.now(), decide=lambda: verdict, correlation_id=task.correlation_id)


def _record_failure(services: Services, task: Task, error: OperationFailed) -> None:
    """A failed Azure ML operation is a decision of its own, with a review for the people who own the target."""
    operation = error.operation
    evidence = {"task_id": task.id, "operation": operation.to_json(), "error": error.reason,
                "request": dict(task.request)}
    review = ReviewDraft(kind=ReviewKind.OPERATION, approvers=operators(services.policy), quorum=1,
                         ttl=FAILURE_REVIEW_TTL, evidence=evidence, separation_of_duties=False)
    reason = f"{task.kind.value} task {task.id} dead-lettered: {error}"
    decide_once(services, key=f"task:{task.id}:failed", event_id=task.id, source=Source.CONTROLPLANE,
                event_type="operation.failed", model=task.model, version=None, received_at=services.clock.now(),
                decide=lambda: Verdict(Outcome.REVIEW, reason, model=task.model, evidence=evidence,
                                       reviews=(review,)), correlation_id=task.correlation_id)


def operators(policy: Policy) -> tuple[str, ...]:
    """Who reviews a failed operation on an endpoint: the infrastructure team of the alerts policy, else ML leads."""
    return tuple(policy.document.alerts.teams.get("infrastructure") or ()) or ("ml-leads",)


def _dispatch(services: Services, task: Task) -> Task:
    attempts = task.attempts + 1
    try:
        result = start_rollout(services, task) if task.kind is TaskKind.ROLLOUT else services.dispatcher.dispatch(task)
    except TransientError as error:
        now = services.clock.now()
        if attempts >= MAX_ATTEMPTS:
            return replace(task, state=TaskState.DEAD_LETTERED, attempts=attempts, last_error=str(error),
                           updated_at=now)
        backoff = min(FIRST_BACKOFF * 2 ** (attempts - 1), MAX_BACKOFF) * random.uniform(0.5, 1.5)
        return replace(task, attempts=attempts, last_error=str(error), due_at=now + backoff, updated_at=now)
    except OperationFailed as error:
        _record_failure(services, task, error)
        return replace(task, state=TaskState.DEAD_LETTERED, attempts=attempts, last_error=str(error),
                       updated_at=services.clock.now())
    except PermanentError as error:
        return replace(task, state=TaskState.DEAD_LETTERED, attempts=attempts, last_error=str(error),
                       updated_at=services.clock.now())
    now = services.clock.now()
    if result.get("waiting"):  # a long-running operation is under way: look again next time, send nothing again
        return replace(task, result=result, due_at=now + POLL_EVERY, updated_at=now)
    return replace(task, state=TaskState.SUCCEEDED, attempts=attempts, result=result, updated_at=now)

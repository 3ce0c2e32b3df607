"""Operator use cases on the outbox: list, show, retry, cancel and replay tasks, and what each refuses."""
from __future__ import annotations

from dataclasses import replace

import pytest

from controlplane.domain.errors import InvalidEvent, PermanentError, TransientError
from controlplane.domain.ledger import Outcome, Source, Task, TaskState, Verdict, record
from controlplane.domain.requests import SubmitPipeline
from controlplane.handlers.sweep import MAX_ATTEMPTS, sweep
from controlplane.handlers.taskops import (
    DEAD_LETTERS,
    TaskChanged,
    TaskNotFound,
    TaskRefused,
    cancel_task,
    dead_letters,
    outbox_action,
    replay_dead_letters,
    retry_task,
    show_task,
)
from tests.fakes import RecordingDispatcher


def open_tasks(services, count: int, key: str = "ops") -> list[Task]:
    """One decision with ``count`` retraining tasks, due now."""
    drafts = tuple(SubmitPipeline(experiment_name="churn-retraining", name=f"retrain-churn-{key}-{n}",
                                  source="pipelines/retrain-churn.yml") for n in range(count))
    now = services.clock.now()
    decision = record(Verdict(Outcome.RETRAIN, "drift", model="churn", tasks=drafts), key=key, event_id=key,
                      source=Source.CONTROLPLANE, event_type="test", policy_version=services.policy.version,
                      received_at=now, decided_at=now)
    services.store.append(decision)
    return list(decision.tasks)


def put(services, task: Task, **changes) -> Task:
    """Set a task's state for a test's starting point, the way a sweep writes it."""
    services.store.update_task(task, replace(task, updated_at=services.clock.now(), **changes))
    return services.store.task(task.id)


def dead_letter(services, task: Task, attempts: int = MAX_ATTEMPTS) -> Task:
    return put(services, task, state=TaskState.DEAD_LETTERED, attempts=attempts, last_error="HTTP 503 from workspace")


def with_dispatcher(services, *failures: Exception):
    return replace(services, dispatcher=RecordingDispatcher(list(failures)))


class RivalWritesFirst:
    """A store where somebody else changes chosen tasks between our read and our write."""

    def __init__(self, store, rival, task_ids) -> None:
        self._store, self._rival, self._pending = store, rival, set(task_ids)

    def __getattr__(self, name):
        return getattr(self._store, name)

    def update_task(self, current: Task, updated: Task) -> None:
        if current.id in self._pending:
            self._pending.discard(current.id)
            self._store.update_task(current, self._rival(current))
        self._store.update_task(current, updated)


@pytest.fixture(params=["fake", "sqlite"])
def any_services(request, services, make_store):
    return replace(services, store=make_store(request.param))


# -- list and show -------------------------------------------------------------------------------------------------

def test_show_task_returns_the_stored_task(services):
    [task] = open_tasks(services, 1)
    assert show_task(services, task.id) == task


def test_show_task_of_an_unknown_id_raises_task_not_found_naming_the_id(services):
    with pytest.raises(TaskNotFound, match="task nope-123 not found") as raised:
        show_task(services, "nope-123")
    assert isinstance(raised.value, PermanentError) and raised.value.subject == "nope-123"


# -- retry ---------------------------------------------------------------------------------------------------------

def test_retry_makes_a_dead_lettered_task_pending_and_due_now_keeping_attempts_and_last_error(any_services):
    services = any_services
    [task] = open_tasks(services, 1)
    dead = dead_letter(services, task)
    services.clock.advance(hours=3)

    retried = retry_task(services, task.id)

    assert retried.state is TaskState.PENDING and retried.due_at == services.clock.now()
    assert retried.attempts == MAX_ATTEMPTS and retried.last_error == dead.last_error
    assert services.store.task(task.id) == retried
    assert [t.id for t in services.store.due_tasks(services.clock.now(), 10)] == [task.id]


def test_retry_of_a_pending_task_in_backoff_brings_it_forward_to_now(services):
    [task] = open_tasks(services, 1)
    waiting = put(services, task, attempts=3, last_error="timed out", due_at=services.clock.now().replace(hour=23))

    retried = retry_task(services, task.id)

    assert retried.due_at == services.clock.now() and retried.attempts == 3 and retried.last_error == "timed out"
    assert retried.state is TaskState.PENDING and waiting.due_at > retried.due_at


@pytest.mark.parametrize("state, why", [(TaskState.SUCCEEDED, "dispatched already"),
                                        (TaskState.CANCELLED, "stays cancelled")])
def test_retry_refuses_succeeded_and_cancelled_tasks_saying_why(services, state, why):
    [task] = open_tasks(services, 1)
    settled = put(services, task, state=state, attempts=1)

    with pytest.raises(TaskRefused, match=f"cannot retry task {task.id}: it is {state.value}; .*{why}"):
        retry_task(services, task.id)
    assert services.store.task(task.id) == settled


def test_retry_of_an_unknown_task_raises_task_not_found(services):
    with pytest.raises(TaskNotFound):
        retry_task(services, "nope")


def test_a_retried_task_gets_one_more_attempt_but_a_replayed_one_gets_the_full_budget(services):
    [task] = open_tasks(services, 1)
    dead_letter(services, task)
    flaky = TransientError("submit_pipeline", "HTTP 503")

    retry_task(services, task.id)
    sweep(with_dispatcher(services, flaky))
    assert services.store.task(task.id).state is TaskState.DEAD_LETTERED  # at once: the budget was spent

    [replayed] = replay_dead_letters(services)
    assert replayed.attempts == 0
    sweep(with_dispatcher(services, flaky))
    after_one_failure = services.store.task(task.id)
    assert after_one_failure.state is TaskState.PENDING and after_one_failure.attempts == 1  # backing off again
    services.clock.moment = after_one_failure.due_at
    sweep(with_dispatcher(services))
    assert services.store.task(task.id).state is TaskState.SUCCEEDED


def test_retry_reports_a_task_a_sweep_changed_meanwhile_and_keeps_the_sweeps_version(any_services):
    [task] = open_tasks(any_services, 1)
    waiting = put(any_services, task, attempts=2, due_at=any_services.clock.now().replace(hour=23))

    def sweep_dispatched_it(current):
        return replace(current, state=TaskState.SUCCEEDED, attempts=current.attempts + 1, result={"sent": current.id})

    services = replace(any_services, store=RivalWritesFirst(any_services.store, sweep_dispatched_it, [task.id]))

    with pytest.raises(TaskChanged, match="it is now succeeded") as raised:
        retry_task(services, task.id)

    assert isinstance(raised.value, TransientError)
    assert raised.value.found == sweep_dispatched_it(waiting) == services.store.task(task.id)


# -- cancel --------------------------------------------------------------------------------------------------------

def test_cancel_makes_a_pending_task_cancelled_and_the_sweep_never_dispatches_it(services):
    [task] = open_tasks(services, 1)

    cancelled = cancel_task(services, task.id)
    dispatcher = RecordingDispatcher()
    sweep(replace(services, dispatcher=dispatcher))

    assert cancelled.state is TaskState.CANCELLED and cancelled.updated_at == services.clock.now()
    assert dispatcher.sent == [] and services.store.task(task.id) == cancelled  # kept, not deleted


@pytest.mark.parametrize("state", [TaskState.SUCCEEDED, TaskState.DEAD_LETTERED, TaskState.CANCELLED])
def test_cancel_refuses_a_task_that_is_not_pending(services, state):
    [task] = open_tasks(services, 1)
    settled = put(services, task, state=state, attempts=1)

    with pytest.raises(TaskRefused, match=f"cannot cancel task {task.id}: it is {state.value}"):
        cancel_task(services, task.id)
    assert services.store.task(task.id) == settled


def test_cancel_of_an_unknown_task_raises_task_not_found(services):
    with pytest.raises(TaskNotFound):
        cancel_task(services, "nope")


# -- replay --------------------------------------------------------------------------------------------------------

def test_replay_puts_every_dead_lettered_task_back_with_attempts_reset_and_leaves_others_alone(any_services):
    services = any_services
    tasks = open_tasks(services, 5)
    for task in tasks[:3]:
        dead_letter(services, task)
    done = put(services, tasks[3], state=TaskState.SUCCEEDED, attempts=1)
    services.clock.advance(minutes=10)

    replayed = replay_dead_letters(services)

    assert sorted(t.id for t in replayed) == sorted(t.id for t in tasks[:3])
    for task in replayed:
        assert task.state is TaskState.PENDING and task.attempts == 0 and task.due_at == services.clock.now()
        assert task.last_error == "HTTP 503 from workspace"  # the history stays readable
        assert services.store.task(task.id) == task
    assert services.store.task(tasks[3].id) == done and services.store.task(tasks[4].id) == tasks[4]
    assert len(services.store.tasks(limit=100)) == 5  # nothing deleted
    assert replay_dead_letters(services) == []


def test_replay_honours_the_limit(any_services):
    services = any_services
    for task in open_tasks(services, 4):
        dead_letter(services, task)

    assert len(replay_dead_letters(services, limit=3)) == 3
    assert len(services.store.tasks(TaskState.DEAD_LETTERED)) == 1


def test_replay_skips_a_task_changed_meanwhile_and_replays_the_rest(any_services):
    tasks = open_tasks(any_services, 3)
    for task in tasks:
        dead_letter(any_services, task)

    def operator_retried_it(current):
        return replace(current, state=TaskState.PENDING, due_at=current.due_at, last_error="retried by alice")

    services = replace(any_services, store=RivalWritesFirst(any_services.store, operator_retried_it, [tasks[1].id]))

    replayed = replay_dead_letters(services)

    assert sorted(t.id for t in replayed) == sorted([tasks[0].id, tasks[2].id])
    rival = services.store.task(tasks[1].id)
    assert rival.last_error == "retried by alice" and rival.attempts == MAX_ATTEMPTS  # their write was kept


# -- the outbox page's buttons -------------------------------------------------------------------------------------

def test_the_pages_replay_button_replays_every_dead_letter_and_says_how_many(any_services):
    services = any_services
    tasks = open_tasks(services, 3)
    for task in tasks[:2]:
        dead_letter(services, task)

    assert sorted(t.id for t in dead_letters(services)) == sorted(t.id for t in tasks[:2])
    assert outbox_action(services, DEAD_LETTERS, "replay") == ("replay", "2")

    assert dead_letters(services) == []
    for task in tasks[:2]:
        found = services.store.task(task.id)
        assert found.state is TaskState.PENDING and found.attempts == 0 and found.due_at == services.clock.now()
    assert outbox_action(services, DEAD_LETTERS, "replay") == ("replay", "0")


def test_the_pages_task_buttons_retry_and_cancel_one_task_and_answer_its_id(services):
    [waiting, dead] = open_tasks(services, 2)
    dead_letter(services, dead)

    assert outbox_action(services, dead.id, "retry") == ("retry", dead.id)
    assert outbox_action(services, waiting.id, "cancel") == ("cancel", waiting.id)
    assert services.store.task(dead.id).state is TaskState.PENDING
    assert services.store.task(waiting.id).state is TaskState.CANCELLED


@pytest.mark.parametrize("target, action, expected", [(DEAD_LETTERS, "retry", "expected replay, got 'retry'"),
                                                      (DEAD_LETTERS, "cancel", "expected replay, got 'cancel'"),
                                                      ("task", "replay", "expected retry or cancel, got 'replay'"),
                                                      ("task", "show", "expected retry or cancel, got 'show'")])
def test_a_button_asking_what_its_target_does_not_take_is_refused_naming_the_action(services, target, action,
                                                                                   expected):
    [task] = open_tasks(services, 1)
    dead = dead_letter(services, task)

    with pytest.raises(InvalidEvent, match=expected) as raised:
        outbox_action(services, dead.id if target == "task" else target, action)
    assert raised.value.subject == "action" and services.store.task(task.id) == dead

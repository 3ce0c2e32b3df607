"""The operators' lists: outbox tasks, rollouts, incidents and telemetry windows, a page at a time, by state.

Each page links the next one with the continuation token the list answered (sealed, so it cannot be edited), and
the state filter is a plain GET form: the page works without script and at phone width.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape
from urllib.parse import urlencode

from controlplane.domain.incidents import Incident, IncidentState
from controlplane.domain.ledger import Task, TaskState
from controlplane.domain.rollout import Rollout, RolloutState
from controlplane.domain.windows import Window
from controlplane.web.pages import _page, _table, _when

REPLAY_LIMIT = 100  # what one replay takes, as ``handlers.taskops.replay_dead_letters`` does by default
TITLES = {"tasks": "Outbox tasks", "rollouts": "Rollouts", "incidents": "Incidents", "windows": "Telemetry windows"}
STATES = {"tasks": [s.value for s in TaskState], "rollouts": [s.value for s in RolloutState],
          "incidents": [s.value for s in IncidentState], "windows": ["open", "closed"]}


def list_page(name: str, items: Sequence[Task | Rollout | Incident | Window], *, state: str = "",
              continuation: str | None = None, key: str = "", message: str = "", dead_letters: int = 0) -> str:
    """The page of the list ``name`` (tasks, rollouts, incidents or windows) holding ``items``. ``key`` is the
    function key the page was opened with: the outbox's buttons post with it, as Azure asks of them.
    ``dead_letters``: how many tasks are dead-lettered (counted up to ``REPLAY_LIMIT``), whatever the page shows;
    with any, the outbox page offers to replay them."""
    headers, rows = _tasks(items, key, state) if name == "tasks" else _COLUMNS[name](items)
    options = "".join(f"<option value='{escape(s)}'{' selected' if s == state else ''}>{escape(s)}</option>"
                      for s in ["", *STATES[name]])
    carry = f"?{escape(urlencode({'code': key}))}" if key else ""  # Azure asks every request for the key
    nav = " · ".join(f"<a href='{other}{carry}'>{escape(title)}</a>" if other != name else escape(title)
                     for other, title in TITLES.items())
    kept = {k: v for k, v in (("code", key), ("state", state)) if v}
    following = (f"<p><a rel='next' href='?{escape(urlencode({**kept, 'continuation': continuation}))}'>"
                 "Next page</a></p>" if continuation else "")
    notice = f"<p role='status'><strong>{escape(message)}</strong></p>" if message else ""
    filter_form = (f"<form method='get'>{_hidden('code', key) if key else ''}<label for='state'>State</label> "
                   f"<select id='state' name='state'>{options}</select> <button type='submit'>Show</button></form>")
    replay = _replay(dead_letters, key, state) if name == "tasks" and dead_letters else ""
    body = (f"<main><p><a href='../ui{carry}'>Dashboard</a> · {nav}</p><h1>{escape(TITLES[name])}</h1>{notice}"
            + filter_form + replay + (_table(headers, rows) if rows else "<p>None.</p>") + following + "</main>")
    return _page(TITLES[name], body)


def _state(value: str) -> str:
    return f"<span class='state {escape(value)}' data-state='{escape(value)}'>{escape(value)}</span>"


def _hidden(name: str, value: str) -> str:
    return f"<input type='hidden' name='{escape(name)}' value='{escape(value)}'>"


def _tasks(tasks: Iterable[Task], key: str, state: str) -> tuple[list[str], list[list[str]]]:
    return (["task", "kind", "target", "model", "state", "attempts", "due", "last error", "correlation id",
             "actions"],
            [[escape(t.id), escape(t.kind.value), escape(t.target), escape(t.model or "-"), _state(t.state.value),
              str(t.attempts), _when(t.due_at), escape(t.last_error[:200] or "-"), escape(t.correlation_id),
              _actions(t, key, state)] for t in tasks])


def _actions(task: Task, key: str, state: str) -> str:
    """Retry (a pending or dead-lettered task, due now) and cancel (a pending one), as forms posting with the key."""
    query = urlencode({k: v for k, v in (("code", key), ("state", state)) if v})
    allowed = [("retry", task.state in (TaskState.PENDING, TaskState.DEAD_LETTERED)),
               ("cancel", task.state is TaskState.PENDING)]
    suffix = f"?{escape(query)}" if query else ""
    return " ".join(f"<form method='post' action='tasks/{escape(task.id)}/{action}{suffix}' class='inline'>"
                    f"<button type='submit' aria-label='{action.title()} task {escape(task.id)}'>"
                    f"{action.title()}</button></form>" for action, ok in allowed if ok) or "-"


def _replay(count: int, key: str, state: str) -> str:
    """The one button that makes every dead letter pending again with a fresh retry budget (``REPLAY_LIMIT`` at a
    time), a form posting with the key like the tasks' own buttons."""
    query = urlencode({k: v for k, v in (("code", key), ("state", state)) if v})
    many = (f"{REPLAY_LIMIT} or more dead-lettered tasks; a replay takes {REPLAY_LIMIT} at a time"
            if count >= REPLAY_LIMIT else f"{count} dead-lettered task{'s' if count != 1 else ''}")
    return (f"<form method='post' action='tasks/dead-letters/replay{'?' + escape(query) if query else ''}' "
            f"id='replay'><p><span id='replay-count'>{escape(many)}.</span> <button type='submit' "
            "aria-describedby='replay-count'>Replay dead letters</button></p></form>")


def replay_message(replayed: int, left: int) -> str:
    """What the outbox page says after a replay: how many tasks went back to pending, and how many are still
    dead-lettered (those changed meanwhile, or beyond ``REPLAY_LIMIT``)."""
    still = f" {f'{REPLAY_LIMIT} or more' if left >= REPLAY_LIMIT else left} still dead-lettered." if left else ""
    if not replayed:
        return f"Replay of dead letters: none was replayed.{still}"
    return (f"Replay of dead letters: {replayed} task{'s are' if replayed != 1 else ' is'} pending again, due now "
            f"with a fresh retry budget.{still}")


def _rollouts(rollouts: Iterable[Rollout]) -> tuple[list[str], list[list[str]]]:
    return (["rollout", "model", "endpoint", "deployment", "state", "step", "since"],
            [[escape(r.id), f"<a href='../models/{escape(r.model or '')}'>{escape(f'{r.model}:{r.version}')}</a>",
              escape(r.endpoint), escape(r.deployment), _state(r.state.value),
              escape(f"{r.step + 1} of {len(r.steps)}: {r.current}" if r.current else f"0 of {len(r.steps)}"),
              _when(r.applied_at or r.created_at)] for r in rollouts])


def _incidents(incidents: Iterable[Incident]) -> tuple[list[str], list[list[str]]]:
    return (["incident", "rule", "target", "severity", "state", "alerts", "opened", "updated"],
            [[escape(i.id), escape(i.rule), escape(i.target), escape(i.severity), _state(i.state.value),
              str(i.fired), _when(i.opened_at), _when(i.updated_at)] for i in incidents])


def _windows(windows: Iterable[Window]) -> tuple[list[str], list[list[str]]]:
    return (["window", "model", "deployment", "records", "state", "closed by"],
            [[escape(f"{w.key.bucket}.{w.key.part}"),
              f"<a href='../models/{escape(w.key.model)}'>{escape(w.key.model)}</a>", escape(w.key.deployment),
              str(w.count), _state("closed" if w.closed else "open"), escape(w.reason or "-")] for w in windows])


_COLUMNS = {"rollouts": _rollouts, "incidents": _incidents, "windows": _windows}  # tasks: with their buttons

"""The operators' lists: outbox tasks, rollouts and incidents, a page at a time, filtered by state.

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

TITLES = {"tasks": "Outbox tasks", "rollouts": "Rollouts", "incidents": "Incidents", "windows": "Telemetry windows"}
STATES = {"tasks": [s.value for s in TaskState], "rollouts": [s.value for s in RolloutState],
          "incidents": [s.value for s in IncidentState], "windows": ["open", "closed"]}


def list_page(name: str, items: Sequence[Task | Rollout | Incident | Window], *, state: str = "",
              continuation: str | None = None) -> str:
    """The page of the list ``name`` (tasks, rollouts, incidents or windows) holding ``items``."""
    headers, rows = _COLUMNS[name](items)
    options = "".join(f"<option value='{escape(s)}'{' selected' if s == state else ''}>{escape(s)}</option>"
                      for s in ["", *STATES[name]])
    nav = " · ".join(f"<a href='{other}'>{escape(title)}</a>" if other != name else escape(title)
                     for other, title in TITLES.items())
    following = (f"<p><a rel='next' href='?{escape(urlencode({'state': state, 'continuation': continuation}))}'>"
                 "Next page</a></p>" if continuation else "")
    body = (f"<main><p><a href='../ui'>Dashboard</a> · {nav}</p><h1>{escape(TITLES[name])}</h1>"
            f"<form method='get'><label for='state'>State</label> <select id='state' name='state'>{options}"
            f"</select> <button type='submit'>Show</button></form>"
            + (_table(headers, rows) if rows else "<p>None.</p>") + following + "</main>")
    return _page(TITLES[name], body)


def _state(value: str) -> str:
    return f"<span class='state {escape(value)}' data-state='{escape(value)}'>{escape(value)}</span>"


def _tasks(tasks: Iterable[Task]) -> tuple[list[str], list[list[str]]]:
    return (["task", "kind", "target", "model", "state", "attempts", "due", "last error", "correlation id"],
            [[escape(t.id), escape(t.kind.value), escape(t.target), escape(t.model or "-"), _state(t.state.value),
              str(t.attempts), _when(t.due_at), escape(t.last_error[:200] or "-"), escape(t.correlation_id)]
             for t in tasks])


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


_COLUMNS = {"tasks": _tasks, "rollouts": _rollouts, "incidents": _incidents, "windows": _windows}

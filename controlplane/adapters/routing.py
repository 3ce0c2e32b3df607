"""Routes each task kind to the dispatcher that serves it (Azure ML, webhooks, Event Grid), with the
dry-run dispatcher for every kind nothing real is configured for."""
from __future__ import annotations

from collections.abc import Mapping

from controlplane.domain.ledger import Task, TaskKind
from controlplane.ports.store import Dispatcher


class RoutingDispatcher:
    def __init__(self, routes: Mapping[TaskKind, Dispatcher], default: Dispatcher) -> None:
        self._routes = dict(routes)
        self._default = default
        routed = ", ".join(f"{kind.value}={d.name}" for kind, d in self._routes.items())
        self.name = default.name + (f" ({routed})" if routed else "")

    def dispatch(self, task: Task) -> dict:
        return self._routes.get(task.kind, self._default).dispatch(task)

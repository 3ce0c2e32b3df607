"""The dry-run dispatcher, the local default: it sends nothing and returns the exact request it
would have sent, which the outbox keeps on the task as its result."""
from __future__ import annotations

from controlplane.domain.ledger import Task


class DryRunDispatcher:
    name = "dry-run"

    def dispatch(self, task: Task) -> dict:
        return {"dry_run": True, "kind": task.kind.value, "target": task.target, "would_send": dict(task.request)}

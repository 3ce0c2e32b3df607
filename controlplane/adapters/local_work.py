"""Work the control plane does itself from the outbox: drift reports for reviewers and the window's
rows exported for labelling (JSON Lines, one sampled row per line)."""
from __future__ import annotations

import json

from controlplane.errors import PermanentError
from controlplane.ledger import Task
from controlplane.windows import WindowKey


class LocalWork:
    name = "local"

    def __init__(self, store, policy, checker, artifacts) -> None:
        self._store, self._policy, self._checker, self._artifacts = store, policy, checker, artifacts

    def dispatch(self, task: Task) -> dict:
        request = task.request
        operation = request.get("operation")
        window = request.get("window") or {}
        key = WindowKey(window["model"], window["deployment"], window["bucket"], window["part"])
        rule = self._policy.rule_for(key.model)
        if rule is None or rule.drift is None:
            raise PermanentError(f"{operation}: model {key.model} has no drift policy any more")
        rows = self._store.window_sample(key, rule.drift.window.sample)
        if operation == "report.render":
            if self._checker is None:
                raise PermanentError("report.render: no drift checker is configured")
            return {"report": self._checker.render(rows, rule.drift, request["name"]), "rows": len(rows)}
        if operation == "labelling.export":
            lines = "".join(json.dumps(row, default=str) + "\n" for row in rows).encode()
            location = self._artifacts.save(f"labelling/{request['name']}.jsonl", lines, "application/x-ndjson")
            return {"exported": location, "rows": len(rows), "labelling_project": request.get("labelling_project")}
        raise PermanentError(f"unknown operation {operation!r}")

"""Work the control plane does itself from the outbox: drift reports for reviewers, the window's rows
exported for labelling (JSON Lines, one sampled row per line), and an alert target's recent signals
kept for its review page."""
from __future__ import annotations

import json

from controlplane.domain.errors import PermanentError
from controlplane.domain.ledger import Task
from controlplane.domain.windows import WindowKey


class LocalWork:
    name = "local"

    def __init__(self, store, policy, checker, artifacts, signals=None) -> None:
        self._store, self._policy, self._checker, self._artifacts = store, policy, checker, artifacts
        self._signals = signals

    def dispatch(self, task: Task) -> dict:
        request = task.request
        operation = request.get("operation")
        if operation == "alert.signals":
            if self._signals is None:
                raise PermanentError("alert.signals: no signal reader is configured")
            spec = request["signals"]
            return {"signals": spec["artifact"], "summary": self._signals.get(spec).summary}
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

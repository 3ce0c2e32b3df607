"""Work the control plane does itself from the outbox: drift reports for reviewers, the window's rows
exported for labelling (JSON Lines, one sampled row per line, registered in Azure ML as a data asset version the
labelling project and the next retraining can read), and an alert target's recent signals kept for its review
page."""
from __future__ import annotations

import json

from controlplane.domain.errors import PermanentError
from controlplane.domain.ledger import Task
from controlplane.domain.requests import LocalRequest, ReadSignals, RenderReport, asset_name, parse_request
from controlplane.domain.windows import WindowKey


class LocalWork:
    name = "local"

    def __init__(self, store, policy, checker, artifacts, signals=None, gateway=None) -> None:
        self._store, self._policy, self._checker, self._artifacts = store, policy, checker, artifacts
        self._signals, self._gateway = signals, gateway

    def dispatch(self, task: Task) -> dict:
        request = parse_request(task.request, LocalRequest)
        if isinstance(request, ReadSignals):
            if self._signals is None:
                raise PermanentError("alert.signals", "no signal reader is configured")
            return {"signals": request.signals["artifact"], "summary": self._signals.get(request.signals).summary}
        window = request.window
        key = WindowKey(window["model"], window["deployment"], window["bucket"], window["part"])
        rule = self._policy.rule_for(key.model)
        if rule is None or rule.drift is None:
            raise PermanentError(request.OPERATION, f"model {key.model} has no drift policy any more")
        rows = self._store.window_sample(key, rule.drift.window.sample)
        if isinstance(request, RenderReport):
            if self._checker is None:
                raise PermanentError("report.render", "no drift checker is configured")
            about = {**window, "model": request.model or key.model}
            return {"report": self._checker.render(rows, rule.drift, request.name, window=about), "rows": len(rows)}
        lines = "".join(json.dumps(row, default=str) + "\n" for row in rows).encode()
        location = self._artifacts.save(f"labelling/{request.name}.jsonl", lines, "application/x-ndjson")
        exported = {"exported": location, "rows": len(rows), "labelling_project": request.labelling_project}
        if self._gateway is None:
            return exported
        asset = self._gateway.register_data(
            request.data_asset, asset_name(f"{key.deployment}-{key.bucket}-{key.part}"), location,
            description=f"{key.model} rows of window {key} to label",
            tags={"controlplane.model": key.model, "controlplane.window": str(key),
                  "controlplane.correlation_id": task.correlation_id})
        return {**exported, "data_asset": f"azureml:{asset.name}:{asset.version}", "registered": asset.created}


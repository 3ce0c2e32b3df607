"""What an alert's target did recently, read when its notice or review is delivered (never on the
webhook's path) and kept as an artifact, so every channel's notice and the review page show the same
reading and a retried delivery does not query again."""
from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime
from typing import Any

from controlplane.domain.errors import ControlPlaneError
from controlplane.domain.ledger import Task
from controlplane.domain.requests import Notify, parse_request
from controlplane.domain.signals import Signals
from controlplane.ports.monitoring import SignalReader
from controlplane.ports.store import Dispatcher


class SignalsCache:
    def __init__(self, reader: SignalReader, artifacts: Any) -> None:
        self._reader, self._artifacts = reader, artifacts

    def get(self, spec: dict[str, Any]) -> Signals:
        """The reading ``spec`` asks for (see ``handlers.alerts``): the kept one, else read now and kept."""
        kept = self._artifacts.load(spec["artifact"])
        if kept is not None:
            return Signals.from_json(json.loads(kept))
        signals = self._reader.recent_signals(spec["resource_id"], spec.get("endpoint"), spec.get("deployment"),
                                              spec.get("metrics") or [], datetime.fromisoformat(spec["start"]),
                                              datetime.fromisoformat(spec["end"]))
        self._artifacts.save(spec["artifact"], json.dumps(signals.to_json()).encode(), "application/json")
        return signals


class EnrichedNotifier:
    """Adds the target's recent signals to a notice that asks for them, then hands it on. A reading that
    fails says so in the notice instead of holding it back: people hear of an incident either way."""

    def __init__(self, inner: Dispatcher, signals: SignalsCache) -> None:
        self._inner, self._signals = inner, signals
        self.name = inner.name

    def dispatch(self, task: Task) -> dict:
        notice = parse_request(task.request, Notify)
        if notice.signals is None:
            return self._inner.dispatch(task)
        try:
            line, kept = self._signals.get(dict(notice.signals)).summary, notice.signals["artifact"]
        except ControlPlaneError as error:
            line, kept = f"Recent signals unavailable: {error}", None
        told = replace(notice, signals=None, text=f"{notice.text}\n\n{line}".strip())
        return {**self._inner.dispatch(replace(task, request=told.to_json())), "signals": kept}

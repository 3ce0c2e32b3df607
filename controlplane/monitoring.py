"""The health port: how deployments behave, from Azure Monitor Logs, for rollout gates; and the signal
port: what an alert's target did recently, to enrich its notifications and reviews.

Adapter: ``controlplane.adapters.monitor_logs.MonitorLogsProbe`` (azure-monitor-query
``LogsQueryClient`` against the workspace receiving the online endpoints' traffic logs).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class DeploymentHealth:
    """One deployment's traffic over a window; ``None`` where there was no request to measure."""

    deployment: str
    requests: int
    p95_latency_ms: float | None
    error_rate: float | None  # share of 5xx responses, 0..1


class HealthProbe(Protocol):
    def deployment_health(self, endpoint: str, deployments: Sequence[str], start: datetime,
                          end: datetime) -> dict[str, DeploymentHealth]:
        """Health of each named deployment between ``start`` and ``end``; absent ones have 0 requests.

        Raises ``TransientError`` when the logs cannot be read now (throttling, timeouts, a partial
        result) and ``PermanentError`` when the query is refused for good.
        """


@dataclass(frozen=True)
class Series:
    """One signal over time, for a summary line and a chart: ``points`` are (time, value) pairs, oldest first."""

    name: str
    unit: str
    points: tuple[tuple[datetime, float], ...]

    def to_json(self) -> dict:
        return {"name": self.name, "unit": self.unit, "points": [[t.isoformat(), v] for t, v in self.points]}

    @staticmethod
    def from_json(data: dict) -> Series:
        return Series(data["name"], data["unit"], tuple((datetime.fromisoformat(t), float(v))
                                                        for t, v in data["points"]))


@dataclass(frozen=True)
class Signals:
    """What the target of an alert did recently: a one-paragraph summary and the series behind it."""

    summary: str
    series: tuple[Series, ...]
    source: str  # where it was read, e.g. "log-analytics:<workspace id>"
    start: datetime
    end: datetime

    def to_json(self) -> dict:
        return {"summary": self.summary, "series": [s.to_json() for s in self.series], "source": self.source,
                "start": self.start.isoformat(), "end": self.end.isoformat()}

    @staticmethod
    def from_json(data: dict) -> Signals:
        return Signals(data["summary"], tuple(Series.from_json(s) for s in data["series"]), data["source"],
                       datetime.fromisoformat(data["start"]), datetime.fromisoformat(data["end"]))


class SignalReader(Protocol):
    def recent_signals(self, resource_id: str, endpoint: str | None, deployment: str | None,
                       metrics: Sequence[str], start: datetime, end: datetime, bin_minutes: int = 5) -> Signals:
        """The target's recent behaviour between ``start`` and ``end`` in bins of ``bin_minutes``: the
        endpoint's (or deployment's) requests, p95 latency and 5xx share from the traffic log, and each
        named platform metric of ``resource_id``. Raises ``TransientError`` / ``PermanentError`` like
        ``deployment_health``."""

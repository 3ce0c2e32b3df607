"""What deployments and alert targets did: health over a window for rollout gates, signals over time for
notifications and reviews. Read through the ports in ``controlplane.ports.monitoring``."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class DeploymentHealth:
    """One deployment's traffic over a window; ``None`` where there was no request to measure."""

    deployment: str
    requests: int
    p95_latency_ms: float | None
    error_rate: float | None  # share of 5xx responses, 0..1


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

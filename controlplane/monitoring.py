"""The health port: how deployments behave, from Azure Monitor Logs, for rollout gates and alerts.

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

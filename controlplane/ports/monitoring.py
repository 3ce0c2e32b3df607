"""The health port: how deployments behave, from Azure Monitor Logs, for rollout gates; and the signal
port: what an alert's target did recently, to enrich its notifications and reviews.

Adapter: ``controlplane.adapters.monitor_logs.MonitorLogsProbe`` (azure-monitor-query
``LogsQueryClient`` against the workspace receiving the online endpoints' traffic logs).
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from controlplane.domain.signals import DeploymentHealth, Signals


class HealthProbe(Protocol):
    def deployment_health(self, endpoint: str, deployments: Sequence[str], start: datetime,
                          end: datetime) -> dict[str, DeploymentHealth]:
        """Health of each named deployment between ``start`` and ``end``; absent ones have 0 requests.

        Raises ``TransientError`` when the logs cannot be read now (throttling, timeouts, a partial
        result) and ``PermanentError`` when the query is refused for good.
        """


class SignalReader(Protocol):
    def recent_signals(self, resource_id: str, endpoint: str | None, deployment: str | None,
                       metrics: Sequence[str], start: datetime, end: datetime, bin_minutes: int = 5) -> Signals:
        """The target's recent behaviour between ``start`` and ``end`` in bins of ``bin_minutes``: the
        endpoint's (or deployment's) requests, p95 latency and 5xx share from the traffic log, and each
        named platform metric of ``resource_id``. Raises ``TransientError`` / ``PermanentError`` like
        ``deployment_health``."""

"""Deployment health from Azure Monitor Logs: the ``HealthProbe`` port on azure-monitor-query's ``LogsQueryClient``.

It reads ``AmlOnlineEndpointTrafficLog``, the table an Azure ML workspace's diagnostic setting fills with one row
per request to an online endpoint (``EndpointName``, ``DeploymentName``, ``ResponseCode``, ``TotalDurationMs``),
and summarises each deployment's request count, p95 latency and share of 5xx responses. A partial result fails
the read: a rollout gate must not pass on half of the evidence.
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from controlplane.adapters.azure_errors import azure_errors
from controlplane.adapters.identity import Lazy, app_credential
from controlplane.errors import TransientError
from controlplane.gateway import GatewayError
from controlplane.monitoring import DeploymentHealth

TABLE = "AmlOnlineEndpointTrafficLog"


def kql_string(value: str) -> str:
    """``value`` as a KQL verbatim string literal: no escape sequences, a double quote is doubled."""
    if "\n" in value or "\r" in value:
        # A verbatim literal cannot hold line breaks; no endpoint or deployment name contains one.
        raise GatewayError("deployment_health", f"name contains a line break: {value!r}")
    return '@"' + value.replace('"', '""') + '"'


def traffic_query(endpoint: str, deployments: Sequence[str]) -> str:
    """Requests, p95 latency (ms) and 5xx count per deployment of ``endpoint``; the time range is the timespan."""
    names = ", ".join(kql_string(name) for name in deployments)
    # ResponseCode is documented as int; toint() also accepts workspaces where it arrives as a string.
    return (
        f"{TABLE}\n"
        f"| where EndpointName == {kql_string(endpoint)} and DeploymentName in ({names})\n"
        "| summarize Requests = count(), P95LatencyMs = percentile(TotalDurationMs, 95),"
        " ServerErrors = countif(toint(ResponseCode) >= 500) by DeploymentName"
    )


def _health(name: str, row: Any | None) -> DeploymentHealth:
    requests = int(row["Requests"] or 0) if row is not None else 0
    if not requests:
        return DeploymentHealth(deployment=name, requests=0, p95_latency_ms=None, error_rate=None)
    p95 = row["P95LatencyMs"]
    return DeploymentHealth(deployment=name, requests=requests, p95_latency_ms=None if p95 is None else float(p95),
                            error_rate=int(row["ServerErrors"] or 0) / requests)


class MonitorLogsProbe:
    """The ``HealthProbe`` port on the Log Analytics workspace receiving the endpoints' traffic logs."""

    def __init__(self, workspace_id: str, credential: Any = None, **client_kwargs: Any) -> None:
        self.workspace_id = workspace_id
        self._credential = credential
        self._client_kwargs = client_kwargs
        self._client = Lazy(self._build)

    def _build(self) -> Any:
        from azure.monitor.query import LogsQueryClient

        return LogsQueryClient(self._credential or app_credential(), **self._client_kwargs)

    def _logs(self) -> Any:
        return self._client.get()

    def deployment_health(self, endpoint: str, deployments: Sequence[str], start: datetime,
                          end: datetime) -> dict[str, DeploymentHealth]:
        names = list(dict.fromkeys(deployments))
        if not names:
            return {}
        query = traffic_query(endpoint, names)
        with azure_errors("deployment_health"):
            from azure.monitor.query import LogsQueryStatus

            result = self._logs().query_workspace(self.workspace_id, query, timespan=(start, end))
            if result.status != LogsQueryStatus.SUCCESS:
                error = getattr(result, "partial_error", None) or result
                detail = f"{getattr(error, 'code', '')}: {getattr(error, 'message', '')}"
                raise TransientError(f"deployment_health: {_text(result.status)} result from Log Analytics: {detail}")
            rows = {row["DeploymentName"]: row for table in result.tables for row in table.rows}
        return {name: _health(name, rows.get(name)) for name in names}


def _text(value: Any) -> str:
    return str(getattr(value, "value", value))

"""Azure Monitor Logs on azure-monitor-query's ``LogsQueryClient``: the ``HealthProbe`` and ``SignalReader`` ports.

It reads ``AmlOnlineEndpointTrafficLog``, the table an Azure ML workspace's diagnostic setting fills with one row
per request to an online endpoint (``EndpointName``, ``DeploymentName``, ``ResponseCode``, ``TotalDurationMs``),
and summarises each deployment's request count, p95 latency and share of 5xx responses. A partial result fails
the read: a rollout gate must not pass on half of the evidence.

For an alert's recent signals it also reads ``AzureMetrics``, where a diagnostic setting with ``AllMetrics`` routes
a resource's platform metrics (``ResourceId``, ``MetricName``, ``Average``, ``Maximum``, ``UnitName``), and turns
both into time series per bin and a short summary for whoever is on call.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from controlplane.adapters.azure_errors import azure_errors
from controlplane.adapters.identity import Lazy, app_credential
from controlplane.domain.errors import TransientError
from controlplane.domain.signals import DeploymentHealth, Series, Signals
from controlplane.ports.gateway import GatewayError

TABLE = "AmlOnlineEndpointTrafficLog"
METRICS_TABLE = "AzureMetrics"
TRAFFIC_AGGREGATES = ("Requests = count(), P95LatencyMs = percentile(TotalDurationMs, 95),"
                      " ServerErrors = countif(toint(ResponseCode) >= 500)")
KUSTO_EPOCH = datetime(1, 1, 1, tzinfo=UTC)  # bin() rounds datetimes down from here


def kql_string(value: str, operation: str = "deployment_health") -> str:
    """``value`` as a KQL verbatim string literal: no escape sequences, a double quote is doubled."""
    if "\n" in value or "\r" in value:
        # A verbatim literal cannot hold line breaks; no endpoint, deployment, resource or metric name contains one.
        raise GatewayError(operation, f"name contains a line break: {value!r}")
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


def signals_query(resource_id: str, endpoint: str | None, deployment: str | None, metrics: Sequence[str],
                   bin_minutes: int) -> str:
    """The traffic of ``endpoint`` (per bin, and once over the whole window for its p95) and the platform
    ``metrics`` of ``resource_id`` per bin, as one result whose ``Kind`` column says which part a row is from:
    "bin", "window" or "metric". The time range is the timespan; either part is left out when empty."""
    def q(value: str) -> str:
        return kql_string(value, "recent_signals")

    step = f"bin(TimeGenerated, {bin_minutes}m)"
    lets, parts = [], []
    if endpoint is not None:
        where = f"EndpointName == {q(endpoint)}" + (f" and DeploymentName == {q(deployment)}" if deployment else "")
        lets.append(f"let traffic = {TABLE}\n| where {where};\n")
        parts.append(f"traffic\n| summarize {TRAFFIC_AGGREGATES} by TimeGenerated = {step}\n| extend Kind = \"bin\"")
        parts.append(f"traffic\n| summarize {TRAFFIC_AGGREGATES}\n| extend Kind = \"window\"")
    if metrics and resource_id:
        names = ", ".join(q(name) for name in metrics)
        parts.append(f"{METRICS_TABLE}\n| where ResourceId =~ {q(resource_id)} and MetricName in ({names})\n"
                     "| summarize Average = avg(Average), Maximum = max(Maximum), Unit = take_any(UnitName)"
                     f" by TimeGenerated = {step}, MetricName\n| extend Kind = \"metric\"")
    if len(parts) == 1:
        return "".join(lets) + parts[0]
    return "".join(lets) + "union\n" + ",\n".join(f"({part})" for part in parts)


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
        tables = self._query("deployment_health", traffic_query(endpoint, names), start, end)
        rows = {row["DeploymentName"]: row for table in tables for row in table.rows}
        return {name: _health(name, rows.get(name)) for name in names}

    def recent_signals(self, resource_id: str, endpoint: str | None, deployment: str | None,
                       metrics: Sequence[str], start: datetime, end: datetime, bin_minutes: int = 5) -> Signals:
        if isinstance(bin_minutes, bool) or not isinstance(bin_minutes, int) or bin_minutes < 1:
            raise GatewayError("recent_signals", f"bin_minutes must be a positive whole number, not {bin_minutes!r}")
        metrics = list(dict.fromkeys(metrics)) if resource_id else []
        source = f"log-analytics:{self.workspace_id}"
        if endpoint is None and not metrics:
            return Signals("No endpoint or platform metric to read for this alert's target.", (), source, start, end)
        query = signals_query(resource_id, endpoint, deployment, metrics, bin_minutes)
        tables = self._query("recent_signals", query, start, end)
        rows = [dict(zip(table.columns, row, strict=False)) for table in tables for row in table.rows]
        window = _Window(_utc(start), _utc(end), timedelta(minutes=bin_minutes))
        label = (endpoint + (f"/{deployment}" if deployment else "")) if endpoint is not None else _short(resource_id)
        traffic = _Traffic(rows, window) if endpoint is not None else None
        found = [series for series in (_metric(name, rows) for name in metrics) if series.points]
        series = (traffic.series if traffic else ()) + tuple(found)
        if not series:
            wanted = ([TABLE] if endpoint is not None else []) + (["AllMetrics"] if metrics else [])
            summary = (f"No traffic or metrics found for {label} from {window.text}. Check that diagnostic settings "
                       f"send {' and '.join(wanted)} to Log Analytics workspace {self.workspace_id}.")
        else:
            sentences = [traffic.sentence()] if traffic else []
            sentences += [_metric_sentence(series, rows) for series in found]
            missing = [name for name in metrics if name not in {series.name for series in found}]
            if missing:
                sentences.append(f"No data for {', '.join(missing)}.")
            summary = f"{label}, {window.text}: " + " ".join(sentences)
        return Signals(summary, series, source, start, end)

    def _query(self, operation: str, query: str, start: datetime, end: datetime) -> list[Any]:
        """The result tables of ``query`` over (start, end); a partial result is a ``TransientError``."""
        with azure_errors(operation):
            from azure.monitor.query import LogsQueryStatus

            result = self._logs().query_workspace(self.workspace_id, query, timespan=(start, end))
            if result.status != LogsQueryStatus.SUCCESS:
                error = getattr(result, "partial_error", None) or result
                detail = f"{getattr(error, 'code', '')}: {getattr(error, 'message', '')}"
                raise TransientError(operation, f"{_text(result.status)} result from Log Analytics: {detail}")
            return list(result.tables)


def _text(value: Any) -> str:
    return str(getattr(value, "value", value))


class _Window:
    def __init__(self, start: datetime, end: datetime, step: timedelta) -> None:
        self.start, self.end, self.step = start, end, step
        self.text = f"{_hhmm(start)} to {_hhmm(end)} UTC"

    def bins(self) -> Iterator[datetime]:
        """The start of every bin of the window, as KQL's ``bin()`` computes them."""
        at = self.start - (self.start - KUSTO_EPOCH) % self.step
        while at < self.end:
            yield at
            at += self.step


class _Traffic:
    """The "bin" and "window" rows of the traffic log: request counts, p95 latency and 5xx share."""

    def __init__(self, rows: list[dict], window: _Window) -> None:
        bins = sorted((_timed(row) for row in rows if row.get("Kind") == "bin" and row.get("TimeGenerated")
                       and row.get("Requests")), key=lambda row: row["TimeGenerated"])
        whole = next((row for row in rows if row.get("Kind") == "window"), {})
        counts = {row["TimeGenerated"]: int(row["Requests"]) for row in bins}
        self.requests = sum(counts.values())
        self.errors = sum(int(row["ServerErrors"] or 0) for row in bins)
        self.p95 = _number(whole.get("P95LatencyMs"))
        self.series: tuple[Series, ...] = ()
        if self.requests:
            # A bin without a row had no request: a zero, rather than a line drawn across the gap.
            every = sorted(set(window.bins()) | set(counts))
            self.series = (
                Series("requests", "count", tuple((t, float(counts.get(t, 0))) for t in every)),
                Series("p95 latency", "ms", tuple((row["TimeGenerated"], float(row["P95LatencyMs"])) for row in bins
                                                  if _number(row.get("P95LatencyMs")) is not None)),
                Series("5xx share", "ratio", tuple((row["TimeGenerated"], int(row["ServerErrors"] or 0)
                                                    / int(row["Requests"])) for row in bins)),
            )

    def sentence(self) -> str:
        if not self.requests:
            return "no requests in the traffic log."
        text = f"{self.requests:,} requests"
        latency = self.series[1].points
        if latency:
            at, peak = max(latency, key=lambda point: point[1])
            overall = f"{self.p95:,.0f} ms " if self.p95 is not None else ""
            text += f", p95 latency {overall}(peak {peak:,.0f} ms at {_hhmm(at)})"
        return text + f", 5xx {self.errors / self.requests:.1%}."


def _metric_rows(name: str, rows: list[dict]) -> list[dict]:
    return sorted((_timed(row) for row in rows if row.get("Kind") == "metric" and row.get("MetricName") == name
                   and row.get("TimeGenerated") and _number(row.get("Average")) is not None),
                  key=lambda row: row["TimeGenerated"])


def _metric(name: str, rows: list[dict]) -> Series:
    mine = _metric_rows(name, rows)
    unit = next((str(row["Unit"]) for row in mine if row.get("Unit")), "")
    return Series(name, unit, tuple((row["TimeGenerated"], float(row["Average"])) for row in mine))


def _metric_sentence(series: Series, rows: list[dict]) -> str:
    mean = sum(value for _, value in series.points) / len(series.points)
    maxima = [(row["TimeGenerated"], float(row["Maximum"])) for row in _metric_rows(series.name, rows)
              if _number(row.get("Maximum")) is not None]
    # Without a logged Maximum, the highest bin average is the peak we know.
    at, peak = max(maxima or series.points, key=lambda point: point[1])
    unit = {"Percent": "%", "Count": "", "Milliseconds": " ms", "MilliSeconds": " ms"}.get(
        series.unit, f" {series.unit}" if series.unit else "")
    return f"{series.name} averaged {mean:,.1f}{unit} (peak {peak:,.1f}{unit} at {_hhmm(at)})."


def _timed(row: dict) -> dict:
    return {**row, "TimeGenerated": _utc(row["TimeGenerated"])}


def _number(value: Any) -> float | None:
    return None if value is None or value == "" else float(value)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _hhmm(moment: datetime) -> str:
    return _utc(moment).strftime("%H:%M")


def _short(resource_id: str) -> str:
    """The last name of an ARM resource id: ``.../onlineEndpoints/churn-ep`` -> ``churn-ep``."""
    return resource_id.rstrip("/").rsplit("/", 1)[-1] or resource_id

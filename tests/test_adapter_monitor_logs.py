"""The Log Analytics health probe against the real azure-monitor-query SDK, answered at the HTTP boundary.

``LogsQueryClient`` gets an azure-core transport that answers ``POST /v1/workspaces/{id}/query`` with Log Analytics
query API bodies (``{"tables": [{"name": "PrimaryResult", "columns": [...], "rows": [...]}]}``, plus ``error``
for a partial result) from ``tests/azure_responses`` and records every request.
"""
from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ServiceRequestError, ServiceResponseError

from controlplane.adapters.monitor_logs import MonitorLogsProbe, kql_string
from controlplane.domain.errors import PermanentError, TransientError
from controlplane.domain.signals import DeploymentHealth
from tests.azure_http import AzureTransport, FixedCredential, body

WORKSPACE_ID = "00000000-aaaa-bbbb-cccc-00000000000a"
START = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
END = START + timedelta(minutes=30)


def one_api_error(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message, "innererror": {"code": code, "message": message}}}


def probe_answering(answer: Any) -> tuple[MonitorLogsProbe, AzureTransport]:
    transport = AzureTransport().on("POST", "/.*", answer)
    return MonitorLogsProbe(WORKSPACE_ID, credential=FixedCredential(), transport=transport, retry_total=0), transport


def test_importing_the_probe_and_constructing_it_leave_the_sdk_unimported():
    code = ("import sys; from controlplane.adapters.monitor_logs import MonitorLogsProbe; "
            "MonitorLogsProbe('w', credential=object()); "
            "assert not {'azure.monitor.query', 'azure.ai.ml'} & set(sys.modules), 'SDK imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent.parent)


def test_health_is_one_query_over_the_traffic_log_for_the_window_with_names_quoted():
    probe, transport = probe_answering(body("logs_traffic_summary"))

    probe.deployment_health("churn-ep", ["blue", "green"], START, END)

    (sent,) = transport.sent
    assert (sent.method, sent.path) == ("POST", f"/v1/workspaces/{WORKSPACE_ID}/query")
    assert sent.body["timespan"] == "2026-11-22T10:00:00.000Z/2026-11-22T10:30:00.000Z"
    query = sent.body["query"]
    assert query.startswith("AmlOnlineEndpointTrafficLog\n")
    assert 'EndpointName == @"churn-ep"' in query
    assert 'DeploymentName in (@"blue", @"green")' in query
    assert "percentile(TotalDurationMs, 95)" in query and "toint(ResponseCode) >= 500" in query
    expected = FixedCredential().get_token("https://api.loganalytics.io/.default").token
    assert sent.headers["Authorization"] == f"Bearer {expected}"


def test_each_deployment_gets_its_request_count_p95_latency_and_5xx_share():
    probe, _ = probe_answering(body("logs_traffic_summary"))

    health = probe.deployment_health("churn-ep", ["blue", "green"], START, END)

    assert health == {
        "blue": DeploymentHealth("blue", requests=1200, p95_latency_ms=85.0, error_rate=3 / 1200),
        "green": DeploymentHealth("green", requests=40, p95_latency_ms=212.5, error_rate=0.1),
    }


def test_a_deployment_without_logged_requests_comes_back_with_zero_requests():
    probe, _ = probe_answering(body("logs_traffic_summary"))

    health = probe.deployment_health("churn-ep", ["blue", "canary"], START, END)

    assert health["canary"] == DeploymentHealth("canary", requests=0, p95_latency_ms=None, error_rate=None)
    assert health["blue"].requests == 1200 and "green" not in health


def test_no_deployment_means_no_query():
    probe, transport = probe_answering(body("logs_traffic_summary"))

    assert probe.deployment_health("churn-ep", [], START, END) == {}
    assert transport.sent == []


@pytest.mark.parametrize("name, literal", [
    ("churn-ep", '@"churn-ep"'),
    ('ep" or 1==1 //', '@"ep"" or 1==1 //"'),
    ("back\\slash'quote", '@"back\\slash\'quote"'),
])
def test_names_are_verbatim_kql_literals_that_cannot_end_early(name, literal):
    assert kql_string(name) == literal


def test_a_name_with_a_line_break_is_refused_before_anything_is_sent():
    probe, transport = probe_answering(body("logs_traffic_summary"))

    with pytest.raises(PermanentError, match="line break"):
        probe.deployment_health("churn-ep", ["blue\n| take 0"], START, END)

    assert transport.sent == []


def test_a_partial_result_is_not_trusted_and_is_a_transient_error():
    probe, _ = probe_answering(body("logs_partial_error"))

    with pytest.raises(TransientError, match="PartialError"):
        probe.deployment_health("churn-ep", ["blue"], START, END)


@pytest.mark.parametrize("status, expected", [
    (429, TransientError), (500, TransientError), (503, TransientError), (504, TransientError),
    (400, PermanentError), (401, PermanentError), (403, PermanentError), (404, PermanentError),
])
def test_an_http_failure_is_transient_or_permanent_by_status(status, expected):
    probe, transport = probe_answering((status, one_api_error("Failure", f"HTTP {status} from Log Analytics")))

    with pytest.raises(expected) as raised:
        probe.deployment_health("churn-ep", ["blue"], START, END)

    assert re.search(rf"deployment_health.*{status}", str(raised.value))
    assert len(transport.sent) == 1  # not retried here: the host retries transient errors


@pytest.mark.parametrize("error", [ServiceRequestError("Connection refused"), ServiceResponseError("Read timed out")])
def test_a_connection_failure_is_a_transient_error(error):
    probe, _ = probe_answering(error)

    with pytest.raises(TransientError, match="deployment_health") as raised:
        probe.deployment_health("churn-ep", ["blue"], START, END)

    assert raised.value.__cause__ is error


# --- recent signals: what an alert's target did, from the traffic log and the routed platform metrics ---

RESOURCE_ID = ("/subscriptions/00000000-aaaa-bbbb-cccc-000000000001/resourceGroups/ml-rg/providers/"
               "Microsoft.MachineLearningServices/workspaces/ml-ws/onlineEndpoints/churn-ep")
CPU = "CpuUtilizationPercentage"


def at(minute: int) -> datetime:
    return START + timedelta(minutes=minute)


def test_signals_are_one_query_over_both_tables_for_the_window_with_names_quoted():
    probe, transport = probe_answering(body("logs_signals_traffic_and_metrics"))

    probe.recent_signals(RESOURCE_ID, "churn-ep", 'green"', [CPU, CPU], START, END, bin_minutes=5)

    (sent,) = transport.sent
    assert (sent.method, sent.path) == ("POST", f"/v1/workspaces/{WORKSPACE_ID}/query")
    assert sent.body["timespan"] == "2026-11-22T10:00:00.000Z/2026-11-22T10:30:00.000Z"
    query = sent.body["query"]
    assert query.startswith("let traffic = AmlOnlineEndpointTrafficLog\n") and "\nunion\n" in query
    assert 'EndpointName == @"churn-ep" and DeploymentName == @"green"""' in query
    assert query.count("by TimeGenerated = bin(TimeGenerated, 5m)") == 2
    assert "percentile(TotalDurationMs, 95)" in query and "countif(toint(ResponseCode) >= 500)" in query
    assert f'AzureMetrics\n| where ResourceId =~ @"{RESOURCE_ID}" and MetricName in (@"{CPU}")\n' in query
    assert "avg(Average)" in query and "max(Maximum)" in query


def test_signals_come_back_as_series_per_bin_and_a_summary_for_whoever_is_on_call():
    probe, _ = probe_answering(body("logs_signals_traffic_and_metrics"))

    signals = probe.recent_signals(RESOURCE_ID, "churn-ep", "green", [CPU, "MemoryUtilizationPercentage"],
                                   START, END)

    assert signals.summary == (
        "churn-ep/green, 10:00 to 10:30 UTC: 1,240 requests, p95 latency 812 ms (peak 950 ms at 10:05), 5xx 2.1%. "
        "CpuUtilizationPercentage averaged 91.2% (peak 97.0% at 10:05). No data for MemoryUtilizationPercentage.")
    series = {s.name: s for s in signals.series}
    assert [s.name for s in signals.series] == ["requests", "p95 latency", "5xx share", CPU]
    assert [(s.name, s.unit) for s in signals.series] == [
        ("requests", "count"), ("p95 latency", "ms"), ("5xx share", "ratio"), (CPU, "Percent")]
    # Bins without a logged request are zeros, not gaps.
    assert series["requests"].points == tuple(zip([at(m) for m in range(0, 30, 5)], [300, 320, 0, 310, 310, 0],
                                                  strict=True))
    assert series["p95 latency"].points == ((at(0), 640.0), (at(5), 950.0), (at(15), 700.5), (at(20), 690.0))
    assert series["5xx share"].points == ((at(0), 0.01), (at(5), 12 / 320), (at(15), 5 / 310), (at(20), 6 / 310))
    assert series[CPU].points == ((at(0), 88.0), (at(5), 95.5), (at(10), 90.1), (at(15), 91.2))
    assert all(t.tzinfo == UTC for s in signals.series for t, _ in s.points)
    assert (signals.source, signals.start, signals.end) == (f"log-analytics:{WORKSPACE_ID}", START, END)
    assert type(signals).from_json(signals.to_json()) == signals


def test_no_row_at_all_says_so_and_where_the_logs_should_come_from():
    probe, _ = probe_answering(body("logs_signals_empty"))

    signals = probe.recent_signals(RESOURCE_ID, "churn-ep", None, [CPU], START, END)

    assert signals.series == ()
    assert signals.summary == (
        "No traffic or metrics found for churn-ep from 10:00 to 10:30 UTC. Check that diagnostic settings send "
        f"AmlOnlineEndpointTrafficLog and AllMetrics to Log Analytics workspace {WORKSPACE_ID}.")


def test_without_an_endpoint_only_the_metrics_are_read():
    probe, transport = probe_answering(body("logs_signals_metrics_only"))

    signals = probe.recent_signals(RESOURCE_ID, None, None, [CPU, "RequestsPerMinute"], START, END, bin_minutes=1)

    query = transport.sent[0].body["query"]
    assert query.startswith("AzureMetrics\n") and "AmlOnlineEndpointTrafficLog" not in query and "union" not in query
    assert "bin(TimeGenerated, 1m)" in query
    assert [(s.name, s.unit, s.points) for s in signals.series] == [
        (CPU, "Percent", ((at(0), 40.0), (at(5), 60.0))),
        ("RequestsPerMinute", "", ((at(0), 80.0), (at(5), 120.0))),
    ]
    # Without a logged Maximum, the peak is the highest bin average.
    assert signals.summary == ("churn-ep, 10:00 to 10:30 UTC: CpuUtilizationPercentage averaged 50.0% (peak 71.5% at "
                               "10:05). RequestsPerMinute averaged 100.0 (peak 120.0 at 10:05).")


def test_without_metrics_only_the_traffic_log_is_read():
    probe, transport = probe_answering(body("logs_signals_empty"))

    signals = probe.recent_signals("", "churn-ep", None, [CPU], START, END)

    query = transport.sent[0].body["query"]
    assert "AzureMetrics" not in query and 'EndpointName == @"churn-ep";' in query and "DeploymentName" not in query
    assert "AllMetrics" not in signals.summary and "AmlOnlineEndpointTrafficLog" in signals.summary


def test_nothing_to_read_sends_nothing():
    probe, transport = probe_answering(body("logs_signals_empty"))

    signals = probe.recent_signals(RESOURCE_ID, None, None, [], START, END)

    assert transport.sent == [] and signals.series == () and signals.summary


def test_a_signal_name_with_a_line_break_is_refused_before_anything_is_sent():
    probe, transport = probe_answering(body("logs_signals_empty"))

    with pytest.raises(PermanentError, match="recent_signals.*line break"):
        probe.recent_signals(RESOURCE_ID, None, None, ["Cpu\n| take 0"], START, END)

    assert transport.sent == []


def test_a_partial_signals_result_is_a_transient_error():
    probe, _ = probe_answering(body("logs_signals_partial_error"))

    with pytest.raises(TransientError, match="recent_signals.*PartialError"):
        probe.recent_signals(RESOURCE_ID, "churn-ep", "green", [CPU], START, END)


@pytest.mark.parametrize("status, expected", [(403, PermanentError), (429, TransientError), (503, TransientError)])
def test_a_refused_signals_query_is_permanent_and_throttling_transient(status, expected):
    probe, _ = probe_answering((status, one_api_error("Failure", f"HTTP {status} from Log Analytics")))

    with pytest.raises(expected, match=rf"recent_signals.*{status}"):
        probe.recent_signals(RESOURCE_ID, "churn-ep", "green", [CPU], START, END)


@pytest.mark.parametrize("bin_minutes", [0, -5, 2.5, True])
def test_a_bin_that_is_not_a_positive_whole_number_of_minutes_is_refused(bin_minutes):
    probe, transport = probe_answering(body("logs_signals_empty"))

    with pytest.raises(PermanentError, match="bin_minutes"):
        probe.recent_signals(RESOURCE_ID, "churn-ep", None, [CPU], START, END, bin_minutes=bin_minutes)

    assert transport.sent == []

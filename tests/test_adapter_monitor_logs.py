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
from controlplane.errors import PermanentError, TransientError
from controlplane.monitoring import DeploymentHealth
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

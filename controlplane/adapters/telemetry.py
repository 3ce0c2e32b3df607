"""Where the control plane's traces and metrics go: the OpenTelemetry providers, installed once per process.

``CONTROLPLANE_TELEMETRY_EXPORTER`` chooses:

- ``azuremonitor`` (the default when ``APPLICATIONINSIGHTS_CONNECTION_STRING`` is set): the Azure Monitor
  distro, authenticating with Entra ID as the function app's user-assigned identity (``AZURE_CLIENT_ID``), as the
  Application Insights resource allows no local auth. Its azure-core plugin traces every Azure SDK call.
- ``console``: spans and metrics printed as JSON, to see them locally.
- ``none`` (the default otherwise): the API stays a no-op.

The first invocation installs them (``controlplane.bootstrap``), not the import of ``function_app``: the distro
takes a quarter of a second to import, which cold start does not pay.
"""
from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import Any

from controlplane.ports.telemetry import NAME, span
from controlplane.settings import Settings

logger = logging.getLogger(__name__)
_lock = threading.Lock()
_installed: str | None = None

# Store calls that write: each gets a span of its own.
WRITES = frozenset({"claim", "complete", "complete_unclaimed", "release", "append", "update_task", "update_review",
                    "create_rollout", "update_rollout", "put_incident", "append_telemetry", "mark_window_decided",
                    "close_due_windows", "beat"})
# Web frameworks the distro would instrument; the Functions host serves HTTP here, so they stay off.
_UNUSED_INSTRUMENTATIONS = ("django", "fastapi", "flask", "psycopg2")


def configure(settings: Callable[[], Settings]) -> str:
    """Install the exporter the settings choose, once per process; which one is installed. A failure is logged
    and leaves telemetry off: it never fails the work (a settings error shows in /api/health)."""
    global _installed
    if _installed is None:
        with _lock:
            if _installed is None:
                try:
                    chosen = settings()
                    if chosen.telemetry_exporter == "azuremonitor":
                        _azure_monitor(chosen)
                    elif chosen.telemetry_exporter == "console":
                        _console()
                    _installed = chosen.telemetry_exporter
                except Exception:  # see the docstring
                    logger.exception("telemetry is off: it could not be configured")
                    _installed = "none"
                logger.info("telemetry: %s", _installed)
    return _installed


def _azure_monitor(settings: Settings) -> None:
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential
    from azure.monitor.opentelemetry import configure_azure_monitor
    from opentelemetry.sdk.resources import Resource

    credential = (ManagedIdentityCredential(client_id=settings.client_id) if settings.client_id
                  else DefaultAzureCredential(exclude_interactive_browser_credential=True))
    configure_azure_monitor(
        connection_string=settings.appinsights_connection, credential=credential, logger_name=NAME,
        resource=Resource.create({"service.name": NAME}),
        instrumentation_options={name: {"enabled": False} for name in _UNUSED_INSTRUMENTATIONS})


def _console() -> None:
    from azure.core.settings import settings as azure_core
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    resource = Resource.create({"service.name": NAME})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=[
        PeriodicExportingMetricReader(ConsoleMetricExporter(), export_interval_millis=60_000)]))
    azure_core.tracing_implementation = "opentelemetry"


class TracedStore:
    """A store whose writes each run in a span (``store.<method>``); everything else passes straight through."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._store, name)
        if name not in WRITES:
            return found

        @functools.wraps(found)
        def traced(*args: Any, **kwargs: Any) -> Any:
            with span(f"store.{name}", store=self._store.name):
                return found(*args, **kwargs)

        return traced

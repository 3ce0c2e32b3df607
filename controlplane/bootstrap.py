"""The composition root: builds the services once per process, on first use.

Nothing here runs at import time, so importing ``function_app`` stays cheap (cold start); the
store, the policy and the SDK clients are created when the first invocation needs them and reused
by every invocation after it.
"""
from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from controlplane.ports.store import Services
from controlplane.settings import Settings

_lock = threading.Lock()
_services: Services | None = None


def services() -> Services:
    """The process-wide services; a failure to build them is raised and retried on the next call."""
    global _services
    if _services is None:
        with _lock:
            if _services is None:
                _services = build(Settings.from_env())
    return _services


@contextmanager
def invocation(function: str) -> Iterator[None]:
    """One function invocation: telemetry installed (on the first), and a span around it all."""
    from controlplane.adapters import telemetry
    from controlplane.ports.telemetry import span

    telemetry.configure(Settings.from_env)
    with span(function, function=function):
        yield


def build(settings: Settings) -> Services:
    from controlplane.adapters.clock import SystemClock
    from controlplane.adapters.dry_run import DryRunDispatcher
    from controlplane.adapters.routing import RoutingDispatcher
    from controlplane.adapters.telemetry import TracedStore
    from controlplane.domain.ledger import TaskKind
    from controlplane.domain.policy import load_policy
    from controlplane.domain.reviews import approval_url

    policy = load_policy(Path(settings.policy_path))
    store = TracedStore(build_store(settings))
    clock = SystemClock()
    key = approval_key(settings)
    routes = {}
    if settings.teams_webhook_url or settings.slack_webhook_url or settings.webhook_url:
        from controlplane.adapters.notify import WebhookNotifier

        def link_for(review_id: str, approver: str) -> str:
            return approval_url(key, settings.public_url, store.review(review_id), approver)

        routes[TaskKind.NOTIFY] = WebhookNotifier(
            clock, teams_url=settings.teams_webhook_url, slack_url=settings.slack_webhook_url,
            webhook_url=settings.webhook_url, webhook_secret=settings.webhook_secret, link_for=link_for,
            sinks_for=policy.document.notifications.sinks)
    if settings.eventgrid_topic_endpoint:
        from controlplane.adapters.eventgrid_publisher import EventGridPublisher

        routes[TaskKind.PUBLISH] = EventGridPublisher(settings.eventgrid_topic_endpoint, settings.eventgrid_topic_key)
    gateway, health = workspace(settings, clock)
    workspaces = environments(settings, gateway, policy, clock)
    from controlplane.adapters.artifacts import artifacts_for
    from controlplane.adapters.drift_checker import EvidentlyDriftChecker
    from controlplane.adapters.signals import EnrichedNotifier, SignalsCache
    from controlplane.handlers.dispatch_local import LocalWork

    kept = artifacts_for(settings.artifacts_location)
    checker = EvidentlyDriftChecker(kept, settings.public_url, Path(settings.policy_path).parent,
                                    gateway=gateway)
    signals = SignalsCache(health, kept)
    routes[TaskKind.REVIEW] = LocalWork(store, policy, checker, kept, signals, gateway)
    routes[TaskKind.NOTIFY] = EnrichedNotifier(routes.get(TaskKind.NOTIFY, DryRunDispatcher()), signals)
    from controlplane.handlers.dispatch_azureml import AzureMLDispatcher

    # Promotions, rollback, scale and traffic change endpoints, as rollouts do: in dry run they act on the simulated
    # workspaces too, so their deployments, traffic and instance counts stay the ones later decisions read.
    kinds = (TaskKind.PROMOTION, TaskKind.ROLLBACK, TaskKind.SCALE, TaskKind.TRAFFIC)
    if settings.dispatch == "azureml":
        kinds += (TaskKind.RETRAINING, TaskKind.DRIFT)
    routes.update(dict.fromkeys(kinds, AzureMLDispatcher(gateway, clock, workspaces)))
    return Services(store=store, clock=clock, dispatcher=RoutingDispatcher(routes, DryRunDispatcher()),
                    policy=policy, lease=settings.lease, approval_key=key, public_url=settings.public_url,
                    publish_decisions=bool(settings.eventgrid_topic_endpoint), gateway=gateway, health=health,
                    drift=checker, artifacts=kept, alert_auth=alert_auth(settings),
                    sweep_stale=settings.sweep_stale, workspaces=workspaces,
                    telemetry_capture=settings.telemetry_capture)


def workspace(settings: Settings, clock=None):
    """The Azure ML workspace and deployment health: real ones with ``azureml`` dispatch, else the
    simulated workspace of the dry run (which records every request it would have sent)."""
    if settings.dispatch == "azureml":
        from controlplane.adapters.azureml import AzureMLGateway
        from controlplane.adapters.monitor_logs import MonitorLogsProbe

        gateway = AzureMLGateway(settings.azureml_subscription_id, settings.azureml_resource_group,
                                 settings.azureml_workspace)
        return gateway, MonitorLogsProbe(settings.logs_workspace_id)
    from controlplane.adapters.simulated import SimulatedWorkspace

    simulated = SimulatedWorkspace(settings.simulation_path, clock)
    return simulated, simulated


def environments(settings: Settings, home, policy, clock):
    """The policy's environments, each a workspace reached through its own gateway (simulated in dry run)."""
    from controlplane.adapters.workspaces import azureml_workspaces, simulated_workspaces

    if settings.dispatch == "azureml":
        return azureml_workspaces(home, settings.azureml_subscription_id, settings.azureml_resource_group,
                                  settings.azureml_workspace, policy.document.environments)
    return simulated_workspaces(home, settings.simulation_path, policy.document.environments, clock)


def alert_auth(settings: Settings):
    """Entra ID secure-webhook tokens on /api/alerts, when a tenant and audience are configured."""
    if not settings.alerts_auth_tenant_id:
        return None
    from controlplane.adapters.secure_webhook import SecureWebhookValidator

    return SecureWebhookValidator(settings.alerts_auth_tenant_id, settings.alerts_auth_audience,
                                  authority=settings.alerts_auth_authority)


def build_store(settings: Settings):
    if settings.store_kind == "tables":
        from controlplane.adapters.table_store import TableStore

        return TableStore.from_settings(settings)
    from controlplane.adapters.sqlite_store import SqliteStore

    return SqliteStore(settings.sqlite_path)


def approval_key(settings: Settings) -> bytes:
    """The key signing approval links: the setting (a Key Vault reference in Azure) or, with the
    embedded SQLite store, a random key kept beside the database so links survive restarts."""
    if settings.approval_signing_key:
        return settings.approval_signing_key.encode()
    if settings.store_kind != "sqlite":
        return b""  # links fail with a ConfigurationError naming APPROVAL_SIGNING_KEY
    path = Path(settings.sqlite_path).parent / "approval.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


def reset(replacement: Services | None = None) -> None:
    """Drop (or replace) the cached services: settings changed, or a test wires its own."""
    global _services
    with _lock:
        _services = replacement

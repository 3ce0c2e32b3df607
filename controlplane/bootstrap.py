"""The composition root: builds the services once per process, on first use.

Nothing here runs at import time, so importing ``function_app`` stays cheap (cold start); the
store, the policy and the SDK clients are created when the first invocation needs them and reused
by every invocation after it.
"""
from __future__ import annotations

import threading
from pathlib import Path

from controlplane.ports import Services
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


def build(settings: Settings) -> Services:
    from controlplane.adapters.clock import SystemClock
    from controlplane.adapters.dry_run import DryRunDispatcher
    from controlplane.policy import load_policy

    policy = load_policy(Path(settings.policy_path))
    return Services(store=build_store(settings), clock=SystemClock(), dispatcher=DryRunDispatcher(), policy=policy,
                    lease=settings.lease)


def build_store(settings: Settings):
    if settings.store_kind == "tables":
        from controlplane.adapters.table_store import TableStore

        return TableStore.from_settings(settings)
    from controlplane.adapters.sqlite_store import SqliteStore

    return SqliteStore(settings.sqlite_path)


def reset(replacement: Services | None = None) -> None:
    """Drop (or replace) the cached services: settings changed, or a test wires its own."""
    global _services
    with _lock:
        _services = replacement

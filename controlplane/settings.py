"""Settings: one frozen object loaded once from the environment (app settings in Azure,
``local.settings.json`` locally). The names below are a contract shared with ``infra/`` and
``local.settings.sample.json``; handlers never read ``os.environ``.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from controlplane.errors import ConfigurationError

# Setting names (contract).
STORE = "CONTROLPLANE_STORE"
POLICY = "CONTROLPLANE_POLICY"
DISPATCH = "CONTROLPLANE_DISPATCH"
LEASE_SECONDS = "CONTROLPLANE_LEASE_SECONDS"
TABLE_PREFIX = "CONTROLPLANE_TABLE_PREFIX"
STORAGE = "AzureWebJobsStorage"
TELEMETRY_CONNECTION = "TelemetryEventHub"
TELEMETRY_EVENTHUB_NAME = "TELEMETRY_EVENTHUB_NAME"
TELEMETRY_CONSUMER_GROUP = "TELEMETRY_CONSUMER_GROUP"

DEFAULT_STORE = "sqlite:///.controlplane/controlplane.db"
DEFAULT_POLICY = "policy.yaml"
DISPATCHERS = ("dry-run",)


def load_local_settings(path: str | Path = "local.settings.json") -> None:
    """Export ``Values`` from local.settings.json as Core Tools does; the process environment wins."""
    path = Path(path)
    if path.is_file():
        for key, value in json.loads(path.read_text(encoding="utf-8")).get("Values", {}).items():
            os.environ.setdefault(key, str(value))


@dataclass(frozen=True)
class Settings:
    store: str = DEFAULT_STORE
    policy_path: str = DEFAULT_POLICY
    dispatch: str = "dry-run"
    lease: timedelta = timedelta(seconds=300)
    table_prefix: str = "controlplane"
    storage_connection: str = ""
    storage_account_url: str = ""  # identity-based form: AzureWebJobsStorage__tableServiceUri / __accountName

    @property
    def store_kind(self) -> str:
        return "tables" if self.store == "tables" else "sqlite"

    @property
    def sqlite_path(self) -> str:
        return self.store.removeprefix("sqlite:///")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        store = env.get(STORE) or DEFAULT_STORE
        if store != "tables" and not (store.startswith("sqlite:///") and len(store) > len("sqlite:///")):
            raise ConfigurationError(STORE, f"expected 'sqlite:///<path>' or 'tables', got {store!r}")
        dispatch = env.get(DISPATCH) or "dry-run"
        if dispatch not in DISPATCHERS:
            raise ConfigurationError(DISPATCH, f"expected one of {', '.join(DISPATCHERS)}, got {dispatch!r}")
        lease_text = env.get(LEASE_SECONDS) or "300"
        try:
            lease = int(lease_text)
        except ValueError:
            lease = 0
        if lease <= 0:
            raise ConfigurationError(LEASE_SECONDS, f"expected a positive whole number of seconds, got {lease_text!r}")
        prefix = env.get(TABLE_PREFIX) or "controlplane"
        if not prefix.isalnum() or not prefix[0].isalpha():
            raise ConfigurationError(TABLE_PREFIX, f"table names need letters and digits only, got {prefix!r}")
        account_url = env.get(f"{STORAGE}__tableServiceUri", "")
        if not account_url and env.get(f"{STORAGE}__accountName"):
            account_url = f"https://{env[f'{STORAGE}__accountName']}.table.core.windows.net"
        settings = cls(store=store, policy_path=env.get(POLICY) or DEFAULT_POLICY, dispatch=dispatch,
                       lease=timedelta(seconds=lease), table_prefix=prefix,
                       storage_connection=env.get(STORAGE, ""), storage_account_url=account_url)
        if settings.store_kind == "tables" and not (settings.storage_connection or settings.storage_account_url):
            raise ConfigurationError(STORAGE, "the 'tables' store needs a connection string or "
                                              f"{STORAGE}__tableServiceUri / {STORAGE}__accountName")
        return settings

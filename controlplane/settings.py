"""Settings: one frozen object loaded once from the environment (app settings in Azure,
``local.settings.json`` locally). The names below are a contract shared with ``infra/`` and
``local.settings.sample.json``; handlers never read ``os.environ``.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from controlplane.domain.errors import ConfigurationError

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
APPROVAL_SIGNING_KEY = "APPROVAL_SIGNING_KEY"
PUBLIC_URL = "CONTROLPLANE_PUBLIC_URL"
NOTIFY_TEAMS_WEBHOOK_URL = "NOTIFY_TEAMS_WEBHOOK_URL"
NOTIFY_SLACK_WEBHOOK_URL = "NOTIFY_SLACK_WEBHOOK_URL"
NOTIFY_WEBHOOK_URL = "NOTIFY_WEBHOOK_URL"
NOTIFY_WEBHOOK_SECRET = "NOTIFY_WEBHOOK_SECRET"
EVENTGRID_TOPIC_ENDPOINT = "EVENTGRID_TOPIC_ENDPOINT"
EVENTGRID_TOPIC_KEY = "EVENTGRID_TOPIC_KEY"
AZUREML_SUBSCRIPTION_ID = "AZUREML_SUBSCRIPTION_ID"
AZUREML_RESOURCE_GROUP = "AZUREML_RESOURCE_GROUP"
AZUREML_WORKSPACE = "AZUREML_WORKSPACE"
LOGS_WORKSPACE_ID = "CONTROLPLANE_LOGS_WORKSPACE_ID"
ARTIFACTS = "CONTROLPLANE_ARTIFACTS"
ALERTS_AUTH_TENANT_ID = "ALERTS_AUTH_TENANT_ID"
ALERTS_AUTH_AUDIENCE = "ALERTS_AUTH_AUDIENCE"
ALERTS_AUTH_AUTHORITY = "ALERTS_AUTH_AUTHORITY"
TELEMETRY_EXPORTER = "CONTROLPLANE_TELEMETRY_EXPORTER"
SWEEP_STALE_MINUTES = "CONTROLPLANE_SWEEP_STALE_MINUTES"
TELEMETRY_CAPTURE = "CONTROLPLANE_TELEMETRY_CAPTURE"
APPINSIGHTS_CONNECTION = "APPLICATIONINSIGHTS_CONNECTION_STRING"
CLIENT_ID = "AZURE_CLIENT_ID"
DEFAULT_AUTHORITY = "https://login.microsoftonline.com"
# Where traces and metrics go: Azure Monitor (the default when a connection string is set), the console, or nowhere.
EXPORTERS = ("azuremonitor", "console", "none")

DEFAULT_STORE = "sqlite:///.controlplane/controlplane.db"
DEFAULT_POLICY = "policy.yaml"
DISPATCHERS = ("dry-run", "azureml")


def _got(value: str, secret: bool = False) -> str:
    """A mistyped value, shown only when it cannot be a secret: errors name a setting, never a value that may
    hold one (webhook URLs carry their credentials; keys, connection strings, or a secret pasted into the
    wrong setting), as they reach /api/health, /api/decisions and the log."""
    if secret or len(value) > 16 or not re.fullmatch(r"[A-Za-z0-9._-]*", value):
        return "(the value is not shown: it may hold a secret)"
    return f"got {value!r}"


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
    approval_signing_key: str = ""
    public_url: str = "http://127.0.0.1:7071"
    teams_webhook_url: str = ""
    slack_webhook_url: str = ""
    webhook_url: str = ""
    webhook_secret: str = ""
    eventgrid_topic_endpoint: str = ""
    eventgrid_topic_key: str = ""
    azureml_subscription_id: str = ""
    azureml_resource_group: str = ""
    azureml_workspace: str = ""
    logs_workspace_id: str = ""
    artifacts: str = ""  # a directory or an https blob container URL; default beside the SQLite database
    alerts_auth_tenant_id: str = ""  # with the audience: /api/alerts requires Entra secure-webhook tokens
    alerts_auth_audience: str = ""
    alerts_auth_authority: str = DEFAULT_AUTHORITY
    telemetry_exporter: str = "none"
    appinsights_connection: str = ""
    client_id: str = ""  # the user-assigned identity exporting telemetry with Entra ID auth
    sweep_stale: timedelta = timedelta(minutes=10)  # /api/health answers 503 past this without a sweep
    telemetry_capture: str = ""  # the captured telemetry as Azure ML jobs read it (azureml://datastores/...)

    @property
    def local_state(self) -> str:
        """The directory of local files: beside the SQLite database, else ``.controlplane``."""
        if self.store_kind == "sqlite" and "/" in self.sqlite_path:
            return self.sqlite_path.rsplit("/", 1)[0]
        return ".controlplane"

    @property
    def simulation_path(self) -> str:
        """Where the dry run keeps its simulated Azure ML workspace."""
        return f"{self.local_state}/simulated-workspace.json"

    @property
    def artifacts_location(self) -> str:
        return self.artifacts or f"{self.local_state}/artifacts"

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
            raise ConfigurationError(STORE, f"expected 'sqlite:///<path>' or 'tables' {_got(store, secret=True)}")
        dispatch = env.get(DISPATCH) or "dry-run"
        if dispatch not in DISPATCHERS:
            raise ConfigurationError(DISPATCH, f"expected one of {', '.join(DISPATCHERS)}, {_got(dispatch)}")
        lease_text = env.get(LEASE_SECONDS) or "300"
        try:
            lease = int(lease_text)
        except ValueError:
            lease = 0
        if lease <= 0:
            raise ConfigurationError(LEASE_SECONDS, f"expected a positive whole number of seconds, {_got(lease_text)}")
        prefix = env.get(TABLE_PREFIX) or "controlplane"
        if not prefix.isalnum() or not prefix[0].isalpha():
            raise ConfigurationError(TABLE_PREFIX, f"table names need letters and digits only, {_got(prefix)}")
        account_url = env.get(f"{STORAGE}__tableServiceUri", "")
        if not account_url and env.get(f"{STORAGE}__accountName"):
            account_url = f"https://{env[f'{STORAGE}__accountName']}.table.core.windows.net"
        urls = {name: env.get(name, "") for name in (PUBLIC_URL, NOTIFY_TEAMS_WEBHOOK_URL, NOTIFY_SLACK_WEBHOOK_URL,
                                                     NOTIFY_WEBHOOK_URL, EVENTGRID_TOPIC_ENDPOINT,
                                                     ALERTS_AUTH_AUTHORITY)}
        for name, url in urls.items():
            if url and not url.startswith(("https://", "http://")):
                raise ConfigurationError(name, f"expected an http(s) URL {_got(url, secret=True)}")
        if urls[NOTIFY_WEBHOOK_URL] and not env.get(NOTIFY_WEBHOOK_SECRET):
            raise ConfigurationError(NOTIFY_WEBHOOK_SECRET, "required when NOTIFY_WEBHOOK_URL is set (it signs bodies)")
        azureml = {name: env.get(name, "") for name in (AZUREML_SUBSCRIPTION_ID, AZUREML_RESOURCE_GROUP,
                                                         AZUREML_WORKSPACE, LOGS_WORKSPACE_ID)}
        if dispatch == "azureml":
            for name, value in azureml.items():
                if not value:
                    raise ConfigurationError(name, "required when CONTROLPLANE_DISPATCH is 'azureml'")
        tenant, audience = env.get(ALERTS_AUTH_TENANT_ID, ""), env.get(ALERTS_AUTH_AUDIENCE, "")
        if bool(tenant) != bool(audience):
            missing, given = (ALERTS_AUTH_AUDIENCE, ALERTS_AUTH_TENANT_ID) if tenant else (ALERTS_AUTH_TENANT_ID,
                                                                                           ALERTS_AUTH_AUDIENCE)
            raise ConfigurationError(missing, f"required with {given} (together they turn on secure-webhook "
                                              "tokens for /api/alerts)")
        signing_key = env.get(APPROVAL_SIGNING_KEY, "")
        if signing_key and len(signing_key) < 32:
            raise ConfigurationError(APPROVAL_SIGNING_KEY, "use at least 32 characters of random text")
        connection = env.get(APPINSIGHTS_CONNECTION, "")
        exporter = env.get(TELEMETRY_EXPORTER) or ("azuremonitor" if connection else "none")
        if exporter not in EXPORTERS:
            raise ConfigurationError(TELEMETRY_EXPORTER, f"expected one of {', '.join(EXPORTERS)}, {_got(exporter)}")
        if exporter == "azuremonitor" and not connection:
            raise ConfigurationError(APPINSIGHTS_CONNECTION, "required when CONTROLPLANE_TELEMETRY_EXPORTER is "
                                                             "'azuremonitor'")
        stale_text = env.get(SWEEP_STALE_MINUTES) or "10"
        stale = int(stale_text) if stale_text.isascii() and stale_text.isdigit() and len(stale_text) < 6 else 0
        if stale <= 0:
            raise ConfigurationError(SWEEP_STALE_MINUTES, f"expected a positive whole number of minutes, "
                                                          f"{_got(stale_text)}")
        capture = env.get(TELEMETRY_CAPTURE, "")
        if capture and not capture.startswith(("azureml://", "abfss://", "https://")):
            raise ConfigurationError(TELEMETRY_CAPTURE, "expected an azureml://datastores/<store>/paths/... (or "
                                                        f"abfss:// or https://) folder, {_got(capture)}")
        settings = cls(store=store, policy_path=env.get(POLICY) or DEFAULT_POLICY, dispatch=dispatch,
                       lease=timedelta(seconds=lease), table_prefix=prefix,
                       storage_connection=env.get(STORAGE, ""), storage_account_url=account_url,
                       approval_signing_key=signing_key, public_url=urls[PUBLIC_URL] or cls.public_url,
                       teams_webhook_url=urls[NOTIFY_TEAMS_WEBHOOK_URL],
                       slack_webhook_url=urls[NOTIFY_SLACK_WEBHOOK_URL],
                       webhook_url=urls[NOTIFY_WEBHOOK_URL], webhook_secret=env.get(NOTIFY_WEBHOOK_SECRET, ""),
                       eventgrid_topic_endpoint=urls[EVENTGRID_TOPIC_ENDPOINT],
                       eventgrid_topic_key=env.get(EVENTGRID_TOPIC_KEY, ""),
                       azureml_subscription_id=azureml[AZUREML_SUBSCRIPTION_ID],
                       azureml_resource_group=azureml[AZUREML_RESOURCE_GROUP],
                       azureml_workspace=azureml[AZUREML_WORKSPACE], logs_workspace_id=azureml[LOGS_WORKSPACE_ID],
                       artifacts=env.get(ARTIFACTS, ""), alerts_auth_tenant_id=tenant,
                       alerts_auth_audience=audience,
                       alerts_auth_authority=urls[ALERTS_AUTH_AUTHORITY] or DEFAULT_AUTHORITY,
                       telemetry_exporter=exporter, appinsights_connection=connection,
                       client_id=env.get(CLIENT_ID, ""), sweep_stale=timedelta(minutes=stale),
                       telemetry_capture=capture)
        if settings.store_kind == "tables" and not (settings.storage_connection or settings.storage_account_url):
            raise ConfigurationError(STORAGE, "the 'tables' store needs a connection string or "
                                              f"{STORAGE}__tableServiceUri / {STORAGE}__accountName")
        return settings

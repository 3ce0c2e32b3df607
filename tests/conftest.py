from __future__ import annotations

import itertools
import uuid
from datetime import timedelta

import pytest

from controlplane.domain.policy import load_policy
from controlplane.ports.store import Services
from tests.fakes import FakeClock, FakeStore, RecordingDispatcher
from tests.support import ROOT, Azurite

_prefixes = itertools.count()
_indexed: dict = {}  # app -> its functions by name


@pytest.fixture(scope="session")
def azurite():
    server = Azurite().start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def policy():
    return load_policy(ROOT / "policy.yaml")


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def make_store(request, tmp_path):
    """Build a store of one kind: 'fake', 'sqlite' (a file under tmp_path) or 'tables' (Azurite)."""

    def make(kind: str):
        if kind == "fake":
            return FakeStore()
        if kind == "sqlite":
            from controlplane.adapters.sqlite_store import SqliteStore

            return SqliteStore(str(tmp_path / "controlplane.db"))
        from azure.data.tables import TableServiceClient

        from controlplane.adapters.table_store import TableStore

        server = request.getfixturevalue("azurite")
        service = TableServiceClient.from_connection_string(server.connection_string, retry_total=0)
        return TableStore(service, prefix=f"t{next(_prefixes)}x{uuid.uuid4().hex[:8]}")

    return make


@pytest.fixture
def counted(azurite):
    """A TableStore on Azurite whose every request is recorded as (method, URL)."""
    import uuid

    from azure.core.pipeline.transport import RequestsTransport
    from azure.data.tables import TableServiceClient

    from controlplane.adapters.table_store import TableStore

    class Recording(RequestsTransport):
        requests: list[tuple[str, str]] = []

        def send(self, request, **kwargs):
            Recording.requests.append((request.method, request.url))
            return super().send(request, **kwargs)

    service = TableServiceClient.from_connection_string(azurite.connection_string, retry_total=0,
                                                        transport=Recording())
    store = TableStore(service, prefix=f"c{uuid.uuid4().hex[:10]}")
    return store, Recording.requests


@pytest.fixture
def services(policy, clock):
    return Services(store=FakeStore(), clock=clock, dispatcher=RecordingDispatcher(), policy=policy,
                    lease=timedelta(minutes=5))


@pytest.fixture(scope="module")
def fn(app_functions):
    """The app's user functions by name, called directly with ``azure.functions`` objects."""
    return {name: f.get_user_function() for name, f in app_functions.items()}


@pytest.fixture(scope="module")
def in_process_host(app_functions, tmp_path_factory):
    """The local host over the app's functions, in process, on a fresh SQLite store."""
    from controlplane import bootstrap
    from controlplane.dev.localhost import Function, LocalHost
    from controlplane.settings import Settings

    workdir = tmp_path_factory.mktemp("host")
    bootstrap.reset(bootstrap.build(Settings.from_env({"CONTROLPLANE_STORE": f"sqlite:///{workdir}/cp.db",
                                                       "APPROVAL_SIGNING_KEY": "h" * 40})))
    yield LocalHost(functions=map(Function.of, app_functions.values()))
    bootstrap.reset()


@pytest.fixture(scope="session")
def app_functions():
    """The app's functions by name. ``get_functions()`` may run only once per app instance, and a process may run
    several sessions (mutation testing does): they share the app's index."""
    import function_app

    if function_app.app not in _indexed:
        _indexed[function_app.app] = {f.get_function_name(): f for f in function_app.app.get_functions()}
    return _indexed[function_app.app]


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium, driven by Playwright (which downloads no browser of its own)."""
    import shutil

    from playwright.sync_api import sync_playwright

    flags = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                              args=flags)
        yield instance
        instance.close()

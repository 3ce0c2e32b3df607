"""Test support: real-shaped payloads and the real servers the suite starts (Azurite, the local host).

Servers listen on free loopback ports and are stopped by the fixture that started them.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EVENTS = Path(__file__).resolve().parent / "events"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def load_event(name: str) -> Any:
    return json.loads((EVENTS / name).read_text(encoding="utf-8"))


def event_bytes(name: str) -> bytes:
    return (EVENTS / name).read_bytes()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listened on {port} within {timeout}s")


class ServerProcess:
    """A server in a child process on a free loopback port; ``stop`` is graceful, ``kill`` is not."""

    stop_signal = signal.SIGTERM

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def launch(self, args: list[str], **popen) -> None:
        self.process = subprocess.Popen(args, **popen)
        wait_for_port(self.port, self.process)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(self.stop_signal)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


def azurite_connection(port: int, service: str = "table") -> str:
    return (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};"
            f"{service.capitalize()}Endpoint=http://127.0.0.1:{port}/devstoreaccount1;")


class Azurite(ServerProcess):
    """Azurite's Table service from the project's npm install, on a free port.

    In memory by default; ``persistent=True`` keeps data in a temporary workspace so a restart (an
    outage) finds it again.
    """

    stop_signal = signal.SIGINT  # Azurite writes its persisted data on SIGINT, not on SIGTERM
    service = "table"

    def __init__(self, persistent: bool = False) -> None:
        super().__init__()
        self.persistent = persistent
        self.workspace = tempfile.mkdtemp(prefix="azurite-")

    @property
    def connection_string(self) -> str:
        return azurite_connection(self.port, self.service)

    @property
    def account_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/devstoreaccount1"

    def start(self) -> Azurite:
        binary = ROOT / "node_modules" / ".bin" / f"azurite-{self.service}"
        if not binary.exists():
            raise RuntimeError("Azurite is not installed: run `make test` (it runs `npm ci`) first")
        storage = ["--location", self.workspace] if self.persistent else ["--inMemoryPersistence"]
        self.launch([str(binary), f"--{self.service}Host", "127.0.0.1", f"--{self.service}Port", str(self.port),
                     *storage,
                     "--disableTelemetry", "--skipApiVersionCheck", "--loose", "--silent"],
                    cwd=self.workspace, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workspace, ignore_errors=True)


class AzuriteBlob(Azurite):
    """Azurite's Blob service, likewise."""

    service = "blob"


class Response:
    def __init__(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.status, self.body, self.headers = status, body, headers

    def json(self) -> Any:
        return json.loads(self.body)


def request(method: str, url: str, body: bytes | str | None = None, headers: dict[str, str] | None = None,
            timeout: float = 30.0) -> Response:
    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as reply:
            return Response(reply.status, reply.read(), dict(reply.headers))
    except urllib.error.HTTPError as error:
        return Response(error.code, error.read(), dict(error.headers))


class LocalHostProcess(ServerProcess):
    """``python -m controlplane serve`` in its own process, as a user starts it."""

    def __init__(self, env: dict[str, str], workdir: Path, preload: str = "") -> None:
        super().__init__()
        self.env = env
        self.workdir = workdir
        self.preload = preload  # Python run in the host's process before it starts (a fault to inject)
        self.log = workdir / f"host-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def full_env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(ROOT), **self.env}

    def start(self) -> LocalHostProcess:
        env = self.full_env()
        program = (["-c", f"{self.preload}\nfrom controlplane.cli import main\nraise SystemExit(main())"]
                   if self.preload else ["-m", "controlplane"])
        with open(self.log, "ab") as log:
            self.launch([sys.executable, *program, "serve", "--port", str(self.port), "--no-timers"],
                        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        return self

    def post_events(self, payload: Any, function: str = "on_registry_event") -> Response:
        return request("POST", f"{self.url}/runtime/webhooks/EventGrid?functionName={function}",
                       json.dumps(payload), {"aeg-event-type": "Notification", "Content-Type": "application/json"})

    def decisions(self, **params: Any) -> list[dict[str, Any]]:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        reply = request("GET", f"{self.url}/api/decisions?{query}")
        assert reply.status == 200, reply.body
        return reply.json()["decisions"]


@contextmanager
def local_host(env: dict[str, str], workdir: Path, preload: str = "") -> Iterator[LocalHostProcess]:
    host = LocalHostProcess(env, workdir, preload).start()
    try:
        yield host
    finally:
        host.stop()

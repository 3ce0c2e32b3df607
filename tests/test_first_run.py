"""What a first user meets: a busy port, the demo's state served afterwards, the documented commands."""
from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import urllib.request

import pytest

from tests.support import ROOT, free_port, wait_for_port

CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("CONTROLPLANE_")}


def test_a_busy_port_is_one_line_and_exit_code_2(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "controlplane", "serve", "--port", str(port)], cwd=ROOT,
                              capture_output=True, text=True, timeout=60,
                              env={**CLEAN_ENV, "CONTROLPLANE_STORE": f"sqlite:///{tmp_path}/cp.db"})
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"port {port} is in use: stop what listens there or run `make run PORT={port + 1}`"]
    assert done.stdout == ""


def test_the_demo_leaves_state_its_printed_command_serves(tmp_path):
    port = free_port()
    env = {**CLEAN_ENV, "PYTHONPATH": str(ROOT), "CONTROLPLANE_POLICY": str(ROOT / "policy.yaml")}
    demo = subprocess.run([sys.executable, "-m", "controlplane", "demo", "--port", str(port)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=180, env=env)
    assert demo.returncode == 0, demo.stderr[-2000:]
    assert (tmp_path / ".controlplane" / "demo" / "demo.db").exists()
    [review_url] = re.findall(r"infrastructure review \w+ for \S+: (\S+)", demo.stdout)
    assert review_url.startswith(f"http://127.0.0.1:{port}/api/reviews/")
    command = demo.stdout.strip().splitlines()[-1].split()
    settings = dict(word.split("=", 1) for word in command if "=" in word)
    assert settings["CONTROLPLANE_STORE"] == "sqlite:///.controlplane/demo/demo.db"
    argv = [word for word in command if "=" not in word]
    assert argv[:3] == [".venv/bin/python", "-m", "controlplane"]

    server = subprocess.Popen([sys.executable, *argv[1:]], cwd=tmp_path, env={**CLEAN_ENV, **settings,
                              "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, server)
        with urllib.request.urlopen(review_url, timeout=30) as page:
            assert page.status == 200 and "infra-oncall@contoso.com" in page.read().decode()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/decisions?model=churn&limit=1", timeout=30) as reply:
            assert b'"model": "churn"' in reply.read()
    finally:
        server.terminate()
        server.wait(timeout=30)


def documented_commands() -> list[tuple[str, str]]:
    """Every ``python -m controlplane ...`` command line in README.md and docs/troubleshooting.md (but the
    prose's ``python -m controlplane ...``, any command)."""
    found = []
    for name in ("README.md", "docs/troubleshooting.md"):
        text = (ROOT / name).read_text(encoding="utf-8")
        for match in re.finditer(r"python -m controlplane((?: [^`)|;#\n]*)?)", text):
            if match.group(1).strip() != "...":
                found.append((name, match.group(1).strip()))
    return found


def test_the_docs_show_commands() -> None:
    names = {name for name, _ in documented_commands()}
    assert names == {"README.md", "docs/troubleshooting.md"}


@pytest.mark.parametrize(("doc", "line"), documented_commands())
def test_every_documented_command_parses(doc, line, monkeypatch):
    from controlplane import cli, settings

    parsed = []
    monkeypatch.setattr(settings, "load_local_settings", lambda *a, **k: None)
    monkeypatch.setattr(cli, "_run", lambda args: parsed.append(args) or 0)
    try:
        code = cli.main(shlex.split(line))
    except SystemExit as exit_:  # argparse: 0 after printing --help, 2 when it refuses the line
        assert exit_.code == 0 and "--help" in line.split(), f"{doc}: python -m controlplane {line}: refused"
        return
    assert code == 0 and len(parsed) == 1

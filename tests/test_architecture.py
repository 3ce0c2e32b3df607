"""The layers stay visible: triggers (bindings) -> handlers (use cases) -> ports and adapters."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support import ROOT

SDKS = ("azure", "evidently", "pandas", "numpy", "scipy")


def imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def modules(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def uses(names: set[str], *prefixes: str) -> set[str]:
    return {n for n in names if any(n == p or n.startswith(p + ".") for p in prefixes)}


@pytest.mark.parametrize("path", modules("controlplane", "handlers"), ids=lambda p: str(p.relative_to(ROOT)))
def test_only_triggers_and_the_local_host_import_azure_functions(path):
    allowed = {ROOT / "controlplane" / "localhost.py"}  # it plays the Functions host
    if path not in allowed:
        assert not uses(imports(path), "azure.functions")


@pytest.mark.parametrize("path", modules("handlers"), ids=lambda p: str(p.relative_to(ROOT)))
def test_handlers_import_no_sdk_and_no_adapter(path):
    names = imports(path)
    assert not uses(names, *SDKS), "handlers reach the outside world only through ports"
    assert not uses(names, "controlplane.adapters", "controlplane.bootstrap", "controlplane.drift", "triggers")


@pytest.mark.parametrize("path", modules("controlplane"), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_domain_imports_no_sdk(path):
    relative = path.relative_to(ROOT / "controlplane")
    if relative.parts[0] in ("adapters", "drift") or relative.name in ("localhost.py", "bootstrap.py", "cli.py"):
        return
    assert not uses(imports(path), *SDKS)


@pytest.mark.parametrize("path", modules("triggers"), ids=lambda p: str(p.relative_to(ROOT)))
def test_triggers_import_only_bindings_at_module_level(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top_level = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            top_level.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            top_level.add(node.module)
    assert not uses(top_level, "handlers", "controlplane"), "handlers load on first call (cold start)"

"""The layers stay visible and point one way: entry points -> use cases -> ports -> domain; adapters beside.

Each package may import only the packages listed for it in ``DEPENDS_ON``; that graph has no cycle, so no
package imports upward. Imports inside functions count too: a lazy import is still a dependency.
"""
from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

from tests.support import ROOT

SDKS = ("azure", "evidently", "pandas", "numpy", "scipy", "sklearn")

DOMAIN = "controlplane.domain"
PARSING = "controlplane.parsing"
PORTS = "controlplane.ports"
SETTINGS = "controlplane.settings"
DRIFT = "controlplane.drift"
HANDLERS = "controlplane.handlers"
WEB = "controlplane.web"
ADAPTERS = "controlplane.adapters"
BOOTSTRAP = "controlplane.bootstrap"
CLI = "controlplane.cli"
DEV = "controlplane.dev"
TRIGGERS = "triggers"
APP = "function_app"

# What each package may import (besides itself). Read top to bottom: each layer sees only those above it.
DEPENDS_ON: dict[str, set[str]] = {
    DOMAIN: set(),
    PARSING: {DOMAIN},
    PORTS: {DOMAIN},
    SETTINGS: {DOMAIN},
    DRIFT: {DOMAIN, PARSING},  # the engine; its Azure ML job reads captured telemetry as on_telemetry does
    HANDLERS: {DOMAIN, PARSING, PORTS},
    WEB: {DOMAIN, PORTS},
    ADAPTERS: {DOMAIN, PARSING, PORTS, SETTINGS, DRIFT},
    BOOTSTRAP: {DOMAIN, PORTS, SETTINGS, ADAPTERS, HANDLERS, DRIFT},
    TRIGGERS: {DOMAIN, HANDLERS, WEB, BOOTSTRAP},
    APP: {TRIGGERS},
    CLI: {DOMAIN, PORTS, SETTINGS, HANDLERS, BOOTSTRAP, DEV},
    DEV: {DOMAIN, PARSING, PORTS, SETTINGS, ADAPTERS, HANDLERS, BOOTSTRAP, WEB, TRIGGERS, APP},
}
# Packages whose code never touches an Azure SDK, a dataframe or a statistics library.
PURE = (DOMAIN, PARSING, PORTS, SETTINGS, HANDLERS, WEB, BOOTSTRAP)
# The Functions programming model belongs to the Functions entry points (and to the host that plays them).
FUNCTIONS_ENTRY = (TRIGGERS, APP, f"{DEV}.localhost")


def imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def inside(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def package_of(name: str) -> str | None:
    """The most specific package of ``DEPENDS_ON`` that holds ``name``."""
    owners = [p for p in DEPENDS_ON if inside(name, p)]
    return max(owners, key=len) if owners else None


def project_modules() -> dict[str, Path]:
    paths = [ROOT / "function_app.py", *ROOT.joinpath("triggers").rglob("*.py"),
             *ROOT.joinpath("controlplane").rglob("*.py")]
    return {module_name(p): p for p in paths}


MODULES = project_modules()


def modules_of(*packages: str) -> list[str]:
    return sorted(m for m in MODULES if package_of(m) in packages)


def test_every_module_belongs_to_a_layer():
    loose = {m for m in MODULES if package_of(m) is None and m not in ("controlplane", "controlplane.__main__")}
    assert not loose, f"give these a package in DEPENDS_ON: {sorted(loose)}"


def test_the_packages_form_no_cycle():
    order = list(TopologicalSorter(DEPENDS_ON).static_order())
    assert order.index(DOMAIN) < order.index(HANDLERS) < order.index(BOOTSTRAP) < order.index(TRIGGERS)


def test_a_cycle_would_be_found():
    with pytest.raises(CycleError):
        list(TopologicalSorter({**DEPENDS_ON, DOMAIN: {HANDLERS}}).static_order())


@pytest.mark.parametrize("package", sorted(DEPENDS_ON))
def test_each_package_imports_only_the_layers_it_may(package):
    members = modules_of(package)
    assert members, f"{package} has no module"
    wrong = {}
    for module in members:
        names = {n for n in imports(MODULES[module]) if n != "controlplane"}  # "from controlplane import x"
        targets = {package_of(n) for n in names if inside(n, "controlplane") or inside(n, TRIGGERS) or n == APP}
        bad = {t or "controlplane (root)" for t in targets} - DEPENDS_ON[package] - {package}
        if bad:
            wrong[module] = sorted(bad)
    assert not wrong, f"{package} may import only {sorted(DEPENDS_ON[package])}: {wrong}"


def test_the_import_check_sees_lazy_imports():
    """The rule above reads imports inside functions: the triggers import their handlers there."""
    lazy = imports(MODULES["triggers.registry"])
    assert any(inside(n, HANDLERS) for n in lazy)


@pytest.mark.parametrize("package", PURE)
def test_pure_layers_import_no_sdk(package):
    found = {m: sorted(n for n in imports(MODULES[m]) if any(inside(n, s) for s in SDKS))
             for m in modules_of(package)}
    assert modules_of(package)
    assert not {m: n for m, n in found.items() if n}, "these layers reach the outside world only through ports"


def test_only_the_functions_entry_points_import_azure_functions():
    users = {m for m, p in MODULES.items() if any(inside(n, "azure.functions") for n in imports(p))}
    assert users, "the triggers import azure.functions"
    assert all(any(inside(m, e) for e in FUNCTIONS_ENTRY) for m in users), sorted(users)


@pytest.mark.parametrize("module", modules_of(TRIGGERS))
def test_triggers_import_only_bindings_at_module_level(module):
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    top_level = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            top_level.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            top_level.add(node.module)
    project = {n for n in top_level if inside(n, "controlplane")}
    heavy = {n for n in top_level if any(inside(n, s) for s in SDKS) and not inside(n, "azure.functions")}
    if "func.Blueprint()" in MODULES[module].read_text(encoding="utf-8"):  # a module of bindings, not a helper
        assert "azure.functions" in top_level
    assert not project | heavy, "handlers and SDKs load on first call (cold start)"

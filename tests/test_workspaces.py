"""The policy's environments, each reached through its own gateway: built on first use, once; the home one is
the home gateway itself; an unknown one is refused."""
from __future__ import annotations

import sys
import threading

import pytest

from controlplane.adapters.simulated import SimulatedWorkspace
from controlplane.adapters.workspaces import (
    EnvironmentWorkspaces,
    WorkspaceIdentity,
    azureml_workspaces,
    simulated_workspaces,
)
from controlplane.domain.errors import PermanentError
from controlplane.domain.policy import Environment
from controlplane.ports.gateway import GatewayError
from tests.fakes import FakeClock

HOME = WorkspaceIdentity("sub-1", "rg-prod", "ws-prod")
ENVIRONMENTS = {"dev": Environment(workspace="ws-dev"), "staging": Environment(workspace="ws-staging"),
                "prod": Environment(workspace="WS-Prod")}


class Built:
    """A ``build`` callable that records every environment it built a gateway for."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, name, environment):
        self.calls.append(name)
        return object()


def test_none_is_the_home_gateway_and_a_gateway_is_built_on_first_use_only_once():
    home, build = object(), Built()
    workspaces = EnvironmentWorkspaces(home, HOME, ENVIRONMENTS, build)

    assert workspaces.gateway() is home and workspaces.gateway(None) is home
    assert build.calls == []
    dev = workspaces.gateway("dev")
    assert workspaces.gateway("dev") is dev and dev is not home
    assert workspaces.gateway("staging") is not dev
    assert build.calls == ["dev", "staging"]


def test_concurrent_first_uses_build_one_gateway():
    build, barrier = Built(), threading.Barrier(8)
    workspaces = EnvironmentWorkspaces(object(), HOME, ENVIRONMENTS, build)
    found = []

    def ask():
        barrier.wait()
        found.append(workspaces.gateway("dev"))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert build.calls == ["dev"] and len({id(gateway) for gateway in found}) == 1


@pytest.mark.parametrize("environment", [
    Environment(workspace="WS-PROD"),
    Environment(workspace="ws-prod", resource_group="RG-prod"),
    Environment(workspace="ws-prod", resource_group="rg-prod", subscription_id="SUB-1"),
    Environment(workspace="ws-other", home=True),
])
def test_the_environment_of_the_home_workspace_is_the_home_gateway(environment):
    home, build = object(), Built()

    assert EnvironmentWorkspaces(home, HOME, {"prod": environment}, build).gateway("prod") is home
    assert build.calls == []


@pytest.mark.parametrize("environment", [
    Environment(workspace="ws-prod", resource_group="rg-other"),
    Environment(workspace="ws-prod", subscription_id="sub-2"),
    Environment(workspace="ws-prod-2"),
])
def test_a_workspace_of_the_same_name_elsewhere_is_another_workspace(environment):
    home, build = object(), Built()

    assert EnvironmentWorkspaces(home, HOME, {"prod": environment}, build).gateway("prod") is not home
    assert build.calls == ["prod"]


def test_in_dry_run_no_environment_is_the_home_workspace_by_name():
    home, build = object(), Built()
    workspaces = EnvironmentWorkspaces(home, WorkspaceIdentity(), {"prod": Environment(workspace="")}, build)

    assert workspaces.gateway("prod") is not home


def test_an_unknown_environment_is_refused_for_good_naming_the_known_ones():
    workspaces = EnvironmentWorkspaces(object(), HOME, ENVIRONMENTS, Built())

    with pytest.raises(GatewayError, match="'qa'") as refused:
        workspaces.gateway("qa")
    assert isinstance(refused.value, PermanentError)
    assert "dev, prod, staging" in str(refused.value)
    with pytest.raises(GatewayError, match="none is defined"):
        EnvironmentWorkspaces(object(), HOME, {}, Built()).gateway("dev")


def test_simulated_environments_are_files_beside_the_home_one_on_the_same_clock(tmp_path):
    clock = FakeClock()
    home = SimulatedWorkspace(tmp_path / "simulated-workspace.json", clock)
    workspaces = simulated_workspaces(home, home.path, {"dev": Environment(workspace="ws-dev"),
                                                         "prod": Environment(workspace="ws-prod", home=True)}, clock)

    dev = workspaces.gateway("dev")
    dev.register_model("churn", "4", "alice@contoso.com")

    assert workspaces.gateway("prod") is home
    assert (dev.path, dev.clock) == (tmp_path / "simulated-workspace.dev.json", clock)
    assert workspaces.gateway("dev") is dev
    assert SimulatedWorkspace(tmp_path / "simulated-workspace.dev.json").get_model("churn", "4").version == "4"
    assert not home.path.exists()


def test_azure_ml_environments_take_the_home_group_and_subscription_unless_they_name_theirs(monkeypatch):
    import controlplane.adapters.azureml as azureml

    built = []

    class Recorded:
        def __init__(self, subscription_id, resource_group, workspace):
            built.append((subscription_id, resource_group, workspace))

    monkeypatch.setattr(azureml, "AzureMLGateway", Recorded)
    home = object()
    workspaces = azureml_workspaces(home, "sub-1", "rg-prod", "ws-prod", {
        "dev": Environment(workspace="ws-dev"),
        "staging": Environment(workspace="ws-staging", resource_group="rg-staging", subscription_id="sub-2"),
        "prod": Environment(workspace="ws-prod")})

    assert workspaces.gateway("prod") is home
    assert built == []
    workspaces.gateway("dev")
    workspaces.gateway("staging")
    workspaces.gateway("dev")
    assert built == [("sub-1", "rg-prod", "ws-dev"), ("sub-2", "rg-staging", "ws-staging")]


def test_importing_the_module_imports_no_azure_sdk():
    import subprocess

    code = ("import sys, controlplane.adapters.workspaces; "
            "print(any(m.startswith(('azure.ai.ml', 'controlplane.adapters.azureml')) for m in sys.modules))")
    answer = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert answer.stdout.strip() == "False"

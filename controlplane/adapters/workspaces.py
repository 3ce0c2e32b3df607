"""The policy's environments (dev, staging, prod...), each an Azure ML workspace reached through a gateway.

A gateway is built the first time its environment is asked for and kept for the life of the process, so its
client and credential are reused as the home gateway's are; an environment never asked for costs nothing. The
environment that is the home workspace, the one the settings name, gets the home gateway itself rather than a
second client of the same workspace. Nothing heavy is imported here: ``azure.ai.ml`` only with a real gateway.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controlplane.ports.gateway import Gateway, GatewayError

if TYPE_CHECKING:
    from controlplane.domain.policy import Environment


@dataclass(frozen=True)
class WorkspaceIdentity:
    """The home workspace as the settings name it; all empty in dry run, where no environment's workspace is it."""

    subscription_id: str = ""
    resource_group: str = ""
    workspace: str = ""

    def named_by(self, environment: Environment) -> bool:
        """Whether ``environment`` names this workspace: the same name (case-insensitively), and the same resource
        group and subscription when the environment names them."""
        if not self.workspace:
            return False
        wanted = ((environment.workspace, self.workspace), (environment.resource_group, self.resource_group),
                  (environment.subscription_id, self.subscription_id))
        return all(theirs is None or theirs.lower() == ours.lower() for theirs, ours in wanted)


class EnvironmentWorkspaces:
    """The ``Workspaces`` port: ``gateway(None)`` is the home gateway; ``gateway(name)`` the gateway of the policy's
    environment ``name``, built by ``build(name, environment)`` on first use and reused after. The environment marked
    ``home``, or naming the home workspace (``identity``), is the home gateway itself."""

    def __init__(self, home: Gateway, identity: WorkspaceIdentity, environments: Mapping[str, Environment],
                 build: Callable[[str, Environment], Gateway]) -> None:
        self.home = home
        self.identity = identity
        self.environments = dict(environments)
        self._build = build
        self._gateways: dict[str, Gateway] = {}
        self._lock = threading.Lock()

    def gateway(self, environment: str | None = None) -> Gateway:
        if environment is None:
            return self.home
        found = self.environments.get(environment)
        if found is None:
            known = ", ".join(sorted(self.environments)) or "none is defined"
            raise GatewayError("workspaces", f"environment {environment!r} is not one of the policy's "
                                             f"environments ({known})")
        if found.home or self.identity.named_by(found):
            return self.home
        with self._lock:  # one gateway per environment, even when two invocations ask at once
            gateway = self._gateways.get(environment)
            if gateway is None:
                gateway = self._gateways[environment] = self._build(environment, found)
            return gateway


def azureml_workspaces(home: Gateway, subscription_id: str, resource_group: str, workspace: str,
                       environments: Mapping[str, Environment]) -> EnvironmentWorkspaces:
    """The environments' Azure ML workspaces; one that names no resource group or subscription is looked for in
    the home workspace's."""
    def build(name: str, environment: Environment) -> Gateway:
        from controlplane.adapters.azureml import AzureMLGateway

        return AzureMLGateway(environment.subscription_id or subscription_id,
                              environment.resource_group or resource_group, environment.workspace)

    return EnvironmentWorkspaces(home, WorkspaceIdentity(subscription_id, resource_group, workspace), environments,
                                 build)


def simulated_workspaces(home: Gateway, home_path: str | Path, environments: Mapping[str, Environment],
                         clock: Any = None) -> EnvironmentWorkspaces:
    """The dry run's environments: a simulated workspace each, in ``simulated-workspace.<name>.json`` beside the
    home workspace's file ``home_path``, on the same clock."""
    def build(name: str, environment: Environment) -> Gateway:
        from controlplane.adapters.simulated import SimulatedWorkspace

        return SimulatedWorkspace.of(home_path, name, clock)

    return EnvironmentWorkspaces(home, WorkspaceIdentity(), environments, build)

"""Deep links into Azure Machine Learning studio, for approvers who want to see an asset where it lives.

Studio finds a workspace's asset from the workspace's resource id (``wsid``); a registry's model needs no
workspace. Every name is URL-quoted, so a name cannot change which page a link opens.
"""
from __future__ import annotations

from urllib.parse import quote

STUDIO = "https://ml.azure.com"


def _part(value: str) -> str:
    return quote(str(value), safe="")


def _in(workspace_id: str) -> str:
    return f"?wsid={quote(workspace_id, safe='/')}"


def model_url(name: str, version: str, workspace_id: str) -> str:
    """A workspace's model version."""
    return f"{STUDIO}/model/{_part(name)}:{_part(version)}/details{_in(workspace_id)}"


def registry_model_url(registry: str, name: str, version: str) -> str:
    """A model version shared to an Azure ML registry."""
    return f"{STUDIO}/registries/{_part(registry)}/models/{_part(name)}/version/{_part(version)}"


def job_url(job: str, workspace_id: str) -> str:
    """A job (a pipeline's or a batch scoring job) with its outputs and logs."""
    return f"{STUDIO}/runs/{_part(job)}{_in(workspace_id)}"


def endpoint_url(endpoint: str, workspace_id: str, batch: bool = False) -> str:
    """An online (``realtime``) or batch endpoint's page, which lists its deployments."""
    return f"{STUDIO}/endpoints/{'batch' if batch else 'realtime'}/{_part(endpoint)}/detail{_in(workspace_id)}"

"""Azure ML asset references, ``azureml:<name>:<version>``: models, data assets, components. One parser, one
formatter."""
from __future__ import annotations

import re
from dataclasses import dataclass

PREFIX = "azureml:"
_REFERENCE = re.compile(r"^(?:azureml:|(?!azureml:))(?P<name>[^:/@\s]+):(?P<version>[^:/@\s]+)$")
_RESOURCE_ID = re.compile(r"/models/(?P<name>[^/\s]+)/versions/(?P<version>[^/\s]+)/?$", re.IGNORECASE)


@dataclass(frozen=True)
class AssetRef:
    name: str
    version: str

    @staticmethod
    def parse(text: str) -> AssetRef | None:
        """``azureml:<name>:<version>``, ``<name>:<version>`` or a resource ID ending in
        ``/models/<name>/versions/<version>``; None for anything else (a path, a URL, a reference by label such
        as ``azureml:<name>@latest``)."""
        if not isinstance(text, str):
            return None
        match = _REFERENCE.match(text.strip()) or _RESOURCE_ID.search(text.strip())
        return AssetRef(match["name"], match["version"]) if match else None

    @property
    def uri(self) -> str:
        """The form Azure ML's SDK and YAML take: ``azureml:<name>:<version>``."""
        return f"{PREFIX}{self.name}:{self.version}"

    def __str__(self) -> str:
        return f"{self.name}:{self.version}"


def registry_model(registry: str, name: str, version: str) -> str:
    """How any workspace refers to a model version kept in an Azure ML registry."""
    return f"azureml://registries/{registry}/models/{name}/versions/{version}"

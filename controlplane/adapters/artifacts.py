"""Where the control plane keeps files for people: drift reports and labelling exports.

``CONTROLPLANE_ARTIFACTS`` is a local directory (the embedded default) or an https URL of a blob
container (in Azure, reached with the app's managed identity). Names are relative paths such as
``reports/churn-green-491234.0.html``.
"""
from __future__ import annotations

import re
from pathlib import Path

from controlplane.adapters.identity import app_credential
from controlplane.domain.errors import PermanentError, TransientError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")


def check_name(name: str) -> str:
    if not _NAME.match(name) or ".." in name:
        raise PermanentError(f"artifact {name!r}", "not a plain relative path")
    return name


class LocalArtifacts:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def save(self, name: str, data: bytes, content_type: str) -> str:
        path = self.root / check_name(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return str(path)

    def load(self, name: str) -> bytes | None:
        path = self.root / check_name(name)
        return path.read_bytes() if path.is_file() else None


class BlobArtifacts:
    def __init__(self, container_url: str, credential=None) -> None:
        self.container_url = container_url.rstrip("/")
        self._credential = credential

    def _blob(self, name: str):
        from azure.storage.blob import BlobClient

        return BlobClient.from_blob_url(f"{self.container_url}/{check_name(name)}",
                                        credential=self._credential or app_credential())

    def save(self, name: str, data: bytes, content_type: str) -> str:
        from azure.core.exceptions import AzureError
        from azure.storage.blob import ContentSettings

        blob = self._blob(name)
        try:
            blob.upload_blob(data, overwrite=True, content_settings=ContentSettings(content_type=content_type))
        except AzureError as error:
            raise TransientError(f"artifact {name}", str(error)) from error
        return blob.url

    def load(self, name: str) -> bytes | None:
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        try:
            return self._blob(name).download_blob().readall()
        except ResourceNotFoundError:
            return None
        except AzureError as error:
            raise TransientError(f"artifact {name}", str(error)) from error


def artifacts_for(location: str):
    return BlobArtifacts(location) if location.startswith("https://") else LocalArtifacts(location)

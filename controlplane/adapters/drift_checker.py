"""The ``DriftChecker`` port on the Evidently engine (``controlplane.drift``), with reference data
cached per process and HTML reports kept as artifacts."""
from __future__ import annotations

import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from controlplane.domain.policy import DriftPolicy


class EvidentlyDriftChecker:
    name = "evidently"

    def __init__(self, artifacts, public_url: str = "", base: str | Path = ".", gateway=None,
                 download=None) -> None:
        from controlplane.drift import ReferenceCache

        self._artifacts = artifacts
        self._public_url = public_url.rstrip("/")
        self._base = Path(base)  # relative reference paths are read from beside the policy file
        self._references = ReferenceCache()
        self._gateway = gateway  # resolves azureml:<data asset>:<version> references
        self._download = download or _download_blob
        self._scratch = tempfile.TemporaryDirectory(prefix="controlplane-references-")

    def reference(self, policy: DriftPolicy):
        source = policy.reference
        if not source.startswith(("azureml:", "https://", "http://", "/")):
            source = str(self._base / source)
        return self._references.load(source, loader_for_azureml=self._asset_file)

    def _asset_file(self, source: str) -> str:
        """A local copy of a data asset's file (the cache reads it once per asset version)."""
        from controlplane.domain.errors import PermanentError

        _, name, version = source.split(":", 2)
        if self._gateway is None or not hasattr(self._gateway, "data_asset_url"):
            raise PermanentError(source, "data assets are read with CONTROLPLANE_DISPATCH=azureml only")
        url = self._gateway.data_asset_url(name, version)
        suffix = ".parquet" if url.split("?")[0].endswith(".parquet") else ".csv"
        path = Path(self._scratch.name) / f"{name}-{version}{suffix}"
        path.write_bytes(self._download(url))
        return str(path)

    def check(self, rows: list[dict[str, Any]], policy: DriftPolicy):
        from controlplane.drift import check_drift

        return check_drift(rows, self.reference(policy), policy.settings())

    def render(self, rows: list[dict[str, Any]], policy: DriftPolicy, name: str,
               window: Mapping[str, Any] | None = None) -> str:
        """Render the full report and keep it as ``reports/<name>.html``; the URL people open. With the
        ``window`` (its model, deployment, bucket, part, span) the report opens with a header naming it."""
        from controlplane.drift import render_report

        about = None if window is None else {**window, "made_at": datetime.now(UTC)}
        with tempfile.TemporaryDirectory() as scratch:
            path = render_report(rows, self.reference(policy), policy.settings(), Path(scratch) / "report.html",
                                 about=about)
            self._artifacts.save(f"reports/{name}.html", path.read_bytes(), "text/html")
        return f"{self._public_url}/api/reports/{name}"


def _download_blob(url: str) -> bytes:
    """A blob's bytes, read with the app's managed identity (Storage Blob Data Reader on the datastore)."""
    from azure.core.exceptions import AzureError
    from azure.storage.blob import BlobClient

    from controlplane.adapters.identity import app_credential
    from controlplane.domain.errors import TransientError

    try:
        return BlobClient.from_blob_url(url, credential=app_credential()).download_blob().readall()
    except AzureError as error:
        raise TransientError(f"reference {url}", str(error)) from error

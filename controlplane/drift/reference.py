"""Reference data for drift checks, loaded once per process and version.

Sources: a local ``.csv`` / ``.csv.gz`` / ``.parquet`` file or a folder of them; an ``https://`` blob URL
(azure-storage-blob with ``DefaultAzureCredential``, or the SAS in the URL); or ``azureml:name:version``, resolved
to a local path by a callable the gateway adapter provides. Parquet needs pyarrow (or fastparquet).

A cached frame is reused while its version key is unchanged: a file's (mtime, size), a blob's ETag, a data
asset's version (immutable). Frames are shared between callers: treat them as read-only.
"""
from __future__ import annotations

import importlib.util
import io
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from controlplane.domain.errors import ControlPlaneError
from controlplane.domain.refs import PREFIX, AssetRef
from controlplane.drift.errors import ReferenceLoadError, ReferenceUnreachable

if TYPE_CHECKING:
    import pandas as pd

AzureMLLoader = Callable[[str], "str | os.PathLike[str]"]
BlobClientFactory = Callable[[str], Any]

_SUFFIXES = (".parquet", ".csv", ".csv.gz")


def _format(name: str) -> str | None:
    lowered = name.lower()
    for suffix in _SUFFIXES:
        if lowered.endswith(suffix):
            return suffix
    return None


def _parquet_engine(source: str) -> None:
    if importlib.util.find_spec("pyarrow") is None and importlib.util.find_spec("fastparquet") is None:
        raise ReferenceLoadError(source, "reading parquet needs pyarrow (pip install pyarrow); csv needs nothing more")


def _read(source: str, data: str | Path | bytes, fmt: str) -> pd.DataFrame:
    """Parse one file (a path, or the bytes of a download) as ``fmt``."""
    import pandas as pd

    handle = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        if fmt == ".parquet":
            _parquet_engine(source)
            return pd.read_parquet(handle)
        return typed(pd.read_csv(handle, compression="gzip" if fmt == ".csv.gz" else "infer", dtype=str,
                                 keep_default_na=True))
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
        raise ReferenceLoadError(source, f"not found: {exc}") from exc
    except PermissionError as exc:
        raise ReferenceLoadError(source, f"not readable: {exc}") from exc
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ReferenceLoadError(source, f"cannot be parsed as {fmt}: {exc}") from exc
    except OSError as exc:  # I/O errors on mounted storage may pass
        raise ReferenceUnreachable(source, f"read failed: {exc}") from exc


def typed(frame: pd.DataFrame) -> pd.DataFrame:
    """A csv read as text, typed column by column: a column is numeric when every value is a number and none
    is an identifier written with leading zeros (``"02134"``); otherwise it stays text, as written. The
    schema (column -> ``"numeric"`` or ``"text"``) is kept in ``frame.attrs["schema"]``."""
    import pandas as pd

    schema = {}
    for name in frame.columns:
        column = frame[name]
        text = column.dropna().str.strip()
        numbers = pd.to_numeric(text, errors="coerce")
        identifier = text.str.match(r"^[+-]?0[0-9]").any()
        if len(text) and not numbers.isna().any() and not identifier:
            frame[name] = pd.to_numeric(column, errors="coerce")
            schema[name] = "numeric"
        else:
            schema[name] = "text"
    frame.attrs["schema"] = schema
    return frame


def _local_files(source: str, path: Path) -> list[Path]:
    try:
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and _format(p.name))
            formats = {_format(p.name) == ".parquet" for p in files}
            if not files:
                raise ReferenceLoadError(source, f"folder {path} holds no .csv or .parquet file")
            if len(formats) > 1:
                raise ReferenceLoadError(source, f"folder {path} mixes csv and parquet files")
            return files
        if not path.exists():
            raise ReferenceLoadError(source, f"file {path} does not exist")
    except OSError as exc:
        raise ReferenceLoadError(source, f"cannot be listed: {exc}") from exc
    if _format(path.name) is None:
        raise ReferenceLoadError(source, f"unsupported file type {path.name!r}; use .csv, .csv.gz or .parquet")
    return [path]


def _local_version(source: str, files: list[Path]) -> tuple:
    try:
        return tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files)
    except FileNotFoundError as exc:
        raise ReferenceLoadError(source, f"disappeared while loading: {exc}") from exc
    except OSError as exc:
        raise ReferenceLoadError(source, f"cannot be read: {exc}") from exc


def _read_local(source: str, files: list[Path]) -> pd.DataFrame:
    import pandas as pd

    frames = [_read(source, path, _format(path.name) or "") for path in files]
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def _azure_error(source: str, exc: Exception) -> ControlPlaneError:
    """Map an azure-core exception: network, throttling, timeouts and 5xx may pass; the rest will not."""
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ResourceNotFoundError,
        ServiceRequestError,
        ServiceResponseError,
    )

    if isinstance(exc, ResourceNotFoundError):
        return ReferenceLoadError(source, "blob not found")
    if isinstance(exc, ClientAuthenticationError):
        return ReferenceLoadError(source, f"access refused: {exc.message or exc}")
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return ReferenceUnreachable(source, f"network error: {exc}")
    if isinstance(exc, HttpResponseError):
        status = exc.status_code or 0
        if status in (408, 429) or status >= 500 or status == 0:
            return ReferenceUnreachable(source, f"blob service answered {status or 'nothing'}: {exc.message}")
        return ReferenceLoadError(source, f"blob service refused ({status}): {exc.message}")
    if isinstance(exc, ConnectionError | TimeoutError):
        return ReferenceUnreachable(source, f"network error: {exc}")
    return ReferenceLoadError(source, f"{type(exc).__name__}: {exc}")


class ReferenceCache:
    """Per-process, thread-safe cache of reference frames keyed by (source, version key).

    ``blob_client_factory(url)`` builds the blob client (default: ``BlobClient.from_blob_url`` with the URL's
    SAS or one shared ``DefaultAzureCredential``). ``max_entries`` bounds the number of sources kept.
    """

    def __init__(self, *, blob_client_factory: BlobClientFactory | None = None, max_entries: int = 16) -> None:
        self._factory = blob_client_factory
        self._max_entries = max_entries
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[Any, pd.DataFrame]] = OrderedDict()
        self._loading: dict[tuple[str, Any], threading.Lock] = {}
        self._credential: Any = None
        self.reads = 0  # how many times a source was actually read (cache misses)

    def load(self, source: str, loader_for_azureml: AzureMLLoader | None = None) -> pd.DataFrame:
        """The reference frame of ``source``; read again only when its version key changed."""
        if not isinstance(source, str) or not source.strip():
            raise ReferenceLoadError(str(source), "source must be a non-empty string")
        source = source.strip()
        if source.startswith("azureml:"):
            version = self._asset_version(source)
            return self._cached(source, version, lambda: self._read_asset(source, loader_for_azureml))
        if source.startswith(("https://", "http://")):
            return self._load_blob(source)
        files = _local_files(source, Path(source).expanduser())
        return self._cached(source, _local_version(source, files), lambda: _read_local(source, files))

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _cached(self, source: str, version: Any, read: Callable[[], pd.DataFrame]) -> pd.DataFrame:
        with self._lock:
            entry = self._entries.get(source)
            if entry is not None and entry[0] == version:
                self._entries.move_to_end(source)
                return entry[1]
            gate = self._loading.setdefault((source, version), threading.Lock())
        with gate:  # one reader per (source, version); the others wait and take its result
            with self._lock:
                entry = self._entries.get(source)
                if entry is not None and entry[0] == version:
                    return entry[1]
            try:
                frame = read()
            finally:
                with self._lock:
                    self._loading.pop((source, version), None)
            with self._lock:
                self.reads += 1
                self._entries[source] = (version, frame)
                self._entries.move_to_end(source)
                while len(self._entries) > self._max_entries:
                    self._entries.popitem(last=False)
            return frame

    @staticmethod
    def _asset_version(source: str) -> str:
        ref = AssetRef.parse(source) if source.startswith(PREFIX) else None
        if ref is None or ref.version.lower() == "latest":
            raise ReferenceLoadError(source, "pin a data asset version (labels such as latest are not cached)"
                                     if "@" in source or ref is not None else "expected azureml:<name>:<version>")
        return ref.version

    @staticmethod
    def _read_asset(source: str, loader: AzureMLLoader | None) -> pd.DataFrame:
        if loader is None:
            raise ReferenceLoadError(source, "an azureml: source needs loader_for_azureml (the gateway adapter's)")
        try:
            path = loader(source)
        except ControlPlaneError:
            raise
        except (ConnectionError, TimeoutError) as exc:
            raise ReferenceUnreachable(source, f"resolving the data asset failed: {exc}") from exc
        except Exception as exc:
            raise ReferenceLoadError(source, f"resolving the data asset failed: {type(exc).__name__}: {exc}") from exc
        return _read_local(source, _local_files(source, Path(path)))

    def _client(self, url: str) -> Any:
        if self._factory is not None:
            return self._factory(url)
        from azure.storage.blob import BlobClient

        if "sig=" in urlparse(url).query:
            return BlobClient.from_blob_url(url)
        with self._lock:
            if self._credential is None:
                from azure.identity import DefaultAzureCredential

                self._credential = DefaultAzureCredential()
            credential = self._credential
        return BlobClient.from_blob_url(url, credential=credential)

    def _load_blob(self, url: str) -> pd.DataFrame:
        fmt = _format(urlparse(url).path)
        if fmt is None:
            raise ReferenceLoadError(url, "unsupported blob type; the blob name must end in .csv, .csv.gz or .parquet")
        try:
            client = self._client(url)
            etag = client.get_blob_properties().etag
        except ControlPlaneError:
            raise
        except Exception as exc:
            raise _azure_error(url, exc) from exc

        def read() -> pd.DataFrame:
            try:
                data = client.download_blob(etag=etag, match_condition=_if_not_modified()).readall()
            except Exception as exc:
                from azure.core.exceptions import ResourceModifiedError

                if isinstance(exc, ResourceModifiedError):  # changed between the two calls
                    raise ReferenceUnreachable(url, "blob changed while it was read; retry") from exc
                raise _azure_error(url, exc) from exc
            return _read(url, bytes(data), fmt)

        return self._cached(url, etag, read)


def _if_not_modified() -> Any:
    from azure.core import MatchConditions

    return MatchConditions.IfNotModified

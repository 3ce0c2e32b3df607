"""The app's Azure identity, and SDK clients built on first use.

One ``DefaultAzureCredential`` serves every adapter, so the process keeps one token cache (the
managed identity in Azure, the developer's login locally). Clients are built when first needed,
never at import (cold start), and reused.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_credential: Any = None


def app_credential() -> Any:
    global _credential
    with _lock:
        if _credential is None:
            from azure.identity import DefaultAzureCredential

            _credential = DefaultAzureCredential()
        return _credential


class Lazy(Generic[T]):
    """A value built by ``build`` on first ``get()`` and reused; thread-safe."""

    def __init__(self, build: Callable[[], T]) -> None:
        self._build = build
        self._value: T | None = None
        self._lock = threading.Lock()

    def get(self) -> T:
        with self._lock:
            if self._value is None:
                self._value = self._build()
            return self._value

"""Errors of the drift-check engine, placed in the control plane's exception tree.

::

    PermanentError
    ├── DriftConfigError       the settings or the data do not fit (names the column or setting)
    └── ReferenceLoadError     a reference source is missing, unreadable or unsupported (names the source)
    TransientError
    └── ReferenceUnreachable   the store holding a reference failed for now (names the source)
"""
from __future__ import annotations

from controlplane.errors import PermanentError, TransientError


class DriftConfigError(PermanentError):
    """A drift setting is invalid, or the data lacks or mistypes a configured column; ``name`` names it."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"drift {name!r}: {reason}")


class ReferenceLoadError(PermanentError):
    """The reference data cannot be read from ``source`` however often it is tried."""

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"reference {source}: {reason}")


class ReferenceUnreachable(TransientError):
    """The service holding the reference failed in a way a retry may fix (network, throttling, 5xx)."""

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"reference {source}: {reason}")

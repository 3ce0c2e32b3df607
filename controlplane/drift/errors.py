"""Errors of reading reference data, placed in the control plane's exception tree.

::

    PermanentError
    └── ReferenceLoadError     a reference source is missing, unreadable or unsupported (names the source)
    TransientError
    └── ReferenceUnreachable   the store holding a reference failed for now (names the source)
"""
from __future__ import annotations

from controlplane.domain.errors import PermanentError, TransientError


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

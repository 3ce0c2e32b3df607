"""Errors of reading reference data (defined with the rest of the tree in ``controlplane.domain.errors``).

::

    PermanentError
    └── ReferenceLoadError     a reference source is missing, unreadable or unsupported (subject: the source)
    TransientError
    └── ReferenceUnreachable   the store holding a reference failed for now (subject: the source)
"""
from __future__ import annotations

from controlplane.domain.errors import ReferenceLoadError, ReferenceUnreachable

__all__ = ["ReferenceLoadError", "ReferenceUnreachable"]

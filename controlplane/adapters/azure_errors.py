"""Azure SDK errors translated into the control plane's errors, at the adapter boundary only.

Not found -> ``NotFound``; throttling (408, 429), 5xx and failures without a response (connection refused,
reset, timed out) -> ``TransientError``; authentication, authorisation, validation -> ``GatewayError``. A 409
is transient where the operation says so (an endpoint busy with another operation) and permanent elsewhere.
"""
from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from controlplane.domain.errors import ControlPlaneError, TransientError
from controlplane.ports.gateway import GatewayError, NotFound

_TRANSIENT_STATUS = frozenset({408, 429})


def reason_of(exc: BaseException) -> str:
    error = getattr(exc, "error", None)
    if error is not None and getattr(error, "code", None):
        text = f"{error.code}: {error.message}"
    else:
        text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())[:500]


def _wire_errors() -> tuple[type[BaseException], ...]:
    """A request that failed with a response (HTTP status) or without one (connection, timeout)."""
    from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

    return HttpResponseError, ServiceRequestError, ServiceResponseError


def _azure_cause(exc: BaseException) -> BaseException | None:
    """The failed request behind an azure-ai-ml exception: the SDK wraps some of them in its own."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, _wire_errors()):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def translate(operation: str, exc: BaseException, conflict_is_transient: bool = False) -> ControlPlaneError | None:
    """The control-plane error for an Azure SDK exception, or None when it is not one this boundary owns."""
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

    if isinstance(exc, _wire_errors()):
        cause: BaseException | None = exc
    else:
        # Looked up, not imported: classifying another SDK's error must not pay for importing azure.ai.ml.
        sdk_errors = sys.modules.get("azure.ai.ml.exceptions")
        if sdk_errors is None or not isinstance(exc, sdk_errors.MlException):
            return None
        cause = _azure_cause(exc)
        if cause is None:  # a local validation or configuration error
            return GatewayError(operation, reason_of(exc))
    if not isinstance(cause, HttpResponseError):  # no response at all: connection refused, reset, timed out
        return TransientError(operation, f"{type(cause).__name__}: {reason_of(cause)}")
    status = cause.status_code
    if status == 404 or isinstance(cause, ResourceNotFoundError):
        return NotFound(operation, reason_of(cause), status)
    if (status in _TRANSIENT_STATUS or (status is not None and status >= 500)
            or (status == 409 and conflict_is_transient)):
        return TransientError(operation, f"HTTP {status}: {reason_of(cause)}")
    # 400, 401, 403, 409, 412 ... and credential failures (ClientAuthenticationError without a response)
    return GatewayError(operation, reason_of(cause), status)


@contextmanager
def azure_errors(operation: str, conflict_is_transient: bool = False) -> Iterator[None]:
    """Translate Azure SDK exceptions raised inside the block into the control plane's errors."""
    try:
        yield
    except ControlPlaneError:
        raise
    except Exception as exc:
        mapped = translate(operation, exc, conflict_is_transient)
        if mapped is None:
            raise
        raise mapped from exc

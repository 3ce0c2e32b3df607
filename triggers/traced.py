"""Every function runs inside ``bootstrap.invocation``: telemetry installed on the first, and a span per invocation
named after the function."""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)


def traced(trigger: F) -> F:
    @functools.wraps(trigger)
    def invoked(*args, **kwargs):
        from controlplane import bootstrap

        with bootstrap.invocation(trigger.__name__):
            return trigger(*args, **kwargs)

    return invoked  # type: ignore[return-value]

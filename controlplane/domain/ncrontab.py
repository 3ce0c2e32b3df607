"""Six-field NCRONTAB expressions (``sec min hour day month day-of-week``), as Azure Functions timers
use them, for the local host's scheduler: ``*``, ``*/n``, ``a-b``, ``a-b/n`` and lists."""
from __future__ import annotations

from datetime import datetime

_FIELDS = (("second", 0, 59), ("minute", 0, 59), ("hour", 0, 23), ("day", 1, 31), ("month", 1, 12),
           ("day-of-week", 0, 6))


class Schedule:
    def __init__(self, expression: str) -> None:
        parts = expression.split()
        if len(parts) != 6:
            raise ValueError(f"NCRONTAB needs 6 fields (sec min hour day month dow), got {expression!r}")
        self.expression = expression
        self._allowed = [_parse(part, name, low, high) for part, (name, low, high) in zip(parts, _FIELDS, strict=True)]

    def matches(self, moment: datetime) -> bool:
        values = (moment.second, moment.minute, moment.hour, moment.day, moment.month, moment.isoweekday() % 7)
        return all(value in allowed for value, allowed in zip(values, self._allowed, strict=True))


def _parse(part: str, name: str, low: int, high: int) -> frozenset[int]:
    allowed: set[int] = set()
    for item in part.split(","):
        span, _, step_text = item.partition("/")
        try:
            step = int(step_text) if step_text else 1
            if span == "*":
                first, last = low, high
            elif "-" in span:
                first, last = (int(x) for x in span.split("-", 1))
            else:
                first = last = int(span)
                if step_text:
                    last = high
        except ValueError:
            raise ValueError(f"bad {name} field {part!r}") from None
        if step < 1 or not low <= first <= last <= high:
            raise ValueError(f"{name} field {part!r} is outside {low}-{high}")
        allowed.update(range(first, last + 1, step))
    return frozenset(allowed)

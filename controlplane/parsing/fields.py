"""A case-insensitive, path-tracking reader over one JSON object.

Azure sources disagree on key casing (``ModelName`` vs ``modelName``) and on types (a version is a
number in the documentation and a string from the SDK). ``Fields`` hides the first and normalises the
second, and every error it raises names the full path of the field it was reading.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from controlplane.errors import InvalidEvent

_MISSING = object()


def type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def parse_json(raw: bytes | str, path: str = "$") -> Any:
    """Decode UTF-8 JSON bytes or text, naming ``path`` and the position of a syntax error."""
    try:
        return json.loads(raw.decode("utf-8-sig") if isinstance(raw, bytes) else raw)
    except UnicodeDecodeError as exc:
        raise InvalidEvent(path, f"body is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise InvalidEvent(path, f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None


def parse_time(value: Any, path: str) -> datetime:
    """An ISO 8601 timestamp (or an aware datetime) as an aware UTC datetime."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        if len(text) == 20 and text[-1] in "Zz" and text[10] == "T":  # the common "2026-11-22T10:00:00Z"
            try:
                return datetime.fromisoformat(text[:-1]).replace(tzinfo=UTC)
            except ValueError:
                pass
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        # Azure often sends 7 fractional digits; Python accepts at most 6.
        head, dot, tail = text.partition(".")
        if dot:
            digits = len(tail) - len(tail.lstrip("0123456789"))
            if digits > 6:
                tail = tail[:6] + tail[digits:]
            text = f"{head}.{tail}"
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise InvalidEvent(path, f"expected an ISO 8601 timestamp, got {value!r}") from None
    else:
        raise InvalidEvent(path, f"expected an ISO 8601 timestamp, got {type_name(value)}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # Azure omits the offset only for UTC
    return moment.astimezone(UTC)


class Fields:
    """Read typed values out of one JSON object; ``path`` is where the object sits in the payload."""

    __slots__ = ("path", "_raw", "_by_lower")

    def __init__(self, raw: Any, path: str = "$") -> None:
        if not isinstance(raw, Mapping):
            raise InvalidEvent(path, f"expected an object, got {type_name(raw)}")
        self.path = path
        self._raw = raw
        self._by_lower = {str(key).lower(): key for key in raw}

    def _child_path(self, key: str) -> str:
        return key if self.path == "$" else f"{self.path}.{key}"

    def _find(self, names: tuple[str, ...]) -> tuple[str, Any]:
        for name in names:
            key = self._by_lower.get(name.lower())
            if key is not None and self._raw[key] is not None:
                return self._child_path(str(key)), self._raw[key]
        return self._child_path(names[0]), _MISSING

    def as_dict(self) -> dict[str, Any]:
        return dict(self._raw)

    def path_of(self, *names: str) -> str:
        """The path of the first of ``names`` present, as spelled in the payload."""
        return self._find(names)[0]

    def has(self, *names: str) -> bool:
        return self._find(names)[1] is not _MISSING

    def raw(self, *names: str, default: Any = _MISSING) -> Any:
        path, value = self._find(names)
        if value is _MISSING:
            if default is _MISSING:
                raise InvalidEvent(path, "required field is missing")
            return default
        return value

    def text(self, *names: str, default: Any = _MISSING) -> str:
        path, value = self._find(names)
        if value is _MISSING:
            if default is _MISSING:
                raise InvalidEvent(path, "required field is missing")
            return default
        if not isinstance(value, str):
            raise InvalidEvent(path, f"expected a string, got {type_name(value)} {value!r:.60}")
        if default is _MISSING and not value.strip():
            raise InvalidEvent(path, "must not be empty")
        return value

    def version(self, *names: str) -> str:
        """A version: a non-empty string, or an integer as the documentation's payloads send it."""
        path, value = self._find(names)
        if value is _MISSING:
            raise InvalidEvent(path, "required field is missing")
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise InvalidEvent(path, f"expected a version string or integer, got {type_name(value)}")
        text = str(value).strip()
        if not text:
            raise InvalidEvent(path, "must not be empty")
        return text

    def number(self, *names: str, default: Any = _MISSING) -> float:
        """A finite number; numeric strings are accepted because alert thresholds arrive as strings."""
        path, value = self._find(names)
        if value is _MISSING:
            if default is _MISSING:
                raise InvalidEvent(path, "required field is missing")
            return default
        if isinstance(value, bool):
            raise InvalidEvent(path, "expected a number, got bool")
        try:
            number = float(value) if isinstance(value, (int, float, str)) else math.nan
        except ValueError:
            raise InvalidEvent(path, f"expected a number, got {value!r:.60}") from None
        if not math.isfinite(number):
            raise InvalidEvent(path, f"expected a finite number, got {value!r:.60}")
        return number

    def time(self, *names: str, default: Any = _MISSING) -> datetime:
        path, value = self._find(names)
        if value is _MISSING:
            if default is _MISSING:
                raise InvalidEvent(path, "required field is missing")
            return default
        return parse_time(value, path)

    def obj(self, *names: str, required: bool = True) -> Fields:
        path, value = self._find(names)
        if value is _MISSING:
            if required:
                raise InvalidEvent(path, "required field is missing")
            value = {}
        return Fields(value, path)

    def array(self, *names: str, required: bool = True) -> list[tuple[str, Any]]:
        """The items of an array with their paths."""
        path, value = self._find(names)
        if value is _MISSING:
            if required:
                raise InvalidEvent(path, "required field is missing")
            return []
        if not isinstance(value, list):
            raise InvalidEvent(path, f"expected an array, got {type_name(value)}")
        return [(f"{path}[{index}]", item) for index, item in enumerate(value)]

    def string_map(self, *names: str) -> dict[str, str]:
        """A tags/properties object; scalar values are kept as text, missing means empty."""
        path, value = self._find(names)
        if value is _MISSING:
            return {}
        if not isinstance(value, Mapping):
            raise InvalidEvent(path, f"expected an object, got {type_name(value)}")
        result = {}
        for key, item in value.items():
            if isinstance(item, (dict, list)):
                raise InvalidEvent(f"{path}.{key}", f"expected a scalar value, got {type_name(item)}")
            result[str(key)] = "" if item is None else str(item)
        return result

    def json_object(self, *names: str) -> dict[str, Any]:
        """An arbitrary JSON object kept as-is (missing means empty)."""
        path, value = self._find(names)
        if value is _MISSING:
            return {}
        if not isinstance(value, Mapping):
            raise InvalidEvent(path, f"expected an object, got {type_name(value)}")
        return dict(value)

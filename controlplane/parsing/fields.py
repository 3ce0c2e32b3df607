"""Reading JSON from outside: the intake limits, times, and a case-insensitive, path-tracking reader.

Azure sources disagree on key casing (``ModelName`` vs ``modelName``) and on types (a version is a
number in the documentation and a string from the SDK). ``Fields`` hides the first and normalises the
second, and every error it raises names the full path of the field it was reading.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

from controlplane.domain.errors import InvalidEvent

# What intake accepts from outside, in one place. Every JSON document read from a sender goes through
# ``parse_json`` (or ``check_json`` when a host decoded it already), so past these limits a payload is
# refused naming the field, before anything is decided or stored.
MAX_JSON_BYTES = 16 * 1024 * 1024  # one document (a telemetry body, inflated, is at most this too)
MAX_DEPTH = 64  # nested arrays and objects
MAX_STRING_CHARS = 12 * 1024 * 1024  # one string value: room for a 10 MB one (an image in telemetry inputs)
MAX_KEY_CHARS = 1024  # one object key
MAX_INT = 2**64 - 1  # integers must fit the ledger's 64 bits
MIN_INT = -(2**63)
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)  # times outside these are refused: windows, leases and
LATEST = datetime(9000, 1, 1, tzinfo=UTC)  # expiries are computed from them and must not overflow
# What is stored of a decision's texts; longer ones are cut and the record says so.
MAX_STORED_CHARS = 4096  # its reason, and each text of its evidence
MAX_NAME_CHARS = 256  # its event id, event type, model, version and idempotency key

_MISSING = object()


def type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def parse_json(raw: bytes | str, path: str = "$") -> Any:
    """Decode UTF-8 JSON bytes or text within the intake limits; ``InvalidEvent`` names ``path`` or the
    field past a limit, and the position of a syntax error."""
    if len(raw) > MAX_JSON_BYTES:
        raise InvalidEvent(path, f"document of {len(raw)} bytes is over the {MAX_JSON_BYTES}-byte limit")
    try:
        value = json.loads(raw.decode("utf-8-sig") if isinstance(raw, bytes) else raw,
                           parse_constant=_refuse_constant)
    except UnicodeDecodeError as exc:
        raise InvalidEvent(path, f"body is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise InvalidEvent(path, f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except _NotANumber as exc:
        raise InvalidEvent(path, f"{exc} is not a JSON number") from None
    except RecursionError:
        raise InvalidEvent(path, f"nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # an integer past Python's int-string digit limit
        raise InvalidEvent(path, f"a number is too long: {str(exc).split(':')[0]}") from None
    check_json(value, path)
    return value


class _NotANumber(ValueError):
    """NaN, Infinity or -Infinity, which Python's decoder accepts and JSON does not."""


def _refuse_constant(name: str) -> Any:
    raise _NotANumber(name)


def check_json(value: Any, path: str = "$") -> None:
    """Raise ``InvalidEvent`` at the first value past the intake limits: nesting, integer range, non-finite
    numbers, string and key sizes, lone surrogates (which no UTF-8 store can keep)."""
    try:
        if isinstance(value, (Mapping, list, tuple)):
            _check_items(value, 1)
        else:
            _check_scalar(value)
    except _PastLimit as past:
        for key in reversed(past.keys):
            path = child_path(path, key) if isinstance(key, str) else f"{'' if path == '$' else path}[{key}]"
        raise InvalidEvent(path, past.reason) from None


class _PastLimit(Exception):
    """A value past a limit; the keys leading to it are added as the walk unwinds (paths cost only on error)."""

    def __init__(self, reason: str) -> None:
        self.reason, self.keys = reason, []


def _check_items(container: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise _PastLimit(f"nested deeper than {MAX_DEPTH} levels")
    mapping = isinstance(container, Mapping)
    for key, item in (container.items() if mapping else enumerate(container)):
        try:
            if mapping:
                if type(key) is not str:
                    raise _PastLimit(f"expected string keys, got {type_name(key)}")
                _check_text(key, MAX_KEY_CHARS)
            kind = type(item)
            if kind is dict or kind is list:
                _check_items(item, depth + 1)
            elif kind is str:
                if len(item) > 256 or not item.isascii():
                    _check_text(item, MAX_STRING_CHARS)
            elif kind is int:
                if not MIN_INT <= item <= MAX_INT:
                    _check_scalar(item)
            elif kind is float:
                if item - item != 0.0:  # inf or nan
                    _check_scalar(item)
            elif kind is not bool and item is not None:
                if isinstance(item, (Mapping, list, tuple)):
                    _check_items(item, depth + 1)
                else:
                    _check_scalar(item)
        except _PastLimit as past:
            past.keys.append(key)
            raise


def _check_scalar(value: Any) -> None:
    if isinstance(value, str):
        _check_text(value, MAX_STRING_CHARS)
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int):
        if not MIN_INT <= value <= MAX_INT:
            raise _PastLimit(f"integer of {value.bit_length()} bits is outside the 64-bit range")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise _PastLimit(f"expected a finite number, got {value!r}")
    else:
        raise _PastLimit(f"expected a JSON value, got {type_name(value)}")


def _check_text(text: str, limit: int) -> None:
    if len(text) > limit:
        raise _PastLimit(f"text of {len(text)} characters is over the {limit}-character limit")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise _PastLimit(f"lone surrogate {text[exc.start]!r} at character {exc.start}") from None


def child_path(path: str, key: str) -> str:
    """The path of ``key`` in the object at ``path``; a long key is shortened so that paths stay readable."""
    name = key if len(key) <= 64 else f"{key[:64]}…"
    return name if path == "$" else f"{path}.{name}"


def clip(text: str, limit: int = MAX_STORED_CHARS) -> str:
    """``text`` as it may be stored: at most ``limit`` characters, lone surrogates escaped."""
    if len(text) > limit:
        text = text[:limit]
    return text if text.isascii() else text.encode("utf-8", "backslashreplace").decode("utf-8")


def parse_time(value: Any, path: str) -> datetime:
    """An ISO 8601 date and time (or an aware datetime) as an aware UTC datetime.

    An offset is applied and a missing one read as UTC. A date alone, a number (seconds or milliseconds
    since the epoch cannot be told apart) and a moment outside [EARLIEST, LATEST) are refused.
    """
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and value.strip():
        moment = _iso_datetime(value.strip(), value, path)
    else:
        raise InvalidEvent(path, f"expected an ISO 8601 date and time, got {type_name(value)} {value!r:.60}")
    try:
        utc = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (OverflowError, ValueError):
        raise InvalidEvent(path, f"time {_shown(value)} is outside the supported range") from None
    if not EARLIEST <= utc < LATEST:
        raise InvalidEvent(path, f"time {_shown(value)} is outside {EARLIEST.year}..{LATEST.year - 1}")
    return utc


def _iso_datetime(text: str, value: str, path: str) -> datetime:
    if len(text) == 20 and text[-1] in "Zz" and text[10] == "T":  # the common "2026-11-22T10:00:00Z"
        try:
            return datetime.fromisoformat(text[:-1]).replace(tzinfo=UTC)
        except ValueError:
            pass
    if len(text) > 64:
        raise InvalidEvent(path, f"expected an ISO 8601 date and time, got {_shown(value)}")
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
        date.fromisoformat(text)
    except ValueError:
        pass
    else:
        raise InvalidEvent(path, f"expected a date and time, got the date alone {_shown(value)}")
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise InvalidEvent(path, f"expected an ISO 8601 date and time, got {_shown(value)}") from None


def _shown(value: Any) -> str:
    return f"{value!r:.60}"


class Fields:
    """Read typed values out of one JSON object; ``path`` is where the object sits in the payload."""

    __slots__ = ("path", "_raw", "_by_lower")

    def __init__(self, raw: Any, path: str = "$") -> None:
        if not isinstance(raw, Mapping):
            raise InvalidEvent(path, f"expected an object, got {type_name(raw)}")
        self.path = path
        self._raw = raw
        self._by_lower = {str(key).lower(): key for key in raw}

    def _find(self, names: tuple[str, ...]) -> tuple[str, Any]:
        for name in names:
            key = self._by_lower.get(name.lower())
            if key is not None and self._raw[key] is not None:
                return child_path(self.path, str(key)), self._raw[key]
        return child_path(self.path, names[0]), _MISSING

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
        except (ValueError, OverflowError):
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
                raise InvalidEvent(child_path(path, str(key)), f"expected a scalar value, got {type_name(item)}")
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

"""Pages of a list and their continuation tokens.

A store answers one page and, when more follow, the position to go on from: a short string only that store
reads (``Page.after``). People and tools never see it bare: the edge seals it into a continuation token with an
HMAC over the position and the query it belongs to, so a token is opaque, cannot be forged or edited, and is
refused with another query's filters. A refused token is an ``InvalidEvent`` naming the field (an HTTP 400).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from controlplane.domain.errors import InvalidEvent

T = TypeVar("T")
MAX_PAGE = 500  # the largest page the server answers, whatever is asked
FIELD = "continuation"
_MAC_BYTES = 16
_MAX_TOKEN_CHARS = 2_000


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    after: str | None = None  # the store's position after the last item; None on the last page


def bounded(limit: int) -> int:
    return max(1, min(int(limit), MAX_PAGE))


def seal(key: bytes, after: str | None, query: Mapping[str, Any]) -> str | None:
    """The continuation token for ``after`` within ``query`` (None when there is no next page)."""
    if after is None:
        return None
    payload = json.dumps([after, _fingerprint(query)], separators=(",", ":")).encode()
    mac = hmac.new(key, payload, hashlib.sha256).digest()[:_MAC_BYTES]
    return base64.urlsafe_b64encode(mac + payload).decode().rstrip("=")


def unseal(key: bytes, token: str | None, query: Mapping[str, Any]) -> str | None:
    """The store position a token carries, after checking it was sealed here for this very query."""
    if token is None or token == "":
        return None
    try:
        if len(token) > _MAX_TOKEN_CHARS:
            raise ValueError("too long")
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        mac, payload = raw[:_MAC_BYTES], raw[_MAC_BYTES:]
        if not hmac.compare_digest(mac, hmac.new(key, payload, hashlib.sha256).digest()[:_MAC_BYTES]):
            raise ValueError("bad signature")
        after, fingerprint = json.loads(payload)
    except (ValueError, TypeError) as exc:
        raise InvalidEvent(FIELD, "not a continuation token this server issued") from exc
    if fingerprint != _fingerprint(query) or not isinstance(after, str):
        raise InvalidEvent(FIELD, "the token belongs to a query with other filters")
    return after


def refused(reason: str = "not a position of this list") -> InvalidEvent:
    """What a store raises for a position it cannot read (a token sealed elsewhere, or a ledger moved)."""
    return InvalidEvent(FIELD, reason)


def _fingerprint(query: Mapping[str, Any]) -> str:
    text = json.dumps({k: v for k, v in sorted(query.items()) if v not in (None, (), [], "")}, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]

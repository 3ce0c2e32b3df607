"""Entra ID token validation for Azure Monitor's secure webhook (``POST /api/alerts``).

An action group with "secure webhook" enabled sends ``Authorization: Bearer <JWT>``, a token Microsoft Entra ID
issues for our app registration, carrying the app role ``ActionGroupsSecureWebhook``. ``validate`` checks, in order:

1. the header is ``Bearer <token>`` and the token is a well-formed JWT;
2. the algorithm is RS256 (never ``none``, HS256 or anything else) and the header names a key id (``kid``);
3. the signature verifies against that key from the tenant's signing keys (JWKS at
   ``{authority}/{tenant}/discovery/v2.0/keys``, which signs both v1 and v2 tokens);
4. ``exp`` is present and not passed, and ``nbf`` (if present) has been reached, both with 60 s of leeway,
   measured by the injected clock;
5. the issuer is the tenant's v1 (``https://sts.windows.net/{tenant}/``) or v2
   (``https://login.microsoftonline.com/{tenant}/v2.0``) issuer;
6. the audience is exactly the configured one (the app ID URI or client id);
7. the ``roles`` claim holds ``ActionGroupsSecureWebhook``.

Failures 1-6 raise ``Unauthorized``, failure 7 ``Forbidden``; each reason names the check and
never echoes the token. Signing keys are fetched on first use and cached for ``keys_ttl_seconds``. A token whose
``kid`` is unknown (Entra rotated its keys) triggers one refetch, but such refetches happen at most once a minute so
forged kids cannot hammer Entra. If a refresh fails the cached keys stay in use (and the fetch is retried after
``FAILED_FETCH_RETRY_SECONDS``); with nothing cached a failed fetch raises ``TransientError`` so the sender retries.
A lock guards the cache, and is held during a fetch so concurrent callers wait for one fetch instead of stampeding.

PyJWT and cryptography are imported on first use, not at import (cold start).
"""
from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from controlplane.domain.errors import Forbidden, TransientError, Unauthorized

ROLE = "ActionGroupsSecureWebhook"
HEADER = "Authorization"  # the header a token is read from: what a refusal is about
ALGORITHM = "RS256"
LEEWAY_SECONDS = 60
UNKNOWN_KID_REFETCH_SECONDS = 60
FAILED_FETCH_RETRY_SECONDS = 10
MAX_JWKS_BYTES = 1 << 20

logger = logging.getLogger(__name__)


# The v1.0 token issuer of each cloud's authority (v2.0 tokens are issued by the authority itself).
_V1_ISSUERS = {"login.microsoftonline.com": "https://sts.windows.net",
               "login.microsoftonline.us": "https://sts.windows.net",
               "login.chinacloudapi.cn": "https://sts.chinacloudapi.cn"}


def issuers(authority: str, tenant_id: str) -> tuple[str, ...]:
    """The issuers of the tenant's tokens in the authority's cloud: v1.0 where the cloud is known, then v2.0."""
    host = authority.split("://", 1)[-1].split("/", 1)[0].lower()
    v1 = _V1_ISSUERS.get(host)
    return ((f"{v1}/{tenant_id}/",) if v1 else ()) + (f"{authority}/{tenant_id}/v2.0",)


class SecureWebhookValidator:
    """Validates the bearer tokens Azure Monitor's secure webhook sends for one tenant and audience."""

    def __init__(self, tenant_id: str, audience: str, *, authority: str = "https://login.microsoftonline.com",
                 keys_ttl_seconds: float = 3600, clock: Callable[[], float] = time.time, timeout: float = 5.0,
                 issuers_of: tuple[str, ...] | None = None) -> None:
        """``issuers_of`` overrides the issuers derived from ``authority`` (a stand-in authority's tokens)."""
        if not tenant_id or not tenant_id.strip():
            raise ValueError("tenant_id is empty")
        if not audience or not audience.strip():
            raise ValueError("audience is empty")
        self.tenant_id = tenant_id
        self.audience = audience
        authority = authority.rstrip("/")
        self.jwks_url = f"{authority}/{tenant_id}/discovery/v2.0/keys"
        self.issuers = issuers_of or issuers(authority, tenant_id)
        self._keys_ttl = keys_ttl_seconds
        self._clock = clock
        self._timeout = timeout
        self._lock = threading.Lock()
        self._keys: dict[str, Any] | None = None  # kid -> jwt.PyJWK
        self._refresh_at = -math.inf  # when the cached keys are due for a refetch
        self._unknown_kid_refetch_at = -math.inf  # when an unknown kid may next trigger a refetch
        self._last_error: TransientError | None = None

    def validate(self, authorization: str | None) -> dict:
        """Return the verified claims of the bearer token in ``authorization``; raise ``Unauthorized`` if refused."""
        import jwt

        token = _bearer_token(authorization)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise Unauthorized(HEADER, "bearer token is not a well-formed JWT") from None
        alg = header.get("alg")
        if alg != ALGORITHM:
            raise Unauthorized(HEADER, f"token algorithm {_show(alg)} is not {ALGORITHM}")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Unauthorized(HEADER, "token header names no signing key id (kid)")

        key = self._signing_key(kid)
        options = {"verify_exp": False, "verify_nbf": False, "verify_iat": False, "verify_aud": False,
                   "verify_iss": False}  # checked below, against the injected clock and with clear reasons
        try:
            claims = jwt.decode(token, key, algorithms=[ALGORITHM], options=options)
        except jwt.InvalidSignatureError:
            raise Unauthorized(HEADER, f"token signature does not verify with signing key {_show(kid)}") from None
        except jwt.InvalidTokenError as error:
            raise Unauthorized(HEADER, f"token was refused: {error}") from None

        self._check_lifetime(claims)
        issuer = claims.get("iss")
        if issuer not in self.issuers:
            raise Unauthorized(HEADER, f"token issuer {_show(issuer)} is not {' or '.join(map(repr, self.issuers))}")
        audience = claims.get("aud")
        if self.audience not in (audience if isinstance(audience, list) else [audience]):
            raise Unauthorized(HEADER, f"token audience {_show(audience)} is not {self.audience!r}")
        roles = claims.get("roles")
        if not isinstance(roles, list) or ROLE not in roles:
            raise Forbidden(HEADER, f"token does not grant the app role {ROLE!r} (roles: {_show(roles)})")
        return claims

    def _check_lifetime(self, claims: dict) -> None:
        now = self._clock()
        expires = claims.get("exp")
        if not _is_number(expires):
            raise Unauthorized(HEADER, "token has no numeric expiry (exp) claim")
        if expires <= now - LEEWAY_SECONDS:
            raise Unauthorized(HEADER, f"token expired at {_utc(expires)} (leeway {LEEWAY_SECONDS} s)")
        not_before = claims.get("nbf")
        if not_before is None:
            return
        if not _is_number(not_before):
            raise Unauthorized(HEADER, "token's not-before (nbf) claim is not a number")
        if not_before > now + LEEWAY_SECONDS:
            raise Unauthorized(HEADER, f"token is not valid before {_utc(not_before)} (leeway {LEEWAY_SECONDS} s)")

    def _signing_key(self, kid: str) -> Any:
        """The cached key ``kid``, refetching when the cache is due or (rate-limited) when ``kid`` is unknown."""
        with self._lock:
            now = self._clock()
            fetched = now >= self._refresh_at and self._refresh(now)
            if self._keys is None:
                raise TransientError("Entra signing keys", f"unavailable: {self._last_error}")
            key = self._keys.get(kid)
            if key is None and not fetched and now >= self._unknown_kid_refetch_at:
                self._unknown_kid_refetch_at = now + UNKNOWN_KID_REFETCH_SECONDS
                self._refresh(now)
                key = self._keys.get(kid)
        if key is None:
            raise Unauthorized(HEADER, f"token signing key id {_show(kid)} is not among the tenant's signing keys")
        return key

    def _refresh(self, now: float) -> bool:
        """Refetch the keys; on failure keep the cached ones (raising only if there are none). Lock held."""
        try:
            keys = self._fetch()
        except TransientError as error:
            self._last_error = error
            self._refresh_at = max(self._refresh_at, now + FAILED_FETCH_RETRY_SECONDS)  # a fresh cache stays fresh
            if self._keys is None:
                raise
            logger.warning("keeping cached Entra signing keys: %s", error)
            return False
        self._keys = keys
        self._refresh_at = now + self._keys_ttl
        return True

    def _fetch(self) -> dict[str, Any]:
        """Fetch the tenant's JWKS and parse its RSA signing keys by kid; ``TransientError`` if that fails."""
        import http.client
        import urllib.error
        import urllib.request

        import jwt

        request = urllib.request.Request(self.jwks_url, headers={"Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                body = response.read(MAX_JWKS_BYTES)
        except urllib.error.HTTPError as error:
            error.close()  # it holds the response
            raise TransientError(f"signing keys at {self.jwks_url}", f"answered HTTP {error.code}") from error
        except (OSError, http.client.HTTPException) as error:  # URLError, timeouts and refused connections
            raise TransientError(f"signing keys at {self.jwks_url}", f"could not be fetched: {error}") from error
        try:
            document = json.loads(body)
        except ValueError as error:
            raise TransientError(f"signing keys at {self.jwks_url}", "are not JSON") from error
        entries = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise TransientError(f"signing keys at {self.jwks_url}", "have no 'keys' list")

        keys: dict[str, Any] = {}
        for entry in entries:
            if (not isinstance(entry, dict) or entry.get("kty") != "RSA" or entry.get("use", "sig") != "sig"
                    or entry.get("alg", ALGORITHM) != ALGORITHM or not isinstance(entry.get("kid"), str)):
                continue
            try:
                keys[entry["kid"]] = jwt.PyJWK(entry, algorithm=ALGORITHM)
            except jwt.PyJWTError:
                logger.warning("skipping unusable signing key %r from %s", entry["kid"], self.jwks_url)
        if not keys:
            raise TransientError(f"signing keys at {self.jwks_url}", "hold no usable RSA signing key")
        return keys


def _bearer_token(authorization: str | None) -> str:
    if not authorization or not authorization.strip():
        raise Unauthorized(HEADER, "request has no Authorization header")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        shown = f" (got {scheme!r})" if scheme.isalpha() and len(scheme) <= 20 else ""
        raise Unauthorized(HEADER, f"Authorization header does not use the Bearer scheme{shown}")
    token = token.strip()
    if not token:
        raise Unauthorized(HEADER, "Authorization header has an empty Bearer token")
    return token


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _utc(timestamp: float) -> str:
    try:
        return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return str(timestamp)


def _show(value: Any, limit: int = 80) -> str:
    """``repr(value)``, shortened: claims and header fields come from the caller and may be long."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."

"""The HTTP boundary of the real Azure SDKs, for adapter tests: an azure-core transport that answers
from a routing table with documented REST bodies (``tests/azure_responses``) and records each request,
and a credential with a fixed token. No network, no retries, no polling."""
from __future__ import annotations

import base64
import json
import re
import time
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from azure.core.credentials import AccessToken
from azure.core.pipeline.transport import HttpTransport
from azure.core.rest._http_response_impl import HttpResponseImpl

RESPONSES = Path(__file__).parent / "azure_responses"


def body(name: str) -> dict:
    return json.loads((RESPONSES / f"{name}.json").read_text(encoding="utf-8"))


def arm_error(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message, "details": [], "additionalInfo": []}}


@dataclass(frozen=True)
class Sent:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


class AzureTransport(HttpTransport):
    """Answers requests from a routing table (last matching route wins) and records each one."""

    def __init__(self) -> None:
        self.routes: list[tuple[str, re.Pattern, list]] = []
        self.sent: list[Sent] = []

    def on(self, method: str, path: str, *answers: Any) -> AzureTransport:
        """Answer ``method`` on a path ending with ``path`` (a regex) with each answer in turn, the last one for
        good. An answer is a body (200), ``(status, body)`` or an exception to raise."""
        self.routes.append((method, re.compile(f"{path}$"), list(answers)))
        return self

    def send(self, request, **kwargs):
        url = urlparse(request.url)
        content = request.content
        sent = Sent(request.method, unquote(url.path), parse_qs(url.query), dict(request.headers),
                    json.loads(content) if content else None)
        self.sent.append(sent)
        for method, pattern, answers in reversed(self.routes):
            if method == request.method and pattern.search(sent.path):
                answer = answers.pop(0) if len(answers) > 1 else answers[0]
                break
        else:
            answer = (404, arm_error("ResourceNotFound", f"no route for {sent.method} {sent.path}"))
        if isinstance(answer, BaseException):
            raise answer
        status, payload = answer if isinstance(answer, tuple) else (200, answer)
        data = b"" if payload is None else json.dumps(payload).encode()
        response = HttpResponseImpl(request=request, internal_response=BytesIO(data), status_code=status,
                                    reason="", content_type="application/json",
                                    headers={"Content-Type": "application/json", "x-ms-request-id": "test"},
                                    stream_download_generator=None)
        response._content = data
        return response

    def requests(self, method: str | None = None) -> list[Sent]:
        return [s for s in self.sent if method is None or s.method == method]

    def one(self, method: str, path: str) -> Sent:
        matching = [s for s in self.sent if s.method == method and re.search(f"{path}$", s.path)]
        assert len(matching) == 1, [(s.method, s.path) for s in self.sent]
        return matching[0]

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> AzureTransport:
        return self

    def __exit__(self, *args) -> None:
        pass


class FixedCredential:
    """A token credential with a fixed, unsigned JWT (azure-ai-ml decodes, never verifies, the token to read
    its audience and tenant); records the scopes asked for."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)

        def part(claims: dict) -> str:
            return base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()

        audience = scopes[0].removesuffix("/.default") if scopes else ""
        claims = {"aud": audience, "tid": "00000000-aaaa-bbbb-cccc-000000000002", "oid": "controlplane"}
        return AccessToken(f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}.", int(time.time()) + 3600)

"""Shared answers for the HTTP triggers: JSON bodies, errors that name the field, size limits."""
from __future__ import annotations

import json
from typing import Any

import azure.functions as func

MAX_BODY_BYTES = 512 * 1024  # common-alert-schema payloads are at most 256 KB


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body, default=str), status_code=status, mimetype="application/json",
                             headers=headers)


def error_response(status: int, field: str, reason: str, **extra: Any) -> func.HttpResponse:
    headers = {"Retry-After": "30"} if status in (429, 503) else None
    if status == 401:
        headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
    return json_response(status, {"error": {"field": field, "reason": reason}, **extra}, headers)

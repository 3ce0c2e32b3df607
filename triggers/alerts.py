"""``on_alert``: POST /api/alerts, the Azure Monitor action-group webhook (common alert schema).

Answers fast: record and decide here, dispatch later from the outbox. Action groups retry 408,
429, 503 and 504, so a failure of ours (store down, bad setting or policy) answers 503 and the alert
comes again; a bad payload answers 400 naming the field, and is kept as an ``invalid`` decision.
Besides the function key, Entra ID secure-webhook tokens are required when configured: a missing or
invalid token answers 401, a token without the ``ActionGroupsSecureWebhook`` role 403 (nothing recorded).
"""
from __future__ import annotations

import azure.functions as func

from triggers.http import MAX_BODY_BYTES, answers_errors, error_answer, json_response
from triggers.traced import traced

bp = func.Blueprint()


@bp.function_name("on_alert")
@bp.route(route="alerts", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@traced
@answers_errors
def on_alert(req: func.HttpRequest) -> func.HttpResponse:
    from controlplane import bootstrap
    from controlplane.domain.errors import PayloadTooLarge
    from controlplane.handlers.alerts import receive_alert

    services = bootstrap.services()
    if services.alert_auth is not None:
        services.alert_auth.validate(req.headers.get("Authorization"))
    body = req.get_body()
    if len(body) > MAX_BODY_BYTES:
        raise PayloadTooLarge("body", f"{len(body)} bytes exceeds the {MAX_BODY_BYTES}-byte limit")
    receipt = receive_alert(services, body)
    if receipt.error is not None:  # recorded as an invalid decision, and answered naming the field
        return error_answer(receipt.error, decision=receipt.decision.id)
    return json_response(200, {"decision": receipt.decision.to_json()})

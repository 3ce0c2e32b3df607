"""Notifications to people: Microsoft Teams and Slack incoming webhooks, and a generic webhook whose
body is signed (HMAC-SHA256 over ``<timestamp>.<body>``, timestamp in its own header) so receivers
can verify it and reject replays. Webhook URLs come from settings only, never from events."""
from __future__ import annotations

import hashlib
import hmac
import json
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

from controlplane.domain.errors import PermanentError, TransientError
from controlplane.domain.ledger import Task
from controlplane.domain.requests import Notify, parse_request
from controlplane.ports.store import Clock

TIMESTAMP_HEADER = "X-ControlPlane-Timestamp"
SIGNATURE_HEADER = "X-ControlPlane-Signature"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


class WebhookNotifier:
    name = "webhooks"

    def __init__(self, clock: Clock, *, teams_url: str = "", slack_url: str = "", webhook_url: str = "",
                 webhook_secret: str = "", link_for: Callable[[str, str], str] | None = None,
                 sinks_for: Callable[[str], Sequence[str]] | None = None, timeout: float = 10.0) -> None:
        """``sinks_for`` says which sinks a channel's notices go to (the policy's ``notifications``); every
        configured one when it is None."""
        self._clock = clock
        self._sinks_for = sinks_for
        self._teams, self._slack, self._webhook, self._secret = teams_url, slack_url, webhook_url, webhook_secret
        self._link_for = link_for
        self._timeout = timeout

    def dispatch(self, task: Task) -> dict:
        notice = parse_request(task.request, Notify)
        links = self._links(notice)
        text = notice.text + "".join(f"\n{who}: {url}" for who, url in links.items())
        text += f"\ncorrelation id: {task.correlation_id}"
        routed = set(self._sinks_for(notice.channel)) if self._sinks_for else {"teams", "slack", "webhook"}
        configured = [sink for sink, url in (("teams", self._teams), ("slack", self._slack),
                                             ("webhook", self._webhook)) if url]
        sent = []
        if "teams" in routed and self._teams:
            self._post(self._teams, _teams_card(notice.subject, text, links))
            sent.append("teams")
        if "slack" in routed and self._slack:
            self._post(self._slack, {"text": f"*{notice.subject}*\n{text}"})
            sent.append("slack")
        if "webhook" in routed and self._webhook:
            body = json.dumps({**notice.to_json(), "links": links, "task_id": task.id,
                               "correlation_id": task.correlation_id}, separators=(",", ":")).encode()
            timestamp = str(int(self._clock.now().timestamp()))
            self._post(self._webhook, body, {TIMESTAMP_HEADER: timestamp,
                                             SIGNATURE_HEADER: sign(self._secret, timestamp, body)})
            sent.append("webhook")
        unrouted = [sink for sink in configured if sink not in routed]
        return {"sent_to": sent, "links_for": sorted(links),
                **({"not_routed": unrouted, "channel": notice.channel} if unrouted else {})}

    def _links(self, notice: Notify) -> dict[str, str]:
        """One approval link per approver when a review was opened: each carries its own token."""
        if not (self._link_for and notice.review_id and notice.approvers):
            return {}
        return {who: self._link_for(notice.review_id, who) for who in notice.approvers}

    def _post(self, url: str, payload: dict | bytes, headers: dict[str, str] | None = None) -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        request = urllib.request.Request(url, data=body, method="POST",
                                         headers={"Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as reply:
                reply.read()
        except urllib.error.HTTPError as error:
            message = f"answered {error.code}"
            if error.code in (408, 429) or error.code >= 500:
                raise TransientError("webhook", message) from error
            raise PermanentError("webhook", message) from error
        except (urllib.error.URLError, TimeoutError, OSError) as error:
            raise TransientError("webhook", f"unreachable: {error}") from error


def _teams_card(subject: str, text: str, links: dict[str, str]) -> dict[str, Any]:
    """An Adaptive Card message, the format Teams workflow webhooks accept."""
    body: list[dict[str, Any]] = [{"type": "TextBlock", "text": subject, "weight": "Bolder", "wrap": True},
                                  {"type": "TextBlock", "text": text, "wrap": True}]
    actions = [{"type": "Action.OpenUrl", "title": f"Review as {who}", "url": url} for who, url in links.items()]
    card = {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json", "type": "AdaptiveCard",
            "version": "1.4", "body": body, **({"actions": actions} if actions else {})}
    return {"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive",
                                                "content": card}]}

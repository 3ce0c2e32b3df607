"""Publishes decisions as CloudEvents to an Event Grid topic (azure-eventgrid), so Logic Apps and
pipelines can subscribe to what the control plane decides."""
from __future__ import annotations

from typing import Any

from controlplane.adapters.identity import Lazy, app_credential
from controlplane.domain.errors import PermanentError, TransientError
from controlplane.domain.ledger import Task
from controlplane.domain.requests import PublishDecision, parse_request


class EventGridPublisher:
    name = "eventgrid"

    def __init__(self, endpoint: str, key: str = "", credential: Any = None, **client_kwargs: Any) -> None:
        self._endpoint, self._key, self._credential = endpoint, key, credential
        self._client_kwargs = client_kwargs
        self._client = Lazy(self._build)

    def _build(self):
        from azure.eventgrid import EventGridPublisherClient

        credential = self._credential
        if credential is None and self._key:
            from azure.core.credentials import AzureKeyCredential

            credential = AzureKeyCredential(self._key)
        return EventGridPublisherClient(self._endpoint, credential or app_credential(), **self._client_kwargs)

    def dispatch(self, task: Task) -> dict:
        from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError
        from azure.core.messaging import CloudEvent

        request = parse_request(task.request, PublishDecision)
        # The task id: a resend is the same event. The correlation id is an extension attribute, which subscribers
        # filter and route on without reading the data.
        event = CloudEvent(source=request.source, type=request.type, subject=request.subject or None,
                           data=dict(request.data), id=task.id, extensions={"correlationid": task.correlation_id})
        try:
            self._client.get().send(event)
        except (ServiceRequestError, ServiceResponseError) as error:
            raise TransientError("event grid", f"unreachable: {error}") from error
        except HttpResponseError as error:
            if error.status_code in (408, 429) or (error.status_code or 500) >= 500:
                raise TransientError("event grid", f"answered {error.status_code}") from error
            raise PermanentError("event grid", f"refused the event: {error.status_code} {error.reason}") from error
        return {"published": task.id, "type": request.type}

"""``on_registry_event``: Event Grid trigger for Azure Machine Learning events.

Event Grid retries come from the event subscription (retry policy + dead-letter), so a transient
failure is raised; a malformed event is recorded as ``invalid`` and acknowledged.
"""
from __future__ import annotations

from typing import Any

import azure.functions as func

bp = func.Blueprint()


@bp.function_name("on_registry_event")
@bp.event_grid_trigger(arg_name="event")
def on_registry_event(event: func.EventGridEvent) -> None:
    from controlplane import bootstrap
    from handlers.registry import receive_registry_event

    receive_registry_event(bootstrap.services(), envelope(event))


def envelope(event: func.EventGridEvent | func.CloudEvent) -> dict[str, Any]:
    """The binding's typed event back as its schema's JSON envelope, for the strict parser."""
    if isinstance(event, func.CloudEvent):
        return {"specversion": event.specversion, "id": event.id, "source": event.source, "type": event.type,
                "subject": event.subject, "time": event.time, "data": event.get_json()}
    return {"id": event.id, "topic": event.topic, "subject": event.subject, "eventType": event.event_type,
            "eventTime": event.event_time, "data": event.get_json(), "dataVersion": event.data_version}

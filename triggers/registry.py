"""``on_registry_event``: Event Grid trigger for Azure Machine Learning events.

The parameter is annotated ``str``, so the worker hands over each event's JSON text as Event Grid
delivered it (its generic binding) instead of decoding it with ``azure.functions``' Event Grid
converter. That converter raises on values it cannot read (an ``eventTime`` with an offset, say)
before any code of ours runs, and the event would be retried until Event Grid dead-letters it; read
here, such an event is parsed strictly once, in either schema, and kept as an ``invalid`` decision.

Event Grid retries come from the event subscription (retry policy + dead-letter), so a transient
failure is raised; a malformed event is recorded as ``invalid`` and acknowledged.
"""
import azure.functions as func

from triggers.traced import traced

bp = func.Blueprint()


@bp.function_name("on_registry_event")
@bp.event_grid_trigger(arg_name="event")
@traced
def on_registry_event(event: str) -> None:
    from controlplane import bootstrap
    from controlplane.handlers.registry import receive_registry_event

    receive_registry_event(bootstrap.services(), event)

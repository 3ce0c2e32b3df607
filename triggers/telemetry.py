"""``on_telemetry``: Event Hubs trigger (batches) for inference telemetry from scoring scripts.

Bad events are dead-lettered by the handler and the batch goes on; only a transient failure (the
store is down) is raised, so the retry policy below runs and no checkpoint is taken meanwhile.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, List  # noqa: UP035 - the worker refuses PEP 585 ``list[...]`` binding annotations

import azure.functions as func

from triggers.traced import traced

bp = func.Blueprint()


@bp.function_name("on_telemetry")
@bp.retry(strategy="exponential_backoff", max_retry_count="5", minimum_interval="00:00:04",
          maximum_interval="00:15:00")
@bp.event_hub_message_trigger(arg_name="events", connection="TelemetryEventHub",
                              event_hub_name="%TELEMETRY_EVENTHUB_NAME%",
                              consumer_group="%TELEMETRY_CONSUMER_GROUP%",
                              cardinality=func.Cardinality.MANY, data_type=func.DataType.BINARY)
@traced
def on_telemetry(events: List[func.EventHubEvent]) -> None:  # noqa: UP006 - see the import
    from controlplane import bootstrap
    from controlplane.handlers.telemetry import RawTelemetry, receive_telemetry

    if not events:
        return
    metadata = events[0].metadata or {}
    partition = str((metadata.get("PartitionContext") or {}).get("PartitionId", ""))
    properties = metadata.get("PropertiesArray") or [{}] * len(events)
    batch = [
        RawTelemetry(partition=partition, sequence_number=event.sequence_number, enqueued_time=event.enqueued_time,
                     body=event.get_body(), content_encoding=_content_encoding(props))
        for event, props in zip(events, properties, strict=True)
    ]
    receive_telemetry(bootstrap.services(), batch)


def _content_encoding(properties: Mapping[str, Any] | None) -> str | None:
    for key, value in (properties or {}).items():
        if key.lower() in ("content-encoding", "content_encoding", "contentencoding"):
            return str(value)
    return None

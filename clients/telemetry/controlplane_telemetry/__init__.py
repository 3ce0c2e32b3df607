"""Send inference telemetry from an Azure ML scoring script to the MLOps control plane's Event Hub.

See ``sender`` and the package README. Importing needs only the standard library; ``azure-eventhub`` (and
``azure-identity`` for the default credential) are imported when the first batch is sent.
"""
from controlplane_telemetry.sender import (
    MAX_INFLATED_BYTES,
    RecordTooLargeError,
    SendCounts,
    TelemetrySender,
)

__all__ = ["MAX_INFLATED_BYTES", "RecordTooLargeError", "SendCounts", "TelemetrySender"]

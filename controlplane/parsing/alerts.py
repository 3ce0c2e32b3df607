"""Azure Monitor alerts in the common alert schema (metric, log V2, legacy log, activity log, service health)."""
from __future__ import annotations

from typing import Any

from controlplane.domain.errors import InvalidEvent
from controlplane.domain.events import Alert, AlertCondition
from controlplane.parsing.fields import Fields

COMMON_ALERT_SCHEMA = "azureMonitorCommonAlertSchema"
_SEVERITIES = {f"sev{n}": f"Sev{n}" for n in range(5)}
_CONDITIONS = {"fired": "Fired", "resolved": "Resolved"}


def parse_alert(raw: Any) -> Alert:
    """One action-group webhook body as an ``Alert``; raises ``InvalidEvent`` naming the bad field."""
    body = Fields(raw)
    schema = body.text("schemaId")
    if schema != COMMON_ALERT_SCHEMA:
        raise InvalidEvent("schemaId", f"expected {COMMON_ALERT_SCHEMA!r}, got {schema!r}")
    data = body.obj("data")
    essentials = data.obj("essentials")
    context = data.obj("alertContext", required=False)

    severity = essentials.text("severity")
    if severity.lower() not in _SEVERITIES:
        raise InvalidEvent(essentials.path_of("severity"), f"expected Sev0..Sev4, got {severity!r}")
    condition = essentials.text("monitorCondition")
    if condition.lower() not in _CONDITIONS:
        raise InvalidEvent(essentials.path_of("monitorCondition"), f"expected Fired or Resolved, got {condition!r}")
    signal_type = essentials.text("signalType")

    return Alert(
        alert_id=essentials.text("alertId"),
        rule=essentials.text("alertRule"),
        rule_id=essentials.text("alertRuleID", "alertRuleId", default=""),
        severity=_SEVERITIES[severity.lower()],
        signal_type=signal_type,
        monitor_condition=_CONDITIONS[condition.lower()],
        monitoring_service=essentials.text("monitoringService", default=""),
        targets=_strings(essentials, "alertTargetIDs", "alertTargetIds"),
        configuration_items=_strings(essentials, "configurationItems"),
        fired_at=essentials.time("firedDateTime"),
        resolved_at=essentials.time("resolvedDateTime", default=None),
        description=essentials.text("description", default=""),
        conditions=_conditions(signal_type, context),
        custom_properties=data.json_object("customProperties"),
        context=context.as_dict(),
    )


def _strings(fields: Fields, *names: str) -> tuple[str, ...]:
    values = []
    for path, item in fields.array(*names, required=False):
        if not isinstance(item, str):
            raise InvalidEvent(path, "expected a string")
        values.append(item)
    return tuple(values)


def _conditions(signal_type: str, context: Fields) -> tuple[AlertCondition, ...]:
    if context.has("condition"):  # metric alerts and log search alerts V2
        criteria = context.obj("condition").array("allOf")
        return tuple(_criterion(Fields(item, path)) for path, item in criteria)
    if context.has("searchQuery", "SearchQuery"):  # log alerts before V2, PascalCase
        return (AlertCondition(
            metric=context.text("AlertType", default="Number of results"),
            operator=context.text("Operator", default=""),
            threshold=context.number("Threshold", default=None),
            value=context.number("ResultCount", default=None),
            query=context.text("SearchQuery"),
        ),)
    if signal_type.lower() == "activity log":
        properties = context.obj("properties", required=False)
        name = context.text("operationName", default="") or properties.text("title", default="")
        return (AlertCondition(metric=name, operator=context.text("status", default=""), threshold=None,
                               value=None),)
    return ()


def _criterion(item: Fields) -> AlertCondition:
    dimensions = {}
    for path, dimension in item.array("dimensions", required=False):
        pair = Fields(dimension, path)
        dimensions[pair.text("name")] = str(pair.raw("value", default=""))
    return AlertCondition(
        metric=item.text("metricName", default="") or item.text("metricMeasureColumn", default="") or "count",
        operator=item.text("operator", default=""),
        threshold=item.number("threshold", default=None),
        value=item.number("metricValue", default=None),
        namespace=item.text("metricNamespace", default=""),
        aggregation=item.text("timeAggregation", default=""),
        dimensions=dimensions,
        query=item.text("searchQuery", default=""),
    )

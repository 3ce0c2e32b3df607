"""Read side: decisions for people and tools ("why is this model in production?"), and health."""
from __future__ import annotations

from dataclasses import dataclass

from controlplane.errors import ControlPlaneError, InvalidEvent
from controlplane.ledger import Decision
from controlplane.ports import Services

MAX_LIMIT = 500


def parse_limit(text: str | None, default: int = 50) -> int:
    if text is None or text == "":
        return default
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise InvalidEvent("limit", f"expected a whole number from 1 to {MAX_LIMIT}, got {text!r}")
    return int(text)


def list_decisions(services: Services, model: str | None, limit: int) -> list[Decision]:
    return services.store.decisions(model=model or None, limit=limit)


@dataclass(frozen=True)
class Health:
    healthy: bool
    checks: dict[str, str]


def check_health(build_services) -> Health:
    """Build (or reuse) the services and ping the store; a failure is named, never raised."""
    try:
        services = build_services()
    except ControlPlaneError as error:
        return Health(False, {"services": str(error)})
    checks = {"policy": services.policy.version}
    try:
        services.store.ping()
    except ControlPlaneError as error:
        return Health(False, {**checks, "store": str(error)})
    return Health(True, {**checks, "store": f"ok ({services.store.name})"})

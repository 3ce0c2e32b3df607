"""Progressive rollout after a production approval: the durable record, its steps, and the pure
judgment of one step's health.

A rollout moves through ``starting`` -> ``observing`` (one step after another) -> ``completed``, or
ends ``rolled_back`` on bad health; too little traffic to judge ``paused`` it. While an Azure ML operation
it began runs (provisioning the deployment, a traffic change, scaling), it is ``waiting`` on it. It lives in the store
and changes only from the revision it was read at, together with the decision recording the change.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from controlplane.domain.signals import DeploymentHealth


class RolloutState(StrEnum):
    STARTING = "starting"
    OBSERVING = "observing"
    PAUSED = "paused"
    ROLLED_BACK = "rolled_back"
    COMPLETED = "completed"


ACTIVE = (RolloutState.STARTING, RolloutState.OBSERVING)


@dataclass(frozen=True)
class Step:
    kind: str  # mirror | traffic
    percent: int

    def __str__(self) -> str:
        return f"mirror {self.percent}%" if self.kind == "mirror" else f"{self.percent}%"


@dataclass(frozen=True)
class Rollout:
    id: str
    endpoint: str
    model: str | None
    version: str | None
    deployment: str  # the new deployment
    model_ref: str  # azureml:<name>:<version>, or the registry's reference when it was shared to one
    steps: tuple[Step, ...]
    policy: Mapping[str, Any]  # the endpoint's rollout policy when the rollout began
    created_at: datetime
    state: RolloutState = RolloutState.STARTING
    step: int = -1  # index of the step whose traffic is set; -1 before the first
    applied_at: datetime | None = None
    baseline: Mapping[str, int] = field(default_factory=dict)  # live traffic to return to on rollback
    old_deployment: str | None = None
    waits: int = 0
    approvers: tuple[str, ...] = ()
    revision: int = 0
    # A long-running Azure ML operation the rollout waits for: {"phase", "operation", and what resuming needs}.
    waiting: Mapping[str, Any] | None = None
    correlation_id: str = ""  # the one of the decision whose approval opened it (see ``Decision.correlation_id``)
    environment: str | None = None  # the workspace of the endpoint (None: the home workspace)

    @property
    def current(self) -> Step | None:
        return self.steps[self.step] if 0 <= self.step < len(self.steps) else None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat()
        data["applied_at"] = self.applied_at.isoformat() if self.applied_at else None
        return data

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> Rollout:
        return Rollout(**{**data, "steps": tuple(Step(**s) for s in data["steps"]),
                          "state": RolloutState(data["state"]), "approvers": tuple(data.get("approvers", ())),
                          "created_at": datetime.fromisoformat(data["created_at"]),
                          "applied_at": datetime.fromisoformat(data["applied_at"]) if data.get("applied_at") else None})


def plan(mirror_percent: int | None, steps: list[int]) -> tuple[Step, ...]:
    return ((Step("mirror", mirror_percent),) if mirror_percent else ()) + tuple(Step("traffic", p) for p in steps)


def target(step: Step, deployment: str, baseline: Mapping[str, int]) -> tuple[dict[str, int], dict[str, int]]:
    """Live and mirror traffic for a step: the new deployment's share, the rest spread over the baseline."""
    if step.kind == "mirror":
        return dict(baseline), {deployment: step.percent}
    rest = 100 - step.percent
    total = sum(baseline.values()) or 1
    live = {name: share * rest // total for name, share in baseline.items()}
    if live:  # integer shares must still sum to 100: the largest old deployment takes the remainder
        live[max(live, key=lambda n: baseline[n])] += rest - sum(live.values())
    return {**live, deployment: step.percent}, {}


def baseline_of(traffic: Mapping[str, int], deployment: str) -> dict[str, int]:
    """The endpoint's live traffic without the new deployment, scaled back to 100 (the rollback target)."""
    others = {name: share for name, share in traffic.items() if name != deployment and share > 0}
    total = sum(others.values())
    if not total:
        return {}
    scaled = {name: share * 100 // total for name, share in others.items()}
    scaled[max(scaled, key=others.__getitem__)] += 100 - sum(scaled.values())
    return scaled


@dataclass(frozen=True)
class Judgment:
    verdict: str  # healthy | unhealthy | no_data
    reasons: tuple[str, ...]
    new: DeploymentHealth
    old: DeploymentHealth | None


def judge(gate: Mapping[str, Any], new: DeploymentHealth, old: DeploymentHealth | None) -> Judgment:
    """One step's health: too little traffic is ``no_data``, any limit crossed is ``unhealthy``."""
    if new.requests < gate["min_requests"]:
        return Judgment("no_data", (f"{new.requests} requests on {new.deployment}, fewer than the "
                                    f"{gate['min_requests']} needed to judge",), new, old)
    reasons = []
    p95, error_rate = new.p95_latency_ms, new.error_rate
    if gate.get("max_p95_latency_ms") is not None and p95 is not None and p95 > gate["max_p95_latency_ms"]:
        reasons.append(f"p95 latency {p95:g} ms over {gate['max_p95_latency_ms']:g} ms")
    if (gate.get("max_latency_ratio") is not None and p95 is not None and old is not None
            and old.p95_latency_ms and p95 / old.p95_latency_ms > gate["max_latency_ratio"]):
        reasons.append(f"p95 latency {p95:g} ms is {p95 / old.p95_latency_ms:.2f}x the old deployment's "
                       f"{old.p95_latency_ms:g} ms (limit {gate['max_latency_ratio']:g}x)")
    if gate.get("max_error_rate") is not None and error_rate is not None and error_rate > gate["max_error_rate"]:
        reasons.append(f"5xx rate {error_rate:.2%} over {gate['max_error_rate']:.2%}")
    if (gate.get("max_error_rate_increase") is not None and error_rate is not None and old is not None
            and old.error_rate is not None and error_rate - old.error_rate > gate["max_error_rate_increase"]):
        reasons.append(f"5xx rate {error_rate:.2%} is {error_rate - old.error_rate:.2%} above the old deployment's")
    if reasons:
        return Judgment("unhealthy", tuple(reasons), new, old)
    summary = f"{new.requests} requests, p95 {p95:g} ms" if p95 is not None else f"{new.requests} requests"
    if error_rate is not None:
        summary += f", 5xx {error_rate:.2%}"
    return Judgment("healthy", (summary,), new, old)

"""Read side: decisions for people and tools ("why is this model in production?"), the lists of tasks, reviews,
rollouts and incidents a page at a time, and health."""
from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Generic, TypeVar

from controlplane.domain import paging
from controlplane.domain.errors import InvalidEvent
from controlplane.domain.incidents import Incident, IncidentState
from controlplane.domain.ledger import Decision, Outcome, Task, TaskState
from controlplane.domain.reviews import Review, ReviewState
from controlplane.domain.rollout import Rollout, RolloutState
from controlplane.domain.windows import Window
from controlplane.ports.store import Services

T = TypeVar("T")

MAX_LIMIT = paging.MAX_PAGE
_PATH = re.compile(r"(?<![\w:/.~-])(?:[A-Za-z]:)?[/\\][^\s'\":]*")  # /srv/cp.db or C:\\cp.db, not a URL's path

logger = logging.getLogger(__name__)


def public_reason(error: Exception) -> str:
    """What an anonymous caller may read of an error: its message without server paths (the whole message,
    paths and all, goes to the log). Setting errors already name the setting without its value."""
    logger.warning("answered without detail: %s", error)
    return _PATH.sub("<path>", str(error))


def parse_limit(text: str | None, default: int = 50) -> int:
    if text is None or text == "":
        return default
    if not (text.isascii() and text.isdigit() and len(text) <= 6) or not 1 <= int(text) <= MAX_LIMIT:
        raise InvalidEvent("limit", f"expected a whole number from 1 to {MAX_LIMIT}, got {text[:20]!r}")
    return int(text)


@dataclass(frozen=True)
class DecisionQuery:
    """What ``/api/decisions`` and ``decisions`` on the command line filter on."""

    model: str | None = None
    outcomes: tuple[Outcome, ...] = ()
    since: datetime | None = None  # decided at or after
    until: datetime | None = None  # decided before

    @classmethod
    def parse(cls, params: Mapping[str, str | None], now: datetime | None = None) -> DecisionQuery:
        """From query-string values: ``model``, ``outcome`` (comma-separated), ``since`` and ``until`` (ISO 8601
        with an offset), or instead of ``since`` the last ``hours`` before ``now``; ``InvalidEvent`` naming the
        parameter when one is malformed."""
        outcomes = []
        for value in filter(None, (params.get("outcome") or "").split(",")):
            try:
                outcomes.append(Outcome(value.strip()))
            except ValueError:
                raise InvalidEvent("outcome", f"expected one of {', '.join(o.value for o in Outcome)}, "
                                              f"got {value[:40]!r}") from None
        since = _moment(params, "since")
        hours = params.get("hours")
        if hours and since is None and now is not None:
            if not (hours.isascii() and hours.isdigit() and 0 < int(hours[:6]) <= 24 * 366):
                raise InvalidEvent("hours", f"expected a whole number of hours from 1 to {24 * 366}, "
                                            f"got {hours[:20]!r}")
            since = now - timedelta(hours=int(hours))
        return cls(params.get("model") or None, tuple(dict.fromkeys(outcomes)), since, _moment(params, "until"))

    def params(self) -> dict[str, str]:
        """The query as query-string values (what ``parse`` reads back), without the empty ones."""
        values = {"model": self.model or "", "outcome": ",".join(o.value for o in self.outcomes),
                  "since": self.since.isoformat() if self.since else "",
                  "until": self.until.isoformat() if self.until else ""}
        return {key: value for key, value in values.items() if value}

    def fields(self) -> dict[str, object]:
        return {"model": self.model, "outcomes": [o.value for o in self.outcomes], "since": self.since,
                "until": self.until}


@dataclass(frozen=True)
class DecisionPage:
    decisions: list[Decision]
    continuation: str | None  # the token of the next page; None on the last one


def list_decisions(services: Services, query: DecisionQuery, limit: int,
                   continuation: str | None = None) -> DecisionPage:
    """One page of the ledger, newest first; ``continuation`` is the token the previous page returned."""
    key = services.approval_key
    after = paging.unseal(key, continuation, query.fields())
    page = services.store.decision_page(paging.bounded(limit), after, model=query.model, outcomes=query.outcomes,
                                        since=query.since, until=query.until)
    return DecisionPage(page.items, paging.seal(key, page.after, query.fields()))


@dataclass(frozen=True)
class ListPage(Generic[T]):
    """One page of tasks, reviews, rollouts or incidents, and the token of the next (None on the last)."""

    items: list[T]
    continuation: str | None


def list_tasks(services: Services, state: TaskState | None, limit: int,
               continuation: str | None = None) -> ListPage[Task]:
    """Outbox tasks, soonest due first (Table Storage: in key order), a page at a time."""
    return _listed(services, "tasks", {"state": state}, limit, continuation,
                   lambda n, after: services.store.task_page(n, after, state=state))


def list_reviews(services: Services, state: ReviewState | None, limit: int,
                 continuation: str | None = None) -> ListPage[Review]:
    """Reviews, newest first (Table Storage: in key order), a page at a time."""
    return _listed(services, "reviews", {"state": state}, limit, continuation,
                   lambda n, after: services.store.review_page(n, after, state=state))


def list_rollouts(services: Services, states: Sequence[RolloutState], limit: int,
                  continuation: str | None = None) -> ListPage[Rollout]:
    """Rollouts, newest first (Table Storage: in key order), a page at a time."""
    states = tuple(dict.fromkeys(states))
    return _listed(services, "rollouts", {"states": sorted(s.value for s in states)}, limit, continuation,
                   lambda n, after: services.store.rollout_page(n, after, states=states))


def list_incidents(services: Services, state: IncidentState | None, limit: int,
                   continuation: str | None = None) -> ListPage[Incident]:
    """Alert incidents, most recently updated first (Table Storage: in key order), a page at a time."""
    return _listed(services, "incidents", {"state": state}, limit, continuation,
                   lambda n, after: services.store.incident_page(n, after, state=state))


def list_named(services: Services, name: str, state: str, limit: int,
               continuation: str | None = None) -> ListPage:
    """A page of the list called ``name`` (tasks, rollouts, incidents, windows) in ``state`` (empty: all), from
    query-string values: ``InvalidEvent`` names the list or the state when either is unknown."""
    kinds = {"tasks": TaskState, "rollouts": RolloutState, "incidents": IncidentState, "windows": WindowState}
    if name not in kinds:
        raise InvalidEvent("list", f"expected one of {', '.join(kinds)}, got {name[:40]!r}")
    try:
        chosen = kinds[name](state) if state else None
    except ValueError:
        raise InvalidEvent("state", f"expected one of {', '.join(s.value for s in kinds[name])}, "
                                    f"got {state[:40]!r}") from None
    if name == "tasks":
        return list_tasks(services, chosen, limit, continuation)
    if name == "rollouts":
        return list_rollouts(services, [chosen] if chosen else [], limit, continuation)
    if name == "windows":
        return list_windows(services, None if chosen is None else chosen is WindowState.CLOSED, limit, continuation)
    return list_incidents(services, chosen, limit, continuation)


class WindowState(StrEnum):
    """What a telemetry window's list filters on: still counting, or closed (decided or about to be)."""

    OPEN = "open"
    CLOSED = "closed"


def list_windows(services: Services, closed: bool | None, limit: int,
                 continuation: str | None = None) -> ListPage[Window]:
    """Telemetry windows in key order (model, deployment, bucket, part), a page at a time."""
    return _listed(services, "windows", {"closed": closed}, limit, continuation,
                   lambda n, after: services.store.window_page(n, after, closed=closed))


def _listed(services: Services, name: str, filters: Mapping[str, object], limit: int, continuation: str | None,
            read: Callable[[int, str | None], paging.Page[T]]) -> ListPage[T]:
    """A page of the list ``name``: the token is sealed over the list and its filters, so it is refused for
    another list or other filters."""
    query = {"list": name, **{k: getattr(v, "value", v) for k, v in filters.items()}}
    after = paging.unseal(services.approval_key, continuation, query)
    page = read(paging.bounded(limit), after)
    return ListPage(page.items, paging.seal(services.approval_key, page.after, query))


def _moment(params: Mapping[str, str | None], name: str) -> datetime | None:
    text = params.get(name)
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text[:64])
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise InvalidEvent(name, f"expected an ISO 8601 time with an offset, got {text[:40]!r}")
    return moment


@dataclass(frozen=True)
class Serving:
    """Which version of a model serves an endpoint now, and the decision that put it there (when recorded)."""

    endpoint: str
    model: str | None
    version: str | None
    since: datetime | None = None
    decision_id: str | None = None


@dataclass(frozen=True)
class ModelStory:
    """A model's whole story, newest first: its decisions, reviews and rollouts, and where it serves."""

    name: str
    serving: tuple[Serving, ...]
    decisions: tuple[Decision, ...]
    reviews: tuple[Review, ...]
    rollouts: tuple[Rollout, ...]


def model_story(services: Services, name: str, limit: int = 100) -> ModelStory:
    """What ``/api/models/{name}`` shows: the model's last ``limit`` decisions, reviews and rollouts (each read
    from the model's own rows), and, for each endpoint its policy promotes to, the version serving it and since
    when."""
    from controlplane.handlers.promotion import SETS_CHAMPION, find_champion

    decisions = tuple(services.store.decisions(model=name, limit=limit))
    reviews = tuple(services.store.reviews(limit=limit, model=name))
    rollouts = tuple(services.store.rollouts(limit=limit, model=name))
    rule = services.policy.rule_for(name)
    serving = []
    for endpoint in [rule.promotion.endpoint] if rule is not None and rule.promotion is not None else []:
        champion = find_champion(services, endpoint, name)
        made = next((d for d in decisions if champion and d.version == champion.version
                     and d.evidence.get(SETS_CHAMPION) == endpoint), None)
        serving.append(Serving(endpoint, champion.name if champion else None, champion.version if champion else None,
                               made.decided_at if made else None, made.id if made else None))
    return ModelStory(name, tuple(serving), decisions, reviews, rollouts)


def story_json(story: ModelStory) -> dict[str, object]:
    return {"model": story.name,
            "serving": [{**vars(s), "since": s.since.isoformat() if s.since else None} for s in story.serving],
            "decisions": [d.to_json() for d in story.decisions], "reviews": [r.to_json() for r in story.reviews],
            "rollouts": [r.to_json() for r in story.rollouts]}

"""Pages of tasks, reviews, rollouts and incidents: one contract over the fake, SQLite and Table Storage (on Azurite),
the tokens the edge seals them in, and the HTTP and command-line lists that hand them out.

SQLite and the fake give each list in its named order; Table Storage cannot sort across partitions and gives its
key order (model partition then id; incidents by group). Every store: the pages concatenate to the whole list, each
item once, no page is longer than asked, and a position the store cannot read is refused naming ``continuation``.
"""
from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from urllib.parse import parse_qs, urlparse

import azure.functions as func
import pytest

from controlplane.adapters.table_store import partition_of
from controlplane.domain import paging
from controlplane.domain.errors import InvalidEvent
from controlplane.domain.incidents import Incident, IncidentState
from controlplane.domain.ledger import Outcome, Source, TaskState, Verdict, record
from controlplane.domain.reviews import ReviewState
from controlplane.domain.rollout import RolloutState
from controlplane.handlers import queries
from tests.test_store_contract import LEASE, T0, a_rollout, decision_for
from tests.test_store_pages import partitions_read

MODELS = ("fraud", "churn", "defect-detector")


@pytest.fixture(params=["fake", "sqlite", "tables"])
def store(request, make_store):
    return make_store(request.param)


def decided(store, decision):
    store.complete(store.claim(decision.idempotency_key, decision.model, decision.decided_at, LEASE), decision)
    return decision


def seed_tasks(store):
    """Nine tasks over three models, three at each due time (ties broken by id); four of them succeeded."""
    tasks = [t for i in range(3) for t in decided(store, decision_for(
        f"t{i}", model=MODELS[i], at=T0 + timedelta(hours=2 - i), tasks=3)).tasks]
    for task in tasks[::2][:4]:
        store.update_task(task, replace(task, state=TaskState.SUCCEEDED))
    return [store.task(t.id) for t in tasks]


def seed_reviews(store):
    """Seven reviews over three models, two pairs made at the same moment; two expired."""
    from controlplane.domain.ledger import ReviewDraft
    from controlplane.domain.reviews import ReviewKind

    draft = ReviewDraft(kind=ReviewKind.PROMOTION, approvers=("ana@contoso.com",), quorum=1, ttl=timedelta(hours=72))
    reviews = []
    for i, minutes in enumerate((0, 5, 5, 9, 12, 12, 30)):
        verdict = Verdict(Outcome.REQUEST_APPROVAL, "gates passed", model=MODELS[i % 3], version=str(i),
                          reviews=(draft,))
        at = T0 + timedelta(minutes=minutes)
        reviews += decided(store, record(verdict, key=f"r{i}", event_id=f"r{i}", source=Source.EVENTGRID,
                                         event_type="test", policy_version="v1", received_at=at,
                                         decided_at=at)).reviews
    for n, review in enumerate(reviews[1:5:3]):
        vote = replace(decision_for(f"expire{n}", model=review.model), reviews=())
        assert store.update_review(review, replace(review, state=ReviewState.EXPIRED, revision=1), vote)
    return [store.review(r.id) for r in reviews]


def seed_rollouts(store):
    states = [RolloutState.OBSERVING, RolloutState.PAUSED, RolloutState.COMPLETED, RolloutState.OBSERVING,
              RolloutState.ROLLED_BACK, RolloutState.PAUSED, RolloutState.OBSERVING]
    rollouts = [replace(a_rollout(f"ro-{i}"), model=MODELS[i % 3], state=state,
                        created_at=T0 + timedelta(minutes=(i // 2) * 10)) for i, state in enumerate(states)]
    for rollout in rollouts:
        assert store.create_rollout(rollout)
    return rollouts


def seed_incidents(store):
    incidents = [Incident(group=f"g{i}", number=1, state=IncidentState.CLOSED if i % 3 == 0 else IncidentState.OPEN,
                          rule="latency", target="churn-ep/blue", severity="Sev2", opened_at=T0,
                          updated_at=T0 + timedelta(minutes=[4, 7, 7, 1, 9, 2][i])) for i in range(6)]
    for incident in incidents:
        assert store.put_incident(None, incident)
    return incidents


# (the list, its seed, its filter's keyword and values, the order SQLite and the fake give, Table Storage's key order)
LISTS = {
    "tasks": ("task_page", seed_tasks, "state", [TaskState.PENDING, TaskState.SUCCEEDED, TaskState.DEAD_LETTERED],
              lambda t: (t.due_at, t.id), False, lambda t: (partition_of(t.model), t.id)),
    "reviews": ("review_page", seed_reviews, "state", [ReviewState.OPEN, ReviewState.EXPIRED, ReviewState.APPROVED],
                lambda r: (r.created_at, r.id), True, lambda r: (partition_of(r.model), r.id)),
    "rollouts": ("rollout_page", seed_rollouts, "states",
                 [(RolloutState.OBSERVING,), (RolloutState.PAUSED, RolloutState.ROLLED_BACK),
                  (RolloutState.STARTING,)],
                 lambda r: (r.created_at, r.id), True, lambda r: (partition_of(r.model), r.id)),
    "incidents": ("incident_page", seed_incidents, "state", [IncidentState.OPEN, IncidentState.CLOSED],
                  lambda i: (i.updated_at, i.group), True, lambda i: i.group),
}


def ordered(store, name, items):
    """``items`` in the order ``store`` lists them."""
    _, _, _, _, order, descending, key_order = LISTS[name]
    if store.name == "tables":
        return sorted(items, key=key_order)
    return sorted(items, key=order, reverse=descending)


def every_page(store, name, limit, **query):
    return every(getattr(store, LISTS[name][0]), limit, **query)


def every(read, limit, **query):
    """Every page ``read`` answers for ``query``, each within ``limit``, following the positions to the end."""
    pages, after = [], None
    while True:
        page = read(limit, after, **query)
        assert len(page.items) <= limit
        pages.append(page.items)
        if page.after is None:
            return pages
        assert len(pages) < 50, "the pages never end"
        after = page.after


def matches(item, keyword, value):
    return item.state in value if keyword == "states" else item.state is value


@pytest.mark.parametrize("name", LISTS)
def test_pages_concatenate_to_the_whole_list_in_the_stores_order_each_item_once(store, name):
    written = LISTS[name][1](store)
    whole = ordered(store, name, written)
    assert len({repr(i) for i in whole}) == len(written) >= 6
    for limit in (1, 2, 4):
        pages = every_page(store, name, limit)
        assert [i for page in pages for i in page] == whole
        full = len(written) // limit
        assert all(len(p) == limit for p in pages[:full])  # neither store answers short pages here
    single = every_page(store, name, len(written))
    # a store that cannot see past a full page (Table Storage, from the service's token) may end with an empty one
    assert single in ([[whole], [whole, []]] if store.name == "tables" else [[whole]])
    assert every_page(store, name, 100) == [whole]


@pytest.mark.parametrize("name", LISTS)
def test_filtered_pages_hold_exactly_the_matching_items(store, name):
    written = LISTS[name][1](store)
    _, _, keyword, values, *_ = LISTS[name]
    sizes = []
    for value in values:
        wanted = ordered(store, name, [i for i in written if matches(i, keyword, value)])
        sizes.append(len(wanted))
        assert [i for page in every_page(store, name, 2, **{keyword: value}) for i in page] == wanted
    assert sizes[0] >= 3 and max(sizes) < len(written)  # the cases test something: several pages, some left out


@pytest.mark.parametrize("name", LISTS)
def test_a_position_the_store_cannot_read_is_refused_naming_the_continuation(store, name):
    LISTS[name][1](store)
    read = getattr(store, LISTS[name][0])
    for bad in ("nonsense", "|", "9" * 400, "[1, 2]", "2026-11-22T10:00:00+00:00|", "[null, null]"):
        with pytest.raises(InvalidEvent) as refused:
            read(2, bad)
        assert refused.value.subject == "continuation"


def test_the_unpaged_lists_are_unchanged(store):
    tasks = seed_tasks(store)
    listed = store.tasks(limit=100)
    assert sorted(t.id for t in listed) == sorted(t.id for t in tasks)
    assert [t.due_at for t in listed] == sorted(t.due_at for t in tasks)
    expired = [r for r in seed_reviews(store) if r.state is ReviewState.EXPIRED]
    listed = store.reviews(ReviewState.EXPIRED)
    assert len(expired) == 2 and sorted(r.id for r in listed) == sorted(r.id for r in expired)
    assert [r.created_at for r in listed] == sorted((r.created_at for r in expired), reverse=True)


# -- tokens: sealed over the list and its filters ------------------------------------------------------------
@pytest.fixture
def seeded(services):
    for seed in (seed_tasks, seed_reviews, seed_rollouts, seed_incidents):
        seed(services.store)
    return replace(services, approval_key=b"k" * 32)


def walk(read, limit):
    items, token, pages = [], None, 0
    while True:
        page = read(limit, token)
        items, token, pages = items + page.items, page.continuation, pages + 1
        if token is None:
            return items, pages


def test_each_list_walks_its_pages_through_sealed_tokens(seeded):
    store = seeded.store
    pending = ordered(store, "tasks", store.tasks(TaskState.PENDING, limit=1000))
    assert walk(lambda n, t: queries.list_tasks(seeded, TaskState.PENDING, n, t), 2) == (
        pending, -(-len(pending) // 2))
    reviews, _ = walk(lambda n, t: queries.list_reviews(seeded, None, n, t), 3)
    assert reviews == ordered(store, "reviews", store.reviews()) and len(reviews) == 7
    rollouts, pages = walk(lambda n, t: queries.list_rollouts(
        seeded, [RolloutState.PAUSED, RolloutState.OBSERVING], n, t), 2)
    assert (rollouts, pages) == (ordered(store, "rollouts", store.rollouts(
        [RolloutState.OBSERVING, RolloutState.PAUSED])), 3)
    incidents, pages = walk(lambda n, t: queries.list_incidents(seeded, None, n, t), 4)
    assert (incidents, pages) == (ordered(store, "incidents", store.incidents()), 2)


def test_a_token_is_refused_with_other_filters_another_list_another_key_or_edited(seeded):
    token = queries.list_tasks(seeded, None, 2).continuation
    assert token and queries.list_tasks(seeded, None, 2, token).items  # it works where it was issued
    refusals = [
        lambda: queries.list_tasks(seeded, TaskState.PENDING, 2, token),  # another query's filters
        lambda: queries.list_reviews(seeded, None, 2, token),  # another list
        lambda: queries.list_incidents(seeded, None, 2, token),
        lambda: queries.list_tasks(replace(seeded, approval_key=b"x" * 32), None, 2, token),  # sealed elsewhere
        lambda: queries.list_tasks(seeded, None, 2, token[:-2] + ("AA" if token[-2:] != "AA" else "BB")),
        lambda: queries.list_tasks(seeded, None, 2, paging.seal(b"k" * 32, "[\"churn\", \"task|x\"]", {})),
        lambda: queries.list_decisions(seeded, queries.DecisionQuery(), 2, token),
    ]
    for refused in refusals:
        with pytest.raises(InvalidEvent) as error:
            refused()
        assert error.value.subject == "continuation"
    rollouts = queries.list_rollouts(seeded, [RolloutState.OBSERVING, RolloutState.PAUSED], 1).continuation
    # the same states in another order are the same query
    assert queries.list_rollouts(seeded, [RolloutState.PAUSED, RolloutState.OBSERVING], 1, rollouts).items
    with pytest.raises(InvalidEvent):
        queries.list_rollouts(seeded, [RolloutState.OBSERVING], 1, rollouts)


def test_a_page_is_bounded_whatever_is_asked(seeded):
    page = queries.list_tasks(seeded, None, 10_000)
    assert len(page.items) == len(seeded.store.tasks(limit=1000)) >= 9 and page.continuation is None
    assert len(queries.list_incidents(seeded, None, 0).items) == 1  # at least one


# -- HTTP: GET /api/reviews ----------------------------------------------------------------------------------
@pytest.fixture
def app_services(seeded):
    from controlplane import bootstrap

    bootstrap.reset(seeded)
    yield seeded
    bootstrap.reset()


def get_reviews(fn, **params):
    reply = fn["reviews"](func.HttpRequest("GET", "/api/reviews", body=b"", params=params))
    return reply.status_code, json.loads(reply.get_body())


def test_the_reviews_route_answers_pages_and_the_token_of_the_next(fn, app_services):
    status, first = get_reviews(fn, limit="4")
    assert status == 200 and len(first["reviews"]) == 4 and first["continuation"]
    status, second = get_reviews(fn, limit="4", continuation=first["continuation"])
    assert status == 200 and second["continuation"] is None
    assert [r["id"] for r in first["reviews"] + second["reviews"]] == [
        r.id for r in ordered(app_services.store, "reviews", app_services.store.reviews())]
    status, expired = get_reviews(fn, state="expired")
    assert status == 200 and len(expired["reviews"]) == 2 and expired["continuation"] is None

    status, refused = get_reviews(fn, state="open", limit="4", continuation=first["continuation"])
    assert status == 400 and refused["error"]["field"] == "continuation"
    for bad in ({"continuation": "forged"}, {"limit": "0"}, {"limit": "501"}):
        status, refused = get_reviews(fn, **bad)
        assert status == 400 and refused["error"]["field"] == next(iter(bad))


def test_the_reviews_page_for_people_keeps_listing_the_latest(fn, app_services):
    reply = fn["reviews"](func.HttpRequest("GET", "/api/reviews", body=b"", params={"limit": "1"},
                                           headers={"Accept": "text/html"}))
    body = reply.get_body().decode()
    assert reply.status_code == 200 and all(r.id in body for r in app_services.store.reviews())


# -- the command line ----------------------------------------------------------------------------------------
def test_the_list_commands_print_a_page_and_the_token_of_the_next(tmp_path):
    from tests.test_cli import cli

    env = {"CONTROLPLANE_STORE": f"sqlite:///{tmp_path}/cp.db", "APPROVAL_SIGNING_KEY": "s" * 40}
    from controlplane.adapters.sqlite_store import SqliteStore

    store = SqliteStore(f"{tmp_path}/cp.db")
    tasks, rollouts, incidents = seed_tasks(store), seed_rollouts(store), seed_incidents(store)
    for command, written, limit in ((["tasks", "list"], ordered(store, "tasks", tasks), 4),
                                    (["rollouts", "list"], ordered(store, "rollouts", rollouts), 3),
                                    (["incidents"], ordered(store, "incidents", incidents), 5)):
        printed, token, runs = [], [], 0
        while True:
            done = cli(*command, "--limit", str(limit), "--json", *token, env=env)
            assert done.returncode == 0, done.stderr
            lines = done.stdout.splitlines()
            assert 0 < len(lines) <= limit
            printed += [json.loads(line)["id"] for line in lines]
            runs += 1
            hint = [line for line in done.stderr.splitlines() if line.startswith("next page: --continuation ")]
            if not hint:
                break
            token = ["--continuation", hint[0].rsplit(" ", 1)[1]]
        assert printed == [i.id for i in written] and runs == -(-len(written) // limit), command
    refused = cli("tasks", "list", "--state", "pending", *token_of_first_page(env), env=env)
    assert refused.returncode == 2 and "continuation" in refused.stderr and refused.stdout == ""


def token_of_first_page(env):
    from tests.test_cli import cli

    done = cli("tasks", "list", "--limit", "1", env=env)
    return ["--continuation", done.stderr.strip().rsplit(" ", 1)[1]]


# -- how a store reads a page --------------------------------------------------------------------------------
def test_a_table_storage_page_is_one_query_continuing_from_the_services_token(counted):
    store, requests = counted
    seed_tasks(store)
    seed_incidents(store)
    for limit in (1, 4, 500):
        requests.clear()
        page = store.task_page(limit)
        # a page costs ceil(limit / 1000) queries, the service's largest page: one
        assert [m for m, _ in requests] == ["GET"] and partitions_read(requests) == [None]
        requests.clear()
        if page.after:
            store.task_page(limit, page.after)
            assert len(requests) == 1
    requests.clear()
    store.incident_page(2, state=IncidentState.OPEN)
    assert partitions_read(requests) == ["_incidents"]  # one partition's range, not a scan
    seed_windows(store)
    requests.clear()
    page = store.window_page(3, model="churn", closed=False)
    assert len(page.items) == 3 and page.after and [m for m, _ in requests] == ["GET"]
    assert "PartitionKey ge 'churn|'" in parse_qs(urlparse(requests[0][1]).query)["$filter"][0]


@pytest.mark.parametrize("name, query", [
    ("tasks", {}), ("tasks", {"state": TaskState.PENDING}), ("reviews", {}), ("reviews", {"state": ReviewState.OPEN}),
    ("rollouts", {}), ("rollouts", {"states": (RolloutState.PAUSED, RolloutState.OBSERVING)}),
    ("incidents", {}), ("incidents", {"state": IncidentState.OPEN}),
])
def test_sqlite_reads_every_page_in_index_order(make_store, name, query):
    store = make_store("sqlite")
    LISTS[name][1](store)
    first = getattr(store, LISTS[name][0])(1, **query)
    statements = []
    connection = store._connection()
    connection.set_trace_callback(statements.append)
    getattr(store, LISTS[name][0])(2, first.after, **query)
    connection.set_trace_callback(None)
    [select] = [s for s in statements if s.startswith("SELECT")]
    plan = [row[3] for row in connection.execute(f"EXPLAIN QUERY PLAN {select}")]
    reads = [step for step in plan if step.startswith(("SCAN", "SEARCH")) and f" {name} " in f"{step} "]
    assert reads and all("USING INDEX" in step for step in reads), plan
    # a range comes in index order; only a merge of several states sorts, a page's worth of rows per state
    states = len(query.get("states", ()))
    assert sum("TEMP B-TREE" in step for step in plan) == (states if states > 1 else 0), plan


# -- telemetry windows ---------------------------------------------------------------------------------------
def seed_windows(store):
    """Windows of two models whose names sort apart from their partitions (``churn`` and ``churn-x``), two
    deployments, three hours; one bucket fills a part and opens the next; the first hour closes."""
    from controlplane.domain.events import TelemetryEvent, TelemetryRecord
    from tests.test_store_contract import SPEC

    sequence = 0
    for hour in range(3):
        at, events = T0 + timedelta(hours=hour), []
        for model in ("churn-x", "churn"):
            for deployment in ("green", "blue"):
                n = 12 if (model, deployment, hour) == ("churn", "green", 0) else 2
                sequence += 1
                events.append(TelemetryEvent("0", sequence, at, tuple(
                    TelemetryRecord(model, "3", "ep", deployment, f"r{sequence}-{i}", at, {"age": i}, {"score": 0.5})
                    for i in range(n))))
        store.append_telemetry(events, lambda m: SPEC, at)
    store.close_due_windows(T0 + timedelta(hours=1, minutes=10))
    from controlplane.domain.windows import WindowKey

    keys = [WindowKey(m, d, SPEC.bucket(T0 + timedelta(hours=h)), part) for m in ("churn-x", "churn")
            for d in ("green", "blue") for h in range(3) for part in range(2)]
    return [w for w in map(store.window, keys) if w is not None]


def window_order(store):
    if store.name == "tables":
        return lambda w: (partition_of(f"{w.key.model}|{w.key.deployment}"), w.key.bucket, w.key.part)
    return lambda w: (w.key.model, w.key.deployment, w.key.bucket, w.key.part)


def test_window_pages_concatenate_to_every_window_in_key_order(store):
    written = seed_windows(store)
    assert len(written) == 13 and sum(w.closed for w in written) == 5
    whole = sorted(written, key=window_order(store))
    assert [w.key.model for w in whole[:2]] == (["churn-x"] * 2 if store.name == "tables" else ["churn"] * 2)
    for limit in (1, 3, 5):
        pages = every(store.window_page, limit)
        assert [w for page in pages for w in page] == whole
        assert all(len(p) == limit for p in pages[:len(written) // limit])
    for query in ({"model": "churn"}, {"closed": True}, {"closed": False}, {"model": "churn-x", "closed": True}):
        wanted = [w for w in whole if w.key.model == query.get("model", w.key.model)
                  and w.closed == query.get("closed", w.closed)]
        assert 0 < len(wanted) < len(whole)
        assert [w for page in every(store.window_page, 2, **query) for w in page] == wanted


def test_a_window_position_the_store_cannot_read_is_refused_naming_the_continuation(store):
    seed_windows(store)
    for bad in ("nonsense", "|", "9" * 400, "[1, 2]", '["churn", "green", "x", 0]', "[null, null]"):
        with pytest.raises(InvalidEvent) as refused:
            store.window_page(2, bad)
        assert refused.value.subject == "continuation"

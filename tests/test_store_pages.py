"""Pages of decisions and their indexes, one contract over the fake, SQLite and Table Storage (on Azurite).

Table Storage cannot order across partitions, so decisions are also written to day partitions of an index; the
last tests count the requests a page makes and check it reads only the partitions it should.
"""
from __future__ import annotations

from contextlib import contextmanager
from datetime import timedelta
from urllib.parse import parse_qs, urlparse

import pytest

from controlplane.domain.errors import InvalidEvent
from controlplane.domain.ledger import Outcome
from tests.test_store_contract import LEASE, T0, decision_for

MODELS = ("churn", "defect-detector", "fraud")
OUTCOMES = (Outcome.RETRAIN, Outcome.NO_ACTION, Outcome.REVIEW)


@pytest.fixture(params=["fake", "sqlite", "tables"])
def store(request, make_store):
    return make_store(request.param)


def seed(store, n=24, hours=5):
    """``n`` decisions over three models, three outcomes and ``n * hours`` hours (several days), oldest first."""
    written = []
    for i in range(n):
        decision = decision_for(f"k{i}", model=MODELS[i % 3], outcome=OUTCOMES[i % 3 if i % 4 else 0],
                                at=T0 + timedelta(hours=hours * i, seconds=i))
        store.complete(store.claim(decision.idempotency_key, decision.model, decision.decided_at, LEASE), decision)
        written.append(decision)
    return written


def every_page(store, limit, **query):
    pages, after = [], None
    while True:
        page = store.decision_page(limit, after, **query)
        pages.append([d.id for d in page.items])
        if page.after is None:
            return pages
        after = page.after


def newest_first(decisions):
    return [d.id for d in sorted(decisions, key=lambda d: d.decided_at, reverse=True)]


def test_pages_across_models_follow_one_another_newest_first_without_gaps_or_repeats(store):
    written = seed(store)
    pages = every_page(store, 5)
    assert [len(p) for p in pages] == [5, 5, 5, 5, 4]
    assert [i for page in pages for i in page] == newest_first(written)
    assert every_page(store, 24) == [newest_first(written)]  # a full last page says there is no next one


@pytest.mark.parametrize("query", [
    {"model": "churn"},
    {"outcomes": [Outcome.RETRAIN]},
    {"outcomes": [Outcome.NO_ACTION, Outcome.REVIEW]},
    {"model": "fraud", "outcomes": [Outcome.REVIEW]},
    {"since": T0 + timedelta(hours=30), "until": T0 + timedelta(hours=80)},
    {"outcomes": [Outcome.RETRAIN], "until": T0 + timedelta(hours=60)},
    {"model": "churn", "since": T0 + timedelta(hours=15)},
])
def test_filtered_pages_hold_exactly_the_matching_decisions(store, query):
    written = seed(store)
    since, until = query.get("since"), query.get("until")
    wanted = [d for d in written if d.model == query.get("model", d.model)
              and d.outcome in query.get("outcomes", [d.outcome])
              and (since is None or d.decided_at >= since) and (until is None or d.decided_at < until)]
    assert wanted  # the case tests something
    assert [i for page in every_page(store, 2, **query) for i in page] == newest_first(wanted)


def test_the_time_range_includes_its_start_and_excludes_its_end(store):
    written = seed(store, n=6)
    assert [d.id for d in store.decision_page(10, since=written[2].decided_at,
                                              until=written[4].decided_at).items] == [written[3].id, written[2].id]


def test_a_position_the_store_cannot_read_is_refused_naming_the_continuation(store):
    seed(store, n=3)
    for bad in ("nonsense", "2026|x|y", "", "9" * 400):
        with pytest.raises(InvalidEvent) as refused:
            store.decision_page(2, bad if bad else "|")
        assert refused.value.subject == "continuation"


@contextmanager
def index_writes_fail(store):
    """Table Storage: every decision lands, and then the process stops before its index rows (nothing to cut
    short elsewhere: SQLite and the fake index a row in the transaction that writes it)."""
    if store.name != "tables":
        yield
        return
    original = store._write_index

    def crash(decisions):
        raise SystemExit("the instance stopped")

    store._write_index = crash
    try:
        yield
    finally:
        store._write_index = original


def test_a_crash_between_a_decision_and_its_index_rows_is_repaired_by_the_sweep_exactly_once(store):
    before = seed(store, n=3)
    late = decision_for("late", model="fraud", outcome=Outcome.REVIEW, at=T0 + timedelta(days=1))
    with index_writes_fail(store), pytest.raises(SystemExit) if store.name == "tables" else nullcontext():
        store.complete(store.claim("late", "fraud", T0, LEASE), late)
    assert store.decision(late.id) is not None and [d.id for d in store.decisions(model="fraud")][0] == late.id

    assert (late.id not in [d.id for d in store.decisions()]) == (store.name == "tables")

    assert (store.repair_indexes(T0 + timedelta(days=1, minutes=1)) > 0) == (store.name == "tables")
    assert store.repair_indexes(T0 + timedelta(days=1, minutes=2)) == 0  # nothing left to repair
    assert [d.id for d in store.decisions()] == newest_first([*before, late])
    reviews = [d for d in (*before, late) if d.outcome is Outcome.REVIEW]
    assert [d.id for d in store.decisions(outcomes=[Outcome.REVIEW])] == newest_first(reviews)


def test_a_write_refused_before_the_decision_leaves_no_index_rows(store):
    decision = decision_for("once")
    assert store.complete_unclaimed("once", "churn", decision) is None
    again = decision_for("once", at=T0 + timedelta(hours=1))  # same id, later: the key is decided already
    assert store.complete_unclaimed("once", "churn", again) == decision.id
    store.repair_indexes(T0 + timedelta(hours=1))
    assert [(d.id, d.decided_at) for d in store.decisions()] == [(decision.id, decision.decided_at)]
    assert [(d.id, d.decided_at) for d in store.decisions(outcomes=[decision.outcome])] == [
        (decision.id, decision.decided_at)]


def nullcontext():
    from contextlib import nullcontext as empty

    return empty()


# -- which partitions a Table Storage page reads -----------------------------------------------------------
def partitions_read(requests):
    """The PartitionKey each query names; None for a query that names none (a scan of the table)."""
    found = []
    for method, url in requests:
        filter_ = parse_qs(urlparse(url).query).get("$filter", [""])[0]
        if method == "GET" and "()" in urlparse(url).path:
            found.append(filter_.split("PartitionKey eq '", 1)[1].split("'", 1)[0] if "PartitionKey eq" in filter_
                         else None)
    return found


def days_of(decisions):
    """The index partitions holding ``decisions``, in order, each once."""
    return list(dict.fromkeys(f"_day|{d.decided_at:%Y%m%d}" for d in decisions))


def test_a_page_across_models_reads_the_day_list_and_only_the_newest_days_it_needs(counted):
    store, requests = counted
    written = sorted(seed(store, n=24, hours=5), key=lambda d: d.decided_at, reverse=True)  # 6 days
    requests.clear()
    page = store.decision_page(3)
    assert len(page.items) == 3 and partitions_read(requests) == ["_days", *days_of(written[:4])]

    requests.clear()
    store.decision_page(8, page.after)  # from the day the first page ended in
    assert partitions_read(requests) == ["_days", *days_of(written[2:12])]
    assert len(days_of(written)) == 6 and len(days_of(written[2:12])) < 6

    requests.clear()
    store.decision_page(5, outcomes=[Outcome.RETRAIN, Outcome.REVIEW], since=T0 + timedelta(days=2),
                        until=T0 + timedelta(days=3))
    assert partitions_read(requests) == ["_days", "_day|20261125", "_day|20261125", "_day|20261124",
                                         "_day|20261124"]  # a range per outcome in each day the range touches

    requests.clear()
    store.decision_page(5, model="churn")
    assert partitions_read(requests) == ["churn"]


def test_writing_a_decision_costs_its_claim_its_transaction_and_its_index_transaction(counted):
    store, requests = counted
    seed(store, n=1)  # lists the day once
    requests.clear()
    decision = decision_for("counted", at=T0 + timedelta(minutes=5))
    store.complete(store.claim("counted", "churn", decision.decided_at, LEASE), decision)
    assert [method for method, _ in requests] == ["POST", "POST", "POST"]


def test_a_ledger_written_without_the_index_is_backfilled_resumably_and_idempotently(store):
    written = seed(store, n=12)
    if store.name == "tables":  # the same ledger as written before the index: its rows dropped
        ledger = store._ledger
        for row in [*ledger.query_entities("PartitionKey ge '_d' and PartitionKey lt '_n'"),
                    *ledger.query_entities("Kind eq 'unindexed'")]:
            ledger.delete_entity(row["PartitionKey"], row["RowKey"])
        store._listed.clear()
        assert store.decisions() == []

    indexed, resume, steps = 0, None, 0
    while True:
        done, resume = store.backfill_indexes(resume, pages=1, page_size=5)
        indexed, steps = indexed + done, steps + 1
        if resume is None:
            break
    assert store.backfill_indexes()[0] == indexed  # again from the start: the same rows, none twice
    assert (indexed, steps) == ((12, 3) if store.name == "tables" else (0, 1))
    assert [d.id for d in store.decisions(limit=100)] == newest_first(written)
    assert [d.id for d in store.decisions(outcomes=[Outcome.RETRAIN])] == newest_first(
        [d for d in written if d.outcome is Outcome.RETRAIN])


@pytest.mark.parametrize("query", [
    {}, {"after": "2026-11-23T10:00:00+00:00|5"}, {"outcomes": [Outcome.RETRAIN]},
    {"outcomes": [Outcome.RETRAIN, Outcome.REVIEW], "after": "2026-11-23T10:00:00+00:00|5"},
    {"model": "churn"}, {"model": "churn", "outcomes": [Outcome.RETRAIN]},
    {"since": T0, "until": T0 + timedelta(days=1)},
])
def test_sqlite_reads_every_page_through_an_index(make_store, query):
    store = make_store("sqlite")
    seed(store, n=6)
    statements = []
    connection = store._connection()
    connection.set_trace_callback(statements.append)
    store.decision_page(5, **query)
    connection.set_trace_callback(None)
    [select] = [s for s in statements if s.startswith("SELECT body")]
    plan = [row[3] for row in connection.execute(f"EXPLAIN QUERY PLAN {select}")]
    reads = [step for step in plan if " decisions" in step]
    assert reads and all("USING" in step for step in reads), plan  # no step reads the table row by row


def models_reviews_and_rollouts(store):
    """Two reviews and two rollouts per model, an hour apart; what the store was given, by model."""
    from dataclasses import replace

    from controlplane.domain.ledger import ReviewDraft, Source, Verdict, record
    from controlplane.domain.reviews import ReviewKind
    from tests.test_store_contract import a_rollout

    given = {model: ([], []) for model in MODELS}
    for i in range(6):
        model, at = MODELS[i % 3], T0 + timedelta(hours=i)
        draft = ReviewDraft(ReviewKind.DRIFT, ("ana@contoso.com",), 1, timedelta(days=1))
        decision = record(Verdict(Outcome.REVIEW, "look", model=model, reviews=(draft,)), key=f"r{i}",
                          event_id=f"r{i}", source=Source.TELEMETRY, event_type="t", policy_version="v",
                          received_at=at, decided_at=at)
        store.append(decision)
        rollout = replace(a_rollout(f"ro-{i}"), model=model, created_at=at)
        assert store.create_rollout(rollout)
        given[model][0].insert(0, decision.reviews[0].id)
        given[model][1].insert(0, rollout.id)
    return given


def test_a_models_reviews_and_rollouts_are_its_own_newest_first(store):
    given = models_reviews_and_rollouts(store)
    for model, (reviews, rollouts) in given.items():
        assert [r.id for r in store.reviews(model=model)] == reviews
        assert [r.id for r in store.rollouts(model=model)] == rollouts
        assert [r.id for r in store.reviews(model=model, limit=1)] == reviews[:1]
    assert store.reviews(model="nobody") == [] and len(store.rollouts()) == 6


def test_a_models_reviews_and_rollouts_are_read_from_its_partition_alone(counted):
    store, requests = counted
    given = models_reviews_and_rollouts(store)
    requests.clear()
    store.reviews(model="fraud")
    store.rollouts(model="fraud")
    assert partitions_read(requests) == ["fraud", "fraud"] and len(given["fraud"][0]) == 2


def test_an_sqlite_ledger_written_before_reviews_and_rollouts_knew_their_model_is_given_it_on_opening(tmp_path):
    import sqlite3

    from controlplane.adapters.sqlite_store import SqliteStore

    path = str(tmp_path / "cp.db")
    given = models_reviews_and_rollouts(SqliteStore(path))
    with sqlite3.connect(path) as db:  # as the earlier schema left them: no model column
        for table in ("reviews", "rollouts"):
            db.execute(f"DROP INDEX {table}_by_model")
            db.execute(f"ALTER TABLE {table} DROP COLUMN model")
    reopened = SqliteStore(path)
    assert [r.id for r in reopened.reviews(model="churn")] == given["churn"][0]
    assert [r.id for r in reopened.rollouts(model="churn")] == given["churn"][1]


def test_a_telemetry_batch_reads_its_dedupe_rows_with_one_query_not_one_read_per_event(counted):
    from controlplane.domain.windows import WindowSpec
    from tests.test_store_contract import telemetry_event

    store, requests = counted
    spec = WindowSpec(records=1000, minutes=60, grace_minutes=5, sample=10)
    store.append_telemetry([telemetry_event(s) for s in range(0, 20, 2)], lambda m: spec, T0)  # seen: even ones
    requests.clear()
    result = store.append_telemetry([telemetry_event(s) for s in range(30)], lambda m: spec, T0)

    assert (result.stored, result.duplicates) == (40, 20)
    reads = [url for method, url in requests if method == "GET"]
    dedupe = [url for url in reads if "RowKey ge 'e|" in parse_qs(urlparse(url).query).get("$filter", [""])[0]]
    assert len(dedupe) == 1 and len(reads) == 2  # the dedupe range and the open window, for 30 events


def test_sequence_numbers_far_apart_are_checked_one_by_one_rather_than_by_a_long_range(counted):
    from controlplane.domain.windows import WindowSpec
    from tests.test_store_contract import telemetry_event

    store, requests = counted
    spec = WindowSpec(records=1000, minutes=60, grace_minutes=5, sample=10)
    store.append_telemetry([telemetry_event(5_000_000)], lambda m: spec, T0)
    requests.clear()
    result = store.append_telemetry([telemetry_event(7), telemetry_event(5_000_000)], lambda m: spec, T0)

    assert (result.stored, result.duplicates) == (2, 2)
    assert not any("RowKey ge 'e|" in parse_qs(urlparse(url).query).get("$filter", [""])[0] for _, url in requests)

"""One contract, three stores: the in-memory fake, SQLite and Azure Table Storage (on Azurite)."""
from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from controlplane.domain.errors import EventInProgress
from controlplane.domain.events import TelemetryEvent, TelemetryRecord
from controlplane.domain.ledger import Outcome, Source, TaskState, Verdict, record
from controlplane.domain.requests import SubmitPipeline
from controlplane.domain.windows import Window, WindowKey, WindowSpec, record_hash

T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
LEASE = timedelta(minutes=5)


@pytest.fixture(params=["fake", "sqlite", "tables"])
def store(request, make_store):
    return make_store(request.param)


def decision_for(key, *, model="churn", at=T0, tasks=0, outcome=Outcome.RETRAIN, attempt=""):
    drafts = tuple(SubmitPipeline(experiment_name="retraining", name=f"{key}-{i}", source="azureml:retrain:1")
                   for i in range(tasks))
    verdict = Verdict(outcome, f"because {key}", model=model, version="3", evidence={"key": key}, tasks=drafts)
    return record(verdict, key=key, event_id=key, source=Source.EVENTGRID, event_type="test", policy_version="v1",
                  received_at=at, decided_at=at, attempt=attempt)


def at_once(*calls):
    """Run each (function, arguments) in a thread of its own, all at once (released together from a barrier),
    and wait for them."""
    start = threading.Barrier(len(calls))

    def released(function, arguments):
        start.wait(timeout=60)
        function(*arguments)

    threads = [threading.Thread(target=released, args=call) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)


def test_a_new_key_is_claimed_and_completed_with_its_decision_and_tasks(store):
    claim = store.claim("ml:1", "churn", T0, LEASE)
    assert not claim.is_duplicate
    decision = decision_for("ml:1", tasks=2)
    store.complete(claim, decision)

    assert [d.id for d in store.decisions()] == [decision.id]
    stored = store.decision(decision.id)
    assert stored.evidence == {"key": "ml:1"} and stored.outcome is Outcome.RETRAIN
    assert [t.request["job"]["name"] for t in stored.tasks] == ["ml:1-0", "ml:1-1"]
    assert sorted(t.id for t in store.tasks()) == sorted(t.id for t in decision.tasks)


def test_a_completed_key_is_reported_as_duplicate_with_the_original_decision(store):
    claim = store.claim("ml:2", "churn", T0, LEASE)
    decision = decision_for("ml:2")
    store.complete(claim, decision)

    again = store.claim("ml:2", "churn", T0 + timedelta(hours=1), LEASE)
    assert again.is_duplicate and again.original == decision.id


def test_a_held_key_raises_in_progress_until_its_lease_expires_then_is_taken_over(store):
    first = store.claim("ml:3", "churn", T0, LEASE)
    with pytest.raises(EventInProgress):
        store.claim("ml:3", "churn", T0 + timedelta(minutes=4), LEASE)

    second = store.claim("ml:3", "churn", T0 + timedelta(minutes=6), LEASE)
    assert second.taken_over and not second.is_duplicate
    with pytest.raises(EventInProgress):  # the first holder lost its claim and cannot complete
        store.complete(first, decision_for("ml:3"))
    store.complete(second, decision_for("ml:3"))
    assert len(store.decisions()) == 1


def test_a_released_key_can_be_claimed_again_at_once(store):
    claim = store.claim("ml:4", "churn", T0, LEASE)
    store.release(claim)
    retry = store.claim("ml:4", "churn", T0 + timedelta(seconds=1), LEASE)
    assert not retry.is_duplicate
    store.complete(retry, decision_for("ml:4"))
    assert store.claim("ml:4", "churn", T0, LEASE).is_duplicate


def test_a_holder_whose_lease_was_taken_over_can_neither_release_nor_complete_the_key(store):
    first = store.claim("ml:t1", "churn", T0, LEASE)
    second = store.claim("ml:t1", "churn", T0 + timedelta(minutes=6), LEASE)
    store.release(first)  # too late: the key is the second holder's now
    with pytest.raises(EventInProgress):
        store.claim("ml:t1", "churn", T0 + timedelta(minutes=7), LEASE)
    with pytest.raises(EventInProgress):
        store.complete(first, decision_for("ml:t1"))

    store.complete(second, decision_for("ml:t1"))
    store.release(second)  # after completing, releasing gives nothing back: the key stays decided
    assert store.claim("ml:t1", "churn", T0 + timedelta(hours=1), LEASE).original == decision_for("ml:t1").id


def test_a_claim_completes_once(store):
    claim = store.claim("ml:t2", "churn", T0, LEASE)
    store.complete(claim, decision_for("ml:t2", tasks=1))
    with pytest.raises(EventInProgress):
        store.complete(claim, decision_for("ml:t2", tasks=2, at=T0 + timedelta(seconds=1)))
    assert len(store.decisions()) == 1 and len(store.tasks()) == 1


def test_concurrent_takeovers_of_an_expired_lease_have_exactly_one_winner(store):
    store.claim("ml:t3", "churn", T0, LEASE)
    claims, refused = [], []

    def take_over():
        try:
            claims.append(store.claim("ml:t3", "churn", T0 + timedelta(minutes=6), LEASE))
        except EventInProgress:
            refused.append(1)

    at_once(*[(take_over, ()) for _ in range(8)])
    assert [c.taken_over for c in claims] == [True] and len(refused) == 7
    store.complete(claims[0], decision_for("ml:t3"))
    assert len(store.decisions()) == 1


def test_a_decision_made_without_a_claim_is_written_with_its_completed_claim(store):
    decision = decision_for("ml:u1", tasks=2)
    assert store.complete_unclaimed("ml:u1", "churn", decision) is None

    assert store.claim("ml:u1", "churn", T0 + timedelta(hours=1), LEASE).original == decision.id
    assert [d.id for d in store.decisions()] == [decision.id]
    assert sorted(t.id for t in store.tasks()) == sorted(t.id for t in decision.tasks)


def test_a_second_write_of_a_decided_key_writes_nothing_and_names_the_first(store):
    first = decision_for("ml:u2", tasks=1)
    assert store.complete_unclaimed("ml:u2", "churn", first) is None
    second = decision_for("ml:u2", tasks=3, at=T0 + timedelta(seconds=1))
    assert store.complete_unclaimed("ml:u2", "churn", second) == first.id
    assert len(store.decisions()) == 1 and len(store.tasks()) == 1


def test_a_decision_made_without_a_claim_waits_for_a_held_lease_then_takes_it_over(store):
    held = store.claim("ml:u3", "churn", T0, LEASE)
    with pytest.raises(EventInProgress):
        store.complete_unclaimed("ml:u3", "churn", decision_for("ml:u3", at=T0 + timedelta(minutes=4)))
    assert store.decisions() == []

    late = decision_for("ml:u3", at=T0 + timedelta(minutes=6))
    assert store.complete_unclaimed("ml:u3", "churn", late) is None
    with pytest.raises(EventInProgress):  # the holder whose lease ran out cannot complete any more
        store.complete(held, decision_for("ml:u3"))
    assert [d.decided_at for d in store.decisions()] == [late.decided_at]


def test_concurrent_unclaimed_writes_of_the_same_keys_record_each_key_exactly_once(store):
    keys = [f"ml:uc{i}" for i in range(6)]
    written, originals, errors = [], [], []

    def worker():
        try:
            for key in keys:
                original = store.complete_unclaimed(key, "churn", decision_for(key, tasks=1))
                (originals if original else written).append(key)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    at_once(*[(worker, ()) for _ in range(8)])

    assert errors == []
    assert sorted(written) == sorted(keys)
    assert len(originals) == 8 * len(keys) - len(keys)
    assert len(store.decisions(limit=100)) == len(keys) and len(store.tasks(limit=100)) == len(keys)


def test_decisions_are_listed_newest_first_and_by_model(store):
    for minute, (key, model) in enumerate([("a", "churn"), ("b", "defect-detector"), ("c", "churn")]):
        claim = store.claim(key, model, T0, LEASE)
        store.complete(claim, decision_for(key, model=model, at=T0 + timedelta(minutes=minute)))
    store.append(decision_for("c", model="churn", at=T0 + timedelta(minutes=5), outcome=Outcome.DUPLICATE,
                              attempt="redelivery-1"))

    assert [d.evidence["key"] for d in store.decisions()] == ["c", "c", "b", "a"]
    assert [d.outcome for d in store.decisions(model="churn")] == [Outcome.DUPLICATE, Outcome.RETRAIN,
                                                                    Outcome.RETRAIN]
    assert [d.evidence["key"] for d in store.decisions(model="churn", limit=1)] == ["c"]
    assert store.decisions(model="nobody") == []


def test_due_tasks_are_updated_once_and_stale_updates_are_ignored(store):
    decision = decision_for("ml:5", tasks=1)
    store.complete(store.claim("ml:5", "churn", T0, LEASE), decision)
    [task] = store.due_tasks(T0, 10)
    assert store.due_tasks(T0 - timedelta(seconds=1), 10) == []

    from dataclasses import replace
    done = replace(task, state=TaskState.SUCCEEDED, attempts=1, result={"ok": True}, updated_at=T0)
    store.update_task(task, done)
    store.update_task(task, replace(task, state=TaskState.DEAD_LETTERED, attempts=1))  # stale: ignored

    [stored] = store.tasks()
    assert stored.state is TaskState.SUCCEEDED and stored.result == {"ok": True}
    assert store.task(task.id) == stored and store.task("nope") is None
    assert store.due_tasks(T0 + timedelta(days=1), 10) == []


SPEC = WindowSpec(records=10, minutes=60, grace_minutes=5, sample=4)


def telemetry_event(sequence, n=2, partition="0", at=T0, deployment="green", first_age=0):
    records = tuple(TelemetryRecord("churn", "3", "churn-ep", deployment, f"r{sequence}-{i}", at,
                                    {"age": first_age + i}, {"score": 0.5}) for i in range(n))
    return TelemetryEvent(partition, sequence, at, records)


def test_telemetry_counts_exactly_and_a_redelivered_event_adds_nothing(store):
    first = store.append_telemetry([telemetry_event(1), telemetry_event(2)], lambda m: SPEC, T0)
    again = store.append_telemetry([telemetry_event(2), telemetry_event(3)], lambda m: SPEC, T0)

    assert (first.stored, first.duplicates, first.closed) == (4, 0, ())
    assert (again.stored, again.duplicates) == (2, 2)
    assert store.telemetry_count("churn", "green") == 6
    key = WindowKey("churn", "green", SPEC.bucket(T0), 0)
    assert store.window(key) == Window(key, 6, False, "")


def test_a_full_window_closes_and_the_bucket_opens_its_next_part(store):
    result = store.append_telemetry([telemetry_event(s, n=3) for s in range(4)], lambda m: SPEC, T0)
    bucket = SPEC.bucket(T0)
    assert result.closed == (WindowKey("churn", "green", bucket, 0),) and result.stored == 12
    assert store.window(WindowKey("churn", "green", bucket, 0)) == Window(WindowKey("churn", "green", bucket, 0),
                                                                          10, True, "records")
    assert store.window(WindowKey("churn", "green", bucket, 1)).count == 2


def test_windows_close_by_time_after_their_grace_and_late_records_are_not_counted(store):
    store.append_telemetry([telemetry_event(1)], lambda m: SPEC, T0)
    bucket = SPEC.bucket(T0)
    # a record of this bucket received after the bucket ended, within the grace period: counted in its window
    within_grace = store.append_telemetry([telemetry_event(3, at=SPEC.bucket_end(bucket) - timedelta(minutes=1))],
                                          lambda m: SPEC, SPEC.bucket_end(bucket) + timedelta(minutes=3))
    assert (within_grace.stored, within_grace.late) == (2, 0)
    assert store.window(WindowKey("churn", "green", bucket, 0)).count == 4
    assert store.close_due_windows(SPEC.closes_at(bucket) - timedelta(seconds=1)) == []
    assert store.close_due_windows(SPEC.closes_at(bucket)) == [WindowKey("churn", "green", bucket, 0)]
    assert store.close_due_windows(SPEC.closes_at(bucket) + timedelta(hours=1)) == []
    late = store.append_telemetry([telemetry_event(2)], lambda m: SPEC, SPEC.closes_at(bucket))
    assert (late.stored, late.late) == (0, 2)
    assert store.window(WindowKey("churn", "green", bucket, 0)) == Window(WindowKey("churn", "green", bucket, 0),
                                                                          4, True, "time")


def test_the_sample_is_the_same_uniform_rows_whatever_the_store_and_order(store):
    events = [telemetry_event(s, n=2, first_age=10 * s) for s in range(5)]
    store.append_telemetry(list(reversed(events)), lambda m: SPEC, T0)
    key = WindowKey("churn", "green", SPEC.bucket(T0), 0)
    sample = store.window_sample(key, 4)
    expected = sorted((record_hash("0", s, i), 10 * s + i) for s in range(5) for i in range(2))[:4]
    assert [row["age"] for row in sample] == [age for _, age in expected]
    assert sample[0]["outputs.score"] == 0.5


def test_concurrent_appenders_to_one_window_count_exactly_and_close_it_once(store):
    spec = WindowSpec(records=50, minutes=60, grace_minutes=5, sample=50)
    closed, errors = [], []

    def appender(worker):
        try:
            for batch in range(5):
                events = [telemetry_event(1000 * worker + 10 * batch + j, n=2, partition=str(worker))
                          for j in range(3)]
                closed.extend(store.append_telemetry(events, lambda m: spec, T0).closed)
        except Exception as exc:  # reported below
            errors.append(exc)

    at_once(*[(appender, (w,)) for w in range(4)])
    assert errors == []
    assert store.telemetry_count("churn", "green") == 4 * 5 * 3 * 2
    assert sorted(k.part for k in closed) == [0, 1]  # 120 records: two full windows of 50, each closed once
    assert store.window(WindowKey("churn", "green", spec.bucket(T0), 2)).count == 20


def test_concurrent_claims_of_the_same_keys_complete_each_key_exactly_once(store):
    keys = [f"ml:c{i}" for i in range(6)]
    completed, duplicates, errors = [], [], []

    def worker():
        for key in keys:
            while True:
                try:
                    claim = store.claim(key, "churn", T0, LEASE)
                except EventInProgress:
                    continue  # like a redelivery: try again until the holder finishes
                except Exception as exc:  # pragma: no cover - reported below
                    errors.append(exc)
                    return
                if claim.is_duplicate:
                    duplicates.append(key)
                else:
                    store.complete(claim, decision_for(key))
                    completed.append(key)
                break

    at_once(*[(worker, ()) for _ in range(8)])

    assert errors == []
    assert sorted(completed) == sorted(keys)
    assert len(duplicates) == 8 * len(keys) - len(keys)
    assert len(store.decisions(limit=100)) == len(keys)


def decision_with_review(key, at=T0):
    from controlplane.domain.ledger import ReviewDraft
    from controlplane.domain.reviews import ReviewKind

    draft = ReviewDraft(kind=ReviewKind.PROMOTION, approvers=("ana@contoso.com", "bo@contoso.com"), quorum=2,
                        ttl=timedelta(hours=72), evidence={"accuracy": 0.91}, registrant="alice@contoso.com")
    verdict = Verdict(Outcome.REQUEST_APPROVAL, "gates passed", model="churn", version="4", reviews=(draft,))
    return record(verdict, key=key, event_id=key, source=Source.EVENTGRID, event_type="test", policy_version="v1",
                  received_at=at, decided_at=at)


def test_reviews_are_written_with_their_decision_and_listed_by_state(store):
    decision = decision_with_review("ml:r1")
    store.complete(store.claim("ml:r1", "churn", T0, LEASE), decision)
    [review] = decision.reviews

    stored = store.review(review.id)
    assert stored == review and stored.expires_at == T0 + timedelta(hours=72)
    from controlplane.domain.reviews import ReviewState
    assert [r.id for r in store.reviews(ReviewState.OPEN)] == [review.id]
    assert store.reviews(ReviewState.APPROVED) == [] and store.review("nope") is None


def test_a_review_changes_only_from_the_revision_it_was_read_at(store):
    from dataclasses import replace

    from controlplane.domain.reviews import ReviewState, cast_vote

    decision = decision_with_review("ml:r2")
    store.complete(store.claim("ml:r2", "churn", T0, LEASE), decision)
    review = store.review(decision.reviews[0].id)
    approve = cast_vote(review, approver="ana@contoso.com", decision="approve", comment="", nonce="n1", now=T0)
    reject = cast_vote(review, approver="bo@contoso.com", decision="reject", comment="", nonce="n2", now=T0)
    vote_decision = replace(decision_for("review:r2:vote", model="churn"), reviews=())

    assert store.update_review(review, approve, vote_decision) is True
    assert store.update_review(review, reject, replace(vote_decision, id="other")) is False  # lost the race
    stored = store.review(review.id)
    assert stored.state is ReviewState.OPEN and [v.approver for v in stored.votes] == ["ana@contoso.com"]
    assert store.decision(vote_decision.id) is not None and store.decision("other") is None


def test_concurrent_votes_on_one_review_have_exactly_one_winner(store):
    from controlplane.domain.reviews import cast_vote

    decision = decision_with_review("ml:r3")
    store.complete(store.claim("ml:r3", "churn", T0, LEASE), decision)
    review = store.review(decision.reviews[0].id)
    results = []

    def vote(approver, choice, n):
        updated = cast_vote(review, approver=approver, decision=choice, comment="", nonce=f"n{n}", now=T0)
        from dataclasses import replace
        results.append(store.update_review(review, updated, replace(decision_for(f"vote-{n}"), reviews=())))

    at_once(*[(vote, (a, c, n)) for n, (a, c) in
              enumerate([("ana@contoso.com", "approve"), ("bo@contoso.com", "reject")] * 4)])
    assert sorted(results) == [False] * 7 + [True]
    assert store.review(review.id).revision == 1


def a_rollout(rollout_id="ro-1"):
    from controlplane.domain.rollout import Rollout, plan

    return Rollout(id=rollout_id, endpoint="churn-ep", model="churn", version="4", deployment="churn-v4-abc",
                   model_ref="azureml:churn:4", steps=plan(20, [10, 100]), policy={"interval_minutes": 30},
                   created_at=T0, approvers=("ana@contoso.com",))


def test_a_rollout_is_created_once_and_advances_only_from_the_revision_it_was_read_at(store):
    from dataclasses import replace

    from controlplane.domain.rollout import RolloutState

    rollout = a_rollout()
    assert store.create_rollout(rollout) is True
    assert store.create_rollout(replace(rollout, step=3)) is False  # a redelivered start changes nothing
    assert store.rollout("ro-1") == rollout and store.rollout("nope") is None

    moved = replace(rollout, state=RolloutState.OBSERVING, step=0, applied_at=T0, revision=1)
    step_decision = replace(decision_for("rollout:ro-1:0", model="churn"), reviews=())
    assert store.update_rollout(rollout, moved, step_decision) is True
    assert store.update_rollout(rollout, replace(moved, step=1), replace(step_decision, id="late")) is False
    assert store.rollout("ro-1") == moved and store.decision("late") is None
    assert store.decision(step_decision.id) is not None

    assert [r.id for r in store.rollouts([RolloutState.OBSERVING])] == ["ro-1"]
    assert store.rollouts([RolloutState.COMPLETED]) == [] and len(store.rollouts()) == 1


def test_decisions_filter_by_outcome_and_event_type(store):
    for n, outcome in enumerate([Outcome.RETRAIN, Outcome.REVIEW, Outcome.RETRAIN, Outcome.NO_ACTION]):
        key = f"f{n}"
        store.complete(store.claim(key, "churn", T0, LEASE),
                       decision_for(key, outcome=outcome, at=T0 + timedelta(minutes=n)))
    retrains = store.decisions(model="churn", outcomes=[Outcome.RETRAIN])
    assert [d.evidence["key"] for d in retrains] == ["f2", "f0"]
    assert len(store.decisions(outcomes=[Outcome.RETRAIN, Outcome.REVIEW])) == 3
    assert len(store.decisions(model="churn", event_types=["test"])) == 4
    assert store.decisions(model="churn", event_types=["other"]) == []


def test_a_window_filled_exactly_leaves_no_empty_part_and_is_undecided_until_marked(store):
    result = store.append_telemetry([telemetry_event(s, n=5) for s in range(2)], lambda m: SPEC, T0)
    bucket = SPEC.bucket(T0)
    [key] = result.closed
    assert store.window(WindowKey("churn", "green", bucket, 1)) is None  # opened by the next record only
    assert store.undecided_windows() == [key]
    store.mark_window_decided(key)
    assert store.undecided_windows() == []
    store.append_telemetry([telemetry_event(9, n=1)], lambda m: SPEC, T0)
    assert store.window(WindowKey("churn", "green", bucket, 1)).count == 1


def an_alert(alert_id="a1", condition="Fired", severity="Sev2", at=T0):
    from controlplane.domain.events import Alert

    return Alert(alert_id=alert_id, rule="latency", rule_id="", severity=severity, signal_type="Metric",
                 monitor_condition=condition, monitoring_service="Platform", targets=(), configuration_items=(),
                 fired_at=at, resolved_at=at if condition == "Resolved" else None, description="", conditions=())


def test_an_incident_is_created_once_and_changes_only_from_the_revision_it_was_read_at(store):
    from controlplane.domain.incidents import IncidentState, observe

    opened, _ = observe(None, an_alert(), "g1", "latency", "churn-ep/blue", timedelta(hours=1), T0)
    assert store.incident("g1") is None
    assert store.put_incident(None, opened) is True
    assert store.put_incident(None, opened) is False  # a concurrent opener lost: it re-reads
    assert store.incident("g1") == opened

    repeated, _ = observe(opened, an_alert("a2"), "g1", "latency", "churn-ep/blue", timedelta(hours=1),
                          T0 + timedelta(minutes=5))
    closed, _ = observe(opened, an_alert("a1", "Resolved"), "g1", "latency", "churn-ep/blue", timedelta(hours=1),
                        T0 + timedelta(minutes=9))
    assert store.put_incident(opened, repeated) is True
    assert store.put_incident(opened, closed) is False  # read before the repeat: stale
    assert store.incident("g1") == repeated and repeated.fired == 2

    other, _ = observe(None, an_alert("b1"), "g2", "cpu", "churn-ep/green", timedelta(hours=1),
                       T0 + timedelta(minutes=7))
    store.put_incident(None, other)
    assert [i.group for i in store.incidents()] == ["g2", "g1"]  # most recently updated first
    assert [i.group for i in store.incidents(IncidentState.OPEN, limit=1)] == ["g2"]
    assert store.incidents(IncidentState.CLOSED) == []


def test_concurrent_openers_of_one_incident_have_exactly_one_winner(store):
    from dataclasses import replace

    from controlplane.domain.incidents import observe

    opened, _ = observe(None, an_alert(), "g3", "latency", "churn-ep/blue", timedelta(hours=1), T0)
    results = []
    at_once(*[(lambda n: results.append(store.put_incident(None, replace(opened, fired=n + 1))), (n,))
              for n in range(8)])
    assert sorted(results) == [False] * 7 + [True]
    assert store.incident("g3").fired in range(1, 9)


def test_a_guarded_replace_of_what_was_never_written_writes_nothing(store):
    from dataclasses import replace

    from controlplane.domain.incidents import observe
    from controlplane.domain.reviews import cast_vote

    decision = decision_with_review("ml:g1")
    [review] = decision.reviews
    task = decision_for("ml:g2", tasks=1).tasks[0]
    rollout = a_rollout("ro-never")
    incident, _ = observe(None, an_alert(), "g-never", "latency", "churn-ep/blue", timedelta(hours=1), T0)
    vote = replace(decision_for("ml:g3"), reviews=())

    approved = cast_vote(review, approver="ana@contoso.com", decision="approve", comment="", nonce="n", now=T0)
    assert store.update_review(review, approved, vote) is False
    assert store.update_rollout(rollout, replace(rollout, revision=1), vote) is False
    assert store.put_incident(incident, replace(incident, revision=incident.revision + 1)) is False
    store.update_task(task, replace(task, state=TaskState.SUCCEEDED, attempts=1))
    assert store.review(review.id) is None and store.rollout("ro-never") is None
    assert store.incident("g-never") is None and store.task(task.id) is None
    assert store.decisions() == []


def test_retraining_jobs_are_the_latest_that_started_a_job_newest_first(store):
    from dataclasses import replace

    for n, (outcome, job) in enumerate([(Outcome.RETRAIN, "job-1"), (Outcome.NO_ACTION, None),
                                        (Outcome.RETRAIN, None), (Outcome.RETRAIN, "job-2"),
                                        (Outcome.RETRAIN, "job-3")]):
        decision = decision_for(f"rt:{n}", at=T0 + timedelta(minutes=n), outcome=outcome)
        decision = replace(decision, evidence={"job": job} if job else {"shadow": {}})
        store.complete(store.claim(f"rt:{n}", "churn", T0, LEASE), decision)
    store.complete(store.claim("rt:other", "fraud", T0, LEASE),
                   replace(decision_for("rt:other", model="fraud", at=T0 + timedelta(hours=1)), evidence={"job": "x"}))

    assert store.retraining_jobs("churn", 2) == [(T0 + timedelta(minutes=4), "job-3"),
                                                 (T0 + timedelta(minutes=3), "job-2")]
    assert [job for _, job in store.retraining_jobs("churn", 5)] == ["job-3", "job-2", "job-1"]
    assert store.retraining_jobs("nobody", 3) == []


def test_decisions_filter_by_version_among_many_others(store):
    from dataclasses import replace

    keys = [("v3", "3", Outcome.REQUEST_APPROVAL), *((f"n{n}", "3", Outcome.NO_ACTION) for n in range(30)),
            ("v4", "4", Outcome.REJECT)]
    for n, (key, version, outcome) in enumerate(keys):
        decision = replace(decision_for(key, outcome=outcome, at=T0 + timedelta(seconds=n)), version=version)
        store.complete(store.claim(key, "churn", T0, LEASE), decision)

    verdicts = store.decisions(model="churn", limit=5, outcomes=[Outcome.REQUEST_APPROVAL, Outcome.REJECT],
                               version="3")
    assert [d.evidence["key"] for d in verdicts] == ["v3"]
    assert [d.evidence["key"] for d in store.decisions(model="churn", version="4")] == ["v4"]
    assert len(store.decisions(model="churn", version="3", limit=100)) == 31


def test_a_database_from_the_first_schema_is_upgraded_and_its_decisions_stay_findable(tmp_path):
    import sqlite3

    from controlplane.adapters.sqlite_store import SqliteStore
    from controlplane.domain.ledger import dumps

    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE claims (key TEXT PRIMARY KEY, partition TEXT NOT NULL, state TEXT NOT NULL,
            token TEXT NOT NULL, lease_until TEXT NOT NULL, decision_id TEXT, updated_at TEXT NOT NULL);
        CREATE TABLE decisions (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, model TEXT,
            decided_at TEXT NOT NULL, body TEXT NOT NULL);
        CREATE INDEX decisions_by_model ON decisions (model, decided_at DESC, seq DESC);
        CREATE TABLE tasks (id TEXT PRIMARY KEY, decision_id TEXT NOT NULL, state TEXT NOT NULL,
            due_at TEXT NOT NULL, body TEXT NOT NULL);""")
    earlier = decision_for("old:1", outcome=Outcome.REQUEST_APPROVAL)
    old.execute("INSERT INTO decisions (id, model, decided_at, body) VALUES (?, ?, ?, ?)",
                (earlier.id, earlier.model, earlier.decided_at.isoformat(), dumps(earlier)))
    old.commit()
    old.close()

    store = SqliteStore(str(path))

    [found] = store.decisions(model="churn", outcomes=[Outcome.REQUEST_APPROVAL], version="3")
    assert found.id == earlier.id
    assert store.decisions(model="churn", event_types=["test"])[0].id == earlier.id
    store.complete(store.claim("new:1", "churn", T0, LEASE), decision_for("new:1", at=T0 + timedelta(minutes=1)))
    assert [d.evidence["key"] for d in store.decisions(model="churn")] == ["new:1", "old:1"]
    assert [d.evidence["key"] for d in store.decisions()] == ["new:1", "old:1"]


def test_indexes_declared_otherwise_than_a_database_has_them_are_built_again(tmp_path):
    import sqlite3

    from controlplane.adapters.sqlite_store import _INDEXES, SqliteStore

    path = str(tmp_path / "ledger.db")
    SqliteStore(path).complete_unclaimed("ml:1", "churn", decision_for("ml:1", tasks=1))
    with sqlite3.connect(path) as db:  # as an earlier version built them: newest first, descending
        db.execute("DROP INDEX decisions_by_time")
        db.execute("CREATE INDEX decisions_by_time ON decisions (decided_at DESC, seq DESC)")

    store = SqliteStore(path)
    with sqlite3.connect(path) as db:
        built = dict(db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"))
    assert built == {name: f"CREATE INDEX {name} ON {definition}" for name, definition in _INDEXES.items()}
    assert [d.evidence["key"] for d in store.decisions()] == ["ml:1"]

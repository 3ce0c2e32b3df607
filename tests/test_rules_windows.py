"""The window rules as promised: event-time buckets, the grace period, the sample bound and the record hash."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controlplane.domain.events import TelemetryEvent, TelemetryRecord
from controlplane.domain.windows import (
    HASH_SPACE,
    Placement,
    WindowKey,
    WindowSpec,
    by_deployment,
    place,
    record_hash,
    sample_row,
)

HOUR = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def window(records=10_000, minutes=60, grace_minutes=5, sample=10_000) -> WindowSpec:
    return WindowSpec(records=records, minutes=minutes, grace_minutes=grace_minutes, sample=sample)


def record(at: datetime, model="churn", deployment="blue") -> TelemetryRecord:
    return TelemetryRecord(model=model, version="4", endpoint="churn-ep", deployment=deployment, request_id="r1",
                           timestamp=at,
                           inputs={"age": 41}, outputs={"score": 0.7})


def event(*records: TelemetryRecord) -> TelemetryEvent:
    return TelemetryEvent(partition="0", sequence_number=17, enqueued_time=HOUR, records=tuple(records))


def test_a_bucket_is_the_event_time_floored_to_the_window_and_closes_after_its_grace():
    spec = window(minutes=60, grace_minutes=5)
    bucket = spec.bucket(HOUR + timedelta(minutes=59, seconds=59))
    assert bucket == spec.bucket(HOUR) == int(HOUR.timestamp()) // 3600
    assert spec.bucket(HOUR + timedelta(hours=1)) == bucket + 1
    assert spec.bucket_end(bucket) == HOUR + timedelta(hours=1)
    assert spec.closes_at(bucket) == HOUR + timedelta(hours=1, minutes=5)
    assert window(minutes=15).bucket(HOUR + timedelta(minutes=15)) == int(HOUR.timestamp()) // 900 + 1


def test_records_within_the_grace_period_count_and_later_ones_are_late():
    spec = window(minutes=60, grace_minutes=5)
    e = event(record(HOUR + timedelta(minutes=30)))
    inside, late = place(e, list(enumerate(e.records)), lambda model: spec, HOUR + timedelta(hours=1, minutes=4))
    assert late == 0 and [p.bucket for p in inside] == [spec.bucket(HOUR)]
    _, late = place(e, list(enumerate(e.records)), lambda model: spec, HOUR + timedelta(hours=1, minutes=5))
    assert late == 1
    mixed = event(record(HOUR - timedelta(hours=2)), record(HOUR - timedelta(hours=1)), record(HOUR))
    placed, late = place(mixed, list(enumerate(mixed.records)), lambda model: spec, HOUR + timedelta(minutes=10))
    assert late == 2 and [p.index for p in placed] == [2]  # late records are counted, the rest still placed
    without_grace = window(minutes=60, grace_minutes=0)
    _, late = place(e, list(enumerate(e.records)), lambda model: without_grace, HOUR + timedelta(hours=1))
    assert late == 1


def test_each_model_has_its_own_window_spec_and_placements_carry_the_records_hash():
    e = event(record(HOUR, model="churn"), record(HOUR, model="vision"))
    specs = {"churn": window(minutes=60), "vision": window(minutes=10)}
    placed, late = place(e, list(enumerate(e.records)), specs.__getitem__, HOUR + timedelta(minutes=5))
    assert late == 0
    assert [(p.index, p.spec, p.bucket) for p in placed] == [(0, specs["churn"], specs["churn"].bucket(HOUR)),
                                                           (1, specs["vision"], specs["vision"].bucket(HOUR))]
    assert [p.hash for p in placed] == [record_hash("0", 17, 0), record_hash("0", 17, 1)]
    assert placed[1].record is e.records[1]


def test_the_record_hash_is_a_stable_63_bit_hash_of_the_records_position():
    h = record_hash("0", 17, 3)
    assert h == record_hash("0", 17, 3) and 0 <= h < HASH_SPACE
    assert len({h, record_hash("1", 17, 3), record_hash("0", 18, 3), record_hash("0", 17, 4),
                record_hash("0", 173, 0)}) == 5
    assert max(record_hash("p", 1, i) for i in range(2000)) > HASH_SPACE // 2  # the top bit is the only one cut


@pytest.mark.parametrize(("sample", "records", "share"), [(10, 100, 0.1), (100, 100, 1.0), (200, 100, 1.0),
                                                         (1, 3, 1 / 3)])
def test_the_sample_keeps_sample_over_records_of_the_hash_space(sample, records, share):
    spec = window(records=records, sample=sample)
    assert spec.keep_below == (HASH_SPACE if sample >= records else HASH_SPACE * sample // records)
    assert abs(spec.keep_below / HASH_SPACE - share) < 1e-9


def test_the_sample_bound_keeps_about_sample_of_records_and_exactly_those_under_the_bound():
    spec = window(records=1000, sample=100)
    hashes = [record_hash("0", 5, i) for i in range(1000)]
    kept = [Placement(i, record(HOUR), spec, 0, h).kept for i, h in enumerate(hashes)]
    assert 70 <= sum(kept) <= 130
    assert all(k == (h < spec.keep_below) for k, h in zip(kept, hashes, strict=True))
    assert not Placement(0, record(HOUR), spec, 0, spec.keep_below).kept
    assert Placement(0, record(HOUR), spec, 0, spec.keep_below - 1).kept
    assert all(Placement(0, record(HOUR), window(records=10, sample=10), 0, h).kept for h in hashes)


def test_records_group_by_model_and_deployment_in_order_with_their_index():
    a, b, c = record(HOUR, deployment="blue"), record(HOUR, model="alpha"), record(HOUR, deployment="blue")
    groups = by_deployment(event(a, b, c))
    assert list(groups) == [("alpha", "blue"), ("churn", "blue")]
    assert groups[("churn", "blue")] == [(0, a), (2, c)] and groups[("alpha", "blue")] == [(1, b)]


def test_a_sample_row_keeps_inputs_and_prefixed_outputs_and_a_key_prints_its_parts():
    assert sample_row(record(HOUR)) == {"age": 41, "outputs.score": 0.7}
    assert str(WindowKey("churn", "blue", 491234, 2)) == "churn/blue/491234.2"

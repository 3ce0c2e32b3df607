"""The rollout rules as promised: traffic per step, the rollback target, and each step's health judgement."""
from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from controlplane.domain.rollout import Rollout, RolloutState, Step, baseline_of, judge, plan, target
from controlplane.domain.signals import DeploymentHealth

GATE = {"min_requests": 100, "max_p95_latency_ms": 500.0, "max_latency_ratio": 1.5, "max_error_rate": 0.05,
        "max_error_rate_increase": 0.01}
OLD = DeploymentHealth("blue", 1000, 200.0, 0.01)


def new(requests=1000, p95=210.0, errors=0.012):
    return DeploymentHealth("green", requests, p95, errors)


# ---- plan and traffic ---------------------------------------------------------------------------------------------

def test_a_plan_mirrors_first_only_when_asked():
    assert plan(20, [10, 50, 100]) == (Step("mirror", 20), Step("traffic", 10), Step("traffic", 50),
                                       Step("traffic", 100))
    assert plan(None, [50, 100]) == (Step("traffic", 50), Step("traffic", 100))
    assert plan(0, [100]) == (Step("traffic", 100),)
    assert str(Step("traffic", 10)) == "10%" and str(Step("mirror", 20)) == "mirror 20%"


def test_a_mirror_step_keeps_live_traffic_and_mirrors_the_share():
    assert target(Step("mirror", 20), "green", {"blue": 100}) == ({"blue": 100}, {"green": 20})


def test_a_traffic_step_spreads_the_rest_over_the_baseline_summing_to_100():
    live, mirror = target(Step("traffic", 10), "green", {"blue": 100})
    assert live == {"blue": 90, "green": 10} and mirror == {}
    live, _ = target(Step("traffic", 10), "green", {"blue": 67, "red": 33})
    assert live == {"blue": 61, "red": 29, "green": 10} and sum(live.values()) == 100  # 60.3 + 29.7: blue rounds up
    live, _ = target(Step("traffic", 50), "green", {"blue": 1, "red": 2})
    assert live == {"blue": 16, "red": 34, "green": 50}
    assert target(Step("traffic", 100), "green", {}) == ({"green": 100}, {})


def test_the_rollback_target_is_the_others_scaled_back_to_100():
    assert baseline_of({"blue": 90, "green": 10}, "green") == {"blue": 100}
    assert baseline_of({"blue": 30, "red": 20, "green": 50}, "green") == {"blue": 60, "red": 40}
    assert baseline_of({"blue": 33, "red": 33, "gray": 0, "green": 34}, "green") == {"blue": 50, "red": 50}
    assert baseline_of({"blue": 2, "red": 1, "green": 97}, "green") == {"blue": 67, "red": 33}
    assert baseline_of({"green": 100}, "green") == {} and baseline_of({}, "green") == {}


def test_a_rollout_survives_json_and_knows_its_current_step():
    rollout = Rollout(id="r1", endpoint="churn-ep", model="churn", version="4", deployment="green",
                      model_ref="azureml:churn:4", steps=plan(20, [50, 100]), policy={"min_requests": 100},
                      created_at=datetime(2026, 11, 22, 10, tzinfo=UTC), state=RolloutState.OBSERVING, step=1,
                      applied_at=datetime(2026, 11, 22, 10, 30, tzinfo=UTC), baseline={"blue": 100},
                      approvers=("ana@contoso.com",))
    data = rollout.to_json()
    assert data["created_at"] == "2026-11-22T10:00:00+00:00" and data["applied_at"] == "2026-11-22T10:30:00+00:00"
    assert Rollout.from_json(data) == rollout
    assert Rollout.from_json({**data, "applied_at": None}).applied_at is None
    assert rollout.current == Step("traffic", 50)
    assert replace(rollout, step=-1).current is None and replace(rollout, step=3).current is None
    assert replace(rollout, step=0).current == Step("mirror", 20)


# ---- judgement ----------------------------------------------------------------------------------------------------

def test_too_little_traffic_is_no_data_and_the_minimum_itself_is_enough():
    short = judge(GATE, new(requests=99), OLD)
    assert short.verdict == "no_data" and "99 requests on green, fewer than the 100 needed" in short.reasons[0]
    assert judge(GATE, new(requests=100), OLD).verdict == "healthy"


def test_a_healthy_step_says_what_it_measured():
    j = judge(GATE, new(), OLD)
    assert j.verdict == "healthy" and j.reasons == ("1000 requests, p95 210 ms, 5xx 1.20%",)
    assert (j.new, j.old) == (new(), OLD)
    assert judge(GATE, DeploymentHealth("green", 500, None, None), OLD).reasons == ("500 requests",)


def test_the_absolute_p95_limit_is_a_ceiling_not_a_floor():
    assert judge(GATE, new(p95=500.0), None).verdict == "healthy"
    j = judge(GATE, new(p95=501.0), None)
    assert j.verdict == "unhealthy" and j.reasons == ("p95 latency 501 ms over 500 ms",)
    assert judge({**GATE, "max_p95_latency_ms": None}, new(p95=5000.0), None).verdict == "healthy"


def test_the_latency_ratio_compares_with_the_old_deployment():
    assert judge(GATE, new(p95=300.0), OLD).verdict == "healthy"  # exactly 1.5x
    j = judge(GATE, new(p95=302.0), OLD)
    assert j.verdict == "unhealthy" and j.reasons == (
        "p95 latency 302 ms is 1.51x the old deployment's 200 ms (limit 1.5x)",)
    assert judge(GATE, new(p95=302.0), DeploymentHealth("blue", 1000, None, 0.01)).verdict == "healthy"
    assert judge(GATE, new(p95=302.0), DeploymentHealth("blue", 1000, 0.0, 0.01)).verdict == "healthy"


def test_the_error_rate_limit_is_a_ceiling():
    assert judge(GATE, new(errors=0.05), DeploymentHealth("blue", 1000, 200.0, 0.045)).verdict == "healthy"
    j = judge({**GATE, "max_error_rate_increase": None}, new(errors=0.06), OLD)
    assert j.verdict == "unhealthy" and j.reasons == ("5xx rate 6.00% over 5.00%",)


def test_the_error_rate_increase_is_measured_against_the_old_deployment():
    assert judge(GATE, new(errors=0.02), OLD).verdict == "healthy"  # exactly +1 point
    j = judge(GATE, new(errors=0.03), OLD)
    assert j.verdict == "unhealthy" and j.reasons == ("5xx rate 3.00% is 2.00% above the old deployment's",)
    assert judge(GATE, new(errors=0.03), None).verdict == "healthy"
    assert judge(GATE, new(errors=0.03), DeploymentHealth("blue", 10, 200.0, None)).verdict == "healthy"
    assert judge(GATE, new(errors=0.005), DeploymentHealth("blue", 10, 200.0, 0.04)).verdict == "healthy"


def test_every_limit_crossed_is_a_reason():
    j = judge(GATE, new(p95=900.0, errors=0.2), OLD)
    assert j.verdict == "unhealthy" and len(j.reasons) == 4


@pytest.mark.parametrize("missing", ["max_p95_latency_ms", "max_latency_ratio", "max_error_rate",
                                     "max_error_rate_increase"])
def test_a_limit_left_out_is_not_checked(missing):
    gate = {"min_requests": 1, missing: 0.0}
    assert judge(gate, new(p95=900.0, errors=0.2), OLD).verdict == "unhealthy"
    assert judge({"min_requests": 1}, new(p95=900.0, errors=0.2), OLD).verdict == "healthy"

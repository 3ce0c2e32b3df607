"""Alerts end to end through the handler: policy rules, incidents, actions, tiers, enrichment, auth."""
from __future__ import annotations

import json
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from controlplane.adapters.artifacts import LocalArtifacts
from controlplane.adapters.signals import EnrichedNotifier, SignalsCache
from controlplane.domain.errors import StoreUnavailable, TransientError
from controlplane.domain.incidents import IncidentState
from controlplane.domain.ledger import Outcome, Task, TaskKind
from controlplane.domain.policy import parse_policy
from controlplane.domain.reviews import ReviewKind
from controlplane.domain.rollout import Rollout, RolloutState, plan
from controlplane.domain.signals import Series, Signals
from controlplane.handlers.alerts import receive_alert
from controlplane.ports.gateway import DeploymentInfo, EndpointState
from controlplane.ports.store import Services
from tests.fakes import FakeClock, FakeStore, FakeWorkspace, RecordingDispatcher
from tests.support import event_bytes

POLICY = """
models:
  - name: "churn*"
    retraining: {pipeline: pipelines/retrain-churn.yml, experiment: churn-retraining}
alerts:
  notify: [infrastructure]
  tiers: {Sev0: [oncall, infrastructure], Sev1: [oncall, infrastructure], Sev4: []}
  teams: {infrastructure: [infra-oncall@contoso.com], ml: [ml-leads@contoso.com]}
  rules:
    - name: latency-rollback
      match: {metric: "RequestLatency*", target: "churn-ep*"}
      actions: [rollback, notify]
    - name: cpu-scale
      match: {metric: "CpuUtilization*"}
      actions: [scale, review, notify]
      scale: {by: 1, max_instances: 3}
    - name: errors-retrain
      match: {metric: RequestsPerMinute}
      actions: [retrain, notify]
    - name: platform
      match: {signal_type: Activity Log}
      actions: [review, notify]
    - name: anything-else
      actions: [scale, notify]
"""
NOW = datetime(2026, 11, 22, 12, 6, tzinfo=UTC)
ENDPOINT = "churn-ep"


@pytest.fixture
def workspace():
    """churn-ep: blue (churn:4, rolled out two hours ago) serves 100%; green (churn:3) was scaled down to one."""
    ws = FakeWorkspace()
    ws.endpoints[ENDPOINT] = EndpointState(ENDPOINT, {"blue": 100, "green": 0}, {}, (
        DeploymentInfo(ENDPOINT, "blue", "azureml:churn:4", "Standard_DS3_v2", 2, "Succeeded"),
        DeploymentInfo(ENDPOINT, "green", "azureml:churn:3", "Standard_DS3_v2", 1, "Succeeded")))
    return ws


def services_with(workspace, store=None, policy=POLICY, clock=None):
    return Services(store=store or FakeStore(), clock=clock or FakeClock(NOW), dispatcher=RecordingDispatcher(),
                    policy=parse_policy(policy), gateway=workspace)


def a_rollout(state=RolloutState.COMPLETED, created=NOW - timedelta(hours=2), deployment="blue"):
    return Rollout(id=f"ro-{deployment}", endpoint=ENDPOINT, model="churn", version="4", deployment=deployment,
                   model_ref="azureml:churn:4", steps=plan(None, [10, 50, 100]),
                   policy={"instance_count": 2, "interval_minutes": 30}, created_at=created, state=state, step=2,
                   applied_at=created, baseline={"green": 100}, old_deployment="green")


@pytest.fixture
def services(workspace):
    wired = services_with(workspace)
    wired.store.create_rollout(a_rollout())
    return wired


def alert(name, **essentials):
    body = json.loads(event_bytes(name))
    body["data"]["essentials"].update(essentials)
    return json.dumps(body).encode()


def decide(services, name, **essentials):
    return receive_alert(services, alert(name, **essentials) if essentials else event_bytes(name)).decision


def kinds(decision):
    return sorted(t.kind.value for t in decision.tasks)


def test_a_latency_alert_rolls_a_fresh_deployment_back_and_tells_the_severity_tier(services, workspace):
    decision = decide(services, "alert_latency_blue_fired.json")

    assert decision.outcome is Outcome.ROLLBACK
    assert (decision.model, decision.version) == ("churn", "4")  # the model the alert is about
    [rollback] = [t for t in decision.tasks if t.kind is TaskKind.ROLLBACK]
    assert rollback.request == {"operation": "online_endpoints.rollback", "endpoint": ENDPOINT,
                                "traffic": {"green": 100}, "mirror": {}, "scale": {"green": 2},
                                "from_deployment": "blue", "correlation_id": decision.id}
    told = sorted(t.request["channel"] for t in decision.tasks if t.kind is TaskKind.NOTIFY)
    assert told == ["infrastructure", "oncall"]  # Sev1's tier
    assert decision.evidence["policy_rule"] == "latency-rollback"
    assert decision.evidence["incident"]["effect"] == "opened"
    assert "rolling churn-ep back from blue to green 100%" in decision.reason


def test_repeated_fires_while_open_do_not_repeat_the_action_and_resolved_closes_with_one_notice(services):
    opened = decide(services, "alert_latency_blue_fired.json")
    again = decide(services, "alert_latency_blue_fired_again.json")
    resolved = decide(services, "alert_latency_blue_resolved.json")
    redelivered = decide(services, "alert_latency_blue_fired_again.json")

    assert again.outcome is Outcome.NO_ACTION and again.tasks == ()
    assert again.evidence["incident"]["id"] == opened.evidence["incident"]["id"]
    assert "alert 2 of this incident" in again.reason
    assert resolved.outcome is Outcome.NOTIFY and kinds(resolved) == ["notify", "notify"]
    assert {t.request["event"] for t in resolved.tasks} == {"incident.resolved"}
    assert redelivered.outcome is Outcome.DUPLICATE
    [incident] = services.store.incidents()
    assert incident.state is IncidentState.CLOSED and incident.fired == 2
    rollbacks = [t for d in services.store.decisions() for t in d.tasks if t.kind is TaskKind.ROLLBACK]
    assert len(rollbacks) == 1


def test_an_active_rollout_is_stopped_so_no_sweep_moves_traffic_again(workspace):
    wired = services_with(workspace)
    wired.store.create_rollout(a_rollout(state=RolloutState.OBSERVING, created=NOW - timedelta(minutes=40)))

    decision = decide(wired, "alert_latency_blue_fired.json")

    assert decision.outcome is Outcome.ROLLBACK
    stopped = wired.store.rollout("ro-blue")
    assert stopped.state is RolloutState.ROLLED_BACK and stopped.revision == 1
    [halt] = wired.store.decisions(event_types=["rollout.rolled_back"])
    assert "stopped" in halt.reason and "churn-ep-latency-p95" in halt.reason


def test_a_deployment_not_rolled_out_recently_is_not_rolled_back_but_people_are_told(workspace):
    wired = services_with(workspace)
    wired.store.create_rollout(a_rollout(created=NOW - timedelta(days=3)))

    decision = decide(wired, "alert_latency_blue_fired.json")

    assert decision.outcome is Outcome.NOTIFY and kinds(decision) == ["notify", "notify"]
    assert "not done: rollback: blue was not rolled out by the control plane in the last 24 h" in decision.reason
    assert workspace.called("set_traffic") == []


def test_a_cpu_alert_scales_within_bounds_and_opens_an_infrastructure_review(services):
    decision = decide(services, "alert_cpu_blue_fired.json")

    assert decision.outcome is Outcome.SCALE
    [scale] = [t for t in decision.tasks if t.kind is TaskKind.SCALE]
    assert scale.request == {"operation": "online_deployments.scale", "endpoint": ENDPOINT, "deployment": "blue",
                             "instance_count": 3, "correlation_id": decision.id}
    [review] = decision.reviews
    assert review.kind is ReviewKind.ALERT and review.approvers == ("infra-oncall@contoso.com",)
    assert review.evidence["owner"] == "infrastructure" and review.evidence["target"] == "churn-ep/blue"
    [signals] = [t for t in decision.tasks if t.kind is TaskKind.REVIEW]
    assert signals.request["operation"] == "alert.signals"
    assert signals.request["signals"]["metrics"] == ["CpuUtilizationPercentage"]
    assert "review by the infrastructure team" in decision.reason


def test_scaling_stops_at_the_rule_bound(services, workspace):
    workspace.endpoints[ENDPOINT] = replace(workspace.endpoints[ENDPOINT], deployments=(
        DeploymentInfo(ENDPOINT, "blue", "azureml:churn:4", "Standard_DS3_v2", 3, "Succeeded"),))
    decision = decide(services, "alert_cpu_blue_fired.json")
    assert decision.outcome is Outcome.REVIEW and TaskKind.SCALE.value not in kinds(decision)
    assert "scale: blue has 3 instances already, the rule's bound (1..3)" in decision.reason


def test_an_alert_on_something_that_is_not_an_endpoint_is_recorded_and_told_with_no_action(services, workspace):
    decision = decide(services, "alert_unknown_target.json")

    assert decision.outcome is Outcome.NOTIFY and kinds(decision) == ["notify"]
    assert decision.evidence["policy_rule"] == "anything-else"
    assert "is not an Azure ML online endpoint" in decision.reason
    assert decision.model is None and workspace.called("get_endpoint") == []


def test_an_error_alert_retrains_the_model_the_endpoint_serves(services):
    decision = decide(services, "alert_pascal_essentials.json")
    assert decision.outcome is Outcome.RETRAIN
    [job] = [t for t in decision.tasks if t.kind is TaskKind.RETRAINING]
    assert job.request["job"]["inputs"]["model_name"] == "churn"
    assert job.request["job"]["tags"]["controlplane.trigger"] == "alert"


def test_platform_signals_go_to_the_infrastructure_team(services):
    decision = decide(services, "alert_quota_activity_log.json")
    assert decision.outcome is Outcome.REVIEW
    assert decision.reviews[0].approvers == ("infra-oncall@contoso.com",)


def test_a_more_severe_alert_escalates_the_incident_and_tells_the_new_tier_without_acting_again(services):
    decide(services, "alert_cpu_blue_fired.json", severity="Sev3")
    escalated = decide(services, "alert_cpu_blue_fired.json", alertId="cpu-2", severity="Sev0")

    assert escalated.evidence["incident"]["effect"] == "escalated"
    assert kinds(escalated) == ["notify", "notify"]  # Sev0: oncall and infrastructure; no second scale
    assert {t.request["event"] for t in escalated.tasks} == {"incident.escalated"}


def test_nobody_is_told_at_a_severity_whose_tier_is_empty(services):
    decision = decide(services, "alert_unknown_target.json", severity="Sev4")
    assert decision.tasks == () and "nobody to tell at this severity" in decision.reason


def test_a_shadow_rule_records_what_it_would_do_and_dispatches_nothing(workspace):
    shadow = POLICY.replace("actions: [rollback, notify]", "actions: [rollback, notify]\n      mode: shadow")
    wired = services_with(workspace, policy=shadow)
    wired.store.create_rollout(a_rollout(state=RolloutState.OBSERVING))

    decision = decide(wired, "alert_latency_blue_fired.json")

    assert decision.outcome is Outcome.ROLLBACK and decision.tasks == ()
    assert "shadow mode" in decision.reason
    assert [t["kind"] for t in decision.evidence["shadow"]["tasks"]] == ["rollback", "notify", "notify"]
    assert wired.store.rollout("ro-blue").state is RolloutState.OBSERVING  # nothing stopped


def test_reopening_within_the_cooldown_tells_but_does_not_act(services):
    decide(services, "alert_latency_blue_fired.json")
    decide(services, "alert_latency_blue_resolved.json")
    services.clock.advance(minutes=10)
    reopened = decide(services, "alert_latency_blue_fired.json", alertId="latency-again")

    assert reopened.evidence["incident"]["effect"] == "reopened_in_cooldown"
    assert reopened.evidence["incident"]["number"] == 2
    assert TaskKind.ROLLBACK.value not in kinds(reopened) and "within the rule's 60-minute cooldown" in reopened.reason


def test_a_crash_between_the_incident_and_the_decision_decides_the_same_on_retry(services, monkeypatch):
    complete = services.store.complete

    def crash(claim, decision):
        monkeypatch.setattr(services.store, "complete", complete)
        raise StoreUnavailable("store", "connection reset")

    monkeypatch.setattr(services.store, "complete", crash)
    with pytest.raises(StoreUnavailable):
        decide(services, "alert_latency_blue_fired.json")
    assert services.store.incidents()[0].fired == 1  # the incident was written

    retried = decide(services, "alert_latency_blue_fired.json")
    assert retried.outcome is Outcome.ROLLBACK and retried.evidence["incident"]["effect"] == "opened"
    assert services.store.incidents()[0].fired == 1


def test_concurrent_alerts_of_one_incident_act_exactly_once(tmp_path, workspace):
    from controlplane.adapters.sqlite_store import SqliteStore

    wired = services_with(workspace, store=SqliteStore(str(tmp_path / "cp.db")))
    wired.store.create_rollout(a_rollout())
    bodies = [alert("alert_latency_blue_fired.json", alertId=f"storm-{n}") for n in range(8)]
    start, decisions = threading.Barrier(8), []

    def post(body):
        start.wait()
        decisions.append(receive_alert(wired, body).decision)

    threads = [threading.Thread(target=post, args=(body,)) for body in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    effects = sorted(d.evidence["incident"]["effect"] for d in decisions)
    assert effects == ["opened"] + ["repeated"] * 7
    assert sum(t.kind is TaskKind.ROLLBACK for d in decisions for t in d.tasks) == 1
    assert wired.store.incidents()[0].fired == 8


def test_an_unreachable_workspace_is_a_transient_failure_the_sender_retries(services, workspace, monkeypatch):
    def down(name):
        raise TransientError("workspace", "throttled")

    services.store.rollout_book.clear()  # the model is not known from the store: the workspace is asked
    monkeypatch.setattr(workspace, "get_endpoint", down)
    with pytest.raises(TransientError):
        decide(services, "alert_cpu_blue_fired.json")
    assert services.store.decisions() == [] and services.store.incidents() == []


class CountingReader:
    def __init__(self, fail: bool = False) -> None:
        self.calls, self.fail = 0, fail

    def recent_signals(self, resource_id, endpoint, deployment, metrics, start, end, bin_minutes=5):
        self.calls += 1
        if self.fail:
            raise TransientError("Log Analytics", "throttled")
        points = ((start, 410.0), (end, 1250.0))
        return Signals(f"{endpoint}/{deployment}: p95 latency 1,250 ms", (Series("p95 latency", "ms", points),),
                       "log-analytics:w", start, end)


def test_notices_carry_the_targets_recent_signals_read_once_and_kept(services, tmp_path):
    decision = decide(services, "alert_latency_blue_fired.json")
    notices = [t for t in decision.tasks if t.kind is TaskKind.NOTIFY]
    reader, inner = CountingReader(), RecordingDispatcher()
    notifier = EnrichedNotifier(inner, SignalsCache(reader, LocalArtifacts(tmp_path)))

    results = [notifier.dispatch(task) for task in notices]

    assert reader.calls == 1  # both channels' notices share one reading
    assert all("p95 latency 1,250 ms" in sent.request["text"] for sent in inner.sent)
    assert all("signals" not in sent.request for sent in inner.sent)
    assert results[0]["signals"] == notices[0].request["signals"]["artifact"]
    spec = notices[0].request["signals"]
    assert (spec["endpoint"], spec["deployment"]) == (ENDPOINT, "blue")
    assert datetime.fromisoformat(spec["end"]) - datetime.fromisoformat(spec["start"]) == timedelta(minutes=60)


def test_a_notice_goes_out_even_when_the_signals_cannot_be_read(services, tmp_path):
    [notice, *_] = [t for t in decide(services, "alert_latency_blue_fired.json").tasks if t.kind is TaskKind.NOTIFY]
    inner = RecordingDispatcher()
    result = EnrichedNotifier(inner, SignalsCache(CountingReader(fail=True), LocalArtifacts(tmp_path))).dispatch(notice)
    assert "Recent signals unavailable: Log Analytics: throttled" in inner.sent[0].request["text"]
    assert result["signals"] is None


def test_the_review_page_shows_the_alert_its_signals_and_a_chart(services, tmp_path):
    from controlplane.handlers.dispatch_local import LocalWork
    from controlplane.handlers.reviews import review_signals
    from controlplane.web.pages import review_page

    decision = decide(services, "alert_cpu_blue_fired.json")
    [review] = decision.reviews
    artifacts = LocalArtifacts(tmp_path)
    services = replace(services, artifacts=artifacts)
    assert review_signals(services, review) is None
    assert "being read" in review_page(review)

    [task] = [t for t in decision.tasks if t.kind is TaskKind.REVIEW]
    work = LocalWork(services.store, services.policy, None, artifacts, SignalsCache(CountingReader(), artifacts))
    work.dispatch(task)
    page = review_page(review, signals=review_signals(services, review))

    assert "CpuUtilizationPercentage" in page and "churn-ep/blue" in page
    assert "p95 latency 1,250 ms" in page and page.count("<svg") == 1


def task_for(request):
    return Task(id="t1", kind=TaskKind.ROLLBACK, target="x", request=request, decision_id="d", idempotency_key="k",
                created_at=NOW, due_at=NOW)


def test_the_azureml_dispatcher_scales_the_previous_deployment_up_before_moving_traffic(workspace):
    from controlplane.adapters.clock import SystemClock
    from controlplane.handlers.dispatch_azureml import AzureMLDispatcher

    request = {"operation": "online_endpoints.rollback", "endpoint": ENDPOINT, "traffic": {"green": 100},
               "mirror": {}, "scale": {"green": 2}, "from_deployment": "blue"}
    result = AzureMLDispatcher(workspace, SystemClock()).dispatch(task_for(request))
    again = AzureMLDispatcher(workspace, SystemClock()).dispatch(task_for(request))  # a repeat changes nothing more

    changes = [call[0] for call in workspace.calls if call[0] in ("scale", "set_traffic")]
    assert changes == ["scale", "set_traffic"]  # the repeat found both done and sent nothing
    assert workspace.endpoints[ENDPOINT].traffic == {"green": 100}
    assert result["serving"] == again["serving"] == "green" and result["scaled"][0]["instance_count"] == 2


TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
AUDIENCE = "api://controlplane-alerts"


@pytest.fixture
def entra(tmp_path):
    """A loopback stand-in for Entra's signing-key endpoint, and a way to mint tokens with its key."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.algorithms import RSAAlgorithm

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    keys = json.dumps({"keys": [{**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": "k1"}]}).encode()

    class Keys(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the http.server API)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(keys)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Keys)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def token(roles=("ActionGroupsSecureWebhook",), audience=AUDIENCE):
        now = int(datetime.now(UTC).timestamp())
        claims = {"iss": f"https://sts.windows.net/{TENANT}/", "aud": audience, "iat": now, "nbf": now,
                  "exp": now + 3600, "roles": list(roles), "appid": "461e8683-5575-4561-ac7f-899cc907d62a"}
        return "Bearer " + jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})

    yield f"http://127.0.0.1:{server.server_port}", token
    server.shutdown()
    server.server_close()


def test_with_secure_webhooks_on_bad_tokens_get_401_or_403_and_record_nothing(app_functions, services, entra):
    import azure.functions as func

    from controlplane import bootstrap
    from controlplane.adapters.secure_webhook import SecureWebhookValidator

    authority, token = entra
    # the local server stands in for the public cloud's authority, whose v1.0 tokens it mints
    stand_in = SecureWebhookValidator(TENANT, AUDIENCE, authority=authority, issuers_of=(f"https://sts.windows.net/{TENANT}/",))
    wired = replace(services, alert_auth=stand_in)
    bootstrap.reset(wired)
    on_alert = app_functions["on_alert"].get_user_function()

    def post(authorization=None, body=None):
        body = body or event_bytes("alert_latency_blue_fired.json")
        headers = {"Authorization": authorization} if authorization else {}
        return on_alert(func.HttpRequest("POST", "/api/alerts", body=body, headers=headers))

    try:
        missing, forged = post(), post("Bearer not.a.token")
        no_role, wrong_audience = post(token(roles=("Reader",))), post(token(audience="api://someone-else"))
        oversized = post(token(), b" " * (600 * 1024))
        accepted = post(token())
    finally:
        bootstrap.reset()

    assert (missing.status_code, forged.status_code, wrong_audience.status_code) == (401, 401, 401)
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert no_role.status_code == 403
    assert "ActionGroupsSecureWebhook" in json.loads(no_role.get_body())["error"]["reason"]
    assert json.loads(forged.get_body())["error"]["field"] == "Authorization"
    assert oversized.status_code == 413
    assert accepted.status_code == 200 and json.loads(accepted.get_body())["decision"]["outcome"] == "rollback"
    assert len(wired.store.decisions()) == 1  # refused requests leave nothing behind


@pytest.mark.parametrize("kind", ["sqlite", "tables"])
def test_an_incident_opens_repeats_and_resolves_on_the_real_stores(kind, make_store, workspace):
    wired = services_with(workspace, store=make_store(kind))
    wired.store.create_rollout(a_rollout())

    opened = decide(wired, "alert_latency_blue_fired.json")
    wired.clock.advance(minutes=5)
    again = decide(wired, "alert_latency_blue_fired_again.json")
    wired.clock.advance(minutes=10)
    resolved = decide(wired, "alert_latency_blue_resolved.json")

    assert [d.outcome for d in (opened, again, resolved)] == [Outcome.ROLLBACK, Outcome.NO_ACTION, Outcome.NOTIFY]
    [incident] = wired.store.incidents()
    assert incident.state is IncidentState.CLOSED and incident.fired == 2 and incident.revision == 3
    history = wired.store.decisions(model="churn", event_types=["alert.fired", "alert.resolved"])
    assert [d.id for d in history] == [resolved.id, again.id, opened.id]

"""Notifications over real HTTP to a loopback receiver, and decisions published through the real
azure-eventgrid client at its HTTP boundary."""
from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from controlplane.adapters.eventgrid_publisher import EventGridPublisher
from controlplane.adapters.notify import SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookNotifier, sign
from controlplane.domain.errors import PermanentError, TransientError
from controlplane.domain.ledger import Task, TaskKind
from tests.fakes import FakeClock

T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


@pytest.fixture
def receiver():
    """A loopback webhook receiver recording every request; ``status`` sets its answer."""
    received, state = [], {"status": 200}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, self.headers, body))  # headers: case-insensitive, as receivers read them
            self.send_response(state["status"])
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received, state
    server.shutdown()
    server.server_close()


def notice(**request):
    return Task(id="task-1", kind=TaskKind.NOTIFY, target="channel/reviewers", request={
        "operation": "notify", "channel": "reviewers", "event": "review.opened", "subject": "Review opened: churn:4",
        "text": "gates passed", **request}, decision_id="d1", idempotency_key="k", created_at=T0, due_at=T0)


def test_teams_slack_and_a_signed_webhook_each_get_the_message_with_per_approver_links(receiver):
    base, received, _ = receiver
    notifier = WebhookNotifier(FakeClock(T0), teams_url=f"{base}/teams", slack_url=f"{base}/slack",
                               webhook_url=f"{base}/hook", webhook_secret="s3cret",
                               link_for=lambda review, who: f"https://cp/api/reviews/{review}?token=for-{who}")
    result = notifier.dispatch(notice(review_id="r1", approvers=["ana@contoso.com", "bo@contoso.com"],
                                      correlation_id="registered-churn-4"))

    assert result == {"sent_to": ["teams", "slack", "webhook"], "links_for": ["ana@contoso.com", "bo@contoso.com"]}
    by_path = {path: (headers, body) for path, headers, body in received}
    card = json.loads(by_path["/teams"][1])["attachments"][0]["content"]
    assert card["type"] == "AdaptiveCard" and [a["title"] for a in card["actions"]] == [
        "Review as ana@contoso.com", "Review as bo@contoso.com"]
    assert "token=for-bo@contoso.com" in json.loads(by_path["/slack"][1])["text"]

    headers, body = by_path["/hook"]
    timestamp = headers[TIMESTAMP_HEADER]
    assert timestamp == str(int(T0.timestamp()))
    assert headers[SIGNATURE_HEADER] == sign("s3cret", timestamp, body)  # what a receiver recomputes
    assert headers[SIGNATURE_HEADER] != sign("s3cret", str(int(T0.timestamp()) + 1), body)  # replays re-signed fail
    assert json.loads(body)["links"]["ana@contoso.com"].endswith("token=for-ana@contoso.com")
    # One id leads from the message back to the event, the decision and what else it opened.
    assert json.loads(body)["correlation_id"] == "registered-churn-4"
    assert "correlation id: registered-churn-4" in json.loads(by_path["/slack"][1])["text"]


@pytest.mark.parametrize("status, error", [(500, TransientError), (503, TransientError), (429, TransientError),
                                           (400, PermanentError), (404, PermanentError)])
def test_webhook_failures_are_transient_or_permanent(receiver, status, error):
    base, _, state = receiver
    state["status"] = status
    with pytest.raises(error):
        WebhookNotifier(FakeClock(T0), slack_url=f"{base}/slack").dispatch(notice())


def test_an_unreachable_webhook_is_transient():
    from tests.support import free_port

    with pytest.raises(TransientError):
        WebhookNotifier(FakeClock(T0), slack_url=f"http://127.0.0.1:{free_port()}/x", timeout=2).dispatch(notice())


def publish_task():
    return Task(id="task-9", kind=TaskKind.PUBLISH, target="eventgrid/decisions", request={
        "operation": "eventgrid.publish", "type": "MLOps.ControlPlane.DecisionRecorded", "source": "/mlops-cp",
        "subject": "models/churn", "data": {"decision_id": "d9", "outcome": "retrain"},
        "correlation_id": "breach-churn-1"},
        decision_id="d9", idempotency_key="k", created_at=T0, due_at=T0)


def test_decisions_are_published_as_cloudevents_through_the_real_client(receiver):
    # azure-eventgrid 4.22 ignores transport options for basic topics, so the topic is a loopback server.
    base, received, _ = receiver
    publisher = EventGridPublisher(f"{base}/api/events", key="k" * 44)
    assert publisher.dispatch(publish_task()) == {"published": "task-9", "type": "MLOps.ControlPlane.DecisionRecorded"}
    [(path, headers, body)] = received
    assert path.startswith("/api/events?api-version=") and headers["aeg-sas-key"] == "k" * 44
    assert headers["Content-Type"].startswith("application/cloudevents-batch+json")
    [event] = json.loads(body)
    assert event["specversion"] == "1.0" and event["id"] == "task-9" and event["type"].endswith("DecisionRecorded")
    assert event["subject"] == "models/churn" and event["data"] == {"decision_id": "d9", "outcome": "retrain"}
    assert event["correlationid"] == "breach-churn-1"  # an extension attribute subscribers can filter on


@pytest.mark.parametrize("status, error", [(401, PermanentError), (400, PermanentError), (413, PermanentError)])
def test_publishing_refusals_are_permanent(receiver, status, error):
    base, _, state = receiver
    state["status"] = status
    with pytest.raises(error):
        EventGridPublisher(f"{base}/api/events", key="k" * 44).dispatch(publish_task())


def test_an_unreachable_topic_is_transient():
    from tests.support import free_port

    with pytest.raises(TransientError):
        EventGridPublisher(f"http://127.0.0.1:{free_port()}/api/events", key="k" * 44).dispatch(publish_task())


def test_each_channel_reaches_only_the_sinks_the_policy_routes_it_to(receiver):
    from controlplane.domain.policy import parse_policy

    base, received, _ = receiver
    routes = parse_policy("notifications: {routes: {oncall: [slack], reviewers: [teams, webhook], quiet: []},"
                          " default: [webhook]}").document.notifications
    notifier = WebhookNotifier(FakeClock(T0), teams_url=f"{base}/teams", slack_url=f"{base}/slack",
                               webhook_url=f"{base}/hook", webhook_secret="s3cret", sinks_for=routes.sinks)

    told = {channel: notifier.dispatch(notice(channel=channel)) for channel in ("oncall", "reviewers", "data", "quiet")}
    assert told["oncall"] == {"sent_to": ["slack"], "links_for": [], "not_routed": ["teams", "webhook"],
                              "channel": "oncall"}
    assert told["reviewers"]["sent_to"] == ["teams", "webhook"] and told["data"]["sent_to"] == ["webhook"]
    assert told["quiet"]["sent_to"] == [] and told["quiet"]["not_routed"] == ["teams", "slack", "webhook"]
    assert [path for path, _, _ in received] == ["/slack", "/teams", "/hook", "/hook"]


@pytest.mark.parametrize("text, where", [
    ("notifications: {routes: {oncall: [slack, pager]}}", "notifications.routes.oncall[1]"),
    ("notifications: {default: [email]}", "notifications.default[0]"),
    ("notifications: {channels: {}}", "notifications.channels"),
])
def test_a_route_to_a_sink_that_does_not_exist_is_refused_naming_it(text, where):
    from controlplane.domain.errors import PolicyError
    from controlplane.domain.policy import parse_policy

    with pytest.raises(PolicyError) as refused:
        parse_policy(text)
    assert refused.value.subject == where


def test_the_app_routes_notices_by_its_policy(receiver, tmp_path):
    from controlplane import bootstrap
    from controlplane.settings import Settings

    base, received, _ = receiver
    (tmp_path / "policy.yaml").write_text("notifications: {routes: {oncall: [slack]}, default: []}\n")
    services = bootstrap.build(Settings.from_env({
        "CONTROLPLANE_STORE": f"sqlite:///{tmp_path}/cp.db", "CONTROLPLANE_POLICY": str(tmp_path / "policy.yaml"),
        "NOTIFY_SLACK_WEBHOOK_URL": f"{base}/slack", "APPROVAL_SIGNING_KEY": "n" * 40}))

    assert services.dispatcher.dispatch(notice(channel="oncall"))["sent_to"] == ["slack"]
    assert services.dispatcher.dispatch(notice(channel="reviewers"))["not_routed"] == ["slack"]
    assert [path for path, _, _ in received] == ["/slack"]

"""/api/models/{name}: a model's story, newest first, as JSON and HTML, through the app's own function."""
from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest

from controlplane import bootstrap
from controlplane.domain.ledger import Outcome
from controlplane.handlers.registry import receive_registry_event
from controlplane.handlers.sweep import sweep
from tests.support import load_event


def registered(version: str, accuracy: str) -> dict:
    event = load_event("eg_model_registered_docs.json")[0]
    data = {**event["data"], "modelName": "churn", "modelVersion": version,
            "modelTags": {"accuracy": accuracy, "auc": "0.9"}}
    return {**event, "id": f"model-page-{version}", "subject": f"models/churn:{version}", "data": data}


@pytest.fixture(scope="module")
def host(in_process_host):
    services = bootstrap.services()
    for version, accuracy in (("1", "0.86"), ("2", "0.70"), ("3", "0.91")):
        receive_registry_event(services, registered(version, accuracy))
    sweep(services)
    return in_process_host


def get(host, path: str, accept: str = "text/html"):
    reply = host.handle("GET", path, {"Accept": accept}, b"")
    return reply.status, dict(reply.headers), reply.body.decode()


def test_the_story_as_json_lists_every_decision_newest_first_with_its_policy_version(host):
    status, _, body = get(host, "/api/models/churn?format=json")
    story = json.loads(body)

    assert status == 200 and story["model"] == "churn"
    versions = [d["version"] for d in story["decisions"] if d["event_type"].endswith("ModelRegistered")]
    assert versions == ["3", "2", "1"]
    times = [d["decided_at"] for d in story["decisions"]]
    assert times == sorted(times, reverse=True)
    assert {d["policy_version"] for d in story["decisions"]} == {bootstrap.services().policy.version}
    outcomes = {d["version"]: d["outcome"] for d in story["decisions"] if d["event_type"].endswith("Registered")}
    assert outcomes["2"] == Outcome.REJECT.value  # accuracy 0.70 fails the gate
    assert [r["version"] for r in story["reviews"]] and all(r["model"] == "churn" for r in story["reviews"])
    assert story["serving"] == [{"endpoint": "churn-ep", "model": None, "version": None, "since": None,
                                 "decision_id": None}]  # nothing rolled out yet


def test_json_is_also_what_a_client_asking_for_it_gets(host):
    status, headers, body = get(host, "/api/models/churn", accept="application/json")
    assert status == 200 and "application/json" in headers.get("Content-Type", "") and json.loads(body)["decisions"]


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.headings, self.cells, self._in = [], [], None

    def handle_starttag(self, tag, attrs):
        self._in = tag

    def handle_data(self, data):
        if self._in in ("h1", "h2"):
            self.headings.append(data)
        elif self._in in ("td", "code", "span", "a") and data.strip():
            self.cells.append(data.strip())


def test_the_page_shows_serving_the_timeline_and_the_reviews_under_a_strict_policy(host):
    status, headers, body = get(host, "/api/models/churn")
    page = _Text()
    page.feed(body)

    assert status == 200 and headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert page.headings[:4] == ["Model churn", "Serving", "Timeline", "Reviews"]
    assert "churn-ep" in page.cells and "nothing" in page.cells
    assert "reject" in page.cells and "request_approval" in page.cells
    assert "<script" not in body  # the model page runs no script


def test_an_unknown_model_has_an_empty_story_and_a_bad_limit_is_refused_naming_it(host):
    status, _, body = get(host, "/api/models/no-such-model?format=json")
    assert status == 200 and json.loads(body)["decisions"] == [] and json.loads(body)["serving"] == []
    status, _, body = get(host, "/api/models/churn?limit=0&format=json")
    assert status == 400 and json.loads(body)["error"]["field"] == "limit"
